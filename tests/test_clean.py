"""The fast backend's cleaned and primary-beam-corrected products (sim.clean); against CASA in test_casa.py."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from astropy.io import fits

from sim import sky
from sim.clean import dirty_beams, hogbom, make_product
from sim.config import ObservationConfig, SimConfig
from sim.generate import generate
from sim.instrument import beam_image, build_instrument, fit_beam
from sim.observe import observe

N, NZ = 64, 2
OBS = ObservationConfig(cell_arcsec=0.2, total_time_s=600.0, weighting="briggs", robust=0.5)
YX = (N // 2 + 7, N // 2 - 11)


def _instrument(obs=OBS):
    return build_instrument(obs, N, sky.channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, NZ))


def _point(flux=1.0):
    cube = np.zeros((NZ, N, N), np.float32)
    cube[:, YX[0], YX[1]] = flux
    return cube


def test_the_dirty_beam_table_is_the_convolution_the_dirty_cube_went_through():
    ins = _instrument()
    dirty = observe(_point(), ins, noise="none").dirty
    beams = np.asarray(dirty_beams(ins))
    shifted = beams[:, N - YX[0] : 2 * N - YX[0], N - YX[1] : 2 * N - YX[1]]
    pb = np.asarray(ins.primary_beam)[:, YX[0], YX[1]]
    np.testing.assert_allclose(dirty, shifted * pb[:, None, None], atol=1e-5)
    assert beams[:, N, N] == pytest.approx(1.0, abs=1e-5)


def test_beam_image_is_what_fit_beam_measures():
    for beam in ((0.9, 0.6, 30.0), (0.8, 0.4, -75.0)):
        assert fit_beam(beam_image(*beam, 0.1, 65), 0.1) == pytest.approx(beam, abs=1e-4)


def test_a_noiseless_point_source_cleans_to_the_restoring_beam():
    obs = dataclasses.replace(OBS, niter=2000, threshold_jy=1e-4)
    ins = _instrument(obs)
    dirty = observe(_point(), ins, noise="none").dirty
    product = make_product(dirty, ins, obs)
    assert product.pb is None and 0 < product.components <= 2 * obs.niter
    pb = float(ins.primary_beam[0, YX[0], YX[1]])
    for z in range(NZ):
        restored = beam_image(*ins.beams[z], obs.cell_arcsec, 2 * N)[N - YX[0] : 2 * N - YX[0], N - YX[1] : 2 * N - YX[1]]
        # the source's apparent flux (x PB) in the restoring beam, the dirty sidelobes gone
        np.testing.assert_allclose(product.image[z], pb * restored, atol=3e-3 * pb)
        assert np.abs(dirty[z] - pb * restored).max() > 0.05 * pb  # the dirty cube had them


def test_cleaning_stops_at_nsigma_the_threshold_or_niter():
    ins = _instrument(dataclasses.replace(OBS, niter=1))
    dirty = observe(_point(0.2), ins, noise="thermal", seed=3).dirty
    by_niter = make_product(dirty, ins, dataclasses.replace(OBS, niter=5, nsigma=1.0))
    assert by_niter.components == 5 * NZ
    deep = make_product(dirty, ins, dataclasses.replace(OBS, niter=100_000, nsigma=3.0))
    shallow = make_product(dirty, ins, dataclasses.replace(OBS, niter=100_000, nsigma=6.0))
    high = make_product(dirty, ins, dataclasses.replace(OBS, niter=100_000, threshold_jy=0.05))
    assert 5 * NZ < high.components < shallow.components < deep.components < 100_000
    # what is left in the residual is below nsigma x its robust rms
    components, residual, count = hogbom(jnp.asarray(dirty), dirty_beams(ins), jnp.ones(dirty.shape, bool),
                                         0.0, 3.0, niter=100_000)  # fmt: skip
    assert int(count.sum()) == deep.components
    res = np.asarray(residual)
    for z in range(NZ):
        rms = 1.4826 * np.median(np.abs(res[z] - np.median(res[z])))
        assert np.abs(res[z]).max() <= 3.0 * rms * 1.05 and np.abs(dirty[z]).max() > 3.0 * rms
    assert np.asarray(components)[:, YX[0], YX[1]].sum() > 0


def test_pb_correction_divides_by_the_beam_and_blanks_below_pblimit():
    obs = dataclasses.replace(OBS, cell_arcsec=0.6, pbcor=True, pblimit=0.3)  # a 38" field: its corners beyond PB 0.3
    ins = _instrument(obs)
    dirty = observe(_point(), ins, noise="thermal", seed=1).dirty
    product = make_product(dirty, ins, obs)
    pb = np.asarray(ins.primary_beam)
    blank = pb < 0.3
    assert blank.any() and not blank.all() and product.components == 0
    np.testing.assert_array_equal(np.isnan(product.image), blank)
    np.testing.assert_array_equal(np.isnan(product.pb), blank)
    np.testing.assert_allclose(product.image[~blank], dirty[~blank] / pb[~blank], rtol=1e-6)
    assert product.image[:, YX[0], YX[1]] == pytest.approx([1.0, 1.0], abs=0.02)  # the true flux
    assert np.array_equal(dirty, observe(_point(), ins, noise="thermal", seed=1).dirty)  # input untouched


def test_threads_do_not_change_the_product():
    obs = dataclasses.replace(OBS, niter=1000, nsigma=3.0, pbcor=True)
    ins = _instrument(obs)
    dirty = observe(_point(0.3), ins, noise="thermal", seed=2).dirty
    one, two = make_product(dirty, ins, obs, threads=1), make_product(dirty, ins, obs, threads=2)
    np.testing.assert_array_equal(one.image, two.image)
    assert one.components == two.components


def test_generate_writes_a_cleaned_pb_corrected_cube_with_the_fast_backend(tmp_path):
    config = SimConfig().replace(**{"cube.size": 48, "cube.channels": 2, "seed": 4, "noise.mode": "thermal",
                                    "observation.weighting": "briggs", "observation.niter": 500,
                                    "observation.nsigma": 4.0, "observation.pbcor": True})  # fmt: skip
    generate(tmp_path / "a", 1, config, progress=False)
    generate(tmp_path / "b", 1, config, progress=False)
    with fits.open(tmp_path / "a" / "cube_00000.fits") as a, fits.open(tmp_path / "b" / "cube_00000.fits") as b:
        assert np.array_equal(a[0].data, b[0].data, equal_nan=True)  # the same seed, the same cube
        h = a[0].header
        assert (h["SIMBACK"], h["NITER"], h["PBCOR"], h["NSIGMA"]) == ("fast", 500, True, 4.0)
        assert "BEAMS" in a and a["BEAMS"].data["BMAJ"][0] == pytest.approx(h["BMAJ"] * 3600, rel=1e-3)
    assert (tmp_path / "a" / "pb.fits").is_file()

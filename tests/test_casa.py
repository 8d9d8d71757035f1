"""The CASA reference backend against real CASA (no mocks): geometry, frequencies, beams, cleanup.

Tiny cubes and a short track (600 s instead of Table 2's 2400 s) keep each CASA run near 10 s.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.config import ObservationConfig

NX, NY, NZ = 64, 48, 4
SOURCE_YX = (NY // 2 + 6, NX // 2 - 9)  # north and east (smaller x: RA grows to the left)
OBS = dataclasses.replace(ObservationConfig(), total_time_s=600.0)


def _freqs(obs: ObservationConfig, nz: int) -> np.ndarray:
    return obs.centre_freq_hz + (np.arange(nz) - nz // 2) * obs.channel_width_hz


@pytest.fixture(scope="module")
def point_source(tmp_path_factory):
    """One 1 Jy point source off-centre, observed with thermal noise; returns (result, dirs)."""
    from sim.casa import observe_casa

    workdir = tmp_path_factory.mktemp("casa-work")
    cwd = tmp_path_factory.mktemp("cwd")
    sky = np.zeros((NZ, NY, NX), np.float32)
    sky[:, SOURCE_YX[0], SOURCE_YX[1]] = 1.0
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = observe_casa(sky, _freqs(OBS, NZ), OBS, thermal_noise=True, workdir=workdir)
    finally:
        os.chdir(old)
    return result, workdir, cwd


@pytest.mark.casa
def test_shapes_and_psf(point_source):
    result, _, _ = point_source
    assert result.dirty.shape == result.psf.shape == (NZ, NY, NX)
    assert result.dirty.dtype == result.psf.dtype == np.float32
    assert np.isfinite(result.dirty).all()  # pblimit < 0: nothing blanked
    for plane in result.psf:
        assert np.unravel_index(plane.argmax(), plane.shape) == (NY // 2, NX // 2)
        assert plane[NY // 2, NX // 2] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.casa
def test_orientation_matches_sky_model(point_source):
    result, _, _ = point_source
    for plane in result.dirty:
        assert np.unravel_index(plane.argmax(), plane.shape) == SOURCE_YX
        # 1 Jy at 1.1" from the centre: primary-beam attenuation < 1 %, noise ~1 mJy/beam
        assert plane[SOURCE_YX] == pytest.approx(1.0, abs=0.02)


@pytest.mark.casa
def test_frequencies_and_beams(point_source):
    result, _, _ = point_source
    np.testing.assert_allclose(result.freqs_hz, _freqs(OBS, NZ), rtol=0, atol=1.0)
    assert result.beams.shape == (NZ, 3)
    bmaj, bmin = result.beams[:, 0], result.beams[:, 1]
    # alma.cycle9.3 at 230 GHz, natural weighting: ~0.89" x 0.76" for the full 2400 s track
    assert np.all((bmaj > 0.75) & (bmaj < 1.1)), bmaj
    assert np.all((bmin > 0.6) & (bmin < 0.9)), bmin
    assert np.all(bmin <= bmaj)


@pytest.mark.casa
def test_nothing_left_behind(point_source):
    _, workdir, cwd = point_source
    assert not list(Path(workdir).rglob("*.ms"))
    assert not list(Path(workdir).iterdir())
    assert not list(Path(cwd).iterdir())  # no casa-*.log in the caller's cwd


@pytest.mark.casa
def test_thermal_noise_on_empty_sky(tmp_path):
    from sim.casa import observe_casa

    obs = dataclasses.replace(OBS, total_time_s=300.0)
    sky = np.zeros((2, 128, 128), np.float32)
    result = observe_casa(sky, _freqs(obs, 2), obs, thermal_noise=True, want_psf=False,
                          workdir=tmp_path, seed=3)  # fmt: skip
    assert result.psf is None
    rms = float(np.sqrt(np.mean(result.dirty.astype(np.float64) ** 2)))
    # sigma ~0.25 Jy per visibility component (tsys-atm, pwv 0.8 mm, 10 MHz x 10 s) over
    # 2 pol x 903 baselines x 30 integrations: ~1.06 mJy/beam
    assert np.isfinite(rms) and 0.7e-3 < rms < 1.5e-3, rms
    assert not list(tmp_path.rglob("*.ms"))


def test_import_does_not_load_casa():
    code = "import sys, sim.casa; assert not {'casatools', 'casatasks'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_missing_casa_extra_is_a_clear_error(monkeypatch):
    from sim import casa

    monkeypatch.setitem(sys.modules, "casatools", None)  # makes `import casatools` fail
    monkeypatch.setitem(sys.modules, "casatasks", None)
    sky = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(RuntimeError, match="pip install -e '.\\[casa\\]'"):
        casa.observe_casa(sky, _freqs(OBS, 1), OBS, thermal_noise=False)


@pytest.mark.parametrize(
    "shape, freqs",
    [((8, 8), [230e9]), ((2, 8, 8), [230e9]), ((2, 8, 8), [230e9, 229.99e9])],
)
def test_bad_inputs_raise_value_error(shape, freqs):
    from sim.casa import observe_casa

    with pytest.raises(ValueError):
        observe_casa(np.zeros(shape, np.float32), np.array(freqs), OBS, thermal_noise=False)


@pytest.mark.casa
def test_measurement_sets_removed_when_imaging_fails(tmp_path, monkeypatch):
    from sim.casa import import_casa, observe_casa

    _, casatasks = import_casa()

    def broken_tclean(**kwargs):
        assert list(Path.cwd().rglob("*.ms")), "simobserve should have written a measurement set"
        raise RuntimeError("tclean failed")

    monkeypatch.setattr(casatasks, "tclean", broken_tclean)
    obs = dataclasses.replace(OBS, total_time_s=60.0)
    with pytest.raises(RuntimeError, match="tclean failed"):
        observe_casa(np.zeros((1, 16, 16), np.float32), _freqs(obs, 1), obs, thermal_noise=True,
                     workdir=tmp_path)  # fmt: skip
    assert not list(tmp_path.iterdir())


# the cleaned, primary-beam-corrected product: 0.3" pixels make a 38" field whose corners lie
# beyond the primary beam's 0.2 level (~19.5" from the centre at 230 GHz), so pblimit blanks them
CLEAN_N = 128
CLEAN_YX = (CLEAN_N // 2 + 20, CLEAN_N // 2 - 25)  # 9.6" off-centre: primary beam ~0.67
CLEAN_OBS = dataclasses.replace(OBS, cell_arcsec=0.3, total_time_s=120.0, weighting="briggs", robust=0.5,
                                niter=300, nsigma=3.0, pbcor=True)  # fmt: skip


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory):
    """A 1 Jy point source, observed with thermal noise, cleaned, PB-corrected; and its dirty twin."""
    from sim.casa import observe_casa

    sky = np.zeros((2, CLEAN_N, CLEAN_N), np.float32)
    sky[:, CLEAN_YX[0], CLEAN_YX[1]] = 1.0
    work = tmp_path_factory.mktemp("casa-clean")
    dirty_obs = dataclasses.replace(CLEAN_OBS, niter=0, nsigma=0.0, pbcor=False)
    runs = [observe_casa(sky, _freqs(obs, 2), obs, thermal_noise=True, want_psf=False, workdir=work, seed=7)
            for obs in (CLEAN_OBS, dirty_obs)]  # fmt: skip
    return (*runs, work)


@pytest.mark.casa
def test_pb_corrected_cube_is_blank_below_pblimit(cleaned):
    result, dirty, work = cleaned
    assert result.pb is not None and dirty.pb is None and np.isfinite(dirty.dirty).all()
    assert result.pb.shape == result.dirty.shape == (2, CLEAN_N, CLEAN_N)
    c = CLEAN_N // 2
    assert result.pb[:, c, c] == pytest.approx(1.0, abs=1e-3)
    blank = np.isnan(result.dirty)
    np.testing.assert_array_equal(blank, np.isnan(result.pb))
    r_arcsec = np.hypot(*np.ogrid[-c:CLEAN_N - c, -c:CLEAN_N - c]) * CLEAN_OBS.cell_arcsec
    assert not blank[:, r_arcsec < 17].any() and blank[:, r_arcsec > 21].all()  # PB 0.2 at ~19.5"
    assert np.nanmin(result.pb) >= CLEAN_OBS.pblimit - 0.01
    assert not list(Path(work).iterdir())  # the measurement sets and images are gone


@pytest.mark.casa
def test_cleaned_cube_restores_the_source_and_removes_its_sidelobes(cleaned):
    result, dirty, _ = cleaned
    pb = result.pb[:, CLEAN_YX[0], CLEAN_YX[1]]
    assert np.all((pb > 0.55) & (pb < 0.8)), pb
    y, x = np.ogrid[:CLEAN_N, :CLEAN_N]
    far = np.hypot(y - CLEAN_YX[0], x - CLEAN_YX[1]) > 8  # > 2.4": beyond the restoring beam
    for clean_plane, dirty_plane, pb_plane in zip(result.dirty, dirty.dirty, result.pb):
        assert np.unravel_index(np.nanargmax(clean_plane), clean_plane.shape) == CLEAN_YX
        assert clean_plane[CLEAN_YX] == pytest.approx(1.0, abs=0.05)  # PB-corrected: the true flux
        assert dirty_plane[CLEAN_YX] == pytest.approx(pb_plane[CLEAN_YX], abs=0.05)  # attenuated by the PB
        # the dirty beam's sidelobes are ~10 % of the peak; after CLEAN only noise (~10 mJy / PB) is left
        assert np.abs(dirty_plane[far]).max() > 0.05 * dirty_plane[CLEAN_YX]
        assert np.nanmax(np.abs((clean_plane * pb_plane)[far])) < 0.02 * dirty_plane[CLEAN_YX]
    bmaj, bmin = result.beams[:, 0], result.beams[:, 1]
    assert np.all((bmin > 0.5) & (bmin <= bmaj) & (bmaj < 1.1)), result.beams  # Briggs 0.5: under natural's 0.9"


@pytest.mark.casa
def test_generate_writes_the_cleaned_product_its_pb_and_local_snr(tmp_path):
    from astropy.io import fits

    from sim.config import SimConfig
    from sim.generate import generate

    obs = {f.name: getattr(CLEAN_OBS, f.name) for f in dataclasses.fields(CLEAN_OBS)}
    config = SimConfig().replace(**{f"observation.{k}": v for k, v in obs.items()},
                                 **{"backend": "casa", "noise.mode": "thermal", "cube.size": CLEAN_N,
                                    "cube.channels": 2, "sky.line_fwhm_chan": [0.5, 1.0], "seed": 1})  # fmt: skip
    generate(tmp_path, 1, config, progress=False)
    with fits.open(tmp_path / "cube_00000.fits") as hdus, fits.open(tmp_path / "pb.fits") as pb_hdus:
        h, data, pb = hdus[0].header, hdus[0].data[0], pb_hdus[0].data[0]
        truth = hdus["SOURCES"].data
        assert (h["NITER"], h["PBCOR"], h["PBLIMIT"], h["ROBUST"], h["BUNIT"]) == (300, True, 0.2, 0.5, "Jy/beam")
        assert 0.5 / 3600 < h["BMAJ"] < 1.1 / 3600 and len(hdus["BEAMS"].data) == 2  # tclean's restoring beams
        np.testing.assert_array_equal(np.isnan(data), np.isnan(pb))
        assert np.isnan(data[:, 0, 0]).all()
        for row in truth:  # the peak SNR is over the noise at the source, NOISERMS / PB
            z, y, x = (int(np.clip(np.rint(row[k]), 0, n - 1)) for k, n in (("z", 2), ("y", CLEAN_N), ("x", CLEAN_N)))
            assert row["peak_snr"] == pytest.approx(data[z, y, x] * pb[z, y, x] / h["NOISERMS"], rel=1e-4)


@pytest.mark.casa
def test_the_fast_backend_makes_the_same_cleaned_pb_corrected_product(cleaned):
    """sim.clean on the fast backend's dirty cube of the same sky and set-up, against tclean's."""
    from sim.clean import make_product
    from sim.instrument import build_instrument
    from sim.observe import observe

    casa, _, _ = cleaned
    sky = np.zeros((2, CLEAN_N, CLEAN_N), np.float32)
    sky[:, CLEAN_YX[0], CLEAN_YX[1]] = 1.0
    ins = build_instrument(CLEAN_OBS, CLEAN_N, _freqs(CLEAN_OBS, 2))
    fast = make_product(observe(sky, ins, noise="thermal", seed=7).dirty, ins, CLEAN_OBS)
    assert fast.components > 0
    blank_fast, blank_casa = np.isnan(fast.image), np.isnan(casa.dirty)
    np.testing.assert_array_equal(blank_fast, np.isnan(fast.pb))
    # the PB 0.2 contours agree to a pixel: the fast PB (an Airy disk) is 1-3 % narrower out there
    differ = blank_fast != blank_casa
    assert np.mean(differ) < 0.02 and np.all(np.abs(np.asarray(ins.primary_beam)[differ] - 0.2) < 0.01)
    both = ~blank_fast & ~blank_casa
    assert np.abs(fast.pb[both] - casa.pb[both]).max() < 0.02
    y, x = np.ogrid[:CLEAN_N, :CLEAN_N]
    far = (np.hypot(y - CLEAN_YX[0], x - CLEAN_YX[1]) > 8) & both[0]
    for z in range(2):
        assert fast.image[z][CLEAN_YX] == pytest.approx(casa.dirty[z][CLEAN_YX], abs=0.05)  # both ~1 Jy
        # off the source, both are noise over the PB at the same level
        flat_fast, flat_casa = (np.std((img * pb)[far]) for img, pb in ((fast.image[z], fast.pb[z]),
                                                                        (casa.dirty[z], casa.pb[z])))  # fmt: skip
        assert flat_fast == pytest.approx(flat_casa, rel=0.25)
        assert np.abs((fast.image[z] * fast.pb[z])[far]).max() < 0.02 * fast.image[z][CLEAN_YX]  # no sidelobes
    np.testing.assert_allclose(ins.beams[:, :2], casa.beams[:, :2], rtol=0.05)  # the restoring beams

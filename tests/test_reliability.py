"""dfjax.reliability and dfjax.completeness, through dfjax.infer, with a thresholding stand-in for the pipeline.

The stand-in detector finds the local maxima of a window above ``K`` times its robust noise and
reports each as a pipeline ``Source`` whose snr is peak / noise; the cubes are white noise built
in ``tmp_path`` (test_infer's ``write_cube``) with a 3 × 2.5 px beam.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.stats import mad_std
from astropy.table import QTable
from scipy import ndimage

from dfjax import completeness, infer
from dfjax.cube_io import read_cube
from dfjax.pipeline.run import Source
from dfjax.reliability import reliability
from tests.test_infer import noise_cube, write_cube

NZ, NY, NX = 32, 64, 64


class Sizes:  # stand-in models: one window covers the whole test cube
    crop_size = 64
    spectrum_length = 32


def threshold_detector(cube: np.ndarray, models=None, config=None, *, k: float = 4.0) -> list[Source]:
    """Local maxima (5³ neighbourhood) above k·σ, σ the window's MAD noise; snr = peak / σ."""
    data = np.nan_to_num(np.asarray(cube, np.float64))
    sigma = mad_std(data)
    peaks = (data == ndimage.maximum_filter(data, size=5)) & (data > k * sigma)
    out = []
    for z, y, x in np.argwhere(peaks):
        out.append(Source(x=float(x), y=float(y), z=float(z), fwhm_x=3.0, fwhm_y=3.0, pa=0.0, fwhm_z=3.0,
                          peak_flux=float(data[z, y, x]), line_flux=0.0, line_flux_measured=0.0, continuum=0.0,
                          snr=float(data[z, y, x] / sigma), x0=int(x) - 2, y0=int(y) - 2, x1=int(x) + 3,
                          y1=int(y) + 3, z0=z - 2.0, z1=z + 2.0))  # fmt: skip
    return out


def small_beam_cube(path, data):
    """``data`` (Jy/beam) as a FITS cube with a 0.3" × 0.25" beam (3 × 2.5 px at 0.1" pixels)."""
    write_cube(path, data)
    fits.setval(path, "BMAJ", value=0.3 / 3600)
    fits.setval(path, "BMIN", value=0.25 / 3600)
    return path


def bright_sources(cube, n: int = 8, snr: float = 30.0) -> list[completeness.Injection]:
    beam, _ = completeness.beam_in_pixels(cube)
    xs = np.linspace(10, NX - 11, 4)
    return [completeness.Injection(x=float(xs[i % 4]), y=16.0 + 30.0 * (i // 4), z=8.0 + 14.0 * (i % 2),
                                   shape=beam, fwhm_z=4.0, snr=snr, size=0.0) for i in range(n)]  # fmt: skip


def run(tmp_path, cube_path, **kw):
    (tmp_path / "m").mkdir(exist_ok=True)
    kw.setdefault("runner", threshold_detector)
    return infer.infer_files([cube_path], model_dir=tmp_path / "m", loader=lambda d: Sizes(), progress=False, **kw)


# ---------------------------------------------------------------- reliability


def test_reliability_by_hand():
    # N_pos(>=s) = 4, 3, 2, 1 and N_neg(>=s) = 2, 1, 1, 0 → raw 0.5, 2/3, 0.5, 1 → lower envelope 0.5, 0.5, 0.5, 1
    np.testing.assert_allclose(reliability(np.array([3.0, 1.0, 4.0, 2.0]), np.array([1.5, 3.5])), [0.5, 0.5, 1, 0.5])
    np.testing.assert_allclose(reliability(np.array([2.0, 5.0]), np.array([])), [1.0, 1.0])
    np.testing.assert_allclose(reliability(np.array([2.0]), np.array([3.0, 4.0, 5.0])), [0.0])  # clipped
    assert reliability(np.zeros(0), np.array([1.0])).shape == (0,)


def test_reliability_is_low_on_noise_and_high_on_bright_sources(tmp_path):
    noise = read_cube(write_cube(tmp_path / "noise.fits", noise_cube(NZ, NY, NX, seed=3)))
    target = run(tmp_path, noise.path, reliability=True, runner=functools.partial(threshold_detector, k=3.5))[0]
    table = QTable.read(target)
    assert len(table) > 10 and np.median(table["reliability"]) < 0.5

    cube = read_cube(small_beam_cube(tmp_path / "bright.fits", noise_cube(NZ, NY, NX, seed=4)))
    data = completeness.inject(cube.data, bright_sources(cube), completeness.robust_noise(cube.data)) / 1e3
    path = small_beam_cube(tmp_path / "bright2.fits", data)  # back in Jy/beam
    table = QTable.read(run(tmp_path, path, reliability=True, runner=functools.partial(threshold_detector, k=3.5))[0])
    bright = table[table["snr"] > 20]
    assert len(bright) == 8 and np.all(bright["reliability"] > 0.9)
    assert np.all(np.diff(np.asarray(table["reliability"])) <= 0)  # rows by decreasing SNR: never rising


def test_reliability_column_and_min_reliability_filter(tmp_path):
    cube = read_cube(small_beam_cube(tmp_path / "c.fits", noise_cube(NZ, NY, NX, seed=5)))
    data = completeness.inject(cube.data, bright_sources(cube, n=4), completeness.robust_noise(cube.data)) / 1e3
    path = small_beam_cube(tmp_path / "d.fits", data)
    detector = functools.partial(threshold_detector, k=3.5)
    full = QTable.read(run(tmp_path, path, reliability=True, runner=detector)[0])
    assert "reliability" in full.colnames and "N_neg" in full["reliability"].info.description
    assert full["reliability"].unit is None and full.meta["RELNNEG"] > 0
    kept = QTable.read(run(tmp_path, path, min_reliability=0.9, runner=detector)[0])  # implies --reliability
    assert 4 <= len(kept) < len(full) and np.all(kept["reliability"] >= 0.9) and kept.meta["MINREL"] == 0.9
    assert "reliability" not in QTable.read(run(tmp_path, path, runner=detector)[0]).colnames  # opt-in


def test_min_reliability_out_of_range_exits_2_with_one_line(tmp_path, capsys):
    cube = write_cube(tmp_path / "c.fits", noise_cube(16, 20, 20))
    with pytest.raises(SystemExit) as exit_:
        infer.main([str(cube), "--min-reliability", "2", "--model-dir", str(tmp_path / "absent")])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--min-reliability 2.0" in lines[0] and "[0, 1]" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.fits"]


# ---------------------------------------------------------------- completeness


def test_header_beam_in_pixels_and_convolution():
    header = fits.Header({"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CDELT1": -0.1 / 3600, "CDELT2": 0.1 / 3600,
                          "CUNIT1": "deg", "CUNIT2": "deg"})  # fmt: skip
    from astropy.wcs import WCS

    from dfjax.cube_io import Beam

    class Stub:  # the two Cube attributes beam_in_pixels reads
        beam = Beam(1.0 * u.arcsec, 0.5 * u.arcsec, 30.0 * u.deg)
        celestial = WCS(header)

    beam, origin = completeness.beam_in_pixels(Stub())
    assert origin == "header"  # BPA east of north, east = −x: sim's pa = 90° − BPA
    assert (beam.fwhm_x, beam.fwhm_y, beam.pa) == pytest.approx((10.0, 5.0, 60.0))
    g = completeness.Gaussian(4.0, 3.0, 20.0)
    back = completeness.Gaussian.from_covariance(g.covariance())
    assert (back.fwhm_x, back.fwhm_y, back.pa) == pytest.approx((4.0, 3.0, 20.0))
    wide = completeness.Gaussian.from_covariance(g.covariance() + completeness.Gaussian(3.0, 3.0, 0).covariance())
    assert (wide.fwhm_x, wide.fwhm_y) == pytest.approx((5.0, np.hypot(3.0, 3.0)))  # FWHMs add in quadrature


def test_noise_beam_fallback_and_injected_peak(tmp_path):
    path = write_cube(tmp_path / "c.fits", noise_cube(NZ, NY, NX, seed=6))
    for key in ("BMAJ", "BMIN", "BPA"):
        fits.delval(path, key)
    cube = read_cube(path)
    beam, origin = completeness.beam_in_pixels(cube)
    assert origin == "noise autocorrelation" and beam.major < 2.0  # white noise: a one-pixel beam
    sigma = completeness.robust_noise(cube.data)
    assert sigma == pytest.approx(1.0, rel=0.05)  # 1 mJy/beam
    source = completeness.Injection(x=30.0, y=20.0, z=10.0, shape=completeness.Gaussian(4.0, 3.0, 0.0), fwhm_z=4.0,
                                    snr=7.0, size=0.5)  # fmt: skip
    added = completeness.inject(np.zeros((NZ, NY, NX), np.float32), [source], sigma) / sigma
    assert added.max() == pytest.approx(7.0, rel=1e-5) and np.unravel_index(added.argmax(), added.shape) == (10, 20, 30)


def test_completeness_rises_with_snr_and_is_reproducible(tmp_path):
    path = small_beam_cube(tmp_path / "obs.fits", noise_cube(NZ, NY, NX, seed=7))
    detector = functools.partial(threshold_detector, k=5.0)
    run(tmp_path, path, completeness=True, completeness_trials=20, seed=11, runner=detector)
    ecsv, png = tmp_path / "obs.completeness.ecsv", tmp_path / "obs.completeness.png"
    first = QTable.read(ecsv)
    snr = first[first["axis"] == "snr"]
    assert first.meta["NINJECT"] == 100 and first.meta["BEAMSRC"] == "header" and snr["n_injected"].sum() == 100
    p = np.asarray(snr["completeness"])
    assert p[0] <= 0.25 and p[-1] >= 0.9 and p[-2] >= 0.9 and np.all(np.diff(p[:4]) >= 0)
    assert np.all((snr["lower"] <= p) & (p <= snr["upper"]))
    assert np.all(np.diff(np.asarray(snr["median_catalogue_snr"])[2:]) > 0)  # the catalogue SNR follows the injected
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    assert (first[first["axis"] == "size"]["n_injected"]).sum() == 100
    text = ecsv.read_text()
    ecsv.unlink()
    run(tmp_path, path, completeness=True, completeness_trials=20, seed=11, runner=detector)
    assert ecsv.read_text() == text  # same seed: the same file, byte for byte
    run(tmp_path, path, completeness=True, completeness_trials=20, seed=12, runner=detector)
    assert ecsv.read_text() != text and QTable.read(ecsv).meta["SEED"] == 12

def test_injections_avoid_the_catalogue_and_each_other(tmp_path):
    cube = read_cube(small_beam_cube(tmp_path / "c.fits", noise_cube(NZ, NY, NX, seed=8)))
    beam, _ = completeness.beam_in_pixels(cube)
    avoid = QTable({"x": [32.0] * u.pix, "y": [32.0] * u.pix, "z": [16.0] * u.chan, "fwhm_x": [6.0] * u.pix,
                    "fwhm_y": [6.0] * u.pix, "fwhm_z": [8.0] * u.chan})  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(20):
        batch = completeness.draw_injections(rng, cube, beam, n=5, avoid=avoid)
        assert len(batch) == 5
        for i, a in enumerate(batch):
            far = np.hypot(a.x - 32, a.y - 32) >= a.shape.major + 6 + 3 or abs(a.z - 16) >= a.fwhm_z + 8
            assert far and 0 <= a.x <= NX - 1 and 0 <= a.z <= NZ - 1
            for b in batch[i + 1:]:
                assert np.hypot(a.x - b.x, a.y - b.y) >= a.shape.major + b.shape.major + 3 or \
                    abs(a.z - b.z) >= a.fwhm_z + b.fwhm_z

"""dfjax.infer, dfjax.cube_io, dfjax.tiling, dfjax.catalogue_io on tiny synthetic FITS files built in tmp_path.

The pipeline itself is replaced by a stand-in runner that "detects" the brightest pixel of each
window, and the models by a stand-in with the two sizes the tiling needs; the real
``dfjax.pipeline.run`` is only used by the subprocess tests that need it (skipped without it).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits, votable

from dfjax import catalogue_io, infer
from dfjax.cube_io import CubeError, read_cube
from dfjax.tiling import min_channels, run_tiled, windows

CELL_DEG = 0.1 / 3600.0
F0_HZ, DF_HZ = 230e9, 10e6


from dfjax.pipeline.run import Source  # noqa: E402


class FakeModels:
    crop_size = 32
    spectrum_length = 16


def brightest_pixel(cube: np.ndarray, models=None, config=None) -> list[Source]:
    """Stand-in pipeline: one source at the brightest voxel of the window (NaN counts as 0)."""
    z, y, x = np.unravel_index(np.argmax(np.nan_to_num(cube)), cube.shape)
    peak = float(cube[z, y, x])
    return [Source(x=float(x), y=float(y), z=float(z), fwhm_x=3.0, fwhm_y=3.0, pa=10.0, fwhm_z=2.0,
                   peak_flux=peak, line_flux=0.5, line_flux_measured=0.0, continuum=0.0, snr=peak,
                   x0=int(x) - 2, y0=int(y) - 2, x1=int(x) + 3, y1=int(y) + 3, z0=z - 2.0, z1=z + 2.0)]


def cube_header(nx: int, ny: int, nz: int, *, spectral: str = "FREQ", descending: bool = False,
                stokes: bool = True, bunit: str = "Jy/beam") -> fits.Header:
    """A tclean-like header: RA---SIN, DEC--SIN, spectral[, STOKES]."""
    h = fits.Header()
    spec = {"FREQ": ("FREQ", F0_HZ, -DF_HZ if descending else DF_HZ, "Hz"),
            "VRAD": ("VRAD", 0.0, 13000.0, "m/s")}[spectral]  # fmt: skip
    axes = [("RA---SIN", nx // 2 + 1, 60.0, -CELL_DEG, "deg"), ("DEC--SIN", ny // 2 + 1, -35.0, CELL_DEG, "deg"),
            (spec[0], 1.0, spec[1], spec[2], spec[3])] + ([("STOKES", 1.0, 1.0, 1.0, "")] if stokes else [])
    for i, (ctype, crpix, crval, cdelt, cunit) in enumerate(axes, start=1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CUNIT{i}"] = ctype, crpix, crval, cdelt, cunit
    h["BUNIT"], h["RESTFRQ"], h["RADESYS"], h["SPECSYS"] = bunit, F0_HZ, "FK5", "LSRK"
    h["BMAJ"], h["BMIN"], h["BPA"] = 1.0 / 3600, 0.5 / 3600, 30.0
    return h


def noise_cube(nz: int, ny: int, nx: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1e-3, (nz, ny, nx)).astype(np.float32)  # Jy/beam


def write_cube(path: Path, data: np.ndarray, **header_kw) -> Path:
    """Write data (nz, ny, nx) in Jy/beam as a 4-D (1, nz, ny, nx) FITS cube."""
    h = cube_header(data.shape[2], data.shape[1], data.shape[0], **header_kw)
    stokes = header_kw.get("stokes", True)
    fits.PrimaryHDU(data[None] if stokes else data, header=h).writeto(path)
    return path


# ---------------------------------------------------------------- reader


def test_read_4d_cube_scales_to_mjy_and_reads_wcs(tmp_path):
    data = noise_cube(16, 20, 24)
    cube = read_cube(write_cube(tmp_path / "c.fits", data))
    assert cube.shape == (16, 20, 24)
    np.testing.assert_allclose(cube.data, data * 1e3, rtol=1e-6)  # Jy/beam → mJy/beam
    np.testing.assert_allclose(cube.freq.to_value(u.Hz), F0_HZ + DF_HZ * np.arange(16))
    assert cube.beam.major.to_value(u.arcsec) == pytest.approx(1.0)
    assert cube.beam.pa.to_value(u.deg) == pytest.approx(30.0)
    np.testing.assert_allclose(cube.pixel_scale.to_value(u.arcsec), [0.1, 0.1])
    ra, dec = cube.sky_at(np.array([12.0]), np.array([10.0]))  # the reference pixel
    assert (ra[0], dec[0]) == pytest.approx((60.0, -35.0))


def test_read_3d_mjy_and_descending_frequency(tmp_path):
    data = noise_cube(16, 20, 20)
    path = write_cube(tmp_path / "c.fits", data, stokes=False, descending=True, bunit="mJy/beam")
    cube = read_cube(path)
    np.testing.assert_allclose(cube.data, data, rtol=1e-6)  # already mJy/beam
    np.testing.assert_allclose(cube.freq.to_value(u.Hz), F0_HZ - DF_HZ * np.arange(16))  # stored order kept


def test_read_transposed_axes_matches_standard(tmp_path):
    data = noise_cube(16, 20, 24)
    standard = read_cube(write_cube(tmp_path / "s.fits", data, stokes=False))
    h = cube_header(24, 20, 16, stokes=False)
    t = fits.Header()  # FITS axes in the order (spectral, RA, DEC): numpy (dec, ra, z)
    for new, old in ((1, 3), (2, 1), (3, 2)):
        for key in ("CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT"):
            t[f"{key}{new}"] = h[f"{key}{old}"]
    for key in ("BUNIT", "RESTFRQ", "BMAJ", "BMIN", "BPA"):
        t[key] = h[key]
    fits.PrimaryHDU(np.transpose(data, (1, 2, 0)), header=t).writeto(tmp_path / "t.fits")
    cube = read_cube(tmp_path / "t.fits")
    np.testing.assert_array_equal(cube.data, standard.data)
    np.testing.assert_allclose(cube.freq.value, standard.freq.value)


def test_read_vrad_axis_gives_frequencies(tmp_path):
    cube = read_cube(write_cube(tmp_path / "v.fits", noise_cube(16, 20, 20), spectral="VRAD"))
    v = 13.0 * np.arange(16)  # km/s
    np.testing.assert_allclose(cube.freq.to_value(u.Hz), F0_HZ * (1 - v / 299792.458), rtol=1e-12)  # radio
    np.testing.assert_allclose(cube.velocity.to_value(u.km / u.s), v, atol=1e-6)


def test_read_beams_table_and_nan_blanks(tmp_path):
    data = noise_cube(16, 20, 20)
    data[:, :3, :] = np.nan  # pblimit blanking
    h = cube_header(20, 20, 16)
    bmaj = np.linspace(1.0, 2.5, 16)
    cols = [fits.Column("BMAJ", "E", unit="arcsec", array=bmaj), fits.Column("BMIN", "E", unit="arcsec", array=bmaj / 2),
            fits.Column("BPA", "E", unit="deg", array=np.full(16, 20.0)), fits.Column("CHAN", "J", array=np.arange(16)),
            fits.Column("POL", "J", array=np.zeros(16, int))]  # fmt: skip
    beams = fits.BinTableHDU.from_columns(cols, name="BEAMS")
    fits.HDUList([fits.PrimaryHDU(data[None], header=h), beams]).writeto(tmp_path / "b.fits")
    cube = read_cube(tmp_path / "b.fits")
    assert cube.beam.major.to_value(u.arcsec) == pytest.approx(np.median(bmaj), rel=1e-6)
    assert cube.channel_beams.major.shape == (16,)
    assert cube.blank.sum() == 16 * 3 * 20 and np.isnan(cube.data[:, :3]).all()


def test_read_rejects_non_beam_units(tmp_path):
    with pytest.raises(CubeError, match="not a surface brightness per beam"):
        read_cube(write_cube(tmp_path / "k.fits", noise_cube(16, 8, 8), bunit="K"))


# ---------------------------------------------------------------- catalogues


@pytest.fixture
def small_cube(tmp_path):
    data = noise_cube(16, 20, 24)
    data[5, 10, 12] = 0.05
    return read_cube(write_cube(tmp_path / "c.fits", data))


@pytest.mark.parametrize("fmt", list(catalogue_io.FORMATS))
def test_catalogue_formats_keep_units(tmp_path, small_cube, fmt):
    table = catalogue_io.catalogue_table(small_cube, brightest_pixel(small_cube.data))
    assert table["peak_flux"].unit == u.Jy / u.beam and table["peak_flux"][0].value == pytest.approx(0.05, rel=1e-5)
    assert table["freq"][0].to_value(u.Hz) == pytest.approx(F0_HZ + 5 * DF_HZ)
    assert table["fwhm_z_kms"][0].to_value(u.km / u.s) == pytest.approx(2 * 299792.458 * DF_HZ / F0_HZ, rel=1e-6)
    path = tmp_path / f"cat.{fmt}"
    catalogue_io.write_catalogue(table, path, fmt)
    back = catalogue_io.read_catalogue(path, fmt)
    assert len(back) == 1 and back["x"][0] == 12 * (u.pix if fmt != "csv" else 1)
    if fmt == "csv":
        assert "ra[deg]" in path.read_text().splitlines()[0]
    else:
        assert back["ra"].unit == u.deg and back["line_flux"].unit == u.Jy * u.km / u.s
    if fmt == "votable":
        parsed = votable.parse(str(path)).get_first_table()
        assert parsed.get_field_by_id("dec").unit == u.deg
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_write_is_atomic(tmp_path, small_cube, monkeypatch):
    path = tmp_path / "cat.ecsv"
    path.write_text("old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(catalogue_io.os, "replace", fail)
    with pytest.raises(OSError):
        catalogue_io.write_catalogue(catalogue_io.catalogue_table(small_cube, []), path)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["c.fits", "cat.ecsv"]


def test_never_overwrites_the_input(tmp_path, small_cube):
    with pytest.raises(infer.InferError, match="overwrite an input"):
        infer.infer_files([small_cube.path], out=small_cube.path, model_dir=tmp_path,
                          loader=lambda d: FakeModels(), runner=brightest_pixel)


# ---------------------------------------------------------------- batch mode and plots


def test_batch_loads_models_once_and_writes_one_catalogue_per_cube(tmp_path):
    loads = []
    cubes = [write_cube(tmp_path / f"cube{i}.fits", noise_cube(16, 20, 20, seed=i)) for i in range(2)]
    (tmp_path / "models").mkdir()
    out = infer.infer_files(cubes, model_dir=tmp_path / "models", out=tmp_path / "cats", fmt="votable", plot=True,
                            loader=lambda d: loads.append(d) or FakeModels(), runner=brightest_pixel, progress=False)
    assert len(loads) == 1
    assert sorted(p.name for p in (tmp_path / "cats").iterdir()) == [
        "cube0.cat.png", "cube0.cat.vot", "cube1.cat.png", "cube1.cat.vot"]
    assert out == [tmp_path / "cats" / "cube0.cat.vot", tmp_path / "cats" / "cube1.cat.vot"]
    assert (tmp_path / "cats" / "cube0.cat.png").read_bytes()[:4] == b"\x89PNG"


def test_default_catalogue_sits_next_to_the_cube(tmp_path):
    cube = write_cube(tmp_path / "obs.fits", noise_cube(16, 20, 20))
    (tmp_path / "m").mkdir()
    infer.infer_files([cube], model_dir=tmp_path / "m", loader=lambda d: FakeModels(), runner=brightest_pixel)
    assert (tmp_path / "obs.cat.ecsv").is_file()


# ---------------------------------------------------------------- tiling


def test_windows_cover_and_overlap():
    assert windows(20, 32) == [(0, 20)]
    w = windows(80, 32)
    assert w[0][0] == 0 and w[-1][1] == 80 and all(b[0] < a[1] - 7 for a, b in zip(w, w[1:]))  # >= 25 % overlap
    assert min_channels(128) == 64


def test_source_in_a_tile_overlap_is_reported_once():
    cube = np.random.default_rng(1).normal(0, 1, (16, 80, 80)).astype(np.float32)
    cube[7, 40, 30] = 100.0  # inside the overlap of the first two x and y windows (0-32, 24-56)
    calls = []
    found = run_tiled(cube, lambda part: calls.append(part.shape) or brightest_pixel(part), crop_size=32,
                      spectrum_length=16)
    assert len(calls) == len(windows(80, 32)) ** 2 and all(s == (16, 32, 32) for s in calls)
    bright = [s for s in found if s.peak_flux == 100.0]
    assert len(bright) == 1 and (bright[0].x, bright[0].y, bright[0].z) == (30, 40, 7)
    assert (bright[0].x0, bright[0].y1) == (28, 43)


def test_channel_windows_and_padding():
    cube = np.zeros((40, 20, 20), np.float32)
    cube[20, 5, 6] = 9.0  # in the overlap of the channel windows (0-16, 12-28, 24-40)
    shapes = []
    found = run_tiled(cube, lambda p: shapes.append(p.shape) or brightest_pixel(p), crop_size=32, spectrum_length=16)
    assert [s.z for s in found if s.peak_flux == 9.0] == [20]
    assert all(s[0] == 16 for s in shapes)
    short = np.zeros((10, 20, 20), np.float32)  # padded to 16 channels; a "source" in the padding is dropped
    assert run_tiled(short, lambda p: [brightest_pixel(p)[0]] if p.shape[0] == 16 else [], crop_size=32,
                     spectrum_length=16)[0].z < 10
    with pytest.raises(ValueError, match="fewer than the 8"):
        run_tiled(np.zeros((7, 20, 20), np.float32), brightest_pixel, crop_size=32, spectrum_length=16)


def test_too_few_channels_is_refused_before_writing(tmp_path):
    cube = write_cube(tmp_path / "short.fits", noise_cube(7, 20, 20))
    (tmp_path / "m").mkdir()
    with pytest.raises(infer.InferError, match="7 channels, fewer than the 8"):
        infer.infer_files([cube], model_dir=tmp_path / "m", loader=lambda d: FakeModels(), runner=brightest_pixel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "short.fits"]


def test_incompatible_models_are_one_line_errors(tmp_path):
    cube = write_cube(tmp_path / "c.fits", noise_cube(16, 20, 20))
    (tmp_path / "m").mkdir()

    def loader(d):
        raise ValueError("deep_gru: spectrum_length 16 but blobs_finder\nexpects 128")

    with pytest.raises(infer.InferError, match="^model directory .*m: deep_gru: spectrum_length 16 but blobs_finder expects"):
        infer.infer_files([cube], model_dir=tmp_path / "m", loader=loader, runner=brightest_pixel)


# ---------------------------------------------------------------- bad inputs through the command line


def _bad_corpus(d: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, expected words in the error)."""
    (d / "text.fits").write_text("this is not a FITS file\n" * 10)
    good = write_cube(d / "good.fits", noise_cube(16, 20, 20))
    blob = good.read_bytes()
    (d / "truncated.fits").write_bytes(blob[: len(blob) // 2])
    fits.PrimaryHDU(np.zeros((20, 20), np.float32), header=cube_header(20, 20, 1, stokes=False)).writeto(d / "image.fits")
    h = cube_header(20, 20, 16, stokes=False)
    h["CTYPE3"], h["CUNIT3"] = "LINEAR", ""
    fits.PrimaryHDU(noise_cube(16, 20, 20), header=h).writeto(d / "nospec.fits")
    write_cube(d / "allnan.fits", np.full((16, 20, 20), np.nan, np.float32))
    good.unlink()
    return {"not FITS": (d / "text.fits", "not a readable FITS"), "truncated": (d / "truncated.fits", "FITS"),
            "2-D": (d / "image.fits", "not a cube"), "no spectral axis": (d / "nospec.fits", "no spectral axis"),
            "all NaN": (d / "allnan.fits", "blank")}  # fmt: skip


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    checkout = str(Path(__file__).resolve().parents[1])  # import this checkout's dfjax, not an installed one
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": checkout}
    return subprocess.run([sys.executable, "-m", "dfjax.infer", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def _assert_one_line_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and words in lines[0], result.stderr


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path):
    corpus = _bad_corpus(tmp_path)
    (tmp_path / "models").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, (path, words) in corpus.items():
        result = _run_cli(str(path), cwd=tmp_path)
        _assert_one_line_error(result, words)
        assert str(path.name) in result.stderr, name
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_model_directory_says_how_to_get_one(tmp_path):
    cube = write_cube(tmp_path / "c.fits", noise_cube(16, 20, 20))
    result = _run_cli(str(cube), cwd=tmp_path)
    _assert_one_line_error(result, "dvc repro")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.fits"]


@pytest.mark.skipif(importlib.util.find_spec("dfjax.pipeline.run") is None, reason="dfjax.pipeline.run not there yet")
def test_cli_incompatible_model_dir(tmp_path):
    cube = write_cube(tmp_path / "c.fits", noise_cube(16, 20, 20))
    for name in ("blobs_finder", "deep_gru", "resnet_fwhm_x", "resnet_fwhm_y", "resnet_pa", "resnet_flux"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "model.json").write_text('{"model": "nonsense", "overrides": {}}')
    result = _run_cli(str(cube), cwd=tmp_path)
    _assert_one_line_error(result, "model directory")
    assert not list(tmp_path.glob("*.cat.*"))


# ---------------------------------------------------------------- the real pipeline, tiny random models


def test_real_pipeline_runs_tiled_on_a_cube_larger_than_the_crop(tmp_path):
    from flax import nnx

    from dfjax import models as zoo
    from dfjax.pipeline import PipelineConfig
    from dfjax.pipeline.run import Models

    class PeakGRU:  # stand-in Deep GRU: the spectrum rescaled to [0, 1], so the bright line is found
        spectrum_length = 16

        def __call__(self, x):
            lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
            return (x - lo) / (hi - lo + 1e-6)

    six = Models(blobs_finder=zoo.BlobsFinderTiny(rngs=nnx.Rngs(0)), deep_gru=PeakGRU(),
                 **{name: zoo.ResNetTiny(rngs=nnx.Rngs(i + 2)) for i, name in
                    enumerate(("resnet_fwhm_x", "resnet_fwhm_y", "resnet_pa", "resnet_flux"))})  # fmt: skip
    data = noise_cube(20, 40, 48)
    data[8:12, 18:22, 20:24] += 0.05  # random Blobs Finder + threshold 0: every window is one blob
    cube = read_cube(write_cube(tmp_path / "c.fits", data))
    config = PipelineConfig().replace(**{"detect.threshold": 0.0})
    table = infer.infer_cube(cube, six, config)  # the default runner: dfjax.pipeline.run.run_pipeline
    assert infer.model_sizes(six) == (32, 16)  # (random Blobs Finder: sources may or may not survive focusing)
    assert {"ra", "freq", "line_flux", "line_flux_measured", "flags"} <= set(table.colnames)
    assert np.all((table["x0"].value >= 0) & (table["x1"].value <= 48) & (table["y1"].value <= 40))
    assert np.all((table["z"].value >= 0) & (table["z"].value < 20))


def test_a_psf_beside_the_cube_is_the_scene_fits_beam_and_turns_it_on(tmp_path):
    """cube_psf: ``<stem>.psf.fits`` beside the cube (or --psf) is read, normalised and centred for a
    refining configuration too (scene.with_psf); with_psf off, or the header's beam asked for without
    the scene fit, gives none; an unreadable PSF is an InferError naming the file."""
    from dfjax.pipeline.config import PipelineConfig

    data = np.random.default_rng(0).normal(0, 1e-3, (1, 8, 24, 24)).astype(np.float32)
    path = tmp_path / "c.fits"
    fits.writeto(path, data, cube_header(24, 24, 8))
    cube = read_cube(path)
    tuned = PipelineConfig().replace(**{"characterise.method": "fit", "characterise.refine_iterations": 2})
    assert infer.cube_psf(cube, tuned) is None  # no PSF anywhere: refinement, beam from the noise
    yy, xx = np.mgrid[-12:12, -12:12]
    beam = 2.0 * np.exp(-0.5 * ((xx - 1) ** 2 + yy**2) / 2.0**2)  # peak 2 at (13, 12): normalised and centred
    fits.writeto(tmp_path / "c.psf.fits", beam[None, None].astype(np.float32))
    psf = infer.cube_psf(cube, tuned)
    assert psf.shape == (47, 47) and psf[23, 23] == pytest.approx(1.0) and psf.max() == pytest.approx(1.0)
    assert infer.cube_psf(cube, tuned.replace(**{"scene.with_psf": False})) is None
    assert infer.cube_psf(cube, tuned.replace(**{"scene.psf": "beam"})) is None
    (tmp_path / "bad.fits").write_bytes(b"not fits")
    with pytest.raises(infer.InferError, match="bad.fits"):
        infer.cube_psf(cube, tuned, tmp_path / "bad.fits")


def test_a_cleaned_cube_is_fitted_through_its_restoring_beam_and_alma_names_find_their_pb(tmp_path):
    """cube_psf with ``auto``: a cleaned cube (NITER > 0, or PB-corrected as the archive's products
    are) without a PSF file is seen through its header's restoring beam, a dirty one is not; the
    ALMA pipeline's X.pbcor.fits finds X.pb.fits and X.psf.fits beside it."""
    from dfjax.pipeline.config import PipelineConfig

    data = np.random.default_rng(0).normal(0, 1e-3, (1, 8, 24, 24)).astype(np.float32)
    header = cube_header(24, 24, 8)
    header["BMAJ"], header["BMIN"], header["BPA"] = 4 * CELL_DEG, 2 * CELL_DEG, 0.0
    fits.writeto(tmp_path / "dirty.fits", data, header)
    header["NITER"] = 300
    fits.writeto(tmp_path / "clean.fits", data, header)
    tuned = PipelineConfig().replace(**{"characterise.method": "fit", "characterise.refine_iterations": 2})
    dirty, clean = read_cube(tmp_path / "dirty.fits"), read_cube(tmp_path / "clean.fits")
    assert not infer.is_cleaned(dirty) and infer.is_cleaned(clean)
    assert infer.cube_psf(dirty, tuned, cleaned=infer.is_cleaned(dirty)) is None
    beam = infer.cube_psf(clean, tuned, cleaned=True)
    assert beam.shape == (47, 47) and beam[23, 23] == pytest.approx(1.0)
    # a Gaussian of FWHM 2 x 4 px (RA runs along -x, so the major axis is along y for BPA 0)
    assert beam[23 + 2, 23] == pytest.approx(0.5, abs=0.02) and beam[23, 23 + 1] == pytest.approx(0.5, abs=0.02)
    assert infer.cube_psf(clean, tuned.replace(**{"scene.with_psf": False}), cleaned=True) is None
    dirty_beam = np.zeros((8, 24, 24), np.float32)
    dirty_beam[:, 12, 12], dirty_beam[:, 12, 2] = 1.0, 0.3  # a far sidelobe a restored image does not have
    fits.writeto(tmp_path / "clean.psf.fits", dirty_beam)  # tclean's .psf beside its cleaned .image
    np.testing.assert_array_equal(infer.cube_psf(clean, tuned, cleaned=True), beam)  # the restoring beam wins
    assert infer.cube_psf(clean, tuned.replace(**{"scene.psf": "file"}), cleaned=True)[23, 13] == pytest.approx(0.3)
    fits.writeto(tmp_path / "X.cube.I.pbcor.fits", data, cube_header(24, 24, 8))
    fits.writeto(tmp_path / "X.cube.I.pb.fits", np.ones((8, 24, 24), np.float32))
    archive = read_cube(tmp_path / "X.cube.I.pbcor.fits")
    assert infer.sibling(archive, "pb").name == "X.cube.I.pb.fits"
    assert infer.sibling(archive, "psf").name == "X.cube.I.pbcor.psf.fits"  # neither there: the first name
    assert infer.cube_pb(archive) is not None and infer.cube_response(archive, infer.cube_pb(archive)).pb_corrected


def test_a_primary_beam_divides_the_measured_fluxes_at_each_source(tmp_path):
    """cube_pb + pb_corrected: <stem>.pb.fits beside a flat-noise cube (or --pb) divides peak and
    measured fluxes by the PB at the source's pixel and channel and fills ``pb``; the ResNet's
    line_flux stays; a PB-corrected cube (PBCOR = T) is run times its PB and keeps its own fluxes; a
    PB on another grid is refused by name."""
    data = np.zeros((1, 8, 24, 24), np.float32)
    data[0, 3, 6, 18] = 1.0  # the brightest voxel: x 18, y 6, channel 3
    path = tmp_path / "c.fits"
    fits.writeto(path, data, cube_header(24, 24, 8))
    plain = infer.infer_cube(path, FakeModels(), runner=brightest_pixel)
    assert "pb" not in plain.colnames
    pb = np.ones((8, 24, 24), np.float32)
    pb[3, 6, 18], pb[4, 6, 18] = 0.8, 0.5  # only the source's own channel counts
    fits.writeto(tmp_path / "c.pb.fits", pb[None])
    table = infer.infer_cube(path, FakeModels(), runner=brightest_pixel)
    assert table["pb"][0] == pytest.approx(0.8)
    assert table["peak_flux"][0].value == pytest.approx(plain["peak_flux"][0].value / 0.8)
    assert table["line_flux"][0].value == plain["line_flux"][0].value
    catalogue_io.write_catalogue(table, tmp_path / "c.vot", "votable")  # pb's UCD passes the strict reader
    fields = votable.parse(tmp_path / "c.vot", verify="exception").get_first_table().fields
    assert [f.ucd for f in fields if f.name == "pb"] == ["phys.transmission;instr.beam"]
    fits.writeto(tmp_path / "small.fits", np.ones((12, 12), np.float32))
    with pytest.raises(infer.InferError, match=r"--pb .*small.fits: shape \(12, 12\)"):
        infer.infer_cube(path, FakeModels(), runner=brightest_pixel, pb_file=tmp_path / "small.fits")
    header = cube_header(24, 24, 8)
    header["PBCOR"] = True
    fits.writeto(tmp_path / "corrected.fits", data, header)
    seen = []
    corrected = infer.infer_cube(tmp_path / "corrected.fits", FakeModels(), pb_file=tmp_path / "c.pb.fits",
                                 runner=lambda part, *a: seen.append(part) or brightest_pixel(part, *a))  # fmt: skip
    sky = read_cube(tmp_path / "corrected.fits").data[3, 6, 18]
    assert seen[0][3, 6, 18] == pytest.approx(0.8 * sky)  # the pipeline saw the flat-noise image, sky × PB
    assert corrected["pb"][0] == pytest.approx(0.8)
    assert corrected["peak_flux"][0].value == pytest.approx(plain["peak_flux"][0].value)  # the sky's, as given


def test_pb_corrected_leaves_a_source_past_the_pb_limit_alone(tmp_path):
    data = np.zeros((1, 8, 24, 24), np.float32)
    data[0, 3, 6, 18] = 1.0
    path = tmp_path / "c.fits"
    fits.writeto(path, data, cube_header(24, 24, 8))
    table = infer.infer_cube(path, FakeModels(), runner=brightest_pixel)
    pb = np.full((24, 24), np.nan, np.float32)
    kept = catalogue_io.pb_corrected(table, pb)
    assert np.isnan(kept["pb"][0]) and kept["peak_flux"][0] == table["peak_flux"][0]
    pb[:] = 0.5
    corrected = catalogue_io.pb_corrected(table, pb)
    assert corrected["pb"][0] == 0.5 and corrected["peak_flux"][0] == 2 * table["peak_flux"][0]
    assert corrected["line_flux"][0] == table["line_flux"][0] and table["peak_flux"].unit == corrected["peak_flux"].unit


def test_compiled_programs_are_kept_between_runs_unless_the_cache_is_off(tmp_path):
    # jax's configuration is per process: each setting is tried in its own interpreter
    # the floor (programs compiled faster are not kept) is checked, then lowered to 0: whether this
    # little program takes 0.1 s to compile depends on the machine, where the cache goes does not
    script = ("import jax, jax.numpy as jnp\nfrom dfjax.infer import use_compilation_cache\n"
              "path = use_compilation_cache()\nprint(path)\n"
              "assert path is None or jax.config.jax_persistent_cache_min_compile_time_secs == 0.1\n"
              "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)\n"
              "jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.ones((64, 64))).block_until_ready()")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}

    def run(**extra: str) -> str:
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           env=env | extra)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    kept = tmp_path / "xla"
    assert run(DFJAX_XLA_CACHE=str(kept)) == str(kept)
    entries = sorted(p.name for p in kept.iterdir())
    assert any(name.startswith("jit_") for name in entries), entries
    home = tmp_path / "home"
    assert run(DFJAX_XLA_CACHE="off", XDG_CACHE_HOME=str(home)) == "None"
    assert not home.exists()
    assert run(XDG_CACHE_HOME=str(home)) == str(home / "dfjax" / "xla")
    assert any((home / "dfjax" / "xla").iterdir())

"""Pipeline steps (i) and (ii) on hand-made inputs: box geometry in field pixels, crop placement,
line finding and fitting, continuum trend, candidate selection, NaN handling, config parsing."""

from __future__ import annotations

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dfjax import models
from dfjax.input_pipeline.transforms import standardise
from dfjax.pipeline import (
    ConfigError,
    PipelineConfig,
    boxes_from_map,
    characterise_spectra,
    denoise_spectra,
    detect,
    detection_map,
    find_lines,
    fit_continuum,
    integrated_image,
)

FWHM_PER_SIGMA = 2.3548200450309493


def gaussian(n: int, centre: float, fwhm: float, amplitude: float = 1.0) -> np.ndarray:
    z = np.arange(n, dtype=np.float64)
    return amplitude * np.exp(-0.5 * ((z - centre) / (fwhm / FWHM_PER_SIGMA)) ** 2)


def identity(x):
    return x


class Sized:
    """A stand-in Blobs Finder that states its input side, as the trained module does (``image_size``)."""

    def __init__(self, f, image_size: int):
        self.f, self.image_size = f, image_size

    def __call__(self, x):
        return self.f(x)


def rowwise_minmax(x):
    """Stand-in Deep GRU: (B, L) → (B, L) rescaled to [0, 1] per row (flat rows → 0)."""
    lo, hi = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    span = hi - lo
    return jnp.where(span > 0, (x - lo) / jnp.where(span > 0, span, 1.0), 0.0)


# ---------------------------------------------------------------- step (i): boxes


def test_boxes_from_map_exact_half_open_boxes_in_field_pixels():
    rng = np.random.default_rng(0)
    ny, nx = 20, 24  # not square: a swapped x/y would move the boxes off the field
    prob = rng.uniform(0.0, 0.14, size=(ny, nx))  # background fluctuations under the threshold
    prob[5, 11] = 0.15  # exactly at the threshold: not above it
    prob[3:7, 5:10] = 0.6  # blob A: rows 3-6, columns 5-9
    prob[10, 1] = 0.9  # a one-pixel blob
    prob[15:20, 20:24] = 0.8  # blob B touches the bottom and right borders
    prob[14, 19] = 0.5  # ... and a diagonal neighbour of its corner (8-connected)
    boxes = boxes_from_map(prob)
    expected = [(5, 3, 10, 7), (1, 10, 2, 11), (19, 14, 24, 20)]  # (x0, y0, x1, y1), raster order
    np.testing.assert_array_equal(boxes, np.array(expected))
    assert boxes.dtype == np.int64
    np.testing.assert_array_equal(boxes_from_map(prob, min_area=2), np.array([expected[0], expected[2]]))
    # 4-connectivity splits the diagonal pixel off blob B
    four = boxes_from_map(prob, connectivity=1)
    np.testing.assert_array_equal(four, np.array([expected[0], expected[1], (19, 14, 20, 15), (20, 15, 24, 20)]))
    assert boxes_from_map(np.zeros((8, 8))).shape == (0, 4)
    with pytest.raises(ValueError):
        boxes_from_map(np.zeros((2, 8, 8)))


# ---------------------------------------------------------------- step (i): crop placement


def crop_index_ramp(size: int):
    """Stand-in model of input side ``size`` whose output at crop pixel (i, j) is i * size + j, whatever the input."""
    ramp = jnp.arange(size * size, dtype=jnp.float32).reshape(1, size, size, 1)
    return Sized(lambda x: x * 0.0 + ramp, size)


@pytest.mark.parametrize("shape", [(13, 16), (5, 6)])  # field larger / smaller than the crop
def test_detection_map_puts_the_crop_back_at_its_field_offset(shape):
    size = 8
    config = PipelineConfig().replace(**{"detect.batch_size": 2})
    ny, nx = shape
    oy, ox = (ny - size) // 2, (nx - size) // 2  # centre_crop's convention; negative → padding
    images = np.random.default_rng(1).normal(size=(3, ny, nx)).astype(np.float32)
    maps = detection_map(crop_index_ramp(size), images, config)
    assert maps.shape == (3, ny, nx)
    yy, xx = np.mgrid[:ny, :nx]
    iy, ix = yy - oy, xx - ox  # crop pixel of each field pixel
    inside = (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
    expected = np.where(inside, iy * size + ix, 0).astype(np.float32)
    for m in maps:
        np.testing.assert_array_equal(m, expected)
    # identity model: each field pixel inside the crop gets its own min-max normalised value
    out = detection_map(Sized(identity, size), images, config)
    for image, m in zip(images, out):
        window = image[max(oy, 0) : oy + size, max(ox, 0) : ox + size]
        norm = (window - window.min()) / (window.max() - window.min())
        np.testing.assert_allclose(m[max(oy, 0) : oy + size, max(ox, 0) : ox + size], norm, atol=1e-6)
        assert np.count_nonzero(m[~inside]) == 0


def test_detect_returns_field_boxes_through_the_crop():
    nz, ny, nx, size = 4, 30, 40, 16
    config = PipelineConfig()
    cube = np.zeros((nz, ny, nx), np.float32)
    cube[:, 12:15, 20:26] = 1.0  # inside the crop (rows 7-22, columns 12-27)
    cube[:, 0:3, 0:3] = 1.0  # outside the crop: Blobs Finder never sees it
    np.testing.assert_array_equal(detect(Sized(identity, size), cube, config), [[20, 12, 26, 15]])
    assert len(detect(identity, cube, config)) == 2  # a stand-in that states no input side sees the whole field


def test_detection_map_runs_blobs_finder_tiny():
    model = models.BlobsFinderTiny(rngs=nnx.Rngs(0))
    config = PipelineConfig().replace(**{"detect.batch_size": 2})
    images = np.random.default_rng(2).normal(size=(3, 40, 36)).astype(np.float32)
    maps = detection_map(model, images, config)
    assert maps.shape == (3, 40, 36) and maps.dtype == np.float32
    assert np.all((maps >= 0) & (maps <= 1))
    assert np.all(maps[:, 4:36, 2:34] > 0) and np.count_nonzero(maps) == 3 * 32 * 32
    assert detection_map(model, images[0], config).shape == (40, 36)


def test_integrated_image_handles_nan_blanked_pixels():
    cube = np.random.default_rng(3).normal(size=(4, 5, 6)).astype(np.float32)
    cube[:, 1, 2] = np.nan  # blanked outside the primary beam
    cube[2, 4, 5] = np.nan
    image = integrated_image(cube)
    assert image.shape == (5, 6) and np.isfinite(image).all()
    filled = np.where(np.isnan(cube), 0.0, cube).astype(np.float64)
    lo, hi = filled.min(), filled.max()
    np.testing.assert_allclose(image, ((filled - lo) / (hi - lo)).sum(axis=0), rtol=1e-5)
    with pytest.raises(ValueError):
        integrated_image(cube[0])


# ---------------------------------------------------------------- step (ii): lines


def test_find_lines_recovers_a_single_gaussian():
    centre, fwhm = 27.3, 5.0
    (line,) = find_lines(gaussian(64, centre, fwhm, 0.8))
    assert abs(line.z - centre) < 0.2
    assert abs(line.fwhm_z / fwhm - 1) < 0.1
    assert abs(line.amplitude - 0.8) < 0.05
    assert line.z0 == pytest.approx(line.z - line.fwhm_z) and line.z1 == pytest.approx(line.z + line.fwhm_z)


@pytest.mark.parametrize("fitter", ["levmar", "trf"])
def test_find_lines_two_peaks_brightest_first(fitter):
    config = PipelineConfig().replace(**{"spectra.fitter": fitter})
    spectrum = gaussian(64, 45.0, 4.0, 0.5) + gaussian(64, 15.0, 6.0, 0.9)
    lines = find_lines(spectrum, config)
    assert [round(line.z) for line in lines] == [15, 45]
    assert abs(lines[0].fwhm_z / 6.0 - 1) < 0.1 and abs(lines[1].fwhm_z / 4.0 - 1) < 0.1


def test_find_lines_none_on_flat_or_faint_spectra():
    assert find_lines(np.zeros(32)) == []
    assert find_lines(gaussian(32, 16.0, 4.0, 0.09)) == []  # under the 0.1 height
    lower = PipelineConfig().replace(**{"spectra.peak_height": 0.05})
    assert len(find_lines(gaussian(32, 16.0, 4.0, 0.09), lower)) == 1


def test_fit_continuum_recovers_the_slope_outside_the_emission_range():
    n, slope, intercept = 64, 0.05, 3.0
    line = gaussian(n, 20.0, 5.0, 1.0)
    spectrum = intercept + slope * np.arange(n) + line
    lines = find_lines(line / line.max())
    fitted_slope, fitted_intercept = fit_continuum(spectrum, lines)
    assert fitted_slope == pytest.approx(slope, rel=0.01)
    assert fitted_intercept == pytest.approx(intercept, rel=0.02)
    assert fit_continuum(spectrum, [])[0] != pytest.approx(slope, rel=0.01)  # the line biases it


def test_characterise_spectra_keeps_lines_flags_blends_drops_empty():
    nz = 64
    cube = np.zeros((nz, 12, 12), np.float32)
    cube[:, 0:4, 0:4] = gaussian(nz, 20.0, 4.0)[:, None, None]  # one line
    cube[:, 0:4, 6:10] = (gaussian(nz, 15.0, 5.0) + gaussian(nz, 45.0, 5.0, 0.6))[:, None, None]  # two
    boxes = np.array([[0, 0, 4, 4], [6, 0, 10, 4], [0, 6, 4, 10]])  # the last one is empty
    candidates = characterise_spectra(rowwise_minmax, cube, boxes)
    assert [c.box for c in candidates] == [(0, 0, 4, 4), (6, 0, 10, 4)]
    single, blend = candidates
    assert not single.needs_deblending and len(single.lines) == 1
    assert abs(single.primary.z - 20.0) < 0.2
    assert blend.needs_deblending and [round(line.z) for line in blend.lines] == [15, 45]
    assert single.spectrum.shape == single.denoised.shape == (nz,)
    assert characterise_spectra(rowwise_minmax, cube, np.zeros((0, 4))) == []


def test_denoise_spectra_batches_deep_gru_tiny_in_order():
    model = models.DeepGRUTiny(rngs=nnx.Rngs(0))
    model.eval()
    spectra = np.random.default_rng(4).normal(size=(5, 16)).astype(np.float32)
    config = PipelineConfig().replace(**{"spectra.batch_size": 2})
    denoised = denoise_spectra(model, spectra, config)
    assert denoised.shape == (5, 16) and np.all((denoised >= 0) & (denoised <= 1))
    np.testing.assert_allclose(denoised, np.asarray(model(jnp.asarray(standardise(spectra)))), atol=1e-5)


# ---------------------------------------------------------------- config


def test_config_is_pedantic():
    config = PipelineConfig.from_dict({"detect": {"threshold": 0.2}, "spectra": {"peak_height": 0.05}})
    assert config.detect.threshold == 0.2 and config.spectra.peak_height == 0.05
    assert config.detect.min_area_px == PipelineConfig().detect.min_area_px
    assert PipelineConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="pipeline.detect.treshold"):
        PipelineConfig.from_dict({"detect": {"treshold": 0.2}})
    with pytest.raises(ValueError, match="pipeline.spectral"):
        PipelineConfig.from_dict({"spectral": {}})
    with pytest.raises(ConfigError, match="pipeline.spectra.fitter"):
        PipelineConfig().replace(**{"spectra.fitter": "simplex"})
    with pytest.raises(ConfigError, match="pipeline.detect.threshold"):
        PipelineConfig().replace(**{"detect.threshold": 1.5})
    with pytest.raises(ConfigError, match="pipeline.detect.min_area_px"):
        PipelineConfig().replace(**{"detect.min_area_px": "3"})


def test_settings_that_are_gone_still_load_from_an_older_file(caplog):
    """A tuned pipeline.yaml lists every setting, the removed ones too: they load (one INFO line, no
    warning on a normal run) while they hold the value the pipeline now always uses, and fail by
    name otherwise."""
    old = PipelineConfig().to_dict()
    old["detect"].update(crop_size=128, scan_box_px=0, scan_step_px=6)
    old["spectra"].update(peak_prominence=0.0, min_peak_distance_chan=1)
    old["characterise"].update(fwhm_shrinkage=0.0, fwhm_prior_px=11.8)
    old["model3d"]["spectral_dilation"] = 1.0
    old["flux"]["line_image_scale"] = 1.0
    with caplog.at_level("INFO", logger="dfjax.pipeline.config"):
        assert PipelineConfig.from_dict(old) == PipelineConfig()
    (record,) = caplog.records
    assert record.levelname == "INFO"
    assert "detect.crop_size" in record.message and "flux.line_image_scale" in record.message
    assert "\n" not in record.message
    assert old["detect"]["crop_size"] == 128  # the caller's mapping is left as it was
    assert PipelineConfig().replace(**{"detect.crop_size": 64, "detect.threshold": 0.2}).detect.threshold == 0.2
    with pytest.raises(ConfigError, match="pipeline.detect.scan_box_px: no longer a setting"):
        PipelineConfig.from_dict({"detect": {"scan_box_px": 12}})
    with pytest.raises(ConfigError, match="pipeline.characterise.fwhm_shrinkage"):
        PipelineConfig().replace(**{"characterise.fwhm_shrinkage": 0.5})


def test_inference_never_imports_training_code_grain_or_tensorflow():
    code = ("import sys, dfjax.infer, dfjax.pipeline; "
            "print(sorted(m for m in ('dfjax.train', 'grain', 'tensorflow') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tiled_detection_covers_the_whole_field_and_sees_each_blob_once():
    class Identity:  # a stand-in Blobs Finder: the normalised crop is its own probability map
        image_size = 32

        def __call__(self, x):
            return x

    field = np.zeros((80, 72), np.float32)
    field[4:7, 3:6] = 1.0  # a corner blob, outside the centre crop
    field[40:43, 36:39] = 1.0  # a central blob, in several tiles
    centre_only = PipelineConfig()
    tiled = centre_only.replace(**{"detect.tile_overlap": 0.25})
    assert detection_map(Identity(), field, centre_only)[5, 4] == 0.0
    boxes = boxes_from_map(detection_map(Identity(), field, tiled), threshold=0.5)
    assert sorted(map(tuple, boxes)) == [(3, 4, 6, 7), (36, 40, 39, 43)]


def test_the_line_fit_is_astropys_levmar_fit_to_the_digit():
    """spectra's bare MINPACK call gives what astropy's LevMarLSQFitter gives on the same data and start."""
    import warnings

    from astropy.modeling import fitting, models

    from dfjax.maths import FWHM_PER_SIGMA
    from dfjax.pipeline.spectra import _fit_gaussian

    rng = np.random.default_rng(11)
    compared = 0
    for _ in range(40):
        z = np.arange(rng.integers(6, 40), dtype=float) + rng.integers(0, 80)
        y = rng.uniform(0.2, 3) * np.exp(-0.5 * ((z - z[0] - rng.uniform(0, len(z))) / rng.uniform(0.5, 6)) ** 2)
        y = y + rng.normal(0, 0.2, len(z))
        guess = (float(max(y.max(), 1e-12)), float(z[np.argmax(y)]), float(rng.uniform(1, 12)))
        ours = _fit_gaussian(z, y, guess, "levmar")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fitting.LevMarLSQFitter()(models.Gaussian1D(guess[0], guess[1], guess[2] / FWHM_PER_SIGMA), z, y)
        theirs = (fit.amplitude.value, fit.mean.value, abs(fit.stddev.value) * FWHM_PER_SIGMA)
        if ours is not None:  # None: a fit judged unusable (off the window, non-positive)
            np.testing.assert_allclose(ours, theirs, rtol=1e-12)
            compared += 1
    assert compared >= 30

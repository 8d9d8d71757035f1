"""The beam-aware Gaussian fit (characterise.method: fit): the dirty beam from the noise, and the
intrinsic source recovered through it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import fftconvolve

from dfjax.pipeline import PipelineConfig
from dfjax.pipeline.config import ConfigError
from dfjax.pipeline.gaussfit import Neighbour, canonical, fit_source, noise_psf

FWHM_PER_SIGMA = 2.3548200450309493


def _gaussian(shape, x, y, sx, sy, pa_deg):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    c, s = np.cos(np.deg2rad(pa_deg)), np.sin(np.deg2rad(pa_deg))
    dx, dy = xx - x, yy - y
    return np.exp(-0.5 * (((dx * c - dy * s) / sx) ** 2 + ((dx * s + dy * c) / sy) ** 2))


def _dirty_beam(half=16):
    """A beam with a negative ring, like an interferometer's: a narrow Gaussian minus a wide one."""
    g = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    core = np.exp(-0.5 * ((xx / 3.6) ** 2 + (yy / 3.0) ** 2))  # ALMA-like: 8.5 x 7 px FWHM
    return core - 0.1 * np.exp(-0.5 * ((xx / 9.0) ** 2 + (yy / 9.0) ** 2))


def test_noise_psf_is_the_autocorrelation_of_the_noise_whatever_the_continuum():
    rng = np.random.default_rng(0)
    kernel = _gaussian((15, 15), 7.0, 7.0, 2.0, 1.2, 30.0)
    noise = np.stack([fftconvolve(rng.normal(size=(96, 96)), kernel, mode="same") for _ in range(48)])
    continuum = 50.0 * _gaussian((96, 96), 40.0, 50.0, 6.0, 4.0, 0.0)  # cancelled by channel differences
    psf = noise_psf(noise + continuum, half=8)
    expected = fftconvolve(kernel, kernel[::-1, ::-1], mode="full")[14 - 8 : 14 + 9, 14 - 8 : 14 + 9]
    expected /= expected[8, 8]
    assert psf.shape == (17, 17) and psf[8, 8] == pytest.approx(1.0)
    assert np.abs(psf - expected).max() < 0.05
    assert np.abs(psf - psf[::-1, ::-1]).max() < 1e-12  # an autocorrelation is point symmetric
    with pytest.raises(ValueError, match="too small"):
        noise_psf(noise[:, :10, :10], half=8)
    with pytest.raises(ValueError, match="no noise"):
        noise_psf(np.ones((4, 40, 40)), half=8)


@pytest.mark.parametrize(("sx", "sy", "pa"), [(3.0, 5.0, 20.0), (6.0, 2.5, 70.0), (4.0, 4.0, 0.0)])
def test_fit_source_recovers_the_intrinsic_gaussian_through_the_beam(sx, sy, pa):
    beam = _dirty_beam()
    truth = _gaussian((64, 64), 31.4, 29.7, sx, sy, pa)
    rng = np.random.default_rng(1)
    image = fftconvolve(truth, beam, mode="same") + rng.normal(scale=0.02, size=truth.shape)
    fit = fit_source(image, beam, 30.0, 31.0)
    assert fit is not None
    assert (fit.x, fit.y) == pytest.approx((31.4, 29.7), abs=0.1)
    assert (fit.fwhm_x, fit.fwhm_y) == pytest.approx((sx * FWHM_PER_SIGMA, sy * FWHM_PER_SIGMA), rel=0.05)
    if sx != sy:  # a round source has no angle
        assert (fit.pa - pa + 45.0) % 90.0 - 45.0 == pytest.approx(0.0, abs=3.0)
    # the beam matters: fitted as if there were none, the sizes are those of the image, not the source
    naive = fit_source(image, np.pad([[1.0]], 16), 30.0, 31.0)
    assert abs(naive.fwhm_x * naive.fwhm_y / (fit.fwhm_x * fit.fwhm_y) - 1.0) > 0.2


def test_a_background_held_at_zero_measures_sizes_better_in_a_small_window():
    # noise whose autocorrelation is the beam, as on a dirty image: its broad dips and hills trade
    # against a free background and the source's wings when the window is only ± 8 px
    beam = _dirty_beam()
    h = beam.shape[0] // 2
    centred = np.zeros((64, 64))
    centred[: 2 * h + 1, : 2 * h + 1] = beam
    gain = np.sqrt(np.clip(np.fft.rfft2(np.roll(centred, (-h, -h), axis=(0, 1))).real, 0.0, None))
    clean = fftconvolve(_gaussian((64, 64), 31.4, 29.7, 2.5, 4.0, 30.0), beam, mode="same")
    size = np.sqrt(2.5 * 4.0) * FWHM_PER_SIGMA
    errors = {True: [], False: []}
    for seed in range(20):
        noise = np.fft.irfft2(np.fft.rfft2(np.random.default_rng(seed).normal(size=(64, 64))) * gain, s=(64, 64))
        image = clean + noise * (clean.max() / 12.0 / noise.std())  # peak SNR 12
        for background in (True, False):
            fit = fit_source(image, beam, 31.0, 30.0, half=8, background=background)
            errors[background].append(abs(np.log(np.sqrt(fit.fwhm_x * fit.fwhm_y) / size)))
    assert np.median(errors[False]) < 0.85 * np.median(errors[True])


def test_a_neighbour_fitted_alongside_keeps_its_flank_out_of_the_source():
    beam = _dirty_beam()
    faint = _gaussian((64, 64), 30.0, 32.0, 2.0, 3.0, 20.0)
    bright = 4.0 * _gaussian((64, 64), 44.0, 34.0, 5.0, 4.0, 0.0)  # 14 px away, 4x brighter, wider
    image = fftconvolve(faint + bright, beam, mode="same") + np.random.default_rng(2).normal(scale=0.02, size=(64, 64))
    alone = fit_source(image, beam, 30.0, 32.0, half=8)
    assert np.hypot(alone.x - 30.0, alone.y - 32.0) > 2.0  # pulled onto the flank
    # the neighbour's shape as its own fit would give it: a few per cent off
    near = Neighbour(x=44.3, y=33.8, fwhm_x=5.25 * FWHM_PER_SIGMA, fwhm_y=4.2 * FWHM_PER_SIGMA, pa=5.0)
    fit = fit_source(image, beam, 30.0, 32.0, half=8, neighbours=[near])
    assert (fit.x, fit.y) == pytest.approx((30.0, 32.0), abs=0.3)
    assert (fit.fwhm_x, fit.fwhm_y) == pytest.approx((2.0 * FWHM_PER_SIGMA, 3.0 * FWHM_PER_SIGMA), rel=0.1)
    far = Neighbour(x=200.0, y=200.0, fwhm_x=5.0, fwhm_y=5.0, pa=0.0)  # no light in the window: ignored
    assert fit_source(image, beam, 30.0, 32.0, half=8, neighbours=[far]) == alone


def test_fit_source_gives_up_on_no_source_or_an_off_image_window():
    beam = _dirty_beam()
    assert fit_source(np.zeros((64, 64)), beam, 32.0, 32.0) is None
    assert fit_source(-np.ones((64, 64)), beam, 32.0, 32.0) is None
    assert fit_source(np.ones((64, 64)), beam, -30.0, 32.0) is None


def test_canonical_folds_the_angle_into_0_90_without_changing_the_gaussian():
    assert canonical(2.0, 5.0, 120.0) == pytest.approx((5.0, 2.0, 30.0))
    assert canonical(2.0, 5.0, -150.0) == pytest.approx((2.0, 5.0, 30.0))
    for sx, sy, pa in ((2.0, 5.0, 120.0), (3.0, 1.0, -100.0), (4.0, 2.0, 271.0)):
        a = _gaussian((41, 41), 20.0, 20.0, sx, sy, pa)
        b = _gaussian((41, 41), 20.0, 20.0, *canonical(sx, sy, pa))
        assert np.allclose(a, b, atol=1e-12)


def test_characterise_method_is_validated():
    with pytest.raises(ConfigError, match="characterise.method"):
        PipelineConfig().replace(**{"characterise.method": "moments"})
    with pytest.raises(ConfigError, match="fit_half_px"):
        PipelineConfig().replace(**{"characterise.fit_half_px": 2})


def test_estimate_morphology_fit_measures_the_source_on_its_line_image():
    from dfjax.pipeline import estimate_morphology
    from dfjax.pipeline.focus import Detection

    rng = np.random.default_rng(2)
    kernel = _gaussian((17, 17), 8.0, 8.0, 2.4, 2.0, 0.0)  # noise through it: its autocorrelation is the beam
    beam = fftconvolve(kernel, kernel[::-1, ::-1], mode="full")  # 33 x 33, the whole autocorrelation
    beam /= beam.max()
    nz, z_line = 24, 12
    sky = _gaussian((96, 96), 45.3, 50.6, 4.0, 2.5, 35.0)
    line = np.exp(-0.5 * ((np.arange(nz) - z_line) / 1.5) ** 2)
    neighbour = _gaussian((96, 96), 58.0, 50.0, 3.0, 3.0, 0.0)  # continuum only: subtracted away
    dirty_sky = fftconvolve(sky, beam, mode="same")
    dirty_neighbour = fftconvolve(neighbour, beam, mode="same")
    noise = np.stack([fftconvolve(rng.normal(size=(96, 96)), kernel, mode="same") for _ in range(nz)])
    cube = (line[:, None, None] * dirty_sky + 0.5 * dirty_neighbour + 0.02 * noise).astype(np.float32)
    image = cube[z_line - 3 : z_line + 4, 18:82, 14:78].sum(0)
    d = Detection(box=(40, 46, 52, 56), z0=z_line - 3, z1=z_line + 3, z=z_line, fwhm_z=3.5, image=image,
                  offset=np.array([14, 18]), snr=20.0)  # fmt: skip
    config = PipelineConfig().replace(**{"characterise.method": "fit", "focus.size": 64})
    (m,) = estimate_morphology(_constant(8.0), _constant(2.0), _constant(30.0), [d], config, cube=cube)
    assert (m.x, m.y) == pytest.approx((45.3, 50.6), abs=0.2)
    assert (m.fwhm_x, m.fwhm_y) == pytest.approx((4.0 * FWHM_PER_SIGMA, 2.5 * FWHM_PER_SIGMA), rel=0.1)
    assert m.pa == pytest.approx(35.0, abs=10.0)
    with pytest.raises(ValueError, match="needs the cube"):
        estimate_morphology(_constant(8.0), _constant(2.0), _constant(30.0), [d], config)
    # a noiseless, empty cube: no beam to measure, nothing to fit — the ResNets' values stay
    (kept,) = estimate_morphology(_constant(8.0), _constant(2.0), _constant(30.0), [d], config,
                                  cube=np.zeros_like(cube))  # fmt: skip
    assert (kept.fwhm_x, kept.fwhm_y, kept.pa) == (8.0, 2.0, 30.0)


def _constant(value):
    return lambda x: jnp.full((x.shape[0],), value, jnp.float32)

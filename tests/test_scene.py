"""The scene model (dfjax.pipeline.scene and .forward) and the beam and noise it is fitted with (.psf).

Cubes are built in numpy from the model itself (a Gaussian ⊛ a PSF with a strong far sidelobe,
times a Gaussian line), so that every expected value is known exactly.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from scipy import signal

from dfjax.maths import gaussian_1d, gaussian_2d
from dfjax.pipeline.forward import (amplitude_system, far_levels, far_power, far_sidelobes, fft_grid, field_images, kernel_hat,
                                    local_image, local_size, solve_amplitudes)
from dfjax.pipeline.psf import noise_model
from dfjax.pipeline.scene import Guess, Scene, _parameters, fit_scene, scene_model

N, NZ = 64, 24
SIDELOBE = (22, -17, 0.3)  # offset (dx, dy) in pixels and level of the PSF's far sidelobe


def psf(n: int = N) -> np.ndarray:
    """A (2n − 1)² beam: a 6 × 5 px main lobe and a sidelobe of 0.3 at SIDELOBE's offset."""
    size = 2 * n - 1
    c = n - 1
    dx, dy, level = SIDELOBE
    return gaussian_2d((size, size), c, c, 6.0, 5.0, 20.0) + level * gaussian_2d((size, size), c + dx, c + dy, 4, 4, 0)


def cube_of(sources, beam: np.ndarray) -> np.ndarray:
    """Σ A · L(z) ⊗ (G ⊛ beam) on an N² × NZ grid; sources (x, y, fwhm_x, fwhm_y, pa, z, fwhm_z, A)."""
    out = np.zeros((NZ, N, N))
    for x, y, fx, fy, pa, z, fz, a in sources:
        image = signal.fftconvolve(gaussian_2d((N, N), x, y, fx, fy, pa), beam, mode="same")
        out += a * gaussian_1d(NZ, z, fz)[:, None, None] * image[None]
    return out


def white(sigma: float) -> np.ndarray:
    """The noise correlation of white noise (``sigma`` sets nothing: the correlation has unit zero lag)."""
    del sigma
    correlation = np.zeros((5, 5))
    correlation[2, 2] = 1.0
    return correlation


BRIGHT = (24.0, 40.0, 6.0, 3.5, 30.0, 10.0, 4.0, 1.0)
FAINT = (45.0, 15.0, 4.0, 4.0, 0.0, 16.0, 3.0, 0.15)


def test_the_window_model_is_the_gaussian_seen_through_the_beam():
    """The model's band-limited Gaussian ⊛ the beam's core equals numpy's sampled one on the window."""
    beam = psf()[N - 1 - 24 : N + 24, N - 1 - 24 : N + 24]
    half, core = 12, 24
    p = _parameters([Guess(x=12.3, y=11.6, fwhm_x=7.0, fwhm_y=4.0, pa=25.0, z=0, fwhm_z=3)], 1)[0]
    got = np.asarray(local_image(p[:5], kernel_hat(beam.astype(np.float32), (local_size(half, core),) * 2),
                                 half=half, core=core))  # fmt: skip
    n = 2 * half + 1
    big = gaussian_2d((n + 2 * core, n + 2 * core), 12.3 + core, 11.6 + core, 7.0, 4.0, 25.0)
    expected = signal.fftconvolve(big, beam, mode="same")[core : core + n, core : core + n]
    np.testing.assert_allclose(got, expected, atol=2e-3 * expected.max())


def test_a_noiseless_scene_is_recovered_exactly():
    beam = psf()
    scene = Scene(line=cube_of([BRIGHT, FAINT], beam).astype(np.float32), noise=np.full(NZ, 0.01), psf=beam,
                  correlation=white(0.01))  # fmt: skip
    guesses = [Guess(25, 39, 8, 8, 0, 11, 5), Guess(44, 16, 6, 6, 0, 15, 4)]
    fitted = fit_scene(scene, guesses, min_snr=5.0, window_half_px=12, core_half_px=24)
    assert [f.index for f in fitted] == [0, 1]
    for f, truth in zip(fitted, (BRIGHT, FAINT)):
        x, y, fx, fy, pa, z, fz, a = truth
        assert (f.x, f.y, f.z) == pytest.approx((x, y, z), abs=0.02)
        assert f.fwhm_z == pytest.approx(fz, rel=0.01) and f.amplitude == pytest.approx(a, rel=0.02)
        assert sorted((f.fwhm_x, f.fwhm_y)) == pytest.approx(sorted((fx, fy)), rel=0.02)
    assert fitted[0].pa == pytest.approx(BRIGHT[4], abs=1.0)
    model = scene_model(scene, fitted)
    assert np.abs(model - scene.line).max() < 0.01 * scene.line.max()


def test_a_candidate_on_a_sidelobe_is_explained_away_and_a_duplicate_merged():
    """The bright source's far sidelobe is a line-like blob at its channel: a candidate there has an
    amplitude consistent with 0 once the bright source's full-beam model is in; a second guess on
    the bright source is the same source. A real faint source stays."""
    beam = psf()
    rng = np.random.default_rng(0)
    sigma = 0.01
    line = cube_of([BRIGHT, FAINT], beam) + rng.normal(0, sigma, (NZ, N, N))
    scene = Scene(line=line.astype(np.float32), noise=np.full(NZ, sigma), psf=beam, correlation=white(sigma))
    sidelobe = Guess(BRIGHT[0] + SIDELOBE[0], BRIGHT[1] + SIDELOBE[1], 6, 6, 0, 10, 4)
    guesses = [Guess(25, 39, 8, 8, 0, 11, 5), sidelobe, Guess(24.5, 41, 5, 5, 0, 10, 4), Guess(44, 16, 6, 6, 0, 15, 4)]
    fitted = fit_scene(scene, guesses, min_snr=5.0, window_half_px=12, core_half_px=24)
    assert sorted(f.index for f in fitted) in ([0, 3], [2, 3])
    # each kept source's parameters travel with its guess when the dropped ones' rows go
    faint = next(f for f in fitted if f.index == 3)
    assert np.hypot(faint.x - FAINT[0], faint.y - FAINT[1]) < 1.0 and abs(faint.z - FAINT[5]) < 1.0
    bright = next(f for f in fitted if f.index != 3)
    assert np.hypot(bright.x - BRIGHT[0], bright.y - BRIGHT[1]) < 0.5
    # the same cube fitted with the beam's core only: the sidelobe is a source of its own
    core = np.zeros_like(beam)
    c = N - 1
    core[c - 12 : c + 13, c - 12 : c + 13] = beam[c - 12 : c + 13, c - 12 : c + 13]
    naive = fit_scene(Scene(line=scene.line, noise=scene.noise, psf=core, correlation=scene.correlation), guesses,
                      min_snr=5.0, window_half_px=12, core_half_px=12)  # fmt: skip
    assert 1 in [f.index for f in naive]


def test_reported_errors_match_the_scatter_over_noise_realisations():
    beam = psf()
    sigma = 0.05
    clean = cube_of([BRIGHT], beam)
    rows = []
    for seed in range(10):
        line = clean + np.random.default_rng(seed).normal(0, sigma, clean.shape)
        scene = Scene(line=line.astype(np.float32), noise=np.full(NZ, sigma), psf=beam, correlation=white(sigma))
        (f,) = fit_scene(scene, [Guess(25, 39, 8, 8, 0, 11, 5)], min_snr=3.0, window_half_px=12, core_half_px=24)
        rows.append((f.x, f.y, f.z, f.amplitude, f.line_flux,
                     f.errors["x"], f.errors["y"], f.errors["z"], f.errors["amplitude"], f.errors["line_flux"]))
    rows = np.array(rows)
    scatter, reported = rows[:, :5].std(axis=0, ddof=1), rows[:, 5:].mean(axis=0)
    assert np.all(scatter / reported > 0.5) and np.all(scatter / reported < 1.8), (scatter, reported)


def test_the_noise_model_separates_a_white_spike_from_the_beam():
    """Noise = beam-correlated (thermal) + white: the beam comes back with unit peak and the right
    shape, and the white share of the variance is what was put in."""
    rng = np.random.default_rng(1)
    n, nz = 96, 48
    kernel = gaussian_2d((25, 25), 12, 12, 5.0, 4.0, 0.0)
    kernel /= np.sqrt((kernel**2).sum())
    thermal = np.stack([signal.fftconvolve(rng.normal(0, 1, (n, n)), kernel, mode="same") for _ in range(nz)])
    cube = thermal + rng.normal(0, 1.0, thermal.shape)  # white variance 1, thermal variance ~1: half and half
    model = noise_model(cube, half=16)
    assert model.white_fraction == pytest.approx(0.5, abs=0.08)
    beam_truth = signal.fftconvolve(kernel, kernel[::-1, ::-1], mode="full")[24 - 16 : 24 + 17, 24 - 16 : 24 + 17]
    beam_truth /= beam_truth.max()
    np.testing.assert_allclose(model.beam, beam_truth, atol=0.08)
    assert model.correlation[16, 16] == pytest.approx(1.0)
    assert model.correlation[16, 17] == pytest.approx((1 - model.white_fraction) * model.beam[16, 17], abs=0.02)


def test_the_line_free_pairs_beam_leaves_out_the_lines_power_between_channels():
    """Extended lines in a third of the channel pairs widen the all-pairs beam's wings (their images'
    power between channels reads as beam); the beam of the pairs without a line keeps the noise's.
    scene.shape_beam "line_free" (the default) hands it to the window fits (Scene.shape_psf), "all"
    does not, and an unknown kind is refused."""
    from dfjax.pipeline.config import ConfigError, PipelineConfig
    from dfjax.pipeline.joint import noise_scene

    rng = np.random.default_rng(4)
    n, nz, half = 96, 48, 16
    kernel = gaussian_2d((25, 25), 12, 12, 5.0, 4.0, 0.0)
    kernel /= np.sqrt((kernel**2).sum())
    cube = np.stack([signal.fftconvolve(rng.normal(0, 1, (n, n)), kernel, mode="same") for _ in range(nz)])
    cube += rng.normal(0, 1.0, cube.shape)
    for z in range(2, nz - 2, 6):  # an extended line in every sixth channel: 16 of 47 pairs differ by it
        x, y = rng.uniform(25, 70, 2)
        cube[z] += 30.0 * gaussian_2d((n, n), x, y, 12.0, 9.0, rng.uniform(0, 180))
    cube = cube.astype(np.float32)
    lags = slice(24 - half, 24 + half + 1)
    truth = signal.fftconvolve(kernel, kernel[::-1, ::-1], mode="full")[lags, lags]
    truth /= truth.max()
    model = noise_model(cube, half=half, line_free=True)
    assert noise_model(cube, half=half).line_free_beam is None  # made only when asked for
    np.testing.assert_array_equal(noise_model(cube, half=half).beam, model.beam)
    r = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1])
    wings = (r >= 3) & (r <= 12)

    def wrong(beam: np.ndarray) -> float:
        return float(np.sqrt(np.mean((beam - truth)[wings] ** 2)))

    assert model.line_free_beam.shape == model.beam.shape and model.line_free_beam[half, half] == pytest.approx(1.0)
    assert wrong(model.line_free_beam) < 0.02 < 3.0 * wrong(model.line_free_beam) < wrong(model.beam)  # 0.012, 0.075
    assert model.beam[wings].sum() > model.line_free_beam[wings].sum()  # the lines widen, not narrow, it
    config = PipelineConfig()
    assert noise_scene(cube, config.replace(**{"scene.shape_beam": "all"})).shape_psf is None
    shapes = noise_scene(cube, config).shape_psf  # the default
    np.testing.assert_array_equal(shapes, noise_model(cube, half=n - 1, line_free=True).line_free_beam)
    with pytest.raises(ConfigError, match="scene.shape_beam: 'clean' is not one of all, line_free"):
        config.replace(**{"scene.shape_beam": "clean"})


def test_the_window_fits_measure_shapes_through_the_scenes_shape_psf():
    """Scene.shape_psf, where given, is the beam the shapes are fitted through: the same beam gives the
    same fit as none, a wider one (the 6 × 5 px lobe seen as 7 × 6) reads the source smaller by about
    what the beams differ."""
    beam = psf()
    sigma = 0.02
    line = (cube_of([BRIGHT], beam) + np.random.default_rng(5).normal(0, sigma, (NZ, N, N))).astype(np.float32)
    scene = Scene(line=line, noise=np.full(NZ, sigma), psf=beam, correlation=white(sigma))
    guess = [Guess(25, 39, 6, 4, 20, 10, 4)]
    fit = functools.partial(fit_scene, guesses=guess, min_snr=3.0, window_half_px=12, core_half_px=24)
    (f,) = fit(scene)
    (same,) = fit(dataclasses.replace(scene, shape_psf=beam.copy()))
    c = N - 1
    wider = beam.copy()
    wider += gaussian_2d(beam.shape, c, c, 7.0, 6.0, 20.0) - gaussian_2d(beam.shape, c, c, 6.0, 5.0, 20.0)
    (g,) = fit(dataclasses.replace(scene, shape_psf=wider))
    assert (same.fwhm_x, same.fwhm_y) == pytest.approx((f.fwhm_x, f.fwhm_y), abs=1e-4)
    assert f.fwhm_x == pytest.approx(6.0, abs=0.3) and f.fwhm_y == pytest.approx(3.5, abs=0.3)
    assert g.fwhm_x < f.fwhm_x - 0.5 and g.fwhm_y < f.fwhm_y - 0.5


def test_the_noise_model_names_too_few_channels():
    """One channel pair cannot tell the beam's error (two disjoint halves are needed), none the noise."""
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 3 channels"):
        noise_model(rng.normal(size=(2, 32, 32)).astype(np.float32), half=8)
    with pytest.raises(ValueError, match="at least 2 channels"):
        noise_model(rng.normal(size=(1, 32, 32)).astype(np.float32), half=8)
    assert noise_model(rng.normal(size=(3, 32, 32)).astype(np.float32), half=8).beam.shape == (17, 17)


def sparse_coverage_cube(n: int, nz: int, white_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cube, its dirty beam (n², unit peak at n // 2)): thermal noise seen through a sparse uv coverage
    (15% of the cells within 0.3 of Nyquist: far sidelobes everywhere) plus white noise, unit variance,
    ``white_share`` of it white (the paper's Sec. 3)."""
    rng = np.random.default_rng(seed)
    radius = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :])
    mask = ((radius < 0.3) & (rng.random(radius.shape) < 0.15)).astype(float)
    mask[0, 0] = 1.0
    beam = np.fft.fftshift(np.fft.irfft2(mask, s=(n, n)))

    def thermal() -> np.ndarray:
        field = np.fft.irfft2(np.sqrt(mask) * (rng.normal(size=mask.shape) + 1j * rng.normal(size=mask.shape)), s=(n, n))
        return field / field.std()

    cube = np.sqrt(1 - white_share) * np.stack([thermal() for _ in range(nz)])
    return (cube + np.sqrt(white_share) * rng.normal(size=cube.shape)).astype(np.float32), beam / beam.max()


def test_the_beam_measured_on_mostly_white_noise_keeps_its_far_sidelobes_and_knows_its_error():
    """80% white noise over a sparse coverage's thermal noise: the white floor is found, the far
    sidelobes (past 10 px) come back to within 0.6 of their rms (the noise autocorrelation itself
    would show them at 0.2 of their level), and the beam's error estimate — the noise of the
    estimate, not the weak cells it cannot see — is of the size of the error it makes."""
    half, n = 40, 128
    r = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1])
    for seed in (0, 1):
        cube, beam = sparse_coverage_cube(n, 64, 0.8, seed)
        true = beam[n // 2 - half : n // 2 + half + 1, n // 2 - half : n // 2 + half + 1]
        model = noise_model(cube, half=half, pairs=63)
        assert model.white_fraction == pytest.approx(0.8, abs=0.05)
        far = r > 10
        wrong = np.sqrt(np.mean((model.beam - true)[far] ** 2))
        assert wrong < 0.6 * np.sqrt(np.mean(true[far] ** 2))
        assert np.abs(model.beam - true)[r < 3].max() < 0.06
        assert 0.3 * wrong < np.sqrt(model.beam_error[half, half]) < 1.5 * wrong


def tapered_coverage_cube(n: int, nz: int, white_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`sparse_coverage_cube`, the uv cells' visibility counts Poisson, dense at short
    baselines and sparse at long ones (a synthesis track's density), so the main lobe is resolved."""
    rng = np.random.default_rng(seed)
    radius = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :])
    weight = rng.poisson(np.where(radius < 0.35, 3.0 * np.exp(-((radius / 0.12) ** 2)), 0.0)).astype(float)
    weight[0, 0] = max(weight[0, 0], 1.0)
    beam = np.fft.fftshift(np.fft.irfft2(weight, s=(n, n)))

    def thermal() -> np.ndarray:
        noise = rng.normal(size=weight.shape) + 1j * rng.normal(size=weight.shape)
        field = np.fft.irfft2(np.sqrt(weight) * noise, s=(n, n))
        return field / field.std()

    cube = np.sqrt(1 - white_share) * np.stack([thermal() for _ in range(nz)])
    return (cube + np.sqrt(white_share) * rng.normal(size=cube.shape)).astype(np.float32), beam / beam.max()


def test_the_beam_measured_on_nearly_white_noise_keeps_its_main_lobe():
    """97% white noise over thermal noise (the paper's noise at a high target SNR): only the densest
    uv cells stand clear of the floor, and a beam of them alone is broader than the truth (its
    volume within 4 px 30–40% more: sizes deconvolved through it read small) and its white share
    too high; every cell near the centre, the zero lag extrapolated, keeps both within a few per cent."""
    half, n = 40, 128
    r = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1])
    for seed in (0, 1):
        cube, beam = tapered_coverage_cube(n, 127, 0.97, seed)
        true = beam[n // 2 - half : n // 2 + half + 1, n // 2 - half : n // 2 + half + 1]
        model = noise_model(cube, half=half)
        assert model.white_fraction == pytest.approx(0.97, abs=0.006)
        assert model.beam[r <= 4].sum() == pytest.approx(true[r <= 4].sum(), rel=0.06)


def test_the_pipeline_with_the_scene_fit_reports_the_sources_not_their_sidelobes():
    """run_pipeline with scene.enabled and the line search: stand-in networks that find every blob,
    a cube with a bright source, its sidelobe and a faint source; the catalogue is the two sources,
    with the fit's line SNR, flux and errors."""
    import jax.numpy as jnp
    from test_pipeline_characterise import _constant, _minmax_gru, _threshold_finder

    from dfjax.pipeline import PipelineConfig
    from dfjax.pipeline.run import Models, run_pipeline

    beam = psf()
    rng = np.random.default_rng(3)
    bright, faint = BRIGHT, (46.0, 14.0, 4.0, 4.0, 0.0, 16.0, 3.0, 0.3)
    cube = (cube_of([bright, faint], beam) + rng.normal(0, 0.01, (NZ, N, N))).astype(np.float32)
    models = Models(blobs_finder=_threshold_finder, deep_gru=_minmax_gru, resnet_fwhm_x=_constant(5.0),
                    resnet_fwhm_y=_constant(5.0), resnet_pa=_constant(0.0), resnet_flux=_constant(1.0))  # fmt: skip
    config = PipelineConfig().replace(**{"detect.threshold": 0.1, "scene.enabled": True,
                                         "search.enabled": True, "scene.window_half_px": 12,
                                         "scene.core_half_px": 24})  # fmt: skip
    sources = run_pipeline(cube, models, config, psf=beam)
    found = sorted((round(s.x), round(s.y), round(s.z)) for s in sources)
    assert found == [(24, 40, 10), (46, 14, 16)], found
    for s in sources:
        assert s.line_snr > 5 and s.snr == s.line_snr and 0 < s.err_x < 0.5 and np.isfinite(s.err_line_flux_fit)
    del jnp


def test_faint_detections_are_left_to_the_line_search_only_when_it_runs(monkeypatch):
    """joint.GUESS_MIN_SNR: with the search on, detections under the cut do not enter the fit and the
    source comes back as the search's candidate; with it off, every detection enters."""
    from test_pipeline_characterise import _constant, _minmax_gru, _threshold_finder

    from dfjax.pipeline import PipelineConfig
    from dfjax.pipeline.run import Models, run_pipeline
    from dfjax.pipeline import joint
    from dfjax.pipeline.search import SEARCHED

    beam = psf()
    rng = np.random.default_rng(3)
    cube = (cube_of([BRIGHT], beam) + rng.normal(0, 0.01, (NZ, N, N))).astype(np.float32)
    models = Models(blobs_finder=_threshold_finder, deep_gru=_minmax_gru, resnet_fwhm_x=_constant(5.0),
                    resnet_fwhm_y=_constant(5.0), resnet_pa=_constant(0.0), resnet_flux=_constant(1.0))  # fmt: skip
    config = PipelineConfig().replace(**{"detect.threshold": 0.1, "scene.enabled": True, "search.enabled": True,
                                         "scene.window_half_px": 12, "scene.core_half_px": 24})  # fmt: skip
    monkeypatch.setattr(joint, "GUESS_MIN_SNR", 0.0)
    every = run_pipeline(cube, models, config, psf=beam)
    monkeypatch.setattr(joint, "GUESS_MIN_SNR", 1e6)
    searched = run_pipeline(cube, models, config, psf=beam)
    alone = run_pipeline(cube, models, config.replace(**{"search.enabled": False}), psf=beam)
    for sources in (every, searched, alone):
        assert [(round(s.x), round(s.y), round(s.z)) for s in sources] == [(24, 40, 10)]
    assert SEARCHED not in every[0].flags and SEARCHED in searched[0].flags and SEARCHED not in alone[0].flags
    assert abs(searched[0].x - every[0].x) < 0.1 and abs(searched[0].fwhm_x - every[0].fwhm_x) < 0.3


def test_a_given_psf_puts_the_scene_fit_in_place_of_refinement():
    """scene.with_psf (the default): a refining configuration (the tuned default's kind) runs the
    scene fit when the cube comes with its PSF — the sidelobe explained, the fit's errors reported —
    and refinement without one, or with with_psf off; without one on a field at least
    scene.noise_beam_px wide, the scene fit through the noise's beam."""
    from test_pipeline_characterise import _constant, _minmax_gru, _threshold_finder

    from dfjax.pipeline import PipelineConfig
    from dfjax.pipeline.run import Models, run_pipeline

    beam = psf()
    rng = np.random.default_rng(3)
    cube = (cube_of([BRIGHT], beam) + rng.normal(0, 0.01, (NZ, N, N))).astype(np.float32)
    models = Models(blobs_finder=_threshold_finder, deep_gru=_minmax_gru, resnet_fwhm_x=_constant(5.0),
                    resnet_fwhm_y=_constant(5.0), resnet_pa=_constant(0.0), resnet_flux=_constant(1.0))  # fmt: skip
    config = PipelineConfig().replace(**{"detect.threshold": 0.1, "search.enabled": True,
                                         "characterise.refine_iterations": 1, "characterise.method": "fit",
                                         "scene.window_half_px": 12,
                                         "scene.core_half_px": 24})  # fmt: skip
    scene = run_pipeline(cube, models, config, psf=beam)
    assert [(round(s.x), round(s.y), round(s.z)) for s in scene] == [(24, 40, 10)]
    assert 0 < scene[0].err_x < 0.5  # only the scene fit has a covariance
    for refined in (run_pipeline(cube, models, config),
                    run_pipeline(cube, models, config.replace(**{"scene.with_psf": False}), psf=beam),
                    run_pipeline(cube, models, config.replace(**{"scene.noise_beam_px": N + 1}))):  # fmt: skip
        assert refined and all(np.isnan(s.err_x) for s in refined)
    # no PSF but a field at least scene.noise_beam_px wide: the scene fit, through the beam of the noise
    noisy = run_pipeline(cube, models, config.replace(**{"scene.noise_beam_px": N}))
    assert [(round(s.x), round(s.y), round(s.z)) for s in noisy] == [(24, 40, 10)] and 0 < noisy[0].err_x < 0.5


def test_sidelobes_past_the_psfs_edge_count_as_noise_for_who_sits_there():
    # a PSF image that reaches 10 px: a source 35 px from a bright one in its channels gets an error
    # for the bright one's unmodelled sidelobes there; one 5 px away (modelled) or in other channels does not
    yy, xx = np.mgrid[-10:11, -10:11]
    psf = np.exp(-0.5 * (xx**2 + yy**2) / 2.0**2) + 0.02 * (np.maximum(abs(xx), abs(yy)) >= 8)
    psf /= psf[10, 10]
    reach, ring = far_sidelobes(psf)
    assert reach == (10, 10) and ring[ring != 0] == pytest.approx(0.02, rel=0.05)
    padded = np.pad(psf, 15)  # zeros where the PSF is not known: the reach is the image's, not the padding's
    assert far_sidelobes(padded)[0] == (10, 10)
    np.testing.assert_array_equal(far_sidelobes(padded)[1], np.pad(ring, 15))
    guesses = [Guess(x=15.0, y=32.0, fwhm_x=4.0, fwhm_y=4.0, pa=0.0, z=10.0, fwhm_z=4.0),  # bright
               Guess(x=50.0, y=32.0, fwhm_x=4.0, fwhm_y=4.0, pa=0.0, z=10.0, fwhm_z=4.0),  # past the reach
               Guess(x=20.0, y=32.0, fwhm_x=4.0, fwhm_y=4.0, pa=0.0, z=10.0, fwhm_z=4.0),  # within it
               Guess(x=50.0, y=40.0, fwhm_x=4.0, fwhm_y=4.0, pa=0.0, z=30.0, fwhm_z=4.0)]  # past it, other channels
    params = np.asarray(_parameters(guesses, 4))
    shape = fft_grid((64, 64), psf)
    images, correlated = field_images(params, kernel_hat(psf.astype(np.float32), shape),
                                      kernel_hat(np.ones((1, 1), np.float32), shape), field=(64, 64), fft_shape=shape)
    line = np.zeros((40, 64, 64), np.float32)
    levels = far_levels(params, far_power(ring, shape), fft_shape=shape)
    system = [np.asarray(v, np.float64) for v in amplitude_system(line, np.ones(40, np.float32), params, images,
                                                                   correlated, np.asarray([10.0, 10.0]), levels,
                                                                   np.zeros_like(levels))]
    far = system[4]
    assert far[1, 0] > 0 and far[0, 1] > 0
    assert far[2, 0] == 0 and np.all(np.diag(far) == 0) and far[3, 0] < 1e-6 * far[1, 0]
    system[0] = np.asarray([100.0, 1e-4, 1.0, 1e-4]) * np.diag(system[1])  # amplitudes; only the first is bright
    alive = np.ones(4, bool)
    _, with_far = solve_amplitudes(*system, alive, 0.0)
    _, without = solve_amplitudes(*system[:4], np.zeros_like(far), alive, 0.0)
    assert with_far[1] > 100 * without[1] and with_far[2] == pytest.approx(without[2], rel=1e-3)


def test_an_extended_source_adds_up_the_smooth_part_of_its_far_sidelobes():
    """The level of a source's unmodelled sidelobes: for a point source its peak times the ring's rms;
    for an extended one over a smooth far plateau, its area over the beam's times more than that."""
    yy, xx = np.mgrid[-20:21, -20:21]
    core = np.exp(-0.5 * (xx**2 + yy**2) / 1.2**2)  # a small beam (cycle 9.5-like)
    rng = np.random.default_rng(0)
    speckle = 0.02 * rng.standard_normal(core.shape)
    for far, coherent in ((speckle, False), (np.full(core.shape, 0.02), True)):
        psf = np.where(np.maximum(abs(xx), abs(yy)) >= 10, far, core).astype(np.float32)
        psf[20, 20] = 1.0
        _, ring = far_sidelobes(psf)
        rms = float(np.sqrt(np.mean(ring[ring != 0] ** 2)))
        shape = fft_grid((64, 64), psf)
        params = np.asarray(_parameters([Guess(x=32.0, y=32.0, fwhm_x=0.6, fwhm_y=0.6, pa=0.0, z=5.0, fwhm_z=3.0),
                                         Guess(x=32.0, y=32.0, fwhm_x=12.0, fwhm_y=12.0, pa=0.0, z=5.0, fwhm_z=3.0)],
                                        2))  # fmt: skip
        images, _ = field_images(params, kernel_hat(psf, shape), kernel_hat(np.ones((1, 1), np.float32), shape),
                                 field=(64, 64), fft_shape=shape)  # fmt: skip
        peak = np.asarray(images).max(axis=(1, 2))
        level = np.asarray(far_levels(params, far_power(ring, shape), fft_shape=shape))
        ratio = level / (peak * rms)
        assert ratio[0] == pytest.approx(1.0, rel=0.15)  # a point source: its peak times the ring's rms
        # extended (12 px through a 2.8 px beam): the plateau adds up, the speckle averages away
        assert ratio[1] > 5.0 if coherent else ratio[1] < 1.0


def test_a_point_source_is_flagged_unresolved_and_an_extended_one_is_not():
    """The scene's sizes are intrinsic: a point source seen through the 6 × 5 px beam comes out with a
    major FWHM consistent with zero (flagged, its size an upper limit), a 6 × 3.5 px source measured."""
    from dfjax.pipeline.joint import beam_fwhm, unresolved

    beam = psf()
    sigma = 0.01
    point = (45.0, 15.0, 0.3, 0.3, 0.0, 16.0, 3.0, 0.5)
    line = cube_of([BRIGHT, point], beam) + np.random.default_rng(4).normal(0, sigma, (NZ, N, N))
    scene = Scene(line=line.astype(np.float32), noise=np.full(NZ, sigma), psf=beam, correlation=white(sigma))
    guesses = [Guess(25, 39, 8, 8, 0, 11, 5), Guess(44, 16, 6, 6, 0, 15, 4)]
    extended, compact = fit_scene(scene, guesses, min_snr=5.0, window_half_px=12, core_half_px=24)
    assert beam_fwhm(beam) == pytest.approx(np.sqrt(6.0 * 5.0), rel=0.1)
    assert not unresolved(extended, beam_fwhm(beam)) and unresolved(compact, beam_fwhm(beam))
    assert max(compact.fwhm_x, compact.fwhm_y) < 2.5  # its upper limit stays well under the beam


def test_the_amplitudes_of_a_singular_gram_fall_back_to_the_pseudo_inverse():
    """Two candidates with one image (a singular Gram): Cholesky fails, the pseudo-inverse splits the
    amplitude between them; a regular Gram gives the exact solve either way."""
    from dfjax.pipeline.forward import solve_amplitudes

    gram = np.array([[2.0, 0.5], [0.5, 1.0]])
    b = gram @ np.array([3.0, -1.0])
    zero = np.zeros((2, 2))
    amplitude, error = solve_amplitudes(b, gram, gram, zero, zero, np.ones(2, bool), 0.0)
    np.testing.assert_allclose(amplitude, [3.0, -1.0], rtol=1e-12)
    np.testing.assert_allclose(error, np.sqrt(np.diag(np.linalg.inv(gram))), rtol=1e-12)
    twins = np.ones((2, 2))
    amplitude, error = solve_amplitudes(np.array([4.0, 4.0]), twins, twins, zero, zero, np.ones(2, bool), 0.0)
    np.testing.assert_allclose(amplitude, [2.0, 2.0], rtol=1e-9)
    assert np.isfinite(error).all()


def test_explaining_away_by_rank_one_updates_drops_what_solving_afresh_drops():
    """explain_away updates Γ⁻¹ and S Γ⁻¹ as each source leaves; solving the whole system again after
    every drop (the definition) keeps the same sources and returns the same
    amplitudes — on 120 candidates, most of them weak, several pairs nearly one image."""
    from dfjax.pipeline.forward import explain_away, solve_amplitudes

    rng = np.random.default_rng(7)
    k, n = 120, 400
    images = rng.normal(size=(k, n))
    images[1::10] = images[0::10] + 0.05 * rng.normal(size=(12, n))  # near-twins
    gram = images @ images.T
    noise = 1.5 * gram + 0.1 * np.diag(np.diag(gram))
    shadow, far = 0.01 * np.abs(gram), np.zeros((k, k))
    truth = np.where(rng.random(k) < 0.15, rng.uniform(5, 50, k), 0.0)
    b = gram @ truth + rng.multivariate_normal(np.zeros(k), noise)
    system = (b, gram, noise, shadow, far)

    alive, dropped = np.ones(k, bool), 0
    while True:  # the definition: solve, drop the worst under the cut, solve again
        amplitude, error = solve_amplitudes(*system, alive, 0.03)
        snr = np.where(alive, amplitude / error, np.inf)
        if snr.min() >= 8.0:
            break
        alive[int(np.argmin(snr))] = False
        dropped += 1
    kept, fast_amplitude, fast_snr = explain_away(system, np.ones(k, bool), 8.0, 0.03)
    np.testing.assert_array_equal(kept, alive)
    assert 10 < kept.sum() < 40 and dropped > 80
    np.testing.assert_allclose(fast_amplitude[kept], amplitude[kept], rtol=1e-9)
    np.testing.assert_allclose(fast_snr[kept], (amplitude / error)[kept], rtol=1e-9)

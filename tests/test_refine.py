"""Refinement (characterise.refine_iterations): the line on the matched spectrum, the shape on the new
line image, the line-SNR cut and the merging of one source's pieces; the matched-filter line search
(pipeline/search.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from dfjax.pipeline import PipelineConfig
from dfjax.pipeline.characterise import Morphology, beam_psf
from dfjax.pipeline.config import ConfigError
from dfjax.pipeline.focus import Detection
from dfjax.pipeline.gaussfit import Neighbour
from dfjax.pipeline.model3d import gaussian_2d
from dfjax.pipeline.refine import (
    fit_line,
    line_snr,
    matched_noise_gain,
    matched_spectrum,
    refine,
)
from dfjax.pipeline.deblend import _merged, _refined, refine_detections
from dfjax.pipeline.search import (
    RESIDUAL,
    SEARCHED,
    channel_noise,
    continuum_clip,
    line_search,
    remove_continuum,
    residual_search,
    searched_detections,
    source_line_model,
)

FWHM_PER_SIGMA = 2.3548200450309493
NZ, SIDE = 64, 72
CONFIG = PipelineConfig().replace(**{"characterise.method": "fit", "characterise.refine_iterations": 2})


def _beam(half=16):
    g = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    return np.exp(-0.5 * ((xx / 3.6) ** 2 + (yy / 3.0) ** 2)) - 0.1 * np.exp(-0.5 * ((xx / 9.0) ** 2 + (yy / 9.0) ** 2))


def _cube(sources, *, noise=0.03, seed=0):
    """Dirty cube: each (x, y, sx, sy, pa, continuum, line_peak, z, fwhm_z) seen through _beam, plus
    noise whose autocorrelation is the beam, as in a natural-weighted image (white noise filtered by
    the square root of the beam's transform, which is what the uv sampling does)."""
    beam = _beam()
    beam /= beam.max()  # unit peak: a point source of 1 is 1 on the dirty image
    rng = np.random.default_rng(seed)
    zz = np.arange(NZ, dtype=np.float64)
    sky = np.zeros((NZ, SIDE, SIDE))
    for x, y, sx, sy, pa, cont, peak, z, fwhm_z in sources:
        spectrum = cont * (1 + 0.004 * (zz - NZ / 2)) + peak * np.exp(-0.5 * ((zz - z) * FWHM_PER_SIGMA / fwhm_z) ** 2)
        sky += spectrum[:, None, None] * gaussian_2d((SIDE, SIDE), x, y, sx * FWHM_PER_SIGMA, sy * FWHM_PER_SIGMA, pa)
    h = beam.shape[0] // 2
    centred = np.zeros((SIDE, SIDE))
    centred[:2 * h + 1, :2 * h + 1] = beam
    gain = np.sqrt(np.clip(np.fft.rfft2(np.roll(centred, (-h, -h), axis=(0, 1))).real, 0.0, None))
    coloured = np.fft.irfft2(np.fft.rfft2(rng.normal(size=sky.shape)) * gain, s=(SIDE, SIDE))
    coloured *= noise * 3.0 * np.sqrt((beam**2).sum()) / coloured.std()  # the level white noise ⊛ beam had
    dirty = np.stack([fftconvolve(sky[k], beam, mode="same") for k in range(NZ)]) + coloured
    return dirty.astype(np.float32), beam


SOURCE = (35.3, 34.6, 3.0, 4.5, 30.0, 0.5, 1.0, 30.0, 6.0)


def test_matched_spectrum_is_the_profiles_amplitude_per_channel():
    cube, beam = _cube([SOURCE], noise=0.0)
    spectrum = matched_spectrum(cube, beam, x=35.3, y=34.6, fwhm_x=3.0 * FWHM_PER_SIGMA, fwhm_y=4.5 * FWHM_PER_SIGMA,
                                pa=30.0, half=16)
    # the sky's spectrum at the centre: continuum (with its slope) plus the line
    assert spectrum[30] == pytest.approx(0.5 * (1 - 0.008) + 1.0, rel=0.02)
    assert spectrum[5] == pytest.approx(0.5 * (1 - 0.108), rel=0.02)


def test_a_neighbour_in_the_matched_spectrum_keeps_its_line_out():
    bright = (45.0, 37.0, 4.0, 4.0, 0.0, 0.0, 4.0, 40.0, 6.0)  # 10 px away, its line at channel 40
    cube, beam = _cube([SOURCE, bright], noise=0.0)
    shape = {"x": 35.3, "y": 34.6, "fwhm_x": 3.0 * FWHM_PER_SIGMA, "fwhm_y": 4.5 * FWHM_PER_SIGMA, "pa": 30.0}
    alone = matched_spectrum(cube, beam, **shape, half=16)
    assert alone[40] > 0.3  # the neighbour's line leaks in
    other = Neighbour(x=45.0, y=37.0, fwhm_x=4.0 * FWHM_PER_SIGMA, fwhm_y=4.0 * FWHM_PER_SIGMA, pa=0.0)
    joint = matched_spectrum(cube, beam, **shape, half=16, neighbours=[other])
    assert joint[40] == pytest.approx(0.5 * (1 + 0.032), abs=0.04)  # about only the source's own continuum
    assert joint[30] == pytest.approx(0.5 * (1 - 0.008) + 1.0, rel=0.02)
    far = Neighbour(x=300.0, y=300.0, fwhm_x=4.0, fwhm_y=4.0, pa=0.0)  # no light in the window
    assert np.array_equal(matched_spectrum(cube, beam, **shape, half=16, neighbours=[far]), alone)


def test_fit_line_recovers_a_line_outside_the_old_refit_limits_and_measures_its_snr():
    rng = np.random.default_rng(3)
    z = np.arange(128.0)
    spectrum = 2.0 + 0.01 * z + 1.0 * np.exp(-0.5 * ((z - 60.3) * FWHM_PER_SIGMA / 8.0) ** 2)
    spectrum += rng.normal(scale=0.1, size=z.size)
    line = fit_line(spectrum, 58.5, 2.5, max_fwhm_chan=30.0)  # the width started 3.2x too narrow
    assert line is not None
    assert line.z == pytest.approx(60.3, abs=0.5) and line.fwhm_z == pytest.approx(8.0, rel=0.15)
    # Σ of the line over z ∓ FWHM (17 channels, ~0.77 mean) over 0.1·√17: about 32
    assert 20 < line.snr < 45
    noise_only = rng.normal(scale=0.1, size=z.size)
    assert abs(line_snr(noise_only, 60.0, 8.0)) < 4.0


def test_the_matched_line_snr_is_higher_on_a_line_and_unit_on_noise():
    """The profile-weighted SNR of a Gaussian line: ~20% above the plain sum's, while on pure noise
    both have unit spread (the same false-alarm rate at the same cut)."""
    rng = np.random.default_rng(5)
    z = np.arange(128.0)
    line = 0.1 * np.exp(-0.5 * ((z - 60.0) * FWHM_PER_SIGMA / 8.0) ** 2)
    noisy = [line + rng.normal(scale=0.1, size=z.size) for _ in range(400)]
    plain = np.array([line_snr(s, 60.0, 8.0) for s in noisy])
    matched = np.array([line_snr(s, 60.0, 8.0, matched=True) for s in noisy])
    assert np.mean(matched) / np.mean(plain) == pytest.approx(1.2, abs=0.06)
    noise = [rng.normal(scale=0.1, size=z.size) for _ in range(400)]
    for matched_snr in (False, True):
        snrs = np.array([line_snr(s, 60.0, 8.0, matched=matched_snr) for s in noise])
        assert abs(snrs.mean()) < 0.2 and snrs.std() == pytest.approx(1.0, abs=0.15)


def test_the_beam_line_noise_is_unit_on_noise_and_blind_to_another_sources_line():
    """line_noise 'beam': the pixel noise through the matched filter, with the beam as the noise's
    correlation, is the matched spectrum's noise; unlike the spread of the spectrum's own off-line
    channels, it does not grow when another source at the same place shines in other channels."""
    cube, beam = _cube([], seed=3)
    noise = channel_noise(cube)
    assert noise.shape == (NZ,) and np.all(noise > 0)
    rng = np.random.default_rng(0)
    snrs = []
    for _ in range(300):
        x, y, fwhm_x, fwhm_y, z = *rng.uniform(12, 60, 2), *rng.uniform(4, 12, 2), rng.uniform(28, 36)
        spectrum = matched_spectrum(cube, beam, x=x, y=y, fwhm_x=fwhm_x, fwhm_y=fwhm_y, pa=0.0, half=8)
        gain = matched_noise_gain(cube.shape[1:], beam, x=x, y=y, fwhm_x=fwhm_x, fwhm_y=fwhm_y, pa=0.0, half=8)
        line = spectrum - np.polyval(np.polyfit(np.arange(NZ)[np.abs(np.arange(NZ) - z) > 12],
                                                spectrum[np.abs(np.arange(NZ) - z) > 12], 1), np.arange(NZ))  # fmt: skip
        snrs.append(line_snr(line, z, 4.0, matched=True, noise=noise * gain))
    assert abs(np.mean(snrs)) < 0.3 and np.std(snrs) == pytest.approx(1.0, abs=0.12)

    faint = (30.0, 36.0, 3.0, 2.5, 20.0, 0.0, 0.25, 20.0, 5.0)
    bright = (32.0, 37.0, 4.0, 3.0, 60.0, 0.0, 1.0, 55.0, 4.0)  # 2 px away, its line 35 channels off
    config = CONFIG.replace(**{"characterise.fit_background": False, "characterise.fit_half_px": 8,
                               "characterise.matched_line": True})  # fmt: skip
    start = {"x": 30.0, "y": 36.0, "fwhm_x": 7.0, "fwhm_y": 6.0, "pa": 20.0, "z": 20.0, "fwhm_z": 5.0}
    snr = {}
    for sources in ((faint,), (faint, bright)):
        cube, beam = _cube(list(sources), seed=1)
        snr["channels", len(sources)] = refine(cube, beam, **start, config=config).line_snr
        snr["beam", len(sources)] = refine(cube, beam, **start, config=config.replace(**{"characterise.line_noise": "beam"}),
                                           channel_noise=channel_noise(cube)).line_snr  # fmt: skip
    assert snr["channels", 2] < 0.3 * snr["channels", 1]  # the bright line counted as noise
    assert snr["beam", 2] > 0.75 * snr["beam", 1] and snr["beam", 2] > 15
    with pytest.raises(ValueError, match="needs the cube's channel_noise"):
        refine(cube, beam, **start, config=config.replace(**{"characterise.line_noise": "beam"}))


def test_refine_finds_the_line_and_the_shape_from_poor_starts():
    cube, beam = _cube([SOURCE])
    r = refine(cube, beam, x=34.0, y=36.0, fwhm_x=15.0, fwhm_y=15.0, pa=0.0, z=28.5, fwhm_z=2.0, config=CONFIG)
    assert (r.x, r.y) == pytest.approx((35.3, 34.6), abs=0.3)
    assert r.z == pytest.approx(30.0, abs=0.3) and r.fwhm_z == pytest.approx(6.0, rel=0.15)
    assert sorted((r.fwhm_x, r.fwhm_y)) == pytest.approx(sorted((3.0 * FWHM_PER_SIGMA, 4.5 * FWHM_PER_SIGMA)),
                                                         rel=0.1)
    assert r.line_snr > 20


def test_a_line_image_weighted_by_the_line_profile_measures_sizes_better():
    """Over 20 seeds of a faint source: its matched (profile-weighted) line image has the higher
    SNR, so the shape fitted on it is closer to the truth (median size error 0.035 against 0.050)."""
    source = (35.3, 34.6, 3.0, 4.5, 30.0, 0.5, 0.25, 30.0, 8.0)
    true = np.array([3.0, 4.5]) * FWHM_PER_SIGMA
    config = CONFIG.replace(**{"characterise.fit_background": False, "characterise.fit_half_px": 8})
    errors = {False: [], True: []}
    for seed in range(20):
        cube, beam = _cube([source], seed=seed)
        for matched, found in errors.items():
            r = refine(cube, beam, x=35.0, y=35.0, fwhm_x=9.0, fwhm_y=9.0, pa=0.0, z=30.0, fwhm_z=8.0,
                       config=config.replace(**{"characterise.matched_line": matched}))  # fmt: skip
            found.append(np.abs(np.log(np.sort([r.fwhm_x, r.fwhm_y]) / true)).mean())
    assert np.median(errors[True]) < 0.85 * np.median(errors[False])


def _detection(x, y, z, fwhm_z):
    box = (round(x) - 4, round(y) - 4, round(x) + 5, round(y) + 5)
    return Detection(box=box, z0=z - fwhm_z, z1=z + fwhm_z, z=z, fwhm_z=fwhm_z, image=np.zeros((64, 64), np.float32),
                     offset=np.zeros(2, np.int64), snr=5.0)


def test_refine_detections_drops_lines_that_are_continuum_and_merges_one_sources_pieces():
    continuum_only = (20.0, 52.0, 3.0, 3.0, 0.0, 1.5, 0.0, 0.0, 5.0)  # bright, and no line at all
    cube, _ = _cube([SOURCE, continuum_only])
    config = CONFIG.replace(**{"characterise.min_line_snr": 6.0})
    guess = Morphology(x=0.0, y=0.0, fwhm_x=9.0, fwhm_y=9.0, pa=0.0)
    detections = [_detection(35.0, 35.0, 30.0, 5.0), _detection(40.0, 38.0, 31.0, 5.0),  # the source, twice
                  _detection(20.0, 52.0, 45.0, 5.0)]  # its "line": continuum
    shapes = [Morphology(**{**guess.__dict__, "x": d.box[0] + 4.0, "y": d.box[1] + 4.0}) for d in detections]
    kept, morphology = refine_detections(cube, detections, shapes, config)
    assert len(kept) == 1
    assert (morphology[0].x, morphology[0].y) == pytest.approx((35.3, 34.6), abs=0.3)
    assert kept[0].z == pytest.approx(30.0, abs=0.3)
    assert (kept[0].z0, kept[0].z1) == pytest.approx((kept[0].z - kept[0].fwhm_z, kept[0].z + kept[0].fwhm_z))
    # the record carries the SNR the cut decided on, not the focused one it came in with
    assert kept[0].line_snr >= 6.0 and np.isnan(detections[0].line_snr)
    # without the cut the continuum "line" stays (the source is still one)
    kept, _ = refine_detections(cube, detections, shapes, CONFIG)
    assert len(kept) == 2
    # no noise, no beam to measure: nothing is refined or dropped
    flat = np.ones((8, 40, 40), np.float32)
    assert refine_detections(flat, detections, shapes, config) == (detections, shapes)


def test_a_faint_source_that_drifts_onto_a_brighter_one_is_refined_again_beside_it():
    """12 px from a source 3x brighter whose line is 8 channels away, the faint one refined alone takes
    the bright line and flank for its own and is merged into it; refined again with the bright
    one fitted alongside, it stays (characterise.neighbours)."""
    bright = (30.0, 36.0, 4.0, 3.5, 20.0, 0.0, 1.0, 34.0, 9.0)
    faint = (42.0, 36.5, 3.0, 2.5, 60.0, 0.0, 0.3, 26.0, 5.0)
    cube, beam = _cube([bright, faint], seed=1)
    config = CONFIG.replace(**{"characterise.fit_background": False, "characterise.fit_half_px": 8,
                               "characterise.matched_line": True, "characterise.min_line_snr": 8.0})  # fmt: skip
    detections = [_detection(30, 36, 34, 9), _detection(42, 36, 26, 3)]
    shapes = [Morphology(30, 36, 9, 9, 0), Morphology(42, 36, 9, 9, 0)]
    alone = _merged(_refined(cube, beam, detections, shapes, config), config)
    assert [(round(m.x), round(m.y)) for *_, m in alone] == [(30, 36)]
    found, morphology = refine_detections(cube, detections, shapes, config.replace(**{"characterise.neighbours": True}),
                                          psf=beam)  # fmt: skip
    assert len(found) == 2
    assert (morphology[1].x, morphology[1].y) == pytest.approx((42.0, 36.5), abs=0.5)
    assert found[1].z == pytest.approx(26.0, abs=1.0)


def test_remove_continuum_takes_out_a_sloped_continuum_under_a_line():
    z = np.arange(64.0)[:, None, None]
    continuum = (2.0 + 0.01 * z) * np.ones((1, 3, 4))  # +32% across the band
    line = 5.0 * np.exp(-0.5 * ((z - 20.0) / 2.0) ** 2) * np.ones((1, 3, 4))
    out = remove_continuum((continuum + line).astype(np.float32))
    assert out.dtype == np.float32 and out.shape == (64, 3, 4)
    assert np.abs(out[40:]).max() < 0.01  # far from the line: the 2.4-2.6 of continuum gone
    assert out[20].min() == pytest.approx(5.0, abs=0.1)


def test_a_continuum_clip_made_once_gives_the_same_continuum_with_and_without_excluded_emission():
    """The scene fits a cube's continuum twice (before and after its sources are known) from one
    first pass: reusing it changes nothing, and a pixel left with too few channels falls back to the
    first pass's line instead of dividing by zero."""
    rng = np.random.default_rng(3)
    z = np.arange(48.0)[:, None, None]
    cube = (1.0 + 0.02 * z + rng.normal(0, 0.1, (48, 5, 6)) + 4.0 * np.exp(-0.5 * ((z - 30) / 2.0) ** 2)).astype(np.float32)
    clipped = continuum_clip(cube)
    assert clipped.keep.shape == cube.shape and clipped.lo.shape == (5, 6)
    assert not clipped.keep[30].any() and clipped.keep[5:20].mean() > 0.9  # the line's peak is clipped
    exclude = np.zeros(cube.shape, bool)
    exclude[25:36] = True
    exclude[:, 0, 0] = True  # nothing left to fit: the median line of the first pass
    exclude[2:, 1, 1] = True  # one channel left of a line needing two
    for ex in (None, exclude):
        expected = remove_continuum(cube, exclude=ex)
        np.testing.assert_array_equal(remove_continuum(cube, exclude=ex, clipped=clipped), expected)
        assert np.isfinite(expected).all() and expected.dtype == np.float32
    fitted = remove_continuum(cube, exclude=exclude)
    h = 24
    first = cube[:, 0, 0] - (np.median(cube[:h, 0, 0]) + (np.median(cube[h:, 0, 0]) - np.median(cube[:h, 0, 0]))
                             * (np.arange(48) - (h - 1) / 2) / h)  # fmt: skip
    np.testing.assert_allclose(fitted[:, 0, 0], first, atol=1e-5)
    assert np.abs(fitted[5:20, 2:, 2:]).mean() < 0.15  # the rest: the sloped continuum gone


def test_line_search_finds_a_faint_line_beside_a_bright_continuum_source_and_nothing_in_noise():
    faint = (22.0, 50.0, 2.5, 3.5, 20.0, 0.0, 0.35, 40.0, 5.0)
    continuum = (40.0, 30.0, 3.0, 3.0, 0.0, 3.0, 0.0, 0.0, 5.0)  # very bright, no line
    cube, _ = _cube([faint, continuum], seed=4)
    config = PipelineConfig().replace(**{"search.snr": 6.0})
    peaks = line_search(cube, config)
    assert peaks, "the faint line was not found"
    best = peaks[0]
    assert (best.x, best.y) == pytest.approx((22, 50), abs=1.5) and best.z == pytest.approx(40, abs=1.5)
    assert best.snr > 10 and best.fwhm_chan in config.search.fwhm_chan
    assert all(p.snr < best.snr for p in peaks[1:])  # strongest first
    noise, _ = _cube([continuum], seed=5)
    assert line_search(noise, config) == []
    with pytest.raises(ValueError, match="expected a cube"):
        line_search(cube[0], config)
    detections, shapes = searched_detections(cube, config)
    assert len(detections) == len(peaks) and detections[0].flags == frozenset({SEARCHED})
    assert (shapes[0].x, shapes[0].y) == (best.x, best.y) and detections[0].z == best.z
    x0, y0, x1, y1 = detections[0].box
    assert x0 < best.x < x1 and y0 < best.y < y1


def test_line_search_separates_a_faint_source_on_a_bright_ones_flank_in_the_same_channels():
    # a bright source stretched towards a faint compact one, both lines at channel 30: their
    # filtered responses make one ridge at the wide template, two peaks at the narrow one
    bright = (24.0, 36.0, 7.0, 2.5, 0.0, 0.0, 3.0, 30.0, 6.0)
    faint = (46.0, 37.0, 2.0, 2.0, 0.0, 0.0, 0.8, 30.5, 5.0)  # SNR ~55; the old search (template ⊛ beam) lost it
    cube, _ = _cube([bright, faint], seed=6)
    peaks = line_search(cube, PipelineConfig().replace(**{"search.snr": 6.0}))
    near = lambda p, s: np.hypot(p.x - s[0], p.y - s[1]) <= 3 and abs(p.z - s[7]) <= 3
    assert any(near(p, bright) for p in peaks) and any(near(p, faint) for p in peaks)


def test_the_source_line_model_is_the_sources_as_the_beam_shows_them():
    sources = [(24.0, 30.0, 3.0, 4.0, 30.0, 0.0, 0.8, 20.0, 6.0), (46.0, 40.0, 2.0, 2.0, 0.0, 0.0, 0.3, 24.0, 4.0)]
    cube, beam = _cube(sources, noise=0.0)
    fitted = [(_detection(x, y, z, fwhm_z), Morphology(x, y, sx * FWHM_PER_SIGMA, sy * FWHM_PER_SIGMA, pa))
              for x, y, sx, sy, pa, _, _, z, fwhm_z in sources]  # fmt: skip
    model = source_line_model(cube, beam, fitted)
    assert model.shape == cube.shape and model.dtype == np.float32
    assert np.abs(cube - model).max() < 1e-3 * np.abs(cube).max()  # the amplitudes: each line's peak
    assert not source_line_model(cube, beam, []).any()
    # in noise, the search of what is left finds neither source again
    cube, beam = _cube(sources, seed=2)
    near = lambda p, s: np.hypot(p.x - s[0], p.y - s[1]) <= 3 and abs(p.z - s[7]) <= 3
    config = PipelineConfig().replace(**{"search.snr": 6.0})
    assert all(any(near(p, s) for p in line_search(cube, config)) for s in sources)
    assert not any(near(p, s) for p in residual_search(cube, beam, fitted, config) for s in sources)


def test_the_residual_search_finds_a_faint_source_on_a_bright_ones_shoulder():
    """13 px from a source 3x brighter and 4x larger, its line 7 channels away, the faint one is no
    local maximum of the search's filtered cube, only a shoulder of the bright one's peak; with the
    bright one subtracted it is a peak of its own (search.residual)."""
    bright = (30.0, 36.0, 6.0, 5.0, 0.0, 0.0, 1.0, 34.0, 9.0)
    faint = (43.0, 37.0, 3.0, 2.5, 30.0, 0.0, 0.35, 27.0, 6.0)
    cube, beam = _cube([bright, faint], seed=1)
    config = CONFIG.replace(**{"characterise.fit_background": False, "characterise.fit_half_px": 8,
                               "characterise.matched_line": True, "characterise.min_line_snr": 10.0,
                               "characterise.neighbours": True, "search.enabled": True})  # fmt: skip
    near = lambda x, y, z, s: np.hypot(x - s[0], y - s[1]) <= 3 and abs(z - s[7]) <= 3
    peaks = line_search(cube, config)
    assert any(near(p.x, p.y, p.z, bright) for p in peaks) and not any(near(p.x, p.y, p.z, faint) for p in peaks)
    detections, shapes = searched_detections(cube, config)
    found, morphology = refine_detections(cube, detections, shapes, config, psf=beam)
    assert [(round(m.x), round(m.y)) for m in morphology] == [(30, 36)]
    found, morphology = refine_detections(cube, detections, shapes, config.replace(**{"search.residual": True}),
                                          psf=beam)  # fmt: skip
    assert len(found) == 2 and found[1].flags == frozenset({SEARCHED, RESIDUAL})  # new sources come last
    assert (morphology[0].x, morphology[0].y) == pytest.approx((30.0, 36.0), abs=0.5)
    assert (morphology[1].x, morphology[1].y) == pytest.approx((43.0, 37.0), abs=0.7)
    assert found[1].z == pytest.approx(27.0, abs=1.5)


def test_the_beam_is_measured_to_its_own_reach_not_the_fit_window():
    cube, beam = _cube([SOURCE])
    psf = beam_psf(cube, CONFIG.replace(**{"characterise.fit_half_px": 8}))
    assert psf.shape == beam.shape  # ± 16, the beam_half_px default: the wings a ± 8 px fit still sees
    assert np.abs(psf - beam).max() < 0.1
    assert beam_psf(cube, CONFIG.replace(**{"characterise.beam_half_px": 5})).shape == (11, 11)
    with pytest.raises(ConfigError, match="beam_half_px: must be at least 2"):
        CONFIG.replace(**{"characterise.beam_half_px": 1})


def test_refinement_config_is_validated():
    with pytest.raises(ConfigError, match="needs characterise.method 'fit'"):
        PipelineConfig().replace(**{"characterise.refine_iterations": 1})
    with pytest.raises(ConfigError, match="refine_iterations: must be >= 0"):
        PipelineConfig().replace(**{"characterise.refine_iterations": -1})
    with pytest.raises(ConfigError, match="refine_max_fwhm_chan"):
        CONFIG.replace(**{"characterise.refine_max_fwhm_chan": 1.0})
    with pytest.raises(ConfigError, match="min_line_snr"):
        CONFIG.replace(**{"characterise.min_line_snr": -1.0})
    with pytest.raises(ConfigError, match="search.enabled: .* needs characterise.refine_iterations"):
        PipelineConfig().replace(**{"search.enabled": True})
    with pytest.raises(ConfigError, match="characterise.neighbours: .* needs characterise.refine_iterations"):
        PipelineConfig().replace(**{"characterise.neighbours": True})
    with pytest.raises(ConfigError, match="line_noise: 'mad' is not one of channels, beam"):
        CONFIG.replace(**{"characterise.line_noise": "mad"})
    with pytest.raises(ConfigError, match="search.residual: .* needs search.enabled"):
        CONFIG.replace(**{"search.residual": True})
    with pytest.raises(ConfigError, match=r"search.fwhm_px: expected a list of 3 values"):
        PipelineConfig.from_dict({"search": {"fwhm_px": [5.0, 9.0]}})
    with pytest.raises(ConfigError, match="search.fwhm_chan: every template FWHM must be positive"):
        PipelineConfig().replace(**{"search.fwhm_chan": [3.0, 0.0, 12.0]})
    for key, value in (("search.snr", 0.0), ("search.neighbourhood", 0), ("search.max_candidates", 0)):
        with pytest.raises(ConfigError, match=key):
            PipelineConfig().replace(**{key: value})


def test_the_search_filters_agree_with_scipys():
    """The line search's band-matrix line filter is scipy's gaussian_filter1d (constant mode), and its
    local maxima are where the cube equals its maximum_filter (nearest mode), edges and plateaus included."""
    from scipy import ndimage

    from dfjax.pipeline.search import _line_filter, _local_maxima

    rng = np.random.default_rng(5)
    cube = ndimage.gaussian_filter(rng.normal(size=(40, 30, 20)), 1.5).astype(np.float32)
    cube[0, 0, 0] = cube.max() + 1  # a maximum on the corner
    cube[20, 10:12, 5] = cube.max() + 1  # a plateau: both voxels count, as with maximum_filter
    for sigma in (0.8, 2.5, 12.0):  # 12: wider than the cube along z
        np.testing.assert_allclose(_line_filter(cube, sigma),
                                   ndimage.gaussian_filter1d(cube, sigma, axis=0, mode="constant"), atol=1e-6)  # fmt: skip
    threshold = float(np.quantile(cube, 0.9))
    for size in (3, 6, 7):
        expected = np.argwhere((cube >= threshold) & (cube == ndimage.maximum_filter(cube, size=size, mode="nearest")))
        assert _local_maxima(cube, threshold, size) == [tuple(p) for p in expected.tolist()]
    assert _local_maxima(cube, float(cube.max()) + 5, 7) == []

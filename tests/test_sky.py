import numpy as np
import pytest

from sim import sky
from sim.config import SimConfig, SkyConfig

FREQS = sky.channel_frequencies(230e9, 10e6, 32)


def _src(**kw):
    base = dict(x=20.0, y=24.0, z=16.0, fwhm_x=4.0, fwhm_y=4.0, pa=0.0, fwhm_z=5.0,
                amplitude=2.0, line_amplitude=3.0, spectral_index=0.0)  # fmt: skip
    return sky.Source(**{**base, **kw})


def test_channel_frequencies_put_the_centre_channel_at_the_centre_frequency():
    assert FREQS[16] == 230e9 and FREQS[17] - FREQS[16] == 10e6 and FREQS[0] == 230e9 - 16 * 10e6


def test_corrected_rotation_matches_hand_computation():
    src = _src(fwhm_x=6.0, fwhm_y=3.0, pa=30.0)
    g = sky.spatial_profile(src, 48)
    dx, dy = 2.0, 1.0  # pixel (x=22, y=25)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    xr, yr = dx * c - dy * s, dx * s + dy * c
    expected = np.exp(-0.5 * ((xr / (6 / 2.35482)) ** 2 + (yr / (3 / 2.35482)) ** 2))
    assert g[25, 22] == pytest.approx(expected, rel=1e-12)
    assert g[24, 20] == pytest.approx(1.0)


def test_position_angle_turns_the_long_axis_from_x_to_y():
    wide = sky.spatial_profile(_src(fwhm_x=8.0, fwhm_y=2.0, pa=0.0), 48)
    turned = sky.spatial_profile(_src(fwhm_x=8.0, fwhm_y=2.0, pa=90.0), 48)
    x0, y0, x1, y1 = sky.box_2d(wide)
    assert (x1 - x0) > 2 * (y1 - y0)
    x0, y0, x1, y1 = sky.box_2d(turned)
    assert (y1 - y0) > 2 * (x1 - x0)


def test_box_is_half_open_extent_above_15_percent():
    # sigma = 4 / 2.35482; g >= 0.15 for |dx| <= sigma * sqrt(2 ln(1/0.15)) = 3.31 px
    box = sky.box_2d(sky.spatial_profile(_src(), 48))
    assert box == (17, 21, 24, 28)


def test_iou_of_boxes():
    assert sky.iou_2d((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert sky.iou_2d((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert sky.iou_2d((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0


def test_spectrum_is_continuum_times_one_plus_line_eq4():
    src = _src(spectral_index=2.0)
    s = sky.spectrum(src, FREQS)
    cont = 2.0 * (FREQS / FREQS[16]) ** 2.0
    assert s[16] == pytest.approx(cont[16] * (1 + 3.0))
    assert s[0] == pytest.approx(cont[0] * (1 + 3.0 * np.exp(-0.5 * (16 / (5 / 2.35482)) ** 2)))


def test_draws_follow_table_1_and_the_central_source_is_brightest():
    cfg = SkyConfig()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        sources = sky.draw_sources(rng, cfg, 360, 128, sky.channel_frequencies(230e9, 10e6, 128))
        assert 3 <= len(sources) <= 6
        assert (sources[0].x, sources[0].y) == (180.0, 180.0)
        peaks = [sky.spectrum(s, sky.channel_frequencies(230e9, 10e6, 128)).max() for s in sources]
        assert max(peaks[1:]) <= peaks[0] + 1e-12
        for s in sources[1:]:
            assert 100 <= s.x <= 250 and 100 <= s.y <= 250
        for s in sources:
            assert 4.71 <= s.fwhm_x <= 18.84 and 4.71 <= s.fwhm_y <= 18.84 and 0 <= s.pa <= 90 and 3 <= s.fwhm_z <= 10 and 10 <= s.z <= 110


def test_the_fwhm_reading_draws_table_1s_sizes_as_true_fwhms():
    cfg = SimConfig().replace(**{"sky.size_reading": "fwhm"}).sky
    freqs = sky.channel_frequencies(230e9, 10e6, 128)
    widths = [w for seed in range(20) for s in sky.draw_sources(np.random.default_rng(seed), cfg, 360, 128, freqs)
              for w in (s.fwhm_x, s.fwhm_y)]  # fmt: skip
    assert 2.0 <= min(widths) and max(widths) <= 8.0 and max(widths) - min(widths) > 5.0
    row = sky.spatial_profile(_src(fwhm_x=4.0, pa=0.0), 48)[24]  # a true FWHM: half the peak 2 px either side
    assert (row[18], row[22]) == pytest.approx((0.5, 0.5), rel=1e-6)


def test_rescaling_sets_the_brightest_pixel_to_inbright():
    model = sky.build_sky([_src(), _src(x=30.0, amplitude=1.0)], 48, FREQS, 0.001)
    assert model.cube.max() == pytest.approx(0.001, rel=1e-6)
    assert model.cube.shape == (32, 48, 48) and model.cube.dtype == np.float32


def test_line_flux_equals_the_line_only_emission_summed_over_the_cube():
    src = _src(spectral_index=-1.5)
    model = sky.build_sky([src], 48, FREQS, 0.001)
    continuum_only = sky.build_sky([_src(spectral_index=-1.5, line_amplitude=0.0)], 48, FREQS, 1.0)
    line_cube = model.cube.astype(np.float64) - continuum_only.cube / continuum_only.scale * model.scale
    dv_km_s = 299_792.458 * 10e6 / FREQS
    expected = float((line_cube.sum(axis=(1, 2)) * dv_km_s).sum())
    assert sky.line_flux_jy_km_s(src, model, 0, FREQS, 10e6) == pytest.approx(expected, rel=1e-5)

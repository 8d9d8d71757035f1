import numpy as np
import pytest

from sim.array import SPEED_OF_LIGHT_M_S, load_configuration, uvw_tracks_m
from sim.config import SimConfig
from sim.noise import visibility_sigma_jy
from sim.array import elevation_deg, hour_angles_rad
from sim.instrument import ARCSEC, build_instrument, fit_beam, primary_beam
from sim.observe import observe
from sim.sky import channel_frequencies


@pytest.fixture(scope="module")
def setup():
    obs = SimConfig().observation
    freqs = channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, 4)
    return obs, freqs, build_instrument(obs, 64, freqs)


def test_psf_peaks_at_the_phase_centre_and_is_point_symmetric(setup):
    _, _, ins = setup
    psf = ins.psf()
    c = 32
    assert psf.shape == (4, 64, 64)
    assert np.unravel_index(psf[0].argmax(), psf[0].shape) == (c, c)
    assert psf[0, c, c] == pytest.approx(1.0, abs=1e-5)
    # point symmetry about the centre: psf(dx, dy) == psf(-dx, -dy)
    assert np.allclose(psf[0, c - 20 : c + 21, c - 20 : c + 21], psf[0, c + 20 : c - 21 : -1, c + 20 : c - 21 : -1], atol=1e-5)


def test_psf_matches_a_direct_fourier_sum_over_visibilities_not_its_mirror(setup):
    obs, freqs, ins = setup
    psf = ins.psf()[0]
    uvw = uvw_tracks_m(load_configuration(obs.antenna_config), dec_deg=obs.dec_deg,
                       total_time_s=obs.total_time_s, integration_s=obs.integration_s)  # fmt: skip
    u, v = (uvw[..., k].ravel() * freqs[0] / SPEED_OF_LIGHT_M_S for k in (0, 1))
    cell = obs.cell_arcsec * ARCSEC
    offsets = np.arange(-14, 15, 2)
    dx, dy = (a.ravel() for a in np.meshgrid(offsets, offsets))
    l, m = -dx * cell, dy * cell  # RA increases to the left
    exact = np.array([np.mean(np.cos(2 * np.pi * (u * li + v * mi))) for li, mi in zip(l, m)])
    mirrored = np.array([np.mean(np.cos(2 * np.pi * (-u * li + v * mi))) for li, mi in zip(l, m)])
    ours = psf[32 + dy, 32 + dx]
    rms = lambda a: float(np.sqrt(np.mean(a**2)))  # noqa: E731
    assert np.abs(ours - exact).max() < 0.015
    assert rms(ours - exact) < 0.3 * rms(mirrored - exact)  # a mirrored PSF would fail here


def test_point_source_lands_on_its_pixel_scaled_by_the_primary_beam(setup):
    _, freqs, ins = setup
    sky = np.zeros((4, 64, 64), np.float32)
    sky[:, 32, 12] = 2.0  # 2" east of the centre (RA increases to the left)
    sky[:, 32, 32] = 1.0
    dirty = observe(sky, ins, noise="none").dirty
    assert np.unravel_index(dirty[1].argmax(), (64, 64)) == (32, 12)
    pb, psf = np.asarray(ins.primary_beam), ins.psf()
    # dirty(p) = sum_q sky(q) PB(q) PSF(p - q); PSF(0, -20 px) = psf[32, 12] with the peak at [32, 32]
    assert dirty[1, 32, 12] == pytest.approx(2.0 * pb[1, 32, 12] + 1.0 * pb[1, 32, 32] * psf[1, 32, 12], abs=1e-5)
    assert pb[1, 32, 12] < 0.99  # 2" off axis the primary beam matters
    single = np.zeros_like(sky)
    single[:, 32, 32] = 1.0
    assert observe(single, ins, noise="none").dirty[1, 32, 32] == pytest.approx(1.0, abs=1e-5)


def test_observation_is_linear_without_noise(setup):
    rng = np.random.default_rng(0)
    _, _, ins = setup
    a = rng.random((4, 64, 64)).astype(np.float32)
    b = rng.random((4, 64, 64)).astype(np.float32)
    da, db, dab = (observe(x, ins, noise="none").dirty for x in (a, b, a + b))
    assert np.allclose(dab, da + db, atol=1e-4 * np.abs(dab).max())


def test_thermal_noise_matches_the_radiometer_equation(setup):
    obs, freqs, ins = setup
    n_vis = 903 * 240  # 43 antennas, 2400 s / 10 s
    el = elevation_deg(obs.dec_deg, hour_angles_rad(obs.total_time_s, obs.integration_s))
    sigma = visibility_sigma_jy(freqs[0], pwv_mm=obs.pwv_mm, elevation_deg=el,
                                channel_width_hz=obs.channel_width_hz, integration_s=obs.integration_s)  # fmt: skip
    expected = np.sqrt(np.mean(sigma**2) / 2 / n_vis)  # Stokes I averages XX and YY
    assert ins.thermal_rms[0] == pytest.approx(expected, rel=1e-3)
    assert ins.thermal_rms[0] == pytest.approx(0.375e-3, rel=0.05)  # CASA 6.7 simobserve + tclean
    noise = observe(np.zeros((4, 64, 64), np.float32), ins, noise="thermal", seed=5)
    assert noise.dirty.std() == pytest.approx(ins.thermal_rms.mean(), rel=0.1)
    assert noise.noise_rms == pytest.approx(float(noise.dirty.std()), rel=0.05)


def test_noise_is_correlated_on_the_beam_scale(setup):
    _, _, ins = setup
    d = observe(np.zeros((4, 64, 64), np.float32), ins, noise="thermal", seed=1).dirty
    neighbour = np.mean(d[:, :, :-1] * d[:, :, 1:]) / np.mean(d**2)
    far = np.mean(d[:, :, :-20] * d[:, :, 20:]) / np.mean(d**2)
    assert neighbour > 0.7 and abs(far) < 0.2  # ~8 px beam: neighbours correlated, 20 px apart not


def test_snr_mode_hits_the_target_and_seeds_reproduce(setup):
    _, _, ins = setup
    sky = np.zeros((4, 64, 64), np.float32)
    sky[:, 32, 32] = 0.05
    a = observe(sky, ins, noise="snr", target_snr=12.0, seed=7)
    b = observe(sky, ins, noise="snr", target_snr=12.0, seed=7)
    c = observe(sky, ins, noise="snr", target_snr=12.0, seed=8)
    assert a.signal_peak / a.noise_rms == pytest.approx(12.0, rel=0.1)
    assert np.array_equal(a.dirty, b.dirty) and not np.array_equal(a.dirty, c.dirty)
    faint = observe(sky * 1e-4, ins, noise="snr", target_snr=12.0, seed=7)
    assert faint.noise_scale == 1.0  # thermal noise is never scaled down


def test_bad_shapes_and_modes_raise(setup):
    _, _, ins = setup
    with pytest.raises(ValueError, match="does not match"):
        observe(np.zeros((4, 32, 32), np.float32), ins)
    with pytest.raises(ValueError, match="target_snr"):
        observe(np.zeros((4, 64, 64), np.float32), ins, noise="snr")
    with pytest.raises(ValueError, match="target_snr"):
        observe(np.zeros((4, 64, 64), np.float32), ins, noise="paper", target_snr=0.0)
    with pytest.raises(ValueError, match="snr or paper"):
        observe(np.zeros((4, 64, 64), np.float32), ins, noise="white")


def _acf_ratio(noise: np.ndarray) -> float:
    """Autocorrelation at a lag of 1 px along x over its value at lag 0."""
    return float(np.mean(noise[:, :, :-1] * noise[:, :, 1:]) / np.mean(noise**2))


def test_paper_mode_adds_white_noise_up_to_the_target_snr(setup):
    _, _, ins = setup
    sky = np.zeros((4, 64, 64), np.float32)
    sky[:, 32, 32] = 0.05
    clean = observe(sky, ins, noise="none").dirty
    thermal = observe(sky, ins, noise="thermal", seed=7)
    paper = observe(sky, ins, noise="paper", target_snr=12.0, seed=7)
    assert paper.signal_peak / paper.noise_rms == pytest.approx(12.0, rel=1e-4)  # the total rms sets the SNR
    assert np.hypot(thermal.noise_rms, paper.white_rms) == pytest.approx(paper.noise_rms, rel=1e-5)
    assert paper.noise_scale == 1.0 and paper.white_rms > 5 * thermal.noise_rms
    white = paper.dirty - thermal.dirty  # the same seed, the same thermal noise under it
    assert white.std() == pytest.approx(paper.white_rms, rel=0.03)
    assert abs(_acf_ratio(white)) < 0.03  # uncorrelated
    total = paper.dirty - clean
    assert total.std() == pytest.approx(paper.noise_rms, rel=0.05)
    beam_at_1px = float(ins.psf()[:, 32, 33].mean())  # ~0.9: the thermal noise's ACF follows the beam
    assert _acf_ratio(thermal.dirty - clean) > 0.8 * beam_at_1px
    assert _acf_ratio(total) < 0.2 * beam_at_1px  # a zero-lag spike over a weak beam
    again = observe(sky, ins, noise="paper", target_snr=12.0, seed=7)
    other = observe(sky, ins, noise="paper", target_snr=12.0, seed=8)
    assert np.array_equal(paper.dirty, again.dirty) and not np.array_equal(paper.dirty, other.dirty)


def test_paper_mode_adds_nothing_where_the_thermal_noise_is_already_more(setup):
    _, _, ins = setup
    sky = np.zeros((4, 64, 64), np.float32)
    sky[:, 32, 32] = 1e-4  # thermal SNR ~0.3
    paper = observe(sky, ins, noise="paper", target_snr=12.0, seed=7)
    thermal = observe(sky, ins, noise="thermal", seed=7)
    assert paper.white_rms == 0.0 and paper.noise_rms == pytest.approx(thermal.noise_rms, rel=1e-6)
    assert np.array_equal(paper.dirty, thermal.dirty)


def test_primary_beam_half_power_width_is_1_13_lambda_over_12m():
    pb = primary_beam(128, 0.5, np.array([230e9]))[0]
    profile = pb[64, 64:]
    half = np.interp(0.5, profile[::-1], np.arange(64)[::-1]) * 0.5  # arcsec from centre
    expected = 1.13 * SPEED_OF_LIGHT_M_S / 230e9 / 12.0 / ARCSEC
    assert 2 * half == pytest.approx(expected, rel=0.03)
    assert pb[64, 64] == pytest.approx(1.0)


@pytest.mark.parametrize("bpa", [0.0, 45.0, -30.0, 90.0])
def test_beam_fit_recovers_a_known_gaussian_and_its_position_angle(bpa):
    cell = 0.1
    bmaj, bmin = 0.9, 0.6
    yy, xx = np.mgrid[-16:17, -16:17].astype(float)
    theta = np.deg2rad(bpa)
    east, north = -xx * cell, yy * cell  # x runs west
    a = east * np.sin(theta) + north * np.cos(theta)  # along the major axis
    b = east * np.cos(theta) - north * np.sin(theta)
    psf = np.exp(-0.5 * ((a / (bmaj / 2.35482)) ** 2 + (b / (bmin / 2.35482)) ** 2))
    fmaj, fmin, fpa = fit_beam(psf, cell)
    assert (fmaj, fmin) == pytest.approx((bmaj, bmin), rel=1e-3)
    assert fpa == pytest.approx(bpa, abs=0.1)


def test_fitted_beam_matches_casa_for_the_paper_setup_and_weighting_orders_it():
    obs = SimConfig().observation
    freqs = np.array([230e9])
    natural = build_instrument(obs, 128, freqs).beams[0]
    assert natural[0] == pytest.approx(0.892, rel=0.03) and natural[1] == pytest.approx(0.760, rel=0.03)
    briggs = build_instrument(obs.__class__(**{**obs.__dict__, "weighting": "briggs", "robust": 0.0}), 128, freqs).beams[0]
    uniform = build_instrument(obs.__class__(**{**obs.__dict__, "weighting": "uniform"}), 128, freqs).beams[0]
    assert uniform[0] < briggs[0] < natural[0]


@pytest.mark.parametrize("mode", ["snr", "paper"])
def test_threads_do_not_change_the_result(setup, mode):
    _, _, ins = setup
    sky = np.random.default_rng(2).random((4, 64, 64)).astype(np.float32) * 1e-3
    one = observe(sky, ins, noise=mode, target_snr=15.0, seed=3, threads=1)
    two = observe(sky, ins, noise=mode, target_snr=15.0, seed=3, threads=2)
    assert np.allclose(one.dirty, two.dirty, atol=1e-6 * np.abs(one.dirty).max())
    assert (one.noise_rms, one.noise_scale, one.signal_peak, one.white_rms) == pytest.approx(
        (two.noise_rms, two.noise_scale, two.signal_peak, two.white_rms), rel=1e-5)  # fmt: skip


def test_reduced_padding_for_compact_skies_matches_the_direct_fourier_sum(setup):
    """No wrap-around: any (emission, image) pixel pair agrees with the exact sum over visibilities
    as well as 2x padding does (both carry nearest-cell gridding error at large offsets)."""
    obs, freqs, full = setup
    compact = build_instrument(obs, 64, freqs[:1], support=(20, 44))
    full = build_instrument(obs, 64, freqs[:1])
    assert compact.n_pad == 90 < full.n_pad == 128
    uvw = uvw_tracks_m(load_configuration(obs.antenna_config), dec_deg=obs.dec_deg,
                       total_time_s=obs.total_time_s, integration_s=obs.integration_s)  # fmt: skip
    u, v = (uvw[..., k].ravel() * freqs[0] / SPEED_OF_LIGHT_M_S for k in (0, 1))
    cell, rng = obs.cell_arcsec * ARCSEC, np.random.default_rng(0)
    errors = {"full": [], "compact": []}
    for _ in range(25):
        q, p = rng.integers(20, 44, 2), rng.integers(0, 64, 2)  # emission pixel, image pixel (y, x)
        sky = np.zeros((1, 64, 64), np.float32)
        sky[0, q[0], q[1]] = 1.0
        d = p - q
        exact = np.mean(np.cos(2 * np.pi * (-u * d[1] * cell + v * d[0] * cell))) * float(full.primary_beam[0, q[0], q[1]])
        for name, ins in (("full", full), ("compact", compact)):
            errors[name].append(observe(sky, ins, noise="none").dirty[0, p[0], p[1]] - exact)
    rms = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errors.items()}
    assert rms["compact"] < 0.015 and rms["compact"] < 2 * rms["full"]
    sky = np.zeros((1, 64, 64), np.float32)
    sky[0, 10, 10] = 1.0
    with pytest.raises(ValueError, match="outside the instrument's support"):
        observe(sky, compact)


@pytest.mark.parametrize("mode", ["snr", "paper"])
def test_batched_observation_equals_one_by_one(setup, mode):
    from sim.observe import observe_batch

    _, _, ins = setup
    skies = np.random.default_rng(5).random((2, 4, 64, 64)).astype(np.float32) * 1e-3
    dirty, rms = observe_batch(skies, ins, noise=mode, seeds=np.array([7, 8]), target_snrs=np.array([10.0, 20.0]))
    for i, (seed, snr) in enumerate([(7, 10.0), (8, 20.0)]):
        single = observe(skies[i], ins, noise=mode, seed=seed, target_snr=snr)
        assert np.allclose(np.asarray(dirty[i]), single.dirty, atol=1e-5 * np.abs(single.dirty).max())
        assert float(rms[i]) == pytest.approx(single.noise_rms, rel=1e-4)

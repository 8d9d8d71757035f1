import numpy as np
import pytest

from sim.array import elevation_deg, hour_angles_rad, load_configuration, uvw_tracks_m
from sim.noise import system_temperature, visibility_sigma_jy


def _sigma(**kw):
    args = dict(pwv_mm=0.8, elevation_deg=78.0, channel_width_hz=10e6, integration_s=10.0)
    return float(visibility_sigma_jy(230e9, **{**args, **kw}))


def test_reproduces_casa_simobserve_at_the_paper_setup():
    el = elevation_deg(-35.0, hour_angles_rad(2400.0, 10.0))
    sigma = visibility_sigma_jy(230e9, pwv_mm=0.8, elevation_deg=el, channel_width_hz=10e6, integration_s=10.0)
    assert float(np.mean(sigma)) == pytest.approx(0.247, rel=0.01)


def test_radiometer_scalings():
    assert _sigma(channel_width_hz=40e6) == pytest.approx(_sigma() / 2, rel=1e-9)
    assert _sigma(integration_s=40.0) == pytest.approx(_sigma() / 2, rel=1e-9)
    assert _sigma(pwv_mm=2.0) > _sigma(pwv_mm=0.5)
    assert _sigma(elevation_deg=30.0) > _sigma(elevation_deg=80.0)
    assert 60 < float(system_temperature(230e9, 0.8, 78.0)) < 150  # Band 6 Tsys in good weather


def test_uv_tracks_centre_on_transit_and_stay_under_the_longest_baseline():
    cfg = load_configuration("alma.cycle9.3")
    assert cfg.n_antennas == 43 and cfg.max_baseline_m == pytest.approx(500.2, abs=1)
    h = hour_angles_rad(2400.0, 10.0)
    assert len(h) == 240 and h.mean() == pytest.approx(0.0, abs=1e-12)
    uvw = uvw_tracks_m(cfg, dec_deg=-35.0, total_time_s=2400.0, integration_s=10.0)
    assert uvw.shape == (240, 903, 3)
    lengths = np.linalg.norm(uvw, axis=-1)
    assert lengths.max() <= cfg.max_baseline_m + 1e-6
    # at transit a baseline's u is its east component (H = 0: u = Y = east)
    mid = uvw_tracks_m(cfg, dec_deg=-35.0, total_time_s=10.0, integration_s=10.0)[0]
    i, j = np.triu_indices(43, k=1)
    assert np.allclose(mid[:, 0], cfg.enu_m[j, 0] - cfg.enu_m[i, 0])

"""The fast backend against CASA on a tiny cube (the CI-sized version of benchmarks/fidelity_vs_casa.py)."""

import dataclasses

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from sim import sky
from sim.config import SimConfig
from sim.generate import generate
from sim.instrument import build_instrument, fit_beam
from sim.observe import observe

pytestmark = pytest.mark.casa


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from sim.casa import observe_casa

    config = SimConfig().replace(**{"cube.size": 96, "cube.channels": 2})
    obs = dataclasses.replace(config.observation, total_time_s=1200.0)
    freqs = sky.channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, 2)
    sources = sky.draw_sources(np.random.default_rng(1), config.sky, 96, 2, freqs)
    model = sky.build_sky(sources, 96, freqs, 0.001)
    work = tmp_path_factory.mktemp("casa")
    casa = observe_casa(model.cube, freqs, obs, thermal_noise=False, workdir=work)
    casa_noise = observe_casa(np.zeros((2, 128, 128), np.float32), freqs, obs, thermal_noise=True,
                              want_psf=False, workdir=work, seed=5)  # fmt: skip
    return obs, freqs, model, casa, casa_noise


def test_psf_beam_and_dirty_cube_match_casa(pair):
    obs, freqs, model, casa, _ = pair
    ins = build_instrument(obs, 96, freqs)
    psf = ins.psf()
    assert _corr(psf, casa.psf) >= 0.99
    fast_beam, casa_beam = fit_beam(psf[0], obs.cell_arcsec), fit_beam(casa.psf[0], obs.cell_arcsec)
    assert fast_beam[:2] == pytest.approx(casa_beam[:2], rel=0.05)
    assert ins.beams[0][:2] == pytest.approx(casa.beams[0][:2], rel=0.05)
    dirty = observe(model.cube, ins, noise="none").dirty
    assert _corr(dirty, casa.dirty) >= 0.95
    assert dirty.max() == pytest.approx(casa.dirty.max(), rel=0.05)


def test_thermal_noise_matches_casa(pair):
    obs, freqs, _, _, casa_noise = pair
    ins = build_instrument(obs, 128, freqs)
    fast = observe(np.zeros((2, 128, 128), np.float32), ins, noise="thermal", seed=5).dirty
    assert float(fast.std()) == pytest.approx(float(casa_noise.dirty.std()), rel=0.15)
    assert ins.thermal_rms.mean() == pytest.approx(float(casa_noise.dirty.std()), rel=0.15)


def test_generate_with_the_casa_backend_gives_the_same_products(tmp_path):
    config = SimConfig().replace(**{"cube.size": 48, "cube.channels": 2, "seed": 2, "noise.mode": "none",
                                    "observation.total_time_s": 600.0})  # fmt: skip
    generate(tmp_path / "fast", 1, config, progress=False)
    generate(tmp_path / "casa", 1, config.replace(backend="casa"), progress=False)
    fast_cat, casa_cat = (Table.read(tmp_path / d / "catalogue.csv") for d in ("fast", "casa"))
    assert fast_cat.colnames == casa_cat.colnames and len(fast_cat) == len(casa_cat)
    for col in ("x", "y", "z", "fwhm_x", "line_flux", "x0", "y1", "blendness"):
        assert np.allclose(fast_cat[col], casa_cat[col])
    fast, casa = (fits.getdata(tmp_path / d / "cube_00000.fits") for d in ("fast", "casa"))
    assert fast.shape == casa.shape == (1, 2, 48, 48) and _corr(fast, casa) >= 0.95
    assert fits.getheader(tmp_path / "casa" / "cube_00000.fits")["SIMBACK"] == "casa"


def _acf_ratio(noise):
    """Autocorrelation at a lag of 1 px along x over its value at lag 0."""
    return float(np.mean(noise[:, :, :-1] * noise[:, :, 1:]) / np.mean(noise**2))


def test_paper_noise_reaches_the_target_rms_and_white_share_on_both_backends(pair):
    """noise.mode paper, as `generate` runs it on each backend, with half the variance white."""
    from sim.generate import observe_with_casa

    obs, freqs, model, casa, casa_noise = pair
    ins = build_instrument(obs, 96, freqs)
    clean = observe(model.cube, ins, noise="none")
    snr = clean.signal_peak * np.sqrt(0.5) / float(ins.thermal_rms.mean())
    fast = observe(model.cube, ins, noise="paper", seed=5, target_snr=snr)
    casa_dirty, casa_rms, casa_white, *_ = observe_with_casa(model.cube, freqs, obs, ins, mode="paper", seed=5,
                                                            target_snr=snr)  # fmt: skip
    fast_thermal = observe(np.zeros_like(model.cube), ins, noise="thermal", seed=5).dirty
    beam_1px = float(ins.psf()[0, 48, 49])
    for noise, thermal, rms, white in ((fast.dirty - clean.dirty, fast_thermal, fast.noise_rms, fast.white_rms),
                                       (casa_dirty - casa.dirty, casa_noise.dirty, casa_rms, casa_white)):  # fmt: skip
        assert float(noise.std()) == pytest.approx(rms, rel=0.1)
        assert white**2 / rms**2 == pytest.approx(0.5, abs=0.05)
        assert 1 - _acf_ratio(noise) / _acf_ratio(thermal) == pytest.approx(white**2 / rms**2, abs=0.1)
        assert _acf_ratio(thermal) > 0.8 * beam_1px  # thermal noise alone is correlated like the beam
        assert _acf_ratio(noise) < 0.7 * beam_1px  # the paper's: a zero-lag spike over a weaker beam


def test_generate_with_the_casa_backend_in_the_paper_mode(tmp_path):
    """Through the command line: casatools parses sys.argv on import, and `--n` once ended the run."""
    command = [sys.executable, "-m", "sim", "generate", "--backend", "casa", "--out", str(tmp_path), "--n", "1",
               "--size", "48", "--channels", "2", "--seed", "2", "--noise", "paper",
               "--set", "observation.total_time_s=600", "--quiet"]  # fmt: skip
    r = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stderr
    h = fits.getheader(tmp_path / "cube_00000.fits")
    assert (h["SIMBACK"], h["NOISE"], h["PAPERFRC"]) == ("casa", "paper", 1.0) and h["WHITERMS"] > 0
    central = Table.read(tmp_path / "catalogue.csv")[0]
    assert central["peak_snr"] == pytest.approx(h["TARGSNR"], rel=0.25)

"""Classical baselines on tiny synthetic cubes: two Gaussian sources with Gaussian lines, a Gaussian
beam and noise correlated like an interferometer's (its autocorrelation is the beam)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from dfjax.eval.baselines import (
    BaselineError,
    Sample,
    beam_covariance,
    best_combination,
    find_astrodendro,
    find_photutils,
    gaussian_box,
    grid_search,
    load_params,
    resolve_grids,
    robust_noise,
)
from dfjax.eval.matching import MatchCriteria, match
from sim.sky import Source, box_2d, line_profile, spatial_profile

SHAPE = (48, 64, 64)  # (nz, ny, nx)
BEAM_SIGMA_PX = 2.0
BEAM_AREA_PX = 2 * np.pi * BEAM_SIGMA_PX**2
SOURCES = (
    Source(x=20.0, y=24.0, z=14.0, fwhm_x=4.0, fwhm_y=6.0, pa=30.0, fwhm_z=4.0, amplitude=1.0,
           line_amplitude=3.0, spectral_index=0.0),
    Source(x=44.0, y=40.0, z=30.0, fwhm_x=5.0, fwhm_y=3.0, pa=70.0, fwhm_z=6.0, amplitude=0.8,
           line_amplitude=4.0, spectral_index=0.0),
)  # fmt: skip


def correlated_noise(rng: np.random.Generator, shape=SHAPE) -> np.ndarray:
    """Unit-rms noise whose autocorrelation is the Gaussian beam (white noise smoothed by σ/√2)."""
    kernel = BEAM_SIGMA_PX / np.sqrt(2)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), (0, kernel, kernel))
    return noise / noise.std()


def synthetic(seed: int, line_snr: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """(cube, truth boxes): the sources convolved with the beam, scaled so that the brighter line
    peaks at ``line_snr`` times the noise, plus correlated noise; boxes as sim.sky makes them."""
    nz, ny, _ = SHAPE
    sky = sum(s.amplitude * (1 + line_profile(s, nz))[:, None, None] * spatial_profile(s, ny)[None] for s in SOURCES)
    dirty = ndimage.gaussian_filter(sky, (0, BEAM_SIGMA_PX, BEAM_SIGMA_PX))
    cube = line_snr * dirty / dirty.max() + correlated_noise(np.random.default_rng(seed))
    boxes = np.array([(*box_2d(spatial_profile(s, ny)), s.z - s.fwhm_z, s.z + s.fwhm_z) for s in SOURCES])
    return cube.astype(np.float32), boxes


def test_gaussian_box_is_the_truth_box():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        src = Source(x=rng.uniform(20, 40), y=rng.uniform(20, 40), z=0.0, fwhm_x=rng.uniform(2, 8),
                     fwhm_y=rng.uniform(2, 8), pa=rng.uniform(0, 90), fwhm_z=3.0, amplitude=1.0,
                     line_amplitude=1.0, spectral_index=0.0)  # fmt: skip
        c, s = np.cos(np.deg2rad(src.pa)), np.sin(np.deg2rad(src.pa))
        rot = np.array([[c, -s], [s, c]])  # (dx, dy) -> (x', y') as sim.sky.spatial_profile
        cov = rot.T @ np.diag([(src.fwhm_x / 2.35482) ** 2, (src.fwhm_y / 2.35482) ** 2]) @ rot
        assert gaussian_box(src.x, src.y, cov, (64, 64)) == box_2d(spatial_profile(src, 64))


def test_noise_and_beam_estimates():
    noise = correlated_noise(np.random.default_rng(0))
    spiky = noise.copy()
    spiky.flat[::97] += 50.0  # 1% outliers, like sources
    assert robust_noise(spiky) == pytest.approx(1.0, rel=0.05)
    cov = beam_covariance(noise)
    np.testing.assert_allclose(cov, BEAM_SIGMA_PX**2 * np.eye(2), atol=0.1 * BEAM_SIGMA_PX**2)
    scaled = beam_covariance(noise, beam_area_px=100.0)
    assert 2 * np.pi * np.sqrt(np.linalg.det(scaled)) == pytest.approx(100.0)


@pytest.mark.parametrize("spectral", [True, False])
def test_finders_find_both_sources(spectral):
    cube, truth = synthetic(seed=1)
    found = {
        "photutils": find_photutils(cube, threshold_snr=5.0, npixels=10, deblend=True, beam_area_px=BEAM_AREA_PX),
        "astrodendro": find_astrodendro(
            cube, min_value_snr=3.5, min_delta_snr=3.0, min_npix=30, beam_area_px=BEAM_AREA_PX
        ),
    }
    for name, detections in found.items():
        m = match(detections.boxes, truth, MatchCriteria(spectral=spectral))
        assert (m.tp, m.fp, m.fn) == (2, 0, 0), name
        order = np.argsort(m.pairs[:, 1])
        np.testing.assert_allclose(detections.z[m.pairs[order, 0]], [s.z for s in SOURCES], atol=1.0)
        np.testing.assert_allclose(detections.fwhm_z[m.pairs[order, 0]], [s.fwhm_z for s in SOURCES], rtol=0.3)


def test_finders_find_nothing_in_noise():
    noise = correlated_noise(np.random.default_rng(2)).astype(np.float32)
    assert len(find_photutils(noise, threshold_snr=8.0, npixels=10, beam_area_px=BEAM_AREA_PX).boxes) == 0
    assert len(find_astrodendro(noise, min_value_snr=6.0, min_delta_snr=3.0, min_npix=20,
                                beam_area_px=BEAM_AREA_PX).boxes) == 0  # fmt: skip


def test_grid_search_prefers_the_better_combination():
    samples = []
    for seed in (3, 4):
        cube, truth = synthetic(seed)
        samples.append(Sample(cube, truth, np.array([12.0, 9.0]), BEAM_AREA_PX))
    bad = {"threshold_snr": 0.5, "npixels": 3, "deblend": True}  # a field of noise segments
    good = {"threshold_snr": 5.0, "npixels": 10, "deblend": True}
    dendro_bad = {"min_value_snr": 1.0, "min_delta_snr": 0.0, "min_npix": 5}
    dendro_good = {"min_value_snr": 3.5, "min_delta_snr": 3.0, "min_npix": 30}
    scores = grid_search(samples, {"photutils": [bad, good], "astrodendro": [dendro_bad, dendro_good]})
    assert [p for p, _ in scores["photutils"]] == [bad, good]
    assert scores["photutils"][1][1] == 1.0 > scores["photutils"][0][1]
    assert scores["astrodendro"][1][1] == 1.0 > scores["astrodendro"][0][1]
    assert best_combination(scores["photutils"]) == (good, 1.0)
    assert best_combination([(bad, 0.5), (good, 0.5)]) == (bad, 0.5)  # ties: the first


def test_params_are_parsed_pedantically(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("sim: {seed: 0}\nbaselines:\n  methods: [astrodendro]\n  astrodendro: {min_npix: 40}\n")
    methods, grids = load_params(path)
    assert methods == ("astrodendro",)
    assert resolve_grids(methods, grids)["astrodendro"]["min_npix"] == [40]
    with pytest.raises(BaselineError, match="min_pix"):
        resolve_grids(["astrodendro"], {"astrodendro": {"min_pix": [3]}})
    with pytest.raises(BaselineError, match="sextractor"):
        resolve_grids(["sextractor"])


@pytest.mark.parametrize("params, message", [
    ("baselines:\n  methods: [photutils, sextractor]\n", "unknown method 'sextractor'"),
    ("baselines:\n  photutils: {threshold: [3]}\n", "unknown grid key 'threshold'"),
])  # fmt: skip
def test_cli_rejects_bad_params(tmp_path, params, message):
    (tmp_path / "params.yaml").write_text(params)
    out = tmp_path / "metrics" / "baselines.json"
    command = [sys.executable, "-m", "dfjax.eval.baselines", "--data-dir", str(tmp_path / "tfds"), "--dataset",
               "almasim/default", "--params", str(tmp_path / "params.yaml"), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, check=False, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m dfjax.eval.baselines: error: ")
    assert message in lines[0] and "Traceback" not in proc.stderr
    assert not out.parent.exists()

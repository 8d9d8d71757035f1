"""Simulate -> package -> train all six (tiny) models -> python -m dfjax.infer on a new cube.

The cubes are easy on purpose (one bright central source, SNR 40-60) so that a minute of CPU
training is enough: this checks the chain and its bookkeeping (pixel and channel conventions
from the simulator through training to the catalogue), not the models' quality.
"""

import subprocess
import sys

import numpy as np
import pytest
from astropy.table import QTable, Table

from dfjax import train
from dfjax.datasets.almasim import build
from sim.config import SimConfig
from sim.generate import generate

pytestmark = pytest.mark.slow

EASY = {"cube.size": 32, "cube.channels": 16, "seed": 11, "sky.n_serendipitous": [0, 0], "noise.snr_range": [40.0, 60.0],
        "sky.line_amplitude": [4.0, 5.0], "sky.line_centre_frac": [0.3, 0.7], "sky.fwhm_px": [3.0, 5.0],
        "sky.line_fwhm_chan": [2.0, 3.0]}  # fmt: skip
TINY = {"blobs_finder": "{image_size: 32, widths: [8, 8, 8, 8], latent_features: 32, output_bias: -4.0}",
        "deep_gru": "{spectrum_length: 16, hidden_features: 8}", "resnet": "{widths: [4, 4, 4, 4], head_features: 8}"}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    config = SimConfig().replace(**EASY)
    generate(root / "sim", 13, config, progress=False)
    build(root / "sim", root / "tfds", "test", progress=False)
    common = ["--no-progress", "--data-dir", str(root / "tfds"), "--dataset", "almasim/test", "--set", "batch_size=3"]
    runs = {"blobs_finder": ["max_epochs=60", "peak_lr=3e-3", "early_stopping_patience=60"], "deep_gru": ["max_epochs=60", "peak_lr=1e-2"]}
    for name in ("blobs_finder", "deep_gru", "resnet_fwhm_x", "resnet_fwhm_y", "resnet_pa", "resnet_flux"):
        sets = runs.get(name, ["max_epochs=2"]) + [f"model={TINY.get(name, TINY['resnet'])}"]
        train.main([name, "--workdir", str(root / "models" / name), *common, *(a for s in sets for a in ("--set", s))])
    generate(root / "probe", 1, config.replace(seed=99), progress=False)
    return root


def test_the_bright_central_source_is_found_at_its_position_and_channel(trained):
    out = trained / "probe.cat.ecsv"
    r = subprocess.run([sys.executable, "-m", "dfjax.infer", str(trained / "probe" / "cube_00000.fits"),
                        "--model-dir", str(trained / "models"), "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    found = QTable.read(out)
    truth = Table.read(trained / "probe" / "catalogue.csv")[0]
    assert len(found) >= 1
    d = np.hypot(found["x"].value - truth["x"], found["y"].value - truth["y"])
    best = int(np.argmin(d))
    assert d[best] <= 1.5
    assert abs(found["z"].value[best] - truth["z"]) <= 1.0
    assert found["line_flux"].unit == "Jy km / s" and found["ra"].unit == "deg"


def test_tune_then_evaluate_write_consistent_metrics_plots_and_report(trained, tmp_path):
    """The DVC stages tune → evaluate on the fixture's models: files, counts and the tuned config."""
    import json

    import yaml

    params = tmp_path / "params.yaml"
    params.write_text("pipeline: {}\ntune:\n  grid:\n    focus.min_snr: [1.0, 2.0]\n")
    common = ["--sim-dir", str(trained / "sim"), "--data-dir", str(trained / "tfds"), "--dataset", "almasim/test",
              "--model-dir", str(trained / "models"), "--no-progress"]  # fmt: skip
    tuned = trained / "models" / "pipeline.yaml"
    r = subprocess.run([sys.executable, "-m", "dfjax.eval.tune", "--params", str(params), "--out", str(tuned),
                        "--metrics", str(tmp_path / "metrics" / "tune.json"), *common],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    trials = json.loads((tmp_path / "metrics" / "tune.json").read_text())["trials"]
    assert [t["params"]["focus.min_snr"] for t in trials] == [1.0, 2.0]
    chosen = yaml.safe_load(tuned.read_text())["pipeline"]["focus"]["min_snr"]
    assert chosen == max(trials, key=lambda t: (t["f1"], -trials.index(t)))["params"]["focus.min_snr"]

    r = subprocess.run([sys.executable, "-m", "dfjax.eval.evaluate", "--metrics-dir", str(tmp_path / "metrics"),
                        "--plots-dir", str(tmp_path / "plots"), "--report", str(tmp_path / "reports" / "evaluation.md"),
                        *common], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    detection = json.loads((tmp_path / "metrics" / "detection.json").read_text())
    characterisation = json.loads((tmp_path / "metrics" / "characterisation.json").read_text())
    from dfjax.eval.data import iter_split

    truth = sum(len(c.catalogue) for c in iter_split(trained / "tfds", "almasim/test", "test"))
    assert detection["tp"] + detection["fn"] == truth == sum(b["sources"] for b in detection["recall_by_snr"])
    assert characterisation["sources"] == detection["tp"]
    assert set(characterisation) >= {"x", "y", "z", "fwhm_x", "fwhm_y", "fwhm_z", "pa", "flux"}
    for name in ("characterisation.png", "recall_vs_snr.png", "blendness.png", "recall_vs_snr.csv"):
        assert (tmp_path / "plots" / name).stat().st_size > 0
    assert "| dfjax pipeline |" in (tmp_path / "reports" / "evaluation.md").read_text()

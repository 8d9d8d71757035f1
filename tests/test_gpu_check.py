"""benchmarks/gpu_check.sh in its tiny mode: every section runs on CPU and prints its figure."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("blobs_finder", "deep_gru", "resnet_fwhm_x", "resnet_fwhm_y", "resnet_pa", "resnet_flux")


@pytest.mark.slow  # ~50 s on 2 loaded cores, mostly compiling six tiny train steps
def test_tiny_gpu_check_prints_every_sections_figure(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable, "GPU_CHECK_TINY": "1",
           "GPU_CHECK_CACHE": str(tmp_path / "jax-cache")}  # fmt: skip
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    number = r"\d+(?:\.\d+)?"
    patterns = [r"\[devices\] .*backend cpu: 1 x ", rf"\[sim\] observe_batch 32x32x16, batch 2: {number} cubes/s",
                rf"\[sim\] stream .*: {number} cubes/s",
                *(rf"\[train\] {m}: {number} steps/s, {number} examples/s" for m in MODELS),
                rf"\[stream-run\] blobs_finder .*val_loss .*best {number}", r"\[done\] .* 0 section\(s\) failed"]  # fmt: skip
    for pattern in patterns:
        assert re.search("^" + pattern, out, re.MULTILINE), (pattern, out)
    assert "FAILED" not in out and "skipped" not in out

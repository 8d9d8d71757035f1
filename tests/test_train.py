"""Trainer: data parallelism, overfitting, checkpoints and resumption, early stopping, config."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dfjax import checkpoint, models, train

# Constructor overrides that equal the Tiny variants (BlobsFinderTiny, DeepGRUTiny, ResNetTiny).
TINY = {
    "blobs_finder": {"image_size": 32, "widths": [4, 4, 4, 4], "latent_features": 16},
    "deep_gru": {"spectrum_length": 16, "hidden_features": 4},
    "resnet_pa": {"stage_sizes": [1, 1, 1, 1], "widths": [4, 8, 8, 8], "head_features": 8},
}


def _run_python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter (JAX flags must precede its initialisation)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def _leaves(node) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(node))]


def _fixed_batch(name: str, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable batch: targets are a deterministic function of the inputs."""
    rng = np.random.default_rng(seed)
    if name == "blobs_finder":
        yy, xx = np.mgrid[:32, :32]
        y = np.zeros((batch, 32, 32, 1), np.float32)
        for b in range(batch):
            cy, cx = rng.uniform(8, 24, 2)
            y[b, ..., 0] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
        return y + 0.1 * rng.standard_normal(y.shape).astype(np.float32), y
    if name == "deep_gru":
        y = np.exp(-0.5 * ((np.arange(16) - rng.uniform(4, 12, (batch, 1))) / 1.5) ** 2)
        return (y + 0.1 * rng.standard_normal(y.shape)).astype(np.float32), y.astype(np.float32)
    x = rng.random((batch, 16, 16, 1), np.float32)
    return x, x.mean(axis=(1, 2, 3)) * 2.0


def test_data_parallel_step_equals_single_device_step():
    out = _run_python(f"""
        import json, jax, jax.numpy as jnp, numpy as np
        from flax import nnx
        from dfjax import models, train
        assert len(jax.devices()) == 2, jax.devices()
        cfg = train.parse_config("resnet_pa", {{"model": {TINY["resnet_pa"]!r}, "peak_lr": 1e-2}})
        x = np.random.default_rng(0).random((4, 16, 16, 1), np.float32)
        y = np.random.default_rng(1).random(4).astype(np.float32)

        def run(devices):
            model = models.create("resnet_pa", rngs=nnx.Rngs(0), **cfg.model)
            opt = train.make_optimizer(model, cfg)
            dp = train.DataParallel(devices)
            step, _ = train.make_steps(model, opt, train.make_loss("resnet_pa", cfg), dp)
            state = dp.replicate(nnx.state((model, opt)))
            xs, ys = dp.shard(x, y)
            for _ in range(3):  # step 0 has lr 0 (warm-up)
                state, loss = step(state, xs, ys, jnp.int32(0))
            return state, xs, dp

        one, _, _ = run(jax.devices()[:1])
        two, xs, dp = run(jax.devices())
        try:
            dp.shard(x[:3], y[:3])
            raise SystemExit("no ValueError for a batch of 3 on 2 devices")
        except ValueError as e:
            assert "divisible" in str(e)
        diffs = [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                 for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two))]
        init = jax.tree.leaves(nnx.state(models.create("resnet_pa", rngs=nnx.Rngs(0), **cfg.model)))
        moved = max(float(np.max(np.abs(np.asarray(a) - b)))
                    for a, b in zip(jax.tree.leaves(one[0]), init))
        print(json.dumps({{
            "max_diff": max(diffs), "moved": moved,
            "batch_devices": len(xs.sharding.device_set),
            "shard_rows": sorted(s.data.shape[0] for s in xs.addressable_shards),
            "replicated": all(l.sharding.is_fully_replicated for l in jax.tree.leaves(two)),
        }}))
    """, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = json.loads(out)
    assert result["batch_devices"] == 2
    assert result["shard_rows"] == [2, 2]
    assert result["replicated"]
    assert result["moved"] > 1e-4, result  # the steps did change the parameters
    assert result["max_diff"] < 1e-5, result


@pytest.mark.parametrize("name,steps", [("blobs_finder", 150), ("deep_gru", 100), ("resnet_pa", 60)])
def test_tiny_model_overfits_fixed_batch(name, steps):
    cfg = train.parse_config(name, {"model": TINY[name], "peak_lr": 1e-2, "max_epochs": 10})
    model = models.create(name, rngs=nnx.Rngs(0), **checkpoint.constructor_args(cfg.model))
    opt = train.make_optimizer(model, cfg)
    step, _ = train.make_steps(model, opt, train.make_loss(name, cfg), train.DataParallel())
    state = nnx.state((model, opt))
    x, y = _fixed_batch(name, 4 if name == "blobs_finder" else 8)
    found = []
    for _ in range(steps):
        state, loss = step(state, x, y, jnp.int32(0))  # epoch 0: eq. 20 is pure l1
        found.append(float(loss))
    assert min(found[-10:]) * 10 <= found[0], (found[0], found[-10:])


def test_checkpoint_restore_is_bit_exact(tmp_path):
    cfg = train.parse_config("resnet_pa", {"model": TINY["resnet_pa"]})

    def make(seed):
        return models.create("resnet_pa", rngs=nnx.Rngs(seed), **checkpoint.constructor_args(cfg.model))

    model = make(0)
    opt = train.make_optimizer(model, cfg)
    step, _ = train.make_steps(model, opt, train.make_loss("resnet_pa", cfg), train.DataParallel())
    state = nnx.state((model, opt))
    for _ in range(4):
        state, _ = step(state, *_fixed_batch("resnet_pa", 4), jnp.int32(0))
    nnx.update((model, opt), state)
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(4, model=model, optimizer=opt, meta={"epoch": 3}, val_loss=0.5)
    model2 = make(1)
    opt2 = train.make_optimizer(model2, cfg)
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(model), _leaves(model2)))
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        assert ckpt.restore(4, model=model2, optimizer=opt2) == {"epoch": 3}
    assert len(jax.tree.leaves(nnx.state(model2, nnx.BatchStat))) > 0
    for a, b in zip(_leaves(model) + _leaves(opt), _leaves(model2) + _leaves(opt2), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert int(opt2.step[...]) == 4


def _recording_source(cfg, log):
    source = train.synthetic_batches("deep_gru", cfg, num_train=24, num_val=8)

    def batches(split, epoch):
        for x, y in source(split, epoch):
            if split == "train":
                log.append((epoch, float(x.sum())))
            yield x, y
    return batches


def test_resume_continues_steps_epochs_and_data_order(tmp_path):
    sets = {"model": TINY["deep_gru"], "batch_size": 8, "early_stopping_patience": 50}
    straight_cfg = train.parse_config("deep_gru", {**sets, "max_epochs": 3})
    straight_log = []
    straight = train.train("deep_gru", straight_cfg, tmp_path / "a", progress=False,
                           batches=_recording_source(straight_cfg, straight_log))

    first_cfg = train.parse_config("deep_gru", {**sets, "max_epochs": 1})  # "killed" after 1 epoch
    resumed_log = []
    first = train.train("deep_gru", first_cfg, tmp_path / "b", progress=False,
                        batches=_recording_source(first_cfg, resumed_log))
    assert (first["epochs"], first["steps"]) == (1, 3)
    resumed = train.train("deep_gru", straight_cfg, tmp_path / "b", progress=False,
                          batches=_recording_source(straight_cfg, resumed_log))
    assert (resumed["epochs"], resumed["steps"]) == (straight["epochs"], straight["steps"]) == (3, 9)
    assert resumed_log == straight_log  # same batches in the same order, no epoch repeated
    rows = (tmp_path / "b/metrics/train_log.tsv").read_text().splitlines()
    assert rows[0].split("\t") == list(train.LOG_COLUMNS)
    assert [r.split("\t")[:2] for r in rows[1:]] == [["0", "3"], ["1", "6"], ["2", "9"]]
    a, _ = checkpoint.load_model(tmp_path / "a", which="latest")
    b, _ = checkpoint.load_model(tmp_path / "b", which="latest")
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert resumed["best_val_loss"] == pytest.approx(straight["best_val_loss"], rel=1e-5)


def test_init_from_starts_phase_two_from_phase_one_parameters(tmp_path):
    cfg = train.parse_config("deep_gru", {"model": TINY["deep_gru"], "max_epochs": 2,
                                          "batch_size": 8})
    train.train("deep_gru", cfg, tmp_path / "phase1", progress=False,
                batches=train.synthetic_batches("deep_gru", cfg, num_train=16, num_val=8))
    phase1, _ = checkpoint.load_model(tmp_path / "phase1")
    still = train.parse_config("deep_gru", {"model": TINY["deep_gru"], "max_epochs": 1,
                                            "batch_size": 8, "peak_lr": 1e-30, "seed": 5})
    metrics = train.train("deep_gru", still, tmp_path / "phase2", progress=False,
                          init_from=tmp_path / "phase1",
                          batches=train.synthetic_batches("deep_gru", still, num_train=16))
    assert metrics["steps"] == 2  # fresh step counter
    phase2, config = checkpoint.load_model(tmp_path / "phase2")
    assert config["init_from"] == str((tmp_path / "phase1").absolute())
    p1 = jax.tree.leaves(nnx.state(phase1, nnx.Param))
    p2 = jax.tree.leaves(nnx.state(phase2, nnx.Param))
    fresh = jax.tree.leaves(nnx.state(models.DeepGRUTiny(rngs=nnx.Rngs(5)), nnx.Param))
    for a, b in zip(p1, p2, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert not all(np.allclose(a, c) for a, c in zip(p1, fresh))


def test_load_model_round_trip_without_training_code(tmp_path):
    cfg = train.parse_config("deep_gru", {"model": TINY["deep_gru"], "max_epochs": 1,
                                          "batch_size": 8})
    train.train("deep_gru", cfg, tmp_path, progress=False,
                batches=train.synthetic_batches("deep_gru", cfg, num_train=16, num_val=8))
    reference = models.DeepGRUTiny(rngs=nnx.Rngs(99))
    with checkpoint.Checkpointer(tmp_path / "checkpoints", read_only=True) as ckpt:
        ckpt.restore(ckpt.best_step(), model=reference)
    reference.eval()
    x = np.linspace(-2, 2, 32, dtype=np.float32).reshape(2, 16)
    out = json.loads(_run_python(f"""
        import json, sys
        import numpy as np
        from dfjax.checkpoint import load_model
        model, config = load_model({str(tmp_path)!r})
        x = np.linspace(-2, 2, 32, dtype=np.float32).reshape(2, 16)
        print(json.dumps({{"model": config["model"], "overrides": config["overrides"],
                          "type": type(model).__name__, "hidden": model.hidden_features,
                          "y": np.asarray(model(x)).tolist(),
                          "train_imported": "dfjax.train" in sys.modules}}))
    """))
    assert out["train_imported"] is False
    assert (out["model"], out["type"], out["hidden"]) == ("deep_gru", "DeepGRU", 4)
    assert out["overrides"] == TINY["deep_gru"]
    np.testing.assert_allclose(out["y"], np.asarray(reference(x)), rtol=1e-6)


def test_early_stopping_rule_on_hand_made_losses():
    stopper = train.EarlyStopping(patience=2, window=3)
    bad, stops = [], []
    # means of the previous (≤3) losses: -, 10, 9.5, 9, 8.67, 8.5, 8.83
    for loss in [10.0, 9.0, 8.0, 9.0, 8.5, 9.0, 9.0]:
        stopper = stopper.update(loss)
        bad.append(stopper.bad_evaluations)
        stops.append(stopper.should_stop)
    assert bad == [0, 0, 0, 1, 0, 1, 2]
    assert stops == [False] * 6 + [True]
    assert stopper.history == (8.5, 9.0, 9.0)

    flat = train.EarlyStopping()  # paper: window 10, patience 10
    for i in range(11):
        assert not flat.should_stop, i
        flat = flat.update(1.0)
    assert flat.should_stop


def test_warmup_schedule_values():
    schedule = train.learning_rate_schedule(train.parse_config("resnet_pa"))
    np.testing.assert_allclose([schedule(s) for s in (0, 5, 10, 1000)], [0.0, 5e-5, 1e-4, 1e-4],
                               rtol=1e-6)


def test_config_parsing_is_pedantic():
    assert train.parse_config("deep_gru").weight_decay == 1e-5
    assert train.parse_config("resnet_flux").weight_decay == 0.0
    cfg = train.parse_config("resnet_pa", {"batch_size": 4}, ["peak_lr=2e-4", "model.widths=[4,8,8,8]"])
    assert (cfg.batch_size, cfg.peak_lr, cfg.model) == (4, 2e-4, {"widths": [4, 8, 8, 8]})
    with pytest.raises(train.ConfigError, match="train.batchsize: unknown key"):
        train.parse_config("resnet_pa", {"batchsize": 4})
    with pytest.raises(train.ConfigError, match="train.model:.*depth"):
        train.parse_config("resnet_pa", sets=["model.depth=3"])
    with pytest.raises(train.ConfigError, match="train.max_epochs"):
        train.parse_config("resnet_pa", sets=["max_epochs=ten"])
    with pytest.raises(train.ConfigError, match="unknown model"):
        train.parse_config("unet")


def test_cli_synthetic_smoke_and_missing_dataset(tmp_path):
    args = ["deep_gru", "--workdir", str(tmp_path), "--no-progress", "--set", "max_epochs=1",
            "--set", "batch_size=16", "--set", "model={spectrum_length: 16, hidden_features: 4}"]
    metrics = train.cli_run([*args, "--synthetic"])
    assert metrics["epochs"] == 1 and metrics["steps"] == 4
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 4
    r = subprocess.run([sys.executable, "-m", "dfjax.train", *args, "--data-dir", str(tmp_path / "none")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "no such dataset" in r.stderr and "Traceback" not in r.stderr


TINY_YAML = {
    "deep_gru": "{spectrum_length: 16, hidden_features: 4}",
    "resnet_flux": "{widths: [4, 4, 4, 4], head_features: 8}",
    "blobs_finder": "{image_size: 32, widths: [4, 4, 4, 4], latent_features: 16}",
}


@pytest.fixture(scope="module")
def dummy_dataset(tmp_path_factory):
    from pathlib import Path

    from dfjax.datasets.almasim import build

    data_dir = tmp_path_factory.mktemp("tfds")
    dummy = Path(__file__).parents[1] / "dfjax" / "datasets" / "almasim" / "dummy_data"
    build(dummy, data_dir, "test", progress=False)
    return data_dir


@pytest.mark.parametrize("name", sorted(TINY_YAML))
def test_cli_trains_on_the_packaged_dataset(dummy_dataset, tmp_path, name):
    metrics = train.cli_run([name, "--workdir", str(tmp_path), "--no-progress", "--data-dir", str(dummy_dataset),
                          "--dataset", "almasim/test", "--set", "max_epochs=2", "--set", "batch_size=1",
                          "--set", f"model={TINY_YAML[name]}"])  # fmt: skip
    assert metrics["epochs"] == 2 and metrics["steps"] > 0 and np.isfinite(metrics["best_val_loss"])
    log = (tmp_path / "metrics" / "train_log.tsv").read_text().splitlines()
    assert len(log) == 3  # header + one row per epoch


def test_blobs_finder_validation_criterion_does_not_move_with_the_schedule():
    import jax.numpy as jnp

    cfg = train.parse_config("blobs_finder", {"max_epochs": 10})
    rng = np.random.default_rng(0)
    pred, target = (jnp.asarray(rng.random((2, 32, 32, 1)), jnp.float32) for _ in range(2))
    val = train.make_validation_loss("blobs_finder", cfg)
    fit = train.make_loss("blobs_finder", cfg)
    assert float(val(pred, target, 0)) == float(val(pred, target, 9))
    assert float(fit(pred, target, 0)) != pytest.approx(float(fit(pred, target, 9)))
    gru = train.parse_config("deep_gru", {})
    assert float(train.make_validation_loss("deep_gru", gru)(pred, target, 3)) == float(train.make_loss("deep_gru", gru)(pred, target, 3))


def test_phase_two_trains_on_upstream_predictions(dummy_dataset, tmp_path):
    common = ["--no-progress", "--data-dir", str(dummy_dataset), "--dataset", "almasim/test",
              "--set", "max_epochs=2", "--set", "batch_size=1"]  # fmt: skip
    for name in ("blobs_finder", "deep_gru"):
        train.main([name, "--workdir", str(tmp_path / name), *common, "--set", f"model={TINY_YAML[name]}"])
    metrics = train.cli_run(["deep_gru", "--workdir", str(tmp_path / "gru2"), *common, "--init-from", str(tmp_path / "deep_gru"),
                          "--upstream", f"blobs_finder={tmp_path / 'blobs_finder'}", "--set", f"model={TINY_YAML['deep_gru']}"])  # fmt: skip
    assert metrics["epochs"] == 2
    r = subprocess.run([sys.executable, "-m", "dfjax.train", "resnet_flux", "--workdir", str(tmp_path / "r2"), *common,
                        "--upstream", f"blobs_finder={tmp_path / 'blobs_finder'}", "--set", f"model={TINY_YAML['resnet_flux']}"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "needs deep_gru" in r.stderr and "Traceback" not in r.stderr


def test_cli_merges_params_sections_and_copies_the_report(tmp_path):
    """Phase 2's `--section train.X --section train.finetune`: later keys win, model keys merge."""
    params = tmp_path / "params.yaml"
    params.write_text(textwrap.dedent("""\
        train:
          deep_gru: {batch_size: 16, max_epochs: 3, model: {spectrum_length: 16, hidden_features: 4}}
          finetune: {max_epochs: 1, peak_lr: 5.0e-5}
        """))
    report = tmp_path / "report"
    metrics = train.cli_run(["deep_gru", "--workdir", str(tmp_path / "run"), "--synthetic", "--no-progress",
                          "--config", str(params), "--section", "train.deep_gru", "--section", "train.finetune",
                          "--report-dir", str(report)])  # fmt: skip
    assert metrics["epochs"] == 1 and metrics["steps"] == 4  # finetune's max_epochs, deep_gru's batch size
    saved = checkpoint.read_model_config(tmp_path / "run" / checkpoint.CHECKPOINT_SUBDIR)
    assert saved["overrides"] == {"spectrum_length": 16, "hidden_features": 4}
    assert saved["train"]["peak_lr"] == 5e-5
    assert json.loads((report / "metrics.json").read_text()) == metrics
    assert (report / "train_log.tsv").read_text().startswith("epoch\t")
    r = subprocess.run([sys.executable, "-m", "dfjax.train", "deep_gru", "--workdir", str(tmp_path / "x"),
                        "--synthetic", "--config", str(params), "--section", "train.resnet"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "no `train.resnet` section" in r.stderr and not (tmp_path / "x").exists()

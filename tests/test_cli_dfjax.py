"""One CLI for every entry point (:mod:`sim.cli`): --version, --quiet, --config FILE, --set KEY=VALUE and an
examples epilog everywhere; bad input is one line on stderr and exit status 2, before any model is loaded
and with nothing written; read-only checkpoints load without orbax's warning; the console scripts exist."""

from __future__ import annotations

import importlib
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from test_infer import FakeModels, brightest_pixel, noise_cube, write_cube

from dfjax import infer
from sim.cli import CliError

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {  # console script → (module, argv that shows the sub-command's help)
    "dfjax-sim": ("sim.__main__", ["generate"]), "dfjax-package": ("dfjax.datasets.almasim.__main__", []),
    "dfjax-train": ("dfjax.train", []), "dfjax-tune": ("dfjax.eval.tune", []),
    "dfjax-evaluate": ("dfjax.eval.evaluate", []), "dfjax-baselines": ("dfjax.eval.baselines", []),
    "dfjax-infer": ("dfjax.infer", []),
}  # fmt: skip


def _cli(module: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}  # this checkout, whatever the cwd
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess | str, *words: str) -> None:
    stderr = result if isinstance(result, str) else result.stderr
    if not isinstance(result, str):
        assert result.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr and ": error: " in lines[0], stderr
    assert all(w in lines[0] for w in words), stderr


def _main_exit(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``module.main(argv)`` in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        status = importlib.import_module(module).main(argv)
        raise SystemExit(status)
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err


# ---------------------------------------------------------------- the same flags everywhere


def test_console_scripts_name_each_entry_points_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(ENTRY_POINTS)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert (module, attr) == (ENTRY_POINTS[name][0], "main") and callable(getattr(importlib.import_module(module),
                                                                                         attr))  # fmt: skip


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_version_and_help_with_defaults_and_examples(script, capsys):
    module, sub = ENTRY_POINTS[script]
    status, out, _ = _main_exit(module, ["--version"], capsys)
    assert status == 0 and out.split()[-1] == importlib.metadata.version("dfjax")
    status, out, _ = _main_exit(module, [*sub, "--help"], capsys)
    assert status == 0 and "examples:\n  python -m " in out
    for flag in ("--config FILE", "--set KEY=VALUE", "--quiet"):
        assert flag in out, (script, flag)
    assert "--no-progress" not in out  # the old spelling still works, but is not advertised


def test_help_shows_real_defaults_and_quiet_has_one_alias():
    from sim.cli import add_quiet, make_parser

    parser = make_parser("p", "d", ["p --n 3"])
    parser.add_argument("--n", type=int, default=0, help="count")
    parser.add_argument("--name", help="a name")
    add_quiet(parser)
    text = parser.format_help()
    assert "count (default: 0)" in text and "a name\n" in text and "no progress bar\n" in text
    assert text.endswith("examples:\n  p --n 3\n")
    assert parser.parse_args(["--no-progress"]).quiet and parser.parse_args(["--quiet"]).quiet
    assert not parser.parse_args([]).quiet


@pytest.mark.parametrize("module, argv", [
    ("dfjax.train", ["resnet_pa", "--workdir", "{tmp}/run", "--config", "{tmp}/list.yaml"]),
    ("dfjax.eval.evaluate", ["--model-dir", "{tmp}/none", "--config", "{tmp}"]),
    ("dfjax.eval.baselines", ["--data-dir", "{tmp}", "--dataset", "x", "--out", "{tmp}/b.json", "--config", "{tmp}"]),
    ("dfjax.datasets.almasim.__main__", ["--sim-dir", "{tmp}", "--data-dir", "{tmp}/tfds", "--config", "{tmp}"]),
])  # fmt: skip
def test_bad_config_file_is_one_line_exit_2_everywhere(tmp_path, capsys, module, argv):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    before = sorted(tmp_path.iterdir())
    status, _, err = _main_exit(module, [a.format(tmp=tmp_path) for a in argv], capsys)
    assert status == 2
    assert_one_line_error(err, "--config")
    assert sorted(tmp_path.iterdir()) == before


def test_evaluate_checks_its_settings_before_loading_models(tmp_path, capsys):
    status, _, err = _main_exit("dfjax.eval.evaluate", ["--model-dir", str(tmp_path / "absent"),
                                                         "--set", "detect.nonsense=1"], capsys)  # fmt: skip
    assert status == 2
    assert_one_line_error(err, "pipeline.detect.nonsense: unknown key")


def test_tune_refuses_a_yaml_list_in_one_line(tmp_path, capsys):
    (tmp_path / "list.yaml").write_text("- pipeline\n- tune\n")
    out, metrics = tmp_path / "pipeline.yaml", tmp_path / "tune.json"
    r = _cli("dfjax.eval.tune", "--params", tmp_path / "list.yaml", "--out", out, "--metrics", metrics)  # dvc.yaml's
    assert_one_line_error(r, "list.yaml", "expected a mapping")
    status, _, err = _main_exit("dfjax.eval.tune", ["--config", str(tmp_path / "list.yaml"), "--out", str(out),
                                                     "--metrics", str(metrics)], capsys)  # fmt: skip
    assert status == 2
    assert_one_line_error(err, "list.yaml", "expected a mapping")
    assert not out.exists() and not metrics.exists()


def test_package_builder_config_from_yaml_set_and_the_old_name(tmp_path):
    from dfjax.datasets.almasim.__main__ import builder_config

    names = ("default", "paper", "test")
    (tmp_path / "params.yaml").write_text("data: {n_cubes: 3, builder_config: test}\n")
    assert builder_config(tmp_path / "params.yaml", [], names) == "test"
    assert builder_config(tmp_path / "params.yaml", ["data.builder_config=paper"], names) == "paper"
    assert builder_config(Path("paper"), [], names) == "paper"  # the older --config NAME
    assert builder_config(None, [], names) is None
    with pytest.raises(CliError, match="n_cubes: unknown key"):
        builder_config(None, ["n_cubes=3"], names)
    with pytest.raises(CliError, match="'huge' is not one of"):
        builder_config(None, ["builder_config=huge"], names)


# ---------------------------------------------------------------- dfjax.infer


def _saved_configs_only(model_dir: Path, *, image_size: int = 32, spectrum_length: int = 16) -> Path:
    """Six model directories holding only ``model.json``: sizes can be read, no model can be loaded."""
    from dfjax.checkpoint import write_model_config

    overrides = {"blobs_finder": {"image_size": image_size}, "deep_gru": {"spectrum_length": spectrum_length}}
    for name in ("blobs_finder", "deep_gru", "resnet_fwhm_x", "resnet_fwhm_y", "resnet_pa", "resnet_flux"):
        write_model_config(model_dir / name, {"model": name, "overrides": overrides.get(name, {})})
    return model_dir


def test_too_few_channels_is_refused_before_any_model_loads(tmp_path):
    models = _saved_configs_only(tmp_path / "models")
    short = write_cube(tmp_path / "short.fits", noise_cube(7, 20, 20))
    assert_one_line_error(_cli("dfjax.infer", short, cwd=tmp_path), "short.fits", "7 channels, fewer than the 8")
    # with enough channels the run gets as far as loading, which these model directories cannot do
    enough = write_cube(tmp_path / "enough.fits", noise_cube(8, 20, 20))
    assert_one_line_error(_cli("dfjax.infer", enough, cwd=tmp_path), f"model directory {models.name}")
    assert not list(tmp_path.glob("*.cat.*"))


def test_set_applies_over_the_tuned_settings(tmp_path):
    from dfjax.pipeline import PipelineConfig

    (tmp_path / infer.PIPELINE_CONFIG).write_text("pipeline:\n  detect: {threshold: 0.3}\n"
                                                  "  characterise: {min_line_snr: 5.0}\n")  # fmt: skip
    config = infer.pipeline_config(tmp_path, sets=["characterise.min_line_snr=7"])
    assert (config.characterise.min_line_snr, config.detect.threshold) == (7.0, 0.3)
    config = infer.pipeline_config(tmp_path, sets=["pipeline.detect.threshold=0.2"])
    assert (config.characterise.min_line_snr, config.detect.threshold) == (5.0, 0.2)
    (tmp_path / "other.yaml").write_text("pipeline:\n  detect: {min_area_px: 3}\n")  # replaces the tuned file
    config = infer.pipeline_config(tmp_path, tmp_path / "other.yaml", ["detect.threshold=0.4"])
    default = PipelineConfig().characterise.min_line_snr  # the tuned 5.0 is not used with --config
    assert (config.detect.min_area_px, config.detect.threshold, config.characterise.min_line_snr) == (3, 0.4, default)


def test_bad_settings_are_one_line_errors_and_write_nothing(tmp_path, capsys, monkeypatch):
    _saved_configs_only(tmp_path / "models")
    cube = write_cube(tmp_path / "c.fits", noise_cube(16, 20, 20))
    before = sorted(tmp_path.iterdir())
    assert_one_line_error(_cli("dfjax.infer", cube, "--set", "characterise.nonsense=7", cwd=tmp_path),
                          "pipeline.characterise.nonsense: unknown key")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    for argv, words in [(["--config", str(tmp_path)], "is a directory"), (["--set", "x"], "expected KEY=VALUE"),
                        (["--set", "detect.threshold=[0"], "not valid YAML")]:  # fmt: skip
        status, _, err = _main_exit("dfjax.infer", [str(cube), *argv], capsys)
        assert status == 2
        assert_one_line_error(err, words)
    assert sorted(tmp_path.iterdir()) == before


def test_one_large_cube_shows_a_windows_bar_unless_quiet(tmp_path, capsys):
    cube = write_cube(tmp_path / "long.fits", noise_cube(60, 70, 70))  # 5 x 3 x 3 windows of 16 x 32 x 32
    (tmp_path / "m").mkdir()
    run = dict(model_dir=tmp_path / "m", loader=lambda d: FakeModels(), runner=brightest_pixel)
    infer.infer_files([cube], progress=True, **run)
    assert "windows" in capsys.readouterr().err
    infer.infer_files([cube], progress=False, **run)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- checkpoints


def test_read_only_checkpoint_loads_without_orbax_warning(tmp_path):
    import optax
    from flax import nnx

    from dfjax import checkpoint, models

    overrides = {"spectrum_length": 16, "hidden_features": 4}
    model = models.create("deep_gru", rngs=nnx.Rngs(0), **overrides)
    checkpoint.write_model_config(tmp_path / "gru", {"model": "deep_gru", "overrides": overrides})
    with checkpoint.Checkpointer(tmp_path / "gru") as ckpt:
        ckpt.save(1, model=model, optimizer=nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param),
                  meta={"epoch": 0}, val_loss=1.0)  # fmt: skip
    paths = [tmp_path / "gru", *(tmp_path / "gru").rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    try:
        for p in paths:  # as DVC links them
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        script = ("import json, sys; from dfjax.checkpoint import load_model, saved_arguments; "
                  f"m, c = load_model({str(tmp_path / 'gru')!r}); "
                  f"print(json.dumps([c['step'], saved_arguments({str(tmp_path / 'gru')!r})['spectrum_length']]))")
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [1, 16]
    assert "read only" not in r.stderr and "WARNING:absl" not in r.stderr, r.stderr


def test_saved_arguments_include_the_constructors_defaults(tmp_path):
    from dfjax import checkpoint

    for name, overrides, attribute in [("deep_gru", {}, "spectrum_length"), ("blobs_finder", {}, "image_size"),
                                       ("blobs_finder", {"image_size": 64}, "image_size")]:  # fmt: skip
        checkpoint.write_model_config(tmp_path / name, {"model": name, "overrides": overrides})
        built = checkpoint.abstract_model(name, overrides)  # shapes only: no memory, no compute
        assert checkpoint.saved_arguments(tmp_path / name)[attribute] == getattr(built, attribute), name


def test_evaluate_names_a_missing_psf_before_loading_models(tmp_path, capsys):
    status, _, err = _main_exit("dfjax.eval.evaluate", ["--model-dir", str(tmp_path / "absent"),
                                                         "--psf", str(tmp_path / "none.fits")], capsys)  # fmt: skip
    assert status == 2
    assert_one_line_error(err, "--psf", "none.fits", "no such file")

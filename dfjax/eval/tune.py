"""Tune the pipeline's thresholds on the validation split: ``python -m dfjax.eval.tune``.

A small grid (``tune.grid`` in params.yaml: dotted ``pipeline`` keys → candidate values) is
searched around the ``pipeline:`` section; every combination catalogues the validation cubes
with the trained models and is scored by F1 under the paper's criterion. The best combination
is written to ``models/pipeline.yaml``, which ``dfjax.infer`` and the evaluate stage then use —
the test split is never looked at. Ties go to the earlier combination, so list the paper's
values first.

Run (as ``dvc repro`` does; ``--params`` is the older spelling of ``--config``)::

    python -m dfjax.eval.tune --params params.yaml --sim-dir data/sim --data-dir data/tfds \\
        --dataset almasim/default --model-dir models --out models/pipeline.yaml --metrics metrics/tune.json

``--set KEY=VALUE`` overrides the file: ``tune.split=...``/``tune.grid...`` keys the ``tune:``
section, any other key (``pipeline.`` optional) the base pipeline settings.
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dfjax.catalogue_io import write_atomic
from dfjax.eval.evaluate import EvalError, predict_split, summarise, write_json
from sim.cli import CliError, add_config, add_quiet, apply_sets, fail, make_parser, parse_sets, read_yaml, section

__all__ = ["grid_points", "tune"]


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """All combinations of a {dotted key: values} grid, in order (the first value of each first)."""
    keys = list(grid)
    for key in keys:
        if isinstance(grid[key], (str, bytes)) or not isinstance(grid[key], Sequence) or not grid[key]:
            raise EvalError(f"tune.grid.{key}: expected a non-empty list of values")
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def tune(sim_dir: str | os.PathLike, data_dir: str | os.PathLike, dataset: str, model_dir: str | os.PathLike,
         base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], *, split: str = "validation",
         progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Search ``grid`` around the ``base`` pipeline mapping; returns the best config and every score."""
    from dfjax.pipeline import ConfigError, PipelineConfig
    from dfjax.pipeline.models import Models

    points = grid_points(grid) or [{}]
    try:  # every setting checked before the models are loaded
        base_config = PipelineConfig.from_dict(dict(base))
        configs = [base_config.replace(**point) for point in points]
    except ConfigError as exc:
        raise EvalError(str(exc)) from None
    models = Models.load(model_dir)
    trials, best = [], None
    for i, (point, config) in enumerate(zip(points, configs)):
        results = predict_split(sim_dir, data_dir, dataset, split, models, config, progress=progress,
                                desc=f"tune {i + 1}/{len(configs)}")  # fmt: skip
        detection, _ = summarise(results)
        trial = {"params": point, **{k: detection[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn")}}
        trials.append(trial)
        if best is None or trial["f1"] > best[0]["f1"]:
            best = (trial, config)
    assert best is not None
    return {"best": best[0], "config": best[1].to_dict(), "trials": trials, "split": split}


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, tune, write the tuned settings and the trials; bad input: one line, exit 2."""
    parser = make_parser("python -m dfjax.eval.tune", __doc__.splitlines()[0], [
        "python -m dfjax.eval.tune --config params.yaml --model-dir models --out models/pipeline.yaml",
        "python -m dfjax.eval.tune --config params.yaml --set tune.split=train --set detect.threshold=0.2",
        "python -m dfjax.eval.tune --config experiments/paper.yaml --quiet"])  # fmt: skip
    add_config(parser, "`pipeline:` (the base) and `tune: {grid: {...}, split: ...}`", example="tune.split=train")
    parser.set_defaults(config=Path("params.yaml"))
    parser.add_argument("--params", dest="config", type=Path, help=argparse.SUPPRESS)  # the older name
    parser.add_argument("--sim-dir", type=Path, default=Path("data/sim"), help="the simulator's cubes (FITS)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/tfds"), help="TFDS data directory")
    parser.add_argument("--dataset", default="almasim/default", help="TFDS dataset name/config")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="the six trained models")
    parser.add_argument("--out", type=Path, default=Path("models/pipeline.yaml"), help="tuned settings to write")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/tune.json"), help="every trial's scores")
    add_quiet(parser)
    args = parser.parse_args(argv)
    try:
        content = read_yaml(args.config)
        pipeline, settings = section(content, "pipeline", path=args.config), section(content, "tune", path=args.config)
        for key, value in parse_sets(args.sets):
            if key.startswith("tune."):
                settings = apply_sets(settings, [(key.removeprefix("tune."), value)])
            else:
                pipeline = apply_sets(pipeline, [(key.removeprefix("pipeline."), value)])
        unknown = set(settings) - {"grid", "split"}
        if unknown:
            raise EvalError(f"tune.{sorted(unknown)[0]}: unknown key (known: grid, split)")
        grid = settings.get("grid") or {}
        if not isinstance(grid, dict):
            raise EvalError(f"tune.grid: expected a mapping of dotted pipeline keys to lists, got {grid!r}")
        result = tune(args.sim_dir, args.data_dir, args.dataset, args.model_dir, pipeline, grid,
                      split=settings.get("split", "validation"), progress=not args.quiet)  # fmt: skip
    except (CliError, EvalError, FileNotFoundError, KeyError, ValueError) as exc:
        fail(parser.prog, exc)
    text = ("# Pipeline thresholds tuned on the validation split by `python -m dfjax.eval.tune`;\n"
            "# dfjax.infer uses them with the models in this directory.\n"
            + yaml.safe_dump({"pipeline": result["config"]}, sort_keys=False))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, text.encode())
    write_json(args.metrics, {"best": result["best"], "split": result["split"], "trials": result["trials"]})
    b = result["best"]
    print(f"best on {result['split']}: {b['params']} precision {b['precision']:.3f} recall {b['recall']:.3f} "
          f"F1 {b['f1']:.3f}")


if __name__ == "__main__":
    main()

"""Evaluate the trained pipeline on a split of the dataset: ``python -m dfjax.eval.evaluate``.

Every cube of the split is read from the simulator's FITS file and catalogued by
:func:`dfjax.infer.infer_cube` — the code a user runs — then matched to the truth with the
paper's criterion (:mod:`dfjax.eval.matching`). Writes ``detection.json`` (Table 4) and
``characterisation.json`` (Table 5) into ``--metrics-dir``, the figures and their data into
``--plots-dir`` (:mod:`dfjax.eval.plots`) and a short Markdown report (``--report``) that also
quotes the baselines of ``--baselines`` when given.

Run (as ``dvc repro`` does)::

    python -m dfjax.eval.evaluate --sim-dir data/sim --data-dir data/tfds --dataset almasim/default \\
        --model-dir models --metrics-dir metrics --plots-dir plots --report reports/evaluation.md \\
        --baselines metrics/baselines.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dfjax.catalogue_io import write_atomic
from dfjax.eval import data as eval_data
from dfjax.eval import metrics as M
from dfjax.eval.matching import MatchCriteria, Matching, match
from sim.cli import add_config, add_quiet, fail, make_parser

__all__ = ["CubeResult", "EvalError", "evaluate", "predict_split", "summarise", "write_json"]  # fmt: skip

PREDICTED_COLUMNS: tuple[str, ...] = ("x", "y", "z", "fwhm_x", "fwhm_y", "pa", "fwhm_z", "line_flux", "snr",
                                      "x0", "y0", "x1", "y1", "z0", "z1", "line_flux_measured")  # fmt: skip
OPTIONAL_COLUMNS: tuple[str, ...] = ("line_flux_fit",)  # NaN where the catalogue has none (no scene fit)


class EvalError(ValueError):
    """Evaluation cannot run on these inputs; the one-line message names the problem."""


@dataclasses.dataclass(frozen=True)
class CubeResult:
    """One cube's prediction, truth and matchings (full and 2-D criteria)."""

    cube_index: int
    predicted: dict[str, np.ndarray]  # PREDICTED_COLUMNS, pixel/channel units, line_flux Jy km/s
    truth: dict[str, np.ndarray]  # records.CATALOGUE_FIELDS columns
    matching: Matching
    matching_2d: Matching
    seconds: float


def _predicted_columns(table: Any) -> dict[str, np.ndarray]:
    columns = {name: np.asarray(getattr(table[name], "value", table[name]), np.float64) for name in PREDICTED_COLUMNS}
    return columns | {name: (np.asarray(getattr(table[name], "value", table[name]), np.float64) if name in table.colnames
                             else np.full(len(table), np.nan)) for name in OPTIONAL_COLUMNS}  # fmt: skip


def _boxes(columns: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([columns[k] for k in eval_data.BOX_COLUMNS], axis=1) if len(columns["x0"]) else np.zeros((0, 6))


def predict_split(sim_dir: str | os.PathLike, data_dir: str | os.PathLike, dataset: str, split: str, models: Any,
                  config: Any, *, criteria: MatchCriteria = MatchCriteria(), limit: int | None = None,
                  progress: bool = True, desc: str | None = None,
                  psf: str | os.PathLike | None = None, pb: str | os.PathLike | None = None
                  ) -> list[CubeResult]:  # fmt: skip
    """Catalogue every cube of ``split`` with the pipeline and match it to the truth; ``psf`` and
    ``pb``: the set-up's dirty beam and primary beam (``python -m sim psf``), given for every cube as
    a user gives ``--psf`` (the scene fit, ``scene.with_psf``) and ``--pb`` (fluxes PB-corrected)."""
    from dfjax.infer import infer_cube

    results = []
    cubes = eval_data.iter_split(data_dir, dataset, split, limit=limit)
    n = eval_data.split_size(data_dir, dataset, split) if limit is None else limit
    for item in tqdm(cubes, total=n, desc=desc or f"evaluate {split}", unit="cube", disable=not progress):
        path = Path(sim_dir) / f"cube_{item.cube_index:05d}.fits"
        if not path.is_file():
            raise EvalError(f"{path}: missing; --sim-dir must be the directory the dataset was packaged from")
        t0 = time.perf_counter()
        table = infer_cube(path, models, config, psf_file=psf, pb_file=pb)
        seconds = time.perf_counter() - t0
        predicted = _predicted_columns(table)
        truth_boxes = eval_data.truth_boxes(item.catalogue)
        results.append(CubeResult(
            cube_index=item.cube_index, predicted=predicted, truth=eval_data.truth_columns(item.catalogue),
            matching=match(_boxes(predicted), truth_boxes, criteria),
            matching_2d=match(_boxes(predicted), truth_boxes, dataclasses.replace(criteria, spectral=False)),
            seconds=seconds))  # fmt: skip
    return results


def _pairs(results: Sequence[CubeResult]) -> list[tuple[dict, dict]]:
    """Per cube (truth, predicted) columns of the matched pairs, keyed by metrics.PARAMETERS."""
    out = []
    for r in results:
        p, t = r.matching.pairs[:, 0], r.matching.pairs[:, 1]
        truth = {name: r.truth[name][t] for name in M.PARAMETERS if name != "flux"} | {"flux": r.truth["line_flux"][t]}
        pred = {name: r.predicted[name][p] for name in M.PARAMETERS if name != "flux"}
        pred["flux"] = r.predicted["line_flux"][p]
        pred |= {name: r.predicted[column][p] for name, column in M.FLUX_ESTIMATES.items() if column in r.predicted}
        out.append((truth, pred))
    return out


def summarise(results: Sequence[CubeResult]) -> tuple[dict, dict]:
    """(detection, characterisation) metrics of a set of cube results."""
    snr = [r.truth["peak_snr"] for r in results]
    detection = M.detection_metrics([r.matching for r in results], snr)
    detection["criteria_2d_only"] = {k: v for k, v in M.detection_metrics([r.matching_2d for r in results], snr).items()
                                     if k != "recall_by_snr"}  # fmt: skip
    detection["cubes"] = len(results)
    detection["seconds_per_cube"] = float(np.mean([r.seconds for r in results])) if results else 0.0
    characterisation = M.characterisation_metrics(M.paired_values(_pairs(results)))
    return detection, characterisation


def write_json(path: str | os.PathLike, content: Any) -> None:
    """JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(content, indent=2) + "\n").encode())


def evaluate(sim_dir: str | os.PathLike, data_dir: str | os.PathLike, dataset: str, model_dir: str | os.PathLike, *,
             split: str = "test", metrics_dir: str | os.PathLike = "metrics", plots_dir: str | os.PathLike = "plots",
             report: str | os.PathLike | None = None, baselines: str | os.PathLike | None = None,
             progress: bool = True, config: Any = None, compare: Mapping[str, str | os.PathLike] | None = None,
             psf: str | os.PathLike | None = None, pb: str | os.PathLike | None = None) -> dict:  # fmt: skip
    """Run the pipeline with ``model_dir``'s models and ``config`` (default: its tuned one) over ``split``,
    each cube seen through ``psf`` and corrected for ``pb`` when given (:func:`predict_split`).

    ``compare``: name → a metrics directory of another run of this command (e.g. the paper's
    pipeline, ``PipelineConfig()`` defaults) whose figures the report shows beside these.
    """
    compared = {name: _read_metrics(Path(d)) for name, d in (compare or {}).items()}
    from dfjax.eval import plots
    from dfjax.pipeline.models import Models

    from dfjax.infer import InferError, pipeline_config

    try:
        config = pipeline_config(model_dir) if config is None else config
    except InferError as exc:
        raise EvalError(str(exc)) from None
    for flag, path in (("--psf", psf), ("--pb", pb)):
        if path is not None and not Path(path).is_file():
            raise EvalError(f"{flag} {path}: no such file (python -m sim psf --config params.yaml --out PSF --pb PB)")
    models = Models.load(model_dir)
    results = predict_split(sim_dir, data_dir, dataset, split, models, config, progress=progress, psf=psf, pb=pb)
    detection, characterisation = summarise(results)
    detection["split"] = split
    write_json(Path(metrics_dir) / "detection.json", detection)
    write_json(Path(metrics_dir) / "characterisation.json", characterisation)
    figures = plots.write_all(results, detection, M.paired_values(_pairs(results)), plots_dir)
    if report is not None:
        table = json.loads(Path(baselines).read_text()) if baselines and Path(baselines).is_file() else None
        from dfjax.eval.report import write_report

        write_report(report, detection, characterisation, figures, baselines=table, compared=compared)
    return {"detection": detection, "characterisation": characterisation}


def _read_metrics(directory: Path) -> tuple[dict, dict]:
    """(detection, characterisation) JSON of an earlier run's ``--metrics-dir``; EvalError if missing."""
    try:
        detection, characterisation = (json.loads((directory / f"{name}.json").read_text())
                                       for name in ("detection", "characterisation"))  # fmt: skip
    except (OSError, ValueError) as exc:
        raise EvalError(f"--compare {directory}: no readable detection/characterisation JSON ({exc})") from None
    return detection, characterisation


def _compare_pairs(items: Sequence[str]) -> dict[str, Path]:
    pairs = {}
    for item in items:
        name, sep, directory = item.rpartition("=")
        if not sep or not name.strip() or not directory.strip():
            raise EvalError(f"--compare {item!r}: expected NAME=METRICS_DIR")
        pairs[name.strip()] = Path(directory.strip())
    return pairs


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and call :func:`evaluate`; bad input: one line on stderr, exit 2."""
    from dfjax.infer import PIPELINE_CONFIG, InferError, pipeline_config

    parser = make_parser("python -m dfjax.eval.evaluate", __doc__.splitlines()[0], [
        "python -m dfjax.eval.evaluate --model-dir models --split test --report reports/evaluation.md",
        "python -m dfjax.eval.evaluate --split validation --set characterise.min_line_snr=7 --quiet"])  # fmt: skip
    parser.add_argument("--sim-dir", type=Path, default=Path("data/sim"), help="the simulator's cubes (FITS)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/tfds"), help="TFDS data directory")
    parser.add_argument("--dataset", default="almasim/default", help="TFDS dataset name/config")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="the six trained models")
    parser.add_argument("--split", default="test", help="dataset split to evaluate on")
    parser.add_argument("--metrics-dir", type=Path, default=Path("metrics"), help="detection/characterisation JSON")
    parser.add_argument("--plots-dir", type=Path, default=Path("plots"), help="figures and their data")
    parser.add_argument("--report", type=Path, default=None, help="also write this Markdown report")
    parser.add_argument("--baselines", type=Path, default=None, help="metrics/baselines.json, quoted in the report")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=METRICS_DIR",
                        help="another run's --metrics-dir, shown beside this one in the report (repeatable)")
    parser.add_argument("--psf", type=Path, default=None, metavar="PSF.fits",
                        help="the set-up's dirty beam (python -m sim psf): every cube goes through the scene fit "
                             "with it, as a user's cube with --psf does")
    parser.add_argument("--pb", type=Path, default=None, metavar="PB.fits",
                        help="the set-up's primary beam (python -m sim psf --pb): every cube's measured fluxes are "
                             "divided by it, as a user's cube with --pb")
    add_config(parser, f"its `pipeline:` section replaces MODEL_DIR/{PIPELINE_CONFIG} (the tuned settings)",
               example="characterise.min_line_snr=7")
    add_quiet(parser)
    args = parser.parse_args(argv)
    try:
        compare = _compare_pairs(args.compare)
        config = pipeline_config(args.model_dir, args.config, args.sets)
        result = evaluate(args.sim_dir, args.data_dir, args.dataset, args.model_dir, split=args.split,
                          metrics_dir=args.metrics_dir, plots_dir=args.plots_dir, report=args.report,
                          baselines=args.baselines, progress=not args.quiet, config=config,
                          compare=compare, psf=args.psf, pb=args.pb)  # fmt: skip
    except (InferError, EvalError, FileNotFoundError, KeyError, ValueError) as exc:
        fail(parser.prog, exc)
    d = result["detection"]
    print(f"{args.split}: precision {d['precision']:.3f} recall {d['recall']:.3f} F1 {d['f1']:.3f} "
          f"(TP {d['tp']}, FP {d['fp']}, FN {d['fn']}), mean IoU {d['mean_iou']:.3f}")


if __name__ == "__main__":
    main()

"""Score the pipeline (and SoFiA-2 beside it) on a directory of simulated cubes, e.g. CASA-observed ones.

    python -m dfjax.eval.cubes --cubes data/casa/dirty_paper --metrics metrics/casa_dirty_paper.json \\
        [--sofia /tmp/sofia2/sofia] [--set scene.enabled=true]

``--cubes`` holds ``cube_NNNNN.fits`` and the ``catalogue.csv`` of ``python -m sim generate``
(any backend, any size). Each cube is catalogued as ``dfjax.infer`` does (``psf.fits`` of the
directory, when there, is given to every cube, so the scene fit runs through it, ``scene.with_psf``;
``--no-psf`` leaves it out; its ``pb.fits``, the primary beam, too, so a PB-corrected cube is run
with flat noise, :mod:`dfjax.response`; ``--no-pb`` leaves it out) and
matched to the truth two ways: the paper's (:mod:`dfjax.eval.matching`, box IoU ≥ 0.6, centres
< 3 px, emission ranges' IoU ≥ 0.6) and by centre (< 3 px, line centre within max(2, FWHM_z/2)
channels; :func:`~dfjax.eval.matching.match_centres`). The metrics, recall by peak SNR included,
go to one JSON; SoFiA-2's, run on the same files, beside them. Positions carry their robust std
(MAD) beside the std and, where the catalogue has ``err_x``/``err_y`` (the scene fit's), the
median error and the pulls' std: near 1, the scatter is the noise's, not the method's. These
cubes are never used for training or tuning.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table
from tqdm import tqdm

from dfjax.eval import metrics as M
from dfjax.eval.evaluate import write_json
from dfjax.eval.matching import MatchCriteria, match, match_centres
from dfjax.maths import robust_std
from sim.cli import add_config, add_quiet, fail, make_parser

__all__ = ["score", "sofia_sources", "truth_of"]

BOX = ("x0", "y0", "x1", "y1", "z0", "z1")
SOFIA_PARAMETERS = """\
input.data = {cube}
contsub.enable = true
contsub.order = 1
scfind.kernelsXY = 0, 3, 6
scfind.kernelsZ = 0, 3, 7, 15
scfind.threshold = {threshold}
scfind.statistic = mad
linker.radiusXY = 2
linker.radiusZ = 2
linker.minSizeXY = 5
linker.minSizeZ = 2
reliability.enable = true
reliability.threshold = 0.9
reliability.plot = false
output.directory = {out}
output.filename = {name}
output.writeCatASCII = true
output.writeCatXML = false
output.overwrite = true
pipeline.threads = {threads}
"""


def truth_of(catalogue: Table, cube_index: int) -> dict[str, np.ndarray]:
    """The truth rows of one cube: {column: (S,) values}."""
    rows = catalogue[catalogue["cube"] == cube_index]
    return {name: np.asarray(rows[name], np.float64) for name in rows.colnames if name not in ("ra", "dec")}


def sofia_sources(sofia: Path, cube: Path, work: Path, *, threshold: float = 5.0,
                  reliability: bool = True) -> dict[str, np.ndarray]:  # fmt: skip
    """SoFiA-2's catalogue of ``cube``: x, y, z (0-based) and boxes (x0 … z1, half-open); ``reliability``
    False turns its reliability filter off (it stops on a cube with too few negative detections)."""
    par = work / f"{cube.stem}.par"
    parameters = SOFIA_PARAMETERS if reliability else SOFIA_PARAMETERS.replace("reliability.enable = true",
                                                                               "reliability.enable = false")
    par.write_text(parameters.format(cube=cube, out=work, name=cube.stem, threshold=threshold,
                                           threads=os.cpu_count() or 1))  # fmt: skip
    subprocess.run([str(sofia), str(par)], check=True, capture_output=True)
    path = work / f"{cube.stem}_cat.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    header = next((line[1:].split() for line in lines if line.startswith("#") and " x_min " in line), None)
    rows = [shlex.split(line) for line in lines if line.strip() and not line.startswith("#")]  # names are quoted
    if header is None or not rows:
        return {name: np.zeros(0) for name in ("x", "y", "z", *BOX)}
    col = {name: np.array([float(r[header.index(name)]) for r in rows]) for name in header if name != "name"}
    return {"x": col["x"], "y": col["y"], "z": col["z"], "x0": col["x_min"], "x1": col["x_max"] + 1,
            "y0": col["y_min"], "y1": col["y_max"] + 1, "z0": col["z_min"], "z1": col["z_max"] + 1}


def _scores(predicted: Sequence[dict], truth: Sequence[dict]) -> dict:
    """Detection metrics both ways, and the centre-matched pairs' position, size and flux figures."""
    boxes = [match(np.stack([p[k] for k in BOX], 1) if len(p["x"]) else np.zeros((0, 6)),
                   np.stack([t[k] for k in BOX], 1), MatchCriteria()) for p, t in zip(predicted, truth)]  # fmt: skip
    centres = [match_centres(np.stack([p["x"], p["y"], p["z"]], 1) if len(p["x"]) else np.zeros((0, 3)),
                             np.stack([t["x"], t["y"], t["z"], t["fwhm_z"]], 1)) for p, t in zip(predicted, truth)]
    snr = [t["peak_snr"] for t in truth]
    out = {"paper_matching": M.detection_metrics(boxes, snr), "centre_matching": M.detection_metrics(centres, snr)}
    out["paper_matching"].pop("mean_iou", None)
    pairs = [(t, p, m.pairs) for t, p, m in zip(truth, predicted, centres)]
    res = {}
    shapes = all(name in p for _, p, _ in pairs for name in ("fwhm_x", "fwhm_y", "pa"))
    residuals = {name: [] for name in ("x", "y", *(("fwhm_x", "fwhm_y") if shapes else ()))}
    errors = {name: [] for name in ("x", "y") if all("err_" + name in p for _, p, _ in pairs)}
    for t, p, k in pairs:
        i, j = k[:, 0], k[:, 1]
        values = {"x": p["x"][i], "y": p["y"][i]}
        if shapes:  # the ellipse, not its labelling (as the test split's Table 5)
            values["fwhm_x"], values["fwhm_y"], _ = M.aligned_shapes(t["fwhm_x"][j], t["fwhm_y"][j], p["fwhm_x"][i],
                                                                     p["fwhm_y"][i], p["pa"][i])  # fmt: skip
        for name, value in values.items():
            residuals[name].append(value - t[name][j])
        for name in errors:
            errors[name].append(p["err_" + name][i])
    for name, parts in residuals.items():
        r = np.concatenate(parts) if parts else np.zeros(0)
        res[name] = {"bias": float(np.mean(r)) if len(r) else None, "std": float(np.std(r)) if len(r) else None}
        if len(r) > 1:  # the scatter without its outliers: a std far above it is a few sources, not all
            res[name]["robust_std"] = float(robust_std(r))
        if name in errors and len(r):  # the fit's own errors: a pull std near 1 is a noise-limited scatter
            err = np.concatenate(errors[name])
            ok = np.isfinite(err) & (err > 0)
            if ok.any():
                res[name] |= {"median_err": float(np.median(err[ok])), "pull_std": float(np.std(r[ok] / err[ok]))}
    for name in ("line_flux", "line_flux_measured", "line_flux_fit"):
        if all(name in p for _, p, _ in pairs):
            ratio = np.concatenate([p[name][k[:, 0]] / t["line_flux"][k[:, 1]] for t, p, k in pairs])
            ratio = ratio[np.isfinite(ratio)]
            if len(ratio):
                res[name] = {"median_ratio": float(np.median(ratio)),
                             "within_10pct": float(np.mean(np.abs(ratio - 1) <= 0.1))}  # fmt: skip
    out["centre_matched"] = res
    return out


def score(cube_dir: Path, models: Any, config: Any, *, sofia: Path | None = None, psf: bool = True,
          pb: bool = True, progress: bool = True) -> dict:  # fmt: skip
    """The module docstring's figures for every cube of ``cube_dir``."""
    from dfjax.infer import infer_cube

    catalogue = Table.read(cube_dir / "catalogue.csv")
    cubes = sorted(cube_dir.glob("cube_*.fits"))
    if not cubes:
        raise ValueError(f"{cube_dir}: no cube_*.fits")
    psf_file = cube_dir / "psf.fits" if psf and (cube_dir / "psf.fits").is_file() else None
    pb_file = cube_dir / "pb.fits" if pb and (cube_dir / "pb.fits").is_file() else None
    ours, theirs, truth, seconds, sofia_seconds = [], [], [], [], []
    with tempfile.TemporaryDirectory() as work:
        for path in tqdm(cubes, desc="score", unit="cube", disable=not progress, file=sys.stderr):
            index = int(path.stem.split("_")[1])
            truth.append(truth_of(catalogue, index))
            t0 = time.perf_counter()
            table = infer_cube(path, models, config, psf_file=psf_file, pb_file=pb_file)
            seconds.append(time.perf_counter() - t0)
            ours.append({name: np.asarray(getattr(table[name], "value", table[name]), np.float64)
                         for name in table.colnames if name not in ("flags", "ra", "dec")})  # fmt: skip
            if sofia is not None:
                t0 = time.perf_counter()
                theirs.append(sofia_sources(sofia, path.resolve(), Path(work)))
                sofia_seconds.append(time.perf_counter() - t0)
    out = {"cubes": len(cubes), "dfjax": _scores(ours, truth) | {"seconds_per_cube": float(np.mean(seconds))}}
    if sofia is not None:
        out["sofia2"] = _scores(theirs, truth) | {"seconds_per_cube": float(np.mean(sofia_seconds))}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, score, write the JSON; errors → one line, exit 2."""
    parser = make_parser("python -m dfjax.eval.cubes", __doc__.splitlines()[0], [
        "python -m dfjax.eval.cubes --cubes data/casa/dirty_paper --metrics metrics/casa_dirty_paper.json",
        "python -m dfjax.eval.cubes --cubes DIR --metrics m.json --sofia /tmp/sofia2/sofia --set scene.enabled=true"])
    parser.add_argument("--cubes", type=Path, required=True, help="cube_*.fits and catalogue.csv of `sim generate`")
    parser.add_argument("--metrics", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="the six trained models")
    parser.add_argument("--sofia", type=Path, default=None, help="a SoFiA-2 binary to score beside (build_sofia2.sh)")
    parser.add_argument("--no-psf", action="store_true", help="ignore the directory's psf.fits: beam from the noise")
    parser.add_argument("--no-pb", action="store_true",
                        help="ignore the directory's pb.fits: a PB-corrected cube's response from its noise")
    add_config(parser, "its `pipeline:` section replaces MODEL_DIR/pipeline.yaml", example="scene.enabled=true")
    add_quiet(parser)
    args = parser.parse_args(argv)
    from dfjax.infer import InferError, pipeline_config

    try:
        if not (args.cubes / "catalogue.csv").is_file():
            raise ValueError(f"{args.cubes}: no catalogue.csv (a directory of `python -m sim generate`)")
        if args.sofia is not None and not os.access(args.sofia, os.X_OK):
            raise ValueError(f"--sofia {args.sofia}: not an executable")
        config = pipeline_config(args.model_dir, args.config, args.sets)
        from dfjax.pipeline.models import Models

        models = Models.load(args.model_dir)
        result = score(args.cubes, models, config, sofia=args.sofia, psf=not args.no_psf, pb=not args.no_pb,
                       progress=not args.quiet)
    except (ValueError, InferError, OSError) as exc:
        fail(parser.prog, exc)
    write_json(args.metrics, result)
    d = result["dfjax"]["centre_matching"]
    print(f"dfjax: precision {d['precision']:.3f} recall {d['recall']:.3f} F1 {d['f1']:.3f} (centre matching), "
          f"{result['dfjax']['seconds_per_cube']:.1f} s per cube")  # fmt: skip
    if "sofia2" in result:
        s = result["sofia2"]["centre_matching"]
        print(f"SoFiA-2: precision {s['precision']:.3f} recall {s['recall']:.3f} F1 {s['f1']:.3f}")


if __name__ == "__main__":
    main()

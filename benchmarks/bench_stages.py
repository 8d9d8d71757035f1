"""Where a cube's time goes: the tuned pipeline's stages timed one by one, in one process.

    python benchmarks/bench_stages.py                               # 4 paper-size cubes, thermal noise
    python benchmarks/bench_stages.py --noise paper --psf           # the paper's noise, each cube with its PSF
    python benchmarks/bench_stages.py --cubes 2 --size 128          # quicker

What ``python -m dfjax.infer`` runs on each cube (``infer_cube``: read, the pipeline, the catalogue),
with the trained models of ``--model-dir`` and their tuned ``pipeline.yaml``, on cubes simulated as
``bench_infer.py`` makes them, XLA's compiled programs cached as ``dfjax.infer`` keeps them. Each
function :func:`dfjax.pipeline.run.run_pipeline` calls for a stage, and inside the scene stage
(:mod:`dfjax.pipeline.joint`) the line search, the continuum, the noise and the joint fits, is
wrapped with a timer (JAX's results waited for), so the figures are wall seconds of exactly the
code users run. The first cube pays for tracing (and with an empty cache compiling) what later
cubes reuse, so it is printed apart from the median of the others. Whole processes beside SoFiA-2
are ``bench_infer.py``'s figures; this one says which stage to work on.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench_infer import add_cube_arguments, simulate

# (module, function, label): the stages of run.py, then the scene stage's parts (joint.py's names)
STAGES = [("run", "detect", "detect (i)"), ("run", "characterise_spectra", "spectra (ii)"),
          ("run", "focus_candidates", "focus (iii)"), ("run", "estimate_morphology", "morphology (iv)"),
          ("run", "refined_sources", "refinement"), ("run", "scene_sources", "scene stage"),
          ("joint", "search_peaks", "  line search"), ("joint", "continuum_clip", "  continuum"),
          ("joint", "remove_continuum", "  continuum"), ("joint", "noise_scene", "  noise, beam"),
          ("joint", "_fit", "  joint fits"), ("joint", "scene_model", "  scene model"),
          ("run", "measured_sources", "measure (v, vi)")]  # fmt: skip


def timed(module: ModuleType, name: str, label: str, seconds: dict[str, float]) -> None:
    """Replace ``module.name`` by a wrapper adding its wall seconds (its JAX results ready) to ``seconds[label]``."""
    import jax

    inner: Callable[..., Any] = getattr(module, name)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = jax.block_until_ready(inner(*args, **kwargs))
        seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - t0
        return out

    setattr(module, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--cubes", type=int, default=4, help="cubes, run one after the other in one process")
    add_cube_arguments(parser)
    args = parser.parse_args()

    from dfjax import infer
    from dfjax.cube_io import read_cube
    from dfjax.pipeline import joint, run
    from dfjax.pipeline.models import Models

    infer.use_compilation_cache()
    config = infer.pipeline_config(args.model_dir, None, args.sets)
    models = Models.load(args.model_dir)
    seconds: dict[str, float] = {}
    for module, name, label in STAGES:
        timed({"run": run, "joint": joint}[module], name, label, seconds)
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cubes = simulate(Path(tmp), args.cubes, args.size, args.seed, noise=args.noise, psf=args.psf)
        for path in cubes:
            seconds.clear()
            t0 = time.perf_counter()
            cube = read_cube(path)
            seconds["read"] = time.perf_counter() - t0
            table = infer.infer_cube(cube, models, config)  # the PSF beside it found as dfjax.infer finds it
            seconds["whole cube"] = time.perf_counter() - t0
            rows.append(dict(seconds))
            print(f"{path.name}: {len(table)} sources, {seconds['whole cube']:.2f} s", flush=True)
    labels = ["read"] + list(dict.fromkeys(label for _, _, label in STAGES)) + ["whole cube"]
    later = rows[1:] or rows
    total = statistics.median(r["whole cube"] for r in later)
    print(f"\n{len(rows)} cubes of {args.size}² × 128 ({args.noise} noise{', PSF given' if args.psf else ''}), "
          "wall seconds:")  # fmt: skip
    print(f"{'stage':<18} {'first cube':>10} {'later, median':>14} {'share':>6}")
    for label in labels:
        if all(label not in r for r in rows):
            continue  # a stage this configuration does not run
        median = statistics.median(r.get(label, 0.0) for r in later)
        print(f"{label:<18} {rows[0].get(label, 0.0):>10.2f} {median:>14.2f} {median / total:>6.0%}")


if __name__ == "__main__":
    main()

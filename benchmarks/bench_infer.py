"""What users run, timed: ``python -m dfjax.infer`` in batch mode on paper-size cubes, beside SoFiA-2.

    python benchmarks/bench_infer.py --sofia /tmp/sofia2/sofia          # 4 cubes of 360 x 360 x 128
    python benchmarks/bench_infer.py --cubes 2 --size 128 --sofia ...   # quicker
    python benchmarks/bench_infer.py --noise paper --psf --sofia ...    # the paper's noise, each cube with its PSF
    python benchmarks/bench_infer.py --set scene.min_snr=8 ...           # a setting on top of the tuned one

The trained models of ``--model-dir`` (``models/`` after ``dvc repro``) with their tuned
``pipeline.yaml``; cubes simulated by the fast backend from the default configuration at the
requested size (Table-1 skies; ``--noise paper``: the paper's white noise on top), written once to
a temporary directory; with ``--psf`` each cube has its PSF beside it (``<stem>.psf.fits``), so
dfjax runs the scene fit, as for a user who exports tclean's ``.psf``. Each tool runs as a
whole process over all cubes, start-up and model loading included, ``--repeats`` times in turn
(dfjax, SoFiA-2, dfjax, ...): the figures are seconds per cube (the median run's wall time over
the number of cubes) and their ratio, each pair measured back to back. SoFiA-2 2.5.1 is built
with ``../shared/baselines/build_sofia2.sh``; the project does not depend on it, and without
``--sofia`` only dfjax is timed. dfjax keeps XLA's compiled programs in a cache that starts empty: its
first run compiles them as on a new machine, later runs read them back as a user's do. Both see the
same FITS files; SoFiA-2 runs its smooth + clip finder as :mod:`dfjax.eval.cubes` scores it
(continuum subtraction, kernels 0/3/6 px × 0/3/7/15 channels, 5σ, linker, reliability ≥ 0.9),
``pipeline.threads`` = the cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def simulate(out: Path, n: int, size: int, seed: int, *, noise: str = "snr", psf: bool = False) -> list[Path]:
    """``n`` dirty cubes of size² × 128 from the default configuration (fast backend), with
    ``noise`` as ``sim.noise.mode``; ``psf``: the set-up's PSF beside each as ``<stem>.psf.fits``."""
    from sim.config import SimConfig
    from sim.generate import generate

    config = SimConfig().replace(**{"cube.size": size, "seed": seed, "noise.mode": noise})
    generate(out, n, config, progress=False, psf=psf)
    cubes = sorted(out.glob("cube_*.fits"))
    for cube in cubes if psf else ():
        cube.with_name(cube.stem + ".psf.fits").symlink_to("psf.fits")
    return cubes


def add_cube_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every inference benchmark shares: the simulated cubes (:func:`simulate`) and the models."""
    parser.add_argument("--size", type=int, default=360, help="field side in pixels (128 channels)")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="trained models and pipeline.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a pipeline setting on top of the tuned one (as dfjax.infer --set)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated cubes")
    parser.add_argument("--noise", default="snr", help="sim.noise.mode of the cubes (paper: white noise on top)")
    parser.add_argument("--psf", action="store_true", help="each cube's PSF beside it: dfjax runs the scene fit")


def run_dfjax(cubes: list[Path], model_dir: Path, out: Path, sets: list[str], *, cache: Path) -> float:
    """Wall seconds of one ``python -m dfjax.infer`` over all cubes (batch mode), XLA's compiled programs
    kept in ``cache`` (``DFJAX_XLA_CACHE``): empty before the first run, as on a new machine."""
    command = [sys.executable, "-m", "dfjax.infer", *map(str, cubes), "--model-dir", str(model_dir), "--out", str(out),
               "--quiet", *(a for s in sets for a in ("--set", s))]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"} | {"DFJAX_XLA_CACHE": str(cache)}
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def run_sofia(sofia: Path, cubes: list[Path], out: Path) -> tuple[float, int]:
    """Wall seconds of SoFiA-2 over all cubes, one process per cube as its CLI takes one input, with
    the parameters :mod:`dfjax.eval.cubes` scores it with, and how many cubes needed its reliability
    filter off: on a cube with too few negative detections SoFiA-2 stops ("covariance matrix is not
    invertible"), so that cube is run again without it and only the run that finished is timed."""
    from dfjax.eval import cubes as scoring

    out.mkdir(parents=True, exist_ok=True)
    seconds, unfiltered = 0.0, 0
    for cube in cubes:
        t0 = time.perf_counter()
        try:
            scoring.sofia_sources(sofia, cube.resolve(), out)
        except subprocess.CalledProcessError:
            unfiltered += 1
            t0 = time.perf_counter()
            scoring.sofia_sources(sofia, cube.resolve(), out, reliability=False)
        seconds += time.perf_counter() - t0
    return seconds, unfiltered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--cubes", type=int, default=4, help="cubes per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool, alternating")
    parser.add_argument("--sofia", type=Path, default=None, help="the SoFiA-2 binary (build_sofia2.sh)")
    add_cube_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        cubes = simulate(tmp / "cubes", args.cubes, args.size, args.seed, noise=args.noise, psf=args.psf)
        print(f"{len(cubes)} cubes of {args.size} x {args.size} x 128 ({args.noise} noise"
              f"{', PSF beside each' if args.psf else ''}) simulated in {time.perf_counter() - t0:.1f} s")
        ours, theirs, unfiltered = [], [], 0
        for r in range(args.repeats):
            ours.append(run_dfjax(cubes, args.model_dir, tmp / f"dfjax{r}", args.sets, cache=tmp / "xla") / len(cubes))
            if args.sofia is not None:
                seconds, unfiltered = run_sofia(args.sofia, cubes, tmp / f"sofia{r}")
                theirs.append(seconds / len(cubes))
        print(f"dfjax.infer (batch of {len(cubes)}, start-up included): median {statistics.median(ours):.2f} s per cube "
              f"(runs {', '.join(f'{v:.2f}' for v in ours)}; the first compiles, later ones read XLA's cache)"
              )  # fmt: skip
        if theirs:
            ratios = [a / b for a, b in zip(ours, theirs)]
            print(f"SoFiA-2 2.5.1, same cubes: median {statistics.median(theirs):.2f} s per cube "
                  f"(runs {', '.join(f'{v:.2f}' for v in theirs)}"
                  f"{f'; {unfiltered} cube(s) without its reliability filter, too few negatives' if unfiltered else ''})")  # fmt: skip
            print(f"ratio dfjax / SoFiA-2: median {statistics.median(ratios):.2f} (pairs {', '.join(f'{v:.2f}' for v in ratios)})")


if __name__ == "__main__":
    main()

"""Inference speed of ``dfjax.infer`` on paper-size cubes (360 × 360 × 128), models loaded once.

    python benchmarks/bench_infer.py                  # 3 cubes, paper-size models
    python benchmarks/bench_infer.py --cubes 2 --size 128

Uses freshly initialised models of the paper's shapes (``dfjax.models.create`` with the
default widths: Blobs Finder image_size 256, Deep GRU spectrum_length 128), so the number of
"sources" is whatever random weights find in noise; the timing covers reading the FITS file,
tiling (360 px → 2 × 2 windows of 256), the six steps and writing the catalogue, not model
creation. Prints seconds per cube (the first cube, which includes JIT compilation, separately)
and cubes/s in batch mode (``infer_files`` over all cubes).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from flax import nnx

from dfjax import infer, models
from dfjax.pipeline.run import MODEL_NAMES, Models


def paper_models(seed: int = 0) -> Models:
    """The six models, randomly initialised, in eval mode."""
    built = {name: models.create(name, rngs=nnx.Rngs(seed + i)) for i, name in enumerate(MODEL_NAMES)}
    for model in built.values():
        model.eval()
    return Models(**built)


def write_paper_cube(path: Path, *, size: int, channels: int, seed: int) -> Path:
    """Noise plus one bright Gaussian source, Jy/beam, 4-D like tclean's output."""
    rng = np.random.default_rng(seed)
    cube = rng.normal(0.0, 1e-3, (channels, size, size)).astype(np.float32)
    z, y, x = np.mgrid[:channels, :size, :size]
    cube += 0.02 * np.exp(-((x - size / 2) ** 2 + (y - size / 2) ** 2) / 8.0 - (z - channels / 2) ** 2 / 18.0)
    h = fits.Header()
    axes = [("RA---SIN", size // 2 + 1, 60.0, -0.1 / 3600, "deg"), ("DEC--SIN", size // 2 + 1, -35.0, 0.1 / 3600, "deg"),
            ("FREQ", 1.0, 230e9, 10e6, "Hz"), ("STOKES", 1.0, 1.0, 1.0, "")]  # fmt: skip
    for i, (ctype, crpix, crval, cdelt, cunit) in enumerate(axes, start=1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CUNIT{i}"] = ctype, crpix, crval, cdelt, cunit
    h["BUNIT"], h["RESTFRQ"], h["BMAJ"], h["BMIN"], h["BPA"] = "Jy/beam", 230e9, 1 / 3600, 0.7 / 3600, 0.0
    fits.PrimaryHDU(cube[None], header=h).writeto(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=int, default=3)
    parser.add_argument("--size", type=int, default=360)
    parser.add_argument("--channels", type=int, default=128)
    args = parser.parse_args()
    t0 = time.perf_counter()
    six = paper_models()
    print(f"model creation (not timed below): {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "models").mkdir()
        paths = [write_paper_cube(tmp / f"cube{i}.fits", size=args.size, channels=args.channels, seed=i)
                 for i in range(args.cubes)]
        times = []
        for path in paths:
            t0 = time.perf_counter()
            table = infer.infer_cube(path, six)
            times.append(time.perf_counter() - t0)
            print(f"{path.name}: {times[-1]:.2f} s, {len(table)} sources")
        warm = times[1:] or times
        print(f"seconds per {args.size}x{args.size}x{args.channels} cube: first (with JIT) {times[0]:.2f}, "
              f"then {np.mean(warm):.2f}")
        t0 = time.perf_counter()
        infer.infer_files(paths, model_dir=tmp / "models", out=tmp / "cats", loader=lambda d: six, progress=False)
        elapsed = time.perf_counter() - t0
        print(f"batch mode: {args.cubes} cubes in {elapsed:.2f} s = {args.cubes / elapsed:.3f} cubes/s")


if __name__ == "__main__":
    main()

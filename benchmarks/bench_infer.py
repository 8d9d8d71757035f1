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

import jax
import jax.numpy as jnp
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


class BrightnessDetector:
    """Stand-in Blobs Finder for --oracle: emission above the image's median, scaled to [0, 1]."""

    def __init__(self, image_size: int):
        self.image_size = image_size

    def __call__(self, x: jax.Array) -> jax.Array:
        med = jnp.median(x, axis=(1, 2), keepdims=True)
        return jnp.clip((x - med) / (jnp.max(x, axis=(1, 2), keepdims=True) - med + 1e-6), 0.0, 1.0)


class LineDetector:
    """Stand-in Deep GRU for --oracle: standardised channels above 2.5 sigma, scaled to [0, 1]."""

    def __init__(self, spectrum_length: int):
        self.spectrum_length = spectrum_length

    def __call__(self, x: jax.Array) -> jax.Array:
        excess = jnp.clip(x - 2.5, 0.0, None)
        return excess / (jnp.max(excess, axis=1, keepdims=True) + 1e-6)


def oracle_models(seed: int = 0) -> Models:
    """Detection by brightness thresholds instead of the two upstream networks (so that steps 3-6
    run on realistic candidate counts with untrained weights); the four ResNets are real."""
    six = paper_models(seed)
    return Models(**{**six.__dict__, "blobs_finder": BrightnessDetector(six.blobs_finder.image_size),
                     "deep_gru": LineDetector(six.deep_gru.spectrum_length)})  # fmt: skip


def write_simulated_cube(path: Path, *, size: int, channels: int, seed: int) -> Path:
    """A Table-1 cube from the fast simulator (central SNR 10-50, 2-5 serendipitous sources)."""
    from sim import fitsio
    from sim.config import SimConfig
    from sim.generate import simulate_cube

    config = SimConfig().replace(**{"cube.size": size, "cube.channels": channels, "seed": seed})
    _, dirty, header, table, extra = simulate_cube(0, config)
    fitsio.write_atomic(path, fitsio.cube_hdus(dirty, header, bunit="Jy/beam", beams=extra["beams"]))
    return path


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
    parser.add_argument("--oracle", action="store_true",
                        help="simulated Table-1 cubes, brightness-threshold stand-ins for Blobs Finder and "
                             "the Deep GRU (so steps 3-6 see real candidates), real ResNets")  # fmt: skip
    args = parser.parse_args()
    t0 = time.perf_counter()
    six = oracle_models() if args.oracle else paper_models()
    write = write_simulated_cube if args.oracle else write_paper_cube
    print(f"model creation (not timed below): {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "models").mkdir()
        paths = [write(tmp / f"cube{i}.fits", size=args.size, channels=args.channels, seed=i)
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

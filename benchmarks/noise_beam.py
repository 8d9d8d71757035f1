"""How well the beam measured on a dirty cube's noise matches its PSF: ``python benchmarks/noise_beam.py DIR...``.

For the first cube of each directory of ``python -m sim generate --psf`` (its ``psf.fits`` is the
truth), prints the white share of the noise found, the time taken, and per ring of lags the rms of
(measured − PSF) over the PSF's rms there — the far rings are where a bright line's sidelobes
make false sources — and the beam error the estimate reports beside the one it makes past 20 px.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from dfjax.pipeline.psf import centred, noise_model, psf_from_file

RINGS = [(1, 3), (3, 10), (10, 20), (20, 50), (50, 100), (100, 180)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="directories with cube_00000.fits and psf.fits")
    args = parser.parse_args()
    for d in args.dirs:
        cube = np.asarray(fits.getdata(d / "cube_00000.fits"), np.float32).squeeze()
        half = (min(cube.shape[1:]) - 1) // 2
        true = centred(psf_from_file(d / "psf.fits"), half)
        t0 = time.perf_counter()
        model = noise_model(cube, half=half, pairs=cube.shape[0] - 1)
        seconds = time.perf_counter() - t0
        r = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1])
        rings = []
        for lo, hi in RINGS:
            ring = (r >= lo) & (r < hi)
            if ring.any():
                wrong = np.sqrt(np.mean((model.beam - true)[ring] ** 2)) / np.sqrt(np.mean(true[ring] ** 2))
                rings.append(f"{lo}-{hi} px {wrong:.2f}")
        far = r >= 20
        made = np.sqrt(np.mean((model.beam - true)[far] ** 2))
        told = np.sqrt(model.beam_error[half, half])
        print(f"{d}: white share {model.white_fraction:.3f}, {seconds:.2f} s; error / PSF rms: {', '.join(rings)}; "
              f"beam error reported {told:.4f}, made {made:.4f} (past 20 px)")


if __name__ == "__main__":
    main()

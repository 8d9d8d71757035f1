"""Float16 vs float32 storage of the almasim cubes: accuracy of the training targets against bytes.

For every cube of a simulator directory, round-trips the dirty and sky-model cubes through
float16 in several units and prints the worst relative error (over cubes and sources) of what
the models consume: integrated images (Blobs Finder), spectra summed over the true source boxes
(Deep GRU), and the peak SNR at source positions; then the bytes per cube, raw and zlib'd.

Run:  python -m sim generate --config experiments/default.yaml --out /tmp/simA --n 20
      python benchmarks/almasim_storage.py /tmp/simA
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np

from dfjax.datasets.almasim.records import COLUMN, FLUX_SCALE, read_cube_record

DIRTY_UNITS = {"Jy/beam": 1.0, "mJy/beam": 1e3, "noise_rms": None}
SKY_UNITS = {"Jy/pixel": 1.0, "mJy/pixel": 1e3, "uJy/pixel": 1e6}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b)) if np.any(b) else 0.0


def _f16(cube: np.ndarray, scale: float) -> np.ndarray:
    """Store in units 1/scale as float16, read back in the original units (float64)."""
    return (cube * scale).astype(np.float16).astype(np.float64) / scale


def _boxes(cat: np.ndarray) -> list[tuple[slice, slice]]:
    c = COLUMN
    return [(slice(int(r[c["y0"]]), int(r[c["y1"]])), slice(int(r[c["x0"]]), int(r[c["x1"]]))) for r in cat]


def dirty_errors(rec: dict, scale: float) -> dict:
    d = rec["dirty_cube"].astype(np.float64)
    q = _f16(d, scale)
    sigma = float(rec["noise_rms"])
    out = {"integrated": _rel(q.sum(0), d.sum(0)),
           "int_max/int_noise": float(np.abs(q.sum(0) - d.sum(0)).max() / (sigma * np.sqrt(len(d))))}
    spec = [_rel(q[:, ys, xs].sum((1, 2)), d[:, ys, xs].sum((1, 2))) for ys, xs in _boxes(rec["catalogue"])]
    c = COLUMN
    idx = [tuple(int(np.clip(np.rint(r[c[k]]), 0, m - 1)) for k, m in (("z", d.shape[0]), ("y", d.shape[1]),
                                                                          ("x", d.shape[2])))
           for r in rec["catalogue"]]  # fmt: skip
    snr = [abs(q[i] - d[i]) / abs(d[i]) for i in idx if d[i] != 0]
    out |= {"box_spectra": max(spec), "peak_snr": max(snr, default=0.0)}
    return out


def sky_errors(rec: dict, scale: float) -> dict:
    s = rec["sky_cube"].astype(np.float64)
    q = _f16(s, scale)
    lost = (s != 0) & (q == 0)
    spec = [_rel(q[:, ys, xs].sum((1, 2)), s[:, ys, xs].sum((1, 2))) for ys, xs in _boxes(rec["catalogue"])]
    return {"integrated": _rel(q.sum(0), s.sum(0)), "box_spectra": max(spec),
            "total_flux": abs(q.sum() - s.sum()) / s.sum(),
            "flushed_flux": float(s[lost].sum() / s.sum())}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sim_dir")
    p.add_argument("--n", type=int, default=20)
    args = p.parse_args()
    cubes = sorted(Path(args.sim_dir).glob("cube_*.fits"))[: args.n]
    worst: dict[tuple[str, str], dict] = {}
    sizes: dict[str, list[float]] = {}
    for cube in cubes:
        rec = read_cube_record(cube, cube.with_name(cube.name.replace("cube_", "sky_")), dtype=np.float32)
        rec |= {k: rec[k] / np.float32(FLUX_SCALE) for k in ("dirty_cube", "sky_cube", "noise_rms")}  # back to Jy
        for unit, scale in DIRTY_UNITS.items():
            errs = dirty_errors(rec, 1.0 / float(rec["noise_rms"]) if scale is None else scale)
            w = worst.setdefault(("dirty", unit), {})
            for k, v in errs.items():
                w[k] = max(w.get(k, 0.0), v)
        for unit, scale in SKY_UNITS.items():
            w = worst.setdefault(("sky", unit), {})
            for k, v in sky_errors(rec, scale).items():
                w[k] = max(w.get(k, 0.0), v)
        for name, scale in (("dirty", 1e3), ("sky", 1e3)):
            for dtype in (np.float32, np.float16):
                raw = (rec[f"{name}_cube"] * scale).astype(dtype).tobytes()
                t0 = time.perf_counter()
                packed = zlib.compress(raw)
                t1 = time.perf_counter()
                zlib.decompress(packed)
                t2 = time.perf_counter()
                key = f"{name} {np.dtype(dtype).name}"
                sizes.setdefault(key, []).append(np.array([len(raw), len(packed), t1 - t0, t2 - t1]))
    print(f"float16 round trip, worst relative error over {len(cubes)} cubes and all their sources")
    for (name, unit), errs in worst.items():
        print(f"  {name:5s} in {unit:10s} " + "  ".join(f"{k}={v:.2e}" for k, v in errs.items()))
    print("bytes per cube (mean): raw, zlib level 6, compress s, decompress s")
    for key, rows in sizes.items():
        raw, packed, tc, td = np.mean(rows, axis=0)
        print(f"  {key:14s} raw={raw / 1e6:6.2f} MB  zlib={packed / 1e6:6.2f} MB ({packed / raw:.2f})"
              f"  compress={tc * 1e3:5.0f} ms  decompress={td * 1e3:4.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()

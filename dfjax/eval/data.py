"""Evaluation inputs: the cubes of one split of the almasim dataset with their truth catalogues.

The truth comes from the records' ``catalogue`` (columns ``records.CATALOGUE_FIELDS``, sim.sky
conventions); boxes are rows (x0, y0, x1, y1, z0, z1) as :mod:`dfjax.eval.matching` takes them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dfjax.datasets.almasim.records import COLUMN
from dfjax.maths import gaussian_area

__all__ = ["EvalCube", "iter_split", "split_size", "truth_boxes", "truth_columns"]

BOX_COLUMNS: tuple[str, ...] = ("x0", "y0", "x1", "y1", "z0", "z1")


@dataclasses.dataclass(frozen=True)
class EvalCube:
    """One test cube: ``cube`` (nz, ny, nx) float32 in the record's units (mJy/beam)."""

    index: int  # position in the split
    cube_index: int  # the simulator's cube number
    cube: np.ndarray
    catalogue: np.ndarray  # (S, 20) truth rows, records.CATALOGUE_FIELDS order
    noise_rms: float  # mJy/beam, the simulator's (baselines estimate their own)
    beam_area_px: float  # pixels per beam, from the record's beam and cell


def truth_columns(catalogue: np.ndarray) -> dict[str, np.ndarray]:
    """{column name: (S,) values} of truth rows."""
    catalogue = np.asarray(catalogue, np.float64).reshape(-1, len(COLUMN))
    return {name: catalogue[:, i] for name, i in COLUMN.items()}


def truth_boxes(catalogue: np.ndarray) -> np.ndarray:
    """(S, 6) truth boxes (x0, y0, x1, y1, z0, z1)."""
    columns = truth_columns(catalogue)
    return np.stack([columns[name] for name in BOX_COLUMNS], axis=1)


def _source(data_dir: str | os.PathLike, dataset: str, split: str):
    import tensorflow_datasets as tfds

    if not (Path(data_dir) / dataset).is_dir():
        raise FileNotFoundError(f"{Path(data_dir) / dataset}: no such dataset; build it with "
                                f"python -m dfjax.datasets.almasim --data-dir {data_dir}")  # fmt: skip
    sources = tfds.data_source(dataset, data_dir=str(data_dir))
    if split not in sources:
        raise KeyError(f"{dataset}: no split {split!r} (has {', '.join(sources)})")
    return sources[split]


def split_size(data_dir: str | os.PathLike, dataset: str, split: str) -> int:
    """Number of cubes in a split."""
    return len(_source(data_dir, dataset, split))


def iter_split(data_dir: str | os.PathLike, dataset: str, split: str, *, limit: int | None = None
               ) -> Iterator[EvalCube]:  # fmt: skip
    """The cubes of ``split`` in order (at most ``limit``), one at a time."""
    source = _source(data_dir, dataset, split)
    n = len(source) if limit is None else min(limit, len(source))
    for i in range(n):
        record = source[i]
        bmaj, bmin = float(record["beam"][0]), float(record["beam"][1])
        cell = float(record["cell_arcsec"])
        beam_area_px = gaussian_area(bmaj, bmin) / cell**2
        yield EvalCube(index=i, cube_index=int(record["cube_index"]),
                       cube=np.asarray(record["dirty_cube"], np.float32),
                       catalogue=np.asarray(record["catalogue"], np.float64).reshape(-1, len(COLUMN)),
                       noise_rms=float(record["noise_rms"]), beam_area_px=float(beam_area_px))  # fmt: skip

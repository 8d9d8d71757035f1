"""Batched, seeded, optionally multi-process loaders for each model family (Sec. 4.5).

A *data source* is anything with ``__len__`` and ``__getitem__(i) -> record``
(a list of :func:`~dfjax.datasets.almasim.records.read_cube_record` dicts, or
``tfds.data_source(...)['train']``). Each family wraps one and exposes:

* ``len(data)`` — number of examples (cubes for Blobs Finder; sources or
  predicted boxes for Deep GRU and the ResNets);
* ``data.example(i, rng=None)`` — one example dict of numpy arrays;
* ``data.batches(batch_size=..., epoch=..., seed=...)`` — an iterator of
  ``{"inputs", "targets", ...}`` dicts with a leading batch axis of exactly
  ``batch_size``: the last incomplete batch is dropped (``num_batches`` says
  how many come), so every batch has the same static shape for ``jax.jit``.

Order and augmentation depend only on (seed, epoch): the same pair gives the
same batches whatever ``worker_count``/``num_threads``; another epoch gives
another order. Loading runs on ``grain``: ``num_threads`` reader threads in
this process (default 1: one background thread that fills a ``prefetch``
buffer while the train step runs) and, with ``worker_count > 0``, that many
worker processes (each gets a pickled copy of the data source and starts
afresh every epoch). On the 2-core CPU machine workers do not pay
(``benchmarks/bench_input_pipeline.py``: ~10 batches/s with 2 workers against
70–800 in-process), hence ``worker_count=0`` by default.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import grain
import numpy as np

from dfjax.datasets.almasim.records import COLUMN
from dfjax.input_pipeline import transforms as T

__all__ = [
    "RESNET_TARGETS",
    "BlobsFinderData",
    "DataSource",
    "DeepGRUData",
    "ResNetData",
    "epoch_seed",
    "for_model",
]  # fmt: skip

RESNET_TARGETS: dict[str, str] = {
    "resnet_fwhm_x": "fwhm_x", "resnet_fwhm_y": "fwhm_y", "resnet_pa": "pa", "resnet_flux": "line_flux",
}  # fmt: skip
"""Catalogue column each ResNet regresses; ``line_flux`` switches the input to the line emission image."""


class DataSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 32-bit seed for (seed, epoch, stream); streams 0 and 1 are the shuffle and the augmentation."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


class _ExampleFn:
    """grain transform: index[, rng] → data.example(index, rng) (picklable for worker processes)."""

    def __init__(self, data: _Family):
        self.data = data

    def __call__(self, index: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        return self.data.example(int(index), rng)


class _Family:
    """Shared batching: subclasses define ``__len__`` and ``example``."""

    augment: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def example(self, index: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def num_batches(self, batch_size: int) -> int:
        """Full batches per epoch (the remainder is dropped)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return len(self) // batch_size

    def dataset(self, *, batch_size: int, epoch: int, seed: int = 0, shuffle: bool = True) -> grain.MapDataset:
        """The epoch's lazily evaluated ``grain.MapDataset`` of batches."""
        self.num_batches(batch_size)
        order = np.arange(len(self))
        if shuffle:  # a numpy permutation: grain's index_shuffle costs ~0.4 ms an element
            order = np.random.default_rng(epoch_seed(seed, epoch, 0)).permutation(len(self))
        ds = grain.MapDataset.source(order)
        if self.augment:
            ds = ds.random_map(_ExampleFn(self), seed=epoch_seed(seed, epoch, 1))
        else:  # no per-element Generator to build
            ds = ds.map(_ExampleFn(self))
        return ds.batch(batch_size, drop_remainder=True)

    def batches(
        self,
        *,
        batch_size: int,
        epoch: int,
        seed: int = 0,
        shuffle: bool = True,
        worker_count: int = 0,
        num_threads: int = 1,
        prefetch: int = 4,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Iterate the epoch's ``num_batches(batch_size)`` batches (see the module docstring)."""
        ds = self.dataset(batch_size=batch_size, epoch=epoch, seed=seed, shuffle=shuffle)
        it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
        if worker_count > 0:
            _absl_flags_with_defaults()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=2))
        yield from it


def _box_array(boxes: np.ndarray, columns: int, name: str) -> np.ndarray:
    b = np.asarray(boxes, np.float64)
    b = b.reshape(0, columns) if b.size == 0 else np.atleast_2d(b)
    if b.ndim != 2 or b.shape[1] < columns:
        raise ValueError(f"{name}: expected shape (K, {columns}), got {np.shape(boxes)}")
    return b


def _absl_flags_with_defaults() -> None:
    """grain's worker processes read absl flags; outside an absl entry point use their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _catalogues(source: DataSource, catalogues: Sequence[np.ndarray] | None) -> list[np.ndarray]:
    if catalogues is None:  # one pass over the source; pass `catalogues` to skip it
        catalogues = [source[i]["catalogue"] for i in range(len(source))]
    if len(catalogues) != len(source):
        raise ValueError(f"{len(catalogues)} catalogues for {len(source)} examples")
    return [np.asarray(c, np.float64).reshape(-1, len(COLUMN)) for c in catalogues]


class BlobsFinderData(_Family):
    """Integrated dirty → integrated sky-model images, one example per cube (Sec. 4.1, 4.5).

    Example: ``inputs``, ``targets`` (crop_size, crop_size, 1) float32 in [0, 1]
    (see :func:`~dfjax.input_pipeline.transforms.integrated_image_pair`), ``index`` () int32.
    ``augment``: random rotation + x/y flips before the centre crop.
    """

    def __init__(self, source: DataSource, *, crop_size: int = 96, augment: bool = True):
        self.source, self.crop_size, self.augment = source, crop_size, augment

    def __len__(self) -> int:
        return len(self.source)

    def example(self, index: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        record = self.source[index]
        dirty, sky = T.integrated_image_pair(record["integrated_dirty"], record["integrated_sky"],
                                             size=self.crop_size, rng=rng)  # fmt: skip
        return {"inputs": dirty[..., None], "targets": sky[..., None], "index": np.int32(index)}


class _PerBox(_Family):
    """Examples are (record index, 3-D box, truth row) triples, from the truth or from predictions."""

    def _index_truth(self, source: DataSource, catalogues: Sequence[np.ndarray] | None) -> None:
        cats = _catalogues(source, catalogues)
        self._records = np.concatenate([np.full(len(c), i) for i, c in enumerate(cats)]).astype(np.int64)
        self._rows = np.concatenate([np.arange(len(c)) for c in cats]).astype(np.int64)
        self._boxes = np.concatenate([T.truth_boxes(c) for c in cats]).reshape(-1, 6)

    def _index_predicted(self, boxes: Mapping[int, np.ndarray], columns: int,
                         rows: Mapping[int, np.ndarray] | None = None) -> None:  # fmt: skip
        records, box_list, row_list = [np.zeros(0, np.int64)], [np.zeros((0, 6))], [np.zeros(0, np.int64)]
        for i in sorted(boxes):
            b = _box_array(boxes[i], columns, f"boxes[{i}]")
            r = np.full(len(b), -1, np.int64) if rows is None else np.asarray(rows[i], np.int64)
            keep = np.ones(len(b), bool) if rows is None else r >= 0
            b6 = np.zeros((len(b), 6))
            b6[:, : min(b.shape[1], 6)] = b[:, :6]
            records.append(np.full(int(keep.sum()), i, np.int64))
            box_list.append(b6[keep])
            row_list.append(r[keep])
        self._records, self._boxes, self._rows = (np.concatenate(a) for a in (records, box_list, row_list))

    def __len__(self) -> int:
        return len(self._records)

    def example(self, index: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """Per-box examples are deterministic: computed once per record (one read of its cubes
        for all its boxes) and kept — a record read costs far more than a train step."""
        cache = self.__dict__.setdefault("_cache", {})
        if index not in cache:
            record_index = int(self._records[index])
            same = np.flatnonzero(self._records == record_index)
            record = self.source[record_index]
            for k in same:
                cache[int(k)] = self._example(record, int(k))
        return cache[index]

    def _example(self, record: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError


class DeepGRUData(_PerBox):
    """Dirty → clean spectra summed over 2-D boxes, one example per box (Sec. 4.2, 4.5).

    Boxes: the truth catalogue's (phase 1) or ``boxes[i]`` (K, 4) x0, y0, x1, y1
    predicted on record ``i`` (phase 2; extra columns ignored; records absent
    from the mapping contribute nothing). Example: ``inputs`` (nz,) standardised
    dirty spectrum, ``targets`` (nz,) sky spectrum over the same box in [0, 1]
    (:func:`~dfjax.input_pipeline.transforms.spectrum_pair`), ``index``, ``row``
    (truth row, −1 in phase 2) int32, ``box`` (4,) float32.
    """

    def __init__(self, source: DataSource, *, boxes: Mapping[int, np.ndarray] | None = None,
                 catalogues: Sequence[np.ndarray] | None = None):  # fmt: skip
        self.source = source
        if boxes is None:
            self._index_truth(source, catalogues)
        else:
            self._index_predicted(boxes, 4)

    def _example(self, record: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
        box = self._boxes[index, :4]
        dirty, sky = T.spectrum_pair(record["dirty_cube"], record["sky_cube"], box)
        return {"inputs": dirty, "targets": sky, "index": np.int32(self._records[index]),
                "row": np.int32(self._rows[index]), "box": box.astype(np.float32)}  # fmt: skip


class ResNetData(_PerBox):
    """Focused (or line emission) 64×64 images → one catalogue parameter, one example per source (Sec. 4.3–4.5).

    ``target``: ``fwhm_x``, ``fwhm_y``, ``pa`` (inputs: spectrally focused
    images, min-max normalised to [0, 1]) or ``line_flux`` (inputs: line
    emission images, eq. 19, multiplied by ``line_image_scale`` but not
    min-max normalised, which would erase the flux). Boxes: the truth's x0, y0,
    x1, y1, z0, z1 (phase 1) or ``boxes[i]`` (K, 6) predicted on record ``i``
    (phase 2): each prediction takes the parameters of the truth source
    :func:`~dfjax.input_pipeline.transforms.match_predictions` pairs it with;
    unmatched predictions are left out. Example: ``inputs`` (size, size, 1)
    float32, ``targets`` () float32, ``index``, ``row`` int32, ``offset`` (2,)
    int32 (field x, y of the image's pixel 0, 0).
    """

    def __init__(
        self,
        source: DataSource,
        *,
        target: str,
        boxes: Mapping[int, np.ndarray] | None = None,
        catalogues: Sequence[np.ndarray] | None = None,
        size: int = 64,
        min_iou: float = 0.1,
        line_image_scale: float = 1.0,
    ):
        if target not in RESNET_TARGETS.values():
            raise ValueError(f"unknown target {target!r}; valid: {', '.join(RESNET_TARGETS.values())}")
        self.source, self.target, self.size, self.line_image_scale = source, target, size, line_image_scale
        cats = _catalogues(source, catalogues)
        self._targets_by_record = [c[:, COLUMN[target]].astype(np.float32) for c in cats]
        if boxes is None:
            self._index_truth(source, cats)
        else:
            if any(not 0 <= i < len(cats) for i in boxes):
                raise ValueError(f"boxes has keys outside 0..{len(cats) - 1}")
            rows = {i: T.match_predictions(_box_array(b, 6, f"boxes[{i}]"), cats[i], min_iou=min_iou)
                    for i, b in boxes.items()}  # fmt: skip
            self._index_predicted(boxes, 6, rows)

    def _example(self, record: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
        i, row = int(self._records[index]), int(self._rows[index])
        cube = record["dirty_cube"]
        box, z_range = self._boxes[index, :4], self._boxes[index, 4:6]
        if self.target == "line_flux":
            image, offset = T.line_emission_image(cube, box, z_range, size=self.size)
            image = (image * self.line_image_scale).astype(np.float32)
        else:
            image, offset = T.spectral_focus(cube, box, z_range, size=self.size)
            image = T.minmax_normalise(image)
        return {"inputs": image[..., None], "targets": self._targets_by_record[i][row],
                "index": np.int32(i), "row": np.int32(row), "offset": offset.astype(np.int32)}  # fmt: skip


def for_model(name: str, source: DataSource, **kwargs: Any) -> _Family:
    """The data family of model ``name`` (see ``dfjax.models.MODEL_NAMES``); ``kwargs`` go to its constructor."""
    if name == "blobs_finder":
        return BlobsFinderData(source, **kwargs)
    if name == "deep_gru":
        return DeepGRUData(source, **kwargs)
    if name in RESNET_TARGETS:
        return ResNetData(source, target=RESNET_TARGETS[name], **kwargs)
    raise ValueError(f"unknown model {name!r}")

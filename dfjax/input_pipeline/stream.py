"""Training examples straight from the fast simulator: no FITS files, no records on disk.

Cube ``i`` of epoch ``e`` is ``sim.generate.simulate_cube(i, sim_config)`` with the simulator's
seed set to :func:`cube_seed` ``(seed, e)``: a function of (seed, e, i) alone, so the same seed
gives the same stream and a run resumed at epoch ``e`` sees what the uninterrupted run saw. (A
derived 32-bit seed, not ``sim_config.seed``: the stream never redraws the cubes of a packaged
set made with a small seed such as its validation split's.) Each cube becomes the record the TFDS
builder stores for it (:func:`~dfjax.datasets.almasim.records.cube_record`: mJy, float16
cubes), and that record the examples the TFDS path's family makes of it
(:func:`~dfjax.input_pipeline.loaders.for_model`), so a streamed example is exactly the
TFDS-path example of the same cube.

Batches: the examples of ``shuffle_cubes`` consecutive cubes (and those left over from the
previous block) are shuffled together from (seed, epoch, block) and cut into full batches; what
is left at the end of the epoch is dropped. Blobs Finder gets one example per cube, augmented
from (seed, epoch, i); Deep GRU and the ResNets one per truth source. A background thread
simulates the next batches while the train step runs (``prefetch``).

    data = stream.for_model("deep_gru", SimConfig().replace(**{"cube.size": 128}), cubes_per_epoch=72)
    for batch in data.batches(batch_size=32, epoch=0, seed=0): ...   # {"inputs", "targets", "cube"}
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from dfjax.datasets.almasim.records import catalogue_rows, cube_record
from dfjax.input_pipeline.loaders import epoch_seed
from dfjax.input_pipeline.loaders import for_model as _family
from sim import fitsio
from sim.config import SimConfig
from sim.generate import simulate_cube, simulate_cubes

__all__ = ["StreamData", "cube_seed", "for_model", "simulated_record"]

_CUBE_STREAM = 2  # epoch_seed streams: 0 shuffle, 1 augmentation (as in loaders), 2 the cubes


def cube_seed(seed: int, epoch: int) -> int:
    """The simulator seed of epoch ``epoch``'s cubes (cube ``i`` is drawn from ``[cube_seed, i]``)."""
    return epoch_seed(seed, epoch, _CUBE_STREAM)


def simulated_record(simulated: tuple, *, dtype=np.float16) -> dict[str, Any]:
    """The TFDS record of one ``simulate_cube`` result, as the builder would store it (no FITS)."""
    sky_cube, dirty, header, table, extra = simulated
    primary = fitsio.cube_header(header, bunit="Jy/beam", beams=extra["beams"], cards=extra["cards"])
    return cube_record(dirty, sky_cube, primary, catalogue_rows(table), dtype=dtype)


class StreamData:
    """One model family's examples from ``cubes_per_epoch`` freshly simulated cubes an epoch.

    ``family_kwargs`` go to the TFDS path's family (``crop_size``, ``augment`` for Blobs Finder).
    ``sim_batch`` > 1 observes that many cubes in one vmapped call (``simulate_cubes``: for
    GPUs; the dirty cubes agree with ``simulate_cube``'s to float32 rounding).
    """

    def __init__(self, model_name: str, sim_config: SimConfig, *, cubes_per_epoch: int, shuffle_cubes: int = 16,
                 sim_batch: int = 1, **family_kwargs: Any):  # fmt: skip
        for key, value in (("cubes_per_epoch", cubes_per_epoch), ("shuffle_cubes", shuffle_cubes),
                           ("sim_batch", sim_batch)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{key} must be at least 1, got {value}")
        if sim_config.backend != "fast":
            raise ValueError(f"the stream needs the fast backend, not sim.backend={sim_config.backend!r}")
        self.model_name, self.sim_config = model_name, sim_config
        self.cubes_per_epoch, self.shuffle_cubes, self.sim_batch = cubes_per_epoch, shuffle_cubes, sim_batch
        self.family_kwargs = family_kwargs

    def cube_config(self, *, epoch: int, seed: int) -> SimConfig:
        """The simulator configuration whose cube ``i`` is cube ``i`` of ``epoch``."""
        return self.sim_config.replace(seed=cube_seed(seed, epoch))

    def records(self, *, epoch: int, seed: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """(cube index, record) of the epoch's cubes, in index order."""
        config = self.cube_config(epoch=epoch, seed=seed)
        for start in range(0, self.cubes_per_epoch, self.sim_batch):
            indices = range(start, min(start + self.sim_batch, self.cubes_per_epoch))
            cubes = [simulate_cube(start, config)] if len(indices) == 1 else simulate_cubes(indices, config)
            for i, cube in zip(indices, cubes):
                yield i, simulated_record(cube)

    def augment_rng(self, *, epoch: int, seed: int, index: int) -> np.random.Generator:
        """The augmentation draws of cube ``index`` of ``epoch``."""
        return np.random.default_rng([epoch_seed(seed, epoch, 1), index])

    def cube_examples(self, record: dict[str, Any], rng: np.random.Generator | None = None) -> list[dict[str, np.ndarray]]:
        """Every example the TFDS path's family makes of ``record`` (one for Blobs Finder, one per source otherwise)."""
        family = _family(self.model_name, [record], **self.family_kwargs)
        return [family.example(k, rng) for k in range(len(family))]

    def examples_by_cube(self, *, epoch: int, seed: int = 0) -> Iterator[tuple[int, list[dict[str, np.ndarray]]]]:
        """(cube index, its examples) of the epoch in cube order; each example holds ``inputs``,
        ``targets`` and ``cube`` (its cube index)."""
        for i, record in self.records(epoch=epoch, seed=seed):
            rng = self.augment_rng(epoch=epoch, seed=seed, index=i)
            yield i, [{"inputs": e["inputs"], "targets": e["targets"], "cube": np.int32(i)}
                      for e in self.cube_examples(record, rng)]  # fmt: skip

    def batches(self, *, batch_size: int, epoch: int, seed: int = 0, shuffle: bool = True,
                prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:  # fmt: skip
        """Full batches of the epoch (see the module docstring); ``prefetch`` batches are made ahead in a thread."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        it = self._batches(batch_size, epoch, seed, shuffle)
        return _prefetched(it, prefetch) if prefetch > 0 else it

    def _batches(self, batch_size: int, epoch: int, seed: int, shuffle: bool) -> Iterator[dict[str, np.ndarray]]:
        shuffle_seed = epoch_seed(seed, epoch, 0)
        pool: list[dict[str, np.ndarray]] = []
        for i, examples in self.examples_by_cube(epoch=epoch, seed=seed):
            pool += examples
            if (i + 1) % self.shuffle_cubes and i + 1 < self.cubes_per_epoch:
                continue  # the block of cubes is not complete yet
            if shuffle:
                order = np.random.default_rng([shuffle_seed, i // self.shuffle_cubes]).permutation(len(pool))
                pool = [pool[k] for k in order]
            full = len(pool) // batch_size * batch_size
            for k in range(0, full, batch_size):
                yield {key: np.stack([e[key] for e in pool[k : k + batch_size]]) for key in pool[0]}
            pool = pool[full:]


def _prefetched(it: Iterator[Any], size: int) -> Iterator[Any]:
    """Run ``it`` in a daemon thread, ``size`` items ahead; its exceptions re-raise here."""
    items: queue.Queue = queue.Queue(size)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        try:
            for item in it:
                if not put(item):
                    return
            put(end)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    threading.Thread(target=work, daemon=True, name="stream-prefetch").start()
    try:
        while True:
            item = items.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def for_model(model_name: str, sim_config: SimConfig, *, cubes_per_epoch: int, shuffle_cubes: int = 16,
              sim_batch: int = 1, **family_kwargs: Any) -> StreamData:  # fmt: skip
    """The streamed examples of model ``model_name`` (``dfjax.models.MODEL_NAMES``)."""
    return StreamData(model_name, sim_config, cubes_per_epoch=cubes_per_epoch, shuffle_cubes=shuffle_cubes,
                      sim_batch=sim_batch, **family_kwargs)

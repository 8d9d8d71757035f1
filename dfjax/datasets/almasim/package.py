"""Package a simulator directory into the almasim TFDS dataset: the one function the CLI and DVC call."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle
from tqdm.auto import tqdm

from dfjax.datasets.almasim.almasim_dataset_builder import Builder
from dfjax.datasets.almasim.records import RecordError

CONFIG_NAMES = tuple(c.name for c in Builder.BUILDER_CONFIGS)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(sim_dir: str | os.PathLike, data_dir: str | os.PathLike, config_name: str = "default", *,
          extra_train: Sequence[str | os.PathLike] = (), overwrite: bool = False,
          progress: bool = True) -> Path:  # fmt: skip
    """Package `sim_dir` as ``data_dir/almasim/config_name/VERSION`` (array_record); returns that path.

    Every cube of each `extra_train` directory joins the train split (validation and test are
    `sim_dir`'s alone): training cubes of other regimes, params.yaml's ``regimes``.

    Raises `RecordError` (message naming the file) for a bad simulator directory; a failed build
    leaves no dataset directory behind. An existing dataset of the same version is reused as is
    unless `overwrite` (then it is replaced only once the new one is complete).
    """
    sim_dir, data_dir = Path(sim_dir), Path(data_dir)
    if config_name not in CONFIG_NAMES:
        raise RecordError(f"--builder-config: unknown config {config_name!r}; choose from {', '.join(CONFIG_NAMES)}")
    extra_train = tuple(Path(d) for d in extra_train)
    for d in (sim_dir, *extra_train):
        if not d.is_dir() or not any(d.iterdir()):
            raise RecordError(f"{d}: no such directory, or empty")
    out = data_dir / "almasim" / config_name / str(Builder.VERSION)
    if overwrite and out.exists():  # build aside, then swap: a failure keeps the existing dataset
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".almasim-", dir=data_dir) as aside:
            new = _prepare(sim_dir, Path(aside), config_name, extra_train, progress)
            trash = out.with_name(f".{out.name}.old")
            out.rename(trash)
            new.rename(out)
            shutil.rmtree(trash)
        return out
    return _prepare(sim_dir, data_dir, config_name, extra_train, progress)


def _prepare(sim_dir: Path, data_dir: Path, config_name: str, extra_train: tuple[Path, ...], progress: bool) -> Path:
    """`download_and_prepare` with our progress bar; on failure, remove what this call created."""
    builder = Builder(config=config_name, data_dir=data_dir, file_format="array_record")
    builder.extra_train = extra_train
    # TFDS keeps a split in memory up to MAX_MEM_BUFFER_SIZE (1 GB) and then spills it to disk
    # through tf.io.gfile, which needs TensorFlow; with shuffling disabled the spilled split is read
    # back whole anyway, so hold it in memory: at most the FITS files' size (float32, twice a record)
    fits_bytes = sum(p.stat().st_size for d in (sim_dir, *extra_train) for p in d.glob("*_[0-9]*.fits"))
    buffer = max(tfds_shuffle.MAX_MEM_BUFFER_SIZE, fits_bytes)
    out = Path(builder.data_dir)
    existed = [p for p in (data_dir, data_dir / "almasim", out.parent) if p.exists()]
    bar = tqdm(unit="cube", desc=f"almasim/{config_name}", disable=not progress, dynamic_ncols=True)
    builder.progress = bar
    start = time.perf_counter()
    tfds.display_progress_bar(False)  # ours counts cubes over all splits, with MB/s
    default_buffer, tfds_shuffle.MAX_MEM_BUFFER_SIZE = tfds_shuffle.MAX_MEM_BUFFER_SIZE, buffer
    try:
        with tempfile.TemporaryDirectory(prefix="almasim-dl-") as nowhere:  # nothing is downloaded
            config = tfds.download.DownloadConfig(manual_dir=str(sim_dir))
            builder.download_and_prepare(download_dir=nowhere, download_config=config)
    except BaseException:  # TFDS removed its incomplete.* dir; remove what this call created around it
        for p in (out.parent, data_dir / "almasim"):
            if p not in existed:
                shutil.rmtree(p, ignore_errors=True)
        if data_dir not in existed and data_dir.is_dir() and not any(data_dir.iterdir()):
            data_dir.rmdir()
        raise
    finally:
        tfds_shuffle.MAX_MEM_BUFFER_SIZE = default_buffer
        tfds.display_progress_bar(True)
        bar.close()
    seconds = time.perf_counter() - start
    n = bar.n
    if progress and not n:
        print(f"almasim/{config_name} {builder.version}: reusing {out} (--overwrite to re-package)", file=sys.stderr)
    elif progress:
        print(f"almasim/{config_name} {builder.version}: {n} cubes in {seconds:.1f} s "
              f"({n / seconds:.2f} cubes/s, {builder.bytes_read / 1e6 / seconds:.1f} MB/s of FITS read); "
              f"{_dir_bytes(out) / 1e6:.1f} MB on disk in {out}", file=sys.stderr)  # fmt: skip
    return out

"""TFDS builder of the almasim dataset: a `python -m sim generate` directory as array_record splits.

The simulator directory is the builder's manual directory
(``tfds.download.DownloadConfig(manual_dir=SIM_DIR)``); nothing is ever downloaded. Each example is
one cube, keyed by its cube index, with exactly the features of
:func:`dfjax.datasets.almasim.records.read_cube_record`. Splits are 60/20/20 by cube with a seeded
permutation (:func:`split_indices`), as in the paper (Sec. 3). Further simulator directories
(``Builder.extra_train``: params.yaml's ``regimes``, cubes of other noise kinds, sizes, antenna
configurations and products) add their cubes to the train split only, so validation and test stay
the main set's. Build with
``python -m dfjax.datasets.almasim`` or :func:`dfjax.datasets.almasim.build`; read with
``tfds.data_source('almasim/NAME', data_dir=OUT)`` (no TensorFlow needed).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from astropy.io import fits

from dfjax.datasets.almasim.records import (
    CATALOGUE_FIELDS,
    RecordError,
    read_cube_record,
)

SIM_VERSION = "1.0.0"
"""The simulator output version (SIMVERS header, ``sim.generate.VERSION``) this builder packages.
When the simulator's output changes, bump it together with ``Builder.VERSION``."""

CUBE_PATTERN, SKY_PATTERN = "cube_{:05d}.fits", "sky_{:05d}.fits"
SPLIT_FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}
EXTRA_KEY = 1_000_000  # example keys of the k-th extra training directory start at (k + 1) * EXTRA_KEY


@dataclasses.dataclass
class AlmasimConfig(tfds.core.BuilderConfig):
    """Cube shape every FITS file must have, optional cube count, and the split seed."""

    size: int = 128  # pixels along x and y
    channels: int = 128
    num_cubes: int | None = None  # None: any number (at least 3)
    split_seed: int = 0


def split_indices(n: int, seed: int) -> dict[str, np.ndarray]:
    """Cube indices 0..n-1 of each split: 20% (at least 1) validation and test, the rest train."""
    if n < 3:
        raise RecordError(f"need at least 3 cubes for train/validation/test splits, got {n}")
    n_val = max(1, int(SPLIT_FRACTIONS["validation"] * n + 0.5))
    order = np.random.default_rng(seed).permutation(n)
    n_train = n - 2 * n_val
    parts = {"train": order[:n_train], "validation": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return {name: np.sort(idx) for name, idx in parts.items()}


def _catalogue_counts(sim_dir: Path) -> dict[int, int]:
    """Rows of catalogue.csv per cube index."""
    path = sim_dir / "catalogue.csv"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        cubes = [int(row["cube"]) for row in rows]
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file (not a `python -m sim generate` directory?)") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{path}: unreadable catalogue ({type(exc).__name__}: {exc})") from None
    return {i: cubes.count(i) for i in sorted(set(cubes))}


def _check_cube(path: Path, config: AlmasimConfig, *, is_sky: bool) -> int:
    """Header checks of one FITS file (version, shape, not truncated); returns its SOURCES row count."""
    want = (1, config.channels, config.size, config.size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdul:
                hdul.readall()  # reads every header, so a truncated primary HDU shows
                header = hdul[0].header
                names = [h.name for h in hdul]
                n_sources = hdul["SOURCES"].header.get("NAXIS2", 0) if "SOURCES" in names else -1
        except FileNotFoundError:
            raise RecordError(f"{path}: no such file") from None
        except (OSError, TypeError, ValueError, IndexError) as exc:
            raise RecordError(f"{path}: not a readable FITS file ({exc})") from None
    if any("truncated" in str(w.message) for w in caught):
        raise RecordError(f"{path}: truncated FITS file (shorter than its header says)")
    version = header.get("SIMVERS")
    if version != SIM_VERSION:
        raise RecordError(f"{path}: simulator output version SIMVERS={version!r}, but almasim "
                          f"{Builder.VERSION} packages SIMVERS={SIM_VERSION!r}; to package it, bump "
                          "Builder.VERSION, SIM_VERSION and RELEASE_NOTES in almasim_dataset_builder.py")  # fmt: skip
    shape = tuple(header.get(f"NAXIS{i}", 0) for i in (4, 3, 2, 1))
    if header.get("NAXIS") != 4 or shape != want:
        raise RecordError(f"{path}: cube shape (z, y, x) = {shape[1:]}, but config {config.name!r} "
                          f"expects {want[1:]}; use the config that matches the simulation")  # fmt: skip
    if not is_sky and n_sources < 0:
        raise RecordError(f"{path}: no SOURCES extension (not written by python -m sim generate?)")
    return n_sources


def plan(sim_dir: Path, config: AlmasimConfig, *, empty_ok: bool = False) -> int:
    """Check a simulator directory against `config` before anything is written; returns the cube count.
    ``empty_ok``: a set of no cubes (``sim generate --n 0``: a catalogue without rows) counts 0, not an error."""
    counts = _catalogue_counts(sim_dir)
    on_disk = {int(p.stem.split("_")[1]) for p in sim_dir.glob("cube_*.fits") if p.stem.split("_")[1].isdigit()}
    n = max(on_disk | set(counts), default=-1) + 1
    if n == 0 and empty_ok and (sim_dir / "catalogue.csv").is_file():
        return 0
    if n == 0:
        raise RecordError(f"{sim_dir}: no cube_NNNNN.fits files and an empty catalogue.csv")
    if config.num_cubes is not None and n != config.num_cubes:
        raise RecordError(f"{sim_dir}: {n} cubes, but config {config.name!r} is a set of {config.num_cubes}")
    for i in range(n):
        cube = sim_dir / CUBE_PATTERN.format(i)
        if not cube.exists():
            why = "catalogue.csv has rows for it" if i in counts else f"cubes 0..{n - 1} expected"
            raise RecordError(f"{cube}: no such file ({why})")
        n_sources = _check_cube(cube, config, is_sky=False)
        if n_sources != counts.get(i, 0):
            raise RecordError(f"{sim_dir / 'catalogue.csv'}: {counts.get(i, 0)} rows for cube {i}, "
                              f"but {cube.name} has {n_sources} SOURCES rows")  # fmt: skip
        _check_cube(sim_dir / SKY_PATTERN.format(i), config, is_sky=True)
    return n


class Builder(tfds.core.GeneratorBasedBuilder):
    """Simulated ALMA cubes (dirty + sky model + truth catalogue) of Delli Veneri et al. (2022)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: simulator output SIMVERS 1.0.0; cubes float16 in mJy.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    The manual directory is a `python -m sim generate` output directory (cube_NNNNN.fits,
    sky_NNNNN.fits, catalogue.csv), e.g.
      python -m sim generate --config params.yaml --out data/sim --n 20
    Pass it as tfds.download.DownloadConfig(manual_dir=...) or use python -m dfjax.datasets.almasim.
    """
    BUILDER_CONFIGS: ClassVar[list[AlmasimConfig]] = [
        AlmasimConfig(name="default", size=128, channels=128,
                      description="CPU-sized: 128 x 128 x 128 cubes (params.yaml), any number."),
        AlmasimConfig(name="paper", size=360, channels=128, num_cubes=5000,
                      description="Paper scale: 5000 cubes of 360 x 360 x 128 (experiments/paper.yaml)."),
        AlmasimConfig(name="test", size=32, channels=16,
                      description="Tiny 32 x 32 x 16 cubes of dummy_data/ (make_dummy_data.sh), for tests."),
    ]  # fmt: skip
    DEFAULT_CONFIG_NAME = "default"

    extra_train: tuple[Path, ...] = ()
    """Simulator directories whose every cube goes to the train split, after the main set's (keys
    ``(k + 1) * EXTRA_KEY + i`` for cube ``i`` of the k-th directory)."""
    progress = None
    """Optional tqdm bar (total: cubes) that `_generate_examples` advances, showing MB/s of FITS read."""
    bytes_read = 0

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        cube, image = (c.channels, c.size, c.size), (c.size, c.size)
        raw = tfds.features.Encoding.BYTES  # array_record compresses records (zstd:3) itself
        f = tfds.features
        features = f.FeaturesDict({
            "dirty_cube": f.Tensor(shape=cube, dtype=np.float16, encoding=raw, doc="mJy/beam, [z, y, x]"),
            "sky_cube": f.Tensor(shape=cube, dtype=np.float16, encoding=raw, doc="mJy/pixel, [z, y, x]"),
            "integrated_dirty": f.Tensor(shape=image, dtype=np.float32, encoding=raw, doc="mJy/beam"),
            "integrated_sky": f.Tensor(shape=image, dtype=np.float32, encoding=raw, doc="mJy/pixel"),
            "catalogue": f.Tensor(shape=(None, len(CATALOGUE_FIELDS)), dtype=np.float32,
                                  doc="truth rows; columns records.CATALOGUE_FIELDS, units sim.sky"),
            "cube_index": f.Scalar(dtype=np.int64, doc="index in the simulation set"),
            "seed": f.Scalar(dtype=np.int64, doc="simulation seed of the set"),
            "noise_rms": f.Scalar(dtype=np.float32, doc="mJy/beam"),
            "target_snr": f.Scalar(dtype=np.float32, doc="target peak SNR of the central source"),
            "beam": f.Tensor(shape=(3,), dtype=np.float32, doc="bmaj, bmin (arcsec), bpa (deg)"),
            "cell_arcsec": f.Scalar(dtype=np.float32, doc="pixel size, arcsec"),
            "ra_deg": f.Tensor(shape=(), dtype=np.float64, encoding=raw, doc="phase centre RA (pixel n//2), deg"),
            "dec_deg": f.Tensor(shape=(), dtype=np.float64, encoding=raw, doc="phase centre Dec (pixel n//2), deg"),
            "freq0_hz": f.Tensor(shape=(), dtype=np.float64, encoding=raw, doc="frequency of channel 0, Hz"),
            "dfreq_hz": f.Tensor(shape=(), dtype=np.float64, encoding=raw, doc="channel width (signed), Hz"),
            "antenna_config": f.Text(doc="antenna configuration, e.g. alma.cycle9.3"),
        })  # fmt: skip
        return self.dataset_info_from_configs(features=features, disable_shuffling=True,
                                              homepage="https://doi.org/10.1093/mnras/stac3314")  # fmt: skip

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        sim_dir = Path(dl_manager.manual_dir)
        n = plan(sim_dir, self.builder_config)
        extra = [(Path(d), plan(Path(d), self.builder_config, empty_ok=True)) for d in self.extra_train]
        if len({Path(d).resolve() for d in [sim_dir, *self.extra_train]}) != 1 + len(extra):
            raise RecordError(f"--extra-train: each directory once, and not --sim-dir ({sim_dir})")
        if self.progress is not None:
            self.progress.reset(total=n + sum(m for _, m in extra))
        splits = split_indices(n, self.builder_config.split_seed)
        gens = {name: self._generate_examples(sim_dir, idx) for name, idx in splits.items()}
        if extra:
            gens["train"] = itertools.chain(gens["train"], *(
                self._generate_examples(d, np.arange(m), key_offset=(k + 1) * EXTRA_KEY) for k, (d, m) in enumerate(extra)))
        return gens

    def _generate_examples(self, sim_dir: Path, indices: np.ndarray, key_offset: int = 0):
        """Yields (key_offset + cube index, record) in increasing cube index (the split's order on disk)."""
        for i in indices.tolist():
            cube, sky = sim_dir / CUBE_PATTERN.format(i), sim_dir / SKY_PATTERN.format(i)
            record = read_cube_record(cube, sky, dtype=np.float16)
            if record["cube_index"] != i:
                raise RecordError(f"{cube}: header CUBEIDX={record['cube_index']} differs from its file name")
            self.bytes_read += cube.stat().st_size + sky.stat().st_size
            if self.progress is not None:
                elapsed = max(self.progress.format_dict["elapsed"], 1e-9)
                self.progress.set_postfix_str(f"{self.bytes_read / 1e6 / elapsed:.1f} MB/s", refresh=False)
                self.progress.update(1)
            yield key_offset + i, record

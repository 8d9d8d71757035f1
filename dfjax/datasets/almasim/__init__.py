"""The almasim dataset: simulated ALMA cubes packaged for training (see README.md).

Reading needs no import from here: ``tfds.data_source('almasim/default', data_dir=OUT)`` reads
the files' own metadata. Importing `Builder` or `build` (lazily, so that `records` stays free of
TFDS) registers the builder class with TFDS for ``tfds.builder('almasim/...')``.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Builder": "almasim_dataset_builder", "AlmasimConfig": "almasim_dataset_builder",
    "SIM_VERSION": "almasim_dataset_builder", "split_indices": "almasim_dataset_builder",
    "build": "package", "CONFIG_NAMES": "package", "RecordError": "records", "read_cube_record": "records",
}  # fmt: skip
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)

"""Input pipelines: numpy batches for Blobs Finder, Deep GRU and the ResNets (Sec. 4.1–4.5).

:mod:`dfjax.input_pipeline.transforms` holds the pure per-example functions (also used by the
detection pipeline at inference time); :mod:`dfjax.input_pipeline.loaders` the seeded, batched,
``grain``-backed loaders built on them, imported only when asked for: the detection pipeline
uses the transforms and must not load ``grain``.
"""

import importlib
from typing import Any


from dfjax.input_pipeline.transforms import (
    box_spectra,
    centre_crop,
    channel_range,
    focus_offset,
    global_snr,
    integrated_image_pair,
    line_emission_image,
    match_predictions,
    minmax_normalise,
    rotate_flip_crop,
    spectral_focus,
    spectrum_pair,
    standardise,
    truth_boxes,
)

__all__ = [
    "RESNET_TARGETS",
    "BlobsFinderData",
    "DataSource",
    "DeepGRUData",
    "ResNetData",
    "box_spectra",
    "centre_crop",
    "channel_range",
    "epoch_seed",
    "focus_offset",
    "for_model",
    "global_snr",
    "integrated_image_pair",
    "line_emission_image",
    "match_predictions",
    "minmax_normalise",
    "rotate_flip_crop",
    "spectral_focus",
    "spectrum_pair",
    "standardise",
    "truth_boxes",
]  # fmt: skip


_LOADERS = ("RESNET_TARGETS", "BlobsFinderData", "DataSource", "DeepGRUData", "ResNetData", "epoch_seed", "for_model")


def __getattr__(name: str) -> Any:
    """The loaders (and ``grain``) load on first use (PEP 562)."""
    if name in _LOADERS:
        return getattr(importlib.import_module("dfjax.input_pipeline.loaders"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

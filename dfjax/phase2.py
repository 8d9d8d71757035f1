"""Upstream predictions for the second training phase (Sec. 4.5).

Phase 2 fine-tunes the Deep GRU on the boxes Blobs Finder finds, and the ResNets on those boxes
with the channel ranges the Deep GRU finds, over the training (and validation) cubes: the
models then learn from the inputs they will see at inference time. The predictions come from
the inference pipeline itself (`dfjax.pipeline` steps 1 and 2), never from training code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from dfjax import checkpoint
from dfjax.pipeline import PipelineConfig, characterise_spectra, detect

UPSTREAM = {"deep_gru": ("blobs_finder",), "resnet": ("blobs_finder", "deep_gru")}
"""The models whose predictions each family's phase 2 trains on."""


def upstream_models(model_name: str) -> tuple[str, ...]:
    """Names of the upstream models a phase-2 run of `model_name` needs."""
    family = "resnet" if model_name.startswith("resnet_") else model_name
    if family not in UPSTREAM:
        raise ValueError(f"{model_name} has no phase 2 (the paper fine-tunes the Deep GRU and the ResNets)")
    return UPSTREAM[family]


def predicted_boxes(
    source: Sequence[dict],
    *,
    blobs_finder_dir: str | os.PathLike,
    deep_gru_dir: str | os.PathLike | None = None,
    config: PipelineConfig | None = None,
    progress: bool = True,
) -> dict[int, np.ndarray]:
    """Boxes found in each example's dirty cube, keyed by example index.

    Returns (K, 4) boxes (x0, y0, x1, y1) from Blobs Finder alone, or with `deep_gru_dir`
    (K, 6) rows (x0, y0, x1, y1, z0, z1), one per line the Deep GRU finds in a box.
    """
    blobs_finder, _ = checkpoint.load_model(blobs_finder_dir)
    config = config or PipelineConfig()
    deep_gru = checkpoint.load_model(deep_gru_dir)[0] if deep_gru_dir is not None else None
    boxes = {}
    for i in tqdm(range(len(source)), desc="upstream predictions", unit="cube", disable=not progress):
        cube = np.asarray(source[i]["dirty_cube"], np.float32)
        found = detect(blobs_finder, cube, config)
        if deep_gru is None:
            boxes[i] = found
            continue
        rows = [(*c.box, line.z0, line.z1) for c in characterise_spectra(deep_gru, cube, found, config) for line in c.lines]
        boxes[i] = np.asarray(rows, np.float64).reshape(-1, 6)
    return boxes

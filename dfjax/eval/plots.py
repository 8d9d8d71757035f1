"""Evaluation figures (Figs. 16 and 20 of the paper) and the data DVC plots them from.

:func:`write_all` writes into one directory:

- ``characterisation.png``: true vs predicted for every Table-5 parameter, with the residual
  histogram under each (Fig. 20); ``true_vs_predicted.csv`` holds the points;
- ``recall_vs_snr.png`` and ``recall_vs_snr.csv`` (recall per bin of true peak SNR);
- ``blendness.png``: histogram of the blendness (eq. 22) of all true sources and of those
  found (Fig. 16); ``blendness.csv`` holds one row per true source.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dfjax.catalogue_io import write_atomic  # noqa: E402
from dfjax.eval.metrics import PARAMETERS, angle_residual  # noqa: E402

__all__ = ["FIGURES", "write_all"]

FIGURES: tuple[str, ...] = ("characterisation.png", "recall_vs_snr.png", "blendness.png")

_LABELS = {"x": "x [px]", "y": "y [px]", "z": "z [channel]", "fwhm_x": "FWHM$_x$ [px]", "fwhm_y": "FWHM$_y$ [px]",
           "fwhm_z": "FWHM$_z$ [channel]", "pa": "pa [deg]", "flux": "line flux [Jy km/s]"}  # fmt: skip


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue().encode())


def _png(path: Path, fig: Any) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def characterisation_figure(values: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Any:
    """True vs predicted (top) and residual histograms (bottom) per parameter (Fig. 20)."""
    names = [n for n in PARAMETERS if n in values]
    fig, axes = plt.subplots(2, len(names), figsize=(2.6 * len(names), 5.4), squeeze=False)
    for k, name in enumerate(names):
        true, pred = values[name]
        ax = axes[0, k]
        ax.scatter(true, pred, s=6, alpha=0.6)
        if len(true):
            lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(_LABELS[name], fontsize=9)
        ax.set_xlabel("true", fontsize=8)
        if k == 0:
            ax.set_ylabel("predicted", fontsize=8)
        residual = angle_residual(pred, true) if name == "pa" else pred - true
        axes[1, k].hist(residual, bins=30, color="tab:orange")
        axes[1, k].set_xlabel("predicted − true", fontsize=8)
    fig.suptitle(f"Characterisation of the {len(values[names[0]][0]) if names else 0} true positives")
    fig.tight_layout()
    return fig


def write_all(results: Sequence[Any], detection: Mapping[str, Any],
              values: Mapping[str, tuple[np.ndarray, np.ndarray]], plots_dir: str | os.PathLike) -> list[Path]:  # fmt: skip
    """Write the figures and their CSV data; returns the PNG paths (``FIGURES`` order)."""
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (true, pred) in values.items():
        rows += [(name, float(t), float(p)) for t, p in zip(true, pred)]
    _csv(plots_dir / "true_vs_predicted.csv", ("parameter", "true", "predicted"), rows)
    _png(plots_dir / FIGURES[0], characterisation_figure(values))

    bins = detection["recall_by_snr"]
    labels = [f"{b['snr_min']:g}–{b['snr_max']:g}" if b["snr_max"] is not None else f"≥{b['snr_min']:g}"
              for b in bins]  # fmt: skip
    _csv(plots_dir / "recall_vs_snr.csv", ("snr_bin", "snr_min", "sources", "found", "recall"),
         [(label, b["snr_min"], b["sources"], b["found"], b["recall"]) for label, b in zip(labels, bins)])  # fmt: skip
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.bar(labels, [b["recall"] for b in bins], color="tab:blue")
    for i, b in enumerate(bins):
        ax.text(i, b["recall"] + 0.02, f"{b['found']}/{b['sources']}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("true peak SNR")
    ax.set_ylabel("recall")
    ax.set_title(f"Recall vs SNR (overall {detection['recall']:.3f})")
    _png(plots_dir / FIGURES[1], fig)

    blend, found = [], []
    for r in results:
        hit = np.isin(np.arange(len(r.truth["blendness"])), r.matching.pairs[:, 1])
        blend += list(r.truth["blendness"])
        found += list(hit)
    blend_arr, found_arr = np.asarray(blend, np.float64), np.asarray(found, bool)
    _csv(plots_dir / "blendness.csv", ("blendness", "found"), [(float(b), int(f)) for b, f in zip(blend, found)])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    edges = np.linspace(0, 1, 11)
    ax.hist(blend_arr, bins=edges, label=f"true ({len(blend_arr)})", color="lightgray", edgecolor="k")
    ax.hist(blend_arr[found_arr], bins=edges, label=f"found ({found_arr.sum()})", histtype="step", lw=2)
    ax.set_yscale("log")
    ax.set_xlabel("blendness (max 2-D IoU with another source, eq. 22)")
    ax.set_ylabel("sources")
    ax.legend()
    _png(plots_dir / FIGURES[2], fig)
    return [plots_dir / f for f in FIGURES]

"""Detection and characterisation metrics over a set of matched cubes (Sec. 5.1, Tables 4–5).

:func:`detection_metrics` sums TP/FP/FN over cubes and reports precision, recall, F1, the mean
2-D IoU of the true positives and the recall in bins of the true peak SNR;
:func:`characterisation_metrics` gives the residual (predicted − true) mean and std of every
parameter of Table 5 over the true positives, the position angle compared modulo 180°.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dfjax.eval.matching import Matching

__all__ = ["PARAMETERS", "SNR_BINS", "angle_residual", "characterisation_metrics", "detection_metrics",
           "paired_values"]  # fmt: skip

SNR_BINS: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 40.0, np.inf)
"""Edges of the true-peak-SNR bins for recall (the last bin is open)."""

PARAMETERS: tuple[str, ...] = ("x", "y", "z", "fwhm_x", "fwhm_y", "fwhm_z", "pa", "flux")
"""Table 5's parameters; ``flux`` is the line flux (Jy km/s)."""


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def detection_metrics(matchings: Sequence[Matching], truth_snr: Sequence[np.ndarray],
                      snr_bins: Sequence[float] = SNR_BINS) -> dict:  # fmt: skip
    """TP, FP, FN, precision, recall, F1, mean IoU and recall per SNR bin over all cubes.

    ``truth_snr[i]`` holds the true peak SNR of cube i's sources, in the truth order of
    ``matchings[i]``.
    """
    tp = sum(m.tp for m in matchings)
    fp = sum(m.fp for m in matchings)
    fn = sum(m.fn for m in matchings)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    ious = np.concatenate([m.iou_2d for m in matchings]) if matchings else np.zeros(0)
    found = [np.isin(np.arange(len(s)), m.pairs[:, 1]) for m, s in zip(matchings, truth_snr)]
    snr = np.concatenate([np.asarray(s, np.float64) for s in truth_snr]) if truth_snr else np.zeros(0)
    hit = np.concatenate(found) if found else np.zeros(0, bool)
    bins = []
    for lo, hi in zip(snr_bins[:-1], snr_bins[1:]):
        inside = (snr >= lo) & (snr < hi)
        bins.append({"snr_min": float(lo), "snr_max": None if np.isinf(hi) else float(hi),
                     "sources": int(inside.sum()), "found": int(hit[inside].sum()),
                     "recall": _ratio(hit[inside].sum(), inside.sum())})  # fmt: skip
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1,
            "mean_iou": float(ious.mean()) if len(ious) else 0.0, "recall_by_snr": bins}  # fmt: skip


def angle_residual(predicted_deg: np.ndarray, true_deg: np.ndarray, period: float = 180.0) -> np.ndarray:
    """Predicted − true position angle wrapped into [−period/2, period/2): an ellipse at pa and
    pa + 180° is the same ellipse."""
    d = np.asarray(predicted_deg, np.float64) - np.asarray(true_deg, np.float64)
    return (d + period / 2) % period - period / 2


def paired_values(pairs: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """{parameter: (true, predicted)} over all matched pairs; ``pairs`` holds per cube the matched
    (truth columns, prediction columns), both keyed by :data:`PARAMETERS`."""
    out = {}
    for name in PARAMETERS:
        true = [np.asarray(t[name], np.float64) for t, _ in pairs]
        pred = [np.asarray(p[name], np.float64) for _, p in pairs]
        out[name] = (np.concatenate(true) if true else np.zeros(0), np.concatenate(pred) if pred else np.zeros(0))
    return out


def characterisation_metrics(values: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Residual mean/std per parameter (Table 5) and the fractions of pa and flux within 10%, 20%.

    ``values``: {parameter: (true, predicted)} as from :func:`paired_values`. Both fractions
    use the paper's relative error |residual| / |true| (for pa the residual modulo 180°).
    """
    out: dict = {"sources": int(len(next(iter(values.values()))[0])) if values else 0}
    for name, (true, pred) in values.items():
        residual = angle_residual(pred, true) if name == "pa" else pred - true
        entry = {"mean": float(residual.mean()) if len(residual) else 0.0,
                 "std": float(residual.std()) if len(residual) else 0.0,
                 "mean_abs": float(np.abs(residual).mean()) if len(residual) else 0.0}  # fmt: skip
        if name in ("pa", "flux") and len(residual):
            scale = np.abs(true)
            relative = np.abs(residual) / np.where(scale > 0, scale, np.inf)
            entry["within_10pct"] = float((relative <= 0.1).mean())
            entry["within_20pct"] = float((relative <= 0.2).mean())
        out[name] = entry
    return out

"""Detection and characterisation metrics over a set of matched cubes (Sec. 5.1, Tables 4–5).

:func:`detection_metrics` sums TP/FP/FN over cubes and reports precision, recall, F1, the mean
2-D IoU of the true positives and the recall in bins of the true peak SNR;
:func:`characterisation_metrics` gives the residual (predicted − true) mean and std of every
parameter of Table 5 over the true positives, the position angle compared modulo 180°, each
predicted ellipse written the way its truth is (:func:`aligned_shapes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dfjax.eval.matching import Matching

__all__ = ["ELONGATED", "FLUX_ESTIMATES", "PARAMETERS", "SNR_BINS", "aligned_shapes", "angle_residual",
           "characterisation_metrics", "detection_metrics", "paired_values"]  # fmt: skip

SNR_BINS: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 40.0, np.inf)
"""Edges of the true-peak-SNR bins for recall (the last bin is open)."""

PARAMETERS: tuple[str, ...] = ("x", "y", "z", "fwhm_x", "fwhm_y", "fwhm_z", "pa", "flux")
"""Table 5's parameters; ``flux`` is the catalogue's ``line_flux`` (the flux ResNet's, Jy km/s)."""

FLUX_ESTIMATES: dict[str, str] = {"flux_measured": "line_flux_measured", "flux_fit": "line_flux_fit"}
"""The other line-flux estimates of the catalogue, scored against the same true line flux as ``flux``
(name in the metrics → catalogue column); a run whose catalogue lacks one has no such entry."""

ELONGATED = 1.2
"""True major/minor FWHM ratio from which a source counts as non-circular for ``pa_elongated``:
the paper's Fig. 22 finds most pa failures on almost circular sources, where pa is undefined."""


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


def aligned_shapes(true_fx: np.ndarray, true_fy: np.ndarray, fx: np.ndarray, fy: np.ndarray,
                   pa: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Predicted (fwhm_x, fwhm_y, pa) written as the truth writes its ellipse.

    (fx, fy, pa) and (fy, fx, pa + 90°) are one ellipse, and both the truth and the pipeline fold
    pa into [0°, 90°): a source at pa 89° fitted at 91° comes out as (fy, fx, 1°). Each prediction
    is given in the form whose sizes lie closer to its truth's, so the residuals measure the
    ellipse, not the labelling.
    """
    fx, fy, pa = (np.asarray(a, np.float64) for a in (fx, fy, pa))
    swap = np.abs(fy - true_fx) + np.abs(fx - true_fy) < np.abs(fx - true_fx) + np.abs(fy - true_fy)
    return np.where(swap, fy, fx), np.where(swap, fx, fy), np.where(swap, (pa + 90.0) % 180.0, pa)


def paired_values(pairs: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """{parameter: (true, predicted)} over all matched pairs; ``pairs`` holds per cube the matched
    (truth columns, prediction columns), both keyed by :data:`PARAMETERS` (the predictions also by
    those of :data:`FLUX_ESTIMATES` they have, scored against the true ``flux``). The shapes are
    :func:`aligned_shapes`; ``pa_elongated`` is ``pa`` over the sources of true axis ratio ≥ :data:`ELONGATED`."""
    out = {}
    names = [*PARAMETERS, *(k for k in FLUX_ESTIMATES if pairs and all(k in p for _, p in pairs))]
    for name in names:
        key = "flux" if name in FLUX_ESTIMATES else name
        true = [np.asarray(t[key], np.float64) for t, _ in pairs]
        pred = [np.asarray(p[name], np.float64) for _, p in pairs]
        out[name] = (np.concatenate(true) if true else np.zeros(0), np.concatenate(pred) if pred else np.zeros(0))
    (tx, fx), (ty, fy), (tpa, pa) = out["fwhm_x"], out["fwhm_y"], out["pa"]
    fx, fy, pa = aligned_shapes(tx, ty, fx, fy, pa)
    out["fwhm_x"], out["fwhm_y"], out["pa"] = (tx, fx), (ty, fy), (tpa, pa)
    elongated = np.maximum(tx, ty) >= ELONGATED * np.minimum(tx, ty)
    out["pa_elongated"] = (tpa[elongated], pa[elongated])
    return out


def characterisation_metrics(values: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Residual mean/std per parameter (Table 5) and the fractions of pa and flux within 10%, 20%.

    ``values``: {parameter: (true, predicted)} as from :func:`paired_values`. Both fractions
    use the paper's relative error |residual| / |true| (for pa the residual modulo 180°). A
    prediction that is not finite (a flux estimate the run has no value for) is left out, and an
    entry over another number of sources than the first says how many.
    """
    out: dict = {"sources": int(len(next(iter(values.values()))[0])) if values else 0}
    for name, (true, pred) in values.items():
        finite = np.isfinite(pred)
        if not finite.any() and len(pred):
            continue
        true, pred = true[finite], pred[finite]
        residual = angle_residual(pred, true) if name.startswith("pa") else pred - true
        entry = {"mean": float(residual.mean()) if len(residual) else 0.0,
                 "std": float(residual.std()) if len(residual) else 0.0,
                 "mean_abs": float(np.abs(residual).mean()) if len(residual) else 0.0}  # fmt: skip
        if len(residual) != out["sources"]:
            entry["sources"] = int(len(residual))
        if (name.startswith("pa") or name.startswith("flux")) and len(residual):
            scale = np.abs(true)
            relative = np.abs(residual) / np.where(scale > 0, scale, np.inf)
            entry["within_10pct"] = float((relative <= 0.1).mean())
            entry["within_20pct"] = float((relative <= 0.2).mean())
        out[name] = entry
    return out

"""``reports/evaluation.md``: the detection table (Table 4, with the baselines), the
characterisation table (Table 5) and the figures, from the evaluate stage's metrics."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dfjax.catalogue_io import write_atomic

__all__ = ["write_report"]


def _row(name: str, d: Mapping[str, Any]) -> str:
    return (f"| {name} | {d['tp']} | {d['fp']} | {d['fn']} | {d['precision']:.3f} | {d['recall']:.3f} | "
            f"{d['f1']:.3f} | {d['mean_iou']:.3f} |")  # fmt: skip


def _comparison(characterisation: Mapping[str, Any],
                compared: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[str]:
    """Table 5 side by side: residual std per parameter (and within 10% for pa and flux), each run on its own TPs."""
    runs = {"dfjax pipeline": characterisation} | {name: c for name, (_, c) in compared.items()}
    lines = ["Table 5 side by side (each on its own true positives; the paper's: FWHM std 0.46 / 0.45 px, "
             "pa within 10% for 73%, line flux within 10% for 80%):", "",
             "| parameter | " + " | ".join(f"{name} ({c['sources']} TPs)" for name, c in runs.items()) + " |",
             "|---|" + "---|" * len(runs)]
    names = list(dict.fromkeys(k for c in runs.values() for k, v in c.items() if isinstance(v, Mapping)))
    for name in names:  # every run's parameters, a flux estimate only one of them has too
        cells = []
        for c in runs.values():
            e = c.get(name)
            text = "–" if not isinstance(e, Mapping) else f"std {e['std']:.3g}"
            if isinstance(e, Mapping) and "within_10pct" in e:
                text += f", {e['within_10pct']:.0%} within 10%"
            if isinstance(e, Mapping) and "sources" in e:
                text += f" ({e['sources']} sources)"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_report(path: str | os.PathLike, detection: Mapping[str, Any], characterisation: Mapping[str, Any],
                 figures: Sequence[Path], *, baselines: Mapping[str, Any] | None = None,
                 compared: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]] | None = None) -> None:  # fmt: skip
    """Write the Markdown report atomically; figure links are relative to the report.

    ``compared``: other configurations of the same models on the same split, name → (detection,
    characterisation) metrics, shown as rows of Table 4 and columns of a Table-5 comparison.
    """
    compared = dict(compared or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    split = detection.get("split", "test")
    lines = [
        "# Evaluation",
        "",
        f"The pipeline (`python -m dfjax.infer`'s code, thresholds tuned on the validation split) on the "
        f"{detection['cubes']} cubes of the **{split}** split, {detection['seconds_per_cube']:.2f} s per cube. "
        "A true positive needs 2-D IoU ≥ 0.6, box centres < 3 px apart and 1-D IoU ≥ 0.6 on the emission "
        "range (Sec. 5.1); the 2-D columns drop the last test, as the paper did for BLOBCAT.",
        "",
        "## Detection (Table 4)",
        "",
        "| method | TP | FP | FN | precision | recall | F1 | mean IoU |",
        "|---|---|---|---|---|---|---|---|",
        _row("dfjax pipeline", detection),
        _row("dfjax pipeline (2-D criteria)", detection["criteria_2d_only"]),
        *(_row(name, d) for name, (d, _) in compared.items()),
    ]
    for name, entry in (baselines or {}).items():
        if isinstance(entry, Mapping) and "detection" in entry:
            lines.append(_row(f"{name} (tuned on validation)", entry["detection"]))
            if "detection_2d" in entry:
                lines.append(_row(f"{name} (2-D criteria)", entry["detection_2d"]))
    lines += ["", "Recall by true peak SNR:", "", "| SNR | sources | found | recall |", "|---|---|---|---|"]
    for b in detection["recall_by_snr"]:
        hi = "∞" if b["snr_max"] is None else f"{b['snr_max']:g}"
        lines.append(f"| {b['snr_min']:g}–{hi} | {b['sources']} | {b['found']} | {b['recall']:.3f} |")
    lines += ["", f"## Characterisation of the {characterisation['sources']} true positives (Table 5)", "",
              "| parameter | mean residual | std | mean abs | within 10% | within 20% |", "|---|---|---|---|---|---|"]
    for name, entry in characterisation.items():
        if not isinstance(entry, Mapping):
            continue
        within = (f"{entry['within_10pct']:.2f} | {entry['within_20pct']:.2f}" if "within_10pct" in entry
                  else "– | –")  # fmt: skip
        lines.append(f"| {name} | {entry['mean']:.4g} | {entry['std']:.4g} | {entry['mean_abs']:.4g} | {within} |")
    lines += ["", "Units: pixels (x, y, FWHMs), channels (z, FWHM_z), degrees (pa, residual modulo 180°), "
              "Jy km/s (line flux). Each fitted ellipse is compared in the form (fwhm_x, fwhm_y, pa) or "
              "(fwhm_y, fwhm_x, pa + 90°) closer to its truth's; `pa_elongated` is pa over the sources of true "
              "axis ratio ≥ 1.2; `flux` is the catalogue's `line_flux` (the flux ResNet), `flux_measured` "
              "its `line_flux_measured`, `flux_fit` its `line_flux_fit` (scene fit only).", ""]
    if compared:
        lines += _comparison(characterisation, compared)
    lines += ["## Figures", ""]
    for figure in figures:
        lines.append(f"![{figure.stem}]({os.path.relpath(figure, path.parent)})")
        lines.append("")
    write_atomic(path, "\n".join(lines).encode())

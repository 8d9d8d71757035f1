"""Reliability of each detection from the same search run on the sign-inverted cube (ALMA line-search fidelity).

Thermal noise of an interferometric cube is symmetric about zero, so every detection the
pipeline makes on ``−cube`` is spurious, and the number of negative detections above an SNR
estimates the number of spurious positive ones above it (ASPECS, Walter et al. 2016; González-López
et al. 2019: "fidelity"). For a positive source of SNR ``s``::

    R_raw(s) = 1 − N_neg(≥ s) / N_pos(≥ s)          (counts cumulative above s, N_pos(≥ s) ≥ 1)
    R(s)     = min over positive SNRs t ≥ s of clip(R_raw(t), 0, 1)

The second line makes ``R`` non-decreasing in SNR with the *lower* envelope: a source is never
called more reliable than any brighter one, so a small-number fluctuation at the faint end
cannot lift it (the conservative choice; one bright negative, e.g. a sidelobe of a bright
source, lowers every fainter source's reliability). Counts are cumulative, not binned, so no
bin width is chosen; SoFiA-2's smoothed reliability (a kernel density in peak/sum/mean space)
is not attempted. Which SNR: the catalogue's ``line_snr`` column when it has one, else ``snr``
(the focused global SNR, eq. 17), the same column for both signs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from astropy.table import QTable

from dfjax.catalogue_io import COLUMNS
from dfjax.cube_io import Cube

__all__ = ["DESCRIPTION", "add_reliability", "negated", "reliability", "snr_column_of"]

DESCRIPTION = ("1 - N_neg(>=snr)/N_pos(>=snr): negative detections (the same search on -cube) over positive "
               "ones above this SNR, clipped to [0, 1], lower envelope over higher SNRs")  # fmt: skip
"""The ``reliability`` column's description, as written into the catalogue."""


def reliability(positive_snr: np.ndarray, negative_snr: np.ndarray) -> np.ndarray:
    """(N,) reliability R of each of the N positive detections' SNRs, given the negative detections' SNRs.

    Parameters
    ----------
    positive_snr : (N,) SNRs of the detections on the cube.
    negative_snr : (M,) SNRs of the detections on ``−cube`` (same search, same SNR definition).

    Returns
    -------
    (N,) float64 in [0, 1], in the order of ``positive_snr``; non-decreasing in SNR.
    """
    positive = np.asarray(positive_snr, np.float64).ravel()
    negative = np.sort(np.asarray(negative_snr, np.float64).ravel())
    if not (np.all(np.isfinite(positive)) and np.all(np.isfinite(negative))):
        raise ValueError("SNRs must be finite")
    if positive.size == 0:
        return np.zeros(0)
    order = np.argsort(positive, kind="stable")
    s = positive[order]
    n_pos = positive.size - np.searchsorted(s, s, side="left")  # N_pos(≥ s), ties counted
    n_neg = negative.size - np.searchsorted(negative, s, side="left")  # N_neg(≥ s)
    raw = np.clip(1.0 - n_neg / n_pos, 0.0, 1.0)
    envelope = np.minimum.accumulate(raw[::-1])[::-1]  # min over every t ≥ s
    out = np.empty_like(envelope)
    out[order] = envelope
    return out


def snr_column_of(table: QTable, snr_column: str | None = None) -> str:
    """The SNR column reliability is computed on: ``snr_column``, else ``line_snr`` when present, else ``snr``."""
    name = snr_column or ("line_snr" if "line_snr" in table.colnames else "snr")
    if name not in table.colnames:
        raise ValueError(f"the catalogue has no {name!r} column")
    return name


def negated(cube: Cube) -> Cube:
    """The sign-inverted cube (blanks stay blank): what the search finds in it is noise."""
    return dataclasses.replace(cube, data=-cube.data)


def add_reliability(table: QTable, negative: QTable, *, snr_column: str | None = None) -> QTable:
    """Add the ``reliability`` column to ``table`` (positive detections) from ``negative`` (those on −cube)."""
    name = snr_column_of(table, snr_column)
    values = reliability(np.asarray(table[name], float), np.asarray(negative[name], float))
    table["reliability"] = values
    table["reliability"].info.description = DESCRIPTION
    table["reliability"].info.meta = {"ucd": COLUMNS["reliability"].ucd}
    table.meta.update({"RELSNR": name, "RELNPOS": len(table), "RELNNEG": len(negative)})
    return table


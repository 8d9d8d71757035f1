"""The source record every stage hands on, and the catalogue rows made of it.

:class:`Source` is one catalogue row in pixel units (x column, y row, z channel, all 0-based);
:func:`catalogue_rows` turns a list of them into a numpy structured array. Unit conversion
(pixels → sky, channels → frequency, cube units → Jy) is the caller's (``dfjax.infer``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dfjax.pipeline.scene import Fitted

__all__ = ["Source", "catalogue_rows", "fit_columns"]


@dataclasses.dataclass(frozen=True)
class Source:
    """One catalogue row, pixel units: x, y field pixels (x column, y row), z channel, all 0-based.

    fwhm_x, fwhm_y pixels; pa degrees (sim.sky convention); fwhm_z channels;
    peak_flux, continuum cube units; line_flux the flux ResNet's (training
    target units, Jy km/s for almasim-trained models); line_flux_measured
    cube-units · channels · pixels / beam_area_px (see :mod:`dfjax.pipeline.flux`);
    snr the focused global SNR (eq. 17); box (x0, y0, x1, y1) half-open field
    pixels, (z0, z1) the emission range in channels; flags ⊆ ("blended", "deblended", "residual",
    "searched", "unresolved"): "searched" when the line search (``search.enabled``) found it,
    "residual" as well when it was found with the other sources subtracted (``search.residual``),
    "unresolved" when the scene fit's size is consistent with zero (:func:`dfjax.pipeline.joint.unresolved`).
    """

    x: float
    y: float
    z: float
    fwhm_x: float
    fwhm_y: float
    pa: float
    fwhm_z: float
    peak_flux: float
    line_flux: float
    line_flux_measured: float
    continuum: float
    snr: float
    x0: int
    y0: int
    x1: int
    y1: int
    z0: float
    z1: float
    flags: tuple[str, ...] = ()
    line_snr: float = float("nan")  # the SNR that decided: refinement's line SNR, or the joint fit's A/σ(A)
    line_flux_fit: float = float("nan")  # the fitted model's Σ, cube units · channels (as line_flux_measured)
    err_x: float = float("nan")  # 1σ errors from the joint fit's covariance (scene.enabled), else NaN
    err_y: float = float("nan")
    err_fwhm_x: float = float("nan")
    err_fwhm_y: float = float("nan")
    err_pa: float = float("nan")
    err_z: float = float("nan")
    err_fwhm_z: float = float("nan")
    err_line_flux_fit: float = float("nan")


def fit_columns(f: Fitted) -> dict[str, float]:
    """A scene fit's line SNR, model flux and 1σ errors as :class:`Source` fields."""
    e = f.errors
    return {"line_snr": f.snr, "line_flux_fit": f.line_flux, "err_line_flux_fit": e["line_flux"],
            **{f"err_{k}": e[k] for k in ("x", "y", "fwhm_x", "fwhm_y", "pa", "z", "fwhm_z")}}


_FLAG_WIDTH = 64


def catalogue_rows(sources: Sequence[Source]) -> np.ndarray:
    """Sources → numpy structured array (N,), one field per :class:`Source` field; flags comma-joined."""
    dtype = []
    for f in dataclasses.fields(Source):
        if f.name == "flags":
            dtype.append((f.name, f"U{_FLAG_WIDTH}"))
        elif f.name in ("x0", "y0", "x1", "y1"):
            dtype.append((f.name, np.int64))
        else:
            dtype.append((f.name, np.float64))
    rows = np.zeros(len(sources), dtype=dtype)
    for i, s in enumerate(sources):
        values = dataclasses.asdict(s)
        values["flags"] = ",".join(s.flags)
        rows[i] = tuple(values[name] for name, _ in dtype)
    return rows

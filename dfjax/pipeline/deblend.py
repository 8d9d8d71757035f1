"""The refinement stage (``characterise.refine_iterations`` > 0; not in the paper): detections
refined on the data, cut on their line SNR and deblended.

1. With ``search.enabled`` the line search's candidates (:mod:`dfjax.pipeline.search`) join the
   detections of steps (i)–(iii) (:func:`refined_sources`).
2. Each is refined (:func:`dfjax.pipeline.refine.refine`: line on the matched spectrum, shape
   through the beam); those under ``characterise.min_line_snr`` are dropped, and of two that
   now share channels and a place (:func:`_same_source`) the weaker line goes (:func:`_merged`).
3. With ``characterise.neighbours``, the detections no kept source accounts for are refined again
   beside the kept ones (:func:`_retried`), and each source again with the others in its
   channels fitted alongside (:func:`_refit_with_neighbours`); cut and merged again.
4. With ``search.residual``, the cube minus the kept sources is searched again and what no kept
   source accounts for is refined beside them (:func:`_residual_found`), cut, merged, and refined
   with its neighbours as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dfjax.maths import FWHM_PER_SIGMA, unit_gaussian_2d
from dfjax.pipeline.characterise import Morphology, beam_psf
from dfjax.pipeline.config import PipelineConfig
from dfjax.pipeline.focus import Detection
from dfjax.pipeline.gaussfit import Neighbour
from dfjax.pipeline.refine import Refined, refine
from dfjax.pipeline.search import (
    RESIDUAL,
    SEARCHED,
    channel_noise,
    line_cube,
    peak_detections,
    residual_search,
    searched_detections,
)

__all__ = ["ACCOUNTED_LEVEL", "NEIGHBOUR_REACH_FWHM", "refine_detections", "refined_sources"]

_DEFAULTS = PipelineConfig()


def refined_sources(cube: np.ndarray, detections: Sequence[Detection], shapes: Sequence[Morphology],
                    config: PipelineConfig = _DEFAULTS) -> tuple[list[Detection], list[Morphology]]:  # fmt: skip
    """The stage of the module docstring: steps (i)–(iv)'s detections and first-guess shapes, and
    with ``search.enabled`` the line search's (ii′), → the refined sources that pass the cut."""
    psf = beam_psf(cube, config)
    line = line_cube(cube) if config.search.enabled or config.characterise.line_noise == "beam" else None
    if config.search.enabled and psf is not None:
        found, first_guess = searched_detections(cube, config, line=line)
        detections, shapes = [*detections, *found], [*shapes, *first_guess]
    return refine_detections(cube, detections, shapes, config, psf=psf, line=line)


def _within(a: Morphology, x: float, y: float, level: float) -> bool:
    """Whether (x, y) lies inside ``a``'s Gaussian down to ``level`` of its peak."""
    sx, sy = (max(v, 1e-3) / FWHM_PER_SIGMA for v in (a.fwhm_x, a.fwhm_y))
    return bool(unit_gaussian_2d(x - a.x, y - a.y, sx, sy, np.deg2rad(a.pa)) >= level)


def _same_source(a: Morphology, b: Morphology, config: PipelineConfig) -> bool:
    """Whether ``b``'s centre lies within ``focus.deblend_distance_px`` of ``a``'s or inside ``a``'s
    Gaussian down to ``characterise.box_level`` of its peak (``a``'s catalogue box ellipse)."""
    if np.hypot(b.x - a.x, b.y - a.y) <= config.focus.deblend_distance_px:
        return True
    return _within(a, b.x, b.y, config.characterise.box_level)


def refine_detections(cube: np.ndarray, detections: Sequence[Detection], shapes: Sequence[Morphology],
                      config: PipelineConfig = _DEFAULTS, *, psf: np.ndarray | None = None,
                      line: np.ndarray | None = None) -> tuple[list[Detection], list[Morphology]]:  # fmt: skip
    """Each detection's line and shape refined on the data (:mod:`dfjax.pipeline.refine`); those whose
    line SNR is under ``characterise.min_line_snr`` dropped, and of two that now share channels and
    a place (:func:`_same_source`), the one with the weaker line. With ``characterise.neighbours``,
    the detections no kept source accounts for are refined again beside the kept ones
    (:func:`_retried`), then each source is refined again with the others in its channels fitted
    alongside, and cut and merged again. With ``search.residual``, the cube with the kept sources
    subtracted is searched again, and what no kept source accounts for is refined beside them
    (:func:`_residual_found`), cut, merged, and refined with its neighbours as before. Order kept,
    new sources last. Without noise to measure the beam from, the input comes back unchanged.
    ``psf``: the beam, when already measured; ``line``: the cube's
    :func:`~dfjax.pipeline.search.line_cube`, when already made."""
    psf = beam_psf(cube, config) if psf is None else psf
    if psf is None:
        return list(detections), list(shapes)
    residual = config.search.enabled and config.search.residual
    if line is None and (residual or config.characterise.line_noise == "beam"):
        line = line_cube(cube)
    noise = channel_noise(cube, line=line) if config.characterise.line_noise == "beam" else None
    out = _merged(_refined(cube, psf, detections, shapes, config, noise), config)
    if config.characterise.neighbours:
        out = _merged(out + _retried(cube, psf, detections, shapes, out, config, noise), config)
        out = _merged(_refit_with_neighbours(cube, psf, out, config, noise), config)
    if residual:
        found = _residual_found(cube, psf, line, out, config, noise, first=len(detections))
        if found:
            out = _merged(out + found, config)
            if config.characterise.neighbours:
                out = _merged(_refit_with_neighbours(cube, psf, out, config, noise), config)
    out.sort(key=lambda t: t[0])
    return [d for _, _, d, _ in out], [m for _, _, _, m in out]


_Item = tuple[int, float, Detection, Morphology]  # (input order, line SNR, detection, shape)
NEIGHBOUR_REACH_FWHM = 1.5  # a neighbour's line shines into channels within this many of its FWHMs
ACCOUNTED_LEVEL = 0.5  # a detection whose first guess is inside a kept source's Gaussian above this is that source's


def _item(order: int, d: Detection, r: Refined, config: PipelineConfig) -> _Item:
    """A refined detection as an item: its line and emission range, and its shape, from ``r``."""
    k = config.spectra.emission_half_width_fwhm
    d = dataclasses.replace(d, z=r.z, fwhm_z=r.fwhm_z, z0=r.z - k * r.fwhm_z, z1=r.z + k * r.fwhm_z,
                            line_snr=r.line_snr)  # fmt: skip
    return order, r.line_snr, d, Morphology(x=r.x, y=r.y, fwhm_x=r.fwhm_x, fwhm_y=r.fwhm_y, pa=r.pa)


def _refine(cube: np.ndarray, psf: np.ndarray, d: Detection, m: Morphology, config: PipelineConfig,
            noise: np.ndarray | None, *, neighbours: Sequence[Neighbour] = ()) -> Refined:  # fmt: skip
    """:func:`~dfjax.pipeline.refine.refine` of detection ``d`` from shape ``m``, ``neighbours`` fitted alongside."""
    return refine(cube, psf, x=m.x, y=m.y, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa, z=d.z, fwhm_z=d.fwhm_z,
                  config=config, neighbours=neighbours, channel_noise=noise)  # fmt: skip


def _refined(cube: np.ndarray, psf: np.ndarray, detections: Sequence[Detection], shapes: Sequence[Morphology],
             config: PipelineConfig, noise: np.ndarray | None = None) -> list[_Item]:  # fmt: skip
    """Each detection refined (:func:`~dfjax.pipeline.refine.refine`); those under the line-SNR cut dropped."""
    kept = []
    for i, (d, m) in enumerate(zip(detections, shapes)):
        r = _refine(cube, psf, d, m, config, noise)
        if r.line_snr >= config.characterise.min_line_snr:
            kept.append(_item(i, d, r, config))
    return kept


def _refit_with_neighbours(cube: np.ndarray, psf: np.ndarray, items: list[_Item], config: PipelineConfig,
                           noise: np.ndarray | None = None) -> list[_Item]:  # fmt: skip
    """Each source refined again, strongest first, with the others that shine in its channels
    fitted alongside (their current shapes fixed, amplitudes free); those now under the line-SNR
    cut dropped."""
    items = list(items)
    for i in range(len(items)):
        order, _, d, m = items[i]
        neighbours = _neighbours(d, items[:i] + items[i + 1 :])
        if not neighbours:
            continue
        r = _refine(cube, psf, d, m, config, noise, neighbours=neighbours)
        items[i] = _item(order, d, r, config)
    return [item for item in items if item[1] >= config.characterise.min_line_snr]


def _neighbours(d: Detection, others: Sequence[_Item]) -> list[Neighbour]:
    """The shapes of ``others`` whose lines shine into ``d``'s emission range."""
    return [Neighbour(x=o.x, y=o.y, fwhm_x=o.fwhm_x, fwhm_y=o.fwhm_y, pa=o.pa) for _, _, e, o in others
            if e.z - NEIGHBOUR_REACH_FWHM * e.fwhm_z <= d.z1 and d.z0 <= e.z + NEIGHBOUR_REACH_FWHM * e.fwhm_z]


def _accounted(d: Detection, m: Morphology, kept: Sequence[_Item]) -> bool:
    """Whether a kept source accounts for detection ``d`` at first guess ``m``: shares its channels and
    holds ``m``'s centre inside its Gaussian above ``ACCOUNTED_LEVEL`` of its peak."""
    return any(d.z0 <= e.z1 and e.z0 <= d.z1 and _within(o, m.x, m.y, ACCOUNTED_LEVEL) for _, _, e, o in kept)


def _retried(cube: np.ndarray, psf: np.ndarray, detections: Sequence[Detection], shapes: Sequence[Morphology],
             kept: list[_Item], config: PipelineConfig, noise: np.ndarray | None = None) -> list[_Item]:  # fmt: skip
    """The detections no kept source accounts for, refined again from their first guess with the kept
    sources in their channels fitted alongside; those under the line-SNR cut dropped.

    A faint source near a brighter one, fitted alone, takes the brighter one's line and flank for
    its own and drifts onto it, where it is merged away. A detection is accounted for when its
    first guess lies inside a kept source's FWHM ellipse in shared channels; one with no kept
    source in its channels would only repeat its first refinement.
    """
    out = []
    for i, (d, m) in enumerate(zip(detections, shapes)):
        if _accounted(d, m, kept):
            continue
        neighbours = _neighbours(d, kept)
        if not neighbours:
            continue
        r = _refine(cube, psf, d, m, config, noise, neighbours=neighbours)
        if r.line_snr >= config.characterise.min_line_snr:
            out.append(_item(i, d, r, config))
    return out


def _residual_found(cube: np.ndarray, psf: np.ndarray, line: np.ndarray, kept: list[_Item], config: PipelineConfig,
                    noise: np.ndarray | None = None, *, first: int) -> list[_Item]:  # fmt: skip
    """New sources from the line search on the cube with the ``kept`` ones subtracted
    (:func:`~dfjax.pipeline.search.residual_search`): each candidate no kept source accounts for
    (as in :func:`_retried`) refined with the kept sources in its channels fitted alongside, and
    cut. Their input order starts at ``first``, after every detection's."""
    peaks = residual_search(cube, psf, [(d, m) for _, _, d, m in kept], config, line=line)
    detections, shapes = peak_detections(cube, peaks, config, flags=frozenset({SEARCHED, RESIDUAL}))
    out = []
    for i, (d, m) in enumerate(zip(detections, shapes)):
        if _accounted(d, m, kept):
            continue
        r = _refine(cube, psf, d, m, config, noise, neighbours=_neighbours(d, kept))
        if r.line_snr >= config.characterise.min_line_snr:
            out.append(_item(first + i, d, r, config))
    return out


def _merged(items: list[_Item], config: PipelineConfig) -> list[_Item]:
    """Strongest line first, each item kept unless a kept one shares its channels and place."""
    out: list[_Item] = []
    for item in sorted(items, key=lambda t: -t[1]):
        _, _, d, m = item
        if not any(d.z0 <= e.z1 and e.z0 <= d.z1 and _same_source(o, m, config) for _, _, e, o in out):
            out.append(item)
    return out

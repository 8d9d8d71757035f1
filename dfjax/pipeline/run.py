"""The six steps of Sec. 4.4 in order (Fig. 9): a dirty cube and six models → a source list.

:class:`Models` holds the six trained models (``Models.load(model_dir)`` reads
``model_dir/<name>`` for each of ``MODEL_NAMES``); :func:`run_pipeline` runs
detect → spectra → focus → characterise (→ the line search when
``search.enabled``, → refine when ``characterise.refine_iterations`` > 0) → model3d → flux and returns
:class:`Source` rows in pixel units; :func:`catalogue_rows` turns them into a
numpy structured array. Unit conversion (pixels → sky, channels → frequency,
cube units → Jy) is the caller's (``dfjax.infer``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np

from dfjax import checkpoint
from dfjax.maths import FWHM_PER_SIGMA
from dfjax.pipeline._apply import Model
from dfjax.pipeline.characterise import (
    Morphology,
    beam_psf,
    estimate_morphology,
    model_box,
)
from dfjax.pipeline.config import PipelineConfig
from dfjax.pipeline.detect import detect
from dfjax.pipeline.flux import estimate_line_flux, measure_flux
from dfjax.pipeline.focus import Detection, focus_candidates
from dfjax.pipeline.gaussfit import Neighbour
from dfjax.pipeline.joint import scene_sources
from dfjax.pipeline.model3d import segmentation_mask
from dfjax.pipeline.refine import Refined, refine
from dfjax.pipeline.scene import Fitted
from dfjax.pipeline.search import (
    RESIDUAL,
    SEARCHED,
    channel_noise,
    line_cube,
    peak_detections,
    residual_search,
    searched_detections,
)
from dfjax.pipeline.spectra import characterise_spectra

__all__ = ["MODEL_NAMES", "Models", "Source", "catalogue_rows", "refine_detections", "run_pipeline"]

_DEFAULTS = PipelineConfig()
MODEL_NAMES: tuple[str, ...] = ("blobs_finder", "deep_gru", "resnet_fwhm_x", "resnet_fwhm_y", "resnet_pa",
                                "resnet_flux")  # fmt: skip
"""The six models, and the sub-directory of ``model_dir`` each is loaded from."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One catalogue row, pixel units: x, y field pixels (x column, y row), z channel, all 0-based.

    fwhm_x, fwhm_y pixels; pa degrees (sim.sky convention); fwhm_z channels;
    peak_flux, continuum cube units; line_flux the flux ResNet's (training
    target units, Jy km/s for almasim-trained models); line_flux_measured
    cube-units · channels · pixels / beam_area_px (see :mod:`dfjax.pipeline.flux`);
    snr the focused global SNR (eq. 17); box (x0, y0, x1, y1) half-open field
    pixels, (z0, z1) the emission range in channels; flags ⊆ ("blended", "deblended", "residual",
    "searched"): "searched" when the line search (``search.enabled``) found it, "residual" as well
    when it was found with the other sources subtracted (``search.residual``).
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
    line_snr: float = float("nan")  # the SNR that decided: the joint fit's A/σ(A) (scene.enabled)
    line_flux_fit: float = float("nan")  # the fitted model's Σ, cube units · channels (as line_flux_measured)
    err_x: float = float("nan")  # 1σ errors from the joint fit's covariance (scene.enabled), else NaN
    err_y: float = float("nan")
    err_fwhm_x: float = float("nan")
    err_fwhm_y: float = float("nan")
    err_pa: float = float("nan")
    err_z: float = float("nan")
    err_fwhm_z: float = float("nan")
    err_line_flux_fit: float = float("nan")


@dataclasses.dataclass(frozen=True)
class Models:
    """The six models of Fig. 9 (trained ``nnx`` modules or stand-in callables)."""

    blobs_finder: Model
    deep_gru: Model
    resnet_fwhm_x: Model
    resnet_fwhm_y: Model
    resnet_pa: Model
    resnet_flux: Model

    @classmethod
    def load(cls, model_dir: str | Path, *, which: str = "best", config: PipelineConfig | None = None) -> Self:
        """Load ``model_dir/<name>`` for each of ``MODEL_NAMES``; ``ValueError`` when one does not fit.

        Checks: each directory holds the model its name says; the ResNets take
        one-channel images; with ``config``, Blobs Finder's input side equals
        ``config.detect.crop_size``.
        """
        model_dir = Path(model_dir)
        loaded = {}
        for name in MODEL_NAMES:
            directory = model_dir / name
            if not directory.is_dir():
                raise ValueError(f"{directory}: missing; expected one trained model per name in {model_dir}: "
                                 f"{', '.join(MODEL_NAMES)}")  # fmt: skip
            try:
                model, model_config = checkpoint.load_model(directory, which=which)
            except FileNotFoundError as e:
                raise ValueError(f"{directory}: not a dfjax checkpoint ({e})") from e
            if model_config.get("model") != name:
                raise ValueError(f"{directory}: holds a {model_config.get('model')!r} model, expected {name!r}")
            loaded[name] = model
        models = cls(**loaded)
        models.check(config=config)
        return models

    def check(self, *, nz: int | None = None, config: PipelineConfig | None = None) -> None:
        """Raise ``ValueError`` if the models disagree with each other, the cube's ``nz`` or ``config``."""
        length = getattr(self.deep_gru, "spectrum_length", None)
        if nz is not None and length is not None and length != nz:
            raise ValueError(f"Deep GRU takes spectra of {length} channels, the cube has {nz}")
        side = getattr(self.blobs_finder, "image_size", None)
        if config is not None and side is not None and side != config.detect.crop_size:
            raise ValueError(f"Blobs Finder takes {side}x{side} images but detect.crop_size is "
                             f"{config.detect.crop_size}")  # fmt: skip
        for name in MODEL_NAMES[2:]:
            channels = getattr(getattr(self, name), "in_features", 1)
            if channels != 1:
                raise ValueError(f"{name} takes {channels}-channel images; the pipeline feeds 1-channel images")


def run_pipeline(cube: np.ndarray, models: Models, config: PipelineConfig = _DEFAULTS, *,
                 beam_area_px: float = 1.0, psf: np.ndarray | None = None) -> list[Source]:  # fmt: skip
    """Steps (i)–(vi): dirty cube (nz, ny, nx), cube units as in training → sources, in detection order.

    ``beam_area_px`` (pixels per beam) only scales ``line_flux_measured``; ``psf`` (odd square, unit
    peak at its centre): the beam for the scene fit (``scene.enabled``), else measured on the noise.
    """
    cube = np.asarray(cube, np.float32)
    if cube.ndim != 3:
        raise ValueError(f"expected a cube (nz, ny, nx), got shape {cube.shape}")
    models.check(nz=cube.shape[0], config=config)
    clean = np.nan_to_num(cube, nan=0.0) if not np.isfinite(cube).all() else cube
    boxes = detect(models.blobs_finder, clean, config)  # (i)
    candidates = characterise_spectra(models.deep_gru, clean, boxes, config)  # (ii)
    detections = focus_candidates(clean, candidates, config)  # (iii)
    shapes = estimate_morphology(models.resnet_fwhm_x, models.resnet_fwhm_y, models.resnet_pa, detections,
                                 config, cube=clean)  # (iv)  # fmt: skip
    fitted = None
    if config.scene.enabled:  # (iv′) the joint fit of every source through the beam
        detections, fitted = scene_sources(clean, detections, shapes, config, psf=psf)
        shapes = [Morphology(x=f.x, y=f.y, fwhm_x=f.fwhm_x, fwhm_y=f.fwhm_y, pa=f.pa) for f in fitted]
    elif config.characterise.refine_iterations > 0:
        psf = beam_psf(clean, config)
        line = line_cube(clean) if config.search.enabled or config.characterise.line_noise == "beam" else None
        if config.search.enabled and psf is not None:  # (ii′) the line search, beside steps (i)–(iii)
            found, first_guess = searched_detections(clean, config, line=line)
            detections, shapes = [*detections, *found], [*shapes, *first_guess]
        detections, shapes = refine_detections(clean, detections, shapes, config, psf=psf, line=line)
    line_fluxes = estimate_line_flux(models.resnet_flux, clean, detections, config)  # (vi), ResNet
    sources = []
    for i, (d, m, line_flux) in enumerate(zip(detections, shapes, line_fluxes)):
        mask = segmentation_mask(clean.shape, x=m.x, y=m.y, z=d.z, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa,
                                 fwhm_z=d.fwhm_z, config=config)  # (v)  # fmt: skip
        measured = measure_flux(clean, mask, x=m.x, y=m.y, beam_area_px=beam_area_px, config=config)  # (vi)
        x0, y0, x1, y1 = d.box
        if config.characterise.box == "model":
            x0, y0, x1, y1 = model_box(m.x, m.y, m.fwhm_x, m.fwhm_y, m.pa, level=config.characterise.box_level,
                                       shape=clean.shape[1:])  # fmt: skip
        sources.append(Source(
            x=m.x, y=m.y, z=d.z, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa, fwhm_z=d.fwhm_z,
            peak_flux=measured.peak_flux, line_flux=float(line_flux), line_flux_measured=measured.line_flux,
            continuum=measured.continuum, snr=d.snr, x0=x0, y0=y0, x1=x1, y1=y1, z0=d.z0, z1=d.z1,
            flags=tuple(sorted(d.flags)), **(_fit_columns(fitted[i]) if fitted is not None else {})))  # fmt: skip
    return sources


def _fit_columns(f: Fitted) -> dict[str, float]:
    """A scene fit's line SNR, model flux and 1σ errors as :class:`Source` fields."""
    e = f.errors
    return {"line_snr": f.snr, "line_flux_fit": f.line_flux, "err_line_flux_fit": e["line_flux"],
            **{f"err_{k}": e[k] for k in ("x", "y", "fwhm_x", "fwhm_y", "pa", "z", "fwhm_z")}}


def _within(a: Morphology, x: float, y: float, level: float) -> bool:
    """Whether (x, y) lies inside ``a``'s Gaussian down to ``level`` of its peak."""
    dx, dy = x - a.x, y - a.y
    c, s = np.cos(np.deg2rad(a.pa)), np.sin(np.deg2rad(a.pa))
    sx, sy = (max(v, 1e-3) / FWHM_PER_SIGMA for v in (a.fwhm_x, a.fwhm_y))
    r2 = ((dx * c - dy * s) / sx) ** 2 + ((dx * s + dy * c) / sy) ** 2
    return bool(np.exp(-0.5 * r2) >= level)


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
    d = dataclasses.replace(d, z=r.z, fwhm_z=r.fwhm_z, z0=r.z - k * r.fwhm_z, z1=r.z + k * r.fwhm_z)
    return order, r.line_snr, d, Morphology(x=r.x, y=r.y, fwhm_x=r.fwhm_x, fwhm_y=r.fwhm_y, pa=r.pa)


def _refined(cube: np.ndarray, psf: np.ndarray, detections: Sequence[Detection], shapes: Sequence[Morphology],
             config: PipelineConfig, noise: np.ndarray | None = None) -> list[_Item]:  # fmt: skip
    """Each detection refined (:func:`~dfjax.pipeline.refine.refine`); those under the line-SNR cut dropped."""
    kept = []
    for i, (d, m) in enumerate(zip(detections, shapes)):
        r = refine(cube, psf, x=m.x, y=m.y, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa, z=d.z, fwhm_z=d.fwhm_z,
                   config=config, channel_noise=noise)  # fmt: skip
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
        r = refine(cube, psf, x=m.x, y=m.y, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa, z=d.z, fwhm_z=d.fwhm_z,
                   config=config, neighbours=neighbours, channel_noise=noise)  # fmt: skip
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
        r = refine(cube, psf, x=m.x, y=m.y, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa, z=d.z, fwhm_z=d.fwhm_z,
                   config=config, neighbours=neighbours, channel_noise=noise)  # fmt: skip
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
        r = refine(cube, psf, x=m.x, y=m.y, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa, z=d.z, fwhm_z=d.fwhm_z,
                   config=config, neighbours=_neighbours(d, kept), channel_noise=noise)  # fmt: skip
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


_FLAG_WIDTH = 32


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

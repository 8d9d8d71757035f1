"""The six steps of Sec. 4.4 in order (Fig. 9): a dirty cube and six models → a source list.

:func:`run_pipeline` runs the stages in order, each taking the sources so far and giving sources
back: detect (i) → spectra (ii) → focus (iii) → characterise (iv) → the scene fit
(``scene.enabled``, ``scene.with_psf`` and a PSF given, or a field of at least
``scene.noise_beam_px``: :mod:`dfjax.pipeline.joint`) or the
line search and refinement (``characterise.refine_iterations`` > 0, :mod:`dfjax.pipeline.deblend`)
→ model3d (v) → flux (vi), and returns :class:`Source` rows in pixel units. Unit conversion
(pixels → sky, channels → frequency, cube units → Jy) is the caller's (``dfjax.infer``).

Re-exported here: :class:`Models` and :data:`MODEL_NAMES` (:mod:`dfjax.pipeline.models`),
:class:`Source` and :func:`catalogue_rows` (:mod:`dfjax.pipeline.source`), :func:`refine_detections`
(:mod:`dfjax.pipeline.deblend`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from dfjax.pipeline.characterise import Morphology, estimate_morphology, model_box
from dfjax.pipeline.config import PipelineConfig
from dfjax.pipeline.deblend import refine_detections, refined_sources
from dfjax.pipeline.detect import detect
from dfjax.pipeline.flux import estimate_line_flux, measure_flux
from dfjax.pipeline.focus import Detection, focus_candidates
from dfjax.pipeline.joint import scene_sources
from dfjax.pipeline.model3d import segmentation_mask
from dfjax.pipeline.models import MODEL_NAMES, Models
from dfjax.pipeline.scene import Fitted
from dfjax.pipeline.source import Source, catalogue_rows, fit_columns
from dfjax.pipeline.spectra import characterise_spectra

__all__ = ["MODEL_NAMES", "Models", "Source", "catalogue_rows", "measured_sources", "refine_detections", "run_pipeline"]

_DEFAULTS = PipelineConfig()
T = TypeVar("T")


def run_pipeline(cube: np.ndarray, models: Models, config: PipelineConfig = _DEFAULTS, *,
                 beam_area_px: float = 1.0, psf: np.ndarray | None = None, progress: bool = False) -> list[Source]:  # fmt: skip
    """Steps (i)–(vi): dirty cube (nz, ny, nx), cube units as in training → sources, in detection order.

    ``beam_area_px`` (pixels per beam) only scales ``line_flux_measured``; ``psf`` (odd square, unit
    peak at its centre): the beam for the scene fit, which runs in place of refinement with
    ``scene.enabled``, with ``scene.with_psf`` whenever a ``psf`` is given, or on a field whose smaller
    side is at least ``scene.noise_beam_px`` (> 0); without a ``psf`` the beam is measured on the noise.
    ``progress``: a bar on stderr names the stage running (a paper-size cube takes tens of seconds).
    """
    cube = np.asarray(cube, np.float32)
    if cube.ndim != 3:
        raise ValueError(f"expected a cube (nz, ny, nx), got shape {cube.shape}")
    models.check(nz=cube.shape[0])
    clean = np.nan_to_num(cube, nan=0.0) if not np.isfinite(cube).all() else cube
    s = config.scene
    joint = s.enabled or (s.with_psf and psf is not None) or 0 < s.noise_beam_px <= min(cube.shape[1:])
    refit = "scene fit" if joint else "refine" if config.characterise.refine_iterations > 0 else None
    step = _stages(["detect", "spectra", "focus", "morphology", *([refit] if refit else []), "measure"], progress)
    boxes = step(detect(models.blobs_finder, clean, config))  # (i)
    candidates = step(characterise_spectra(models.deep_gru, clean, boxes, config))  # (ii)
    detections = step(focus_candidates(clean, candidates, config))  # (iii)
    shapes = step(estimate_morphology(models.resnet_fwhm_x, models.resnet_fwhm_y, models.resnet_pa, detections,
                                      config, cube=clean))  # (iv)  # fmt: skip
    fitted = None
    if joint:  # (iv′) every source fitted jointly through the beam, the line search's too
        detections, fitted = step(scene_sources(clean, detections, shapes, config, psf=psf))
        shapes = [Morphology(x=f.x, y=f.y, fwhm_x=f.fwhm_x, fwhm_y=f.fwhm_y, pa=f.pa) for f in fitted]
    elif config.characterise.refine_iterations > 0:  # (ii′) the line search, (iv′) refinement and the cut
        detections, shapes = step(refined_sources(clean, detections, shapes, config))
    return step(measured_sources(clean, models, detections, shapes, config, fitted=fitted,
                                 beam_area_px=beam_area_px))  # fmt: skip


def _stages(names: Sequence[str], enabled: bool) -> Callable[[T], T]:
    """``step(result)`` after each stage: the bar on stderr advances and names the next one; closed after the last."""
    from tqdm import tqdm

    bar = tqdm(total=len(names), unit="stage", desc=names[0], leave=False, disable=not enabled, file=sys.stderr)

    def step(result: T) -> T:
        bar.update()
        if bar.n < len(names):
            bar.set_description(names[bar.n])
        else:
            bar.close()
        return result

    return step


def measured_sources(cube: np.ndarray, models: Models, detections: Sequence[Detection],
                     shapes: Sequence[Morphology], config: PipelineConfig = _DEFAULTS, *,
                     fitted: Sequence[Fitted] | None = None, beam_area_px: float = 1.0) -> list[Source]:  # fmt: skip
    """Steps (v)–(vi) for each detection and its shape: the segmentation mask, the measured and the
    ResNet's line flux, and the catalogue box → one :class:`Source` each, with the scene fit's
    SNR and errors when ``fitted`` (one per detection) is given."""
    line_fluxes = estimate_line_flux(models.resnet_flux, cube, detections, config)  # (vi), ResNet
    sources = []
    for i, (d, m, line_flux) in enumerate(zip(detections, shapes, line_fluxes)):
        mask = segmentation_mask(cube.shape, x=m.x, y=m.y, z=d.z, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa,
                                 fwhm_z=d.fwhm_z, config=config)  # (v)  # fmt: skip
        measured = measure_flux(cube, mask, x=m.x, y=m.y, beam_area_px=beam_area_px, config=config)  # (vi)
        x0, y0, x1, y1 = d.box
        if config.characterise.box == "model":
            x0, y0, x1, y1 = model_box(m.x, m.y, m.fwhm_x, m.fwhm_y, m.pa, level=config.characterise.box_level,
                                       shape=cube.shape[1:])  # fmt: skip
        sources.append(Source(
            x=m.x, y=m.y, z=d.z, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa, fwhm_z=d.fwhm_z,
            peak_flux=measured.peak_flux, line_flux=float(line_flux), line_flux_measured=measured.line_flux,
            continuum=measured.continuum, snr=d.snr, x0=x0, y0=y0, x1=x1, y1=y1, z0=d.z0, z1=d.z1,
            flags=tuple(sorted(d.flags)),
            **({"line_snr": d.line_snr} if fitted is None else fit_columns(fitted[i]))))  # fmt: skip
    return sources

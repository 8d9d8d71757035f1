"""The scene stage: steps (ii)–(iv)'s sources and the line search's candidates, fitted jointly
(``scene.enabled``; :mod:`dfjax.pipeline.scene`), in place of refinement.

1. The beam over the field (:mod:`dfjax.pipeline.psf`: the PSF given, or the noise's) and the
   cube's noise (per-channel spread, spatial correlation) are measured once.
2. Every detection, at its first-guess shape, and with ``search.enabled`` every line-search
   candidate, enters :func:`~dfjax.pipeline.scene.fit_scene`; what the others' model explains, or
   what duplicates another, leaves. With the search on, a detection whose focused SNR is under
   ``GUESS_MIN_SNR`` is left to it: the search looks everywhere above ``search.snr``, and on a
   paper-size cube with the paper's noise steps (i)–(iv) give ~200 detections, two thirds of
   them that faint, for a handful of sources; each would cost the first round its full-field image.
3. The continuum is fitted again with the voxels the fitted scene says hold line emission left
   out (each pixel's straight line is otherwise tilted by a bright line's wings), and the
   sources fitted again on the new line cube.
4. With ``scene.residual`` the search runs again on the cube minus the fitted scene: a source a
   brighter one hid is a peak there. The new candidates join the fitted sources for one more fit.

The fitted sizes are intrinsic (the beam is in the model). A source whose major-axis FWHM is
within 2σ of zero, or under a quarter of the beam's FWHM (a PSF known to a few per cent cannot
tell sizes below that apart), is flagged ``unresolved`` (:func:`unresolved`): its size is an
upper limit, FWHM + 2·err or that quarter beam, not a measurement — the beam is never reported
as a source's size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dfjax.maths import FWHM_PER_SIGMA
from dfjax.pipeline.characterise import Morphology, model_box
from dfjax.pipeline.config import PipelineConfig
from dfjax.pipeline.focus import Detection
from dfjax.pipeline.forward import MIN_SIGMA_PX
from dfjax.pipeline.psf import centred, noise_correlation, noise_model
from dfjax.pipeline.scene import Fitted, Guess, Scene, fit_scene, scene_model
from dfjax.pipeline.search import (RESIDUAL, SEARCHED, channel_noise, continuum_clip, finite_cube, line_cube,
                                   peak_detections, remove_continuum, search_peaks)

__all__ = ["UNRESOLVED", "beam_fwhm", "noise_scene", "scene_sources", "unresolved"]

CONTINUUM_MASK_SIGMA = 1.0  # voxels where the fitted scene exceeds this many noise σ are left out of the continuum
UNRESOLVED = "unresolved"  # the flag of a source whose size is consistent with zero
RESOLVED_BEAMS = 0.25  # an intrinsic FWHM under this fraction of the beam's is not a measured size
GUESS_MIN_SNR = 4.0  # with the line search on, a detection under this focused SNR is left to the search
NOISE_PIXELS = 64 * 128 * 128  # the noise correlation is measured on about this many pixels of channel differences


def noise_scene(cube: np.ndarray, config: PipelineConfig, *, psf: np.ndarray | None = None,
                line: np.ndarray | None = None) -> Scene:  # fmt: skip
    """The :class:`~dfjax.pipeline.scene.Scene` of a cube (nz, ny, nx): its continuum-free cube and
    channel noise, ``psf`` when given (``scene.psf`` file or beam) or else the beam of its noise (and
    with ``scene.shape_beam`` "line_free" that of its line-free channel pairs for the shapes), and its
    noise correlation."""
    nz, ny, nx = cube.shape
    line = line_cube(cube) if line is None else line
    reach = config.scene.psf_half_px or (3 * min(ny, nx)) // 4
    pairs = int(np.clip(NOISE_PIXELS // (ny * nx), 8, 64))
    half = min(reach, min(ny, nx) - 1)
    shapes = None  # the window fits' beam, where it is not the field's
    if psf is not None:  # the noise's correlation is known well from a few channel pairs ...
        beam, error, correlation = centred(psf, reach), None, noise_correlation(cube, half=half, pairs=pairs)
    else:  # ... a beam measured on the noise needs them all (and gives the correlation too)
        noise = noise_model(cube, half=half, line_free=config.scene.shape_beam == "line_free")
        beam, error, correlation, shapes = noise.beam, noise.beam_error, noise.correlation, noise.line_free_beam
    return Scene(line=line, noise=channel_noise(cube, line=line), psf=beam, correlation=correlation, beam_error=error,
                 shape_psf=shapes)  # fmt: skip


def unresolved(f: Fitted, beam_fwhm_px: float) -> bool:
    """Whether the fitted intrinsic size is consistent with zero: the major axis's FWHM under twice its
    1σ error, under ``RESOLVED_BEAMS`` × the beam's FWHM, or at the fit's floor."""
    major, error = max((f.fwhm_x, f.errors["fwhm_x"]), (f.fwhm_y, f.errors["fwhm_y"]))
    floor = max(1.05 * FWHM_PER_SIGMA * MIN_SIGMA_PX, RESOLVED_BEAMS * beam_fwhm_px)
    return bool(major <= floor or major < 2.0 * error)


def beam_fwhm(psf: np.ndarray) -> float:
    """The main lobe's FWHM in pixels (geometric mean of its axes): 2·√(area above half its peak / π)."""
    return float(2.0 * np.sqrt(np.count_nonzero(psf >= 0.5 * psf.max()) / np.pi))


def _fit(scene: Scene, guesses: Sequence[Guess], config: PipelineConfig) -> list[Fitted]:
    s = config.scene
    return fit_scene(scene, guesses, min_snr=s.min_snr, rounds=s.rounds, max_shift_px=s.max_shift_px,
                     window_half_px=s.window_half_px, window_chan=s.window_chan, core_half_px=s.core_half_px,
                     merge_px=s.merge_px, model_error=s.model_error)  # fmt: skip


def _guess(d: Detection, m: Morphology) -> Guess:
    return Guess(x=m.x, y=m.y, fwhm_x=m.fwhm_x, fwhm_y=m.fwhm_y, pa=m.pa, z=d.z, fwhm_z=d.fwhm_z)


def _as_guess(f: Fitted) -> Guess:
    return Guess(x=f.x, y=f.y, fwhm_x=f.fwhm_x, fwhm_y=f.fwhm_y, pa=f.pa, z=f.z, fwhm_z=f.fwhm_z)


def scene_sources(cube: np.ndarray, detections: Sequence[Detection], shapes: Sequence[Morphology],
                  config: PipelineConfig, *, psf: np.ndarray | None = None
                  ) -> tuple[list[Detection], list[Fitted]]:  # fmt: skip
    """The stage of the module docstring: detections and their first-guess shapes → the sources the
    scene keeps, each a detection (its line and emission range from the fit, flags from where it
    was found) with its :class:`~dfjax.pipeline.scene.Fitted`."""
    finite = finite_cube(cube)
    clipped = continuum_clip(finite)  # the continuum's first pass, the same for both fits of it
    scene = noise_scene(cube, config, psf=psf, line=remove_continuum(finite, clipped=clipped))
    detections, shapes = list(detections), list(shapes)
    if config.search.enabled:  # a faint detection is left to the search, which looks everywhere above search.snr
        keep = [i for i, d in enumerate(detections) if d.snr >= GUESS_MIN_SNR]
        detections, shapes = [detections[i] for i in keep], [shapes[i] for i in keep]
        found, first = peak_detections(cube, search_peaks(scene.line, config), config)
        detections, shapes = detections + found, shapes + first
    fitted = _fit(scene, [_guess(d, m) for d, m in zip(detections, shapes)], config)
    origin = [detections[f.index] for f in fitted]
    if fitted:  # the continuum again, the sources' lines left out of its fit (they tilt it)
        emission = scene_model(scene, fitted) > CONTINUUM_MASK_SIGMA * scene.noise[:, None, None]
        scene = dataclasses.replace(scene, line=remove_continuum(finite, exclude=emission, clipped=clipped))
        fitted = _fit(scene, [_as_guess(f) for f in fitted], config)
        origin = [origin[f.index] for f in fitted]
    if config.search.enabled and config.scene.residual and fitted:
        peaks = search_peaks(scene.line - scene_model(scene, fitted), config)
        found, first = peak_detections(cube, peaks, config, flags=frozenset({SEARCHED, RESIDUAL}))
        if found:
            refit = _fit(scene, [_as_guess(f) for f in fitted] + [_guess(d, m) for d, m in zip(found, first)], config)
            origin = [(origin + found)[f.index] for f in refit]
            fitted = refit
    k = config.spectra.emission_half_width_fwhm
    beam = beam_fwhm(scene.psf)
    out = []
    for d, f in zip(origin, fitted):
        box = model_box(f.x, f.y, f.fwhm_x, f.fwhm_y, f.pa, level=config.characterise.box_level, shape=cube.shape[1:])
        flags = d.flags | {UNRESOLVED} if unresolved(f, beam) else d.flags
        out.append(dataclasses.replace(d, z=f.z, fwhm_z=f.fwhm_z, z0=f.z - k * f.fwhm_z, z1=f.z + k * f.fwhm_z,
                                       box=box, snr=f.snr, flags=flags))  # fmt: skip
    return out, fitted

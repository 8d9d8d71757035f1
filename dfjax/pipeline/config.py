"""Pipeline configuration: one namespace per step, pedantic parsing, one set of defaults.

Every threshold and constant of the detection pipeline (Sec. 4.4) lives here and nowhere else:
``PipelineConfig().detect.threshold`` is the 0.15 of step (i), ``.spectra.peak_height`` the 0.1
of step (ii), ``.focus.bright_snr`` the 6 of step (iii), ``.model3d.dilation`` the 1.5 of step (v). Parse a mapping (e.g. the ``pipeline:`` section of a YAML file) with
:meth:`PipelineConfig.from_dict`; an unknown key raises :class:`ConfigError` naming it
(``pipeline.detect.treshold: unknown key``). Later steps add their own namespace.

Settings that are gone (:data:`REMOVED`) are still read from older files — a tuned
``models/pipeline.yaml`` lists every setting — with one warning line, as long as they hold the
value the pipeline now always uses; any other value is a :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Self

from sim.config import parse_dataclass

FITTERS: tuple[str, ...] = ("levmar", "trf")
"""astropy fitters for the line Gaussians: ``LevMarLSQFitter`` (the paper's) or ``TRFLSQFitter``."""

BOX_SOURCES: tuple[str, ...] = ("model", "detection")
"""The catalogue's 2-D box: ``model``, the extent of the characterised Gaussian (x, y, FWHMs, pa)
above ``box_level`` of its peak — the truth catalogue's definition (sim.sky.box_2d) — or
``detection``, the Blobs Finder blob after focusing (step iii)."""

FOCUS_MODES: tuple[str, ...] = ("paper", "lines")
"""Step (iii): ``paper``, Fig. 14's logic (lines at one place merge into one source); ``lines``, each
line is its own source, placed at its own focused image's peak (one line per source, as Table 1 draws
them), with duplicates — same place, overlapping channels — dropped."""

LINE_NOISES: tuple[str, ...] = ("channels", "beam")
"""Refinement's line SNR (``characterise.refine_iterations`` > 0): its noise is ``channels``, the
robust spread of the matched spectrum's own channels beyond ± 3 FWHM of the line, or ``beam``, the
cube's per-channel pixel noise propagated through the matched filter with the beam as the noise's
correlation (:func:`dfjax.pipeline.refine.matched_noise_gain`): no other source's line in the
spectrum inflates it."""

MORPHOLOGY_METHODS: tuple[str, ...] = ("resnet", "fit")
"""Step (iv): ``resnet``, the paper's three ResNets on the focused image; ``fit``, a 2-D Gaussian
convolved with the cube's own dirty beam, fitted to the continuum-subtracted line image
(:mod:`dfjax.pipeline.gaussfit`), the ResNets' values kept where the fit fails."""

PSF_KINDS: tuple[str, ...] = ("auto", "file", "beam", "noise")
"""Where the scene fit's beam comes from (:mod:`dfjax.pipeline.psf`): ``file``, a PSF image given
to the pipeline (``dfjax.infer --psf``); ``beam``, the header's restoring beam (a CLEANed cube);
``noise``, the data's noise autocorrelation with any white spike removed (a dirty cube); ``auto``,
for a cleaned cube (``NITER`` > 0 or primary-beam corrected) with a beam in its header that beam
(tclean's ``.psf`` beside it is the dirty beam, not what its restored sources are seen through),
else the file when one is given, else the noise (``dfjax.infer``)."""

SHAPE_BEAMS: tuple[str, ...] = ("all", "line_free")
"""Without a PSF, the beam the window fits measure shapes through (``scene.shape_beam``): the line-free
channel pairs' (:func:`dfjax.pipeline.psf.spectrum_acf`) or all pairs', as the amplitudes use."""

SNR_SPREADS: tuple[str, ...] = ("std", "var")
"""Denominator of eqs. 17–18: ``std`` (scale free, the default) or ``var`` (as printed)."""


class ConfigError(ValueError):
    """A pipeline configuration value is invalid; the message names the offending key."""


@dataclass(frozen=True)
class DetectConfig:
    """Step (i), 2-D source detection (Sec. 4.4 i, Fig. 9 steps 1–4)."""

    threshold: float = 0.15  # probability-map binarisation: pixels strictly above it form blobs
    min_area_px: int = 1  # blobs with fewer pixels are dropped (1: keep all, as in the paper)
    connectivity: int = 2  # skimage.measure.label: 1 = 4-connected, 2 = 8-connected
    batch_size: int = 8  # images per Blobs Finder forward (the last batch is zero padded)
    tile_overlap: float = 0.0  # 0: the paper's centre crop only; > 0: tile the whole field, this overlap
    box_level: float = 0.0  # > 0: grow each blob's box to where the map is ≥ this × the blob's peak (0: paper)


@dataclass(frozen=True)
class SpectraConfig:
    """Step (ii), frequency denoising and line detection (Sec. 4.4 ii, Fig. 9 steps 5–7)."""

    peak_height: float = 0.1  # scipy.signal.find_peaks height on the denoised spectrum (its only test: paper)
    emission_half_width_fwhm: float = 1.0  # z0, z1 = z ∓ this·FWHM_z, i.e. Δz = 2·FWHM_z
    fit_half_window_fwhm: float = 1.5  # Gaussian fit window: peak ± this × the peak's width ...
    min_fit_half_window_chan: int = 3  # ... but at least ± this many channels
    fitter: str = "levmar"  # one of FITTERS
    min_continuum_channels: int = 3  # fewer channels outside Δz: continuum fixed to 0
    batch_size: int = 64  # spectra per Deep GRU forward (the last batch is zero padded)


@dataclass(frozen=True)
class FocusConfig:
    """Step (iii), spectral focusing, false positives and deblending (Sec. 4.4 iii, Fig. 14)."""

    size: int = 64  # focused image side in pixels (the ResNets' input)
    mode: str = "paper"  # one of FOCUS_MODES
    seed_on_line: bool = False  # "lines": seed each source on its continuum-subtracted line image (not in the paper)
    refit_lines: bool = False  # "lines": refit each line on its own source's dirty spectrum (see focus.refit_line)
    snr_spread: str = "std"  # one of SNR_SPREADS, for both eq. 17 and eq. 18
    bright_snr: float = 6.0  # global SNR on the integrated dirty cube above which a source is bright
    min_snr: float = 1.0  # final cut: focused sources under this global SNR are removed
    deblend_distance_px: float = 3.0  # |s − p| above this: the secondary peak is another source
    fof_min_pixel_snr: float = 2.0  # friends of friends: neighbours join with pixel SNR (eq. 18) ≥ this
    fof_plateau: float = 0.01  # growth stops when the global SNR changes by less than this fraction
    fof_max_iterations: int = 64  # ... or after this many rings of neighbours


@dataclass(frozen=True)
class SearchConfig:
    """A matched-filter line search over the whole cube, beside steps (i)–(iii) (pipeline/search.py; not in the paper)."""

    enabled: bool = False  # needs characterise.refine_iterations > 0: the line-SNR cut judges what it finds
    snr: float = 6.0  # candidates: local maxima of the best template's matched-filter SNR at or above this
    fwhm_px: tuple[float, float, float] = (5.0, 9.0, 14.0)  # spatial templates, intrinsic FWHM in pixels
    fwhm_chan: tuple[float, float, float] = (3.0, 6.0, 12.0)  # line templates, FWHM in channels
    neighbourhood: int = 7  # a candidate is the highest voxel of the (this)³ cube around it
    max_candidates: int = 64  # at most this many per cube, strongest first
    residual: bool = False  # then searched again with the refined sources subtracted (a bright one's shoulders)


@dataclass(frozen=True)
class CharacteriseConfig:
    """Step (iv), morphological parameters (Sec. 4.4 iv, Fig. 9 steps 10–11)."""

    batch_size: int = 32  # focused images per ResNet forward (the last batch is zero padded)
    method: str = "resnet"  # one of MORPHOLOGY_METHODS: x, y, FWHMs and pa from the ResNets or a beam-aware fit
    fit_half_px: int = 16  # "fit": the fitted window is ± this around the source
    beam_half_px: int = 16  # "fit": the dirty beam is measured (and seen through) out to ± this
    fit_max_shift_px: float = 4.0  # "fit": the centre may move this far from its first estimate
    fit_background: bool = True  # "fit": a free constant background under the source (False: held at 0)
    refine_iterations: int = 0  # "fit": rounds of line refit on the matched spectrum + shape refit (refine.py)
    refine_max_fwhm_chan: float = 30.0  # refined line FWHMs lie in [1, this] channels
    neighbours: bool = False  # refine_iterations > 0: sources refitted with the others in their channels alongside
    matched_line: bool = False  # refine_iterations > 0: the line profile weights the channels (shape fit, line SNR)
    line_noise: str = "channels"  # one of LINE_NOISES: the line SNR's noise, from the off-line channels or the beam
    min_line_snr: float = 0.0  # refine_iterations > 0: sources whose line SNR (refine.line_snr) is under this go
    centre_window_px: int = 0  # > 0: x, y = barycentre within ± this of the box's brightest pixel (0: whole box)
    box: str = "model"  # one of BOX_SOURCES: the catalogue's 2-D box (see BOX_SOURCES)
    box_level: float = 0.15  # "model" boxes: extent of the fitted 2-D Gaussian above this fraction of its peak


@dataclass(frozen=True)
class SceneConfig:
    """Every source fitted jointly through the beam over the whole field (pipeline/scene.py; not in the paper)."""

    enabled: bool = False  # steps (ii)–(iv)'s sources and the line search's candidates enter the joint fit
    with_psf: bool = True  # ... and whenever the cube comes with its PSF (a file), in place of refinement
    noise_beam_px: int = 0  # ... and, without a PSF, on fields this wide or wider (smaller side, px) through the noise's beam; 0: never
    psf: str = "auto"  # one of PSF_KINDS
    psf_half_px: int = 0  # the beam's reach in pixels (> 0 caps it); 0: the whole field, every sidelobe
    shape_beam: str = "line_free"  # without a PSF, the window fits' beam: from the line-free channel pairs, or "all"
    min_snr: float = 5.0  # a source whose amplitude SNR in the joint fit is under this is explained away
    rounds: int = 2  # rounds of amplitudes (joint) + shapes (each on its window)
    window_half_px: int = 16  # a source's shape is fitted on ± this many pixels ...
    window_chan: int = 48  # ... and this many channels around it
    core_half_px: int = 24  # the beam a window's own model is convolved with reaches ± this
    max_shift_px: float = 4.0  # a source's centre moves at most this far from its first guess
    merge_px: float = 3.0  # two sources closer than this with overlapping lines are one
    model_error: float = 0.03  # this fraction of a source's model counts as noise where another is measured
    residual: bool = True  # then the line search runs on the cube minus the scene, and what it finds is fitted in


@dataclass(frozen=True)
class Model3DConfig:
    """Step (v), the 3-D model and its segmentation mask (Sec. 4.4 v, Fig. 9 step 12)."""

    mask_fraction: float = 0.01  # voxels where the unit-peak 3-D model is ≥ this belong to the source
    dilation: float = 1.5  # spatial FWHMs are multiplied by this before thresholding (the beam acts spatially only)
    min_fwhm_px: float = 1.0  # predicted FWHMs (pixels, channels) are clipped to at least this


@dataclass(frozen=True)
class FluxConfig:
    """Step (vi), flux estimation (Sec. 4.4 vi, Fig. 9 step 13)."""

    min_continuum_channels: int = 3  # fewer channels outside the mask: continuum taken as 0
    continuum_trend_sigma: float = 5.0  # f(z) is a fitted line only when its level is ≥ this many errors


@dataclass(frozen=True)
class PipelineConfig:
    """All pipeline settings, one namespace per step."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    spectra: SpectraConfig = field(default_factory=SpectraConfig)
    focus: FocusConfig = field(default_factory=FocusConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    characterise: CharacteriseConfig = field(default_factory=CharacteriseConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    model3d: Model3DConfig = field(default_factory=Model3DConfig)
    flux: FluxConfig = field(default_factory=FluxConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Self:
        """Parse a nested mapping into a validated config; unknown keys are errors, :data:`REMOVED` ones
        are dropped with a warning (:func:`_drop_removed`)."""
        config = _parse(cls, _drop_removed(data or {}), "pipeline")
        _validate(config)
        return config

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict that :meth:`from_dict` reads back."""
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> Self:
        """A copy with dotted overrides applied: ``replace(**{"detect.threshold": 0.2})``."""
        data = self.to_dict()
        removed = {k: v for k, v in overrides.items() if k in REMOVED}
        if removed:
            _drop_removed(_nested(removed))
        for dotted, value in overrides.items():
            if dotted in REMOVED:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                if not isinstance(node.get(key), dict):
                    raise ConfigError(f"pipeline.{dotted}: unknown key")
                node = node[key]
            if leaf not in node or isinstance(node[leaf], dict):
                raise ConfigError(f"pipeline.{dotted}: unknown key")
            node[leaf] = value
        return self.from_dict(data)


REMOVED: dict[str, tuple[Any, str]] = {
    "detect.crop_size": (None, "Blobs Finder's input side is the trained model's image_size"),
    "detect.scan_box_px": (0, "the small-box spectra inside large boxes were never used"),
    "detect.scan_step_px": (None, "it only spaced detect.scan_box_px's boxes"),
    "spectra.peak_prominence": (0.0, "find_peaks tests only the height, as in the paper"),
    "spectra.min_peak_distance_chan": (1, "find_peaks tests only the height, as in the paper"),
    "characterise.fwhm_shrinkage": (0.0, "the ResNets' FWHMs are used as they are"),
    "characterise.fwhm_prior_px": (None, "it was only used by characterise.fwhm_shrinkage"),
    "model3d.spectral_dilation": (1.0, "the mask is dilated spatially only, for the beam"),
    "flux.line_image_scale": (1.0, "the flux ResNet is trained on unscaled line images"),
}
"""Settings no longer read: dotted key → (the one value an older file may still hold, None for any;
why it went)."""

_log = logging.getLogger(__name__)


def _drop_removed(data: Any) -> Any:
    """``data`` without the :data:`REMOVED` keys it holds, or :class:`ConfigError` for one that holds
    another value than the pipeline now always uses. Nothing changes by dropping them, so a normal
    run with an older tuned file says nothing; the names go to the log at INFO level."""
    if not isinstance(data, dict):
        return data
    dropped = []
    out = {section: dict(values) if isinstance(values, dict) else values for section, values in data.items()}
    for dotted, (only, why) in REMOVED.items():
        section, key = dotted.split(".")
        if not isinstance(out.get(section), dict) or key not in out[section]:
            continue
        value = out[section].pop(key)
        if only is not None and value != only:
            raise ConfigError(f"pipeline.{dotted}: no longer a setting ({why}); only {only!r} is left, got "
                              f"{value!r}")  # fmt: skip
        dropped.append(dotted)
    if dropped:
        what = (f"{dropped[0]} is no longer a setting" if len(dropped) == 1
                else f"{', '.join(dropped)} are no longer settings")  # fmt: skip
        _log.info("pipeline: %s; ignored (delete from the file, or re-tune with python -m dfjax.eval.tune)", what)
    return out


def _nested(dotted: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in dotted.items():
        section, leaf = key.split(".")
        out.setdefault(section, {})[leaf] = value
    return out


def _parse(cls: type, data: Any, path: str) -> Any:
    return parse_dataclass(cls, data, path, error=ConfigError)


def _validate(c: PipelineConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid key."""
    d, s = c.detect, c.spectra
    for path, value in (("detect.threshold", d.threshold), ("spectra.peak_height", s.peak_height),
                        ("detect.tile_overlap", d.tile_overlap)):  # fmt: skip
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"pipeline.{path}: must lie in [0, 1) (models output [0, 1]), got {value}")
    for path, value in (("detect.min_area_px", d.min_area_px),
                        ("detect.batch_size", d.batch_size), ("spectra.batch_size", s.batch_size),
                        ("spectra.min_fit_half_window_chan", s.min_fit_half_window_chan)):  # fmt: skip
        if value < 1:
            raise ConfigError(f"pipeline.{path}: must be at least 1, got {value}")
    if d.connectivity not in (1, 2):
        raise ConfigError(f"pipeline.detect.connectivity: must be 1 or 2, got {d.connectivity}")
    for path, value in (("spectra.emission_half_width_fwhm", s.emission_half_width_fwhm),
                        ("spectra.fit_half_window_fwhm", s.fit_half_window_fwhm)):  # fmt: skip
        if value <= 0:
            raise ConfigError(f"pipeline.{path}: must be positive, got {value}")
    if s.fitter not in FITTERS:
        raise ConfigError(f"pipeline.spectra.fitter: {s.fitter!r} is not one of {', '.join(FITTERS)}")
    if s.min_continuum_channels < 2:
        raise ConfigError(
            f"pipeline.spectra.min_continuum_channels: a straight line needs >= 2, got {s.min_continuum_channels}")
    f, m, fl = c.focus, c.model3d, c.flux
    for path, value in (("focus.size", f.size), ("focus.fof_max_iterations", f.fof_max_iterations),
                        ("characterise.batch_size", c.characterise.batch_size)):  # fmt: skip
        if value < 1:
            raise ConfigError(f"pipeline.{path}: must be at least 1, got {value}")
    if not 0.0 <= d.box_level < 1.0:
        raise ConfigError(f"pipeline.detect.box_level: must lie in [0, 1), got {d.box_level}")
    if c.characterise.centre_window_px < 0:
        raise ConfigError(f"pipeline.characterise.centre_window_px: must be >= 0, got {c.characterise.centre_window_px}")
    if c.characterise.box not in BOX_SOURCES:
        raise ConfigError(f"pipeline.characterise.box: {c.characterise.box!r} is not one of {', '.join(BOX_SOURCES)}")
    if not 0.0 < c.characterise.box_level < 1.0:
        raise ConfigError(f"pipeline.characterise.box_level: must lie in (0, 1), got {c.characterise.box_level}")
    if f.snr_spread not in SNR_SPREADS:
        raise ConfigError(f"pipeline.focus.snr_spread: {f.snr_spread!r} is not one of {', '.join(SNR_SPREADS)}")
    if f.mode not in FOCUS_MODES:
        raise ConfigError(f"pipeline.focus.mode: {f.mode!r} is not one of {', '.join(FOCUS_MODES)}")
    if c.characterise.method not in MORPHOLOGY_METHODS:
        raise ConfigError(f"pipeline.characterise.method: {c.characterise.method!r} is not one of "
                          f"{', '.join(MORPHOLOGY_METHODS)}")  # fmt: skip
    if c.characterise.line_noise not in LINE_NOISES:
        raise ConfigError(f"pipeline.characterise.line_noise: {c.characterise.line_noise!r} is not one of "
                          f"{', '.join(LINE_NOISES)}")  # fmt: skip
    if c.characterise.beam_half_px < 2:
        raise ConfigError(f"pipeline.characterise.beam_half_px: must be at least 2, got {c.characterise.beam_half_px}")
    if c.characterise.fit_half_px < 4:
        raise ConfigError(f"pipeline.characterise.fit_half_px: must be at least 4, got {c.characterise.fit_half_px}")
    if c.characterise.fit_max_shift_px <= 0:
        raise ConfigError(f"pipeline.characterise.fit_max_shift_px: must be positive, got "
                          f"{c.characterise.fit_max_shift_px}")  # fmt: skip
    if c.characterise.refine_iterations < 0:
        raise ConfigError(f"pipeline.characterise.refine_iterations: must be >= 0, got "
                          f"{c.characterise.refine_iterations}")  # fmt: skip
    if c.characterise.neighbours and c.characterise.refine_iterations < 1:
        raise ConfigError("pipeline.characterise.neighbours: the refit with neighbours is a second round of "
                          "refinement, so it needs characterise.refine_iterations > 0")  # fmt: skip
    if c.characterise.refine_iterations > 0 and c.characterise.method != "fit":
        raise ConfigError("pipeline.characterise.refine_iterations: refinement refits the shape, so it needs "
                          "characterise.method 'fit'")  # fmt: skip
    if c.characterise.refine_max_fwhm_chan <= 1.0:
        raise ConfigError(f"pipeline.characterise.refine_max_fwhm_chan: must exceed 1 channel, got "
                          f"{c.characterise.refine_max_fwhm_chan}")  # fmt: skip
    if c.characterise.min_line_snr < 0:
        raise ConfigError(f"pipeline.characterise.min_line_snr: must be >= 0, got {c.characterise.min_line_snr}")
    for path, value in (("focus.deblend_distance_px", f.deblend_distance_px), ("focus.fof_plateau", f.fof_plateau),
                        ("flux.continuum_trend_sigma", fl.continuum_trend_sigma)):  # fmt: skip
        if value < 0:
            raise ConfigError(f"pipeline.{path}: must be >= 0, got {value}")
    for path, value in (("model3d.dilation", m.dilation), ("model3d.min_fwhm_px", m.min_fwhm_px)):
        if value <= 0:
            raise ConfigError(f"pipeline.{path}: must be positive, got {value}")
    if not 0.0 < m.mask_fraction < 1.0:
        raise ConfigError(f"pipeline.model3d.mask_fraction: must lie in (0, 1), got {m.mask_fraction}")
    _validate_search(c)
    _validate_scene(c)
    if fl.min_continuum_channels < 1:
        raise ConfigError(f"pipeline.flux.min_continuum_channels: must be at least 1, got {fl.min_continuum_channels}")


def _validate_scene(c: PipelineConfig) -> None:
    s = c.scene
    for key, value, kinds in (("psf", s.psf, PSF_KINDS), ("shape_beam", s.shape_beam, SHAPE_BEAMS)):
        if value not in kinds:
            raise ConfigError(f"pipeline.scene.{key}: {value!r} is not one of {', '.join(kinds)}")
    if s.enabled and c.characterise.refine_iterations > 0:
        raise ConfigError("pipeline.scene.enabled: the scene fit replaces refinement, so it needs "
                          "characterise.refine_iterations 0")  # fmt: skip
    for path, value in (("scene.rounds", s.rounds), ("scene.window_half_px", s.window_half_px),
                        ("scene.window_chan", s.window_chan), ("scene.core_half_px", s.core_half_px)):  # fmt: skip
        if value < 1:
            raise ConfigError(f"pipeline.{path}: must be at least 1, got {value}")
    for path, value in (("scene.psf_half_px", s.psf_half_px), ("scene.min_snr", s.min_snr),
                        ("scene.model_error", s.model_error), ("scene.noise_beam_px", s.noise_beam_px)):  # fmt: skip
        if value < 0:
            raise ConfigError(f"pipeline.{path}: must be >= 0, got {value}")
    for path, value in (("scene.max_shift_px", s.max_shift_px), ("scene.merge_px", s.merge_px)):
        if value <= 0:
            raise ConfigError(f"pipeline.{path}: must be positive, got {value}")


def _validate_search(c: PipelineConfig) -> None:
    s = c.search
    if s.enabled and c.characterise.refine_iterations < 1 and not c.scene.enabled:
        raise ConfigError("pipeline.search.enabled: the search's candidates are judged by refinement's line-SNR "
                          "cut or the scene fit, so it needs characterise.refine_iterations > 0 or scene.enabled")  # fmt: skip
    if s.residual and not s.enabled:
        raise ConfigError("pipeline.search.residual: searching the cube with the found sources subtracted "
                          "needs search.enabled")  # fmt: skip
    if s.snr <= 0:
        raise ConfigError(f"pipeline.search.snr: must be positive, got {s.snr}")
    for path, values in (("search.fwhm_px", s.fwhm_px), ("search.fwhm_chan", s.fwhm_chan)):
        if min(values) <= 0:
            raise ConfigError(f"pipeline.{path}: every template FWHM must be positive, got {list(values)}")
    if s.neighbourhood < 1:
        raise ConfigError(f"pipeline.search.neighbourhood: must be at least 1, got {s.neighbourhood}")
    if s.max_candidates < 1:
        raise ConfigError(f"pipeline.search.max_candidates: must be at least 1, got {s.max_candidates}")

"""The detection pipeline of Sec. 4.4, one module per step (Fig. 9).

==================================  ===================================================  ==============
step                                module                                               Fig. 9
==================================  ===================================================  ==============
(i) 2-D source detection            :mod:`dfjax.pipeline.detect`                         1–4
(ii) denoising, lines               :mod:`dfjax.pipeline.spectra`                        5–7
(iii) focusing, deblending          :mod:`dfjax.pipeline.focus`                          8–9, Fig. 14
(ii′) matched-filter line search    :mod:`dfjax.pipeline.search` (not in the paper)      —
(iv) morphological parameters       :mod:`dfjax.pipeline.characterise`                   10–11
(iv′) refinement, line-SNR cut      :mod:`dfjax.pipeline.deblend` (not in the paper)     —
(iv′) or the joint scene fit        :mod:`dfjax.pipeline.joint` (not in the paper)       —
(v) 3-D model, segmentation mask    :mod:`dfjax.pipeline.model3d`                        12
(vi) flux estimation                :mod:`dfjax.pipeline.flux`                           13
all six in order                    :mod:`dfjax.pipeline.run`                            1–13
==================================  ===================================================  ==============

Beside the steps: :mod:`~dfjax.pipeline.models` (the six models, loaded and checked),
:mod:`~dfjax.pipeline.source` (the source record, catalogue rows), and the maths the added
stages use — :mod:`~dfjax.pipeline.refine` (one source refined), :mod:`~dfjax.pipeline.gaussfit`
(a Gaussian through the beam), :mod:`~dfjax.pipeline.scene` (the joint fit; its model in Fourier
space: :mod:`~dfjax.pipeline.forward`), :mod:`~dfjax.pipeline.psf` (the beam and the noise);
shared maths in :mod:`dfjax.maths`.

Settings: :class:`PipelineConfig` (one namespace per step). Models come from
:func:`dfjax.checkpoint.load_model` (:meth:`Models.load`); this package never imports training code.
"""

from dfjax.pipeline.characterise import (
    Morphology,
    estimate_morphology,
    morphology_input,
    pixel_weighted_centre,
)
from dfjax.pipeline.config import (
    CharacteriseConfig,
    ConfigError,
    DetectConfig,
    FluxConfig,
    FocusConfig,
    Model3DConfig,
    PipelineConfig,
    SearchConfig,
    SpectraConfig,
)
from dfjax.pipeline.detect import (
    boxes_from_map,
    crop_offset,
    detect,
    detection_map,
    integrated_image,
)
from dfjax.pipeline.flux import (
    FluxMeasurement,
    continuum_model,
    estimate_line_flux,
    flux_input,
    measure_flux,
)
from dfjax.pipeline.focus import (
    Detection,
    drop_duplicates,
    focus_candidate,
    focus_candidates,
    focus_lines,
    grow_region,
    pixel_snr,
)
from dfjax.pipeline.model3d import segmentation_mask, source_model
from dfjax.pipeline.models import MODEL_NAMES, Models
from dfjax.pipeline.run import run_pipeline
from dfjax.pipeline.search import SearchPeak, line_search, searched_detections
from dfjax.pipeline.source import Source, catalogue_rows
from dfjax.pipeline.spectra import (
    Candidate,
    Line,
    characterise_spectra,
    denoise_spectra,
    find_lines,
    fit_continuum,
    refit_line,
)

__all__ = [
    "MODEL_NAMES", "Candidate", "CharacteriseConfig", "ConfigError", "DetectConfig", "Detection",
    "FluxConfig", "FluxMeasurement", "FocusConfig", "Line", "Model3DConfig", "Models", "Morphology",
    "PipelineConfig", "SearchConfig", "SearchPeak", "Source", "SpectraConfig",
    "boxes_from_map", "catalogue_rows", "characterise_spectra", "continuum_model", "crop_offset",
    "denoise_spectra", "detect", "detection_map", "drop_duplicates", "estimate_line_flux",
    "estimate_morphology", "find_lines", "fit_continuum", "flux_input", "focus_candidate", "focus_candidates",
    "focus_lines", "grow_region", "integrated_image", "line_search", "measure_flux", "morphology_input", "pixel_snr",
    "pixel_weighted_centre", "refit_line", "run_pipeline", "searched_detections", "segmentation_mask", "source_model",
]  # fmt: skip

"""The detection pipeline of Sec. 4.4, one module per step (Fig. 9).

=========================  ===================================================  ==============
step                       module                                               Fig. 9
=========================  ===================================================  ==============
(i) 2-D source detection   :mod:`dfjax.pipeline.detect`                         1–4
(ii) denoising, lines      :mod:`dfjax.pipeline.spectra`                        5–7
=========================  ===================================================  ==============

Settings: :class:`PipelineConfig` (one namespace per step). Models come from
:func:`dfjax.checkpoint.load_model`; this package never imports training code.
"""

from dfjax.pipeline.config import ConfigError, DetectConfig, PipelineConfig, SpectraConfig
from dfjax.pipeline.detect import boxes_from_map, crop_offset, detect, detection_map, integrated_image
from dfjax.pipeline.spectra import (
    Candidate,
    Line,
    characterise_spectra,
    denoise_spectra,
    find_lines,
    fit_continuum,
)

__all__ = [
    "Candidate", "ConfigError", "DetectConfig", "Line", "PipelineConfig", "SpectraConfig",
    "boxes_from_map", "characterise_spectra", "crop_offset", "denoise_spectra", "detect",
    "detection_map", "find_lines", "fit_continuum", "integrated_image",
]  # fmt: skip

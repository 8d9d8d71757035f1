"""The six trained models of Fig. 9, loaded and checked together.

``Models.load(model_dir)`` reads ``model_dir/<name>`` for each of :data:`MODEL_NAMES` with
:func:`dfjax.checkpoint.load_model` and checks that they fit each other and the cube
(:meth:`Models.check`); Blobs Finder's ``image_size`` is the crop that step (i) uses. Training
code is never imported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Self

from dfjax import checkpoint
from dfjax.pipeline._apply import Model

__all__ = ["MODEL_NAMES", "Models"]

MODEL_NAMES: tuple[str, ...] = ("blobs_finder", "deep_gru", "resnet_fwhm_x", "resnet_fwhm_y", "resnet_pa",
                                "resnet_flux")  # fmt: skip
"""The six models, and the sub-directory of ``model_dir`` each is loaded from."""


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
    def load(cls, model_dir: str | Path, *, which: str = "best") -> Self:
        """Load ``model_dir/<name>`` for each of ``MODEL_NAMES``; ``ValueError`` when one does not fit.

        Checks: each directory holds the model its name says; the ResNets take
        one-channel images.
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
        models.check()
        return models

    def check(self, *, nz: int | None = None) -> None:
        """Raise ``ValueError`` if the models disagree with each other or with the cube's ``nz``."""
        length = getattr(self.deep_gru, "spectrum_length", None)
        if nz is not None and length is not None and length != nz:
            raise ValueError(f"Deep GRU takes spectra of {length} channels, the cube has {nz}")
        for name in MODEL_NAMES[2:]:
            channels = getattr(getattr(self, name), "in_features", 1)
            if channels != 1:
                raise ValueError(f"{name} takes {channels}-channel images; the pipeline feeds 1-channel images")

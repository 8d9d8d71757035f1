"""Model definitions, chosen by name with :func:`create`.

``create("resnet_pa", rngs=nnx.Rngs(0))`` → a fresh module; keyword
overrides go to the constructor (``create("resnet_flux", rngs=r,
widths=resnet.PAPER_WIDTHS)``). The four ResNets share one architecture.
"""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

from dfjax.models import blobs_finder, deep_gru, resnet
from dfjax.models.blobs_finder import BlobsFinder, BlobsFinderTiny
from dfjax.models.deep_gru import DeepGRU, DeepGRUTiny
from dfjax.models.resnet import ResNet, ResNet18, ResNet18Narrow, ResNetTiny

_REGISTRY: dict[str, Callable[..., nnx.Module]] = {
    "blobs_finder": BlobsFinder,
    "deep_gru": DeepGRU,
    "resnet_fwhm_x": ResNet18Narrow,
    "resnet_fwhm_y": ResNet18Narrow,
    "resnet_pa": ResNet18Narrow,
    "resnet_flux": ResNet18Narrow,
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def factory(name: str) -> Callable[..., nnx.Module]:
    """The constructor registered under ``name`` (a class or a ``functools.partial`` of one)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}") from None


def create(name: str, *, rngs: nnx.Rngs, **overrides) -> nnx.Module:
    """Build the model registered under ``name``; ``overrides`` go to its constructor."""
    return factory(name)(rngs=rngs, **overrides)


__all__ = [
    "MODEL_NAMES", "create", "factory",
    "BlobsFinder", "BlobsFinderTiny", "DeepGRU", "DeepGRUTiny",
    "ResNet", "ResNet18", "ResNet18Narrow", "ResNetTiny",
    "blobs_finder", "deep_gru", "resnet",
]

"""Jitted, batched inference shared by the pipeline steps (private).

A "model" is anything with the trained model's call signature: an ``nnx.Module``
(put in eval mode here, run under ``nnx.jit``) or a jax-traceable function
(run under ``jax.jit``), so tests can drive the geometry with stand-ins.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

Model = Callable[[jax.Array], jax.Array]
"""A trained model or a stand-in: a batch in, a batch out."""


@nnx.jit
def _apply_module(model: nnx.Module, x: jax.Array) -> jax.Array:
    return model(x)


@functools.lru_cache(maxsize=32)
def _jit_callable(fn: Model) -> Model:
    return jax.jit(fn)


def apply_batched(model: Model, x: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Run ``model`` over ``x`` (N, ...) in batches of ``batch_size`` → (N, ...) float32 numpy.

    Batches have a power-of-two size up to ``batch_size`` (the last is zero padded), so
    the forward compiles for a handful of shapes and three inputs do not cost thirty-two.
    """
    if isinstance(model, nnx.Module):
        model.eval()  # BatchNorm on running statistics, no dropout
        forward = functools.partial(_apply_module, model)
    else:
        forward = _jit_callable(model)
    x = np.asarray(x, np.float32)
    n = len(x)
    size = min(batch_size, 1 << max(n - 1, 0).bit_length())  # next power of two: few shapes, little padding
    outputs = []
    for start in range(0, n, size):
        chunk = x[start : start + size]
        if len(chunk) < size:
            chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *x.shape[1:]), np.float32)])
        outputs.append(np.asarray(forward(chunk), np.float32)[: n - start])
    if not outputs:  # both models map a batch to a batch of the input's shape
        return np.zeros_like(x)
    return np.concatenate(outputs)

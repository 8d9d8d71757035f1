"""ResNet regressor of Sec. 4.3 (Figs. 7–8) for FWHM_x, FWHM_y, PA and flux.

Stem: Conv3×3/1 → MaxPool3×3/2 → BN → ReLU; four stages of basic residual
blocks (He et al. 2016), the first block of stages 2–4 halving the spatial
size, so a 64×64 input reaches the last stage at 4×4 ([b, 512, 4, 4] in the
paper); global (adaptive) max pool; Dense → ReLU → Dense(1).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

PAPER_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
"""Stage channels of the paper (Sec. 4.3: 512 features reach the MLP)."""
CPU_WIDTHS: tuple[int, ...] = (16, 32, 64, 128)
"""Narrow default, ~16× fewer parameters, for CPU training."""

_BATCH_NORM = {"momentum": 0.9, "epsilon": 1e-5}  # PyTorch BatchNorm2d defaults


class ResidualBlock(nnx.Module):
    """Basic residual block (Fig. 7): (B, H, W, in) → (B, H/strides, W/strides, out).

    Conv3×3/s → BN → ReLU → Conv3×3/1 → BN, added to the skip path (identity,
    or Conv1×1/s → BN when the shape changes), then ReLU.
    """

    def __init__(self, in_features: int, out_features: int, *, strides: int = 1, rngs: nnx.Rngs):
        conv = functools.partial(nnx.Conv, kernel_size=(3, 3), padding=1, use_bias=False, rngs=rngs)
        self.conv1 = conv(in_features, out_features, strides=strides)
        self.norm1 = nnx.BatchNorm(out_features, **_BATCH_NORM, rngs=rngs)
        self.conv2 = conv(out_features, out_features)
        self.norm2 = nnx.BatchNorm(out_features, **_BATCH_NORM, rngs=rngs)
        if strides != 1 or in_features != out_features:
            self.proj = nnx.Conv(in_features, out_features, kernel_size=(1, 1), strides=strides,
                                 use_bias=False, rngs=rngs)
            self.proj_norm = nnx.BatchNorm(out_features, **_BATCH_NORM, rngs=rngs)
        else:
            self.proj = None
            self.proj_norm = None

    def __call__(self, x: jax.Array) -> jax.Array:
        skip = x if self.proj is None else self.proj_norm(self.proj(x))
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return jax.nn.relu(y + skip)


class ResNet(nnx.Module):
    """Scalar regressor on a spectrally focused (or line emission) image.

    Args:
      stage_sizes: residual blocks per stage (paper: 2, 2, 2, 2).
      widths: channels per stage (paper: ``PAPER_WIDTHS``; default ``CPU_WIDTHS``).
      head_features: hidden units of the two-layer MLP head.
      in_features: input channels.
      target_mean, target_scale: the head's output y is returned as ``target_mean +
        target_scale · y``, so a freshly initialised network already predicts values of the
        target's order (Adam moves a bias by about the learning rate per step: reaching a pa of
        45° from 0 would take tens of thousands of steps). Paper: 0 and 1.
      rngs: parameter initialisation keys.

    Call: (B, H, W, in_features), paper H = W = 64 → (B,).
    """

    def __init__(
        self,
        *,
        stage_sizes: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = CPU_WIDTHS,
        head_features: int = 128,
        in_features: int = 1,
        target_mean: float = 0.0,
        target_scale: float = 1.0,
        rngs: nnx.Rngs,
    ):
        if target_scale <= 0:
            raise ValueError(f"target_scale must be positive, got {target_scale}")
        self.target_mean, self.target_scale = float(target_mean), float(target_scale)
        if len(stage_sizes) != len(widths):
            raise ValueError(f"stage_sizes {stage_sizes} and widths {widths} differ in length")
        self.in_features = in_features
        self.stem_conv = nnx.Conv(in_features, widths[0], kernel_size=(3, 3), padding=1,
                                  use_bias=False, rngs=rngs)
        self.stem_norm = nnx.BatchNorm(widths[0], **_BATCH_NORM, rngs=rngs)
        blocks = []
        features = widths[0]
        for stage, (size, width) in enumerate(zip(stage_sizes, widths)):
            for i in range(size):
                strides = 2 if stage > 0 and i == 0 else 1
                blocks.append(ResidualBlock(features, width, strides=strides, rngs=rngs))
                features = width
        self.blocks = nnx.List(blocks)
        self.hidden = nnx.Linear(features, head_features, rngs=rngs)
        self.out = nnx.Linear(head_features, 1, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Last-stage feature map: (B, H, W, in) → (B, H/16, W/16, widths[-1])."""
        if x.ndim != 4 or x.shape[-1] != self.in_features:
            raise ValueError(f"ResNet expects (B, H, W, {self.in_features}), got {x.shape}")
        x = self.stem_conv(x)
        x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        x = jax.nn.relu(self.stem_norm(x))
        for block in self.blocks:
            x = block(x)
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.max(self.features(x), axis=(1, 2))  # adaptive max pool to 1×1
        y = self.out(jax.nn.relu(self.hidden(x)))[:, 0]
        return self.target_mean + self.target_scale * y


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), widths=PAPER_WIDTHS)
"""The paper's configuration (Fig. 8)."""
ResNet18Narrow = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), widths=CPU_WIDTHS)
"""Same depth, CPU-sized widths (the registry default)."""
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), widths=(4, 8, 8, 8), head_features=8)
"""Test-size variant."""

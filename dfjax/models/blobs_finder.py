"""Blobs Finder: the 2D convolutional autoencoder of Sec. 4.1 (Fig. 4, Table 3).

Layout NHWC. With the paper's settings (``image_size=256``) the shapes follow
Table 3: four encoder blocks 1→8→16→32→64 channels, 256→16 pixels; FC 1
(64·16·16 → 1024); FC 2 (1024 → 64·16·16); four decoder blocks 64→32→16→8→1
channels, 16→256 pixels; a 1×1 conv and a sigmoid.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

PAPER_WIDTHS: tuple[int, ...] = (8, 16, 32, 64)
"""Encoder channels of Table 3; the decoder mirrors them."""

# PyTorch's BatchNorm2d defaults (the paper's implementation): momentum 0.1
# there is a decay of 0.9 here.
_BATCH_NORM = {"momentum": 0.9, "epsilon": 1e-5}


class EncoderBlock(nnx.Module):
    """Conv3×3/2 → LeakyReLU → BN → Conv3×3/1 → LeakyReLU → BN (Fig. 4).

    (B, H, W, in_features) → (B, H/2, W/2, out_features).
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        conv = functools.partial(nnx.Conv, kernel_size=(3, 3), padding=1, use_bias=False, rngs=rngs)
        self.conv1 = conv(in_features, out_features, strides=2)
        self.norm1 = nnx.BatchNorm(out_features, **_BATCH_NORM, rngs=rngs)
        self.conv2 = conv(out_features, out_features, strides=1)
        self.norm2 = nnx.BatchNorm(out_features, **_BATCH_NORM, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.norm1(jax.nn.leaky_relu(self.conv1(x)))
        return self.norm2(jax.nn.leaky_relu(self.conv2(x)))


class DecoderBlock(nnx.Module):
    """Additive upsampling block of Fig. 4 (Wojna et al. 2019).

    Bilinear ×2 → LeakyReLU → BN  (upsampling block, ``in_features`` channels)
    ConvT3×3/2 → LeakyReLU → BN   (learnable upsampling, ``out_features`` channels)
    concatenate → Conv3×3/1 → LeakyReLU → BN → Conv3×3/1.

    (B, H, W, in_features) → (B, 2H, 2W, out_features).
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.upsample_norm = nnx.BatchNorm(in_features, **_BATCH_NORM, rngs=rngs)
        self.deconv = nnx.ConvTranspose(
            in_features, out_features, kernel_size=(3, 3), strides=(2, 2), padding="SAME",
            use_bias=False, rngs=rngs)
        self.deconv_norm = nnx.BatchNorm(out_features, **_BATCH_NORM, rngs=rngs)
        self.conv1 = nnx.Conv(in_features + out_features, out_features, kernel_size=(3, 3),
                              padding=1, use_bias=False, rngs=rngs)
        self.norm1 = nnx.BatchNorm(out_features, **_BATCH_NORM, rngs=rngs)
        # Fig. 4 ends the decoder's conv block on the convolution itself.
        self.conv2 = nnx.Conv(out_features, out_features, kernel_size=(3, 3), padding=1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        up = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="bilinear")
        up = self.upsample_norm(jax.nn.leaky_relu(up))
        learned = self.deconv_norm(jax.nn.leaky_relu(self.deconv(x)))
        x = jnp.concatenate([up, learned], axis=-1)
        x = self.norm1(jax.nn.leaky_relu(self.conv1(x)))
        return self.conv2(x)


class BlobsFinder(nnx.Module):
    """Deep convolutional autoencoder mapping an integrated dirty image to a sky-model map.

    Args:
      image_size: side of the square input in pixels (paper: 256); a multiple
        of ``2 ** len(widths)``.
      widths: encoder channels per block (paper: 8, 16, 32, 64).
      latent_features: size of the fully connected bottleneck (paper: 1024).
      in_features: input channels (paper: 1, the integrated dirty cube).
      output_bias: initial bias of the final 1×1 conv, a logit (paper: 0, i.e. 0.5 everywhere).
        Sky maps are mostly empty; a negative start (``-4``: 0.018) saves the thousands of
        steps Adam needs to walk the bias down, which matters on a CPU budget.
      rngs: parameter initialisation keys.

    Call: (B, image_size, image_size, in_features) → (B, image_size, image_size, 1) in [0, 1].
    """

    def __init__(
        self,
        *,
        image_size: int = 256,
        widths: Sequence[int] = PAPER_WIDTHS,
        latent_features: int = 1024,
        in_features: int = 1,
        output_bias: float = 0.0,
        rngs: nnx.Rngs,
    ):
        widths = tuple(widths)
        factor = 2 ** len(widths)
        if image_size % factor:
            raise ValueError(f"image_size={image_size} must be a multiple of {factor}")
        self.image_size = image_size
        self.in_features = in_features
        self.bottleneck_shape = (image_size // factor, image_size // factor, widths[-1])
        bottleneck = image_size // factor * (image_size // factor) * widths[-1]

        chans_in = (in_features, *widths[:-1])
        self.encoder = nnx.List([EncoderBlock(i, o, rngs=rngs) for i, o in zip(chans_in, widths)])
        self.to_latent = nnx.Linear(bottleneck, latent_features, rngs=rngs)  # FC 1
        self.from_latent = nnx.Linear(latent_features, bottleneck, rngs=rngs)  # FC 2
        chans_out = (*widths[-2::-1], 1)
        self.decoder = nnx.List(
            [DecoderBlock(i, o, rngs=rngs) for i, o in zip(widths[::-1], chans_out)])
        self.final = nnx.Conv(1, 1, kernel_size=(1, 1), rngs=rngs)  # final block
        self.final.bias[...] = output_bias

    def __call__(self, x: jax.Array) -> jax.Array:
        expected = (self.image_size, self.image_size, self.in_features)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"BlobsFinder expects (B, {', '.join(map(str, expected))}), got {x.shape}")
        for block in self.encoder:
            x = block(x)
        latent = self.to_latent(x.reshape(x.shape[0], -1))
        x = jax.nn.leaky_relu(self.from_latent(latent))
        x = x.reshape(x.shape[0], *self.bottleneck_shape)
        for block in self.decoder:
            x = block(x)
        return jax.nn.sigmoid(self.final(x))


BlobsFinderTiny = functools.partial(BlobsFinder, image_size=32, widths=(4, 4, 4, 4), latent_features=16)
"""Test-size variant: 32×32 input, 4 channels throughout (few distinct shapes, quick to build)."""

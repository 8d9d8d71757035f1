"""Deep GRU: the spectrum denoiser of Sec. 4.2 (Fig. 6).

Two stacked GRU layers run in opposite frequency directions: the first from
low to high channel index over the input spectrum, the second from high to
low over the first layer's hidden states ("each hidden state at frequency step
t is passed to ... the current frequency step of the next layer"). Both
layers' hidden states are concatenated to a [B, 2·hidden·L] latent vector, a
fully connected layer maps it to L values and a sigmoid bounds them to [0, 1].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


class DeepGRU(nnx.Module):
    """Two opposite-direction GRU layers → Dense(L) → sigmoid.

    Args:
      spectrum_length: number of frequency channels L (paper: 128).
      hidden_features: hidden units per GRU layer (paper: 32).
      rngs: parameter initialisation keys.

    Call: (B, L) or (B, L, 1) standardised dirty spectra → (B, L) in [0, 1].

    The cells are ``nnx.GRUCell`` (eqs. 12–15 with the reset gate applied
    after the hidden-state product, as in PyTorch's ``nn.GRU`` which the paper
    used).
    """

    def __init__(self, *, spectrum_length: int = 128, hidden_features: int = 32, rngs: nnx.Rngs):
        self.spectrum_length = spectrum_length
        self.hidden_features = hidden_features
        # rngs=False: the carry starts at zero, passed explicitly in __call__.
        self.forward_gru = nnx.RNN(nnx.GRUCell(1, hidden_features, rngs=rngs), rngs=False)
        self.backward_gru = nnx.RNN(
            nnx.GRUCell(hidden_features, hidden_features, rngs=rngs),
            reverse=True, keep_order=True, rngs=False)
        self.dense = nnx.Linear(2 * hidden_features * spectrum_length, spectrum_length, rngs=rngs)

    def hidden_states(self, spectrum: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Hidden states of both layers, each (B, L, hidden) in input channel order."""
        if spectrum.ndim == 3 and spectrum.shape[-1] == 1:
            spectrum = spectrum[..., 0]
        if spectrum.ndim != 2 or spectrum.shape[1] != self.spectrum_length:
            raise ValueError(
                f"DeepGRU expects (B, {self.spectrum_length}) or (B, {self.spectrum_length}, 1), "
                f"got {spectrum.shape}")
        spectrum = spectrum.astype(jnp.result_type(spectrum.dtype, jnp.float32))
        zeros = jnp.zeros((spectrum.shape[0], self.hidden_features), spectrum.dtype)
        low_to_high = self.forward_gru(spectrum[..., None], initial_carry=zeros)
        high_to_low = self.backward_gru(low_to_high, initial_carry=zeros)
        return low_to_high, high_to_low

    def __call__(self, spectrum: jax.Array) -> jax.Array:
        low_to_high, high_to_low = self.hidden_states(spectrum)
        latent = jnp.concatenate([low_to_high, high_to_low], axis=-1)  # (B, L, 2·hidden)
        return jax.nn.sigmoid(self.dense(latent.reshape(latent.shape[0], -1)))


DeepGRUTiny = functools.partial(DeepGRU, spectrum_length=16, hidden_features=4)
"""Test-size variant: 16 channels, 4 hidden units per layer."""

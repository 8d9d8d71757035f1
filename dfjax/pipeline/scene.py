"""The scene model: every source of a cube fitted jointly through the full beam (not in the paper).

The continuum-free cube D (nz, ny, nx) is modelled as

    M(z, y, x) = Σₖ Aₖ · Lₖ(z) · (Gₖ ⊛ P)(y, x),

Gₖ a unit-peak elliptical Gaussian (x, y, σx, σy, pa; sim.sky's convention), Lₖ a unit-peak
Gaussian line (z, σz), P the beam over the whole field (:mod:`dfjax.pipeline.psf`), so that
every source's sidelobes land where they do in the data. Channels are weighted by their noise,
wz = 1/σz². Each round of :func:`fit_scene`:

1. **Amplitudes, jointly, over the whole field.** With the shapes fixed, the model is linear in
   A: A = Γ⁻¹ b with Γᵢⱼ = (Σz wz Lᵢ Lⱼ)·⟨Iᵢ, Iⱼ⟩, bᵢ = Σz wz Lᵢ(z)·⟨D(z), Iᵢ⟩, Iₖ = Gₖ ⊛ P. Their
   covariance with the cube's correlated noise (correlation ρ, spike and beam) is
   Γ⁻¹ S Γ⁻¹, Sᵢⱼ = (Σz wz Lᵢ Lⱼ)·⟨Iᵢ, ρ ⊛ Iⱼ⟩, plus the other sources' model error (a fraction
   ``model_error`` of their model, :func:`~dfjax.pipeline.forward.solve_amplitudes`); a source's **SNR** is Aₖ / σ(Aₖ).
2. **Explained away.** The source of lowest SNR under ``scene.min_snr`` is dropped and the
   amplitudes solved again, until none is left under it: a candidate on a bright source's
   sidelobe, or a second candidate for one source, has an amplitude consistent with zero once
   the bright source's model is there.
3. **Shapes, each on its window, the others subtracted.** Every surviving source's eight
   parameters (A, x, y, the ellipse's three, z, ln σz) are fitted by Levenberg–Marquardt, all
   sources at once (``vmap``), on its ± ``window_half_px`` × ``window_chan`` window of D minus
   every other source's full-beam model. The model is separable (a line times an image), so the
   normal equations come from a 3 × 3 Gram of line profiles and a 6 × 6 Gram of images; their
   inverse, sandwiched around the same Grams with ρ, is each parameter's covariance.

The last round ends after step 2: its amplitudes, SNRs and the final shapes' errors are what a
source reports. A source dropped in step 2 never returns, so each later round models only the
sources still alive (on a paper-size cube most of the line search's candidates are sidelobes,
gone after the first round). All of it is jitted JAX; the number of sources is padded to a
multiple of 8 so that cubes with similar counts share one compilation. The model's pieces (the
Gaussian in Fourier space, the line, the amplitude system) are :mod:`dfjax.pipeline.forward`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dfjax.maths import FWHM_PER_SIGMA
from dfjax.pipeline.forward import (
    MAX_SIGMA_CHAN,
    MAX_SIGMA_PX,
    MIN_SIGMA_CHAN,
    MIN_SIGMA_PX,
    amplitude_system,
    cholesky_to_sigmas,
    correlate_window,
    error_power,
    explain_away,
    far_levels,
    far_power,
    far_sidelobes,
    fft_grid,
    field_images,
    kernel_hat,
    line_profile,
    local_image,
    local_size,
    shape_to_cholesky,
)
from dfjax.pipeline.gaussfit import canonical

__all__ = ["Fitted", "Guess", "Scene", "fit_scene", "scene_model"]

LM_ITERATIONS = 24
_PAD = 8  # the number of sources is padded to a multiple of this (one compilation per bucket)


@dataclasses.dataclass(frozen=True)
class Guess:
    """A candidate's first guess: field pixels, FWHMs in pixels / channels, pa in degrees (sim.sky)."""

    x: float
    y: float
    fwhm_x: float
    fwhm_y: float
    pa: float
    z: float
    fwhm_z: float


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A source of the fitted scene: shape as :class:`Guess`, its amplitude (intrinsic peak, cube units
    per pixel), SNR (A / σ(A) with the shapes fixed: the detection's significance), the 1σ errors
    of x, y, fwhm_x, fwhm_y, pa, z, fwhm_z, the amplitude and the line flux, and ``index``, the
    guess it came from."""

    x: float
    y: float
    fwhm_x: float
    fwhm_y: float
    pa: float
    z: float
    fwhm_z: float
    amplitude: float
    snr: float
    errors: dict[str, float]
    index: int

    @property
    def line_flux(self) -> float:
        """Σ over the source of the intrinsic model: A · 2π σx σy · √(2π) σz (cube units × pixels² × channels)."""
        sx, sy, sz = (v / FWHM_PER_SIGMA for v in (self.fwhm_x, self.fwhm_y, self.fwhm_z))
        return float(self.amplitude * 2.0 * np.pi * sx * sy * np.sqrt(2.0 * np.pi) * sz)


@dataclasses.dataclass(frozen=True)
class Scene:
    """What the fit needs of a cube: the continuum-free cube (nz, ny, nx), each channel's pixel noise
    (nz,), the beam over the field (odd square, unit peak at its centre), the noise correlation
    (odd square, unit zero lag), for a beam measured on the noise its error's autocorrelation
    (:func:`~dfjax.pipeline.psf.beam_spectrum`; None for a PSF given), and the beam whose core the
    window fits (step 3) convolve with, where it is not ``psf``'s (None: ``psf``)."""

    line: np.ndarray
    noise: np.ndarray
    psf: np.ndarray
    correlation: np.ndarray
    beam_error: np.ndarray | None = None
    shape_psf: np.ndarray | None = None


# ---------------------------------------------------------------- step 2: merged (explained away: forward.explain_away)


def _merge_close(params: np.ndarray, alive: np.ndarray, order: np.ndarray, merge_px: float) -> np.ndarray:
    """Of two alive sources closer than ``merge_px`` whose lines overlap (centres within half the
    sum of their FWHMs), the later in ``order`` (strongest first) is dropped: one source fitted
    as two components is one source."""
    alive = alive.copy()
    fwhm_z = FWHM_PER_SIGMA * np.exp(params[:, 6])
    kept: list[int] = []
    for i in order:
        if not alive[i]:
            continue
        close = [j for j in kept if np.hypot(*(params[i, :2] - params[j, :2])) < merge_px
                 and abs(params[i, 5] - params[j, 5]) < 0.5 * (fwhm_z[i] + fwhm_z[j])]  # fmt: skip
        if close:
            alive[i] = False
        else:
            kept.append(int(i))
    return alive


# ---------------------------------------------------------------- step 3: shapes on windows


_LINE_OF = jnp.array([0, 0, 0, 0, 0, 0, 1, 2])  # each Jacobian column's line factor: L, ∂L/∂z, ∂L/∂ln σz
_IMAGE_OF = jnp.array([0, 1, 2, 3, 4, 5, 0, 0])  # ... and image factor: X, ∂X/∂(x, y, u, v, w)


def _window_fit(data: jax.Array, mask: jax.Array, weights: jax.Array, z0: jax.Array, theta: jax.Array,
                bounds: jax.Array, core_hat: jax.Array, corr_hat: jax.Array, *, half: int, core: int
                ) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """Levenberg–Marquardt of one source on its window → (θ, its covariance 8 × 8).

    data (Wz, S, S): the window minus the other sources; mask (S, S): 1 on the field; weights
    (Wz,); z0 the window's first channel; θ = (A, x, y, u, v, w, z, ln σz) in window
    pixels; bounds (2, 8) the box θ stays in.
    """
    zz = z0 + jnp.arange(data.shape[0], dtype=jnp.float32)

    def image(p5: jax.Array) -> jax.Array:
        return local_image(p5, core_hat, half=half, core=core) * mask

    def factors(t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(lines (3, Wz): L and its 2 derivatives, images (6, S, S): X and its 5 derivatives)."""
        images = jnp.concatenate([image(t[1:6])[None], jnp.moveaxis(jax.jacfwd(image)(t[1:6]), -1, 0)])
        line = lambda q: line_profile(zz, q)  # noqa: E731
        lines = jnp.concatenate([line(t[6:8])[None], jax.jacfwd(line)(t[6:8]).T])
        return lines, images

    def cost(t: jax.Array) -> jax.Array:
        r = data - t[0] * line_profile(zz, t[6:8])[:, None, None] * image(t[1:6])[None]
        return jnp.sum(weights[:, None, None] * r * r)

    def grams(t: jax.Array, lines: jax.Array, left: jax.Array, right: jax.Array) -> jax.Array:
        """Σ over the window of (column a)·(column b), the image factors taken from ``left``/``right``."""
        scale = jnp.where(jnp.arange(8) == 0, 1.0, t[0])
        line_gram = ((lines * weights) @ lines.T)[_LINE_OF][:, _LINE_OF]
        image_gram = (left.reshape(6, -1) @ right.reshape(6, -1).T)[_IMAGE_OF][:, _IMAGE_OF]
        return scale[:, None] * scale[None] * line_gram * image_gram

    def step(_: int, carry: tuple) -> tuple:
        t, c, lam = carry
        lines, images = factors(t)
        jtj = grams(t, lines, images, images)
        r = data - t[0] * lines[0][:, None, None] * images[0][None]
        projected = (lines * weights) @ jnp.einsum("zyx,iyx->zi", r, images)  # (3, 6)
        jtr = jnp.where(jnp.arange(8) == 0, 1.0, t[0]) * projected[_LINE_OF, _IMAGE_OF]
        damped = jtj + lam * jnp.diag(jnp.diag(jtj) + 1e-12)
        trial = jnp.clip(t + jnp.linalg.solve(damped, jtr), bounds[0], bounds[1])
        c_trial = cost(trial)
        better = jnp.isfinite(c_trial) & (c_trial < c)
        return jnp.where(better, trial, t), jnp.where(better, c_trial, c), jnp.where(better, lam / 3.0, lam * 4.0)

    theta, _, _ = jax.lax.fori_loop(0, LM_ITERATIONS, step, (theta, cost(theta), jnp.float32(1e-3)))
    lines, images = factors(theta)
    correlated = jax.vmap(lambda x: correlate_window(x, corr_hat, half=half, core=core))(images) * mask
    inverse = jnp.linalg.pinv(grams(theta, lines, images, images))
    return theta, inverse @ grams(theta, lines, images, correlated) @ inverse


@functools.partial(jax.jit, static_argnames=("half", "core", "chans"))
def _refine_shapes(line_pad: jax.Array, mask_pad: jax.Array, weights: jax.Array, params: jax.Array,
                   amplitude: jax.Array, images_pad: jax.Array, alive: jax.Array, bounds: jax.Array,
                   core_hat: jax.Array, corr_hat: jax.Array, targets: jax.Array, *, half: int, core: int,
                   chans: int) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """Step 3 for the sources ``targets`` (M,) at once → their (params (M, 7), amplitudes (M,),
    covariances (M, 8, 8)), every other alive source subtracted.

    ``line_pad``, ``mask_pad``, ``images_pad``: the cube, the field's mask and the sources' images
    padded by ``half`` on each side; ``bounds`` (2, K, 8) in field pixels; dead sources unchanged.
    """
    nz = line_pad.shape[0]
    ny, nx = mask_pad.shape[0] - 2 * half, mask_pad.shape[1] - 2 * half
    size = 2 * half + 1
    live = amplitude * alive

    def one(k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        p = params[k]
        cx = jnp.clip(jnp.round(p[0]).astype(jnp.int32), 0, nx - 1)  # the window's padded start = its field centre
        cy = jnp.clip(jnp.round(p[1]).astype(jnp.int32), 0, ny - 1)
        z0 = jnp.clip(jnp.round(p[5]).astype(jnp.int32) - chans // 2, 0, nz - chans)
        window = jax.lax.dynamic_slice(line_pad, (z0, cy, cx), (chans, size, size))
        mask = jax.lax.dynamic_slice(mask_pad, (cy, cx), (size, size))
        others = jax.lax.dynamic_slice(images_pad, (0, cy, cx), (images_pad.shape[0], size, size))
        zz = z0 + jnp.arange(chans, dtype=jnp.float32)
        others_lines = jax.vmap(lambda q: line_profile(zz, q))(params[:, 5:7])
        data = window - jnp.einsum("j,jz,jyx->zyx", live.at[k].set(0.0), others_lines, others)
        shift = jnp.zeros(8, jnp.float32).at[1].set(cx - half).at[2].set(cy - half)  # field = window + shift
        theta = jnp.concatenate([amplitude[k][None], p]) - shift
        fitted, cov = _window_fit(data, mask, jax.lax.dynamic_slice(weights, (z0,), (chans,)),
                                  z0.astype(jnp.float32), theta, bounds[:, k] - shift[None], core_hat, corr_hat,
                                  half=half, core=core)  # fmt: skip
        fitted = fitted + shift
        keep = alive[k] > 0
        return jnp.where(keep, fitted[1:], p), jnp.where(keep, fitted[0], amplitude[k]), cov

    return jax.vmap(one)(targets)


# ---------------------------------------------------------------- the fit


def _padded(n: int) -> int:
    return max(_PAD, -(-n // _PAD) * _PAD)


def _bucket(n: int) -> int:
    """The smallest power of two ≥ n: the window fits run on this many sources (one compilation each)."""
    return 1 << max(n - 1, 0).bit_length()


def _parameters(guesses: Sequence[Guess], k: int) -> np.ndarray:
    """(k, 7): x, y, u, v, w (:func:`~dfjax.pipeline.forward.shape_to_cholesky`), z, ln σz; rows past the guesses copy the first (dead)."""
    rows = [[g.x, g.y, *shape_to_cholesky(g.fwhm_x, g.fwhm_y, g.pa), g.z,
             np.log(np.clip(g.fwhm_z / FWHM_PER_SIGMA, MIN_SIGMA_CHAN, MAX_SIGMA_CHAN))] for g in guesses]
    rows += [rows[0]] * (k - len(rows))
    return np.asarray(rows, np.float32)


def _bounds(start: np.ndarray, max_shift_px: float) -> np.ndarray:
    """(2, K, 8): the box each source's (A, x, y, u, v, w, z, ln σz) stays in (u, v: 1/width's logs)."""
    k = len(start)
    full = lambda v: np.full(k, v, np.float64)  # noqa: E731
    shift_z = np.maximum(2.0, FWHM_PER_SIGMA * np.exp(start[:, 6]))
    wide, narrow = -np.log(MAX_SIGMA_PX), -np.log(MIN_SIGMA_PX)
    lo = [full(-np.inf), start[:, 0] - max_shift_px, start[:, 1] - max_shift_px, full(wide), full(wide),
          full(-1.0 / MIN_SIGMA_PX), start[:, 5] - shift_z, full(np.log(MIN_SIGMA_CHAN))]
    hi = [full(np.inf), start[:, 0] + max_shift_px, start[:, 1] + max_shift_px, full(narrow), full(narrow),
          full(1.0 / MIN_SIGMA_PX), start[:, 5] + shift_z, full(np.log(MAX_SIGMA_CHAN))]
    return np.stack([np.stack(lo, 1), np.stack(hi, 1)]).astype(np.float32)


def fit_scene(scene: Scene, guesses: Sequence[Guess], *, min_snr: float, rounds: int = 2, max_shift_px: float = 4.0,
              window_half_px: int = 16, window_chan: int = 48, core_half_px: int = 32, merge_px: float = 3.0,
              model_error: float = 0.0) -> list[Fitted]:
    """The joint fit of the module docstring: guesses → the sources the scene needs, each with its SNR
    and errors, in the guesses' order (those explained away or merged left out).

    Before each amplitude solve, of two sources within ``merge_px`` whose lines overlap the weaker
    is dropped (:func:`_merge_close`): weaker by its SNR alone in the first round, by the last
    joint SNR after. ``model_error``: the fraction of each source's model counted as noise where
    another is measured (:func:`~dfjax.pipeline.forward.solve_amplitudes`)."""
    if not guesses:
        return []
    line = jnp.asarray(np.nan_to_num(scene.line), jnp.float32)
    nz, ny, nx = scene.line.shape
    noise = np.asarray(scene.noise, np.float64)
    weights = jnp.asarray(np.where(noise > 0, 1.0 / np.maximum(noise, 1e-30) ** 2, 0.0), jnp.float32)
    k = _padded(len(guesses))
    params = jnp.asarray(_parameters(guesses, k))
    alive = np.arange(k) < len(guesses)
    bounds = jnp.asarray(_bounds(np.asarray(params), max_shift_px))
    fft_shape = fft_grid((ny, nx), scene.psf)
    psf_hat = kernel_hat(scene.psf.astype(np.float32), fft_shape)
    corr_hat = kernel_hat(scene.correlation.astype(np.float32), fft_shape)
    half, chans = int(window_half_px), int(min(window_chan, nz))
    shape_psf = scene.psf if scene.shape_psf is None else scene.shape_psf
    core = int(min(core_half_px, *(n // 2 for n in scene.psf.shape + shape_psf.shape)))
    n_local = local_size(half, core)
    c = shape_psf.shape[0] // 2, shape_psf.shape[1] // 2
    core_hat = kernel_hat(shape_psf[c[0] - core : c[0] + core + 1, c[1] - core : c[1] + core + 1].astype(np.float32),
                           (n_local, n_local))  # fmt: skip
    rc = min(core, scene.correlation.shape[0] // 2)
    cc = scene.correlation.shape[0] // 2
    local_corr_hat = kernel_hat(scene.correlation[cc - rc : cc + rc + 1, cc - rc : cc + rc + 1].astype(np.float32),
                                 (n_local, n_local))  # fmt: skip
    line_pad = jnp.pad(line, ((0, 0), (half, half), (half, half)))
    mask_pad = jnp.pad(jnp.ones((ny, nx), jnp.float32), half)
    known, ring = far_sidelobes(scene.psf)  # the beam past the edge of what is known of it, as noise
    reach, power = jnp.asarray(known, jnp.float32), far_power(ring, fft_shape)
    error = None if scene.beam_error is None else error_power(scene.beam_error, fft_shape)
    covariance = np.zeros((k, 8, 8))
    index = np.arange(k)  # each row's guess
    snr = None
    for round_ in range(rounds + 1):
        images, correlated = field_images(params, psf_hat, corr_hat, field=(ny, nx), fft_shape=fft_shape)
        far = far_levels(params, power, fft_shape=fft_shape)
        wrong = jnp.zeros_like(far) if error is None else far_levels(params, error, fft_shape=fft_shape)
        system = tuple(np.asarray(v, np.float64) for v in amplitude_system(line, weights, params, images, correlated,
                                                                           reach, far, wrong))  # fmt: skip
        # the first round ranks each source by its SNR alone, later ones by the last joint SNR
        ranking = system[0] / np.sqrt(np.maximum(np.diag(system[2]), 1e-300)) if snr is None else snr
        alive = _merge_close(np.asarray(params), alive, np.argsort(-ranking, kind="stable"), merge_px)
        alive, amplitude, snr = explain_away(system, alive, min_snr, model_error)
        if round_ == rounds or not alive.any():
            break
        live = np.flatnonzero(alive)  # only the alive sources are fitted, padded to a power of two
        targets = np.concatenate([live, np.full(_bucket(len(live)) - len(live), live[-1])])
        new, _, cov = _refine_shapes(line_pad, mask_pad, weights, params, jnp.asarray(amplitude, jnp.float32),
                                     jnp.pad(images, ((0, 0), (half, half), (half, half))),
                                     jnp.asarray(alive, jnp.float32), bounds, core_hat, local_corr_hat,
                                     jnp.asarray(targets), half=half, core=core, chans=chans)  # fmt: skip
        params = params.at[live].set(new[: len(live)])
        covariance[live] = np.asarray(cov, np.float64)[: len(live)]
        # a source explained away or merged never returns: the next rounds model only the alive ones
        rows = np.concatenate([live, np.full(_padded(len(live)) - len(live), live[0])])
        params, bounds, covariance, index = params[rows], bounds[:, rows], covariance[rows], index[rows]
        snr, alive = snr[rows], np.arange(len(rows)) < len(live)
    return [_fitted(int(index[i]), np.asarray(params[i], np.float64), amplitude[i], snr[i], covariance[i])
            for i in np.flatnonzero(alive)]  # fmt: skip


_SIGMAS = jax.jit(lambda p: cholesky_to_sigmas(p[0], p[1], p[2]))
_SIGMAS_JACOBIAN = jax.jit(jax.jacfwd(lambda p: cholesky_to_sigmas(p[0], p[1], p[2])))


def _fitted(index: int, p: np.ndarray, amplitude: float, snr: float, cov: np.ndarray) -> Fitted:
    """A row of parameters as a :class:`Fitted`: widths as FWHMs, pa folded into [0°, 90°), errors from
    ``cov`` (A, x, y, u, v, w, z, ln σz; the window fit's, shapes marginalised) carried through the
    conversion; pa's is NaN where it is undefined (a circular source)."""
    shape = jnp.asarray(p[2:5], jnp.float32)
    s1, s2, theta = (float(v) for v in _SIGMAS(shape))
    jac = np.asarray(_SIGMAS_JACOBIAN(shape), np.float64)
    shape_err = np.sqrt(np.maximum(np.diag(jac @ cov[3:6, 3:6] @ jac.T), 0.0))
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    # ln flux = ln A − u − v + ln σz + const: its gradient in (A, x, y, u, v, w, z, ln σz)
    g = np.array([1.0 / (amplitude if abs(amplitude) > 0 else 1e-30), 0, 0, -1, -1, 0, 0, 1])
    fx, fy, pa = canonical(s1, s2, float(np.rad2deg(theta)))
    e1, e2 = (shape_err[1], shape_err[0]) if fx != s1 else (shape_err[0], shape_err[1])
    sz = float(np.exp(p[6]))
    errors = {"x": err[1], "y": err[2], "fwhm_x": FWHM_PER_SIGMA * e1, "fwhm_y": FWHM_PER_SIGMA * e2,
              "pa": float(np.rad2deg(shape_err[2])) if shape_err[2] < np.pi / 2 else float("nan"),
              "z": err[6], "fwhm_z": FWHM_PER_SIGMA * err[7] * sz, "amplitude": err[0],
              "line_flux": abs(amplitude * 2 * np.pi * s1 * s2 * np.sqrt(2 * np.pi) * sz)
              * float(np.sqrt(max(g @ cov @ g, 0.0)))}  # fmt: skip
    return Fitted(x=float(p[0]), y=float(p[1]), fwhm_x=FWHM_PER_SIGMA * fx, fwhm_y=FWHM_PER_SIGMA * fy, pa=pa,
                  z=float(p[5]), fwhm_z=float(FWHM_PER_SIGMA * sz), amplitude=float(amplitude), snr=float(snr),
                  errors={key: float(v) for key, v in errors.items()}, index=int(index))  # fmt: skip


def scene_model(scene: Scene, sources: Sequence[Fitted]) -> np.ndarray:
    """The fitted sources as the cube shows them, Σ Aₖ Lₖ ⊗ (Gₖ ⊛ P) → (nz, ny, nx) float32."""
    nz, ny, nx = scene.line.shape
    if not sources:
        return np.zeros((nz, ny, nx), np.float32)
    guesses = [Guess(x=s.x, y=s.y, fwhm_x=s.fwhm_x, fwhm_y=s.fwhm_y, pa=s.pa, z=s.z, fwhm_z=s.fwhm_z) for s in sources]
    params = jnp.asarray(_parameters(guesses, _padded(len(sources))))
    fft_shape = fft_grid((ny, nx), scene.psf)
    hat = kernel_hat(scene.psf.astype(np.float32), fft_shape)
    images, _ = field_images(params, hat, hat, field=(ny, nx), fft_shape=fft_shape)
    z = jnp.arange(nz, dtype=jnp.float32)
    lines = jax.vmap(lambda q: line_profile(z, q))(params[:, 5:7])
    amplitude = jnp.zeros(params.shape[0]).at[: len(sources)].set(jnp.asarray([s.amplitude for s in sources]))
    return np.asarray(jnp.einsum("k,kz,kyx->zyx", amplitude, lines, images), np.float32)

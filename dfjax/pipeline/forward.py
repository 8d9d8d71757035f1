"""The scene's forward model (:mod:`dfjax.pipeline.scene`), in JAX: each source's Gaussian in
Fourier space seen through the beam, its line, and the linear system of the amplitudes.

A source's image is parameterised by p5 = (x, y, u, v, w): its centre in pixels and the
log-Cholesky factor of its precision, exp(−½ |M d|²) with M = [[eᵘ, w], [0, eᵛ]]
(:func:`shape_to_cholesky`; every ellipse once, a circle no special case); its line by
q = (z, ln σz) (:func:`line_profile`). Images are made on rfft2 grids: over the whole field
(:func:`field_images`, on a :func:`fft_grid` that does not wrap) or on a source's window
(:func:`local_image`, :func:`correlate_window`, on a :func:`local_size` grid).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dfjax.maths import FWHM_PER_SIGMA

__all__ = ["MAX_SIGMA_CHAN", "MAX_SIGMA_PX", "MIN_SIGMA_CHAN", "MIN_SIGMA_PX", "amplitude_errors",
           "amplitude_system", "error_power", "explain_away", "far_levels", "far_power", "far_sidelobes",
           "cholesky_to_sigmas", "correlate_window", "fft_grid", "field_images", "frequencies", "gaussian_hat",
           "gaussian_power", "inverse_gram", "kernel_hat", "line_profile", "local_image", "local_size",
           "shape_to_cholesky", "solve_amplitudes"]  # fmt: skip

MIN_SIGMA_PX = 0.25  # intrinsic widths are bounded to [this, MAX_SIGMA_PX]; an unresolved source sits near the floor
MAX_SIGMA_PX = 20.0
MIN_SIGMA_CHAN, MAX_SIGMA_CHAN = 1.0 / FWHM_PER_SIGMA, 30.0 / FWHM_PER_SIGMA
EXPLAIN_REFRESH = 32  # explain_away factors the amplitude system afresh after this many rank-one updates


def shape_to_cholesky(fwhm_x: float, fwhm_y: float, pa_deg: float) -> tuple[float, float, float]:
    """sim.sky's (FWHMs along x', y'; pa) → (u, v, w): the unit-peak Gaussian is
    exp(−½ |M d|²), d = (dx, dy), M = [[eᵘ, w], [0, eᵛ]] (log-Cholesky of the precision: every
    ellipse once, a circle no special case)."""
    sx, sy = (max(f / FWHM_PER_SIGMA, MIN_SIGMA_PX) for f in (fwhm_x, fwhm_y))
    c, s = np.cos(np.deg2rad(pa_deg)), np.sin(np.deg2rad(pa_deg))
    rotation = np.array([[c, -s], [s, c]])  # (x', y') = rotation @ (dx, dy)
    precision = rotation.T @ np.diag([sx ** -2, sy ** -2]) @ rotation
    m = np.linalg.cholesky(precision).T  # upper triangular, MᵀM = precision
    return float(np.log(m[0, 0])), float(np.log(m[1, 1])), float(m[0, 1])


def cholesky_to_sigmas(u: jax.Array, v: jax.Array, w: jax.Array) -> jax.Array:
    """(u, v, w) → (σ₁, σ₂, θ): the ellipse's widths along its axes and the sim.sky angle of σ₁'s axis."""
    a, b, c = jnp.exp(2 * u), jnp.exp(u) * w, w * w + jnp.exp(2 * v)  # precision [[a, b], [b, c]]
    mean, half_gap = 0.5 * (a + c), jnp.sqrt(0.25 * (a - c) ** 2 + b * b)
    lam1, lam2 = mean - half_gap, mean + half_gap  # the smaller precision is the wider axis
    angle = 0.5 * jnp.arctan2(2 * b, a - c)  # the axis of the larger eigenvalue, from +x
    # x' of sim.sky points along (cos pa, −sin pa): the wider axis is perpendicular to `angle`
    theta = -(angle + jnp.pi / 2)
    return jnp.stack([lam1 ** -0.5, lam2 ** -0.5, theta])


def gaussian_hat(p5: jax.Array, ky: jax.Array, kx: jax.Array, offset: float) -> jax.Array:
    """The DFT of the Gaussian of p5 = (x, y, u, v, w) (:func:`shape_to_cholesky`): its continuous,
    band-limited transform on a grid whose index is the coordinate + ``offset``; ky (n, 1) and kx
    (1, n//2 + 1) in radians per pixel (rfft2 layout).

    With M⁻¹ = [[a, b], [0, d]] (a = e⁻ᵘ, d = e⁻ᵛ, b = −w·a·d) the covariance is M⁻¹M⁻ᵀ, so
    Ĝ(k) = 2π·a·d · exp(−½ |M⁻ᵀk|²) · e^(−i k·(r₀ + offset)); the shift's phase is the outer
    product of a row's and a column's (cos and sin on n + n//2 + 1 values, not on the grid).
    """
    shift_x = -kx * (p5[0] + offset)
    shift_y = -ky * (p5[1] + offset)
    phase = jax.lax.complex(jnp.cos(shift_y), jnp.sin(shift_y)) * jax.lax.complex(jnp.cos(shift_x), jnp.sin(shift_x))
    norm, quad = _spread(p5, ky, kx)
    return norm * jnp.exp(-0.5 * quad) * phase


def gaussian_power(p5: jax.Array, ky: jax.Array, kx: jax.Array) -> jax.Array:
    """|Ĝ(k)|² of :func:`gaussian_hat`: (2π·a·d)² · exp(−|M⁻ᵀk|²), the same for every position."""
    norm, quad = _spread(p5, ky, kx)
    return norm**2 * jnp.exp(-quad)


def _spread(p5: jax.Array, ky: jax.Array, kx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(2π·a·d, |M⁻ᵀk|²) of :func:`gaussian_hat`."""
    a, d = jnp.exp(-p5[2]), jnp.exp(-p5[3])
    b = -p5[4] * a * d
    return 2.0 * jnp.pi * a * d, (a * kx) ** 2 + (b * kx + d * ky) ** 2


def frequencies(shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """(ky (n0, 1), kx (1, n1//2 + 1)) in radians per pixel for an rfft2 of ``shape``."""
    return (jnp.asarray(2 * np.pi * np.fft.fftfreq(shape[0]), jnp.float32)[:, None],
            jnp.asarray(2 * np.pi * np.fft.rfftfreq(shape[1]), jnp.float32)[None, :])  # fmt: skip


def line_profile(z: jax.Array, q: jax.Array) -> jax.Array:
    """Unit-peak Gaussian line over channels z; q = (z0, ln σz)."""
    return jnp.exp(-0.5 * ((z - q[0]) / jnp.exp(q[1])) ** 2)


def kernel_hat(kernel: np.ndarray, shape: tuple[int, int]) -> jax.Array:
    """rfft2 of an odd-square kernel placed with its centre at (0, 0) on a grid ``shape``."""
    h0, h1 = kernel.shape[0] // 2, kernel.shape[1] // 2
    grid = np.zeros(shape, np.float32)
    grid[: kernel.shape[0], : kernel.shape[1]] = kernel
    return jnp.fft.rfft2(jnp.asarray(np.roll(grid, (-h0, -h1), axis=(0, 1))))


@functools.partial(jax.jit, static_argnames=("field", "fft_shape"))
def field_images(params: jax.Array, psf_hat: jax.Array, corr_hat: jax.Array, *, field: tuple[int, int],
                  fft_shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """Iₖ = Gₖ ⊛ P and ρ ⊛ Iₖ over the field, (K, ny, nx) each."""
    ny, nx = field
    ky, kx = frequencies(fft_shape)
    g_hat = jax.vmap(lambda p: gaussian_hat(p, ky, kx, 0.0))(params[:, :5])
    images = _irfft2_cropped(g_hat * psf_hat, fft_shape, field)
    correlated = _irfft2_cropped(g_hat * psf_hat * corr_hat, fft_shape, field)
    return images, correlated


def _irfft2_cropped(x: jax.Array, shape: tuple[int, int], crop: tuple[int, int]) -> jax.Array:
    """``irfft2(x, s=shape)[..., :crop[0], :crop[1]]`` with the rows past ``crop[0]`` dropped between
    its two passes: the second pass runs on the field's rows only (640² grids for a 360² field: 0.7×)."""
    rows = jnp.fft.ifft(x, n=shape[0], axis=-2)[..., : crop[0], :]
    return jnp.fft.irfft(rows, n=shape[1], axis=-1)[..., : crop[1]]


@jax.jit
def amplitude_system(line: jax.Array, weights: jax.Array, params: jax.Array, images: jax.Array,
                      correlated: jax.Array, reach: jax.Array, far_level: jax.Array, error_level: jax.Array
                      ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """(b, Γ, S, H, F) of :mod:`dfjax.pipeline.scene`'s step 1; Hᵢₖ = (Σz wz² Lᵢ² Lₖ²)·⟨Iᵢ², Iₖ²⟩ weighs source
    k's model error where source i is measured.

    Fᵢₖ: the variance, per unit Aₖ², that source k's **unmodelled** sidelobes add to Aᵢ. The PSF is
    known only out to ``reach`` (y and x pixels, :func:`far_sidelobes`); where i lies beyond it from k, the
    model puts none of k's light at i although the sky does. That light is counted as noise: a
    sidelobe field of rms ``far_level``ₖ (k's own, :func:`far_levels`, from the outer ring of what is
    known of the PSF), in k's channels, projected on i's profile as a flat offset over i's image.
    A beam measured on the noise is wrong everywhere by its estimate's error: source k's model is
    then wrong by a field of rms ``error_level``ₖ (:func:`error_power`), counted the same way at
    every other source.
    """
    z = jnp.arange(line.shape[0], dtype=jnp.float32)
    profiles = jax.vmap(lambda q: line_profile(z, q))(params[:, 5:7])  # (K, nz)
    projected = jnp.einsum("zyx,kyx->kz", line, images)
    b = jnp.sum(profiles * weights * projected, axis=1)
    spectral = jnp.einsum("iz,jz->ij", profiles * weights, profiles)
    inner = jnp.einsum("iyx,jyx->ij", images, images)
    gram = spectral * inner
    noise = spectral * jnp.einsum("iyx,jyx->ij", images, correlated)
    squared = images * images
    shadow = jnp.einsum("iz,jz->ij", (profiles * weights) ** 2, profiles**2) * jnp.einsum("iyx,jyx->ij", squared, squared)
    offset = jnp.abs(params[:, None, :2] - params[None, :, :2])  # (K, K, [x, y])
    beyond = (offset[..., 0] > reach[1]) | (offset[..., 1] > reach[0])
    per_unit = spectral * (jnp.sum(images, axis=(1, 2)) / jnp.maximum(jnp.diag(gram), 1e-30))[:, None]
    others = 1.0 - jnp.eye(len(b), dtype=per_unit.dtype)
    far = jnp.where(beyond, (far_level[None, :] * per_unit) ** 2, 0.0) + others * (error_level[None, :] * per_unit) ** 2
    return b, gram, noise, shadow, far


def far_sidelobes(psf: np.ndarray, *, ring: float = 0.25) -> tuple[tuple[int, int], np.ndarray]:
    """How far ``psf`` (odd square, unit peak at its centre, zero where unknown) is known, and what its
    sidelobes past that look like: ((reach y, reach x), the PSF on the outer ``ring`` of the known
    extent (Chebyshev distance), zero elsewhere, ``psf``'s shape). A PSF image (tclean's is the
    image's size) padded to the field's reach with zeros is known only where it is not zero; its
    sidelobes go on past that edge much as they are in that ring (:func:`far_power`)."""
    c0, c1 = psf.shape[0] // 2, psf.shape[1] // 2
    known = psf != 0
    rows, cols = np.flatnonzero(known.any(axis=1)), np.flatnonzero(known.any(axis=0))
    if not len(rows):
        return (0, 0), np.zeros_like(psf)
    ry, rx = int(min(c0 - rows[0], rows[-1] - c0)), int(min(c1 - cols[0], cols[-1] - c1))
    yy, xx = np.indices(psf.shape)
    distance = np.maximum(np.abs(yy - c0) / max(ry, 1), np.abs(xx - c1) / max(rx, 1))
    return (ry, rx), np.where((distance >= 1.0 - ring) & (distance <= 1.0), psf, 0.0).astype(np.float32)


def far_power(ring_psf: np.ndarray, fft_shape: tuple[int, int]) -> jax.Array:
    """R(k) on an rfft2 grid ``fft_shape`` with Σₖ |Ĝ(k)|² R(k) the mean square of G ⊛ ``ring_psf``
    over the ring (Parseval): the level of a source's own sidelobes past what is known of the beam
    (:func:`far_levels`). ``ring_psf``: :func:`far_sidelobes`' ring, odd square."""
    n_ring = max(int(np.count_nonzero(ring_psf)), 1)
    power = jnp.abs(kernel_hat(ring_psf.astype(np.float32), fft_shape)) ** 2
    return power * _half_plane_weight(fft_shape) / float(fft_shape[0] * fft_shape[1] * n_ring)


def _half_plane_weight(fft_shape: tuple[int, int]) -> jax.Array:
    """(1, n1//2 + 1): how many cells of the full plane each rfft2 column stands for (two, but 0 and Nyquist)."""
    weight = np.full(fft_shape[1] // 2 + 1, 2.0, np.float32)
    weight[0] = 1.0
    if fft_shape[1] % 2 == 0:
        weight[-1] = 1.0
    return jnp.asarray(weight)[None, :]


def error_power(error_acf: np.ndarray, fft_shape: tuple[int, int]) -> jax.Array:
    """R(k) on an rfft2 grid ``fft_shape`` with Σₖ |Ĝ(k)|² R(k) the variance of G ⊛ E, E a random
    field of autocorrelation ``error_acf`` (odd square; :func:`~dfjax.pipeline.psf.beam_spectrum`'s
    beam error): the rms, through :func:`far_levels`, of a source's model error where the beam is an
    estimate."""
    spectrum = jnp.maximum(jnp.real(kernel_hat(error_acf.astype(np.float32), fft_shape)), 0.0)
    return spectrum * _half_plane_weight(fft_shape) / float(fft_shape[0] * fft_shape[1])


@functools.partial(jax.jit, static_argnames=("fft_shape",))
def far_levels(params: jax.Array, power: jax.Array, *, fft_shape: tuple[int, int]) -> jax.Array:
    """(K,) rms of each source's unit-amplitude sidelobes past the known beam, √Σ |Ĝₖ|² R (:func:`far_power`).

    For a point source this is its image's peak times the ring's rms; an extended one averages the
    ring's fine speckle away but adds up its smooth part coherently, by up to its area over the
    beam's (a 13 px source seen through a 3 px beam: ~20× what its peak alone would say)."""
    ky, kx = frequencies(fft_shape)
    return jax.vmap(lambda p5: jnp.sqrt(jnp.sum(gaussian_power(p5, ky, kx) * power)))(params[:, :5])


def solve_amplitudes(b: np.ndarray, gram: np.ndarray, noise: np.ndarray, shadow: np.ndarray, far: np.ndarray,
                     alive: np.ndarray, model_error: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Amplitudes and their standard errors for the ``alive`` sources (0 and inf elsewhere).

    The error adds to the noise's the other sources' model error: each voxel's model is wrong by
    ``model_error`` × its value (the beam, the continuum and the line shapes are never exact), so
    a bright source's flank is a noisier place to claim a faint one than the empty field; and the
    sidelobes of sources farther than the PSF reaches (``far``, :func:`amplitude_system`).
    """
    k = np.flatnonzero(alive)
    amplitude, error = np.zeros(len(b)), np.full(len(b), np.inf)
    if not len(k):
        return amplitude, error
    block = np.ix_(k, k)
    inverse, _ = inverse_gram(gram[block])
    amplitude[k], error[k] = amplitude_errors(inverse, noise[block] @ inverse, b[k], shadow[block], far[block],
                                              model_error)  # fmt: skip
    return amplitude, error


def amplitude_errors(inverse: np.ndarray, noise_inverse: np.ndarray, b: np.ndarray, shadow: np.ndarray,
                     far: np.ndarray, model_error: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`solve_amplitudes` on a system already cut to its alive sources, given Γ⁻¹ and S Γ⁻¹ (so that
    a caller dropping one source at a time can update both instead of solving again)."""
    amplitude = inverse @ b
    others = shadow * (1.0 - np.eye(len(b)))
    systematic = model_error**2 * np.diag(inverse) ** 2 * (others @ amplitude**2)
    unmodelled = far @ amplitude**2
    sandwich = np.einsum("mi,mi->i", noise_inverse, inverse)  # diag(Γ⁻¹ S Γ⁻¹) = Σₘ (S Γ⁻¹)ₘᵢ (Γ⁻¹)ₘᵢ
    return amplitude, np.sqrt(np.maximum(sandwich + systematic + unmodelled, 1e-300))


def inverse_gram(gram: np.ndarray) -> tuple[np.ndarray, bool]:
    """(Γ⁻¹ of a Gram matrix, whether it is the exact inverse): by Cholesky, or its pseudo-inverse
    where Γ is singular (two candidates with one image)."""
    from scipy import linalg

    try:
        factor = linalg.cho_factor(gram, lower=True, check_finite=False)
    except linalg.LinAlgError:
        return np.linalg.pinv(gram), False
    inverse = linalg.cho_solve(factor, np.eye(len(gram)), check_finite=False)
    return (inverse, True) if np.isfinite(inverse).all() else (np.linalg.pinv(gram), False)


def explain_away(system: tuple[np.ndarray, ...], alive: np.ndarray, min_snr: float, model_error: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The scene's step 2 (:mod:`dfjax.pipeline.scene`) on ``system`` (:func:`amplitude_system`, float64):
    drop the lowest-SNR ``alive`` source under ``min_snr`` and solve again, until none is → (alive,
    amplitudes, SNRs).

    Solving again is a rank-one update: without source j, Γ⁻¹ loses qqᵀ/qⱼ (q its column of Γ⁻¹)
    and S Γ⁻¹ loses (S Γ⁻¹)ⱼ qᵀ/qⱼ, so each drop costs K² instead of K³ (the first round's ~280
    candidates, most of them dropped). Both are factored afresh every ``EXPLAIN_REFRESH`` drops (rounding
    does not build up), at every drop where Γ is singular (the pseudo-inverse has no such update),
    and for the amplitudes returned."""
    b, gram, noise, shadow, far = system
    alive = alive.copy()
    while alive.any():
        k = np.flatnonzero(alive)
        block = np.ix_(k, k)
        inverse, exact = inverse_gram(gram[block])
        noise_inverse, b_k, shadow_k, far_k = noise[block] @ inverse, b[k], shadow[block], far[block]
        for _ in range(EXPLAIN_REFRESH if exact else 1):
            amplitude, error = amplitude_errors(inverse, noise_inverse, b_k, shadow_k, far_k, model_error)
            worst = int(np.argmin(amplitude / error))
            if amplitude[worst] / error[worst] >= min_snr:
                amplitude, error = solve_amplitudes(*system, alive, model_error)
                return alive, amplitude, np.where(alive, amplitude / error, 0.0)
            alive[k[worst]] = False
            q, sq = inverse[:, worst].copy(), noise_inverse[:, worst].copy()
            if not q[worst] > 0 or len(k) == 1:
                break
            keep = np.arange(len(k)) != worst
            inverse = (inverse - np.outer(q, q) / q[worst])[np.ix_(keep, keep)]
            noise_inverse = (noise_inverse - np.outer(sq, q) / q[worst])[np.ix_(keep, keep)]
            k, b_k, shadow_k, far_k = k[keep], b_k[keep], shadow_k[np.ix_(keep, keep)], far_k[np.ix_(keep, keep)]
    return alive, np.zeros(len(b)), np.zeros(len(b))


def local_size(half: int, core: int) -> int:
    """The FFT side for a window's model: ≥ the window plus the core's reach on each side (no wrap), fast."""
    from scipy import fft

    return fft.next_fast_len(2 * (half + core) + 1, real=True)


def local_image(p5: jax.Array, core_hat: jax.Array, *, half: int, core: int) -> jax.Array:
    """Gₖ ⊛ P_core on a (2·half + 1)² window; p5 in window pixels (its centre pixel is (half, half))."""
    n = local_size(half, core)
    ky, kx = frequencies((n, n))
    inner = slice(core, core + 2 * half + 1)
    return jnp.fft.irfft2(gaussian_hat(p5, ky, kx, float(core)) * core_hat, s=(n, n))[inner, inner]


def correlate_window(x: jax.Array, corr_hat: jax.Array, *, half: int, core: int) -> jax.Array:
    """ρ ⊛ x for a window image x (2·half + 1)², zero outside."""
    n = local_size(half, core)
    inner = slice(core, core + 2 * half + 1)
    grid = jnp.zeros((n, n), x.dtype).at[inner, inner].set(x)
    return jnp.fft.irfft2(jnp.fft.rfft2(grid) * corr_hat, s=(n, n))[inner, inner]


def fft_grid(field: tuple[int, int], psf: np.ndarray) -> tuple[int, int]:
    """A fast FFT grid on which Gₖ ⊛ P over the field does not wrap: ≥ field + the PSF's half extent."""
    from scipy import fft

    return tuple(fft.next_fast_len(n + h // 2 + 1, real=True) for n, h in zip(field, psf.shape))  # type: ignore[return-value]

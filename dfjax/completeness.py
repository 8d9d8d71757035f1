"""Completeness measured on the user's own cube: simulated sources injected into it and searched for again.

Each of ``trials`` injected cubes is the cube plus ``per_cube`` model sources, and the pipeline
(``detect``) runs on each. An injected source is the simulator's own model (:mod:`sim.sky`: a
unit-peak 2-D Gaussian times a Gaussian line, no continuum) seen through the cube's beam::

    Σ_obs = Σ_intrinsic + Σ_beam        (covariances of the two 2-D Gaussians in pixels)
    S(x, y, z) = snr · σ · g_obs(x, y) · exp(−(z − z_c)² / (2 s_z²))

* **beam**: the header's restoring beam (BMAJ/BMIN/BPA, or the median of a CASA BEAMS table) as
  an elliptical Gaussian, carried into pixels through the celestial WCS
  (Σ_px = M⁻¹ Σ_sky M⁻ᵀ, M the pixel-scale matrix; any pixel shape or rotation). Without a beam:
  the noise autocorrelation (:func:`dfjax.pipeline.characterise.beam_psf`), whose half-maximum
  region, a uniform ellipse of semi-axes FWHM/2, has second moments FWHM²/16 (pixels as unit squares).
* **snr** is the model's peak over σ, the cube's robust noise: the MAD standard deviation of every
  unblanked voxel, 5σ-clipped (sources excluded). Drawn uniformly in ``snr_range``.
* **size**: the intrinsic major FWHM in units of the beam's major FWHM, uniform in ``size_range``
  (0 = a point source); minor/major uniform in [0.5, 1], pa uniform; the line FWHM uniform in
  ``sim.config.SkyConfig.line_fwhm_chan`` channels (at most a quarter of the band).
* **positions** (seeded ``numpy`` generator): uniform over the field, away from blanked voxels, the
  edges (one observed FWHM) and, in space *and* frequency, from the cube's catalogue and each other:
  two sources conflict when their centres are closer than the sum of their observed major FWHMs plus
  the match radius and their line centres closer than the sum of their line FWHMs.
* **recovered**: a detection within ``MatchCriteria.max_distance_px`` (3 px, the project's match
  radius, :mod:`dfjax.eval.matching`) and max(2, FWHM_z/2) channels, assigned one to one
  (Hungarian algorithm, by distance).

Per bin of SNR and of size: counts, the fraction recovered, its binomial error √(p(1−p)/n) and the
68 % Wilson score interval (finite at p = 0 and 1).
"""

from __future__ import annotations

import dataclasses
import io
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.stats import sigma_clipped_stats
from astropy.table import QTable
from scipy import ndimage

from dfjax.catalogue_io import catalogue_bytes, write_atomic
from dfjax.cube_io import Cube
from dfjax.eval.matching import CENTRE_RADIUS_PX, MIN_CHANNELS, match_centres
from dfjax.maths import FWHM_PER_SIGMA, covariance_of, ellipse_of
from sim import sky
from sim.config import SkyConfig

__all__ = ["CompletenessError", "Gaussian", "Injection", "beam_in_pixels", "completeness_table", "draw_injections",
           "inject", "measure_completeness", "plot_completeness", "recovered", "robust_noise", "write_completeness"]

MAX_TRIES = 500  # positions tried per injected source before it is left out of its cube


class CompletenessError(ValueError):
    """The completeness cannot be measured on this cube (no beam and no noise, or no noise at all)."""


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """A 2-D Gaussian in pixels, :mod:`sim.sky`'s convention: FWHMs along x', y'; pa in degrees."""

    fwhm_x: float
    fwhm_y: float
    pa: float

    def covariance(self) -> np.ndarray:
        """(2, 2) covariance in (x, y) pixels: Qᵀ diag(s_x², s_y²) Q, Q = [[cos, −sin], [sin, cos]]."""
        return covariance_of(self.fwhm_x, self.fwhm_y, self.pa)

    @classmethod
    def from_covariance(cls, cov: np.ndarray) -> Gaussian:
        """The Gaussian of covariance ``cov`` (2, 2), its major axis as x'."""
        return cls(*ellipse_of(cov))

    @property
    def major(self) -> float:
        return max(self.fwhm_x, self.fwhm_y)


@dataclasses.dataclass(frozen=True)
class Injection:
    """One injected source: centre (x, y, z) pixels/channel, observed shape, line FWHM, SNR, size in beams."""

    x: float
    y: float
    z: float
    shape: Gaussian  # intrinsic ⊛ beam
    fwhm_z: float
    snr: float
    size: float


def beam_in_pixels(cube: Cube) -> tuple[Gaussian, str]:
    """(the beam as a pixel Gaussian, where it came from: "header" or "noise autocorrelation")."""
    if cube.beam is not None:
        bpa = math.radians(float(cube.beam.pa.to_value(u.deg)))
        major, minor = (float(q.to_value(u.deg)) / FWHM_PER_SIGMA for q in (cube.beam.major, cube.beam.minor))
        v = np.array([[math.sin(bpa), math.cos(bpa)], [math.cos(bpa), -math.sin(bpa)]]).T  # (east, north) axes
        sky_cov = v @ np.diag([major**2, minor**2]) @ v.T
        if cube.celestial.wcs.lng == 1:  # pixel x is the latitude axis
            sky_cov = sky_cov[::-1, ::-1]
        m_inv = np.linalg.inv(cube.celestial.pixel_scale_matrix)
        return Gaussian.from_covariance(m_inv @ sky_cov @ m_inv.T), "header"
    from dfjax.pipeline.characterise import beam_psf  # imported late: the pipeline is only needed here

    psf = beam_psf(np.nan_to_num(cube.data))
    if psf is None:
        raise CompletenessError(f"{cube.path}: no beam in the header and no noise to measure it from")
    labels, _ = ndimage.label(psf >= 0.5)
    half = psf.shape[0] // 2
    ys, xs = np.nonzero(labels == labels[half, half])
    cov = np.cov(np.stack([xs, ys]).astype(float), bias=True) + np.eye(2) / 12.0  # pixels as unit squares
    return Gaussian.from_covariance(cov * 16.0 / FWHM_PER_SIGMA**2), "noise autocorrelation"


def robust_noise(data: np.ndarray) -> float:
    """σ of the noise: the MAD standard deviation of the finite voxels, 5σ-clipped."""
    values = np.asarray(data, np.float64)
    return float(sigma_clipped_stats(values[np.isfinite(values)], sigma=5.0, maxiters=3, stdfunc="mad_std")[2])


def draw_injections(rng: np.random.Generator, cube: Cube, beam: Gaussian, *, n: int, avoid: QTable | None = None,
                    snr_range: tuple[float, float] = (1.0, 15.0), size_range: tuple[float, float] = (0.0, 1.5),
                    ) -> list[Injection]:  # fmt: skip
    """Up to ``n`` sources for one injected cube, clear of each other and of ``avoid``'s rows (x, y, z, fwhm_*)."""
    nz, ny, nx = cube.shape
    fwhm_lo, fwhm_hi = SkyConfig().line_fwhm_chan
    fwhm_hi = min(fwhm_hi, nz / 4)
    taken = [] if avoid is None else [
        (float(r["x"].value), float(r["y"].value), float(r["z"].value),
         max(float(r["fwhm_x"].value), float(r["fwhm_y"].value)), float(r["fwhm_z"].value)) for r in avoid]
    out: list[Injection] = []
    for _ in range(n):
        size = rng.uniform(*size_range)
        intrinsic = Gaussian(size * beam.major, size * beam.major * rng.uniform(0.5, 1.0), rng.uniform(0, 180))
        shape = Gaussian.from_covariance(intrinsic.covariance() + beam.covariance())
        fwhm_z = rng.uniform(min(fwhm_lo, fwhm_hi), fwhm_hi)
        snr = rng.uniform(*snr_range)
        edge = min(shape.major, (min(nx, ny) - 1) / 2 - 1)
        for _ in range(MAX_TRIES):
            x, y = rng.uniform(edge, nx - 1 - edge), rng.uniform(edge, ny - 1 - edge)
            z = rng.uniform(min(fwhm_z, (nz - 1) / 2), max(nz - 1 - fwhm_z, (nz - 1) / 2))
            clear = all(math.hypot(x - tx, y - ty) >= shape.major + tf + CENTRE_RADIUS_PX or abs(z - tz) >= fwhm_z + tfz
                        for tx, ty, tz, tf, tfz in taken)  # fmt: skip
            if clear and not cube.blank[round(z), round(y), round(x)]:
                out.append(Injection(x, y, z, shape, fwhm_z, snr, size))
                taken.append((x, y, z, shape.major, fwhm_z))
                break
    return out


def inject(data: np.ndarray, injections: list[Injection], sigma: float) -> np.ndarray:
    """``data`` (nz, ny, nx) plus each source, peak snr · ``sigma``, rendered by :mod:`sim.sky` on a stamp."""
    out = np.array(data, np.float32, copy=True)
    nz, ny, nx = out.shape
    for inj in injections:
        half = int(math.ceil(3.0 * inj.shape.major))
        ix, iy = round(inj.x), round(inj.y)
        model = sky.Source(x=inj.x - ix + half, y=inj.y - iy + half, z=inj.z, fwhm_x=inj.shape.fwhm_x,
                           fwhm_y=inj.shape.fwhm_y, pa=inj.shape.pa, fwhm_z=inj.fwhm_z, amplitude=1.0,
                           line_amplitude=1.0, spectral_index=0.0)  # fmt: skip
        stamp = sky.spatial_profile(model, 2 * half + 1)
        line = sky.line_profile(model, nz)
        y0, x0 = max(iy - half, 0), max(ix - half, 0)
        y1, x1 = min(iy + half + 1, ny), min(ix + half + 1, nx)
        part = stamp[y0 - (iy - half) : y1 - (iy - half), x0 - (ix - half) : x1 - (ix - half)]
        out[:, y0:y1, x0:x1] += (inj.snr * sigma * line[:, None, None] * part[None]).astype(np.float32)
    return out


def recovered(injections: list[Injection], detections: QTable) -> np.ndarray:
    """(N,) the catalogue ``snr`` of the detection each injection is matched to (one to one, within 3 px
    and max(2, FWHM_z/2) channels: :func:`dfjax.eval.matching.match_centres`); NaN where it was not
    recovered."""
    snr = np.full(len(injections), np.nan)
    if not injections or len(detections) == 0:
        return snr
    det = np.stack([np.asarray(u.Quantity(detections[c]).value, float) for c in ("x", "y", "z")], axis=1)
    pairs = match_centres(det, np.array([(i.x, i.y, i.z, i.fwhm_z) for i in injections])).pairs
    snr[pairs[:, 1]] = np.asarray(detections["snr"], float)[pairs[:, 0]]
    return snr


def _wilson(k: np.ndarray, n: np.ndarray, z: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """68 % (z = 1) Wilson score interval of k successes in n trials; NaN where n = 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return np.clip(np.fmin(centre - half, p), 0, 1), np.clip(np.fmax(centre + half, p), 0, 1)  # rounding at 0, 1


def completeness_table(injections: list[Injection], detected_snr: np.ndarray, *, snr_edges: np.ndarray,
                       size_edges: np.ndarray) -> QTable:  # fmt: skip
    """Recovered fraction per SNR bin and per size bin: one row per bin, ``axis`` "snr" or "size".

    ``detected_snr``: (N,) from :func:`recovered`, the matched detection's catalogue SNR or NaN.
    """
    found = np.isfinite(detected_snr)
    rows = []
    for axis, edges, values in (("snr", snr_edges, [i.snr for i in injections]),
                                ("size", size_edges, [i.size for i in injections])):  # fmt: skip
        index = np.clip(np.digitize(values, edges) - 1, 0, len(edges) - 2)
        for b in range(len(edges) - 1):
            inside = index == b
            hits = detected_snr[inside & found]
            rows.append((axis, edges[b], edges[b + 1], int(inside.sum()), int(hits.size),
                         float(np.median(hits)) if hits.size else np.nan))  # fmt: skip
    axis, lo, hi, n, k, catalogue_snr = (np.array(c) for c in zip(*rows))
    n_f, k_f = n.astype(float), k.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k_f / n_f
        err = np.sqrt(p * (1 - p) / n_f)
    lower, upper = _wilson(k_f, n_f)
    t = QTable()
    described = {
        "axis": (axis, "binned quantity: snr (injected peak / robust noise) or size (intrinsic major FWHM / beam)"),
        "bin_lo": (lo.astype(float), "bin lower edge (inclusive)"), "bin_hi": (hi.astype(float), "bin upper edge"),
        "n_injected": (n, "sources injected in the bin"), "n_recovered": (k, "of them recovered by the pipeline"),
        "completeness": (p, "n_recovered / n_injected (NaN for an empty bin)"),
        "completeness_err": (err, "binomial error sqrt(p (1 - p) / n)"),
        "lower": (lower, "68 % Wilson score interval, lower"), "upper": (upper, "68 % Wilson score interval, upper"),
        "median_catalogue_snr": (catalogue_snr, "median catalogue snr of the recovered sources (NaN if none)"),
    }  # fmt: skip
    for name, (values, description) in described.items():
        t[name] = values
        t[name].info.description = description
    return t


def measure_completeness(cube: Cube, detect: Callable[[Cube], QTable], *, catalogue: QTable | None = None,
                         trials: int = 20, per_cube: int = 5, seed: int = 0,
                         snr_range: tuple[float, float] = (1.0, 15.0), snr_bins: int = 7,
                         size_range: tuple[float, float] = (0.0, 1.5), size_bins: int = 3,
                         progress: bool = True) -> QTable:  # fmt: skip
    """Inject ``per_cube`` sources into ``trials`` copies of ``cube``, run ``detect`` on each; the binned table."""
    if trials < 1 or per_cube < 1:
        raise CompletenessError(f"need at least one trial and one source per cube (got {trials}, {per_cube})")
    from tqdm import tqdm

    beam, beam_origin = beam_in_pixels(cube)
    sigma = robust_noise(cube.data)
    if not sigma > 0:
        raise CompletenessError(f"{cube.path}: the cube has no noise (robust σ = {sigma})")
    rng = np.random.default_rng(seed)
    injections: list[Injection] = []
    detected: list[np.ndarray] = []
    for _ in tqdm(range(trials), desc="completeness", unit="cube", file=sys.stderr, disable=not progress):
        batch = draw_injections(rng, cube, beam, n=per_cube, avoid=catalogue, snr_range=snr_range,
                                size_range=size_range)  # fmt: skip
        detections = detect(dataclasses.replace(cube, data=inject(cube.data, batch, sigma)))
        injections += batch
        detected.append(recovered(batch, detections))
    table = completeness_table(injections, np.concatenate(detected) if detected else np.zeros(0),
                               snr_edges=np.linspace(*snr_range, snr_bins + 1),
                               size_edges=np.linspace(*size_range, size_bins + 1))  # fmt: skip
    table.meta.update({
        "CUBE": str(cube.path), "SEED": int(seed), "TRIALS": int(trials), "PERCUBE": int(per_cube),
        "NINJECT": len(injections), "NOISE": sigma, "NOISEUNT": "mJy/beam (robust MAD sigma, 5-sigma clipped)",
        "BEAMSRC": beam_origin,
        "BEAMPX": f"{beam.fwhm_x:.3f},{beam.fwhm_y:.3f},{beam.pa:.2f} (fwhm_x,fwhm_y px; pa deg, sim.sky convention)",
        "MATCH": f"distance < {CENTRE_RADIUS_PX} px and |dz| <= max({MIN_CHANNELS}, fwhm_z/2) chan, one to one",
        "SNRDEF": "model peak of the beam-convolved source / NOISE",
    })  # fmt: skip
    return table


def plot_completeness(table: QTable) -> bytes:
    """PNG: recovered fraction against SNR and against size, with the Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    labels = {"snr": "injected peak SNR", "size": "intrinsic FWHM / beam FWHM"}
    for i, axis in enumerate(("snr", "size")):
        ax = fig.add_subplot(1, 2, i + 1)
        rows = table[table["axis"] == axis]
        centre = (np.asarray(rows["bin_lo"]) + np.asarray(rows["bin_hi"])) / 2
        p = np.asarray(rows["completeness"], float)
        err = np.stack([p - np.asarray(rows["lower"]), np.asarray(rows["upper"]) - p])
        ax.errorbar(centre, p, yerr=err, xerr=(np.asarray(rows["bin_hi"]) - np.asarray(rows["bin_lo"])) / 2,
                    fmt="o", color="k", capsize=2)  # fmt: skip
        for c, n in zip(centre, rows["n_injected"]):
            ax.annotate(str(n), (c, -0.08), ha="center", fontsize=7, color="grey")  # sources injected in the bin
        ax.set(xlabel=labels[axis], ylabel="completeness (grey: n injected)", ylim=(-0.12, 1.05),
               title=f"{Path(str(table.meta.get('CUBE', ''))).name}: {table.meta.get('NINJECT', '?')} injected")
        ax.axhline(1.0, color="grey", lw=0.5)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def write_completeness(table: QTable, ecsv: str | Path, png: str | Path) -> None:
    """Write the table (ECSV) and its plot (PNG), each atomically."""
    write_atomic(ecsv, catalogue_bytes(table, "ecsv"))
    write_atomic(png, plot_completeness(table))

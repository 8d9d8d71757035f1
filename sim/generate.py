"""Generate a set of simulated cubes: sky model -> observation -> truth catalogue -> FITS.

Layout of an output directory::

    DIR/config.yaml         the configuration that made it (resuming checks it)
    DIR/sky_00000.fits      sky model, Jy/pixel
    DIR/cube_00000.fits     dirty cube, Jy/beam; its SOURCES extension holds the truth rows
                            (cleaned and/or PB-corrected as sim.observation says: sim.clean, tclean)
    DIR/catalogue.csv       all truth rows, one per source (sim.sky.CATALOGUE_COLUMNS)
    DIR/psf.fits            with --psf: the set-up's dirty beam (fast backend's model)
    DIR/pb.fits             with observation.pbcor: the primary beam (shared by every cube), NaN below pblimit

Cube ``i`` is drawn from ``SeedSequence([seed, i])`` alone, so the same seed gives the same
cubes whatever the number of workers, and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import yaml
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.wcs import WCS

from sim import fitsio, sky
from sim.clean import make_product
from sim.config import ConfigError, ObservationConfig, SimConfig, from_dict
from sim.instrument import Instrument, build_instrument
from sim.observe import channel_keys, noise_args, observe, observe_batch, thermal_noise, white_noise, white_rms

CUBE_PATTERN = "cube_{:05d}.fits"
SKY_PATTERN = "sky_{:05d}.fits"
VERSION = "1.0.0"  # bump when the simulator's output changes (the dataset builder follows it)


def cube_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _catalogue(index: int, model: sky.SkyModel, dirty: np.ndarray, noise_rms: float,
               freqs_hz: np.ndarray, config: SimConfig, wcs: WCS, pb: np.ndarray | None = None) -> Table:  # fmt: skip
    """Truth rows for one cube (see sim.sky for the columns and conventions); with a primary
    beam `pb` (a PB-corrected cube) the peak SNR is over the local noise, `noise_rms` / PB."""
    nz, n = dirty.shape[0], dirty.shape[-1]
    boxes = [sky.box_2d(p) for p in model.profiles]
    obs = config.observation
    rows = []
    for i, (src, box) in enumerate(zip(model.sources, boxes)):
        freq = obs.centre_freq_hz + (src.z - nz // 2) * (freqs_hz[1] - freqs_hz[0] if nz > 1 else 0.0)
        cont = model.scale * src.amplitude
        line_amp = cont * (freq / freqs_hz[nz // 2]) ** src.spectral_index * src.line_amplitude
        zi, yi, xi = (int(np.clip(np.rint(v), 0, m - 1)) for v, m in ((src.z, nz), (src.y, n), (src.x, n)))
        peak = float(dirty[zi, yi, xi])
        local_rms = noise_rms / float(pb[zi, yi, xi]) if pb is not None else noise_rms
        ra, dec = wcs.celestial.wcs_pix2world([[src.x, src.y]], 0)[0]
        others = [sky.iou_2d(box, b) for j, b in enumerate(boxes) if j != i]
        rows.append({
            "cube": index, "id": i, "x": src.x, "y": src.y, "z": src.z,
            "fwhm_x": src.fwhm_x, "fwhm_y": src.fwhm_y, "pa": src.pa, "fwhm_z": src.fwhm_z,
            "line_amp": line_amp, "cont_amp": cont, "spectral_index": src.spectral_index,
            "line_flux": sky.line_flux_jy_km_s(src, model, i, freqs_hz, obs.channel_width_hz),
            "peak_snr": peak / local_rms if noise_rms > 0 else float("inf"),
            "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
            "z0": src.z - src.fwhm_z, "z1": src.z + src.fwhm_z,
            "blendness": max(others, default=0.0),
            "ra": float(ra) % 360.0, "dec": float(dec), "freq": freq,
        })  # fmt: skip
    return Table(rows=rows, names=sky.CATALOGUE_COLUMNS)


@dataclass
class _Draw:
    """Everything cube `index` needs before it is observed: its sky model and noise draws."""

    index: int
    freqs: np.ndarray
    model: sky.SkyModel
    target_snr: float
    noise_seed: int
    instrument: Instrument
    mode: str  # the cube's noise mode (cube_noise_mode)


def _draw(index: int, config: SimConfig) -> _Draw:
    obs, cube_cfg = config.observation, config.cube
    rng = cube_rng(config.seed, index)
    freqs = sky.channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, cube_cfg.channels)
    sources = sky.draw_sources(rng, config.sky, cube_cfg.size, cube_cfg.channels, freqs)
    model = sky.build_sky(sources, cube_cfg.size, freqs, config.sky.peak_jy_per_px)
    target_snr = float(rng.uniform(*config.noise.snr_range))
    noise_seed = int(rng.integers(2**31 - 1))
    mode = cube_noise_mode(rng, config)  # drawn last: the draws above are those of simulator 1.0.0
    instrument = build_instrument(obs, cube_cfg.size, freqs, sky.support(config.sky, cube_cfg.size))
    return _Draw(index, freqs, model, target_snr, noise_seed, instrument, mode)


def _finish(d: _Draw, dirty: np.ndarray, noise_rms: float, white: float, beams: np.ndarray,
            config: SimConfig, pb: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, fits.Header, Table, dict]:  # fmt: skip
    """Header, cards and truth catalogue of an observed cube: what `simulate_cube` returns."""
    obs = config.observation
    header = fitsio.celestial_header(obs, config.cube.size, d.freqs)
    cards = {
        "ORIGIN": "dfjax.sim", "SIMVERS": VERSION, "SIMBACK": config.backend, "SEED": config.seed,
        "CUBEIDX": d.index, "ANTCFG": obs.antenna_config, "NOISE": d.mode,
        "NOISERMS": (noise_rms, "[Jy/beam] rms of the added noise"),
        "TARGSNR": (d.target_snr if d.mode in ("snr", "paper") else 0.0, "target peak SNR, central source"),
        "PWV": (obs.pwv_mm, "[mm]"), "INTTIME": (obs.integration_s, "[s]"),
        "TOTTIME": (obs.total_time_s, "[s]"), "WEIGHT": obs.weighting, "SKYSCALE": d.model.scale,
    }  # fmt: skip
    if config.noise.mode == "paper" or config.noise.paper_fraction > 0:  # 1.0.0's cards otherwise
        cards["WHITERMS"] = (white, "[Jy/beam] rms of the image-domain white noise")
        cards["PAPERFRC"] = (1.0 if config.noise.mode == "paper" else config.noise.paper_fraction,
                             "probability of the paper noise mode")  # fmt: skip
    if obs.niter > 0 or obs.pbcor:  # 1.0.0's cards otherwise
        cards.update(product_cards(obs))
    if obs.pbcor:
        cards["NOISERMS"] = (noise_rms, "[Jy/beam] noise rms at PB 1, / PB elsewhere")
    table = _catalogue(d.index, d.model, dirty, noise_rms, d.freqs, config, WCS(header), pb)
    return d.model.cube, dirty, header, table, {"cards": cards, "beams": beams, "pb": pb}


def product_cards(obs: ObservationConfig) -> dict:
    """FITS cards that say which product a cleaned or PB-corrected cube is."""
    cards = {"NITER": (obs.niter, "tclean CLEAN iterations per channel (0: dirty)"),
             "CLEANTHR": (obs.threshold_jy, "[Jy/beam] tclean threshold"),
             "NSIGMA": (obs.nsigma, "tclean nsigma stopping threshold"),
             "PBCOR": (obs.pbcor, "divided by the primary beam (pb.fits)")}  # fmt: skip
    if obs.pbcor:
        cards["PBLIMIT"] = (obs.pblimit, "NaN where the primary beam is below this")
    if obs.weighting == "briggs":
        cards["ROBUST"] = (obs.robust, "Briggs robustness")
    return cards


def simulate_cube(index: int, config: SimConfig) -> tuple[np.ndarray, np.ndarray, fits.Header, Table, dict]:
    """Draw, render and observe cube `index`; returns (sky, dirty, header, catalogue, cards)."""
    d = _draw(index, config)
    obs = config.observation
    if config.backend == "fast":
        result = observe(d.model.device_cube, d.instrument, noise=d.mode, seed=d.noise_seed, target_snr=d.target_snr)
        image, pb = result.dirty, None
        if obs.niter > 0 or obs.pbcor:
            image, pb, _ = make_product(image, d.instrument, obs)
        return _finish(d, image, result.noise_rms, result.white_rms, d.instrument.beams, config, pb)
    c = observe_with_casa(d.model.cube, d.freqs, obs, d.instrument, mode=d.mode, seed=d.noise_seed,
                          target_snr=d.target_snr)  # fmt: skip
    return _finish(d, c.dirty, c.noise_rms, c.white_rms, c.beams, config, c.pb)


def simulate_cubes(indices: Sequence[int], config: SimConfig) -> list[tuple[np.ndarray, np.ndarray, fits.Header, Table, dict]]:
    """`simulate_cube` for several cubes observed in one vmapped call (`observe_batch`: for GPUs).

    Fast backend, beam-correlated (`snr`, `thermal`, `none`) noise only. Each cube is drawn
    exactly as by `simulate_cube`; the dirty cubes agree with it to float32 rounding (one fused
    XLA program instead of channel chunks in threads).
    """
    if config.backend != "fast":
        raise ConfigError(f"sim.backend: batched simulation needs the fast backend, not {config.backend!r}")
    draws = [_draw(int(i), config) for i in indices]
    if not draws:
        return []
    if any(d.mode == "paper" for d in draws):
        raise ConfigError("sim.noise: batched simulation does not add the paper's white noise; use stream.sim_batch 1")
    ins = draws[0].instrument  # one set-up for the whole set (cached)
    skies = jnp.stack([d.model.device_cube for d in draws])
    snrs = np.array([d.target_snr for d in draws]) if config.noise.mode == "snr" else None
    dirty, rms = observe_batch(skies, ins, noise=config.noise.mode, seeds=np.array([d.noise_seed for d in draws]),
                               target_snrs=snrs)  # fmt: skip
    dirty, rms, obs = np.asarray(dirty), np.asarray(rms, np.float64), config.observation
    out = []
    for k, d in enumerate(draws):
        image, pb = make_product(dirty[k], ins, obs)[:2] if obs.niter > 0 or obs.pbcor else (dirty[k], None)
        out.append(_finish(d, image, float(rms[k]), 0.0, ins.beams, config, pb))
    return out


def cube_noise_mode(rng: np.random.Generator, config: SimConfig) -> str:
    """The cube's noise mode: `noise.mode`, or with snr, paper with probability `paper_fraction`."""
    u = rng.random()  # always drawn, so a cube's draws do not depend on the fraction
    return "paper" if config.noise.mode == "snr" and u < config.noise.paper_fraction else config.noise.mode


class CasaCube(NamedTuple):
    """What `observe_with_casa` returns."""

    dirty: np.ndarray  # (nz, ny, nx) float32 Jy/beam, as `sim.observation` says: dirty, cleaned, PB-corrected
    noise_rms: float  # total noise rms, Jy/beam (with pbcor: at the pointing centre)
    white_rms: float  # the paper mode's image-domain white noise, Jy/beam
    beams: np.ndarray  # (nz, 3) tclean's restoring beams
    pb: np.ndarray | None  # (nz, ny, nx) primary beam with pbcor, else None


def observe_with_casa(cube: np.ndarray, freqs: np.ndarray, obs: ObservationConfig, instrument: Instrument, *,
                      mode: str, seed: int, target_snr: float) -> CasaCube:  # fmt: skip
    """The CASA backend of `generate` in noise `mode`: the snr mode adds PSF-shaped noise from the
    fast backend's noise model, the paper mode white noise after tclean; both take the thermal rms
    from `instrument` (the CASA image holds the sources too) and the peak from the CASA image's
    centre (with pbcor only thermal noise, whose rms at the centre is the same)."""
    from sim.casa import observe_casa

    result = observe_casa(cube, freqs, obs, thermal_noise=mode != "none", want_psf=False, seed=seed)
    dirty = result.dirty
    if mode == "none":
        return CasaCube(dirty, 0.0, 0.0, result.beams, result.pb)
    rms, white = float(instrument.thermal_rms.mean()), 0.0
    c = instrument.size // 2
    peak = float(dirty[:, c, c].max())
    wanted = peak / target_snr
    if mode == "snr" and wanted > rms:
        keys = channel_keys(seed + 1, instrument.channels)
        extra = np.asarray(thermal_noise(*noise_args(instrument, keys), n_pad=instrument.n_pad,
                                         size=instrument.size))  # fmt: skip
        dirty = dirty + extra * (np.sqrt(wanted**2 - rms**2) / rms)
        rms = wanted
    elif mode == "paper":
        white = float(white_rms(peak, target_snr, rms))
        dirty = dirty + white * np.asarray(white_noise(channel_keys(seed, instrument.channels),
                                                       size=instrument.size))  # fmt: skip
        rms = float(np.hypot(rms, white))
    return CasaCube(dirty.astype(np.float32), rms, white, result.beams, result.pb)


def write_cube(out_dir: Path, index: int, config: SimConfig) -> Table:
    """Simulate cube `index` and write its sky and dirty FITS files atomically (dirty last), and
    with pbcor the set-up's primary beam once, as pb.fits (the same for every cube)."""
    sky_cube, dirty, header, table, extra = simulate_cube(index, config)
    if extra["pb"] is not None and not (out_dir / "pb.fits").exists():
        fitsio.write_atomic(out_dir / "pb.fits", fitsio.cube_hdus(extra["pb"], header, bunit="",
                                                                  cards={"ORIGIN": "dfjax.sim", "BTYPE": "Beam response",
                                                                         "PBLIMIT": config.observation.pblimit}))  # fmt: skip
    fitsio.write_atomic(out_dir / SKY_PATTERN.format(index),
                        fitsio.cube_hdus(sky_cube, header, bunit="Jy/pixel", cards=extra["cards"]))  # fmt: skip
    fitsio.write_atomic(out_dir / CUBE_PATTERN.format(index),
                        fitsio.cube_hdus(dirty, header, bunit="Jy/beam", beams=extra["beams"],
                                         cards=extra["cards"], sources=table))  # fmt: skip
    return table


def write_psf(path: Path, config: SimConfig) -> None:
    """The fast backend's dirty beam for `config`, one plane per channel, peak 1."""
    obs, cube_cfg = config.observation, config.cube
    freqs = sky.channel_frequencies(obs.centre_freq_hz, obs.channel_width_hz, cube_cfg.channels)
    instrument = build_instrument(obs, cube_cfg.size, freqs)
    header = fitsio.celestial_header(obs, cube_cfg.size, freqs)
    fitsio.write_atomic(path, fitsio.cube_hdus(instrument.psf(), header, bunit="", beams=instrument.beams,
                                               cards={"ORIGIN": "dfjax.sim", "ANTCFG": obs.antenna_config}))  # fmt: skip


def read_catalogue_rows(path: Path) -> Table:
    """The truth rows stored in a finished cube's SOURCES extension."""
    return Table.read(path, hdu="SOURCES")


def _prepare(out_dir: Path, config: SimConfig, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "config.yaml"
    wanted = config.to_dict(lean=True)
    if cfg_path.exists() and not overwrite:
        try:
            existing = from_dict(yaml.safe_load(cfg_path.read_text())).to_dict(lean=True)
        except (ConfigError, yaml.YAMLError) as exc:
            raise ConfigError(f"{cfg_path}: unreadable configuration ({exc}); use --overwrite") from None
        diff = _first_difference(existing, wanted)
        if diff:
            raise ConfigError(f"{out_dir} was generated with a different configuration "
                              f"({diff}); use --overwrite or another --out")  # fmt: skip
    if overwrite:
        for p in [*out_dir.glob("cube_*.fits"), *out_dir.glob("sky_*.fits"), *out_dir.glob(".*.tmp")]:
            p.unlink()
        (out_dir / "psf.fits").unlink(missing_ok=True)
        (out_dir / "pb.fits").unlink(missing_ok=True)
        (out_dir / "catalogue.csv").unlink(missing_ok=True)
    for p in out_dir.glob(".*.tmp"):  # leftovers of an interrupted run
        p.unlink()
    tmp = out_dir / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(wanted, sort_keys=False))
    os.replace(tmp, cfg_path)


def _first_difference(a: dict, b: dict, prefix: str = "sim") -> str:
    for key in a.keys() | b.keys():
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            d = _first_difference(a[key], b[key], f"{prefix}.{key}")
            if d:
                return d
        elif a.get(key) != b.get(key):
            return f"{prefix}.{key}: {a.get(key)!r} then, {b.get(key)!r} now"
    return ""


def finished(out_dir: str | os.PathLike, n: int) -> list[int]:
    """Indices below `n` whose sky and dirty cubes are both in `out_dir` (a resumed run keeps them)."""
    out_dir = Path(out_dir)
    return [i for i in range(n) if (out_dir / CUBE_PATTERN.format(i)).exists()
            and (out_dir / SKY_PATTERN.format(i)).exists()]  # fmt: skip


def generate(
    out_dir: str | os.PathLike,
    n: int,
    config: SimConfig,
    *,
    workers: int = 1,
    overwrite: bool = False,
    dask_scheduler: str | None = None,
    progress: bool = True,
    psf: bool = False,
) -> Path:
    """Simulate cubes 0..n-1 into `out_dir` (resuming) and write `catalogue.csv`; returns its path.

    With `psf`, also write the (shared) dirty beam of the set-up to ``out_dir/psf.fits``. ``n`` 0 is
    an empty set (its config and a catalogue with no rows): a regime that adds no training cubes.
    """
    from tqdm.auto import tqdm

    if n < 0:
        raise ConfigError(f"--n: must be at least 0, got {n}")
    if workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    _prepare(out_dir, config, overwrite)
    done = set(finished(out_dir, n))
    todo = [i for i in range(n) if i not in done]
    bar = tqdm(total=n, initial=n - len(todo), unit="cube", desc="simulate", disable=not progress)
    start = time.perf_counter()
    if todo and (workers > 1 or dask_scheduler):
        _run_dask(out_dir, todo, config, workers, dask_scheduler, bar)
    else:
        for done, i in enumerate(todo, start=1):
            write_cube(out_dir, i, config)
            bar.update(1)
            bar.set_postfix(s_per_cube=f"{(time.perf_counter() - start) / done:.2f}")
    bar.close()
    if psf and not (out_dir / "psf.fits").exists():
        write_psf(out_dir / "psf.fits", config)
    tables = [read_catalogue_rows(out_dir / CUBE_PATTERN.format(i)) for i in range(n)]
    catalogue = vstack(tables) if tables else Table(names=sky.CATALOGUE_COLUMNS)
    path = out_dir / "catalogue.csv"
    tmp = out_dir / ".catalogue.csv.tmp"
    catalogue.write(tmp, format="ascii.csv", overwrite=True)
    os.replace(tmp, path)
    return path


def _run_dask(out_dir: Path, todo: list[int], config: SimConfig, workers: int, address: str | None, bar) -> None:
    """Fan the cubes out over a Dask cluster: an existing one at `address`, or a local one."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)  # fmt: skip
        client = Client(cluster)
    try:
        futures = client.map(write_cube, [out_dir] * len(todo), todo, [config] * len(todo), pure=False)
        for future in as_completed(futures):
            future.result()
            bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

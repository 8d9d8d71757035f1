"""One simulated cube as one dataset record: the single place that reads the simulator's files.

A record is a dict of numpy arrays (the TFDS builder stores exactly these features; the input
pipelines read exactly these keys). Image-plane values are in **mJy** (``FLUX_SCALE`` times the
FITS values in Jy): float16 keeps a relative precision of 2**-11 only for magnitudes above its
smallest normal, 6.1e-5, and in mJy both the noise (~0.8 mJy/beam) and the faint wings of the
sky model lie above it (in Jy/pixel 1.9e-4 of the sky flux fell below it; in mJy 1.5e-7;
``benchmarks/almasim_storage.py``, numbers in the builder's README). The catalogue keeps the
simulator's units (sim.sky.CATALOGUE_COLUMNS: Jy/pixel, Jy km/s, pixels, channels).

=================== ====================== ==========================================================
key                 shape, dtype           meaning
=================== ====================== ==========================================================
dirty_cube          (nz, n, n) float16     dirty cube, mJy/beam, indexed [z, y, x] (float32 on request)
sky_cube            (nz, n, n) float16     sky model, mJy/pixel
integrated_dirty    (n, n) float32         dirty cube summed over channels, mJy/beam (summed in
                                           float64 from the float32 FITS data, not from float16)
integrated_sky      (n, n) float32         sky model summed over channels, mJy/pixel
catalogue           (S, 20) float32        truth rows, columns in CATALOGUE_FIELDS order
cube_index          () int64               index in the simulation set
seed                () int64               simulation seed of the set
noise_rms           () float32             mJy/beam (so dirty_cube / noise_rms is the SNR)
target_snr          () float32             target peak SNR of the central source (0 if none)
beam                (3,) float32           bmaj, bmin (arcsec), bpa (deg) at the centre channel
cell_arcsec         () float32             pixel size
ra_deg, dec_deg     () float64             phase centre (pixel n//2, n//2)
freq0_hz, dfreq_hz  () float64             frequency of channel 0 and channel width (signed)
antenna_config      str                    e.g. alma.cycle9.3 (utf-8 bytes when read from TFDS)
=================== ====================== ==========================================================
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits

CATALOGUE_FIELDS = (
    "id", "x", "y", "z", "fwhm_x", "fwhm_y", "pa", "fwhm_z", "line_amp", "cont_amp",
    "spectral_index", "line_flux", "peak_snr", "x0", "y0", "x1", "y1", "z0", "z1", "blendness",
)  # fmt: skip
"""Column order of a record's `catalogue` (see sim.sky for units and conventions)."""

COLUMN = {name: i for i, name in enumerate(CATALOGUE_FIELDS)}

FLUX_SCALE = 1e3
"""Record flux units per FITS unit: cubes, integrated images and noise_rms are in mJy."""


class RecordError(ValueError):
    """A simulator file cannot be packaged; the message names the file."""


def _read(path: Path) -> tuple[np.ndarray, fits.Header, fits.HDUList]:
    try:
        hdul = fits.open(path, memmap=False)
        data = hdul[0].data
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except (OSError, TypeError, ValueError) as exc:
        raise RecordError(f"{path}: not a readable FITS file ({exc})") from None
    if data is None or data.ndim != 4 or data.shape[0] != 1:
        hdul.close()
        raise RecordError(f"{path}: expected a (1, nz, ny, nx) cube, got {None if data is None else data.shape}")
    return np.asarray(data[0], np.float32), hdul[0].header, hdul


def read_cube_record(cube_path: str | os.PathLike, sky_path: str | os.PathLike, *, dtype=np.float16) -> dict:
    """Read `cube_NNNNN.fits` and `sky_NNNNN.fits` of a `python -m sim generate` directory (mJy, see above)."""
    cube_path, sky_path = Path(cube_path), Path(sky_path)
    dirty, header, hdul = _read(cube_path)
    try:
        if "SOURCES" not in hdul:
            raise RecordError(f"{cube_path}: no SOURCES extension (not written by python -m sim generate?)")
        sources = hdul["SOURCES"].data
        missing = [f for f in CATALOGUE_FIELDS if f not in sources.names]
        if missing:
            raise RecordError(f"{cube_path}: SOURCES lacks columns {missing}")
        catalogue = catalogue_rows(sources)
    finally:
        hdul.close()
    sky, _, sky_hdul = _read(sky_path)
    sky_hdul.close()
    if sky.shape != dirty.shape:
        raise RecordError(f"{sky_path}: shape {sky.shape} differs from {cube_path}'s {dirty.shape}")
    for key in ("BMAJ", "BMIN", "BPA", "CDELT2", "CRVAL1", "CRVAL2", "CRVAL3", "CDELT3"):
        if key not in header:
            raise RecordError(f"{cube_path}: header keyword {key} is missing")
    return cube_record(dirty, sky, header, catalogue, dtype=dtype)


def catalogue_rows(sources) -> np.ndarray:
    """Truth rows (S, 20) float64 in ``CATALOGUE_FIELDS`` order from a table with those columns
    (the SOURCES extension's records, or the ``astropy.table.Table`` of ``sim.generate.simulate_cube``)."""
    return np.stack([np.asarray(sources[f], np.float64) for f in CATALOGUE_FIELDS], axis=1)


def cube_record(dirty_jy: np.ndarray, sky_jy: np.ndarray, header: fits.Header, catalogue: np.ndarray, *,
                dtype=np.float16) -> dict:  # fmt: skip
    """The record of one cube from its dirty (Jy/beam) and sky (Jy/pixel) cubes (nz, n, n), the dirty
    cube's primary header (``sim.fitsio.cube_header``) and its truth rows (S, 20) in
    ``CATALOGUE_FIELDS`` order: what :func:`read_cube_record` returns for the files written from them."""
    dirty = np.asarray(dirty_jy, np.float32) * np.float32(FLUX_SCALE)
    sky = np.asarray(sky_jy, np.float32) * np.float32(FLUX_SCALE)
    return {
        "dirty_cube": dirty.astype(dtype),
        "sky_cube": sky.astype(dtype),
        "integrated_dirty": dirty.sum(axis=0, dtype=np.float64).astype(np.float32),
        "integrated_sky": sky.sum(axis=0, dtype=np.float64).astype(np.float32),
        "catalogue": np.asarray(catalogue, np.float32).reshape(-1, len(CATALOGUE_FIELDS)),
        "cube_index": np.int64(header.get("CUBEIDX", -1)),
        "seed": np.int64(header.get("SEED", -1)),
        "noise_rms": np.float32(header.get("NOISERMS", 0.0) * FLUX_SCALE),
        "target_snr": np.float32(header.get("TARGSNR", 0.0)),
        "beam": np.array([header["BMAJ"] * 3600, header["BMIN"] * 3600, header["BPA"]], np.float32),
        "cell_arcsec": np.float32(abs(header["CDELT2"]) * 3600),
        "ra_deg": np.float64(header["CRVAL1"]),
        "dec_deg": np.float64(header["CRVAL2"]),
        "freq0_hz": np.float64(header["CRVAL3"] + (1 - header.get("CRPIX3", 1.0)) * header["CDELT3"]),
        "dfreq_hz": np.float64(header["CDELT3"]),
        "antenna_config": str(header.get("ANTCFG", "")),
    }

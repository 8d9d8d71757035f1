"""FITS input and output shaped like CASA tclean's, written atomically."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from sim.config import ObservationConfig


class FitsInputError(ValueError):
    """A FITS file cannot be used; the message names the file and the problem."""


def celestial_header(obs: ObservationConfig, size: int, freqs_hz: np.ndarray) -> fits.Header:
    """A 4-D (RA---SIN, DEC--SIN, FREQ, STOKES) header; the phase centre is pixel size//2 (0-based)."""
    h = fits.Header()
    h["NAXIS"] = 4
    for i, n in enumerate((size, size, len(freqs_hz), 1), start=1):
        h[f"NAXIS{i}"] = n
    cell_deg = obs.cell_arcsec / 3600.0
    dnu = float(freqs_hz[1] - freqs_hz[0]) if len(freqs_hz) > 1 else obs.channel_width_hz
    axes = [
        ("RA---SIN", size // 2 + 1, obs.ra_deg, -cell_deg, "deg"),
        ("DEC--SIN", size // 2 + 1, obs.dec_deg, cell_deg, "deg"),
        ("FREQ", 1.0, float(freqs_hz[0]), dnu, "Hz"),
        ("STOKES", 1.0, 1.0, 1.0, ""),
    ]
    for i, (ctype, crpix, crval, cdelt, cunit) in enumerate(axes, start=1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"] = ctype, float(crpix), crval, cdelt
        h[f"CUNIT{i}"] = cunit
    h["RADESYS"], h["EQUINOX"], h["SPECSYS"] = "FK5", 2000.0, "LSRK"
    h["RESTFRQ"] = float(obs.centre_freq_hz)
    h["TELESCOP"], h["INSTRUME"] = "ALMA", "ALMA"
    h["OBSRA"], h["OBSDEC"] = obs.ra_deg, obs.dec_deg
    return h


def beams_hdu(beams: np.ndarray) -> fits.BinTableHDU:
    """Per-channel restoring beams as CASA writes them (BEAMS extension)."""
    cols = [
        fits.Column("BMAJ", "E", unit="arcsec", array=beams[:, 0]),
        fits.Column("BMIN", "E", unit="arcsec", array=beams[:, 1]),
        fits.Column("BPA", "E", unit="deg", array=beams[:, 2]),
        fits.Column("CHAN", "J", array=np.arange(len(beams))),
        fits.Column("POL", "J", array=np.zeros(len(beams), int)),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="BEAMS")
    hdu.header["NCHAN"], hdu.header["NPOL"] = len(beams), 1
    return hdu


def write_atomic(path: str | os.PathLike, hdus: fits.HDUList) -> None:
    """Write to a temporary file in the same directory, then rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        hdus.writeto(tmp, overwrite=True)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cube_header(header: fits.Header, *, bunit: str, beams: np.ndarray | None = None,
                cards: dict | None = None) -> fits.Header:  # fmt: skip
    """The primary header `cube_hdus` writes: `header` plus BUNIT, the centre channel's beam and `cards`."""
    h = header.copy()
    h["BUNIT"], h["BTYPE"] = bunit, "Intensity"
    if beams is not None:
        ref = beams[len(beams) // 2]
        h["BMAJ"], h["BMIN"], h["BPA"] = ref[0] / 3600.0, ref[1] / 3600.0, float(ref[2])
        h["CASAMBM"] = (True, "per-channel beams in the BEAMS extension")
    for key, value in (cards or {}).items():
        h[key] = value
    return h


def cube_hdus(
    data: np.ndarray,
    header: fits.Header,
    *,
    bunit: str,
    beams: np.ndarray | None = None,
    cards: dict | None = None,
    sources: Table | None = None,
) -> fits.HDUList:
    """Primary HDU (1, nz, ny, nx) float32 plus optional BEAMS and SOURCES extensions."""
    h = cube_header(header, bunit=bunit, beams=beams, cards=cards)
    # big-endian already, so astropy writes it as it is instead of swapping in place and back
    hdus = fits.HDUList([fits.PrimaryHDU(np.asarray(data, ">f4")[None], header=h)])
    if beams is not None:
        hdus.append(beams_hdu(beams))
    if sources is not None:
        hdus.append(fits.table_to_hdu(sources))
        hdus[-1].name = "SOURCES"
    return hdus


@dataclass
class SkyFile:
    """A sky-model cube read from FITS, reordered to (nz, ny, nx)."""

    cube: np.ndarray  # Jy/pixel
    freqs_hz: np.ndarray  # per channel, in stored order
    cell_arcsec: float
    ra_deg: float  # phase centre = pixel (nx//2, ny//2)
    dec_deg: float
    header: fits.Header


def read_sky(path: str | os.PathLike) -> SkyFile:
    """Read a sky-model cube (Jy/pixel, RA/Dec/FREQ WCS, optional Stokes axis)."""
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header.copy()
            data = hdul[0].data
    except FileNotFoundError:
        raise FitsInputError(f"{path}: no such file") from None
    except (OSError, TypeError, ValueError) as exc:
        raise FitsInputError(f"{path}: not a readable FITS file ({exc})") from None
    if data is None:
        raise FitsInputError(f"{path}: the primary HDU holds no image")
    if "beam" in str(header.get("BUNIT", "")).lower():
        raise FitsInputError(f"{path}: BUNIT is {header['BUNIT']!r}, per beam; a sky model is Jy/pixel "
                             f"(is this an observed image?)")  # fmt: skip
    wcs = WCS(header)
    if not wcs.has_celestial:
        raise FitsInputError(f"{path}: no celestial (RA/Dec) WCS")
    types = [t.upper() for t in wcs.wcs.ctype]
    spec = [i for i, t in enumerate(types) if t.startswith("FREQ")]
    if not spec:
        raise FitsInputError(f"{path}: no FREQ spectral axis (axes: {', '.join(types)})")
    lon, lat, sp = wcs.wcs.lng, wcs.wcs.lat, spec[0]
    others = [i for i in range(wcs.naxis) if i not in (lon, lat, sp)]
    for i in others:
        if data.shape[wcs.naxis - 1 - i] != 1:
            raise FitsInputError(f"{path}: axis {types[i]} has length {data.shape[wcs.naxis - 1 - i]}, expected 1")
    # numpy axis order is reversed FITS order
    order = [wcs.naxis - 1 - sp, wcs.naxis - 1 - lat, wcs.naxis - 1 - lon]
    cube = np.transpose(data, order + [wcs.naxis - 1 - i for i in others]).reshape(
        data.shape[order[0]], data.shape[order[1]], data.shape[order[2]])  # fmt: skip
    nz, ny, nx = cube.shape
    if ny != nx:
        raise FitsInputError(f"{path}: the fast backend needs a square field, got {nx}x{ny}")
    unit = wcs.wcs.cunit[sp].to("Hz")
    freqs = (wcs.wcs.crval[sp] + (np.arange(nz) + 1 - wcs.wcs.crpix[sp]) * wcs.wcs.cdelt[sp]) * unit
    cell = [abs(s.to_value("arcsec")) for s in wcs.celestial.proj_plane_pixel_scales()]
    if not np.isclose(cell[0], cell[1], rtol=1e-6):
        raise FitsInputError(f"{path}: pixels are not square ({cell[0]} x {cell[1]} arcsec)")
    ra, dec = wcs.celestial.wcs_pix2world([[nx // 2, ny // 2]], 0)[0]
    if not np.all(np.isfinite(cube)):
        raise FitsInputError(f"{path}: the sky model contains NaN or infinite values")
    return SkyFile(
        cube=np.ascontiguousarray(cube, dtype=np.float32),
        freqs_hz=np.asarray(freqs, dtype=np.float64),
        cell_arcsec=float(cell[0]),
        ra_deg=float(ra) % 360.0,
        dec_deg=float(dec),
        header=header,
    )

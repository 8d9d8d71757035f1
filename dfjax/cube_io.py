"""Read any radio cube into the pipeline's standard form: (nz, ny, nx) float32 in mJy/beam.

The axes are found from the FITS WCS (astropy), never from their position: the two
celestial axes and the spectral axis may come in any order, other axes (Stokes) must be
degenerate. The standard array is ``data[z, y, x]`` with

* ``x``: the celestial axis with the lower FITS index (NAXIS1 for ordinary cubes),
* ``y``: the other celestial axis (NAXIS2 for ordinary cubes),
* ``z``: the spectral axis *as stored* (ascending or descending frequency alike),

all 0-based. Spectral axes FREQ, VRAD, VELO, VOPT, WAVE, ... are converted to frequency
through :class:`~astropy.coordinates.SpectralCoord` (velocity axes need a rest frequency,
``RESTFRQ``). Values are scaled to mJy/beam (the units the models were trained in,
:data:`dfjax.datasets.almasim.records.FLUX_SCALE` times Jy); ``BUNIT`` must be a surface
brightness per beam. Blanked voxels (NaN, e.g. below tclean's ``pblimit``) stay NaN and are
recorded in :attr:`Cube.blank`; the pipeline counts them as 0. The beam is ``BMAJ/BMIN/BPA``
of the header or, with a CASA ``BEAMS`` table, the per-channel beams and their median.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from dfjax.datasets.almasim.records import FLUX_SCALE
from dfjax.maths import gaussian_area

__all__ = ["Beam", "Cube", "CubeError", "PIPELINE_UNIT", "file_wcs", "fits_axes", "read_cube", "to_file_layout"]

PIPELINE_UNIT = u.Unit("mJy / beam")
"""Units of :attr:`Cube.data`: the models were trained on cubes in mJy/beam (Jy × FLUX_SCALE)."""
assert u.Unit("Jy / beam").to(PIPELINE_UNIT) == FLUX_SCALE  # one source of truth for the scale


class CubeError(ValueError):
    """A file cannot be read as a cube; the one-line message names the file and the problem."""


@dataclass(frozen=True)
class Beam:
    """A restoring beam (or one per channel): FWHM major and minor axes, position angle."""

    major: u.Quantity  # arcsec
    minor: u.Quantity  # arcsec
    pa: u.Quantity  # deg


@dataclass(frozen=True, eq=False)
class Cube:
    """A cube in the pipeline's standard form; see the module docstring for conventions."""

    path: Path
    data: np.ndarray  # (nz, ny, nx) float32, mJy/beam, NaN where blanked
    blank: np.ndarray  # (nz, ny, nx) bool, True where the file holds NaN/inf
    freq: u.Quantity  # (nz,) Hz, channel centres in stored order
    velocity: u.Quantity | None  # (nz,) km/s, radio convention, None without a rest frequency
    rest_freq: u.Quantity | None  # Hz
    celestial: WCS  # 2-D, pixel (x, y) → (lon, lat)
    spectral: WCS  # 1-D, channel z → the file's spectral coordinate
    pixel_scale: u.Quantity  # (2,) arcsec per pixel along x and y
    beam: Beam | None  # the header's beam, or the median of the BEAMS table
    channel_beams: Beam | None  # per-channel beams ((nz,) each) from a CASA BEAMS table, else None
    header: fits.Header

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.data.shape  # type: ignore[return-value]

    @property
    def beam_area_px(self) -> float | None:
        """Pixels per beam, π·bmaj·bmin / (4 ln 2) over the pixel area; None without a beam."""
        if self.beam is None:
            return None
        area = gaussian_area(self.beam.major, self.beam.minor)
        return float((area / (self.pixel_scale[0] * self.pixel_scale[1])).to_value(u.dimensionless_unscaled))

    def channel_width(self, z: float | np.ndarray) -> u.Quantity:
        """|dν/dz| at (fractional) channel ``z``, in Hz."""
        z = np.asarray(z, float)
        return np.abs(self.freq_at(z + 0.5) - self.freq_at(z - 0.5))

    def freq_at(self, z: float | np.ndarray) -> u.Quantity:
        """Frequency at (fractional, 0-based) channel ``z``."""
        return _to_freq(self.spectral.pixel_to_world(np.asarray(z, float)), self.rest_freq, self.path)

    def sky_at(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lon, lat) in degrees of pixel (x, y), in the file's celestial frame."""
        world = self.celestial.wcs_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        lng, lat = self.celestial.wcs.lng, self.celestial.wcs.lat
        return np.asarray(world[lng]) % 360.0, np.asarray(world[lat])


def read_cube(path: str | Path) -> Cube:
    """Read ``path`` (FITS, 3-D or 4-D with degenerate Stokes) into a :class:`Cube`; :class:`CubeError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CubeError(f"{path}: no such file")
    header, raw, beams_table = _read_fits(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header)
        except Exception as exc:  # astropy raises several types for bad WCS keywords
            raise CubeError(f"{path}: invalid WCS ({_one_line(exc)})") from None
    if raw.ndim < 3:
        raise CubeError(f"{path}: a {raw.ndim}-D image, not a cube (need two celestial axes and a spectral axis)")
    if wcs.naxis != raw.ndim:
        raise CubeError(f"{path}: the header describes {wcs.naxis} axes but the data has {raw.ndim}")
    types = [t or f"axis{i + 1}" for i, t in enumerate(wcs.wcs.ctype)]
    lng, lat, spec = wcs.wcs.lng, wcs.wcs.lat, wcs.wcs.spec
    if lng < 0 or lat < 0:
        raise CubeError(f"{path}: no celestial (RA/Dec) axes in the WCS (axes: {', '.join(types)})")
    if spec < 0:
        raise CubeError(f"{path}: no spectral axis in the WCS (axes: {', '.join(types)})")
    n = wcs.naxis
    ix, iy, spec, others = fits_axes(wcs)
    for i in others:
        if raw.shape[n - 1 - i] != 1:
            raise CubeError(f"{path}: axis {types[i]} has {raw.shape[n - 1 - i]} planes; pass a cube with one")
    order = _numpy_order(wcs)
    data = np.transpose(raw, order).reshape([raw.shape[k] for k in order[:3]])
    nz = data.shape[0]

    scale = _flux_scale(header, path)
    data = np.asarray(data, np.float32) * np.float32(scale)
    blank = ~np.isfinite(data)
    if blank.all():
        raise CubeError(f"{path}: every voxel is blank (NaN)")
    if blank.any():
        data[blank] = np.nan

    celestial = wcs.sub([ix + 1, iy + 1])
    spectral = wcs.sub([spec + 1])
    rest = wcs.wcs.restfrq or (wcs.wcs.restwav and (wcs.wcs.restwav * u.m).to_value(u.Hz, u.spectral()))
    rest_freq = rest * u.Hz if rest else None
    world = spectral.pixel_to_world(np.arange(nz, dtype=float))
    freq = _to_freq(world, rest_freq, path)
    velocity = None
    if rest_freq is not None:
        velocity = freq.to(u.km / u.s, u.doppler_radio(rest_freq))
    scales = celestial.proj_plane_pixel_scales()
    pixel_scale = u.Quantity([abs(s.to(u.arcsec)) for s in scales])
    beam, channel_beams = _beams(header, beams_table, nz, path)
    return Cube(path=path, data=np.ascontiguousarray(data), blank=blank, freq=freq.to(u.Hz), velocity=velocity,
                rest_freq=rest_freq, celestial=celestial, spectral=spectral, pixel_scale=pixel_scale,
                beam=beam, channel_beams=channel_beams, header=header)


def fits_axes(wcs: WCS) -> tuple[int, int, int, list[int]]:
    """0-based FITS axis indices (x, y, z, others) of a cube's WCS: x the celestial axis with the lower index."""
    lng, lat, spec = wcs.wcs.lng, wcs.wcs.lat, wcs.wcs.spec
    others = [i for i in range(wcs.naxis) if i not in (lng, lat, spec)]
    return min(lng, lat), max(lng, lat), spec, others


def _numpy_order(wcs: WCS) -> list[int]:
    """The numpy axes of the file's array, in the order (z, y, x, others...): numpy reverses FITS."""
    n = wcs.naxis
    ix, iy, spec, others = fits_axes(wcs)
    return [n - 1 - spec, n - 1 - iy, n - 1 - ix] + [n - 1 - i for i in others]


def file_wcs(header: fits.Header) -> WCS:
    """The full WCS of a cube's header (as :func:`read_cube` reads it, FITS fix-up warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def to_file_layout(cube: Cube, data: np.ndarray) -> np.ndarray:
    """``data`` (nz, ny, nx) in the standard order → the array layout of ``cube``'s file (axis order and
    degenerate axes as there), so that it can be written with the cube's header."""
    order = _numpy_order(file_wcs(cube.header))
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"expected a cube (nz, ny, nx), got shape {data.shape}")
    return np.transpose(data.reshape(data.shape + (1,) * (len(order) - 3)), np.argsort(order))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_fits(path: Path) -> tuple[fits.Header, np.ndarray, np.ndarray | None]:
    """(header, data, BEAMS table rows or None) of the first image HDU; CubeError if not FITS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)  # "File may have been truncated"
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(path, memmap=False) as hdul:
                image = next((h for h in hdul if h.is_image and h.data is not None), None)
                if image is None:
                    raise CubeError(f"{path}: no image data in any HDU")
                header, data = image.header.copy(), np.array(image.data)
                beams = hdul["BEAMS"].data.copy() if "BEAMS" in hdul else None
                beam_units = ({c.name.upper(): c.unit for c in hdul["BEAMS"].columns}
                              if beams is not None else {})
    except CubeError:
        raise
    except (OSError, TypeError, ValueError, KeyError, IndexError, AstropyUserWarning) as exc:
        raise CubeError(f"{path}: not a readable FITS file ({_one_line(exc)})") from None
    if beams is not None:
        beams = (beams, beam_units)
    return header, data, beams


def _flux_scale(header: fits.Header, path: Path) -> float:
    """Factor taking the file's BUNIT to mJy/beam; CubeError for anything that is not per beam."""
    bunit = str(header.get("BUNIT", "")).strip()
    if not bunit:
        raise CubeError(f"{path}: no BUNIT in the header; expected a surface brightness such as Jy/beam")
    # CASA writes "Jy/beam"; some tasks write "JY/BEAM", which no astropy unit format accepts
    spelled = re.sub("jy", "Jy", re.sub("beam", "beam", bunit, flags=re.I), flags=re.I)
    unit = u.Unit(spelled, parse_strict="silent")
    try:
        return float(unit.to(PIPELINE_UNIT))
    except (u.UnitsError, ValueError, TypeError):
        raise CubeError(f"{path}: BUNIT {bunit!r} is not a surface brightness per beam (expected Jy/beam or mJy/beam)"
                        ) from None


def _to_freq(world: object, rest_freq: u.Quantity | None, path: Path) -> u.Quantity:
    """The spectral world coordinate (SpectralCoord or Quantity) as frequency in Hz."""
    quantity = u.Quantity(world)
    if quantity.unit.is_equivalent(u.Hz, u.spectral()):
        return quantity.to(u.Hz, u.spectral())
    if rest_freq is None:
        raise CubeError(f"{path}: a velocity spectral axis without a rest frequency (RESTFRQ)")
    try:
        return world.to(u.Hz)  # SpectralCoord knows its convention (VRAD radio, VOPT optical, VELO relativistic)
    except Exception:  # plain Quantity: assume the radio convention
        return quantity.to(u.Hz, u.doppler_radio(rest_freq))


def _beams(header: fits.Header, table: tuple | None, nz: int, path: Path) -> tuple[Beam | None, Beam | None]:
    """(median beam, per-channel beams or None); (None, None) without any beam information."""
    if table is not None:
        rows, units = table
        cols = []
        for key, default in (("BMAJ", u.arcsec), ("BMIN", u.arcsec), ("BPA", u.deg)):
            unit = u.Unit(units.get(key) or default, parse_strict="silent")
            cols.append((np.asarray(rows[key], float) * unit).to(default))
        if "POL" in rows.names:  # one Stokes plane: keep the first polarisation's beams
            keep = np.asarray(rows["POL"]) == np.min(rows["POL"])
            cols = [c[keep] for c in cols]
        if len(cols[0]) != nz:
            raise CubeError(f"{path}: the BEAMS table has {len(cols[0])} rows for {nz} channels")
        return Beam(*(np.median(c) for c in cols)), Beam(*cols)
    if "BMAJ" in header and "BMIN" in header:
        return Beam((header["BMAJ"] * u.deg).to(u.arcsec), (header["BMIN"] * u.deg).to(u.arcsec),
                    header.get("BPA", 0.0) * u.deg), None
    return None, None

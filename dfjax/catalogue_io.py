"""Source catalogues of real cubes: pixel → world, units, and files in four formats, written atomically.

One row per source. Each column's unit, UCD and one-line meaning are in :data:`COLUMNS` and travel
with the file: units in every format; UCDs (column ``meta['ucd']``) and descriptions in the
VOTable's FIELDs, the ECSV header and the FITS table (astropy's column metadata, plus ``TCOMMn``
cards for other readers); plain CSV carries the units in '#' comment lines. :func:`column_docs`
renders the list as a table for the README. Names follow SoFiA-2 where it has one (``ra``, ``dec``,
``freq``, ``f_sum``, ``ell_maj``, ``ell_min``, ``ell_pa``, ``err_*``).

column                 unit         meaning
=====================  ===========  ==========================================================
id                                  1, 2, ... by decreasing SNR
x, y                   pix          centre, 0-based; x along NAXIS1 (column), y along NAXIS2
z                      chan         line centre, 0-based channel as stored
ra, dec                deg          WCS of (x, y), the file's celestial frame (RADESYS)
freq                   Hz           frequency at channel z
velocity               km/s         radio velocity at z (only with a rest frequency)
fwhm_x, fwhm_y         pix          2-D Gaussian FWHM along x and y
fwhm_x_arcsec, ...     arcsec       the same times the pixel scale
pa                     deg          position angle, the simulator's convention (sim.sky)
fwhm_z                 chan         line FWHM
fwhm_z_kms             km/s         line FWHM in radio velocity (c·Δν/ν_rest, or c·Δν/ν without rest freq.)
peak_flux              Jy / beam    peak surface brightness
line_flux              Jy km / s    line flux density integrated over the line (flux ResNet)
line_flux_measured     Jy km / s    the same measured in the 3-D source mask (step v, beam-area normalised)
continuum              Jy / beam    mean continuum surface brightness
pb                                  primary-beam response at the source (with --pb, or a PB-corrected
                                    cube's read off its noise; the measured fluxes are divided by it)
snr                                 signal-to-noise ratio (eq. 17)
x0, y0, x1, y1         pix          bounding box, half-open
z0, z1                 chan         emission range Δz, half-open
flags                               comma-separated: blended, deblended, residual, searched, unresolved
reliability                         1 − N_neg/N_pos above the source's SNR (only with --reliability;
                                    :mod:`dfjax.reliability`)
=====================  ===========  ==========================================================
=======
Pixels: 0-based; x along the first celestial axis (NAXIS1 for ordinary cubes), y the second, z
the spectral axis as stored; boxes half-open.

Position angles, once: ``pa`` is the pipeline's (and ``sim.sky``'s) rotation in pixel space,
``x' = dx·cos pa − dy·sin pa``, ``y' = dx·sin pa + dy·cos pa`` with FWHM ``fwhm_x`` along x' and
``fwhm_y`` along y': the fwhm_x axis points along (cos pa, −sin pa) in (x, y). ``ell_pa`` is the
major axis on the sky, east of north, in [0°, 180°), taken through the WCS's local pixel → sky
Jacobian at the source (right for any CDELT sign, rotation or skew); for a standard header (RA
increasing to the left, Dec up, square pixels) ell_pa = 90° − pa when fwhm_x is the major axis and
180° − pa when fwhm_y is. ``ell_maj``/``ell_min`` are the sky FWHMs of the same ellipse.

Uncertainties: a ``Source`` attribute ``err_<name>`` (e.g. ``err_x``, from a later joint fit)
becomes the column ``err_<name>`` in ``<name>``'s unit; absent or None everywhere, no column.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy import constants as const
from astropy import units as u
from astropy.io import fits
from astropy.table import QTable, Table
from astropy.wcs import WCS

from dfjax.cube_io import PIPELINE_UNIT, Cube
from dfjax.maths import gaussian_1d

__all__ = ["COLUMNS", "FORMATS", "PB_COLUMNS", "catalogue_table", "column_docs", "km_s_per_channel", "pb_corrected",
           "plot_catalogue", "read_catalogue", "sky_ellipse", "write_atomic", "write_catalogue"]  # fmt: skip

SURFACE_BRIGHTNESS = u.Jy / u.beam


@dataclass(frozen=True)
class Format:
    extension: str
    astropy: str  # astropy.table format name (votable is written through astropy.io.votable)


FORMATS: dict[str, Format] = {
    "ecsv": Format("ecsv", "ascii.ecsv"),
    "votable": Format("vot", "votable"),
    "fits": Format("fits", "fits"),
    "csv": Format("csv", "ascii.csv"),
}


@dataclass(frozen=True)
class ColumnDoc:
    ucd: str  # IVOA UCD1+ (checked by astropy.io.votable against the controlled vocabulary)
    description: str


COLUMNS: dict[str, ColumnDoc] = {
    "id": ColumnDoc("meta.id;meta.main", "Source number, 1, 2, ... by decreasing SNR; its value in the mask cube"),
    "x": ColumnDoc("pos.cartesian.x", "Centre, 0-based pixel along x (the first celestial axis, NAXIS1)"),
    "y": ColumnDoc("pos.cartesian.y", "Centre, 0-based pixel along y (the second celestial axis, NAXIS2)"),
    "z": ColumnDoc("pos.cartesian.z", "Line centre, 0-based channel as stored"),
    "ra": ColumnDoc("pos.eq.ra;meta.main", "Longitude of (x, y) in the cube's celestial frame (RADESYS)"),
    "dec": ColumnDoc("pos.eq.dec;meta.main", "Latitude of (x, y) in the cube's celestial frame (RADESYS)"),
    "freq": ColumnDoc("em.freq", "Frequency at channel z"),
    "velocity": ColumnDoc("spect.dopplerVeloc.radio", "Radio velocity at channel z (with a rest frequency only)"),
    "fwhm_x": ColumnDoc("phys.angSize", "2-D Gaussian FWHM along x' (pixel frame, see pa)"),
    "fwhm_y": ColumnDoc("phys.angSize", "2-D Gaussian FWHM along y' (pixel frame, see pa)"),
    "fwhm_x_arcsec": ColumnDoc("phys.angSize", "fwhm_x times the pixel scale along x"),
    "fwhm_y_arcsec": ColumnDoc("phys.angSize", "fwhm_y times the pixel scale along y"),
    "pa": ColumnDoc("pos.posAng", "Pixel-frame rotation of sim.sky: x' = dx cos pa - dy sin pa, y' = dx sin pa + "
                                  "dy cos pa; not east of north (see ell_pa)"),
    "ell_maj": ColumnDoc("phys.angSize.smajAxis", "Major-axis FWHM of the source ellipse on the sky"),
    "ell_min": ColumnDoc("phys.angSize.sminAxis", "Minor-axis FWHM of the source ellipse on the sky"),
    "ell_pa": ColumnDoc("pos.posAng", "Position angle of the major axis, east of north, in [0, 180)"),
    "fwhm_z": ColumnDoc("spect.line.width", "Line FWHM in channels"),
    "fwhm_z_kms": ColumnDoc("spect.line.width", "Line FWHM in radio velocity (c dnu/nu_rest, or c dnu/nu without "
                                                "a rest frequency)"),
    "peak_flux": ColumnDoc("phot.flux.density;stat.max", "Peak surface brightness"),
    "line_flux": ColumnDoc("phot.flux;spect.line", "Line flux integrated over the line, from the flux ResNet"),
    "line_flux_measured": ColumnDoc("phot.flux;spect.line", "Line flux measured in the 3-D source mask "
                                                            "(continuum subtracted, beam-area normalised)"),
    "f_sum": ColumnDoc("phot.flux;spect.line", "SoFiA-2 name of line_flux_measured (the same values)"),
    "line_flux_fit": ColumnDoc("phot.flux;spect.line", "Line flux of the fitted scene model, A 2pi sx sy sqrt(2pi) sz "
                                                       "(scene fit only)"),
    "continuum": ColumnDoc("phot.flux.density", "Mean continuum surface brightness"),
    "pb": ColumnDoc("phys.transmission;instr.beam", "Primary-beam response at the source (--pb, or a PB-corrected "
                                  "cube's from its noise); the measured fluxes, peak and continuum are divided by it"),
    "snr": ColumnDoc("stat.snr", "Signal-to-noise ratio: eq. 17's, or the scene fit's line_snr when it ran"),
    "line_snr": ColumnDoc("stat.snr", "The SNR that kept the source: refinement's matched-line SNR, or the scene "
                                      "fit's amplitude over its error, with the cube's correlated noise"),
    "x0": ColumnDoc("pos.cartesian.x;stat.min", "Bounding box, first pixel along x"),
    "y0": ColumnDoc("pos.cartesian.y;stat.min", "Bounding box, first pixel along y"),
    "x1": ColumnDoc("pos.cartesian.x;stat.max", "Bounding box, one past the last pixel along x"),
    "y1": ColumnDoc("pos.cartesian.y;stat.max", "Bounding box, one past the last pixel along y"),
    "z0": ColumnDoc("pos.cartesian.z;stat.min", "Emission range, first channel"),
    "z1": ColumnDoc("pos.cartesian.z;stat.max", "Emission range, one past the last channel"),
    "flags": ColumnDoc("meta.code",
                       "Comma-separated: blended, deblended, residual, searched, unresolved (size an upper limit)"),
    "reliability": ColumnDoc("stat.probability", "1 - N_neg/N_pos of the detections at or above this SNR, the "
                                                 "negatives found on -cube (only with --reliability)"),
}


OPTIONAL_COLUMNS = ("line_flux_fit", "line_snr")  # written only when some source has a value (refined/scene fit)


def km_s_per_channel(cube: Cube, z: float | np.ndarray) -> u.Quantity:
    """Channel width at (fractional) ``z`` as radio velocity: c·Δν/ν_rest, or c·Δν/ν without rest frequency."""
    dnu = cube.channel_width(z).to(u.Hz)
    reference = cube.rest_freq if cube.rest_freq is not None else cube.freq_at(z).to(u.Hz)
    return (const.c * dnu / reference).to(u.km / u.s)


def catalogue_table(cube: Cube, sources: Sequence[Any], *, pb: np.ndarray | None = None) -> QTable:
    """QTable of ``sources`` (pipeline ``Source`` objects in ``cube``'s pixels) with world coordinates and units;
    with ``pb`` (the response the pipeline's image was seen through, :mod:`dfjax.response`) the measured
    fluxes :func:`pb_corrected`."""
    sources = sorted(sources, key=lambda s: -float(s.snr))

    def values(name: str) -> np.ndarray:
        return np.array([np.nan if getattr(s, name, None) is None else float(getattr(s, name)) for s in sources],
                        float)  # fmt: skip

    col = {name: values(name) for name in ("x", "y", "z", "fwhm_x", "fwhm_y", "pa", "fwhm_z")}
    km_s_per_chan = km_s_per_channel(cube, col["z"])
    # each per-source quantity in its catalogue unit; err_<name> columns go through the same conversion
    convert: dict[str, Callable[[np.ndarray], u.Quantity]] = {
        "x": lambda v: v * u.pix, "y": lambda v: v * u.pix, "z": lambda v: v * u.chan,
        "fwhm_x": lambda v: v * u.pix, "fwhm_y": lambda v: v * u.pix,
        "fwhm_x_arcsec": lambda v: v * cube.pixel_scale[0], "fwhm_y_arcsec": lambda v: v * cube.pixel_scale[1],
        "pa": lambda v: v * u.deg, "fwhm_z": lambda v: v * u.chan, "fwhm_z_kms": lambda v: v * km_s_per_chan,
        "peak_flux": lambda v: (v * PIPELINE_UNIT).to(SURFACE_BRIGHTNESS),
        "line_flux": lambda v: v * u.Jy * u.km / u.s,  # the flux ResNet regresses Jy km/s directly
        # measured: cube units · channels (summed over pixels / beam_area_px): mJy·chan → Jy km/s
        "line_flux_measured": lambda v: (v * PIPELINE_UNIT * u.beam).to(u.Jy) * km_s_per_chan,
        "continuum": lambda v: (v * PIPELINE_UNIT).to(SURFACE_BRIGHTNESS),
        "line_flux_fit": lambda v: (v * PIPELINE_UNIT * u.beam).to(u.Jy) * km_s_per_chan,
        "snr": lambda v: v,
    }  # fmt: skip
    source_name = {"fwhm_x_arcsec": "fwhm_x", "fwhm_y_arcsec": "fwhm_y", "fwhm_z_kms": "fwhm_z"}
    ra, dec = cube.sky_at(col["x"], col["y"])
    freq = cube.freq_at(col["z"]).to(u.Hz)
    t = QTable()
    t["id"] = np.arange(1, len(sources) + 1, dtype=np.int64)
    for name in ("x", "y", "z"):
        t[name] = convert[name](col[name])
    t["ra"], t["dec"] = ra * u.deg, dec * u.deg
    t["freq"] = freq
    if cube.rest_freq is not None:
        t["velocity"] = freq.to(u.km / u.s, u.doppler_radio(cube.rest_freq))
    for name in ("fwhm_x", "fwhm_y", "fwhm_x_arcsec", "fwhm_y_arcsec", "pa"):
        t[name] = convert[name](col[source_name.get(name, name)])
    t["ell_maj"], t["ell_min"], t["ell_pa"] = sky_ellipse(cube.celestial, col["x"], col["y"], col["fwhm_x"],
                                                          col["fwhm_y"], col["pa"])  # fmt: skip
    for name in ("fwhm_z", "fwhm_z_kms", "peak_flux", "line_flux", "line_flux_measured", "line_flux_fit",
                 "continuum", "snr", "line_snr"):  # fmt: skip
        column = values(source_name.get(name, name))
        if name in OPTIONAL_COLUMNS and not np.isfinite(column).any():
            continue
        t[name] = convert.get(name, lambda v: v)(column)
        if name == "line_flux_measured":
            t["f_sum"] = t[name]
    for name in ("x0", "y0", "x1", "y1"):
        t[name] = np.array([int(getattr(s, name)) for s in sources], np.int64) * u.pix
    t["z0"], t["z1"] = values("z0") * u.chan, values("z1") * u.chan
    t["flags"] = np.array([",".join(s.flags) for s in sources], dtype=str) if sources else np.array([], dtype="U1")
    for name, to_unit in convert.items():  # a place for the joint fit's uncertainties; never invented
        err = values("err_" + source_name.get(name, name))
        if np.isfinite(err).any():
            t["err_" + name] = to_unit(err)
    if pb is not None:
        t = pb_corrected(t, pb)
    _describe(t, cube)
    t.meta.update(_meta(cube))
    return t


PB_COLUMNS = ("peak_flux", "line_flux_measured", "f_sum", "line_flux_fit", "err_line_flux_fit", "continuum")
"""The catalogue columns that scale with the sky's brightness, and so with the primary beam."""


def pb_corrected(table: QTable, pb: np.ndarray) -> QTable:
    """The catalogue with each source's measured fluxes (:data:`PB_COLUMNS`) divided by the primary
    beam at its pixel and line channel, and that response as a ``pb`` column. ``pb``: (nz, ny, nx)
    or (ny, nx), peak 1, on the cube's grid. A source where the PB is blank or zero (past pblimit)
    keeps its fluxes, ``pb`` NaN. The flux ResNet's ``line_flux`` is left alone: it regresses the
    simulator's true fluxes, not the image's."""
    pb = np.asarray(pb, np.float64)
    planes = pb[None] if pb.ndim == 2 else pb
    value = lambda name, n: np.clip(np.round(np.asarray(table[name].value)).astype(np.int64), 0, n - 1)  # noqa: E731
    response = planes[value("z", len(planes)), value("y", pb.shape[-2]), value("x", pb.shape[-1])]
    response = np.where(np.isfinite(response) & (response > 0), response, np.nan)
    out = table.copy()
    scale = np.where(np.isfinite(response), response, 1.0)
    for name in PB_COLUMNS:
        if name in out.colnames:
            out[name] = out[name] / scale
    out["pb"] = response
    return out


def _describe(t: QTable, cube: Cube) -> None:
    """Attach each column's UCD (``meta['ucd']``) and description from :data:`COLUMNS`."""
    galactic = cube.celestial.wcs.ctype[cube.celestial.wcs.lng].upper().startswith("GLON")
    for name in t.colnames:
        base = name.removeprefix("err_")
        doc = COLUMNS[base]
        ucd = doc.ucd.replace("pos.eq.ra", "pos.galactic.lon").replace("pos.eq.dec", "pos.galactic.lat") \
            if galactic else doc.ucd
        if name != base:
            ucd = "stat.error;" + ucd.removesuffix(";meta.main")
            doc = ColumnDoc(ucd, f"Uncertainty (1 sigma) of {base}")
        t[name].info.meta = {"ucd": ucd}
        t[name].info.description = doc.description


def column_docs(table: QTable) -> str:
    """The columns of ``table``: name, unit, UCD and meaning as a Markdown table (for the README)."""
    rows = ["| column | unit | UCD | meaning |", "|---|---|---|---|"]
    for name in table.colnames:
        unit = getattr(table[name], "unit", None)
        rows.append(f"| `{name}` | {unit.to_string() if unit is not None else ''} | `{table[name].info.meta['ucd']}` "
                    f"| {table[name].info.description} |")
    return "\n".join(rows) + "\n"


def sky_ellipse(celestial: WCS, x: np.ndarray, y: np.ndarray, fwhm_x: np.ndarray, fwhm_y: np.ndarray,
                pa_deg: np.ndarray) -> tuple[u.Quantity, u.Quantity, u.Quantity]:  # fmt: skip
    """(major FWHM, minor FWHM, position angle east of north in [0°, 180°)) on the sky of the pixel-frame
    Gaussians (x, y, fwhm_x, fwhm_y, pa) of the module docstring, through the local pixel → sky Jacobian.

    The FWHM ellipse's quadratic form in pixels, Rᵀ·diag(fwhm_x², fwhm_y²)·R with R the rotation by pa,
    is carried to (east, north) arcsec as J·F·Jᵀ; its eigenvectors are the sky axes.
    """
    x, y, fx, fy, pa = (np.atleast_1d(np.asarray(v, float)) for v in (x, y, fwhm_x, fwhm_y, pa_deg))
    if x.size == 0:
        return np.zeros(0) * u.arcsec, np.zeros(0) * u.arcsec, np.zeros(0) * u.deg
    jac = _sky_jacobian(celestial, x, y)
    c, s = np.cos(np.deg2rad(pa)), np.sin(np.deg2rad(pa))
    axes = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -1)  # columns: fwhm_x axis, fwhm_y axis
    f_pix = axes @ (np.stack([fx**2, fy**2], -1)[..., None] * np.swapaxes(axes, -1, -2))
    f_sky = jac @ f_pix @ np.swapaxes(jac, -1, -2)
    w, v = np.linalg.eigh(f_sky)  # ascending: the last eigenvector is the major axis (east, north)
    pa_sky = np.rad2deg(np.arctan2(v[:, 0, 1], v[:, 1, 1])) % 180.0
    return np.sqrt(w[:, 1]) * u.arcsec, np.sqrt(np.maximum(w[:, 0], 0.0)) * u.arcsec, pa_sky * u.deg


def _sky_jacobian(celestial: WCS, x: np.ndarray, y: np.ndarray, step: float = 0.5) -> np.ndarray:
    """d(east, north)/d(x, y) in arcsec per pixel at each (x, y) → (n, 2, 2), by central differences."""
    lng, lat = celestial.wcs.lng, celestial.wcs.lat
    lat0 = np.deg2rad(celestial.wcs_pix2world(x, y, 0)[lat])
    columns = []
    for dx, dy in ((step, 0.0), (0.0, step)):
        plus, minus = celestial.wcs_pix2world(x + dx, y + dy, 0), celestial.wcs_pix2world(x - dx, y - dy, 0)
        east = ((plus[lng] - minus[lng] + 180.0) % 360.0 - 180.0) * np.cos(lat0)
        columns.append(np.stack([east, plus[lat] - minus[lat]], -1) * 3600.0 / (2.0 * step))
    return np.stack(columns, -1)


def _meta(cube: Cube) -> dict[str, Any]:
    """Short (FITS-safe) keys describing the cube and the conventions."""
    h = cube.header
    meta: dict[str, Any] = {
        "CUBE": str(cube.path), "BUNIT": str(h.get("BUNIT", "")), "NAXES": "x,y,z = NAXIS1,NAXIS2,spectral",
        "PIXCONV": "0-based; x along the first celestial axis, y the second, z the spectral axis as stored; "
                   "boxes half-open",
        "RADESYS": str(h.get("RADESYS", cube.celestial.wcs.radesys or "")),
        "SPECSYS": str(h.get("SPECSYS", "")),
        "NBLANK": int(cube.blank.sum()),
    }
    if cube.rest_freq is not None:
        meta["RESTFRQ"] = float(cube.rest_freq.to_value(u.Hz))
    if cube.beam is not None:
        meta["BMAJ"] = float(cube.beam.major.to_value(u.arcsec))
        meta["BMIN"] = float(cube.beam.minor.to_value(u.arcsec))
        meta["BPA"] = float(cube.beam.pa.to_value(u.deg))
        meta["BEAMUNIT"] = "arcsec,arcsec,deg" + (" (median of BEAMS)" if cube.channel_beams is not None else "")
    return meta


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def catalogue_bytes(table: QTable, fmt: str) -> bytes:
    """The file content of ``table`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "votable":
        from astropy.io.votable import from_table
        from astropy.io.votable.tree import Info

        buffer = io.BytesIO()
        votable = from_table(Table(table))  # FIELDs take unit, meta['ucd'] and description from the columns
        resource_table = votable.get_first_table()
        resource_table.description = "dfjax source catalogue (DeepFocus pipeline)"
        resource_table.infos.extend(Info(name=k, value=str(v)) for k, v in table.meta.items())
        votable.to_xml(buffer)
        return buffer.getvalue()
    if fmt == "fits":
        buffer, out = io.BytesIO(), io.BytesIO()
        Table(table).write(buffer, format="fits")  # astropy keeps description/meta in its serialised COMMENT block
        buffer.seek(0)
        with fits.open(buffer) as hdul:
            for i, name in enumerate(table.colnames, start=1):  # TCOMMn: the column comment other readers show
                if table[name].info.description:
                    hdul[1].header[f"TCOMM{i}"] = table[name].info.description
            hdul.writeto(out)
        return out.getvalue()
    text = io.StringIO()
    if fmt == "csv":  # plain CSV has no metadata: units go in '#' comment lines before the header
        units = ", ".join(f"{c}[{table[c].unit}]" for c in table.colnames if getattr(table[c], "unit", None))
        text.write(f"# units: {units}\n")
        text.writelines(f"# {k}: {v}\n" for k, v in table.meta.items())
    Table(table).write(text, format=FORMATS[fmt].astropy)
    return text.getvalue().encode()


def write_catalogue(table: QTable, path: str | os.PathLike, fmt: str = "ecsv") -> None:
    """Write ``table`` to ``path`` in ``fmt`` atomically."""
    write_atomic(path, catalogue_bytes(table, fmt))


def read_catalogue(path: str | os.PathLike, fmt: str = "ecsv") -> QTable:
    """Read a catalogue written by :func:`write_catalogue` (CSV comes back without units)."""
    if fmt == "csv":
        return QTable.read(path, format="ascii.csv", comment="#")
    table = QTable.read(path, format=FORMATS[fmt].astropy)
    for key in [k for k in table.meta if re.fullmatch(r"TCOMM\d+", str(k))]:  # already the columns' descriptions
        del table.meta[key]
    return table


def plot_catalogue(cube: Cube, table: QTable, *, max_spectra: int = 12) -> bytes:
    """PNG: integrated image with boxes and ids, and each source's box spectrum with its fitted line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    data = np.nan_to_num(cube.data, nan=0.0)
    rows = table[:max_spectra]
    ncols = 3
    nrows = 1 + int(np.ceil(len(rows) / ncols))
    fig = Figure(figsize=(4 * ncols, 3.2 * nrows), layout="constrained")
    image_ax = fig.add_subplot(nrows, 1, 1)
    image_ax.imshow(data.sum(axis=0), origin="lower", cmap="viridis")
    image_ax.set(title=f"{cube.path.name}: integrated image, {len(table)} sources", xlabel="x [pix]", ylabel="y [pix]")
    for row in table:
        x0, y0, x1, y1 = (int(row[k].value) for k in ("x0", "y0", "x1", "y1"))
        image_ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="red", lw=0.8))
        image_ax.text(x0 - 0.5, y1 - 0.5, str(row["id"]), color="white", fontsize=7, va="bottom")
    channels = np.arange(data.shape[0])
    for i, row in enumerate(rows):
        ax = fig.add_subplot(nrows, ncols, ncols + i + 1)
        x0, y0, x1, y1 = (int(row[k].value) for k in ("x0", "y0", "x1", "y1"))
        spectrum = data[:, max(y0, 0):y1, max(x0, 0):x1].sum(axis=(1, 2))
        ax.step(channels, spectrum, where="mid", lw=0.7, color="k", label="box spectrum")
        ax.plot(channels, _fitted_line(spectrum, row), color="red", lw=1.0, label="fitted line")
        ax.axvspan(row["z0"].value, row["z1"].value, color="orange", alpha=0.2)
        ax.set(title=f"id {row['id']}  z={row['z'].value:.1f}", xlabel="channel", ylabel="mJy/beam (box sum)")
        ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _fitted_line(spectrum: np.ndarray, row: Any) -> np.ndarray:
    """The pipeline's Gaussian (centre z, FWHM fwhm_z) on a continuum level, amplitude by least squares."""
    z = np.arange(len(spectrum), dtype=float)
    shape = gaussian_1d(len(spectrum), float(row["z"].value), max(float(row["fwhm_z"].value), 1e-3))
    outside = (z < row["z0"].value) | (z >= row["z1"].value)
    level = float(np.median(spectrum[outside])) if outside.sum() >= 3 else 0.0
    amplitude = float(np.dot(shape, spectrum - level) / max(np.dot(shape, shape), 1e-12))
    return level + amplitude * shape

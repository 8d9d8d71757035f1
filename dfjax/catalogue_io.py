"""Source catalogues of real cubes: pixel → world, units, and files in four formats, written atomically.

One row per source, columns (units in the table, hence in every format's metadata):

=====================  ===========  ==========================================================
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
snr                                 signal-to-noise ratio (eq. 17)
x0, y0, x1, y1         pix          bounding box, half-open
z0, z1                 chan         emission range Δz, half-open
flags                               comma-separated: blended, deblended, searched
reliability                         1 − N_neg/N_pos above the source's SNR (only with --reliability;
                                    :mod:`dfjax.reliability`)
=====================  ===========  ==========================================================
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy import constants as const
from astropy import units as u
from astropy.table import QTable, Table

from dfjax.cube_io import PIPELINE_UNIT, Cube

__all__ = ["FORMATS", "catalogue_table", "plot_catalogue", "read_catalogue", "write_atomic", "write_catalogue"]

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


def catalogue_table(cube: Cube, sources: Sequence[Any]) -> QTable:
    """QTable of ``sources`` (pipeline ``Source`` objects in ``cube``'s pixels) with world coordinates and units."""
    sources = sorted(sources, key=lambda s: -float(s.snr))
    col = {name: np.array([float(getattr(s, name)) for s in sources], float) for name in
           ("x", "y", "z", "fwhm_x", "fwhm_y", "pa", "fwhm_z", "peak_flux", "line_flux", "line_flux_measured",
            "continuum", "snr", "z0", "z1")}  # fmt: skip
    box = {name: np.array([int(getattr(s, name)) for s in sources], np.int64) for name in ("x0", "y0", "x1", "y1")}
    ra, dec = cube.sky_at(col["x"], col["y"])
    freq = cube.freq_at(col["z"]).to(u.Hz)
    dnu = cube.channel_width(col["z"]).to(u.Hz)
    reference = cube.rest_freq if cube.rest_freq is not None else freq
    km_s_per_chan = (const.c * dnu / reference).to(u.km / u.s)
    t = QTable()
    t["id"] = np.arange(1, len(sources) + 1, dtype=np.int64)
    t["x"], t["y"], t["z"] = col["x"] * u.pix, col["y"] * u.pix, col["z"] * u.chan
    t["ra"], t["dec"] = ra * u.deg, dec * u.deg
    t["freq"] = freq
    if cube.rest_freq is not None:
        t["velocity"] = freq.to(u.km / u.s, u.doppler_radio(cube.rest_freq))
    t["fwhm_x"], t["fwhm_y"] = col["fwhm_x"] * u.pix, col["fwhm_y"] * u.pix
    t["fwhm_x_arcsec"] = col["fwhm_x"] * cube.pixel_scale[0]
    t["fwhm_y_arcsec"] = col["fwhm_y"] * cube.pixel_scale[1]
    t["pa"] = col["pa"] * u.deg
    t["fwhm_z"] = col["fwhm_z"] * u.chan
    t["fwhm_z_kms"] = col["fwhm_z"] * km_s_per_chan
    t["peak_flux"] = (col["peak_flux"] * PIPELINE_UNIT).to(SURFACE_BRIGHTNESS)
    t["line_flux"] = col["line_flux"] * u.Jy * u.km / u.s  # the flux ResNet regresses Jy km/s directly
    # measured: cube units · channels (summed over pixels / beam_area_px): mJy·chan → Jy km/s
    t["line_flux_measured"] = (col["line_flux_measured"] * PIPELINE_UNIT * u.beam).to(u.Jy) * km_s_per_chan
    t["continuum"] = (col["continuum"] * PIPELINE_UNIT).to(SURFACE_BRIGHTNESS)
    t["snr"] = col["snr"]
    for name in ("x0", "y0", "x1", "y1"):
        t[name] = box[name] * u.pix
    t["z0"], t["z1"] = col["z0"] * u.chan, col["z1"] * u.chan
    t["flags"] = np.array([",".join(s.flags) for s in sources], dtype=str) if sources else np.array([], dtype="U1")
    t.meta.update(_meta(cube))
    return t


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

        buffer = io.BytesIO()
        votable = from_table(Table(table))
        votable.to_xml(buffer)
        return buffer.getvalue()
    if fmt == "fits":
        buffer = io.BytesIO()
        Table(table).write(buffer, format="fits")
        return buffer.getvalue()
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
    return QTable.read(path, format=FORMATS[fmt].astropy)


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
    sigma = max(float(row["fwhm_z"].value), 1e-3) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    shape = np.exp(-0.5 * ((z - float(row["z"].value)) / sigma) ** 2)
    outside = (z < row["z0"].value) | (z >= row["z1"].value)
    level = float(np.median(spectrum[outside])) if outside.sum() >= 3 else 0.0
    amplitude = float(np.dot(shape, spectrum - level) / max(np.dot(shape, shape), 1e-12))
    return level + amplitude * shape

"""Products per cube beside its catalogue: mask cube, moment maps, cubelets and region files (issue 21).

``python -m dfjax.infer CUBE.fits --products mask,moments,cubelets,regions`` writes, beside
``<stem>.cat.<ext>`` (each file atomically, :func:`dfjax.catalogue_io.write_atomic`):

=================================  ===============================================================
``<stem>.mask.fits``               source ids (the catalogue's ``id``; 0 = no source), with the
                                   input's header and axis layout
``<stem>.mom0.fits``               moment 0 of the emission in the mask, Jy/beam·km/s
``<stem>.mom1.fits``               moment 1: intensity-weighted radio velocity, km/s (frequency, Hz,
                                   without a rest frequency)
``<stem>_cubelets/<id>.fits``      the input data around the source (Jy/beam), WCS shifted
``<stem>_cubelets/<id>.spec.ecsv`` its spectrum: flux density summed in the mask's footprint / beam area
``<stem>_cubelets/<id>.mom0.fits`` its moment 0
``<stem>.reg``, ``<stem>.crtf``    DS9 and CASA (CRTF) ellipses at the sky FWHM (ell_maj, ell_min, ell_pa)
=================================  ===============================================================

Each source's mask is step (v)'s segmentation mask (:func:`dfjax.pipeline.model3d.segmentation_mask`)
of its catalogue row (x, y, fwhm_x, fwhm_y, pa, z, fwhm_z); where masks overlap, the brighter source
(lower id) keeps the voxel. The moments sum the continuum-free cube
(:func:`dfjax.pipeline.search.line_cube`) over the mask: mom0 = Σ line·Δv, mom1 = Σ line·v / Σ line
(NaN where that sum is not positive); Δv is the channel width of the catalogue's ``fwhm_z_kms``.
A cubelet (SoFiA-2's ``output.writeCubelets``) spans the source's own mask, overlaps included, plus
``margin`` pixels and channels; its spectrum and moment 0 use that own mask.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import QTable

from dfjax.catalogue_io import SURFACE_BRIGHTNESS, km_s_per_channel, write_atomic
from dfjax.cube_io import PIPELINE_UNIT, Cube, file_wcs, fits_axes, to_file_layout

__all__ = ["CUBELET_MARGIN", "PRODUCTS", "mask_cube", "moment_maps", "parse_products", "product_stem",
           "region_files", "source_masks", "write_products"]

PRODUCTS = ("mask", "moments", "cubelets", "regions")
CUBELET_MARGIN = 10  # pixels and channels around a source's mask (SoFiA-2's output.marginCubelets default)
MOMENT0_UNIT = SURFACE_BRIGHTNESS * u.km / u.s

Slices = tuple[slice, slice, slice]


def parse_products(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"mask,moments"`` (or a sequence of names) → the names, checked; ValueError naming an unknown one."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec or ()) if n.strip()]
    unknown = [n for n in names if n not in PRODUCTS]
    if unknown:
        raise ValueError(f"unknown product {unknown[0]!r} in --products (choose from {', '.join(PRODUCTS)})")
    return tuple(dict.fromkeys(names))


def product_stem(catalogue: Path) -> Path:
    """``dir/obs.cat.ecsv`` → ``dir/obs``: the products' common prefix beside the catalogue."""
    name = catalogue.name.rsplit(".", 1)[0] if "." in catalogue.name else catalogue.name
    return catalogue.with_name(name.removesuffix(".cat"))


def _pipeline_config(config: Any) -> Any:
    from dfjax.pipeline.config import PipelineConfig  # late: dfjax.pipeline imports JAX

    return config if hasattr(config, "model3d") else PipelineConfig()


def source_masks(cube: Cube, table: QTable, config: Any = None) -> list[tuple[Slices, np.ndarray]]:
    """Each row's segmentation mask (step v) as (slices into the cube, bool mask of that box).

    The box holds every voxel where the dilated model can reach ``model3d.mask_fraction``, so the
    mask equals the full-cube :func:`~dfjax.pipeline.model3d.segmentation_mask` restricted to it.
    """
    from dfjax.maths import SIGMA_PER_FWHM
    from dfjax.pipeline.model3d import segmentation_mask

    config = _pipeline_config(config)
    m = config.model3d
    reach = np.sqrt(max(-2.0 * np.log(m.mask_fraction), 0.0)) * SIGMA_PER_FWHM if m.mask_fraction > 0 else np.inf
    out = []
    for row in table:
        x, y, z, fx, fy, pa, fz = (float(row[k].value) for k in ("x", "y", "z", "fwhm_x", "fwhm_y", "pa", "fwhm_z"))
        r_xy = max(fx, fy, m.min_fwhm_px) * m.dilation * reach + 1.0
        r_z = max(fz, m.min_fwhm_px) * reach + 1.0
        box = tuple(slice(int(np.clip(np.floor(c - r), 0, n)), int(np.clip(np.ceil(c + r) + 1, 0, n)))
                    for c, r, n in zip((z, y, x), (r_z, r_xy, r_xy), cube.shape))  # fmt: skip
        shape = tuple(s.stop - s.start for s in box)
        if min(shape) == 0:
            out.append((box, np.zeros(shape, bool)))
            continue
        mask = segmentation_mask(shape, x=x - box[2].start, y=y - box[1].start, z=z - box[0].start, fwhm_x=fx,
                                 fwhm_y=fy, pa=pa, fwhm_z=fz, config=config)  # fmt: skip
        out.append((box, mask))
    return out


def mask_cube(cube: Cube, table: QTable, masks: Sequence[tuple[Slices, np.ndarray]]) -> np.ndarray:
    """(nz, ny, nx) int32 of source ids, 0 where none; the lowest id wins where masks overlap."""
    ids = np.zeros(cube.shape, np.int32)
    for source_id, (box, mask) in sorted(zip(np.asarray(table["id"]), masks), key=lambda p: p[0]):
        view = ids[box]
        view[mask & (view == 0)] = source_id
    return ids


def _spectral_axis(cube: Cube) -> tuple[u.Quantity, u.Quantity]:
    """(channel widths in km/s, the moment-1 coordinate per channel: radio velocity, else frequency)."""
    dv = km_s_per_channel(cube, np.arange(cube.shape[0], dtype=float))
    return dv, (cube.velocity if cube.velocity is not None else cube.freq)


def moment_maps(line: np.ndarray, mask: np.ndarray, dv: u.Quantity, coordinate: u.Quantity
                ) -> tuple[u.Quantity, u.Quantity]:  # fmt: skip
    """Moment 0 (Jy/beam·km/s) and moment 1 (``coordinate``'s unit) of ``line`` (nz, ny, nx, mJy/beam) in
    ``mask``; ``dv`` (nz,) the channel widths in km/s, ``coordinate`` (nz,) each channel's velocity or frequency."""
    mom0, total, first = (np.zeros(line.shape[1:], np.float64) for _ in range(3))
    for z in range(line.shape[0]):  # channel by channel: no float64 copy of the whole cube
        plane = np.where(mask[z], line[z], 0.0)
        mom0 += dv.value[z] * plane
        total += plane
        first += coordinate.value[z] * plane
    with np.errstate(invalid="ignore", divide="ignore"):
        mom1 = np.where(total > 0, first / total, np.nan)
    mom0 = mom0 * (PIPELINE_UNIT * dv.unit)
    return mom0.to(MOMENT0_UNIT), mom1 * coordinate.unit


def _beam_cards(cube: Cube, header: fits.Header) -> None:
    """The (median) beam in ``header`` when it has none: a BEAMS table does not travel with the products."""
    if cube.beam is not None and "BMAJ" not in header:
        header["BMAJ"] = float(cube.beam.major.to_value(u.deg))
        header["BMIN"] = float(cube.beam.minor.to_value(u.deg))
        header["BPA"] = float(cube.beam.pa.to_value(u.deg))


def _image_bytes(cube: Cube, image: u.Quantity, *, origin: tuple[int, int] = (0, 0), btype: str) -> bytes:
    """A 2-D FITS image (ny, nx) with the cube's celestial WCS, its pixel (0, 0) at the cube's ``origin`` (x, y)."""
    wcs = cube.celestial.deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix - np.array(origin, float)
    header = wcs.to_header()
    for key in ("OBJECT", "TELESCOP", "INSTRUME", "DATE-OBS", "SPECSYS", "BMAJ", "BMIN", "BPA"):
        if key in cube.header:
            header[key] = cube.header[key]
    _beam_cards(cube, header)
    header["BUNIT"], header["BTYPE"] = image.unit.to_string("fits"), btype
    dtype = np.float64 if image.unit.is_equivalent(u.Hz) else np.float32  # a float32 GHz is good to ~16 kHz only
    return _fits_bytes(np.asarray(image.value, dtype), header)


def _cube_bytes(cube: Cube, data: np.ndarray, *, start: tuple[int, int, int] = (0, 0, 0),
                bunit: str | None = None) -> bytes:  # fmt: skip
    """``data`` (nz, ny, nx) in the file's layout under a copy of its header, reference pixels shifted by ``start``;
    ``bunit`` None for the source ids of the mask cube."""
    header = cube.header.copy()
    for key in ("BSCALE", "BZERO", "BLANK", "DATAMIN", "DATAMAX", "CHECKSUM", "DATASUM", "XTENSION", "PCOUNT",
                "GCOUNT", "EXTNAME", "EXTVER", "BUNIT"):  # fmt: skip
        header.remove(key, ignore_missing=True, remove_all=True)
    ix, iy, spec, _ = fits_axes(file_wcs(cube.header))
    shift = {ix: start[2], iy: start[1], spec: start[0]}
    for key in list(header.keys()):
        match = re.fullmatch(r"CRPIX(\d+)([A-Z]?)", key)  # every WCS, alternates included
        if match and int(match[1]) - 1 in shift:
            header[key] = float(header[key]) - shift[int(match[1]) - 1]
    _beam_cards(cube, header)
    if bunit is not None:
        header["BUNIT"] = bunit
    else:  # source ids: neither a unit nor the input's BTYPE (CASA's 'Intensity')
        header.remove("BTYPE", ignore_missing=True)
    return _fits_bytes(to_file_layout(cube, data), header)


def _fits_bytes(data: np.ndarray, header: fits.Header) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


def _spectrum(cube: Cube, line: np.ndarray, box: Slices, footprint: np.ndarray, source_id: int) -> QTable:
    """The spectrum over the box's channels summed in ``footprint`` (ny, nx of the box) / beam area."""
    area = cube.beam_area_px
    unit = u.Jy if area is not None else SURFACE_BRIGHTNESS  # without a beam: a plain sum of Jy/beam pixels
    scale = PIPELINE_UNIT.to(SURFACE_BRIGHTNESS) / (area or 1.0)
    channels = np.arange(box[0].start, box[0].stop)
    data = np.nan_to_num(cube.data[box])
    t = QTable()
    t["channel"] = channels
    t["freq"] = cube.freq[channels]
    if cube.velocity is not None:
        t["velocity"] = cube.velocity[channels]
    t["flux_density"] = data[:, footprint].sum(axis=1, dtype=np.float64) * scale * unit
    t["line_flux_density"] = line[box][:, footprint].sum(axis=1, dtype=np.float64) * scale * unit
    described = {"channel": "0-based channel of the parent cube", "freq": "Frequency of the channel",
                 "velocity": "Radio velocity of the channel",
                 "flux_density": "Input cube summed in the source mask's footprint / beam area (continuum included)",
                 "line_flux_density": "The same on the continuum-free cube"}  # fmt: skip
    for name in t.colnames:
        t[name].info.description = described[name]
    t.meta.update({"id": int(source_id), "cube": str(cube.path), "footprint_px": int(footprint.sum()),
                   "beam_area_px": area})  # fmt: skip
    return t


def region_files(cube: Cube, table: QTable) -> dict[str, str]:
    """{"ds9": text, "crtf": text}: one sky ellipse per source at (ra, dec), FWHM ell_maj × ell_min, ell_pa."""
    from regions import EllipseSkyRegion, Regions

    centres = cube.celestial.pixel_to_world(np.asarray(table["x"].value, float), np.asarray(table["y"].value, float))
    # regions' angle turns the height axis from north through east: height = major axis, angle = ell_pa
    found = Regions([EllipseSkyRegion(center=centres[i], width=row["ell_min"], height=row["ell_maj"],
                                      angle=row["ell_pa"], meta={"text": str(row["id"])})
                     for i, row in enumerate(table)])  # fmt: skip
    frame = centres.frame.name if centres.frame.name in ("icrs", "fk5", "fk4", "galactic") else "icrs"
    # CRTF in the cube's own frame (regions' default fk5 would shift ICRS positions by ~20 mas), in degrees to
    # 0.004 mas (regions' radunit="arcsec" writes 0.2" which its own reader refuses)
    ds9, crtf = found.serialize(format="ds9"), found.serialize(format="crtf", coordsys=frame, fmt=".9f")
    if not ds9.startswith("# Region file format: DS9"):  # CARTA refuses a DS9 file without it
        ds9 = "# Region file format: DS9 dfjax\n" + ds9
    return {"ds9": ds9, "crtf": crtf}


def write_products(cube: Cube, table: QTable, catalogue: str | Path, names: Sequence[str], *, config: Any = None,
                   margin: int = CUBELET_MARGIN) -> list[Path]:  # fmt: skip
    """Write the products ``names`` (:data:`PRODUCTS`) of ``table`` (its catalogue) beside ``catalogue``."""
    names = parse_products(names)
    stem = product_stem(Path(catalogue))
    written: list[Path] = []

    def write(path: Path, data: bytes) -> None:
        write_atomic(path, data)
        written.append(path)

    if not names:
        return written
    masks = source_masks(cube, table, config) if {"mask", "moments", "cubelets"} & set(names) else []
    ids = mask_cube(cube, table, masks) if {"mask", "moments"} & set(names) else None
    if "mask" in names:
        write(stem.with_name(stem.name + ".mask.fits"), _cube_bytes(cube, ids))
    line = None
    dv, coordinate = _spectral_axis(cube)
    if {"moments", "cubelets"} & set(names):
        from dfjax.pipeline.search import line_cube  # late: dfjax.pipeline imports JAX

        line = line_cube(cube.data)
    if "moments" in names:
        mom0, mom1 = moment_maps(line, ids > 0, dv, coordinate)
        write(stem.with_name(stem.name + ".mom0.fits"), _image_bytes(cube, mom0, btype="Moment0"))
        write(stem.with_name(stem.name + ".mom1.fits"), _image_bytes(cube, mom1, btype="Moment1"))
    if "cubelets" in names:
        folder = stem.with_name(stem.name + "_cubelets")
        folder.mkdir(exist_ok=True)
        for row, (box, mask) in zip(table, masks):
            if not mask.any():
                continue
            where = np.nonzero(mask)
            sub = tuple(slice(max(int(w.min()) + s.start - margin, 0), min(int(w.max()) + s.start + margin + 1, n))
                        for w, s, n in zip(where, box, cube.shape))  # fmt: skip
            own = np.zeros(tuple(s.stop - s.start for s in sub), bool)
            common = [(max(b.start, s.start), min(b.stop, s.stop)) for b, s in zip(box, sub)]  # box ∩ cubelet
            own[tuple(slice(lo - s.start, hi - s.start) for (lo, hi), s in zip(common, sub))] = \
                mask[tuple(slice(lo - b.start, hi - b.start) for (lo, hi), b in zip(common, box))]
            start = tuple(s.start for s in sub)
            data = (cube.data[sub] * PIPELINE_UNIT).to_value(SURFACE_BRIGHTNESS)
            write(folder / f"{row['id']}.fits", _cube_bytes(cube, data, start=start, bunit="Jy/beam"))
            text = io.StringIO()
            _spectrum(cube, line, sub, own.any(axis=0), int(row["id"])).write(text, format="ascii.ecsv")
            write(folder / f"{row['id']}.spec.ecsv", text.getvalue().encode())
            mom0, _ = moment_maps(line[sub], own, dv[sub[0]], coordinate[sub[0]])
            write(folder / f"{row['id']}.mom0.fits", _image_bytes(cube, mom0, origin=(start[2], start[1]),
                                                                   btype="Moment0"))  # fmt: skip
    if "regions" in names:
        texts = region_files(cube, table)
        for fmt, suffix in (("ds9", ".reg"), ("crtf", ".crtf")):
            write(stem.with_name(stem.name + suffix), texts[fmt].encode())
    return written

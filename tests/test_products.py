"""dfjax.products and the catalogue's metadata, on a tiny synthetic cube with two Gaussian sources.

The products are made once per module from a stand-in source list (the true parameters), then each
file is opened with the tool a user would open it with: astropy.io.fits/wcs, astropy-regions,
astropy.io.votable with ``verify='exception'``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy import constants as const
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits, votable
from astropy.table import QTable
from astropy.wcs import WCS, WCSCOMPARE_ANCILLARY
from regions import EllipseSkyRegion, Regions
from test_infer import CELL_DEG, DF_HZ, F0_HZ, FakeModels, brightest_pixel, cube_header, write_cube

import dfjax
from dfjax import catalogue_io, infer, products
from dfjax.cube_io import read_cube
from dfjax.maths import SIGMA_PER_FWHM
from dfjax.pipeline.model3d import segmentation_mask, source_model
from dfjax.pipeline.run import Source

NZ, NY, NX = 24, 36, 40
KMS_PER_CHAN = const.c.to_value(u.km / u.s) * DF_HZ / F0_HZ
# (x, y, z, fwhm_x, fwhm_y, pa, fwhm_z, peak Jy/beam, snr): A elongated along x' at pa 30°, B round
TRUTH = [(12.3, 20.0, 8.0, 4.0, 2.5, 30.0, 3.0, 0.02, 20.0), (27.0, 11.0, 15.0, 3.0, 3.0, 0.0, 2.5, 0.01, 10.0)]


def stand_in(x, y, z, fx, fy, pa, fz, peak, snr, **extra) -> Source:
    return Source(x=x, y=y, z=z, fwhm_x=fx, fwhm_y=fy, pa=pa, fwhm_z=fz, peak_flux=peak * 1e3, line_flux=0.0,
                  line_flux_measured=0.0, continuum=0.0, snr=snr, x0=int(x) - 4, y0=int(y) - 4, x1=int(x) + 5,
                  y1=int(y) + 5, z0=z - fz, z1=z + fz, **extra)  # fmt: skip


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(cube, catalogue table, catalogue path, written paths) with every product written."""
    d = tmp_path_factory.mktemp("products")
    data = np.random.default_rng(0).normal(0.0, 1e-4, (NZ, NY, NX)).astype(np.float32)
    for x, y, z, fx, fy, pa, fz, peak, _ in TRUTH:
        data += peak * source_model((NZ, NY, NX), x=x, y=y, z=z, fwhm_x=fx, fwhm_y=fy, pa=pa, fwhm_z=fz)
    cube = read_cube(write_cube(d / "obs.fits", data))
    table = catalogue_io.catalogue_table(cube, [stand_in(*t) for t in TRUTH])
    target = d / "obs.cat.vot"
    catalogue_io.write_catalogue(table, target, "votable")
    written = products.write_products(cube, table, target, products.PRODUCTS)
    return cube, table, target, written


def test_files_sit_beside_the_catalogue(made):
    cube, _, target, written = made
    names = sorted(str(p.relative_to(target.parent)) for p in written)
    cubelets = [f"obs_cubelets/{i}{s}" for i in (1, 2) for s in (".fits", ".mom0.fits", ".spec.ecsv")]
    assert names == sorted(["obs.mask.fits", "obs.mom0.fits", "obs.mom1.fits", "obs.reg", "obs.crtf", *cubelets])
    assert not [p for p in target.parent.rglob(".*")]  # no temporary file left


def test_mask_cube_has_the_inputs_wcs_and_the_catalogue_ids(made):
    cube, table, target, _ = made
    with fits.open(target.with_name("obs.mask.fits")) as hdul, fits.open(cube.path) as parent:
        mask, header = hdul[0].data, hdul[0].header
        assert mask.shape == parent[0].data.shape == (1, NZ, NY, NX)  # the input's layout, Stokes kept
        assert WCS(header).celestial.wcs.compare(WCS(parent[0].header).celestial.wcs)
        assert WCS(header).spectral.wcs.compare(WCS(parent[0].header).spectral.wcs)
    assert np.issubdtype(mask.dtype, np.integer) and "BUNIT" not in header
    ids = mask[0]
    assert set(np.unique(ids)) == {0} | set(table["id"])
    for row in table:  # each id's voxels are exactly its full-cube segmentation mask (no overlaps here)
        full = segmentation_mask(cube.shape, **{k: float(row[k].value) for k in
                                                ("x", "y", "z", "fwhm_x", "fwhm_y", "pa", "fwhm_z")})  # fmt: skip
        np.testing.assert_array_equal(ids == row["id"], full)
        assert ids[round(row["z"].value), round(row["y"].value), round(row["x"].value)] == row["id"]


def test_overlapping_masks_go_to_the_brighter_source(made):
    cube = made[0]
    bright, faint = stand_in(20.0, 18.0, 10.0, 3, 3, 0, 3, 0.01, 9.0), stand_in(23.0, 18.0, 11.0, 3, 3, 0, 3, 0.01, 5.0)
    table = catalogue_io.catalogue_table(cube, [faint, bright])  # ids by SNR: bright is 1
    masks = products.source_masks(cube, table)
    ids = products.mask_cube(cube, table, masks)
    both = np.zeros(cube.shape, bool)
    for box, m in masks:
        full = np.zeros(cube.shape, bool)
        full[box] = m
        both = full if not both.any() else both & full
    assert both.sum() > 10 and (ids[both] == 1).all() and (ids == 2).sum() > 0


def test_moment0_peaks_on_each_source_in_jy_per_beam_km_s(made):
    cube, table, target, _ = made
    with fits.open(target.with_name("obs.mom0.fits")) as hdul:
        mom0, header = hdul[0].data, hdul[0].header
    assert mom0.shape == (NY, NX) and u.Unit(header["BUNIT"], format="fits") == u.Jy / u.beam * u.km / u.s
    assert WCS(header).wcs.compare(cube.celestial.wcs, cmp=WCSCOMPARE_ANCILLARY, tolerance=1e-12)
    assert header["BMAJ"] == pytest.approx(1.0 / 3600)
    for row, (*_, fz, peak, _) in zip(table, TRUTH):
        x, y = row["x"].value, row["y"].value
        near = mom0[round(y) - 2 : round(y) + 3, round(x) - 2 : round(x) + 3]
        yy, xx = np.unravel_index(np.argmax(near), near.shape)
        assert abs(xx - 2 + round(x) - x) <= 1 and abs(yy - 2 + round(y) - y) <= 1
        expected = peak * fz * SIGMA_PER_FWHM * np.sqrt(2 * np.pi) * KMS_PER_CHAN  # ∫ line dv at the centre
        assert near.max() == pytest.approx(expected, rel=0.1)
    with fits.open(target.with_name("obs.mom1.fits")) as hdul:
        mom1, unit = hdul[0].data, u.Unit(hdul[0].header["BUNIT"], format="fits")
    assert unit == u.km / u.s and np.isnan(mom1[0, 0])
    for row in table:  # intensity-weighted radio velocity at the centre: the line's, within a channel
        v = mom1[round(row["y"].value), round(row["x"].value)]
        assert v == pytest.approx(row["velocity"].to_value(u.km / u.s), abs=0.5 * KMS_PER_CHAN)


def test_cubelets_keep_the_parents_world_coordinates_and_data(made):
    cube, table, target, _ = made
    parent = WCS(cube.header)
    for row in table:
        folder = target.with_name("obs_cubelets")
        with fits.open(folder / f"{row['id']}.fits") as hdul:
            data, wcs = hdul[0].data, WCS(hdul[0].header)
        assert data.ndim == 4 and hdul[0].header["BUNIT"] == "Jy/beam"
        pixel = np.array([3.0, 2.0, 1.0, 0.0])  # x, y, z, stokes of the cubelet
        offset = np.array(parent.world_to_pixel_values(*wcs.pixel_to_world_values(*pixel))) - pixel
        np.testing.assert_allclose(offset, np.rint(offset), atol=1e-6)
        x0, y0, z0 = (int(round(v)) for v in offset[:3])
        nz, ny, nx = data.shape[1:]
        assert x0 <= row["x"].value < x0 + nx and z0 <= row["z"].value < z0 + nz
        np.testing.assert_allclose(data[0], cube.data[z0 : z0 + nz, y0 : y0 + ny, x0 : x0 + nx] / 1e3, rtol=1e-6)
        spec = QTable.read(folder / f"{row['id']}.spec.ecsv")
        np.testing.assert_array_equal(spec["channel"], np.arange(z0, z0 + nz))
        np.testing.assert_allclose(spec["freq"].to_value(u.Hz), cube.freq[z0 : z0 + nz].to_value(u.Hz))
        assert spec["flux_density"].unit == u.Jy and "velocity" in spec.colnames
        assert spec["channel"][np.argmax(spec["line_flux_density"])] == round(row["z"].value)
        with fits.open(folder / f"{row['id']}.mom0.fits") as hdul:
            cut, cut_wcs = hdul[0].data, WCS(hdul[0].header)
        np.testing.assert_allclose(cut_wcs.pixel_to_world_values(0, 0), cube.celestial.pixel_to_world_values(x0, y0))
        with fits.open(target.with_name("obs.mom0.fits")) as hdul:  # an isolated source: the same moment 0
            x, y = round(row["x"].value), round(row["y"].value)
            np.testing.assert_allclose(cut[y - y0, x - x0], hdul[0].data[y, x], rtol=1e-5)


def test_spectrum_integrates_to_the_sources_line_flux(made):
    cube, table, target, _ = made
    x, y, z, fx, fy, pa, fz, peak, _ = TRUTH[1]
    spec = QTable.read(target.with_name("obs_cubelets") / "2.spec.ecsv")
    beam_px = np.pi * 1.0 * 0.5 / (4 * np.log(2)) / 0.1**2
    expected = peak * (np.pi * fx * fy / (4 * np.log(2))) / beam_px * fz * SIGMA_PER_FWHM * np.sqrt(2 * np.pi)
    assert spec["flux_density"].to_value(u.Jy).sum() == pytest.approx(expected, rel=0.05)  # no continuum here
    # the continuum fit of search.remove_continuum takes some of a bright line's wings (~13 % on 24 channels)
    assert spec["line_flux_density"].to_value(u.Jy).sum() == pytest.approx(expected, rel=0.2)


def test_region_files_open_with_one_ellipse_per_source(made):
    cube, table, target, _ = made
    centres = SkyCoord(table["ra"], table["dec"], frame="fk5")
    for path, fmt in ((target.with_name("obs.reg"), "ds9"), (target.with_name("obs.crtf"), "crtf")):
        found = Regions.read(path, format=fmt)
        assert len(found) == len(table) and all(isinstance(r, EllipseSkyRegion) for r in found)
        for region, row, centre in zip(found, table, centres):
            assert region.center.separation(centre) < 1 * u.mas
            assert region.height.to_value(u.arcsec) == pytest.approx(row["ell_maj"].to_value(u.arcsec), rel=1e-4)
            assert region.width.to_value(u.arcsec) == pytest.approx(row["ell_min"].to_value(u.arcsec), rel=1e-4)
            assert region.angle.to_value(u.deg) == pytest.approx(row["ell_pa"].to_value(u.deg), abs=1e-4)
    assert target.with_name("obs.reg").read_text().startswith("# Region file format: DS9")
    # drawn on the image, source A's major axis lies along its pixel-frame fwhm_x axis (cos pa, -sin pa)
    pixel = Regions.read(target.with_name("obs.reg"), format="ds9")[0].to_pixel(cube.celestial)
    a = np.deg2rad(pixel.angle.to_value(u.deg))
    height_axis = np.array([-np.sin(a), np.cos(a)])
    expected = np.array([np.cos(np.deg2rad(30.0)), -np.sin(np.deg2rad(30.0))])
    assert abs(height_axis[0] * expected[1] - height_axis[1] * expected[0]) < 1e-3  # parallel
    assert pixel.height == pytest.approx(4.0, rel=1e-3) and pixel.width == pytest.approx(2.5, rel=1e-3)


def _wcs(cdelt1: float = -CELL_DEG, rotation_deg: float = 0.0) -> WCS:
    h = cube_header(NX, NY, NZ, stokes=False)
    h["CDELT1"] = cdelt1
    t = np.deg2rad(rotation_deg)
    h["PC1_1"], h["PC1_2"], h["PC2_1"], h["PC2_2"] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return WCS(h).celestial


@pytest.mark.parametrize(("wcs", "fwhm_x", "fwhm_y", "pa", "ell_pa"), [
    (_wcs(), 2.0, 6.0, 0.0, 0.0),  # along Dec: north
    (_wcs(), 6.0, 2.0, 0.0, 90.0),  # along RA: east
    (_wcs(), 6.0, 2.0, 30.0, 60.0),  # standard header: 90° - pa
    (_wcs(cdelt1=CELL_DEG), 6.0, 2.0, 30.0, 120.0),  # RA increasing with x: the mirror image
    (_wcs(rotation_deg=30.0), 2.0, 6.0, 0.0, 30.0),  # pixel y turned 30° east of north by the PC matrix
])  # fmt: skip
def test_ell_pa_is_east_of_north(wcs, fwhm_x, fwhm_y, pa, ell_pa):
    major, minor, angle = catalogue_io.sky_ellipse(wcs, 20.0, 18.0, fwhm_x, fwhm_y, pa)
    assert angle[0].to_value(u.deg) == pytest.approx(ell_pa, abs=0.01)
    assert major[0].to_value(u.arcsec) == pytest.approx(6 * 0.1, rel=1e-4)
    assert minor[0].to_value(u.arcsec) == pytest.approx(2 * 0.1, rel=1e-4)


def test_catalogue_ell_columns_from_the_cube(made):
    table = made[1]
    assert table["ell_pa"][0].to_value(u.deg) == pytest.approx(60.0, abs=0.01)  # source A: 90° - 30°
    assert table["ell_maj"][0].to_value(u.arcsec) == pytest.approx(0.4, rel=1e-4)
    np.testing.assert_array_equal(table["f_sum"], table["line_flux_measured"])


@pytest.mark.parametrize("fmt", ["votable", "ecsv", "fits"])
def test_every_column_carries_unit_ucd_and_description(made, tmp_path, fmt):
    table = made[1]
    path = tmp_path / f"cat.{fmt}"
    catalogue_io.write_catalogue(table, path, fmt)
    if fmt == "votable":
        parsed = votable.parse(str(path), verify="exception").get_first_table()
        for field in parsed.fields:
            assert field.ucd and field.description, field.name
            assert (field.unit is None) == (field.name in ("id", "snr", "flags")), field.name
        assert {i.name for i in parsed.infos} >= {"RADESYS", "RESTFRQ", "BMAJ"}
        return
    back = catalogue_io.read_catalogue(path, fmt)
    assert back.colnames == table.colnames and not [k for k in back.meta if str(k).startswith("TCOMM")]
    for name in back.colnames:
        assert back[name].info.description and back[name].info.meta["ucd"] == table[name].info.meta["ucd"], name
    if fmt == "fits":
        assert fits.getheader(path, 1)["TCOMM1"].startswith("Source number")


def test_error_columns_only_where_the_source_has_them(made, tmp_path):
    cube = made[0]
    plain = catalogue_io.catalogue_table(cube, [stand_in(*TRUTH[0])])
    assert not [c for c in plain.colnames if c.startswith("err_")]
    source = dataclasses.replace(stand_in(*TRUTH[0]), err_x=0.2, line_flux_fit=1.0, err_line_flux_fit=0.05)
    fitted = catalogue_io.catalogue_table(cube, [source])
    assert [c for c in fitted.colnames if c.startswith("err_")] == ["err_x", "err_line_flux_fit"]
    assert fitted["err_x"].unit == u.pix and fitted["err_line_flux_fit"].unit == u.Jy * u.km / u.s
    assert "line_flux_fit" in fitted.colnames and "line_snr" not in fitted.colnames
    catalogue_io.write_catalogue(fitted, tmp_path / "c.vot", "votable")
    field = votable.parse(str(tmp_path / "c.vot"), verify="exception").get_first_table().get_field_by_id("err_x")
    assert field.ucd == "stat.error;pos.cartesian.x"


def test_products_of_a_transposed_cube_keep_its_axis_order(tmp_path):
    x, y, z, fx, fy, pa, fz, peak, snr = TRUTH[1]
    data = (peak * source_model((NZ, NY, NX), x=x, y=y, z=z, fwhm_x=fx, fwhm_y=fy, pa=pa, fwhm_z=fz)).astype(np.float32)
    h, t = cube_header(NX, NY, NZ, stokes=False), fits.Header()  # FITS axes (spectral, RA, DEC): numpy (dec, ra, z)
    for new, old in ((1, 3), (2, 1), (3, 2)):
        for key in ("CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT"):
            t[f"{key}{new}"] = h[f"{key}{old}"]
    for key in ("BUNIT", "RESTFRQ", "RADESYS", "BMAJ", "BMIN", "BPA"):
        t[key] = h[key]
    fits.PrimaryHDU(np.transpose(data, (1, 2, 0)), header=t).writeto(tmp_path / "t.fits")
    cube = read_cube(tmp_path / "t.fits")
    table = catalogue_io.catalogue_table(cube, [stand_in(*TRUTH[1])])
    products.write_products(cube, table, tmp_path / "t.cat.ecsv", ["mask", "cubelets"])
    mask = fits.getdata(tmp_path / "t.mask.fits")
    assert mask.shape == (NY, NX, NZ) and mask[round(y), round(x), round(z)] == 1
    with fits.open(tmp_path / "t_cubelets" / "1.fits") as hdul:
        wcs = WCS(hdul[0].header)
        (yc, xc, zc), = np.argwhere(hdul[0].data == hdul[0].data.max())  # numpy axes (DEC, RA, spectral)
    world = wcs.pixel_to_world_values(zc, xc, yc)
    np.testing.assert_allclose(WCS(t).world_to_pixel_values(*world), (round(z), round(x), round(y)), atol=1e-6)


def test_an_empty_catalogue_gives_empty_products(made, tmp_path):
    cube = made[0]
    table = catalogue_io.catalogue_table(cube, [])
    written = products.write_products(cube, table, tmp_path / "e.cat.ecsv", products.PRODUCTS)
    assert (fits.getdata(tmp_path / "e.mask.fits") == 0).all() and (fits.getdata(tmp_path / "e.mom0.fits") == 0).all()
    assert len(Regions.read(tmp_path / "e.reg", format="ds9")) == len(Regions.read(tmp_path / "e.crtf")) == 0
    assert len(written) == 5 and not list((tmp_path / "e_cubelets").iterdir())


# ---------------------------------------------------------------- through dfjax.infer


def test_infer_writes_the_requested_products_only(tmp_path):
    data = np.random.default_rng(1).normal(0.0, 1e-3, (16, 20, 20)).astype(np.float32)
    data[5, 10, 12] = 0.05
    cube = write_cube(tmp_path / "c.fits", data)
    (tmp_path / "m").mkdir()
    kw = {"model_dir": tmp_path / "m", "loader": lambda d: FakeModels(), "runner": brightest_pixel}
    infer.infer_files([cube], **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.cat.ecsv", "c.fits", "m"]
    infer.infer_files([cube], products="mask,regions", **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.cat.ecsv", "c.crtf", "c.fits", "c.mask.fits", "c.reg", "m"]
    with pytest.raises(infer.InferError, match="unknown product 'mom0'"):
        infer.infer_files([cube], products="mask,mom0", **kw)


def test_unknown_product_exits_2_with_one_line_before_any_model_loads(tmp_path):
    cube = write_cube(tmp_path / "c.fits", np.zeros((16, 20, 20), np.float32))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(Path(dfjax.__file__).parents[1])}  # this checkout
    result = subprocess.run([sys.executable, "-m", "dfjax.infer", str(cube), "--products", "mask,bogus"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # no models/ here
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "unknown product 'bogus'" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.fits"]


def test_an_elongated_source_gets_its_cubelet(tmp_path):
    """A source 14 px long and 3 px wide: its mask box reaches 14 px along both axes, its mask only
    ~6 px across, so the cubelet (mask ± margin) is narrower than the box (found on a 360 x 360
    cube, where writing the cubelet crashed on the mismatch); the cubelet holds the whole mask."""
    data = np.random.default_rng(1).normal(0.0, 1e-4, (NZ, NY, NX)).astype(np.float32)
    long = (20.0, 18.0, 12.0, 14.0, 3.0, 0.0, 4.0, 0.02, 30.0)
    data += long[7] * source_model((NZ, NY, NX), x=20.0, y=18.0, z=12.0, fwhm_x=14.0, fwhm_y=3.0, pa=0.0, fwhm_z=4.0)
    cube = read_cube(write_cube(tmp_path / "long.fits", data))
    table = catalogue_io.catalogue_table(cube, [stand_in(*long)])
    written = products.write_products(cube, table, tmp_path / "long.cat.ecsv", ["cubelets"])
    (box, mask), = products.source_masks(cube, table)
    with fits.open(tmp_path / "long_cubelets" / "1.fits") as hdul:
        ny_cubelet = hdul[0].data.shape[2]
    assert ny_cubelet < box[1].stop - box[1].start  # the case that crashed
    assert ny_cubelet >= np.any(mask, axis=(0, 2)).sum()
    assert len(written) == 3

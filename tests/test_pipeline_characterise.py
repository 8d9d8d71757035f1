"""Pipeline steps (iv)–(vi) and the whole run on hand-made cubes: barycentre, 3-D mask and its
dilation, direct flux and continuum subtraction, ResNet inputs equal to training's, end to end."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from dfjax.datasets.almasim.records import CATALOGUE_FIELDS, COLUMN
from dfjax.input_pipeline.loaders import ResNetData
from dfjax.pipeline import (
    Models,
    PipelineConfig,
    catalogue_rows,
    flux_input,
    measure_flux,
    morphology_input,
    pixel_weighted_centre,
    run_pipeline,
    segmentation_mask,
    source_model,
)

FWHM_PER_SIGMA = 2.3548200450309493


def test_pixel_weighted_centre_of_a_symmetric_blob_is_its_centre():
    yy, xx = np.mgrid[0:40, 0:50]
    image = np.exp(-0.5 * (((xx - 21.3) / 2.0) ** 2 + ((yy - 17.6) / 3.0) ** 2))
    # a box symmetric about the blob's centre, in field pixels; the image starts at field (5, -3)
    x, y = pixel_weighted_centre(image, (5, -3), (5 + 21.3 - 8.5 + 0.5, -3 + 17.6 - 9.6 + 0.5, 5 + 21.3 + 8.5 + 0.5,
                                                  -3 + 17.6 + 9.6 + 0.5))  # fmt: skip
    assert (x, y) == pytest.approx((21.3 + 5, 17.6 - 3), abs=0.02)
    assert pixel_weighted_centre(np.zeros((8, 8)), (0, 0), (2, 2, 6, 4)) == (3.5, 2.5)  # no signal: box centre


def test_segmentation_mask_holds_the_centre_and_grows_with_the_dilation():
    shape = (32, 40, 48)
    params = {"x": 30.0, "y": 12.0, "z": 20.0, "fwhm_x": 6.0, "fwhm_y": 3.0, "pa": 0.0, "fwhm_z": 4.0}
    masks = {d: segmentation_mask(shape, **params, config=PipelineConfig().replace(**{"model3d.dilation": d}))
             for d in (1.0, 1.5, 2.0)}  # fmt: skip
    for mask in masks.values():
        assert mask[20, 12, 30]
    extent = {d: (m.any(axis=(0, 1)).sum(), m.any(axis=(0, 2)).sum()) for d, m in masks.items()}  # (x, y)
    assert extent[1.0][0] < extent[1.5][0] < extent[2.0][0]
    assert extent[1.0][1] < extent[1.5][1] < extent[2.0][1]
    assert extent[1.5][0] > extent[1.5][1]  # elongated along x, as fwhm_x > fwhm_y
    rotated = segmentation_mask(shape, **{**params, "pa": 90.0})
    assert rotated.any(axis=(0, 1)).sum() < rotated.any(axis=(0, 2)).sum()  # pa = 90°: along y
    model = source_model(shape, **params)
    assert model.max() == pytest.approx(1.0) and model[20, 12, 30] == model.max()


def cube_with_source(*, line_amp=2.0, continuum=0.0, noise=0.0, shape=(48, 40, 44), seed=0):
    nz, ny, nx = shape
    s, sz = 3.0 / FWHM_PER_SIGMA, 5.0 / FWHM_PER_SIGMA
    g = np.exp(-0.5 * (((np.arange(nx)[None] - 22) ** 2 + (np.arange(ny)[:, None] - 18) ** 2) / s**2))
    l = np.exp(-0.5 * ((np.arange(nz) - 24) / sz) ** 2)
    cube = g[None] * (line_amp * l[:, None, None] + continuum) + np.random.default_rng(seed).normal(0, noise, shape)
    truth = line_amp * g.sum() * l.sum()
    return cube.astype(np.float32), truth


@pytest.mark.parametrize("continuum", [0.0, 0.7])
def test_direct_flux_recovers_the_line_flux_and_removes_a_continuum(continuum):
    cube, truth = cube_with_source(continuum=continuum)
    mask = segmentation_mask(cube.shape, x=22, y=18, z=24, fwhm_x=3, fwhm_y=3, pa=0, fwhm_z=5)
    m = measure_flux(cube, mask, x=22, y=18)
    assert m.line_flux == pytest.approx(truth, rel=0.03)
    assert m.continuum == pytest.approx(continuum, abs=2e-3)  # off-mask channels keep the line's far wings
    assert m.peak_flux == pytest.approx(2.0 + continuum, rel=1e-3)
    assert measure_flux(cube, mask, x=22, y=18, beam_area_px=4.0).line_flux == pytest.approx(m.line_flux / 4)
    flat = np.full(cube.shape, 0.3, np.float32)  # a flat continuum alone: no line flux
    assert measure_flux(flat, mask, x=22, y=18).line_flux == pytest.approx(0.0, abs=1e-4)


def test_resnet_inputs_equal_the_training_loader_examples():
    cube, _ = cube_with_source(continuum=0.5, noise=0.05, shape=(32, 40, 44))
    row = np.zeros(len(CATALOGUE_FIELDS), np.float32)
    for name, value in {"x0": 17, "y0": 14, "x1": 27, "y1": 23, "z0": 20.4, "z1": 27.6, "line_flux": 1.0}.items():
        row[COLUMN[name]] = value
    record = {"dirty_cube": cube, "catalogue": row[None]}
    box, z_range = (17, 14, 27, 23), (20.4, 27.6)
    morph = ResNetData([record], target="fwhm_x").example(0)["inputs"][..., 0]
    np.testing.assert_array_equal(morphology_input(cube, box, z_range), morph)
    flux = ResNetData([record], target="line_flux", line_image_scale=0.25).example(0)["inputs"][..., 0]
    np.testing.assert_array_equal(flux_input(cube, box, z_range, scale=0.25), flux)


def _threshold_finder(x):
    """Stand-in Blobs Finder: the normalised integrated image itself."""
    return x


def _minmax_gru(x):
    """Stand-in Deep GRU: the standardised spectrum rescaled to [0, 1] per row."""
    lo, hi = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    return (x - lo) / jnp.maximum(hi - lo, 1e-6)


def _constant(value):
    return lambda x: jnp.full((x.shape[0],), value, jnp.float32)


def test_run_pipeline_finds_the_source_at_its_position_and_channel():
    rng = np.random.default_rng(1)
    nz, ny, nx = 32, 64, 64
    x, y, z = 40.0, 22.0, 12.0  # x ≠ y: a swap would show
    s, sz = 4.0 / FWHM_PER_SIGMA, 3.0 / FWHM_PER_SIGMA
    g = np.exp(-0.5 * (((np.arange(nx)[None] - x) ** 2 + (np.arange(ny)[:, None] - y) ** 2) / s**2))
    cube = (g[None] * np.exp(-0.5 * ((np.arange(nz) - z) / sz) ** 2)[:, None, None]
            + rng.normal(0, 0.01, (nz, ny, nx))).astype(np.float32)  # fmt: skip
    models = Models(blobs_finder=_threshold_finder, deep_gru=_minmax_gru, resnet_fwhm_x=_constant(4.0),
                    resnet_fwhm_y=_constant(4.0), resnet_pa=_constant(0.0), resnet_flux=_constant(7.0))  # fmt: skip
    config = PipelineConfig().replace(**{"detect.threshold": 0.3})
    (src,) = run_pipeline(cube, models, config)
    assert src.x == pytest.approx(x, abs=1) and src.y == pytest.approx(y, abs=1)
    assert src.z == pytest.approx(z, abs=1) and src.z0 < z < src.z1
    assert src.x0 <= x < src.x1 and src.y0 <= y < src.y1
    assert (src.fwhm_x, src.fwhm_y, src.pa, src.line_flux) == (4.0, 4.0, 0.0, 7.0)
    assert src.peak_flux == pytest.approx(1.0, abs=0.05) and src.snr >= 1 and src.flags == ()
    truth = g.sum() * sz * np.sqrt(2 * np.pi)
    assert src.line_flux_measured == pytest.approx(truth, rel=0.1)
    rows = catalogue_rows([src])
    assert rows.shape == (1,) and rows["x"][0] == src.x and rows["flags"][0] == ""
    with pytest.raises(ValueError, match="expected a cube"):
        run_pipeline(cube[0], models, config)



def test_run_pipeline_names_each_stage_on_its_progress_bar(capsys):
    cube = np.random.default_rng(2).normal(0, 0.01, (32, 48, 48)).astype(np.float32)
    cube[10:14, 20:26, 20:26] += 1.0
    models = Models(blobs_finder=_threshold_finder, deep_gru=_minmax_gru, resnet_fwhm_x=_constant(4.0),
                    resnet_fwhm_y=_constant(4.0), resnet_pa=_constant(0.0), resnet_flux=_constant(7.0))  # fmt: skip
    config = PipelineConfig().replace(**{"detect.threshold": 0.3})
    quiet = run_pipeline(cube, models, config)
    assert capsys.readouterr().err == ""
    assert run_pipeline(cube, models, config, progress=True) == quiet
    err = capsys.readouterr().err
    assert all(name in err for name in ("detect", "spectra", "focus", "morphology", "measure")), err
    assert "refine" not in err and "scene fit" not in err  # only the stages this configuration runs


def test_models_load_and_check_name_incompatible_models(tmp_path):
    from flax import nnx

    from dfjax import checkpoint
    from dfjax import models as model_defs

    with pytest.raises(ValueError, match="blobs_finder: missing"):
        Models.load(tmp_path)
    for name in ("blobs_finder", "deep_gru", "resnet_fwhm_x", "resnet_fwhm_y", "resnet_pa", "resnet_flux"):
        checkpoint.write_model_config(tmp_path / name, {"model": name, "overrides": {}})
    with pytest.raises(ValueError, match="not a dfjax checkpoint"):  # model.json but no steps
        Models.load(tmp_path)
    gru = model_defs.DeepGRUTiny(rngs=nnx.Rngs(0))
    stand_in = Models(_threshold_finder, gru, *[_constant(1.0)] * 4)
    with pytest.raises(ValueError, match="16 channels, the cube has 32"):
        stand_in.check(nz=32)


def test_peak_centre_ignores_how_far_the_box_is_off():
    from dfjax.pipeline.characterise import peak_centre, pixel_weighted_centre

    yy, xx = np.mgrid[0:64, 0:64]
    image = np.exp(-0.5 * ((xx - 30.3) ** 2 + (yy - 25.6) ** 2) / 1.5**2)
    image[40:44, 40:44] = 0.2  # another, fainter blob inside the box
    offset = (100, 200)  # field (x, y) of image pixel (0, 0)
    box = (100 + 26, 200 + 21, 100 + 46, 200 + 46)  # off-centre box that takes in the faint blob
    x, y = peak_centre(image, offset, box, window_px=4)
    assert abs(x - 130.3) < 0.05 and abs(y - 225.6) < 0.05
    bx, by = pixel_weighted_centre(image, offset, box)
    assert bx - 130.3 > 0.5  # the whole-box barycentre is pulled towards the faint blob


def test_the_resnet_sizes_and_angle_are_taken_as_they_are():
    from dfjax.pipeline import estimate_morphology
    from dfjax.pipeline.focus import Detection

    image = np.zeros((64, 64), np.float32)
    image[30:33, 30:33] = 1.0
    d = Detection(box=(30, 30, 33, 33), z0=0, z1=4, z=2, fwhm_z=2, image=image, offset=np.zeros(2, np.int64), snr=9)
    (m,) = estimate_morphology(_constant(8.0), _constant(2.0), _constant(30.0), [d], PipelineConfig())
    assert (m.fwhm_x, m.fwhm_y, m.pa) == pytest.approx((8.0, 2.0, 30.0))

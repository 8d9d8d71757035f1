"""Input pipelines: batch shapes and ranges, determinism, augmentation alignment, and the physics of
spectral focusing (eq. 17), box spectra and line emission images (eq. 19) on tiny simulated cubes."""

from pathlib import Path

import numpy as np
import pytest

from dfjax import input_pipeline as ip
from dfjax.datasets.almasim.records import COLUMN, read_cube_record
from sim.config import SimConfig
from sim.generate import generate

BOX = [COLUMN[c] for c in ("x0", "y0", "x1", "y1")]
Z = [COLUMN["z0"], COLUMN["z1"]]


def _simulate(root: Path, n: int, **overrides) -> list[dict]:
    config = SimConfig().replace(**{"cube.size": 64, "cube.channels": 32, **overrides})
    generate(root, n, config, progress=False)
    return [read_cube_record(root / f"cube_{i:05d}.fits", root / f"sky_{i:05d}.fits", dtype=np.float32)
            for i in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[dict]:
    """Five 64 x 64 x 32 cubes with 1-3 sources each."""
    return _simulate(tmp_path_factory.mktemp("sim"), 5, **{"sky.n_serendipitous": [0, 2], "seed": 2})


@pytest.fixture(scope="module")
def line_sources(tmp_path_factory) -> list[dict]:
    """Six cubes, each one faint (peak SNR 3) line-dominated source over 64 channels."""
    return _simulate(tmp_path_factory.mktemp("faint"), 6, **{
        "cube.channels": 64, "sky.n_serendipitous": [0, 0], "sky.line_amplitude": [30.0, 30.0],
        "sky.line_fwhm_chan": [4.0, 4.0], "noise.snr_range": [3.0, 3.0], "seed": 1})  # fmt: skip


@pytest.fixture(scope="module")
def continuum_sources(tmp_path_factory) -> list[dict]:
    """Two noiseless cubes: a continuum-only source (line amplitude 0), then a line source."""
    common = {"sky.n_serendipitous": [0, 0], "noise.mode": "none", "seed": 4}
    root = tmp_path_factory.mktemp("cont")
    return (_simulate(root / "a", 1, **{**common, "sky.line_amplitude": [0.0, 0.0]})
            + _simulate(root / "b", 1, **{**common, "sky.line_amplitude": [3.0, 3.0]}))  # fmt: skip


# ----------------------------------------------------------------------------- shapes and ranges


def test_blobs_finder_batches(records):
    data = ip.BlobsFinderData(records, crop_size=48)
    batches = list(data.batches(batch_size=2, epoch=0, seed=0))
    assert len(batches) == data.num_batches(2) == 2  # 5 cubes, remainder dropped
    for b in batches:
        for key in ("inputs", "targets"):
            assert b[key].shape == (2, 48, 48, 1) and b[key].dtype == np.float32
            np.testing.assert_allclose(b[key].min(axis=(1, 2, 3)), 0.0)
            np.testing.assert_allclose(b[key].max(axis=(1, 2, 3)), 1.0)


def test_deep_gru_batches(records):
    data = ip.DeepGRUData(records)
    assert len(data) == sum(len(r["catalogue"]) for r in records)
    b = next(data.batches(batch_size=4, epoch=0))
    assert b["inputs"].shape == b["targets"].shape == (4, 32)
    assert b["inputs"].dtype == b["targets"].dtype == np.float32
    np.testing.assert_allclose(b["inputs"].mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(b["inputs"].std(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(b["targets"].min(axis=1), 0.0)
    np.testing.assert_allclose(b["targets"].max(axis=1), 1.0)


@pytest.mark.parametrize("name", list(ip.RESNET_TARGETS))
def test_resnet_batches(records, name):
    data = ip.for_model(name, records)
    b = next(data.batches(batch_size=4, epoch=0))
    assert b["inputs"].shape == (4, 64, 64, 1) and b["inputs"].dtype == np.float32
    assert b["targets"].shape == (4,) and b["targets"].dtype == np.float32
    column = COLUMN[ip.RESNET_TARGETS[name]]
    expected = [records[i]["catalogue"][r, column] for i, r in zip(b["index"], b["row"])]
    np.testing.assert_array_equal(b["targets"], expected)
    if name != "resnet_flux":
        np.testing.assert_allclose(b["inputs"].max(axis=(1, 2, 3)), 1.0)
        np.testing.assert_allclose(b["inputs"].min(axis=(1, 2, 3)), 0.0)


def test_invalid_arguments_raise(records):
    with pytest.raises(ValueError):
        ip.centre_crop(np.zeros((8, 8)), 9)
    with pytest.raises(ValueError):
        ip.ResNetData(records, target="redshift")
    with pytest.raises(ValueError):
        ip.ResNetData(records, target="pa", boxes={0: np.zeros((2, 4))})  # needs z0, z1
    with pytest.raises(ValueError):
        ip.DeepGRUData(records).num_batches(0)


# ----------------------------------------------------------------------------- determinism


def _all(data, **kw) -> list[dict]:
    return list(data.batches(**kw))


def test_same_seed_same_batches_other_epoch_other_order(records):
    data = ip.BlobsFinderData(records, crop_size=48)
    a = _all(data, batch_size=2, epoch=3, seed=7, num_threads=0)
    b = _all(data, batch_size=2, epoch=3, seed=7, num_threads=2)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    gru = ip.DeepGRUData(records)
    orders = [np.concatenate([b["index"] * 100 + b["row"] for b in _all(gru, batch_size=1, epoch=e, seed=7)])
              for e in (0, 0, 1)]  # fmt: skip
    np.testing.assert_array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], orders[2])
    assert sorted(orders[0]) == sorted(orders[2])  # a permutation of the same examples


def test_augmentation_differs_between_epochs(records):
    data = ip.BlobsFinderData(records, crop_size=48)
    a = _all(data, batch_size=1, epoch=0, shuffle=False)
    b = _all(data, batch_size=1, epoch=1, shuffle=False)
    assert not np.allclose(a[0]["inputs"], b[0]["inputs"])


# ----------------------------------------------------------------------------- augmentation


def _blob(n: int, x: float, y: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2).astype(np.float32)


def test_augmentation_keeps_input_on_target():
    rng = np.random.default_rng(0)
    records = []
    for _ in range(40):
        x, y = rng.uniform(24, 40, size=2)  # stays inside the 48-px crop under any rotation
        dirty = _blob(64, x, y, 3.0) + 0.3 * _blob(64, 32, 32, 10.0)  # broad beam and a background
        records.append({"integrated_dirty": dirty, "integrated_sky": _blob(64, x, y, 1.0)})
    data = ip.BlobsFinderData(records, crop_size=48)
    peaks = []
    for b in data.batches(batch_size=8, epoch=0, seed=1):
        for inp, tgt in zip(b["inputs"][..., 0], b["targets"][..., 0]):
            pi = np.unravel_index(np.argmax(inp), inp.shape)
            pt = np.unravel_index(np.argmax(tgt), tgt.shape)
            assert max(abs(pi[0] - pt[0]), abs(pi[1] - pt[1])) <= 1  # within 1 px along each axis
            peaks.append(pt)
    assert len(set(peaks)) > 20  # the draws really move the source around


def test_unrotated_unflipped_equals_centre_crop():
    image = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    (out,) = ip.rotate_flip_crop([image], angle_deg=0.0, flip_x=False, flip_y=False, size=40)
    np.testing.assert_allclose(out, ip.centre_crop(image, 40), atol=1e-6)
    (flipped,) = ip.rotate_flip_crop([image], angle_deg=0.0, flip_x=True, flip_y=False, size=40)
    np.testing.assert_allclose(flipped, ip.centre_crop(image, 40)[:, ::-1], atol=1e-6)


# ----------------------------------------------------------------------------- spectral focusing


def test_focusing_raises_global_snr(line_sources):
    gains, off_line = [], []
    for r in line_sources:
        row = r["catalogue"][0]
        box, z_range = row[BOX], row[Z]
        focused, offset = ip.spectral_focus(r["dirty_cube"], box, z_range)
        full, _ = ip.spectral_focus(r["dirty_cube"], box, (0, 63))
        local = box - np.r_[offset, offset]
        gains.append(ip.global_snr(focused, local) / ip.global_snr(full, local))
        far = (z_range + 32) % 64  # same width, away from the line
        elsewhere, _ = ip.spectral_focus(r["dirty_cube"], box, np.sort(far))
        off_line.append(ip.global_snr(elsewhere, local) / ip.global_snr(focused, local))
    assert np.median(gains) > 1.5 and np.mean(np.array(gains) > 1) >= 5 / 6
    assert np.median(off_line) < 0.5  # integrating outside the line loses the source


def test_spectral_focus_pads_and_maps_back():
    cube = np.zeros((8, 32, 32), np.float32)
    cube[3, 5, 2] = 1.0  # z=3, y=5, x=2, near the corner
    image, offset = ip.spectral_focus(cube, (0, 2, 5, 9), (2.6, 4.4), size=16)
    assert image.shape == (16, 16) and tuple(offset) == (2 - 8, 5 - 8)
    assert image.sum() == 1.0 and image[5 - offset[1], 2 - offset[0]] == 1.0
    empty, _ = ip.spectral_focus(cube, (0, 2, 5, 9), (4.6, 7.0), size=16)  # channels 5..7
    assert empty.sum() == 0.0


def test_global_snr_back_of_the_book():
    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 2.0, size=(40, 40))
    yy, xx = np.mgrid[:40, :40]
    d = np.hypot(xx - 19.5, yy - 19.5)  # box (15, 15, 25, 25): centre 19.5, r = 7.07
    image[d <= np.hypot(10, 10) / 2] = 10.0
    annulus = (d > 7.0711) & (d <= 10.0)
    assert ip.global_snr(image, (15, 15, 25, 25)) == pytest.approx(10.0 / image[annulus].std(), rel=1e-6)
    assert ip.global_snr(image, (15, 15, 25, 25), spread="var") == pytest.approx(10.0 / image[annulus].var(),
                                                                                 rel=1e-6)


# ----------------------------------------------------------------------------- spectra


def test_box_spectrum_of_lone_source(line_sources):
    r = line_sources[0]
    x0, y0, x1, y1 = r["catalogue"][0, BOX].astype(int)
    example = ip.DeepGRUData(line_sources[:1]).example(0)
    sky = r["sky_cube"][:, y0:y1, x0:x1].astype(np.float64).sum(axis=(1, 2))
    dirty = r["dirty_cube"][:, y0:y1, x0:x1].astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(example["targets"], (sky - sky.min()) / (sky.max() - sky.min()), atol=1e-5)
    np.testing.assert_allclose(example["inputs"], (dirty - dirty.mean()) / dirty.std(), atol=1e-4)
    assert int(np.argmax(example["targets"])) == round(r["catalogue"][0, COLUMN["z"]])


def test_predicted_truth_boxes_equal_phase_one(records):
    truth = {i: r["catalogue"][:, BOX + Z] for i, r in enumerate(records)}
    pairs = [(ip.DeepGRUData(records), ip.DeepGRUData(records, boxes=truth)),
             (ip.ResNetData(records, target="pa"), ip.ResNetData(records, target="pa", boxes=truth)),
             (ip.ResNetData(records, target="line_flux"),
              ip.ResNetData(records, target="line_flux", boxes=truth))]  # fmt: skip
    for phase1, phase2 in pairs:
        assert len(phase1) == len(phase2)
        for a, b in zip(phase1.batches(batch_size=3, epoch=2), phase2.batches(batch_size=3, epoch=2), strict=True):
            for key in ("inputs", "targets", "index"):
                np.testing.assert_array_equal(a[key], b[key])


def test_predictions_off_every_source_are_dropped(records):
    far = {0: np.array([[0, 0, 3, 3, 0, 5]], float)}
    assert len(ip.ResNetData(records, target="fwhm_x", boxes=far)) == 0
    assert len(ip.DeepGRUData(records, boxes=far)) == 1  # Deep GRU takes any box: its target is the sky


def test_line_emission_image_removes_continuum(continuum_sources):
    ratios = []
    for r in continuum_sources:
        row = r["catalogue"][0]
        box, z_range = row[BOX], row[Z]
        focused, offset = ip.spectral_focus(r["dirty_cube"], box, z_range)
        line, offset_l = ip.line_emission_image(r["dirty_cube"], box, z_range)
        profile = (float(np.mean(z_range)), float(np.diff(z_range)[0]) / 2)  # z0, z1 = z ∓ fwhm_z
        weighted, offset_w = ip.line_emission_image(r["dirty_cube"], box, z_range, profile=profile)
        np.testing.assert_array_equal(offset, offset_l)
        np.testing.assert_array_equal(offset, offset_w)
        x0, y0, x1, y1 = (box - np.r_[offset, offset]).astype(int)
        ratios.append([image[y0:y1, x0:x1].sum() / focused[y0:y1, x0:x1].sum() for image in (line, weighted)])
    assert np.abs(ratios[0]).max() < 0.01  # continuum only: nothing left, summed or weighted by the line
    assert min(ratios[1]) > 0.3  # a line source keeps its line


def test_a_line_profile_weights_the_channels_and_a_flat_profile_is_the_sum():
    nz, side = 32, 16
    zz = np.arange(nz)
    cube = np.zeros((nz, side, side), np.float32)
    cube[:, 8, 8] = 2.0 + np.exp(-0.5 * ((zz - 16) / 1.2) ** 2)  # continuum 2 under a line at channel 16
    box = (6, 6, 11, 11)
    summed, _ = ip.line_emission_image(cube, box, (12, 20), size=16)
    weighted, _ = ip.line_emission_image(cube, box, (12, 20), size=16, profile=(16.0, 2.4 * np.sqrt(2.0 * np.log(2.0))))
    flat, _ = ip.line_emission_image(cube, box, (12, 20), size=16, profile=(16.0, 1e9))
    line = np.exp(-0.5 * ((zz[12:21] - 16) / 1.2) ** 2)
    assert summed[8, 8] == pytest.approx(line.sum(), rel=1e-4)
    assert weighted[8, 8] == pytest.approx((line * line).sum(), rel=1e-4)  # continuum gone, channels × profile
    np.testing.assert_allclose(flat, summed, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="FWHM must be positive"):
        ip.line_emission_image(cube, box, (12, 20), profile=(16.0, 0.0))

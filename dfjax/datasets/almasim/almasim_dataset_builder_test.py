"""Tests of the almasim builder over dummy_data/ (pytest collects them through tests/test_dataset.py)."""

from __future__ import annotations

import importlib.resources
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from dfjax.datasets.almasim.__main__ import main
from dfjax.datasets.almasim.package import build
from dfjax.datasets.almasim.records import (
    CATALOGUE_FIELDS,
    FLUX_SCALE,
    read_cube_record,
)

CONFIG = "test"
SHAPES = {"dirty_cube": (16, 32, 32), "sky_cube": (16, 32, 32), "integrated_dirty": (32, 32),
          "integrated_sky": (32, 32), "beam": (3,)}  # fmt: skip
DTYPES = {"dirty_cube": np.float16, "sky_cube": np.float16, "integrated_dirty": np.float32,
          "integrated_sky": np.float32, "catalogue": np.float32, "beam": np.float32}  # fmt: skip
FLOAT16_RTOL = 2.0**-11  # float16 rounding of values above its smallest normal (all but ~1e-7 of the flux)


def dummy_dir() -> Path:
    return Path(str(importlib.resources.files("dfjax.datasets.almasim") / "dummy_data"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tfds")
    assert build(dummy_dir(), out, CONFIG, progress=False) == out / "almasim" / CONFIG / "1.0.0"
    return out


@pytest.fixture(scope="module")
def source(data_dir):
    import tensorflow_datasets as tfds

    return tfds.data_source(f"almasim/{CONFIG}", data_dir=data_dir)


def test_split_sizes_are_60_20_20_and_seeded():
    from dfjax.datasets.almasim.almasim_dataset_builder import split_indices

    for n, sizes in ((3, (1, 1, 1)), (4, (2, 1, 1)), (20, (12, 4, 4)), (5000, (3000, 1000, 1000))):
        splits = split_indices(n, seed=0)
        assert tuple(len(s) for s in splits.values()) == sizes
        assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(n))
    a, b, c = split_indices(20, seed=0), split_indices(20, seed=0), split_indices(20, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["test"], c["test"])
    with pytest.raises(ValueError, match="at least 3"):
        split_indices(2, seed=0)


def test_builder_expects_the_simulators_output_version():
    from dfjax.datasets.almasim.almasim_dataset_builder import SIM_VERSION, Builder
    from sim.generate import VERSION

    assert SIM_VERSION == VERSION, "simulator output changed: bump Builder.VERSION and SIM_VERSION"
    assert str(Builder.VERSION) in Builder.RELEASE_NOTES


def test_splits_and_feature_shapes(source):
    assert {k: len(v) for k, v in source.items()} == {"train": 1, "validation": 1, "test": 1}
    indices = sorted(int(source[s][0]["cube_index"]) for s in source)
    assert indices == [0, 1, 2]
    ex = source["train"][0]
    record = read_cube_record(dummy_dir() / "cube_00000.fits", dummy_dir() / "sky_00000.fits")
    assert set(ex) == set(record)
    for key, shape in SHAPES.items():
        assert ex[key].shape == shape, key
    for key, dtype in DTYPES.items():
        assert ex[key].dtype == dtype, key
    assert ex["catalogue"].shape[1] == len(CATALOGUE_FIELDS) and len(ex["catalogue"]) >= 3


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_round_trip_through_the_dataset(source, split):
    ex = source[split][0]
    i = int(ex["cube_index"])
    cube, sky = dummy_dir() / f"cube_{i:05d}.fits", dummy_dir() / f"sky_{i:05d}.fits"
    dirty_jy, sky_jy = (fits.getdata(p)[0].astype(np.float32) for p in (cube, sky))
    for key, jy in (("dirty_cube", dirty_jy), ("sky_cube", sky_jy)):
        mjy = jy * np.float32(FLUX_SCALE)
        np.testing.assert_array_equal(ex[key], mjy.astype(np.float16))  # exactly the float16 cast
        np.testing.assert_allclose(ex[key].astype(np.float32), mjy, rtol=FLOAT16_RTOL, atol=6e-8)
    exact = read_cube_record(cube, sky, dtype=np.float32)
    for key in ("integrated_dirty", "integrated_sky", "beam", "noise_rms", "target_snr", "cell_arcsec",
                "ra_deg", "dec_deg", "freq0_hz", "dfreq_hz", "seed", "cube_index"):  # fmt: skip
        np.testing.assert_array_equal(ex[key], exact[key], err_msg=key)
    np.testing.assert_allclose(ex["integrated_dirty"], dirty_jy.sum(0) * FLUX_SCALE, rtol=1e-5, atol=1e-6)
    assert ex["antenna_config"].decode() == fits.getheader(cube)["ANTCFG"]
    rows = Table.read(cube, hdu="SOURCES")
    want = np.stack([np.asarray(rows[f], np.float32) for f in CATALOGUE_FIELDS], axis=1)
    np.testing.assert_array_equal(ex["catalogue"], want)


def test_reads_in_a_process_without_tensorflow(data_dir):
    script = textwrap.dedent(f"""
        import importlib.util, sys
        assert importlib.util.find_spec("tensorflow") is None
        import tensorflow_datasets as tfds
        ds = tfds.data_source("almasim/{CONFIG}", data_dir={str(data_dir)!r})
        ex = ds["train"][0]
        assert ex["dirty_cube"].shape == (16, 32, 32) and "tensorflow" not in sys.modules
        print("ok", len(ds["train"]) + len(ds["validation"]) + len(ds["test"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["ok", "3"]


def _truncate(d: Path) -> str:
    with open(d / "cube_00001.fits", "r+b") as f:
        f.truncate(20000)
    return "cube_00001.fits"


def _wrong_simvers(d: Path) -> str:
    fits.setval(d / "cube_00002.fits", "SIMVERS", value="9.9.9")
    return "cube_00002.fits"


def _row_for_missing_cube(d: Path) -> str:
    lines = (d / "catalogue.csv").read_text().splitlines()
    (d / "catalogue.csv").write_text("\n".join([*lines, "3" + lines[-1][lines[-1].index(","):]]) + "\n")
    return "cube_00003.fits"


def _no_bmaj(d: Path) -> str:  # found while writing the examples, not in the checks before
    with fits.open(d / "cube_00002.fits", mode="update") as hdul:
        del hdul[0].header["BMAJ"]
    return "cube_00002.fits"


BAD_INPUTS = {
    "missing cube": lambda d: (d / "cube_00001.fits").unlink() or "cube_00001.fits",
    "missing sky": lambda d: (d / "sky_00000.fits").unlink() or "sky_00000.fits",
    "missing catalogue": lambda d: (d / "catalogue.csv").unlink() or "catalogue.csv",
    "truncated cube": _truncate,
    "not FITS": lambda d: (d / "sky_00001.fits").write_text("hello") and "sky_00001.fits",
    "row for missing cube": _row_for_missing_cube,
    "wrong SIMVERS": _wrong_simvers,
    "header lacks BMAJ": _no_bmaj,
}


@pytest.mark.parametrize("break_it", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, break_it):
    sim_dir = shutil.copytree(dummy_dir(), tmp_path / "sim")
    name = break_it(sim_dir)
    out = tmp_path / "tfds"
    assert main(["--sim-dir", str(sim_dir), "--data-dir", str(out), "--builder-config", CONFIG, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m dfjax.datasets.almasim: error: ") and name in err[0], err
    assert not out.exists()


def test_cube_shape_must_match_the_config(tmp_path, capsys):
    out = tmp_path / "tfds"
    assert main(["--sim-dir", str(dummy_dir()), "--data-dir", str(out), "--config", "default", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cube_00000.fits" in err and "(16, 32, 32)" in err and "'default'" in err
    assert not out.exists()


def test_failure_keeps_an_existing_dataset(data_dir, tmp_path, capsys):
    sim_dir = shutil.copytree(dummy_dir(), tmp_path / "sim")
    _wrong_simvers(sim_dir)
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    assert main(["--sim-dir", str(sim_dir), "--data-dir", str(data_dir), "--config", CONFIG,
                 "--overwrite", "--quiet"]) == 2  # fmt: skip
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before
    assert main(["--sim-dir", str(dummy_dir()), "--data-dir", str(data_dir), "--config", CONFIG,
                 "--overwrite", "--quiet"]) == 0  # fmt: skip
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before


def test_cli_exit_code_without_traceback(tmp_path):
    sim_dir = shutil.copytree(dummy_dir(), tmp_path / "sim")
    (sim_dir / "cube_00002.fits").unlink()
    out = tmp_path / "tfds"
    cmd = [sys.executable, "-m", "dfjax.datasets.almasim", "--sim-dir", str(sim_dir), "--data-dir", str(out),
           "--config", CONFIG]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "cube_00002.fits: no such file" in done.stderr.splitlines()[-1]
    assert not out.exists()


def test_extra_training_sets_join_the_train_split_only(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import shuffle

    # a split over TFDS's in-memory buffer would spill to disk through TensorFlow, which is not installed
    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1000)
    extra = shutil.copytree(dummy_dir(), tmp_path / "regime")
    out = tmp_path / "tfds"
    assert main(["--sim-dir", str(dummy_dir()), "--data-dir", str(out), "--config", CONFIG,
                 "--extra-train", str(extra), "--quiet"]) == 0  # fmt: skip
    source = tfds.data_source(f"almasim/{CONFIG}", data_dir=out)
    assert {k: len(v) for k, v in source.items()} == {"train": 4, "validation": 1, "test": 1}
    base = build(dummy_dir(), tmp_path / "base", CONFIG, progress=False)
    plain = tfds.data_source(f"almasim/{CONFIG}", data_dir=base.parents[2])
    for split in ("validation", "test"):  # exactly the main set's cubes
        np.testing.assert_array_equal(source[split][0]["dirty_cube"], plain[split][0]["dirty_cube"])
    train = [source["train"][i] for i in range(4)]
    np.testing.assert_array_equal(train[0]["dirty_cube"], plain["train"][0]["dirty_cube"])
    assert [int(ex["cube_index"]) for ex in train[1:]] == [0, 1, 2]  # every cube of the extra set, in order
    for i, ex in enumerate(train[1:]):
        np.testing.assert_array_equal(ex["dirty_cube"], read_cube_record(
            extra / f"cube_{i:05d}.fits", extra / f"sky_{i:05d}.fits")["dirty_cube"])
    assert shuffle.MAX_MEM_BUFFER_SIZE == 1000  # put back


def test_an_empty_extra_training_set_adds_nothing(tmp_path, monkeypatch):
    """A regime with no training cubes (``sim generate --n 0``, params.yaml ``n_cubes: 0``) packages as
    if it were not given; an empty main set stays an error."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import shuffle

    from sim.config import SimConfig
    from sim.generate import generate

    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1000)
    empty = tmp_path / "regime"
    generate(empty, 0, SimConfig(), progress=False)
    assert not list(empty.glob("cube_*.fits")) and (empty / "catalogue.csv").read_text().startswith("cube")
    out = tmp_path / "tfds"
    assert main(["--sim-dir", str(dummy_dir()), "--data-dir", str(out), "--config", CONFIG,
                 "--extra-train", str(empty), "--quiet"]) == 0  # fmt: skip
    source = tfds.data_source(f"almasim/{CONFIG}", data_dir=out)
    assert {k: len(v) for k, v in source.items()} == {"train": 1, "validation": 1, "test": 1}
    assert main(["--sim-dir", str(empty), "--data-dir", str(tmp_path / "none"), "--config", CONFIG, "--quiet"]) == 2


@pytest.mark.parametrize("which", ["the main set again", "a bad cube"])
def test_a_bad_extra_training_set_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, which):
    if which == "a bad cube":
        extra = shutil.copytree(dummy_dir(), tmp_path / "regime")
        name = _truncate(extra)
    else:
        extra, name = dummy_dir(), "--extra-train"
    out = tmp_path / "tfds"
    assert main(["--sim-dir", str(dummy_dir()), "--data-dir", str(out), "--config", CONFIG,
                 "--extra-train", str(extra), "--quiet"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0], err
    assert not out.exists()

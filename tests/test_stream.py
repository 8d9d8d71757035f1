"""The simulator as the input pipeline: seeded, resumable, and example for example what the TFDS path makes."""

from pathlib import Path

import numpy as np
import pytest

from dfjax import input_pipeline as ip
from dfjax import train
from dfjax.input_pipeline import stream
from sim.config import SimConfig
from sim.generate import simulate_cube, simulate_cubes

SIM = SimConfig().replace(**{"cube.size": 32, "cube.channels": 16, "sky.n_serendipitous": [1, 2]})
SIM_SET = {"cube": {"size": 32, "channels": 16}, "sky": {"n_serendipitous": [1, 2]}}
TINY = {
    "blobs_finder": {"image_size": 32, "widths": [4, 4, 4, 4], "latent_features": 16},
    "deep_gru": {"spectrum_length": 16, "hidden_features": 4},
}
DUMMY = Path(__file__).parents[1] / "dfjax" / "datasets" / "almasim" / "dummy_data"


def _kwargs(name: str, augment: bool = False) -> dict:
    return {"crop_size": 32, "augment": augment} if name == "blobs_finder" else {}


def _equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        for key in ("inputs", "targets"):
            assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), key


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """Cubes 0-2 of epoch 3 (seed 1) of the stream, simulated to FITS and packaged by the TFDS builder."""
    from dfjax.datasets.almasim import build
    from sim.generate import generate

    config = stream.for_model("deep_gru", SIM, cubes_per_epoch=3).cube_config(epoch=3, seed=1)
    sim_dir, data_dir = tmp_path_factory.mktemp("sim"), tmp_path_factory.mktemp("tfds")
    generate(sim_dir, 3, config, progress=False)
    build(sim_dir, data_dir, "test", progress=False)
    import tensorflow_datasets as tfds

    sources = tfds.data_source("almasim/test", data_dir=str(data_dir))
    records = {int(r["cube_index"]): r for split in ("train", "validation", "test") for r in sources[split]}
    return [records[i] for i in range(3)]


@pytest.fixture(scope="module")
def dummy_dataset(tmp_path_factory):
    from dfjax.datasets.almasim import build

    data_dir = tmp_path_factory.mktemp("tfds")
    build(DUMMY, data_dir, "test", progress=False)
    return data_dir


@pytest.mark.parametrize("name, augment", [("blobs_finder", False), ("blobs_finder", True), ("deep_gru", False),
                                           ("resnet_pa", False), ("resnet_flux", False)])  # fmt: skip
def test_streamed_examples_equal_the_tfds_examples_of_the_same_cubes(packaged, name, augment):
    data = stream.for_model(name, SIM, cubes_per_epoch=3, **_kwargs(name, augment))
    streamed, expected = [], []
    for i, examples in data.examples_by_cube(epoch=3, seed=1):
        streamed += examples
        family = ip.for_model(name, [packaged[i]], **_kwargs(name, augment))
        rng = data.augment_rng(epoch=3, seed=1, index=i)
        expected += [family.example(k, rng) for k in range(len(family))]
    _equal(streamed, expected)


def test_same_seed_same_batches_and_the_epoch_and_seed_change_them():
    data = stream.for_model("deep_gru", SIM, cubes_per_epoch=3, shuffle_cubes=2)

    def run(epoch, seed):
        return list(data.batches(batch_size=2, epoch=epoch, seed=seed))

    first = run(1, 5)
    assert len(first) >= 2 and first[0]["inputs"].shape == (2, 16) and first[0]["targets"].shape == (2, 16)
    again = run(1, 5)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(first, again, strict=True) for k in a)
    for other in (run(2, 5), run(1, 6)):
        assert not np.array_equal(first[0]["inputs"], other[0]["inputs"])
    unshuffled = list(data.batches(batch_size=1, epoch=1, seed=5, shuffle=False, prefetch=0))
    ordered = [e for _, ex in data.examples_by_cube(epoch=1, seed=5) for e in ex]
    _equal([{k: b[k][0] for k in b} for b in unshuffled], ordered)


def test_batched_simulation_draws_the_same_cubes():
    config = SIM.replace(seed=11)
    one = [simulate_cube(i, config) for i in range(2)]
    both = simulate_cubes(range(2), config)
    for a, b in zip(one, both, strict=True):
        assert np.array_equal(a[0], b[0])  # sky models
        np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-6 * np.abs(a[1]).max())
        assert list(a[3]["x"]) == list(b[3]["x"])
    data = stream.for_model("deep_gru", SIM, cubes_per_epoch=2, sim_batch=2)
    assert [i for i, _ in data.records(epoch=0, seed=0)] == [0, 1]


def test_prefetch_hands_on_the_producers_error():
    def failing():
        yield 1
        raise RuntimeError("simulator broke")

    it = stream._prefetched(failing(), 2)
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="simulator broke"):
        next(it)


def _recording(source, log):
    def batches(split, epoch):
        for x, y in source(split, epoch):
            if split == "train":
                log.append((epoch, x.copy()))
            yield x, y
    return batches


@pytest.mark.slow  # ~15 s: three tiny training runs
def test_a_resumed_run_continues_the_stream(dummy_dataset, tmp_path):
    sets = {"model": TINY["deep_gru"], "batch_size": 2, "data_source": "stream",
            "stream": {"cubes_per_epoch": 2, "sim": SIM_SET}}  # fmt: skip
    straight_cfg = train.parse_config("deep_gru", {**sets, "max_epochs": 2})
    first_cfg = train.parse_config("deep_gru", {**sets, "max_epochs": 1})
    source = lambda cfg: train.stream_batches("deep_gru", cfg, dummy_dataset, "almasim/test")  # noqa: E731
    straight, resumed = [], []
    train.train("deep_gru", straight_cfg, tmp_path / "a", progress=False, batches=_recording(source(straight_cfg), straight))
    train.train("deep_gru", first_cfg, tmp_path / "b", progress=False, batches=_recording(source(first_cfg), resumed))
    train.train("deep_gru", straight_cfg, tmp_path / "b", progress=False, batches=_recording(source(straight_cfg), resumed))
    assert [e for e, _ in resumed] == [e for e, _ in straight] and {e for e, _ in straight} == {0, 1}
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(resumed, straight, strict=True))


@pytest.mark.slow  # ~30 s on 2 loaded cores, most of it compiling Blobs Finder
def test_cli_trains_blobs_finder_from_the_stream(dummy_dataset, tmp_path):
    metrics = train.cli_run([
        "blobs_finder", "--workdir", str(tmp_path), "--no-progress", "--data-dir", str(dummy_dataset),
        "--dataset", "almasim/test", "--set", "data_source=stream", "--set", "stream.cubes_per_epoch=2",
        "--set", "stream.sim.cube.size=32", "--set", "stream.sim.cube.channels=16", "--set", "max_epochs=2",
        "--set", "batch_size=1", "--set", f"model={TINY['blobs_finder']}"])  # fmt: skip
    assert metrics["epochs"] == 2 and metrics["steps"] == 4 and np.isfinite(metrics["best_val_loss"])


def test_stream_config_is_parsed_pedantically(dummy_dataset):
    cfg = train.parse_config("deep_gru", {"stream": {"cubes_per_epoch": 4}}, ["stream.sim.cube.size=32",
                             "stream.sim.cube.channels=16", "data_source=stream"])  # fmt: skip
    assert cfg.stream.cubes_per_epoch == 4 and cfg.stream.sim == {"cube": {"size": 32, "channels": 16}}
    assert train.stream_sim_config(cfg, {"cube": {"size": 64}, "seed": 3}).cube.size == 32
    for sets, words in ((["stream.cubes=4"], "train.stream.cubes: unknown key"),
                        (["stream.sim.cube.sizes=4"], "train.stream.sim.cube.sizes"),
                        (["stream.sim.seed=4"], "seeded from train.seed"),
                        (["stream.sim_batch=0"], "train.stream.sim_batch"),
                        (["data_source=disk"], "train.data_source")):  # fmt: skip
        with pytest.raises(train.ConfigError, match=words):
            train.parse_config("deep_gru", None, sets)
    wrong = train.parse_config("deep_gru", None, ["data_source=stream", "stream.sim.cube.size=48"])
    with pytest.raises(train.ConfigError, match="stream.sim.cube"):
        train.stream_batches("deep_gru", wrong, dummy_dataset, "almasim/test")

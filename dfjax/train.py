"""One trainer for the six DeepFocus models (Sec. 4.5).

Adam with a linear learning-rate warm-up 0 → ``peak_lr`` over the first
``warmup_steps`` iterations (decoupled weight decay when ``weight_decay > 0``:
the Deep GRU's 1e-5); loss l1 (eq. 6) for Deep GRU and the ResNets, the
l1 → DSSIM schedule of eq. 20 for Blobs Finder; early stopping when the
validation loss fails to beat the moving average of the last ``window``
validation losses for ``early_stopping_patience`` consecutive evaluations.
Data parallel over every local device: the batch is sharded on its leading
axis over a 1-D mesh, model and optimizer state are replicated (``jax.jit`` +
``NamedSharding``). Phase 2 (fine-tuning on upstream predictions) is
``train(..., init_from=PHASE1_DIR)`` with another batch source.

Run:  python -m dfjax.train resnet_pa --workdir runs/resnet_pa --synthetic --set max_epochs=2
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from dfjax import checkpoint, losses, models
from sim.cli import CliError, add_config, add_quiet, fail, make_parser, merge, parse_sets, read_yaml, section

Batch = tuple[np.ndarray, np.ndarray]
BatchSource = Callable[[str, int], Iterable[Batch]]
"""``batches(split, epoch)`` → (inputs, targets) numpy batches; split is "train" or
"validation"; the order must be a function of (seed, epoch) only, so resumed runs
see the same data."""
LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "lr", "steps_per_s")


class ConfigError(ValueError):
    """A training configuration value is invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """``data_source: stream``: training cubes simulated on the fly (:mod:`dfjax.input_pipeline.stream`)."""

    cubes_per_epoch: int = 0  # 0: as many as the TFDS train split holds
    shuffle_cubes: int = 16  # the examples of this many consecutive cubes are shuffled together
    sim_batch: int = 1  # cubes observed per vmapped call (observe_batch; > 1 for GPUs)
    # simulator overrides (sim.config keys, e.g. {cube: {size: 32}}) over the `sim` section of
    # --config (params.yaml's) or, without one, sim.config's defaults; the seed comes from `seed`
    sim: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Every default lives here (per-model ones in ``_MODEL_DEFAULTS``)."""

    batch_size: int = 32  # not stated in the paper
    max_epochs: int = 300  # Sec. 4.5; phase 2 of Deep GRU / ResNets: 50
    peak_lr: float = 1e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0  # decoupled (AdamW) when > 0
    early_stopping_patience: int = 10
    window: int = 10  # moving average of the last `window` validation losses
    loss_transition_epochs: int = 0  # eq. 20: epochs for a: 1 → 0; 0 means max_epochs - 1
    seed: int = 0  # model init and (through the batch source) data order and streamed cubes
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # constructor overrides
    data_source: str = "tfds"  # tfds: the packaged train split; stream: simulated on the fly (validation: tfds)
    stream: StreamConfig = dataclasses.field(default_factory=StreamConfig)


_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"deep_gru": {"weight_decay": 1e-5}}


def _coerce(key: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool) or isinstance(value, bool):
        raise ConfigError(f"train.{key}: booleans are not accepted here, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ConfigError(f"train.{key}: expected a string, got {value!r}")
    if isinstance(default, int) and isinstance(value, int):
        return value
    if isinstance(default, float) and isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(default, float) and isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    raise ConfigError(f"train.{key}: expected {type(default).__name__}, got {value!r}")


def parse_config(model_name: str, data: dict[str, Any] | None = None,
                 sets: Sequence[str] = ()) -> TrainConfig:
    """Defaults ← ``data`` (a mapping) ← ``sets`` ("key=value", YAML value; "model.widths=[8,16]").

    Unknown keys raise :class:`ConfigError` naming them, as do model overrides the
    model's constructor rejects.
    """
    if model_name not in models.MODEL_NAMES:
        raise ConfigError(f"unknown model {model_name!r}; valid: {', '.join(models.MODEL_NAMES)}")
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"train: expected a mapping, got {type(data).__name__}")
    try:
        items = list((data or {}).items()) + parse_sets(sets)
    except CliError as exc:
        raise ConfigError(str(exc)) from None
    defaults = TrainConfig()
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {**_MODEL_DEFAULTS.get(model_name, {}), "model": {}}
    stream: dict[str, Any] = {}
    for key, value in items:
        if key == "model" or key.startswith("model."):
            update = value if key == "model" else {key[len("model."):]: value}
            if not isinstance(update, dict):
                raise ConfigError(f"train.model: expected a mapping, got {value!r}")
            values["model"] = {**values["model"], **update}
        elif key == "stream" or key.startswith("stream."):
            for part in reversed(key.split(".")[1:]):  # stream.sim.cube.size=32 → nested mappings
                value = {part: value}
            if not isinstance(value, dict):
                raise ConfigError(f"train.stream: expected a mapping, got {value!r}")
            stream = merge(stream, value)
        elif key in fields:
            values[key] = _coerce(key, fields[key], value)
        else:
            raise ConfigError(f"train.{key}: unknown key (known: {', '.join(fields)})")
    config = TrainConfig(**values, stream=_stream_config(stream))
    _validate(model_name, config)
    return config


def _stream_config(data: dict[str, Any]) -> StreamConfig:
    defaults = StreamConfig()
    known = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(StreamConfig)}
    values = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"train.stream.{key}: unknown key (known: {', '.join(known)})")
        if key == "sim":
            if not isinstance(value, dict):
                raise ConfigError(f"train.stream.sim: expected a mapping, got {value!r}")
            values[key] = value
        else:
            values[key] = _coerce(f"stream.{key}", known[key], value)
    return StreamConfig(**values)


def stream_sim_config(config: TrainConfig, base: dict[str, Any] | None = None) -> Any:
    """The ``sim.config.SimConfig`` of the streamed cubes: ``base`` (a ``sim`` section) ← ``stream.sim``."""
    from sim.config import ConfigError as SimConfigError
    from sim.config import from_dict

    try:
        return from_dict(merge(base or {}, config.stream.sim))
    except SimConfigError as exc:
        raise ConfigError(f"train.stream.{exc}") from None


def _validate(model_name: str, c: TrainConfig) -> None:
    for key in ("batch_size", "max_epochs", "early_stopping_patience", "window"):
        if getattr(c, key) < 1:
            raise ConfigError(f"train.{key}: must be at least 1, got {getattr(c, key)}")
    for key in ("warmup_steps", "loss_transition_epochs", "seed"):
        if getattr(c, key) < 0:
            raise ConfigError(f"train.{key}: must be >= 0, got {getattr(c, key)}")
    if c.peak_lr <= 0 or c.weight_decay < 0:
        raise ConfigError("train.peak_lr must be > 0 and train.weight_decay >= 0")
    if c.data_source not in ("tfds", "stream"):
        raise ConfigError(f"train.data_source: {c.data_source!r} is not tfds or stream")
    if c.stream.cubes_per_epoch < 0:
        raise ConfigError(f"train.stream.cubes_per_epoch: must be >= 0, got {c.stream.cubes_per_epoch}")
    for key in ("shuffle_cubes", "sim_batch"):
        if getattr(c.stream, key) < 1:
            raise ConfigError(f"train.stream.{key}: must be at least 1, got {getattr(c.stream, key)}")
    if "seed" in c.stream.sim:
        raise ConfigError("train.stream.sim.seed: the streamed cubes are seeded from train.seed")
    stream_sim_config(c)  # unknown or invalid simulator keys
    if model_name == "blobs_finder" and c.loss_transition_epochs == 0 and c.max_epochs < 2:
        raise ConfigError("train.max_epochs: Blobs Finder's eq. 20 schedule needs at least 2")
    try:
        checkpoint.abstract_model(model_name, c.model)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"train.model: {e}") from None


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Sec. 4.5's rule: stop after ``patience`` consecutive evaluations that fail to
    beat the mean of the previous ``window`` validation losses (the first one always
    improves). Immutable: ``update`` returns the next state."""

    patience: int = 10
    window: int = 10
    history: tuple[float, ...] = ()  # the last `window` validation losses
    bad_evaluations: int = 0

    def update(self, val_loss: float) -> EarlyStopping:
        recent = self.history[-self.window:]
        improved = not recent or val_loss < sum(recent) / len(recent)
        return dataclasses.replace(
            self, history=(*recent, float(val_loss))[-self.window:],
            bad_evaluations=0 if improved else self.bad_evaluations + 1)

    @property
    def should_stop(self) -> bool:
        return self.bad_evaluations >= self.patience


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """0 → ``peak_lr`` linearly over ``warmup_steps`` optimizer steps, then constant."""
    if config.warmup_steps == 0:
        return optax.constant_schedule(config.peak_lr)
    return optax.linear_schedule(0.0, config.peak_lr, config.warmup_steps)


def make_optimizer(model: nnx.Module, config: TrainConfig) -> nnx.Optimizer:
    """Adam (AdamW when ``weight_decay > 0``) on the model's ``nnx.Param``s."""
    lr = learning_rate_schedule(config)
    wd = config.weight_decay
    tx = optax.adamw(lr, weight_decay=wd) if wd > 0 else optax.adam(lr)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def make_loss(model_name: str, config: TrainConfig) -> LossFn:
    """``loss(pred, target, epoch)`` → scalar: eq. 20 for Blobs Finder, l1 (eq. 6) otherwise."""
    if model_name == "blobs_finder":
        transition = config.loss_transition_epochs or None
        return lambda p, t, epoch: losses.blobs_finder_loss(
            p, t, epoch=epoch, num_epochs=config.max_epochs, transition_epochs=transition)
    return lambda p, t, epoch: losses.l1(p, t)


def make_validation_loss(model_name: str, config: TrainConfig) -> LossFn:
    """The criterion for validation, early stopping and the best checkpoint: fixed across
    epochs. For Blobs Finder that is DSSIM, the end point of eq. 20 (its training loss moves
    weight from l1 to DSSIM each epoch, so its value is not comparable between epochs)."""
    if model_name == "blobs_finder":
        return lambda p, t, epoch: jnp.mean(losses.dssim(p, t))
    return make_loss(model_name, config)


class DataParallel:
    """A 1-D ``data`` mesh over ``devices`` (default: all): shard batches, replicate state."""

    def __init__(self, devices: Sequence[jax.Device] | None = None):
        self.mesh = Mesh(np.asarray(list(devices or jax.devices())), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.sharded = NamedSharding(self.mesh, PartitionSpec("data"))

    def shard(self, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
        """Place arrays split along axis 0 over the mesh; sizes must divide evenly."""
        n = self.mesh.size
        for a in arrays:
            if a.shape[0] % n:
                raise ValueError(
                    f"batch size {a.shape[0]} is not divisible by the {n} devices in use")
        return tuple(jax.device_put(arrays, self.sharded))

    def replicate(self, tree: Any) -> Any:
        return jax.device_put(tree, self.replicated)


def train_step(model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array,
               epoch: jax.Array, loss_fn: Callable) -> jax.Array:
    """One optimizer update on (x, y); returns the batch loss."""
    loss, grads = nnx.value_and_grad(lambda m: loss_fn(m(x), y, epoch))(model)
    optimizer.update(model, grads)
    return loss


def make_steps(model: nnx.Module, optimizer: nnx.Optimizer, loss_fn: Callable, dp: DataParallel,
               val_loss_fn: Callable | None = None):  # fmt: skip
    """Compiled ``(train, evaluate)`` on the split state ``nnx.state((model, optimizer))``;
    ``evaluate`` uses ``val_loss_fn`` (default: the training loss).

    ``train(state, x, y, epoch) → (state, loss)``; ``evaluate(state, x, y, epoch) → loss``.
    ``jax.jit`` on the split state instead of ``nnx.jit``: no per-call graph traversal
    (30 ms → 1.6 ms per step for ``ResNetTiny`` on CPU).
    """
    model.train()
    train_def, _ = nnx.split((model, optimizer))
    model.eval()
    eval_def, _ = nnx.split((model, optimizer))
    donate = (0,) if dp.mesh.devices.flat[0].platform != "cpu" else ()

    @functools.partial(jax.jit, donate_argnums=donate, out_shardings=dp.replicated)
    def train(state, x, y, epoch):
        m, opt = nnx.merge(train_def, state)
        loss = train_step(m, opt, x, y, epoch, loss_fn)
        return nnx.state((m, opt)), loss

    @functools.partial(jax.jit, out_shardings=dp.replicated)
    def evaluate(state, x, y, epoch):
        m, _ = nnx.merge(eval_def, state)
        return (val_loss_fn or loss_fn)(m(x), y, epoch)

    return train, evaluate


def _log_rows(file: Path, start_epoch: int) -> list[str]:
    """Earlier rows of the TSV log (epochs before ``start_epoch``), for resumed runs."""
    if not file.is_file():
        return []
    return [r for r in file.read_text().splitlines()[1:] if int(r.split("\t")[0]) < start_epoch]


def train(model_name: str, config: TrainConfig, workdir: str | Path, *, batches: BatchSource,
          init_from: str | Path | None = None, devices: Sequence[jax.Device] | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train ``model_name`` into ``workdir``; resume from its latest checkpoint if any.

    ``init_from`` (phase 2): start from the best checkpoint of another run of the
    same model (parameters only; fresh optimizer, warm-up and early stopping).
    Writes ``checkpoints/``, ``metrics/train_log.tsv`` and ``metrics.json``;
    returns the content of the latter.
    """
    workdir = Path(workdir)
    ckpt_dir = workdir / checkpoint.CHECKPOINT_SUBDIR
    overrides = json.loads(json.dumps(config.model))  # tuples → lists, as stored
    model_config = {"model": model_name, "overrides": overrides,
                    "train": dataclasses.asdict(config)}
    dp = DataParallel(devices)
    model = models.create(model_name, rngs=nnx.Rngs(config.seed),
                          **checkpoint.constructor_args(config.model))
    optimizer = make_optimizer(model, config)
    schedule = learning_rate_schedule(config)
    meta: dict[str, Any] = {"epoch": 0, "step": 0, "seed": config.seed, "wall_time_s": 0.0,
                            "best_val_loss": math.inf, "best_epoch": -1, "stopped_early": False,
                            "early_stopping": dataclasses.asdict(EarlyStopping(
                                config.early_stopping_patience, config.window))}
    ckpt = checkpoint.Checkpointer(ckpt_dir)
    if ckpt.latest_step() is not None:
        saved = checkpoint.read_model_config(ckpt_dir)
        if (saved["model"], saved["overrides"]) != (model_name, overrides):
            raise ValueError(f"{ckpt_dir} holds {saved['model']} {saved['overrides']}, "
                             f"not {model_name} {overrides}; use another workdir")
        meta = ckpt.restore(ckpt.latest_step(), model=model, optimizer=optimizer)
        if meta["seed"] != config.seed:
            raise ValueError(f"cannot resume seed {meta['seed']} run with seed {config.seed}")
    elif init_from is not None:
        source = checkpoint.read_model_config(init_from)
        if (source["model"], source["overrides"]) != (model_name, overrides):
            raise ValueError(f"init_from holds {source['model']} {source['overrides']}, "
                             f"not {model_name} {overrides}")
        with checkpoint.Checkpointer(checkpoint.checkpoint_dir(init_from), read_only=True) as src:
            src.restore(src.best_step(), model=model)
        model_config["init_from"] = str(Path(init_from).absolute())
    checkpoint.write_model_config(ckpt_dir, model_config)

    stopper = EarlyStopping(**{**meta["early_stopping"],
                               "history": tuple(meta["early_stopping"]["history"])})
    step, start_epoch = meta["step"], meta["epoch"]
    log_file = workdir / "metrics" / "train_log.tsv"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(LOG_COLUMNS), *_log_rows(log_file, start_epoch)]
    log_file.write_text("\n".join(rows) + "\n")

    train_fn, eval_fn = make_steps(model, optimizer, make_loss(model_name, config), dp,
                                   make_validation_loss(model_name, config))  # fmt: skip
    state = dp.replicate(nnx.state((model, optimizer)))
    for epoch in range(start_epoch, config.max_epochs):
        if meta["stopped_early"]:
            break
        t0 = time.perf_counter()
        epoch_arr = jnp.asarray(epoch, jnp.int32)
        train_losses = []
        bar = tqdm(batches("train", epoch), desc=f"{model_name} epoch {epoch}",
                   disable=not progress, unit="step", leave=False)
        for x, y in bar:
            state, loss = train_fn(state, *dp.shard(x, y), epoch_arr)
            train_losses.append(loss)
            step += 1
            if len(train_losses) % 10 == 1:
                bar.set_postfix(loss=f"{float(loss):.4g}")
        if not train_losses:
            raise ValueError(f"batch source yielded no training batches for epoch {epoch}")
        train_loss = float(np.mean(jax.device_get(train_losses)))
        train_time = time.perf_counter() - t0
        val_sum, val_count = 0.0, 0
        for x, y in batches("validation", epoch):
            val_sum += float(eval_fn(state, *dp.shard(x, y), epoch_arr)) * len(x)
            val_count += len(x)
        if not val_count:
            raise ValueError(f"batch source yielded no validation batches for epoch {epoch}")
        val_loss = val_sum / val_count
        stopper = stopper.update(val_loss)
        if val_loss < meta["best_val_loss"]:
            meta.update(best_val_loss=val_loss, best_epoch=epoch)
        meta.update(epoch=epoch + 1, step=step, stopped_early=stopper.should_stop,
                    early_stopping=dataclasses.asdict(stopper),
                    wall_time_s=meta["wall_time_s"] + time.perf_counter() - t0)
        nnx.update((model, optimizer), state)
        ckpt.save(step, model=model, optimizer=optimizer, meta=meta, val_loss=val_loss)
        row = (epoch, step, train_loss, val_loss, float(schedule(step - 1)),
               len(train_losses) / train_time)
        with log_file.open("a") as f:
            f.write("\t".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")
        if progress:
            tqdm.write(f"{model_name} epoch {epoch}: train {train_loss:.4g} val {val_loss:.4g} "
                       f"({row[-1]:.2f} steps/s)")
    ckpt.close()
    metrics = {key: meta[key] for key in ("best_val_loss", "best_epoch", "stopped_early", "wall_time_s")}
    metrics.update(epochs=meta["epoch"], steps=meta["step"], devices=dp.mesh.size)
    (workdir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def input_shapes(model_name: str, config: TrainConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-example (input, target) shapes of ``model_name`` under ``config.model``."""
    model = checkpoint.abstract_model(model_name, config.model)
    if model_name == "blobs_finder":
        side = model.image_size
        return (side, side, model.in_features), (side, side, 1)
    if model_name == "deep_gru":
        return (model.spectrum_length,), (model.spectrum_length,)
    return (64, 64, model.in_features), ()


def synthetic_batches(model_name: str, config: TrainConfig, *, num_train: int = 64,
                      num_val: int = 32) -> BatchSource:
    """Random data with the model's shapes (targets in [0, 1]); order from (seed, epoch)."""
    x_shape, y_shape = input_shapes(model_name, config)
    rng = np.random.default_rng(config.seed)
    data = {split: (rng.random((n, *x_shape), np.float32), rng.random((n, *y_shape), np.float32))
            for split, n in (("train", num_train), ("validation", num_val))}

    def batches(split: str, epoch: int) -> Iterable[Batch]:
        x, y = data[split]
        order = np.random.default_rng([config.seed, epoch]).permutation(len(x))
        for i in range(0, len(x) - config.batch_size + 1, config.batch_size):
            idx = order[i:i + config.batch_size]
            yield x[idx], y[idx]

    return batches


def _tfds_sources(data_dir: str | os.PathLike, dataset: str) -> dict[str, Any]:
    import tensorflow_datasets as tfds

    if not (Path(data_dir) / dataset).is_dir():
        raise ConfigError(f"{Path(data_dir) / dataset}: no such dataset; build it with "
                          f"python -m dfjax.datasets.almasim --sim-dir DIR --data-dir {data_dir}")  # fmt: skip
    return tfds.data_source(dataset, data_dir=str(data_dir))


def _family_kwargs(model_name: str, config: TrainConfig, split: str) -> dict[str, Any]:
    """Options of the model's data family that the trainer sets (Blobs Finder: crop, augmentation)."""
    if model_name != "blobs_finder":
        return {}
    model = checkpoint.abstract_model(model_name, config.model)
    return {"crop_size": model.image_size, "augment": split == "train"}


def dataset_batches(model_name: str, config: TrainConfig, data_dir: str | os.PathLike,
                    dataset: str = "almasim/default", upstream: dict[str, Path] | None = None,
                    progress: bool = True, *, splits: Sequence[str] = ("train", "validation")) -> BatchSource:  # fmt: skip
    """Batches of the almasim TFDS dataset through ``dfjax.input_pipeline``: from the truth
    catalogue (phase 1), or with ``upstream`` ({model name: workdir}) from the boxes the trained
    upstream models predict (phase 2, ``dfjax.phase2``). Training batches are shuffled and
    augmented from (seed, epoch); validation batches come in a fixed order, unaugmented.
    Only ``splits`` are opened."""
    from dfjax import input_pipeline

    sources = _tfds_sources(data_dir, dataset)
    if upstream:
        from dfjax import phase2

        missing = [name for name in phase2.upstream_models(model_name) if name not in upstream]
        if missing:
            raise ConfigError(f"--upstream: phase 2 of {model_name} needs {', '.join(missing)}")
    families = {}
    for split in splits:
        kwargs: dict[str, Any] = _family_kwargs(model_name, config, split)
        if upstream:
            kwargs["boxes"] = phase2.predicted_boxes(
                sources[split], blobs_finder_dir=upstream["blobs_finder"],
                deep_gru_dir=upstream.get("deep_gru") if model_name.startswith("resnet_") else None,
                progress=progress)  # fmt: skip
        families[split] = input_pipeline.for_model(model_name, sources[split], **kwargs)

    def batches(split: str, epoch: int) -> Iterable[Batch]:
        for batch in families[split].batches(batch_size=config.batch_size, epoch=epoch, seed=config.seed,
                                             shuffle=split == "train"):  # fmt: skip
            yield batch["inputs"], batch["targets"]

    return batches


def stream_batches(model_name: str, config: TrainConfig, data_dir: str | os.PathLike,
                   dataset: str = "almasim/default", *, sim_base: dict[str, Any] | None = None) -> BatchSource:  # fmt: skip
    """Training batches simulated on the fly (:mod:`dfjax.input_pipeline.stream`, ``config.stream``;
    cubes from (seed, epoch, index)), validation batches from the TFDS dataset's fixed split.
    ``sim_base``: the ``sim`` section the ``stream.sim`` overrides apply to. The streamed cubes
    must have the shape of the dataset's."""
    from dfjax.input_pipeline import stream

    sim_config = stream_sim_config(config, sim_base)
    if sim_config.backend != "fast":
        raise ConfigError(f"train.stream.sim.backend: the stream needs the fast backend, not {sim_config.backend!r}")
    sources = _tfds_sources(data_dir, dataset)
    want = tuple(sources["validation"][0]["dirty_cube"].shape)
    got = (sim_config.cube.channels, sim_config.cube.size, sim_config.cube.size)
    if got != want:
        raise ConfigError(f"train.stream.sim.cube: streamed cubes would be (z, y, x) = {got} but {dataset}'s are "
                          f"{want}; set stream.sim.cube.size and .channels (or pass the set's --config)")  # fmt: skip
    validation = dataset_batches(model_name, config, data_dir, dataset, splits=("validation",))
    data = stream.for_model(model_name, sim_config,
                            cubes_per_epoch=config.stream.cubes_per_epoch or len(sources["train"]),
                            shuffle_cubes=config.stream.shuffle_cubes, sim_batch=config.stream.sim_batch,
                            **_family_kwargs(model_name, config, "train"))  # fmt: skip

    def batches(split: str, epoch: int) -> Iterable[Batch]:
        if split != "train":
            yield from validation(split, epoch)
            return
        for batch in data.batches(batch_size=config.batch_size, epoch=epoch, seed=config.seed):
            yield batch["inputs"], batch["targets"]

    return batches


def copy_report(workdir: str | Path, report_dir: str | Path) -> None:
    """Copy a run's ``metrics.json`` and ``train_log.tsv`` into ``report_dir`` (temp file + rename)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    for source in (Path(workdir) / "metrics.json", Path(workdir) / "metrics" / "train_log.tsv"):
        tmp = report_dir / f".{source.name}.tmp"
        tmp.write_bytes(source.read_bytes())
        os.replace(tmp, report_dir / source.name)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dfjax.train MODEL --workdir DIR [--config FILE] [--set key=value ...]``; bad input: exit 2."""
    cli_run(argv)


def cli_run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What :func:`main` does, returning the run's metrics (``metrics.json``); bad input: exit 2."""
    parser = make_parser("python -m dfjax.train", __doc__.split("\n")[0], [
        "python -m dfjax.train resnet_pa --workdir runs/resnet_pa --synthetic --set max_epochs=2",
        "python -m dfjax.train blobs_finder --workdir models/blobs_finder --config params.yaml "
        "--section train.blobs_finder",
        "python -m dfjax.train deep_gru --workdir runs/gru_stream --config params.yaml --section train.deep_gru "
        "--set data_source=stream --set stream.cubes_per_epoch=200",
        "python -m dfjax.train deep_gru --workdir models/deep_gru --init-from runs/deep_gru "
        "--upstream blobs_finder=models/blobs_finder --config params.yaml --section train.deep_gru "
        "--section train.finetune"])  # fmt: skip
    parser.add_argument("model", choices=models.MODEL_NAMES, help="which of the six models")
    parser.add_argument("--workdir", required=True, type=Path, help="run directory: checkpoints, logs, metrics")
    add_config(parser, "the mapping named by --section (TrainConfig keys; with data_source=stream its top-level "
               "`sim` section is the streamed cubes' configuration)", example="max_epochs=2")
    parser.add_argument("--section", action="append", default=None,
                        help="dotted key of the mapping to read from --config (default: train; e.g. "
                             "train.blobs_finder in params.yaml); repeat to merge several, later keys "
                             "winning (phase 2: --section train.deep_gru --section train.finetune)")  # fmt: skip
    parser.add_argument("--report-dir", type=Path,
                        help="also copy metrics.json and train_log.tsv here (DVC metrics and plots)")
    parser.add_argument("--init-from", type=Path, help="phase-1 run to fine-tune (phase 2)")
    parser.add_argument("--data-dir", default="data/tfds", help="TFDS data directory")
    parser.add_argument("--dataset", default="almasim/default", help="TFDS dataset name/config")
    parser.add_argument("--upstream", action="append", default=[], metavar="MODEL=WORKDIR",
                        help="phase 2: train on the predictions of these trained models "
                             "(deep_gru: blobs_finder; resnets: blobs_finder and deep_gru)")  # fmt: skip
    parser.add_argument("--synthetic", action="store_true", help="random data: smoke run")
    add_quiet(parser)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ConfigError, CliError) as exc:
        fail(parser.prog, exc)


def _run(args: Any) -> dict[str, Any]:
    """Read the config, train, copy the report: what :func:`main` does once the flags are parsed."""
    data, sim_base = None, None
    if args.config is not None:
        content = read_yaml(args.config)
        sim_base = content.get("sim") if isinstance(content, dict) else None
        data = {}
        for name in args.section or ["train"]:
            node = section(content, name, path=args.config, required=True)
            model = {**data.get("model", {}), **node.get("model", {})}
            stream = merge(data.get("stream", {}), node.get("stream", {}))
            data = {**data, **node} | ({"model": model} if model else {}) | ({"stream": stream} if stream else {})
    config = parse_config(args.model, data, args.sets)
    upstream = {}
    for item in args.upstream:
        name, sep, path = item.partition("=")
        if not sep or name not in models.MODEL_NAMES or not Path(path).is_dir():
            raise ConfigError(f"--upstream: expected MODEL=WORKDIR of a trained model, got {item!r}")
        upstream[name] = Path(path)
    if config.data_source == "stream" and (args.synthetic or upstream):
        raise ConfigError("train.data_source=stream: not with --synthetic or --upstream (phase 2 trains on the records)")
    if args.synthetic:
        batches = synthetic_batches(args.model, config)
    elif config.data_source == "stream":
        batches = stream_batches(args.model, config, args.data_dir, args.dataset,
                                 sim_base=sim_base if isinstance(sim_base, dict) else None)  # fmt: skip
    else:
        batches = dataset_batches(args.model, config, args.data_dir, args.dataset, upstream or None,
                                  progress=not args.quiet)  # fmt: skip
    metrics = train(args.model, config, args.workdir, batches=batches,
                    init_from=args.init_from, progress=not args.quiet)
    if args.report_dir is not None:
        copy_report(args.workdir, args.report_dir)
    print(json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main()

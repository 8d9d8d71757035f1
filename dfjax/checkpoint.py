"""Checkpoints: the one module that talks to orbax.

A run's checkpoint directory holds ``model.json`` (model name, constructor
overrides, training config) and orbax step directories, each with three items:
``model`` (``nnx.state`` of the model: parameters and batch statistics),
``optimizer`` (``nnx.state`` of the ``nnx.Optimizer``) and ``meta`` (JSON: epoch,
step, early-stopping state, ...). The manager keeps the latest step and the
step with the lowest validation loss.

Restoring always goes through an abstract state built with ``nnx.eval_shape``:
abstract state → ``restore`` → ``nnx.update``. Inference code loads a trained
model with :func:`load_model` (and reads its sizes with :func:`saved_arguments`,
building nothing); this module never imports ``dfjax.train``. Opening a
checkpoint read-only does not log orbax's "Given directory is read only" warning
(DVC links trained models read-only: it would print once per model, every run).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import jax
import orbax.checkpoint as ocp
from flax import nnx

from dfjax import models

MODEL_FILE = "model.json"
"""Model name, constructor overrides and training config, next to the step directories."""
CHECKPOINT_SUBDIR = "checkpoints"
"""Where a training workdir keeps its checkpoints."""
VAL_LOSS = "val_loss"


def _val_loss(metrics: dict[str, float]) -> float:
    return metrics[VAL_LOSS]


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory of ``path``: a training workdir or the directory itself."""
    path = Path(path).absolute()
    return path / CHECKPOINT_SUBDIR if (path / CHECKPOINT_SUBDIR).is_dir() else path


def write_model_config(directory: str | Path, config: dict[str, Any]) -> None:
    """Write ``config`` (must hold ``model`` and ``overrides``) as ``MODEL_FILE`` in ``directory``."""
    if "model" not in config or "overrides" not in config:
        raise ValueError("model config needs 'model' and 'overrides' keys")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_model_config(directory: str | Path) -> dict[str, Any]:
    """Read ``MODEL_FILE`` of a checkpoint directory (or a workdir holding one)."""
    file = checkpoint_dir(directory) / MODEL_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no {MODEL_FILE} in {file.parent}: not a dfjax checkpoint")
    return json.loads(file.read_text())


def constructor_args(overrides: dict[str, Any]) -> dict[str, Any]:
    """Stored overrides → constructor keywords: JSON lists back to tuples (widths, ...)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}


def saved_arguments(path: str | Path) -> dict[str, Any]:
    """The constructor keywords of a saved model, defaults included, read from ``MODEL_FILE``; builds nothing."""
    config = read_model_config(path)
    return {**_defaults(models.factory(config["model"])), **constructor_args(config.get("overrides") or {})}


def _defaults(factory: Any) -> dict[str, Any]:
    """Keyword defaults of a model class's ``__init__``, under those of any ``functools.partial`` around it."""
    keywords: dict[str, Any] = {}
    while isinstance(factory, functools.partial):
        keywords = {**factory.keywords, **keywords}
        factory = factory.func
    init = factory.__init__ if isinstance(factory, type) else factory  # nnx.Module hides it from inspect
    parameters = inspect.signature(init).parameters.items()
    return {**{k: p.default for k, p in parameters if p.default is not inspect.Parameter.empty}, **keywords}


def abstract_model(name: str, overrides: dict[str, Any]) -> nnx.Module:
    """``models.create(name, **overrides)`` with ShapeDtypeStruct leaves: no memory, no compute."""
    return nnx.eval_shape(
        lambda: models.create(name, rngs=nnx.Rngs(0), **constructor_args(overrides)))


def _abstract_pure(node: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(nnx.state(node)))


def _update_from_pure(node: Any, pure: Any) -> None:
    state = nnx.state(node)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(node, state)


class _DropReadOnlyNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


@contextlib.contextmanager
def _quiet_read_only() -> Iterator[None]:
    """Drop orbax's read-only notice (absl logger) while a read-only manager opens; nothing else."""
    absl_logger, notice = logging.getLogger("absl"), _DropReadOnlyNotice()
    absl_logger.addFilter(notice)
    try:
        yield
    finally:
        absl_logger.removeFilter(notice)


class Checkpointer:
    """Save and restore (model, optimizer, meta) per step; keeps the latest and the best."""

    def __init__(self, directory: str | Path, *, read_only: bool = False):
        self.directory = Path(directory).absolute()
        policy = ocp.checkpoint_managers.AnyPreservationPolicy([
            ocp.checkpoint_managers.LatestN(n=1),
            ocp.checkpoint_managers.BestN(get_metric_fn=_val_loss, reverse=True, n=1),
        ])
        options = ocp.CheckpointManagerOptions(
            best_fn=_val_loss, best_mode="min", preservation_policy=policy,
            read_only=read_only, create=not read_only, enable_async_checkpointing=False,
            save_interval_steps=0 if read_only else 1)
        with _quiet_read_only() if read_only else contextlib.nullcontext():
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, *, model: nnx.Module, optimizer: nnx.Optimizer,
             meta: dict[str, Any], val_loss: float) -> None:
        """Write step ``step``; ``val_loss`` ranks it for :meth:`best_step`."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model))),
                optimizer=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(optimizer))),
                meta=ocp.args.JsonSave(meta)),
            metrics={VAL_LOSS: float(val_loss)},
            force=True)
        self._manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        return self._manager.best_step()

    def restore(self, step: int | None, *, model: nnx.Module,
                optimizer: nnx.Optimizer | None = None) -> dict[str, Any]:
        """Restore step ``step`` into ``model`` (and ``optimizer``) in place; return its meta.

        ``model``/``optimizer`` may be real or abstract (``nnx.eval_shape``) objects;
        only their structure, shapes and dtypes are used.
        """
        if step is None:
            raise FileNotFoundError(f"no checkpoint steps in {self.directory}")
        items = {"model": ocp.args.StandardRestore(_abstract_pure(model)),
                 "meta": ocp.args.JsonRestore()}
        if optimizer is not None:
            items["optimizer"] = ocp.args.StandardRestore(_abstract_pure(optimizer))
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        _update_from_pure(model, restored["model"])
        if optimizer is not None:
            _update_from_pure(optimizer, restored["optimizer"])
        return dict(restored["meta"])

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_model(path: str | Path, *, which: str = "best") -> tuple[nnx.Module, dict[str, Any]]:
    """Load a trained model from a workdir or checkpoint directory: (model in eval mode, config).

    ``which`` is ``"best"`` (lowest validation loss) or ``"latest"``; ``config`` is the
    content of ``MODEL_FILE`` (``model``, ``overrides``, ``train``) plus ``step``.
    """
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    directory = checkpoint_dir(path)
    config = read_model_config(directory)
    model = abstract_model(config["model"], config["overrides"])
    with Checkpointer(directory, read_only=True) as ckpt:
        step = ckpt.best_step() if which == "best" else ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint steps in {directory}")
        ckpt.restore(step, model=model)
    model.eval()
    return model, {**config, "step": step}

"""Run the trained pipeline on real cubes: ``python -m dfjax.infer CUBE.fits [CUBE2.fits ...]``.

Each cube is read with :func:`dfjax.cube_io.read_cube` (any axis order, degenerate Stokes,
FREQ or velocity axis, NaN blanks, scaled to the models' mJy/beam), run through the pipeline
on overlapping windows (:mod:`dfjax.tiling`: any field size, any channel count from half the
Deep GRU's spectrum length up) and written as a catalogue with units (:mod:`dfjax.catalogue_io`):
``CUBE.cat.ecsv`` next to the cube by default, or ``--out``; with several cubes ``--out`` is
a directory receiving ``<cube stem>.cat.<ext>``. ``--plot`` adds ``<cube stem>.cat.png``.
``--reliability`` adds a ``reliability`` column from one more run on the sign-inverted cube
(:mod:`dfjax.reliability`; ``--min-reliability R`` keeps the rows ≥ R); ``--completeness`` injects
model sources and writes ``<cube stem>.completeness.ecsv``/``.png`` (:mod:`dfjax.completeness`).

The pipeline's settings are ``model_dir/pipeline.yaml`` (tuned by ``python -m dfjax.eval.tune``;
the defaults without one) or the ``pipeline:`` section of ``--config FILE``, then each
``--set KEY=VALUE`` (a dotted :class:`~dfjax.pipeline.PipelineConfig` key, YAML value).

Every input is checked before the models are loaded and before anything is written: a bad
cube, a cube with fewer channels than the saved Deep GRU can use (read from its ``model.json``,
no model built), a bad setting, a missing or incompatible model directory or an unwritable
output ends the run with a one-line message and exit status 2, and no file is written. The
models are loaded once. A progress bar counts the cubes and, within a cube, its windows and the stage running.
XLA's compiled programs are kept between runs in ``~/.cache/dfjax/xla`` (:func:`use_compilation_cache`;
``DFJAX_XLA_CACHE=off`` keeps none): only a machine's first run pays for compiling them.

This module never imports training code; the models come from ``Models.load`` of
:mod:`dfjax.pipeline.models` (the six checkpoints that ``dvc repro`` puts in ``models/``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import QTable

from dfjax.catalogue_io import FORMATS, catalogue_table, plot_catalogue, write_atomic, write_catalogue
from dfjax.cube_io import Cube, CubeError, read_cube
from dfjax.products import parse_products, write_products
from dfjax.tiling import OVERLAP, min_channels, run_tiled
from sim.cli import CliError, add_config, add_quiet, fail, make_parser, parse_sets, read_yaml, section

__all__ = ["DEFAULT_MODEL_DIR", "PIPELINE_CONFIG", "InferError", "catalogue_path", "format_for", "infer_cube",
           "infer_files", "main", "model_sizes", "pipeline_config", "saved_sizes", "tuned_config"]

DEFAULT_MODEL_DIR = Path("models")
"""Where ``dvc repro`` puts the six trained models (``models/<name>/``), relative to the working directory."""

PIPELINE_CONFIG = "pipeline.yaml"
"""``model_dir/pipeline.yaml``: the pipeline thresholds tuned on the validation split for these
models (``python -m dfjax.eval.tune``); used when present, the defaults otherwise."""

Loader = Callable[[Path], Any]
Runner = Callable[..., list]


class InferError(ValueError):
    """Inference cannot run on these inputs; the one-line message names the problem."""


def _default_loader(model_dir: Path) -> Any:
    from dfjax.pipeline.models import Models  # imported late: the reader and writers work without JAX

    return Models.load(model_dir)


def _default_runner(beam_area_px: float, psf: Any = None, *, progress: bool = False) -> Runner:
    from dfjax.pipeline.run import run_pipeline

    return functools.partial(run_pipeline, beam_area_px=beam_area_px, psf=psf, progress=progress)


def sibling(cube: Cube, kind: str) -> Path:
    """Where ``kind`` (``psf``, ``pb``) of ``cube`` lies beside it: ``<stem>.<kind>.fits``, or for the
    ALMA pipeline's ``X.pbcor.fits`` its ``X.<kind>.fits``; the first name when neither exists."""
    stem = cube.path.name.split(".fits")[0]
    alma = [f"{stem.removesuffix('.pbcor')}.{kind}.fits"] if stem.endswith(".pbcor") else []
    names = [f"{stem}.{kind}.fits", *alma]
    paths = [cube.path.with_name(name) for name in names]
    return next((path for path in paths if path.is_file()), paths[0])


def is_cleaned(cube: Cube, response: Any = None) -> bool:
    """Whether ``cube`` is a CLEANed product: its header's ``NITER`` > 0, or it is PB-corrected
    (``response.pb_corrected``, :func:`cube_response`), as the archive's products, all cleaned, are."""
    try:
        niter = int(cube.header.get("NITER", 0))
    except (TypeError, ValueError):
        niter = 0
    return niter > 0 or bool(getattr(response, "pb_corrected", False))


@functools.lru_cache(maxsize=1)
def _read_psf(path: Path, mtime_ns: int) -> np.ndarray:
    """The PSF at ``path``, whole (:func:`~dfjax.pipeline.psf.psf_from_file`), read once for the check
    of the arguments and every cube of a batch that shares it (a PSF cube's median channel over
    360² × 128 is a cube's read and a partition); ``mtime_ns``: a rewritten file is read again."""
    from dfjax.pipeline.psf import psf_from_file

    psf = psf_from_file(path)
    psf.setflags(write=False)
    return psf


def read_psf(path: str | Path, half: int) -> np.ndarray:
    """:func:`_read_psf`'s PSF cut to (2·half + 1)²; ``ValueError`` where the file is not a PSF."""
    from dfjax.pipeline.psf import centred

    path = Path(path).resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ValueError(f"{path}: not a readable FITS PSF ({exc.strerror})") from None
    return centred(_read_psf(path, mtime), half)


def cube_psf(cube: Cube, config: Any, psf_file: str | Path | None = None, *, cleaned: bool = False) -> Any:
    """The beam the scene fit sees ``cube`` through (``scene.psf``, :mod:`dfjax.pipeline.psf`): the PSF
    file (``--psf``, or :func:`sibling` ``psf`` with ``auto``), the header's restoring beam (``beam``,
    and with ``auto`` for any ``cleaned`` cube with a beam, a PSF file or not: its sources are the
    CLEAN components seen through that beam alone, while tclean's ``.psf`` beside it is the dirty
    beam), or None — measured on the noise by the pipeline. With the scene fit off, a PSF file or a
    cleaned cube's beam still turns it on (``scene.with_psf``)."""
    scene = getattr(config, "scene", None)
    kind = getattr(scene, "psf", "auto")
    enabled = getattr(scene, "enabled", False)
    if kind == "noise" or not (enabled or (getattr(scene, "with_psf", False) and kind != "beam")):
        return None
    from dfjax.pipeline.psf import beam_psf_image

    half = max(cube.shape[1:]) - 1
    if kind == "auto" and cleaned and cube.beam is not None:
        kind = "beam"
    if kind in ("auto", "file"):
        beside = sibling(cube, "psf")
        path = Path(psf_file) if psf_file is not None else (beside if beside.is_file() else None)
        if path is None and kind == "file":
            raise InferError(f"{cube.path}: scene.psf is 'file' but no --psf was given (nor {beside.name})")
        if path is not None:
            try:
                return read_psf(path, half)
            except (OSError, ValueError) as exc:
                raise InferError(str(exc)) from None
        if not (cleaned and cube.beam is not None):
            return None
    if cube.beam is None:
        raise InferError(f"{cube.path}: scene.psf is 'beam' but the header has no BMAJ/BMIN/BPA or BEAMS table")
    from dfjax.completeness import beam_in_pixels

    beam, _ = beam_in_pixels(cube)
    return beam_psf_image(beam.fwhm_x, beam.fwhm_y, beam.pa, half=half)


def model_sizes(models: Any) -> tuple[int, int]:
    """(crop_size, spectrum_length): Blobs Finder's input side and the Deep GRU's spectrum length."""
    crop = getattr(models, "crop_size", None) or getattr(getattr(models, "blobs_finder", None), "image_size", None)
    length = getattr(models, "spectrum_length", None) or getattr(getattr(models, "deep_gru", None),
                                                                  "spectrum_length", None)
    if crop is None or length is None:
        raise InferError("the models do not state Blobs Finder's image_size and the Deep GRU's spectrum_length")
    return int(crop), int(length)


def saved_sizes(model_dir: str | Path) -> tuple[int, int]:
    """(crop_size, spectrum_length) from the saved ``model.json`` of Blobs Finder and the Deep GRU; builds nothing."""
    from dfjax import checkpoint  # imported late: the reader and writers work without JAX

    model_dir = Path(model_dir)
    try:
        crop = checkpoint.saved_arguments(model_dir / "blobs_finder")["image_size"]
        length = checkpoint.saved_arguments(model_dir / "deep_gru")["spectrum_length"]
    except (ValueError, OSError, KeyError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise InferError(f"model directory {model_dir}: {' '.join(str(message).split())}") from None
    return int(crop), int(length)


def _default_config() -> Any:
    from dfjax.pipeline import PipelineConfig

    return PipelineConfig()


def tuned_config(model_dir: str | Path) -> Any:
    """``model_dir/pipeline.yaml`` as a PipelineConfig, or None without one; InferError if unreadable."""
    from dfjax.pipeline import ConfigError, PipelineConfig

    path = Path(model_dir) / PIPELINE_CONFIG
    if not path.is_file():
        return None
    try:
        return PipelineConfig.from_dict(section(read_yaml(path, flag="tuned settings"), "pipeline", path=path))
    except (CliError, ConfigError) as exc:
        raise InferError(f"{path}: {' '.join(str(exc).split())}") from None


def pipeline_config(model_dir: str | Path, config_file: str | Path | None = None, sets: Sequence[str] = ()) -> Any:
    """``config_file``'s ``pipeline:`` section (else :func:`tuned_config`, else the defaults), then ``sets``."""
    from dfjax.pipeline import ConfigError, PipelineConfig

    try:
        if config_file is not None:
            content = section(read_yaml(config_file), "pipeline", path=config_file, required=True)
            config = PipelineConfig.from_dict(content)
        else:
            config = tuned_config(model_dir) or PipelineConfig()
        overrides = dict(parse_sets(sets, prefix="pipeline"))
        return config.replace(**overrides) if overrides else config
    except (CliError, ConfigError) as exc:
        raise InferError(str(exc)) from None


@functools.lru_cache(maxsize=1)
def _read_pb(path: Path, mtime_ns: int) -> np.ndarray:
    """The PB image at ``path``, read once for every cube of a batch (``mtime_ns``: a rewritten file is read again)."""
    pb = np.squeeze(np.asarray(fits.getdata(path), np.float32))
    pb.setflags(write=False)
    return pb


def cube_pb(cube: Cube, pb_file: str | Path | None = None) -> np.ndarray | None:
    """The cube's primary beam: ``pb_file`` (``--pb``) or :func:`sibling` ``pb`` beside it, (nz, ny, nx)
    or (ny, nx) on the cube's grid, peak 1; None without either. Whether the cube was divided by it
    is the header's ``PBCOR`` or measured (:func:`dfjax.response.field_response`)."""
    beside = sibling(cube, "pb")
    path = Path(pb_file) if pb_file is not None else (beside if beside.is_file() else None)
    if path is None:
        return None
    try:
        pb = _read_pb(path.resolve(), path.stat().st_mtime_ns)
    except (OSError, TypeError, ValueError) as exc:
        raise InferError(f"--pb {path}: not a readable FITS image ({' '.join(str(exc).split())})") from None
    nz, ny, nx = cube.shape
    if pb.shape not in ((ny, nx), (nz, ny, nx)):
        raise InferError(f"--pb {path}: shape {pb.shape}, but the cube is {(nz, ny, nx)} (nz, ny, nx)")
    if not np.nanmax(pb) > 0 or np.nanmax(pb) > 1.5:
        raise InferError(f"--pb {path}: peak {np.nanmax(pb):.3g}; a primary beam peaks at 1")
    return pb


def cube_response(cube: Cube, pb: np.ndarray | None = None) -> Any:
    """The flat-noise view of ``cube`` and the response its fluxes are divided by
    (:func:`dfjax.response.field_response`), or None for a flat-noise cube without a PB. The
    header's ``PBCOR``, else a name with ``.pbcor`` (the ALMA pipeline's products), says whether
    the cube was divided by the PB; without either it is measured."""
    from dfjax.response import field_response

    if "PBCOR" in cube.header:
        corrected = bool(cube.header["PBCOR"])
    else:
        corrected = True if ".pbcor" in cube.path.name.lower() else None
    return field_response(cube.data, pb, pb_corrected=corrected)


def infer_cube(cube: Cube | str | Path, models: Any, config: Any = None, *, runner: Runner | None = None,
               progress: bool = False, psf_file: str | Path | None = None,
               pb_file: str | Path | None = None) -> QTable:  # fmt: skip
    """Catalogue (QTable with units) of one cube: read it if needed, run the pipeline window by window.
    ``psf_file``: the cube's PSF image for the scene fit (:func:`cube_psf`); ``pb_file``: its primary
    beam (:func:`cube_pb`). The pipeline runs on the flat-noise image and the measured fluxes are
    divided by the response at each source (:func:`cube_response`)."""
    cube = cube if isinstance(cube, Cube) else read_cube(cube)
    response = cube_response(cube, cube_pb(cube, pb_file))
    config = _default_config() if config is None else config
    runner = runner or _default_runner(cube.beam_area_px or 1.0, cube_psf(cube, config, psf_file,
                                                                         cleaned=is_cleaned(cube, response)),
                                       progress=progress)  # fmt: skip
    crop_size, spectrum_length = model_sizes(models)
    _check_channels(cube, spectrum_length)
    if hasattr(config, "detect"):
        # step 1 tiles the whole field with crops of the trained model's input side, and steps 2-6
        # then run once per box on the full field (tiling them would repeat every source)
        if not config.detect.tile_overlap:
            config = config.replace(**{"detect.tile_overlap": OVERLAP})
        spatial = max(cube.data.shape[1:])
    else:
        spatial = crop_size  # a stand-in configuration: tile every step
    data, weight = (cube.data, None) if response is None else (response.data, response.weight)
    sources = run_tiled(data, lambda part: runner(part, models, config),
                        crop_size=spatial, spectrum_length=spectrum_length, progress=progress)
    return catalogue_table(cube, sources, pb=weight)


def format_for(out: Path | None) -> str:
    """The catalogue format named by ``out``'s extension (``.vot``/``.xml`` → votable), else ecsv."""
    suffix = out.suffix.lower().lstrip(".") if out is not None else ""
    by_extension = {f.extension: name for name, f in FORMATS.items()} | {"xml": "votable", "votable": "votable"}
    return by_extension.get(suffix, "ecsv")


def catalogue_path(cube_path: Path, out: Path | None, fmt: str, *, batch: bool) -> Path:
    """Where the catalogue of ``cube_path`` goes: next to it, in ``out`` (a directory), or ``out`` itself."""
    stem = cube_path.name
    for suffix in (".gz", ".fits", ".fit", ".fts"):
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    name = f"{stem}.cat.{FORMATS[fmt].extension}"
    if out is None:
        return cube_path.with_name(name)
    if batch or out.is_dir():
        return out / name
    return out


def infer_files(
    cube_paths: Sequence[str | Path],
    *,
    model_dir: str | Path = DEFAULT_MODEL_DIR,
    out: str | Path | None = None,
    fmt: str = "ecsv",
    plot: bool = False,
    config: Any = None,
    config_file: str | Path | None = None,
    sets: Sequence[str] = (),
    loader: Loader | None = None,
    runner: Runner | None = None,
    progress: bool = True,
    reliability: bool = False,
    min_reliability: float | None = None,
    completeness: bool = False,
    completeness_trials: int = 20,
    seed: int = 0,
    products: str | Sequence[str] = (),
    psf: str | Path | None = None,
    pb: str | Path | None = None,
) -> list[Path]:
    """Catalogue each cube; returns the catalogue paths. :class:`InferError`/:class:`CubeError` before any write.

    ``config``: a PipelineConfig; without one, :func:`pipeline_config` of ``config_file`` and ``sets``.
    ``psf``: a PSF image (FITS) the scene fit sees every cube through (:func:`cube_psf`); ``pb``: the
    primary beam (FITS) of every cube (:func:`cube_pb`, :func:`cube_response`).

    ``reliability`` (implied by ``min_reliability``): a ``reliability`` column from one more run on
    −cube (:mod:`dfjax.reliability`), rows below ``min_reliability`` dropped. ``completeness``:
    ``<stem>.completeness.ecsv`` and ``.png`` beside the catalogue from ``completeness_trials``
    injected cubes drawn from ``seed`` (:mod:`dfjax.completeness`).
    """
    if fmt not in FORMATS:
        raise InferError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if min_reliability is not None and not 0.0 <= min_reliability <= 1.0:
        raise InferError(f"--min-reliability {min_reliability}: a reliability lies in [0, 1]")
    if completeness and completeness_trials < 1:
        raise InferError(f"--completeness-trials {completeness_trials}: need at least one injected cube")
    reliability = reliability or min_reliability is not None
    try:
        products = parse_products(products)  # mask, moments, cubelets, regions (dfjax.products)
    except ValueError as exc:
        raise InferError(str(exc)) from None
    if psf is not None:  # a PSF that cannot be read is refused before anything loads
        try:
            read_psf(psf, half=2)
        except ValueError as exc:
            raise InferError(f"--psf {' '.join(str(exc).split())}") from None
    paths = [Path(p) for p in cube_paths]
    if not paths:
        raise InferError("no cube given")
    batch = len(paths) > 1
    out = None if out is None else Path(out)
    targets = _plan_outputs(paths, out, fmt, batch=batch)
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InferError(f"no model directory {model_dir}/: run `dvc repro` to train the six models, "
                         f"or train each with `python -m dfjax.train` and pass --model-dir")
    cubes: dict[int, Cube] = {}
    shapes = []
    for i, path in enumerate(paths):  # read every cube once before loading models or writing anything
        cube = read_cube(path)
        cube_pb(cube, pb)  # a PB that does not fit the cube is refused before anything loads
        shapes.append((path, cube.shape))
        if not batch:
            cubes[i] = cube
    if loader is None:  # the saved models' sizes, before they are loaded
        length = saved_sizes(model_dir)[1]
        for path, shape in shapes:
            _check_channels(shape, length, path)
    if config is None and (loader is None or config_file is not None or sets):
        config = pipeline_config(model_dir, config_file, sets)
    try:
        models = (loader or _default_loader)(model_dir)
    except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
        raise InferError(f"model directory {model_dir}: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    for path, shape in shapes:
        _check_channels(shape, model_sizes(models)[1], path)
    if out is not None and batch:
        out.mkdir(parents=True, exist_ok=True)
    bar = _progress(len(paths), enabled=progress and batch)
    try:
        for i, (path, target) in enumerate(zip(paths, targets)):
            cube = cubes.pop(i, None) or read_cube(path)
            # the same models, settings, PSF and PB for the cube, its negative and every injected trial
            catalogue_of = functools.partial(infer_cube, models=models, config=config, runner=runner, psf_file=psf,
                                             pb_file=pb)  # fmt: skip
            table = catalogue_of(cube, progress=progress)
            table.meta["MODELDIR"] = str(model_dir)
            unfiltered = table
            if reliability:
                from dfjax.reliability import add_reliability, negated

                table = add_reliability(table, catalogue_of(negated(cube)))
                if min_reliability is not None:
                    table = table[table["reliability"] >= min_reliability]
                    table.meta["MINREL"] = float(min_reliability)
            write_catalogue(table, target, fmt)
            if completeness:
                from dfjax.completeness import CompletenessError, measure_completeness, write_completeness

                try:
                    result = measure_completeness(cube, catalogue_of,
                                                  catalogue=unfiltered, trials=completeness_trials, seed=seed,
                                                  progress=progress)  # fmt: skip
                except CompletenessError as exc:  # no beam and no noise: the catalogue stands, the curve cannot be made
                    raise InferError(f"--completeness: {exc}") from None
                stem = catalogue_path(path, None, "ecsv", batch=False).name.removesuffix(".cat.ecsv")
                write_completeness(result, target.parent / f"{stem}.completeness.ecsv",
                                   target.parent / f"{stem}.completeness.png")  # fmt: skip
            if plot:
                write_atomic(target.with_suffix(".png"), plot_catalogue(cube, table))
            write_products(cube, table, target, products, config=config)
            bar.update(1)
    finally:
        bar.close()
    return targets


def _plan_outputs(paths: list[Path], out: Path | None, fmt: str, *, batch: bool) -> list[Path]:
    """Catalogue paths, checked: never an input, never twice the same, the directory writable."""
    if batch and out is not None and out.exists() and not out.is_dir():
        raise InferError(f"--out {out}: with several cubes --out must be a directory")
    targets = [catalogue_path(p, out, fmt, batch=batch) for p in paths]
    inputs = {p.resolve() for p in paths}
    seen: set[Path] = set()
    for target in targets:
        resolved = target.resolve()
        if resolved in inputs:
            raise InferError(f"{target}: the catalogue would overwrite an input cube")
        if resolved in seen:
            raise InferError(f"{target}: two cubes would write the same catalogue (same file name)")
        seen.add(resolved)
        parent = target.parent
        if not (parent.is_dir() or (batch and parent == out)):
            raise InferError(f"{parent}: no such directory for the catalogue")
    return targets


def _check_channels(cube_or_shape: Cube | tuple[int, ...], length: int, path: Path | None = None) -> None:
    """InferError unless the cube has the channels a Deep GRU of spectra of ``length`` can use."""
    shape = cube_or_shape.shape if isinstance(cube_or_shape, Cube) else cube_or_shape
    path = path if path is not None else getattr(cube_or_shape, "path", "cube")
    need = min_channels(length)
    if shape[0] < need:
        raise InferError(f"{path}: {shape[0]} channels, fewer than the {need} the pipeline can use "
                         f"(the Deep GRU reads {length}; shorter cubes are zero padded)")


def _progress(total: int, *, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="cube", desc="dfjax.infer", disable=not enabled, file=sys.stderr)


COMPILATION_CACHE = "DFJAX_XLA_CACHE"
"""The environment variable naming where XLA's compiled programs are kept between runs (``off``: nowhere);
default ``$XDG_CACHE_HOME/dfjax/xla`` (``~/.cache/dfjax/xla``); JAX's own ``JAX_COMPILATION_CACHE_DIR`` wins."""


def use_compilation_cache() -> Path | None:
    """Keep XLA's compiled programs on disk between runs: the first cube of a run compiles the models and the
    scene fit for its shapes (about 15 s on 2 cores), later runs read them back. → the directory, or None."""
    import os

    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    where = os.environ.get(COMPILATION_CACHE, "")
    if where.lower() == "off":
        return None
    path = Path(where) if where else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dfjax" / "xla"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile every run, as without the cache
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and call :func:`infer_files`; errors → one line on stderr, exit 2."""
    parser = make_parser("python -m dfjax.infer", __doc__.splitlines()[0], [
        "python -m dfjax.infer cube.fits                       # writes cube.cat.ecsv next to it",
        "python -m dfjax.infer cube.fits --out cube.vot --plot",
        "python -m dfjax.infer a.fits b.fits --out catalogues/ --quiet",
        "python -m dfjax.infer cube.fits --set characterise.min_line_snr=7 --set detect.threshold=0.2",
        "python -m dfjax.infer cube.fits --config params.yaml  # its pipeline: section, not models/pipeline.yaml",
        "python -m dfjax.infer cube.fits --products mask,moments,regions --min-reliability 0.9",
        "python -m dfjax.infer cube.fits --psf cube.psf.fits --completeness"])
    parser.add_argument("cubes", nargs="+", type=Path, metavar="CUBE.fits", help="dirty cubes (FITS)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                        help="directory with the six trained models, from `dvc repro`")
    parser.add_argument("--out", type=Path, default=None,
                        help="catalogue file (one cube) or directory (several); default: next to each cube")
    parser.add_argument("--format", dest="fmt", choices=tuple(FORMATS), default=None,
                        help="catalogue format (default: from --out's extension, else ecsv)")
    parser.add_argument("--plot", action="store_true", help="also write a PNG: integrated image and spectra")
    parser.add_argument("--reliability", action="store_true",
                        help="add a reliability column, 1 - N_neg/N_pos above each SNR (one more run, on -cube)")
    parser.add_argument("--min-reliability", type=float, default=None, metavar="R",
                        help="keep only sources of reliability >= R, in [0, 1] (implies --reliability)")
    parser.add_argument("--completeness", action="store_true",
                        help="inject model sources and write <stem>.completeness.ecsv/.png: recovered fraction "
                             "vs SNR and size")
    parser.add_argument("--completeness-trials", type=int, default=20, metavar="N",
                        help="injected cubes (5 sources each) for --completeness")
    parser.add_argument("--seed", type=int, default=0, help="seed of the injected sources")
    parser.add_argument("--psf", type=Path, default=None, metavar="PSF.fits",
                        help="the cube's PSF (tclean's .psf exported to FITS): the sources are fitted jointly "
                             "through it and its sidelobes explained (the scene fit, in place of refinement); "
                             "default: <cube stem>.psf.fits beside the cube if there is one")
    parser.add_argument("--pb", type=Path, default=None, metavar="PB.fits",
                        help="the cube's primary beam (tclean's .pb exported to FITS): the measured fluxes are "
                             "divided by it at each source; a PB-corrected cube is searched times it, with flat "
                             "noise (without one, its response is read off its noise); "
                             "default: <cube stem>.pb.fits beside the cube if there is one")
    parser.add_argument("--products", default=None, metavar="LIST",
                        help="also write, beside the catalogue, any of mask,moments,cubelets,regions (comma list)")
    add_config(parser, f"its `pipeline:` section replaces MODEL_DIR/{PIPELINE_CONFIG} (the tuned settings)",
               example="characterise.min_line_snr=7")
    add_quiet(parser)
    args = parser.parse_args(argv)
    fmt = args.fmt or format_for(args.out)
    use_compilation_cache()
    try:
        infer_files(args.cubes, model_dir=args.model_dir, out=args.out, fmt=fmt, plot=args.plot,
                    reliability=args.reliability, min_reliability=args.min_reliability,
                    completeness=args.completeness, completeness_trials=args.completeness_trials, seed=args.seed,
                    products=args.products or (), psf=args.psf, pb=args.pb,
                    config_file=args.config, sets=args.sets, progress=not args.quiet)  # fmt: skip
    except (InferError, CubeError) as exc:
        fail(parser.prog, exc)


if __name__ == "__main__":
    main()

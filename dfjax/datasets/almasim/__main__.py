"""Package a simulated set as TFDS records: ``python -m dfjax.datasets.almasim`` (console script ``dfjax-package``).

Example::

    python -m sim generate --config params.yaml --out data/sim --n 20
    python -m dfjax.datasets.almasim --sim-dir data/sim --data-dir data/tfds --builder-config default

The builder config comes from ``--builder-config NAME``, else ``data.builder_config`` of
``--config FILE`` (with ``--set builder_config=NAME`` over it), else ``default``. ``--config NAME``
with a builder config's name (not a file) is the older spelling of ``--builder-config NAME``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sim.cli import CliError, add_config, add_quiet, make_parser, parse_sets, read_yaml, section

PROG = "python -m dfjax.datasets.almasim"


def builder_config(config: Path | None, sets: list[str], names: tuple[str, ...]) -> str | None:
    """The builder config named by ``--config FILE`` (``data.builder_config``) and ``--set``; None if neither."""
    data: dict = {}
    if config is not None:
        if not config.exists() and str(config) in names:  # the older --config NAME
            data = {"builder_config": str(config)}
        else:
            data = section(read_yaml(config), "data", path=config)
            data = {"builder_config": data["builder_config"]} if "builder_config" in data else {}
    for key, value in parse_sets(sets, prefix="data"):
        if key != "builder_config":
            raise CliError(f"--set {key}: unknown key (known: builder_config)")
        data["builder_config"] = value
    name = data.get("builder_config")
    if name is not None and name not in names:
        raise CliError(f"data.builder_config: {name!r} is not one of {', '.join(names)}")
    return name


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and call :func:`dfjax.datasets.almasim.package.build`; exit 2 on bad input."""
    from dfjax.datasets.almasim.package import CONFIG_NAMES, build
    from dfjax.datasets.almasim.records import RecordError

    p = make_parser(PROG, __doc__.splitlines()[0], [
        "python -m dfjax.datasets.almasim --sim-dir data/sim --data-dir data/tfds --builder-config default",
        "python -m dfjax.datasets.almasim --sim-dir data/sim --data-dir data/tfds --config params.yaml --quiet"])
    p.add_argument("--sim-dir", required=True, help="a `python -m sim generate` output directory")
    p.add_argument("--extra-train", action="append", default=[], metavar="DIR",
                   help="another `python -m sim generate` directory whose every cube joins the train split "
                        "(repeatable: params.yaml's regimes)")
    p.add_argument("--data-dir", required=True, help="TFDS data directory to write almasim/NAME/VERSION in")
    p.add_argument("--builder-config", choices=CONFIG_NAMES, default=None,
                   help="builder config (default: data.builder_config of --config, else default)")
    add_config(p, "its `data.builder_config` (e.g. params.yaml)", example="builder_config=paper")
    p.add_argument("--overwrite", action="store_true", help="re-package even if this version exists")
    add_quiet(p)
    args = p.parse_args(argv)
    try:
        name = builder_config(args.config, args.sets, CONFIG_NAMES)  # checked even when --builder-config wins
        name = args.builder_config or name or "default"
        path = build(args.sim_dir, args.data_dir, name, extra_train=args.extra_train, overwrite=args.overwrite,
                     progress=not args.quiet)
    except (CliError, RecordError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

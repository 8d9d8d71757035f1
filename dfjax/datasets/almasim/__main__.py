"""Command line: ``python -m dfjax.datasets.almasim --sim-dir DIR --data-dir OUT [--config NAME]``.

Example::

    python -m sim generate --config params.yaml --out data/sim --n 20
    python -m dfjax.datasets.almasim --sim-dir data/sim --data-dir data/tfds --config default
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and call :func:`dfjax.datasets.almasim.package.build`; exit 2 on bad input."""
    from dfjax.datasets.almasim.package import CONFIG_NAMES, build
    from dfjax.datasets.almasim.records import RecordError

    p = argparse.ArgumentParser(prog="python -m dfjax.datasets.almasim", description=__doc__.splitlines()[0])
    p.add_argument("--sim-dir", required=True, help="a `python -m sim generate` output directory")
    p.add_argument("--data-dir", required=True, help="TFDS data directory to write almasim/NAME/VERSION in")
    p.add_argument("--config", default="default", choices=CONFIG_NAMES, help="builder config (default: default)")
    p.add_argument("--overwrite", action="store_true", help="re-package even if this version exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        path = build(args.sim_dir, args.data_dir, args.config, overwrite=args.overwrite, progress=not args.quiet)
    except RecordError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command-line pieces shared by every entry point: ``python -m sim`` and the ``dfjax`` commands.

Same words for the same things everywhere:

* ``--config FILE``: a YAML file (e.g. params.yaml); each command reads its own section of it;
* ``--set KEY=VALUE``: a dotted key of that section and a YAML value, applied over the file
  (repeatable; the section's name may lead the key: ``--set sim.seed=3`` = ``--set seed=3``);
* ``--quiet``: no progress bar (``--no-progress`` is a hidden alias kept for old scripts);
* ``--version``: the package version;
* bad input: one line ``PROG: error: ...`` on stderr and exit status 2 (:func:`fail`).

It lives in ``sim`` because ``sim`` imports nothing from ``dfjax``; ``dfjax`` imports it from here.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["CliError", "HelpFormatter", "add_config", "add_quiet", "add_subcommand", "apply_sets", "fail",
           "make_parser", "merge", "parse_sets", "read_yaml", "section", "version"]


class CliError(ValueError):
    """Bad command-line input; the one-line message names the flag or file."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples epilog as written and appends ``(default: X)`` to options that have one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        return f"{text} (default: %(default)s)"


def version() -> str:
    """The installed distribution's version (``dfjax`` holds both packages), else ``unknown``."""
    from importlib import metadata

    try:
        return metadata.version("dfjax")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_parser(prog: str, description: str, examples: Sequence[str] = ()) -> argparse.ArgumentParser:
    """An ArgumentParser with our formatter, ``--version`` and an ``examples:`` epilog."""
    parser = argparse.ArgumentParser(prog=prog, description=description.replace("``", "`"), epilog=_epilog(examples),
                                     formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return parser


def add_subcommand(sub: Any, name: str, help: str, examples: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A sub-command parser with the same formatter and an examples epilog."""
    return sub.add_parser(name, help=help, description=help, epilog=_epilog(examples), formatter_class=HelpFormatter)


def _epilog(examples: Sequence[str]) -> str | None:
    return "examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else None


def add_config(parser: argparse.ArgumentParser, what: str, *, example: str = "KEY=VALUE") -> None:
    """``--config FILE`` (YAML; ``what`` says which section is read) and repeatable ``--set KEY=VALUE``."""
    parser.add_argument("--config", type=Path, metavar="FILE", help=f"YAML file: {what}")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one setting (over --config), value parsed as YAML (repeatable), "
                             f"e.g. --set {example}")  # fmt: skip


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (no progress bar) and its hidden alias ``--no-progress``."""
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that reads ``1e-9`` as a number, as YAML 1.2 does (PyYAML's 1.1 wants ``1.0e-9``)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader)


_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def read_yaml(path: str | Path, *, flag: str = "--config") -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: ``{}``); :class:`CliError` otherwise."""
    import yaml

    path = Path(path)
    try:
        content = load_yaml(path.read_text())
    except FileNotFoundError:
        raise CliError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{flag} {path}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{flag} {path}: unreadable ({exc.__class__.__name__}: {exc})") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{flag} {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise CliError(f"{flag} {path}: expected a mapping of sections, got a YAML {type(content).__name__}")
    return content


def section(content: Mapping[str, Any], dotted: str, *, path: str | Path = "--config",
            required: bool = False) -> dict[str, Any]:
    """``content``'s mapping at a dotted key (absent: ``{}``, or :class:`CliError` when ``required``)."""
    node: Any = content
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or node.get(key) is None:
            if required:
                raise CliError(f"{path}: no `{dotted}` section")
            return {}
        node = node[key]
    if not isinstance(node, Mapping):
        raise CliError(f"{path}: `{dotted}` must be a mapping, got {type(node).__name__}")
    return dict(node)


def parse_sets(items: Iterable[str], *, prefix: str | None = None) -> list[tuple[str, Any]]:
    """``KEY=VALUE`` strings → (dotted key, YAML value) pairs, a leading ``prefix.`` dropped."""
    import yaml

    pairs = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = load_yaml(text)
        except yaml.YAMLError:
            raise CliError(f"--set {item!r}: the value is not valid YAML") from None
        if prefix and key.startswith(prefix + "."):
            key = key[len(prefix) + 1:]
        pairs.append((key, value))
    return pairs


def apply_sets(mapping: Mapping[str, Any], pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of the nested ``mapping`` with each dotted key set (parents created as needed)."""
    import copy

    out = copy.deepcopy(dict(mapping))
    for dotted, value in pairs:
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, nested mappings key by key (later values win)."""
    out = dict(base)
    for key, value in update.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merge(out[key], value) if both else value
    return out


def fail(prog: str, exc: BaseException | str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` as one line on stderr and exit with status 2."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(message).split()) or type(exc).__name__
    print(f"{prog}: error: {text}", file=sys.stderr)
    raise SystemExit(2)

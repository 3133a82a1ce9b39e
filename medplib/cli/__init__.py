"""The `medplib` command.

Library commands (predict, data, train, eval, bench, convert) live in this package.
Platform commands (serve, worker, db) are contributed by the `webapp` and `worker`
packages through the ``medplib.commands`` entry-point group, so this library never
imports them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from medplib.errors import UserInputError

# Each module exposes `register(subparsers)`; a subcommand sets `func(args) -> int`.
LIBRARY_COMMANDS: tuple[str, ...] = (
    "medplib.cli.convert",
    "medplib.cli.predict",
    "medplib.cli.data",
    "medplib.cli.eval",
    "medplib.cli.train",
)

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Register]:
    found: list[Register] = []
    for ep in sorted(entry_points(group="medplib.commands"), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except ImportError as exc:
            # A broken platform install must not take the library commands down with it.
            found.append(_unavailable(ep.name, exc))
    for name in LIBRARY_COMMANDS:
        found.append(importlib.import_module(name).register)
    return found


def _unavailable(name: str, exc: ImportError) -> Register:
    def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        p = sub.add_parser(name, help=f"(unavailable: {exc})")
        p.set_defaults(func=lambda _args: _fail(f"`medplib {name}` cannot start: {exc}"))

    return register


def _fail(message: str) -> int:
    print(f"medplib: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medplib",
        description="MedPLIB: medical VQA, pixel-level prompts and grounding, and the platform around it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except UserInputError as exc:
        print(f"medplib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())

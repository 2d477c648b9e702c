"""Command-line interface: ``python -m hrtem_core {info,analyze,series,batch,cards,calibrate} ...``.

Each sub-command lives in its own module under :mod:`hrtem_core.commands` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. This module only dispatches and turns errors
into one line ``error: ...`` on stderr with exit code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hrtem_core import __version__
from hrtem_core.errors import HRTEMError

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("info", "analyze", "series", "batch", "cards", "calibrate")

EXIT_OK = 0
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line ``error: ...`` and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {' '.join(message.split())}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available sub-command."""
    parser = _Parser(
        prog="python -m hrtem_core",
        description="Analyse HRTEM images of crystalline nanoparticles.",
    )
    parser.add_argument("--version", action="version", version=f"hrtem_core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hrtem_core.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet is simply not offered
            if exc.name == f"hrtem_core.commands.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or EXIT_OK)
    except HRTEMError as exc:
        from hrtem_core.commands._options import with_flag

        sys.stderr.write(f"error: {with_flag(str(exc))}\n")
        return EXIT_USAGE
    except (OSError, ValueError, MemoryError) as exc:
        # Boundary of last resort: the user still gets one line, not a traceback.
        sys.stderr.write(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


__all__ = ["COMMANDS", "build_parser", "main"]

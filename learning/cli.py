"""``ftlearn``: the command line of the plugin.

Each command lives beside the code it drives, in a module exposing
``register(subparsers) -> None``; the module adds its sub-parser and sets ``func`` (a callable
taking the parsed ``argparse.Namespace`` and returning an exit code). This file only wires them.
Errors derived from :class:`~learning.core.errors.LearningError` end the command with a one-line
message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from learning import __version__
from learning.core.errors import LearningError

# Modules that contribute sub-commands (each defines register(subparsers)).
COMMAND_MODULES: tuple[str, ...] = (
    "learning.commands.exchange",
    "learning.commands.data",
    "learning.commands.control",
    "learning.commands.agents",
    "learning.commands.allocator",
    "learning.commands.demo",
    "learning.commands.policy",
    "learning.commands.encoder",
    "learning.commands.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftlearn", description="AdvancedLearning for freqtrade: tools and state.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except LearningError as err:
        print(f"ftlearn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()  # nothing more can be said; keep Python from reporting it at exit
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Command line: ``python -m bltriton <command>``.

Commands are contributed by the modules that own them; each exposes ``add_parsers(subparsers)``
and sets ``func`` on its parsers. A user mistake found by a command (:class:`UsageError`, or a
``BLTRITON_*`` variable with a value it does not accept) is printed as one line and exits with 2,
as argparse does for the mistakes it finds itself.
"""

from __future__ import annotations

import argparse
import sys

from bltriton._cli import UsageError
from bltriton._env import EnvVarError


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse prints the whole usage first); the subcommands'
    parsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from bltriton import check
    from bltriton.autotune import cli as autotune_cli
    from bltriton.calibrate import add_parsers as add_calibrate_parser
    from bltriton.demo import cli as demo_cli

    parser = _Parser(
        prog="python -m bltriton",
        description="bltriton: band-limited convolution for PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_cli.add_parsers(sub)
    check.add_parsers(sub)
    autotune_cli.add_parsers(sub)
    add_calibrate_parser(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command's ``func``; help and 2 when none was chosen."""
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UsageError, EnvVarError) as err:
        command = getattr(args, "command", None)
        print(f"{parser.prog}{' ' + command if command else ''}: error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

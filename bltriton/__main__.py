"""Command line: ``python -m bltriton <command>``.

Commands are contributed by the modules that own them; each exposes ``add_parsers(subparsers)``
and sets ``func`` on its parsers.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from bltriton import check
    from bltriton.autotune import cli as autotune_cli
    from bltriton.calibrate import add_parsers as add_calibrate_parser
    from bltriton.demo import cli as demo_cli

    parser = argparse.ArgumentParser(
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
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks and measurement scripts of bltriton (see bench/NOTES.md)."""

from __future__ import annotations


def print_rows_main(doc: str, run, rounds: int, argv: list[str] | None = None) -> int:
    """The command line of a script that prints ``run(rounds)``'s markdown rows: ``--rounds``
    (default ``rounds``) and ``--threads`` (torch threads, default 2)."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("\n".join(run(args.rounds)))
    return 0

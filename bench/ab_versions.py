"""Whole-model step times of this checkout against an earlier commit, interleaved.

    python -m bench.ab_versions --base dcb5625 [--case resnet18:32:0.5:train ...] [--rounds N]

The base commit's ``bltriton`` (with its ``kernels``) is extracted with ``git archive`` into a
temporary folder and renamed ``bltriton_base`` (its op namespace too, so both register their
ops side by side). Each case runs in a fresh process (a long process's heap history changes the
page-fault cost of later cases, bench/NOTES.md) that builds one model three ways, ``nn.Conv*d``,
band-limited by the base and by this checkout (same weights), and times them round-robin.
Prints one markdown row per case: ``nn`` ms, base / nn, this / nn.

``--separate N``: each variant runs alone in its own process instead, ``N`` processes per variant
started round-robin (nn, base, this, nn, ...); a row gives the median over the processes of each
process's median step. Three models in one process share one heap, and the page faults one
variant's memory traffic causes land on the others: one stride-2 layer's ``nn.Conv2d`` read 63 ms
beside the spectral layers and 105 ms beside the spatial ones (bench/NOTES.md). Alone in a
process, each variant meets the allocator as a user's model does.
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("nn", "base", "this")  # nn.Conv*d, the base commit, this checkout (same weights)
DEFAULT_CASES = (
    "resnet18:8:0.5:train",
    "resnet18:32:0.5:train",
    "resnet18:32:0.75:train",
    "resnet18:32:0.5:infer",
    "fcn:16:0.5:train",
    "fcn:64:0.5:train",
    "fcn:64:0.75:train",
)


def extract_base(commit: str, dest: Path) -> Path:
    """``bltriton`` and ``kernels`` of ``commit`` under ``dest/bltriton_base`` (renamed)."""
    data = subprocess.run(
        ["git", "archive", "--format=tar", commit, "bltriton", "kernels"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    pkg = dest / "bltriton_base"
    (dest / "bltriton").rename(pkg)
    (dest / "kernels").rename(pkg / "kernels")
    for path in pkg.rglob("*"):
        if (path.is_file() and path.suffix in (".py", ".md", ".txt")) or path.name == "py.typed":
            text = path.read_text(errors="surrogateescape")
            path.write_text(re.sub(r"\bbltriton\b", "bltriton_base", text), errors="surrogateescape")
    return dest


def _row(case: str, med: dict[str, float]) -> str:
    model, batch, rate, mode = case.split(":")
    return (
        f"| {model} | {batch} | {float(rate):g} | {mode} | {med['nn'] * 1e3:.1f} | "
        f"{med['base'] / med['nn']:.2f}× | {med['this'] / med['nn']:.2f}× |"
    )


def run_case(case: str, rounds: int | None) -> str:
    """One case in this process: ``model:batch:rate:mode``; returns its markdown row."""
    from bench.ab_models import interleaved_medians

    built = {variant: _build(case, variant) for variant in VARIANTS}
    fns = {variant: step for variant, (step, _) in built.items()}
    return _row(case, interleaved_medians(fns, rounds or built["nn"][1]))


def _build(case: str, variant: str):
    """``(step, rounds)``: the case's model as ``variant`` (``nn``, ``base`` or ``this``)."""
    import torch

    from bench.models import MODELS, infer_fn, inputs, train_step_fn

    model, batch, rate, mode = case.split(":")
    batch, rate = int(batch), float(rate)
    spec = MODELS[model]
    torch.manual_seed(0)
    net = spec.build()
    if variant == "base":
        import bltriton_base

        net = bltriton_base.convert(net, rate)
    elif variant == "this":
        from bltriton import convert

        net = convert(net, rate)
    x, target = inputs(spec, batch)
    step = train_step_fn(net, x, target) if mode == "train" else infer_fn(net, x)
    return step, (5 if batch >= 128 else 9 if batch >= 32 else 15)


def run_variant(case: str, variant: str, rounds: int | None) -> float:
    """Median seconds of one variant's step, alone in this process."""
    from bench.ab_models import interleaved_medians

    step, default_rounds = _build(case, variant)
    return interleaved_medians({variant: step}, rounds or default_rounds)[variant]


def _separate_row(case: str, processes: int, cmd_base: list[str]) -> str:
    medians: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(processes):
        for variant in medians:
            proc = subprocess.run(
                [*cmd_base, "--_child", case, "--_variant", variant], cwd=ROOT, capture_output=True, text=True
            )
            found = re.findall(r"^seconds ([0-9.eE+-]+)$", proc.stdout, re.M)
            if not found:
                return f"| {case} | failed ({variant}): {proc.stderr.strip()[-300:]} |"
            medians[variant].append(float(found[-1]))
    return _row(case, {k: statistics.median(v) for k, v in medians.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--case", nargs="+", default=list(DEFAULT_CASES), help="model:batch:rate:train|infer")
    parser.add_argument("--rounds", type=int, default=None, help="default: 15 / 9 / 5 by batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--separate",
        type=int,
        default=0,
        metavar="N",
        help="each variant alone in N processes (see module doc)",
    )
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:  # one case, in a fresh process
        import torch

        sys.path.insert(0, args._path)
        torch.set_num_threads(args.threads)
        if args._variant:
            print(f"seconds {run_variant(args._child, args._variant, args.rounds)!r}", flush=True)
        else:
            print(run_case(args._child, args.rounds), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="ab-base-") as tmp:
        extract_base(args.base, Path(tmp))
        how = f"each variant alone in {args.separate} processes" if args.separate else "interleaved"
        print(f"base {args.base}, this checkout, {args.threads} threads, {how}, medians\n")
        print("| model | batch | rate | mode | nn (ms) | base | this |")
        print("|---|---|---|---|---|---|---|")
        cmd_base = [sys.executable, "-m", "bench.ab_versions", "--base", args.base]
        cmd_base += ["--_path", tmp, "--threads", str(args.threads)]
        if args.rounds:
            cmd_base += ["--rounds", str(args.rounds)]
        for case in args.case:
            if args.separate:
                print(_separate_row(case, args.separate, cmd_base), flush=True)
                continue
            proc = subprocess.run([*cmd_base, "--_child", case], cwd=ROOT, capture_output=True, text=True)
            rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
            print(rows[-1] if rows else f"| {case} | failed: {proc.stderr.strip()[-300:]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

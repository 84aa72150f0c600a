"""Whole-model step times of this checkout against an earlier commit, interleaved.

    python -m bench.ab_versions --base dcb5625 [--case resnet18:32:0.5:train ...] [--rounds N]

The base commit's ``bltriton`` (with its ``kernels``) is extracted with ``git archive`` into a
temporary folder and renamed ``bltriton_base`` (its op namespace too, so both register their
ops side by side). Each case runs in a fresh process (a long process's heap history changes the
page-fault cost of later cases, bench/NOTES.md) that builds one model three ways, ``nn.Conv*d``,
band-limited by the base and by this checkout (same weights), and times them round-robin.
Prints one markdown row per case: ``nn`` ms, base / nn, this / nn.
"""

from __future__ import annotations

import argparse
import copy
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def run_case(case: str, rounds: int | None) -> str:
    """One case in this process: ``model:batch:rate:mode``; returns its markdown row."""
    import bltriton_base
    import torch

    from bench.ab_models import interleaved_medians
    from bench.models import MODELS, infer_fn, inputs, train_step_fn
    from bltriton import convert

    model, batch, rate, mode = case.split(":")
    batch, rate = int(batch), float(rate)
    spec = MODELS[model]
    torch.manual_seed(0)
    base_model = spec.build()
    nets = {
        "nn": copy.deepcopy(base_model),
        "base": bltriton_base.convert(copy.deepcopy(base_model), rate),
        "this": convert(copy.deepcopy(base_model), rate),
    }
    x, target = inputs(spec, batch)
    make = train_step_fn if mode == "train" else (lambda m, x, _t: infer_fn(m, x))
    fns = {k: make(m, x, target) for k, m in nets.items()}
    rounds = rounds or (5 if batch >= 128 else 9 if batch >= 32 else 15)
    med = interleaved_medians(fns, rounds)
    return (
        f"| {model} | {batch} | {rate:g} | {mode} | {med['nn'] * 1e3:.1f} | "
        f"{med['base'] / med['nn']:.2f}× | {med['this'] / med['nn']:.2f}× |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--case", nargs="+", default=list(DEFAULT_CASES), help="model:batch:rate:train|infer")
    parser.add_argument("--rounds", type=int, default=None, help="default: 15 / 9 / 5 by batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:  # one case, in a fresh process
        import torch

        sys.path.insert(0, args._path)
        torch.set_num_threads(args.threads)
        print(run_case(args._child, args.rounds), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="ab-base-") as tmp:
        extract_base(args.base, Path(tmp))
        print(f"base {args.base}, this checkout, {args.threads} threads, interleaved medians\n")
        print("| model | batch | rate | mode | nn (ms) | base | this |")
        print("|---|---|---|---|---|---|---|")
        for case in args.case:
            cmd = [sys.executable, "-m", "bench.ab_versions", "--base", args.base, "--_child", case]
            cmd += ["--_path", tmp, "--threads", str(args.threads)]
            if args.rounds:
                cmd += ["--rounds", str(args.rounds)]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
            print(rows[-1] if rows else f"| {case} | failed: {proc.stderr.strip()[-300:]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

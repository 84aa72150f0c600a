"""Interleaved A/B step times of whole models: ``nn.Conv*d`` against band-limited variants.

    python -m bench.ab_models [--model resnet18 fcn] [--batch 32] [--rates 0 0.5 0.75]
                              [--mode train infer] [--rounds 7]

Every round times one call of each variant in turn (A, B, C, A, B, C, ...), so a load change on
the machine hits all variants alike; the table gives the median per variant and its ratio to the
``nn`` model, and for training also the saved-for-backward bytes (once per storage, parameters
excluded) and their ratio. All variants share the ``nn`` model's weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.models import MODELS, infer_fn, inputs, make_variant, saved_bytes, train_step_fn
from bltriton import _gemm
from bltriton.utils import keep_freed_memory


def interleaved_medians(
    fns: dict[str, object], rounds: int, warmup: int = 2, clock=time.perf_counter
) -> dict[str, float]:
    """Median seconds per callable, timed round-robin with ``clock``."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(
    model: str,
    batch: int,
    rates: list[float],
    mode: str,
    rounds: int,
    clock=time.perf_counter,
    save: str | None = None,
    **band_kwargs,
) -> list[dict]:
    """Rows ``{variant, ms, ratio, saved, saved_ratio}`` for one model, batch and mode."""
    case = MODELS[model]
    torch.manual_seed(0)
    base = case.build()
    x, target = inputs(case, batch)
    variants = {"nn": make_variant(base, None)}
    for r in rates:
        variants[f"r={r:g}"] = make_variant(base, r, **band_kwargs)
        if save is not None:
            for m in variants[f"r={r:g}"].modules():
                if hasattr(m, "save"):
                    m.save = save
    if mode == "train":
        fns = {k: train_step_fn(m, x, target) for k, m in variants.items()}
    else:
        fns = {k: infer_fn(m, x) for k, m in variants.items()}
    med = interleaved_medians(fns, rounds, clock=clock)
    rows = []
    saved_nn = saved_bytes(variants["nn"], x, target) if mode == "train" else None
    for k, m in variants.items():
        row = {"variant": k, "ms": med[k] * 1e3, "ratio": med[k] / med["nn"]}
        if saved_nn is not None:
            sb = saved_bytes(m, x, target)
            row.update(saved=sb, saved_ratio=sb / saved_nn)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["resnet18", "fcn"], choices=sorted(MODELS))
    parser.add_argument("--batch", nargs="+", type=int, default=None)
    parser.add_argument("--rates", nargs="+", type=float, default=[0.0, 0.5, 0.75])
    parser.add_argument("--mode", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--save", default=None, choices=["input", "band"], help="save policy of the layers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="bltriton.utils.keep_freed_memory() first: glibc keeps freed memory instead of "
        "faulting it in again every step (both models alike)",
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall time, or this process's CPU time (with --threads 1: the work done, robust to a "
        "machine shared with other jobs)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU GEMMs {_gemm.provider()}, "
        f"{'freed memory kept, ' if kept else ''}"
        f"median of {args.rounds} interleaved\n"
    )
    print("| model | batch | mode | variant | ms | × nn | saved MiB | saved × nn |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.model:
        batches = args.batch or ([8, 32] if model == "resnet18" else [16, 64])
        for batch in batches:
            for mode in args.mode:
                for row in run(model, batch, args.rates, mode, args.rounds, clock, args.save):
                    saved = (
                        f"{row['saved'] / 2**20:.1f} | {row['saved_ratio']:.2f}×"
                        if "saved" in row
                        else "– | –"
                    )
                    print(
                        f"| {model} | {batch} | {mode} | {row['variant']} | {row['ms']:.1f} | "
                        f"{row['ratio']:.2f}× | {saved} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where the time of one band-limited layer goes: each stage of fwd+bwd timed alone.

    python -m bench.profile_stages [--rate 0.5] [--device cpu|cuda] [--backend torch|triton]

Prints a markdown table (median ms per stage) for the benchmark shapes. Stages: ``xT`` input
transform, ``wT`` filter transform, ``mac`` the three contractions, ``inv`` the two inverse
transforms, ``gT`` the output-gradient transform, ``wB`` the filter gradient from its band.
Stages timed alone do not add up exactly to the layer (allocation and cache effects differ).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.shapes import SHAPES_1D, SHAPES_2D, ConvShape
from bltriton import ops
from bltriton.spectral import band_for_rate, fft_lengths


def _median_ms(fn, device: torch.device, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3


def stage_times(shape: ConvShape, rate: float, device: torch.device, backend: str, reps: int) -> dict:
    nd = shape.ndim
    lp = tuple(s + 2 * shape.padding for s in shape.size)
    k = (shape.kernel,) * nd
    band = band_for_rate(fft_lengths(lp, k, None), rate)
    out = tuple(p - shape.kernel + 1 for p in lp)
    ones = (1,) * nd
    x = torch.randn(shape.n, shape.c, *lp, device=device)
    w = torch.randn(shape.o, shape.c, *k, device=device)
    dy = torch.randn(shape.n, shape.o, *out, device=device)
    xb = ops.forward_transform(x, band)
    wb = ops.weight_transform(w, band, ones)
    gb = ops.grad_transform(dy, band, out, ones)
    yb = ops.mac("fwd", xb, wb, 1, backend)
    dxb = ops.mac("dx", gb, wb, 1, backend)
    dwb = ops.mac("dw", xb, gb, 1, backend)
    stages = {
        "xT": lambda: ops.forward_transform(x, band),
        "wT": lambda: ops.weight_transform(w, band, ones),
        "mac fwd": lambda: ops.mac("fwd", xb, wb, 1, backend),
        "inv y": lambda: ops.inverse_transform(yb, band, out, ones),
        "gT": lambda: ops.grad_transform(dy, band, out, ones),
        "mac dx": lambda: ops.mac("dx", gb, wb, 1, backend),
        "inv dx": lambda: ops.inverse_transform(dxb, band, lp, ones, conj_input=True),
        "mac dw": lambda: ops.mac("dw", xb, gb, 1, backend),
        "wB": lambda: ops.weight_from_band(dwb, band, k, ones),
    }
    return {"band": band, **{name: _median_ms(fn, device, reps) for name, fn in stages.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="torch", choices=["torch", "triton"])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    shapes = SHAPES_2D + SHAPES_1D
    if device.type == "cuda":
        shapes = [s.with_batch(128) if s.ndim == 2 else s for s in shapes]
    names = ["xT", "wT", "mac fwd", "inv y", "gT", "mac dx", "inv dx", "mac dw", "wB"]
    print(f"rate {args.rate}, device {device}, backend {args.backend}, median of {args.reps} (ms)\n")
    print("| layer | F | " + " | ".join(names) + " | transforms | MACs |")
    print("|---|---|" + "---|" * (len(names) + 2))
    for shape in shapes:
        t = stage_times(shape, args.rate, device, args.backend, args.reps)
        transforms = sum(t[n] for n in names if "mac" not in n)
        macs = sum(t[n] for n in names if "mac" in n)
        cells = " | ".join(f"{t[n]:.1f}" for n in names)
        print(f"| {shape.id} | {t['band'].num_kept} | {cells} | {transforms:.1f} | {macs:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The 2-D transform methods against each other per map size, interleaved: the direct GEMM, the
separable GEMMs and the CPU kernel's blocked transform, forward and inverse, with the method the
rule picks (``bltriton.transforms._choose_method``).

    python -m bench.transforms [--rounds 15] [--threads 2]

Prints one markdown row per geometry: median ms of each method's forward / inverse (rounds
interleaved over the methods) and the rule's pick, so a pick that is not the fastest shows.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench import print_rows_main

# (map size, grid, stride, rate, maps): stride-1 maps on their padded grid (the inputs and
# output gradients of 3x3 layers), and the outputs of stride-2 layers on their input's grid.
GEOMETRIES = [
    ((8, 8), (10, 10), 1, 0.5, 4096),
    ((12, 12), (14, 14), 1, 0.5, 1820),
    ((14, 14), (16, 16), 1, 0.5, 1337),
    ((14, 14), (16, 16), 1, 0.75, 1337),
    ((16, 16), (18, 18), 1, 0.5, 1024),
    ((16, 16), (18, 18), 1, 0.75, 1024),
    ((20, 20), (22, 22), 1, 0.5, 1024),
    ((32, 32), (34, 34), 1, 0.5, 1024),
    ((8, 8), (18, 18), 2, 0.5, 8192),
    ((16, 16), (34, 34), 2, 0.5, 4096),
]
METHODS = ("direct", "gemm", "blocked")


def run(rounds: int, geometries=GEOMETRIES) -> list[str]:
    from bltriton import _cgemm, transforms
    from bltriton.spectral import band_for_rate

    if not _cgemm.available():
        return [f"kernel not built: {_cgemm._STATE.get('error')}"]
    rows = [
        "| maps | grid | stride | r | count | direct fwd / inv | gemm fwd / inv "
        "| blocked fwd / inv | rule picks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    before = transforms.FORCE_METHOD
    try:
        for length, grid, stride, rate, count in geometries:
            band = band_for_rate(grid, rate)
            x = torch.randn(count, 1, *length)
            plans = {}
            for method in METHODS:
                transforms.FORCE_METHOD = method
                plans[method] = transforms.signal_plan(band, length, (stride, stride), x.device, x.dtype)
            transforms.FORCE_METHOD = None
            pick = transforms._choose_method(band, length, x.device, x.dtype)
            yb = plans["direct"].forward(x)
            calls = {
                (m, d): (lambda p=p, d=d, x=x, yb=yb: p.forward(x) if d == "fwd" else p.inverse(yb))
                for m, p in plans.items()
                for d in ("fwd", "inv")
            }
            times: dict[tuple, list[float]] = {k: [] for k in calls}
            for fn in calls.values():
                fn()
            for _ in range(rounds):
                for key, fn in calls.items():
                    t0 = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            cells = [f"{med[(m, 'fwd')]:.3f} / {med[(m, 'inv')]:.3f}" for m in METHODS]
            rows.append(
                f"| {length[0]}x{length[1]} | {grid[0]}x{grid[1]} | {stride} | {rate} | {count} | "
                + " | ".join(cells)
                + f" | {pick} |"
            )
    finally:
        transforms.FORCE_METHOD = before
        transforms.clear_plans()
    return rows


def main(argv: list[str] | None = None) -> int:
    return print_rows_main(__doc__, run, 15, argv)


if __name__ == "__main__":
    raise SystemExit(main())

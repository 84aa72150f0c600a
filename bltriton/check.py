"""``python -m bltriton check``: a short band-limited forward/backward self-check.

Prints, for a small BLConv2d and BLConv1d layer: the measured kept fraction per rate, the
relative error against ``nn.Conv2d``/``nn.Conv1d`` at rate 0 (forward and gradients), and the
fwd+bwd time of each backend available here next to torch's own convolution.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from bltriton import _gemm
from bltriton._cli import UsageError, check_backend, parse_device
from bltriton._env import BACKENDS
from bltriton.nn import BLConv1d, BLConv2d


def _time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def run_check(device: str, backend: str | None, repeat: int = 5) -> int:
    dev = torch.device(device)
    cases = [
        (
            "BLConv2d 16x32->32 @ 32x32, k3 p1",
            nn.Conv2d(32, 32, 3, padding=1),
            BLConv2d,
            (16, 32, 32, 32),
        ),
        (
            "BLConv1d 16x64->64 @ L=1024, k63 p31",
            nn.Conv1d(64, 64, 63, padding=31),
            BLConv1d,
            (16, 64, 1024),
        ),
    ]
    worst = 0.0
    for title, conv, cls, shape in cases:
        conv = conv.to(dev)
        x = torch.randn(*shape, device=dev, requires_grad=True)
        gemm = f", CPU GEMMs {_gemm.provider()}" if dev.type == "cpu" else ""
        print(f"\n{title}  (device {dev}, backend {backend or 'default'}{gemm})")
        print(
            f"{'rate':>6} {'kept':>7} {'err fwd':>9} {'err dx':>9} {'err dw':>9} {'fwd+bwd ms':>11}"
            f"  algorithm"
        )
        ref = conv(x)
        gy = torch.randn_like(ref)
        gref = torch.autograd.grad(ref, (x, conv.weight), gy)
        for rate in (0.0, 0.5, 0.75):
            layer = cls.from_conv(conv, compress_rate=rate, backend=backend)
            y = layer(x)
            if rate == 0.0:
                g = torch.autograd.grad(y, (x, layer.weight), gy)
                errs = (_rel(y, ref), _rel(g[0], gref[0]), _rel(g[1], gref[1]))
                worst = max(worst, *errs)
                err_txt = " ".join(f"{e:9.1e}" for e in errs)
            else:
                err_txt = " ".join(f"{'-':>9}" for _ in range(3))

            def step(layer=layer, x=x, gy=gy):
                layer(x).backward(gy)

            ms = _time(step, repeat)
            print(f"{rate:6.2f} {layer.kept_fraction:7.3f} {err_txt} {ms:11.2f}  {layer.last_algorithm}")

        def step_ref(conv=conv, x=x, gy=gy):
            conv(x).backward(gy)

        print(f"{'torch':>6} {1.0:7.3f} {'':>29} {_time(step_ref, repeat):11.2f}   ({type(conv).__name__})")
    ok = worst < 1e-4
    print(f"\nrate-0 worst relative error vs torch: {worst:.2e} -> {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


def _cmd(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    check_backend(args.backend, device)
    if args.repeat < 1:
        raise UsageError(f"--repeat: expected a positive number of timed runs; got {args.repeat}")
    return run_check(str(device), args.backend, args.repeat)


def add_parsers(sub) -> None:
    p = sub.add_parser("check", help="short forward/backward self-check against torch")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--backend", default=None, choices=BACKENDS)
    p.add_argument("--repeat", type=int, default=5, help="timed runs per row (default 5)")
    p.set_defaults(func=_cmd)

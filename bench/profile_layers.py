"""Per-layer table of a whole model: every distinct conv shape, ``nn.Conv*d`` against the band-limited
layer (fwd+bwd, interleaved medians), and where the band-limited layer's time goes.

    python -m bench.profile_layers [--model resnet18|fcn] [--batch 32] [--rate 0.5] [--reps 7]

Stage columns as in :mod:`bench.profile_stages` (each stage timed alone): ``xT`` input transform,
``wT`` filter transform, ``fwd/dx/dw`` the three contractions, ``inv y``/``inv dx`` the inverse
transforms, ``gT`` the output-gradient transform, ``wB`` the filter gradient from its band. ``rest``
is the layer's fwd+bwd minus the stages: padding, bias, dtype casts, autograd and Python overhead.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import torch
from torch import nn

from bench.models import MODELS, inputs
from bltriton import BLConv1d, BLConv2d, ops

STAGES = ["xT", "wT", "fwd", "inv y", "gT", "dx", "inv dx", "dw", "wB"]


def conv_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """``(conv, input shape)`` for every non-1x1 conv layer of ``model`` called on ``x``."""
    seen: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [
        m.register_forward_hook(lambda m, a, _o: seen.append((m, tuple(a[0].shape))))
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and any(k > 1 for k in m.kernel_size)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


CLOCK = time.perf_counter


def _med(fn, reps: int) -> float:
    fn()
    t = []
    for _ in range(reps):
        t0 = CLOCK()
        fn()
        t.append(CLOCK() - t0)
    return statistics.median(t) * 1e3


def _fwd_bwd(layer: nn.Module, x: torch.Tensor, gy: torch.Tensor):
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(gy)

    return step


def stage_times(bl: nn.Module, x: torch.Tensor, reps: int) -> dict[str, float]:
    """Median ms of each stage of ``bl`` (a band-limited layer already called once on ``x``)."""
    band, nd = bl.last_band, bl._ndim
    pads = [p for p in bl.padding for _ in (0, 1)] if not isinstance(bl.padding, str) else None
    x_pad = nn.functional.pad(x, pads[::-1]) if pads else x  # symmetric integer padding
    lp = tuple(x_pad.shape[2:])
    k, st, dil = tuple(bl.weight.shape[2:]), tuple(bl.stride), tuple(bl.dilation)
    full = tuple(p - d * (kk - 1) for p, kk, d in zip(lp, k, dil))
    out = tuple(-(-f // s) for f, s in zip(full, st))
    w = bl.weight.detach()
    dy = torch.randn(x.shape[0], w.shape[0], *out)
    g = bl.groups
    xb = ops.forward_transform(x_pad, band)
    wb = ops.weight_transform(w, band, dil)
    gb = ops.grad_transform(dy, band, full, st)
    yb, dxb, dwb = ops.mac("fwd", xb, wb, g, "torch"), ops.mac("dx", gb, wb, g, "torch"), None
    dwb = ops.mac("dw", xb, gb, g, "torch")
    ones = (1,) * nd
    fns = {
        "xT": lambda: ops.forward_transform(x_pad, band),
        "wT": lambda: ops.weight_transform(w, band, dil),
        "fwd": lambda: ops.mac("fwd", xb, wb, g, "torch"),
        "inv y": lambda: ops.inverse_transform(yb, band, full, st),
        "gT": lambda: ops.grad_transform(dy, band, full, st),
        "dx": lambda: ops.mac("dx", gb, wb, g, "torch"),
        "inv dx": lambda: ops.inverse_transform(dxb, band, lp, ones, conj_input=True),
        "dw": lambda: ops.mac("dw", xb, gb, g, "torch"),
        "wB": lambda: ops.weight_from_band(dwb, band, k, dil),
    }
    return {name: _med(fn, reps) for name, fn in fns.items()}


def layer_rows(model_name: str, batch: int, rate: float, reps: int) -> list[dict]:
    case = MODELS[model_name]
    torch.manual_seed(0)
    model = case.build()
    x, _ = inputs(case, batch)
    shapes = Counter()
    convs = {}
    for conv, shape in conv_inputs(model, x):
        key = (shape, conv.out_channels, conv.kernel_size, conv.stride)
        shapes[key] += 1
        convs.setdefault(key, conv)
    rows = []
    for key, count in shapes.items():
        conv = convs[key]
        cls = BLConv2d if isinstance(conv, nn.Conv2d) else BLConv1d
        bl = cls.from_conv(conv, compress_rate=rate, backend="torch")
        xi = torch.randn(*key[0], requires_grad=True)
        gy = torch.randn_like(conv(xi))
        fns = {"nn": _fwd_bwd(conv, xi, gy), "bl": _fwd_bwd(bl, xi, gy)}
        t = {k: [] for k in fns}
        for _ in range(reps):
            for name, fn in fns.items():
                t0 = CLOCK()
                fn()
                t[name].append(CLOCK() - t0)
        nn_ms, bl_ms = (statistics.median(t[k]) * 1e3 for k in ("nn", "bl"))
        stages = stage_times(bl, xi.detach(), reps)
        rows.append(dict(key=key, count=count, conv=conv, band=bl.last_band, nn=nn_ms, bl=bl_ms, **stages))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="see bench.ab_models")
    args = parser.parse_args(argv)
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    rows = layer_rows(args.model, args.batch, args.rate, args.reps)
    print(
        f"{args.model} batch {args.batch}, rate {args.rate}, median of {args.reps} "
        f"(ms, {args.clock} clock, {torch.get_num_threads()} threads), fwd+bwd per layer\n"
    )
    print("| layer | × | F | nn | BL | BL/nn | " + " | ".join(STAGES) + " | rest | limit |")
    print("|---|---|---|---|---|---|" + "---|" * (len(STAGES) + 2))
    tot_nn = tot_bl = 0.0
    for r in rows:
        shape, o, k, s = r["key"]
        name = f"{shape[1]}→{o} {'×'.join(map(str, shape[2:]))} k{k[0]} s{s[0]}"
        transforms = sum(r[n] for n in ("xT", "wT", "inv y", "gT", "inv dx", "wB"))
        macs = r["fwd"] + r["dx"] + r["dw"]
        rest = r["bl"] - transforms - macs
        limit = max((("transforms", transforms), ("MACs", macs), ("overhead", rest)), key=lambda p: p[1])[0]
        cells = " | ".join(f"{r[n]:.1f}" for n in STAGES)
        print(
            f"| {name} | {r['count']} | {r['band'].num_kept} | {r['nn']:.1f} | {r['bl']:.1f} | "
            f"{r['bl'] / r['nn']:.2f}× | {cells} | {rest:.1f} | {limit} |",
            flush=True,
        )
        tot_nn += r["count"] * r["nn"]
        tot_bl += r["count"] * r["bl"]
    print(f"\nall convs weighted by count: nn {tot_nn:.0f} ms, BL {tot_bl:.0f} ms ({tot_bl / tot_nn:.2f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

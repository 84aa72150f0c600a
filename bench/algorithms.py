"""The two algorithms per layer: every distinct conv shape of a whole model, fwd+bwd (or the
forward alone with ``--infer``) of ``nn.Conv*d``, the spectral and the spatial algorithm,
interleaved medians, beside what ``algorithm='auto'`` picks (the measured choice of
``bltriton.choice``: timed at the layer's first call, or read from the cache) and what the
estimate alone picks (``bltriton.spatial.estimate``, the prior; ``BLTRITON_AUTOTUNE=0``).

    python -m bench.algorithms [--model resnet18|fcn] [--batch 32] [--rate 0.5] [--reps 7] [--infer]

A row where a pick is not the faster of the two measured is a miss; the last line counts the
time the misses of each cost. Point ``BLTRITON_CACHE_DIR`` at an empty folder to measure the
choice afresh (else picks cached by an earlier run are read).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from torch import nn

from bench.models import MODELS, inputs
from bench.profile_layers import conv_inputs
from bltriton import BLConv1d, BLConv2d, spatial


def _step(layer: nn.Module, x: torch.Tensor, gy: torch.Tensor, infer: bool):
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def run() -> None:
        if infer:
            with torch.no_grad():
                layer(x)
        else:
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x).backward(gy)
        sync()

    return run


def _chosen(layer: nn.Module, x: torch.Tensor) -> tuple[str, str, float, float, dict]:
    """What ``auto`` picks for ``layer`` on ``x`` (measured), what the estimate alone picks, the
    estimate's two times (ms) and the cost terms behind them (for ``bench/fit_rule.py``)."""

    layer.algorithm = "auto"
    with torch.set_grad_enabled(x.requires_grad):
        layer(x)
    info = layer._last_call  # what the module's last call recorded: its algorithm and spec
    spec = replace(info["spec"], algorithm="spectral")
    shapes = (tuple(x.shape), tuple(layer.weight.shape))
    est = spatial.estimate(spec, *shapes, x.device, x.requires_grad)
    prior = spatial.choose_algorithm("auto", spec, *shapes, x.device, x.requires_grad)
    rule = spatial.RULES[spatial.rule_key(x.device)]
    terms = dict(zip(("spectral", "spatial"), spatial.cost_terms(spec, *shapes, x.requires_grad, rule)))
    return info["algorithm"], prior, est[0] * 1e3, est[1] * 1e3, terms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--infer", action="store_true", help="forward under no_grad only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=str, default=None, help="append the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    case = MODELS[args.model]
    x0, _ = inputs(case, args.batch)
    seen = conv_inputs(case.build(), x0)
    rows, miss_ms, prior_miss_ms = [], 0.0, 0.0
    done = set()
    print(f"{args.model} b{args.batch} r={args.rate} {'inference' if args.infer else 'fwd+bwd'}, ms")
    print(
        "layer (x count) | nn | spectral | spatial | auto picks | estimate picks | estimate spectral / "
        "spatial | spatial vs spectral"
    )
    for conv, shape in seen:
        key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, shape)
        if key in done:
            continue
        done.add(key)
        mult = sum(
            1
            for c, s in seen
            if s == shape and (c.in_channels, c.out_channels, c.stride) == (*key[:2], key[3])
        )
        cls = BLConv2d if isinstance(conv, nn.Conv2d) else BLConv1d
        conv = conv.to(args.device)
        layers = {"nn": conv}
        for alg in ("spectral", "spatial"):
            layers[alg] = cls.from_conv(conv, compress_rate=args.rate, algorithm=alg)
        if args.infer:  # as a user runs inference: eval() (the spectral layer caches its filter band)
            for m in layers.values():
                m.eval()
        x = torch.randn(*shape, device=args.device, requires_grad=not args.infer)
        gy = torch.randn_like(conv(x)) if not args.infer else None
        with torch.no_grad():  # the two algorithms compute the same function
            ref = layers["spectral"](x)
            err = ((layers["spatial"](x) - ref).norm() / ref.norm()).item()
        fns = {k: _step(m, x, gy, args.infer) for k, m in layers.items()}
        ts = {k: [] for k in fns}
        for fn in fns.values():
            fn()
        for _ in range(args.reps):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                ts[k].append((time.perf_counter() - t0) * 1e3)
        med = {k: statistics.median(v) for k, v in ts.items()}
        probe = cls.from_conv(conv, compress_rate=args.rate)
        probe.train(not args.infer)
        picked, prior, est_spec, est_spat, terms = _chosen(probe, x)
        best = min(med["spectral"], med["spatial"])
        if picked in med:
            miss_ms += (med[picked] - best) * mult
        prior_miss_ms += (med[prior] - best) * mult
        size = "x".join(map(str, shape[2:]))
        name = f"{conv.in_channels}->{conv.out_channels} {size} k{conv.kernel_size[0]} s{conv.stride[0]}"
        rows.append((name, mult, med, picked, est_spec, est_spat, err, terms, prior))
        print(
            f"{name} (x{mult}) | {med['nn']:.2f} | {med['spectral']:.2f} | {med['spatial']:.2f} | {picked}"
            f" | {prior} | {est_spec:.2f} / {est_spat:.2f} | rel diff {err:.1e}",
            flush=True,
        )
    total = {k: sum(r[2][k] * r[1] for r in rows) for k in ("nn", "spectral", "spatial")}
    auto = sum(r[2].get(r[3], float("nan")) * r[1] for r in rows)
    prior = sum(r[2][r[8]] * r[1] for r in rows)
    best = sum(min(r[2]["spectral"], r[2]["spatial"]) * r[1] for r in rows)
    if args.json:
        import json
        from pathlib import Path

        path = Path(args.json)
        old = json.loads(path.read_text()) if path.exists() else []
        rule_key = spatial.rule_key(torch.device(args.device))
        for name, mult, med, picked, es, ea, err, terms, prior_pick in rows:
            old.append(
                {"model": args.model, "batch": args.batch, "rate": args.rate, "infer": args.infer,
                 "device": args.device, "rule": rule_key, "layer": name, "count": mult, "ms": med,
                 "auto": picked, "estimate_pick": prior_pick,
                 "estimate_ms": {"spectral": es, "spatial": ea}, "rel_diff": err, "terms": terms}
            )  # fmt: skip
        path.write_text(json.dumps(old, indent=1))
    print(
        f"all convs, weighted: nn {total['nn']:.1f} | spectral {total['spectral']:.1f} | spatial "
        f"{total['spatial']:.1f} | best per layer {best:.1f} | auto {auto:.1f} "
        f"({auto / total['nn']:.2f}x nn, {auto / best - 1:+.1%} over the best; misses cost {miss_ms:.1f} ms)"
        f" | estimate {prior:.1f} "
        f"({prior / best - 1:+.1%}; misses cost {prior_miss_ms:.1f} ms)"
    )


if __name__ == "__main__":
    main()

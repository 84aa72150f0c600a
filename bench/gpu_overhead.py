"""Where a whole-model step's time goes on CUDA: kernel count, device-busy time and host time.

For ResNet-18 (CIFAR, batch 128) and the full FCN (batch 64), one training step of ``nn.Conv*d``
and of the band-limited model (torch and triton backends, r=0.5) under ``torch.profiler``: CUDA
kernels launched per step, the sum of their device time, the step's wall time (host-bound when
wall ≫ device time), and the top kernels and host ops. ``python -m bench.gpu_overhead [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.models import MODELS, inputs, make_variant, train_step_fn


def profile_case(
    model: str,
    batch: int,
    impl: str,
    rate: float | None,
    steps: int = 3,
    compile_mode: str | None = None,
    algorithm: str | None = None,
) -> dict:
    torch.manual_seed(0)
    kwargs = {} if impl == "nn" else {"backend": impl, "algorithm": algorithm}
    case = MODELS[model]
    net = make_variant(case.build(), rate, **kwargs).cuda()
    if compile_mode is not None:  # e.g. "reduce-overhead": CUDA graphs replay the host's launches
        net = torch.compile(net, mode=compile_mode)
    x, target = inputs(case, batch, "cuda")
    step = train_step_fn(net, x, target)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) / 10 * 1e3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    dev = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]

    def dev_us(e):
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)

    kernels = sum(e.count for e in dev) / steps
    device_ms = sum(dev_us(e) for e in dev) / steps / 1e3
    top_dev = sorted(dev, key=dev_us, reverse=True)[:12]
    cpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    top_cpu = sorted(cpu, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return {
        "model": model,
        "batch": batch,
        "impl": (impl if algorithm is None else f"{impl}/{algorithm}")
        + ("" if compile_mode is None else f"+compile({compile_mode})"),
        "rate": rate,
        "wall_ms": round(wall_ms, 3),
        "device_busy_ms": round(device_ms, 3),
        "kernels_per_step": kernels,
        "top_device": [(e.key[:80], e.count // steps, round(dev_us(e) / steps / 1e3, 4)) for e in top_dev],
        "top_host_self": [
            (e.key[:80], e.count // steps, round(e.self_cpu_time_total / steps / 1e3, 4)) for e in top_cpu
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--quick", action="store_true", help="nn, spectral and auto eager; nn and auto under CUDA graphs"
    )
    parser.add_argument(
        "--tf32-matmul",
        action="store_true",
        help="experiment: torch.backends.cuda.matmul.allow_tf32 = True for the whole run (the "
        "transforms' and projections' GEMMs in TF32, as cuDNN's convolutions already are)",
    )
    parser.add_argument(
        "--direct-ratio",
        type=float,
        default=None,
        help="experiment: bltriton.spatial.RULES['cuda'].direct_ratio (a large value makes every "
        "2D projection one Kronecker GEMM)",
    )
    args = parser.parse_args()
    if args.tf32_matmul:
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.direct_ratio is not None:
        from dataclasses import replace

        from bltriton import spatial

        spatial.RULES["cuda"] = replace(spatial.RULES["cuda"], direct_ratio=args.direct_ratio)
    rows = []
    for model, batch in (("resnet18", 128), ("fcn", 64)):
        # (impl, rate, compile mode, algorithm): None is the library's default ("auto").
        cases = [
            ("nn", None, None, None),
            ("torch", 0.5, None, "spectral"),
            ("triton", 0.5, None, "spectral"),
            ("triton", 0.5, None, None),
            ("nn", None, "reduce-overhead", None),
            ("triton", 0.5, "reduce-overhead", "spectral"),
            ("triton", 0.5, "reduce-overhead", None),
        ]
        if args.quick:
            cases = [c for c in cases if not (c[2] and c[3] == "spectral") and c[0] != "torch"]
        for impl, rate, mode, algorithm in cases:
            try:
                rows.append(profile_case(model, batch, impl, rate, compile_mode=mode, algorithm=algorithm))
            except Exception as err:  # keep the other rows
                rows.append({"model": model, "impl": impl, "error": repr(err)})
            r = rows[-1]
            name = r.get("impl", impl)
            print(
                f"{model:9s} b{batch:<4d} {name:6s} r{rate}: wall {r.get('wall_ms')} ms, device busy "
                f"{r.get('device_busy_ms')} ms, kernels/step {r.get('kernels_per_step')}"
                f" {r.get('error', '')}",
                flush=True,
            )
            if args.out:  # after every row: a run cut short keeps what it measured
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "gpu_overhead.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

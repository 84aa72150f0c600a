"""Where one band-limited layer call spends its host time: ``python -m bench.host_profile``.

For a layer shape of ``bench.shapes`` (default: the "host-tiny" 4->4-channel 8x8 layer, whose
device work is negligible), fwd+bwd of ``nn.Conv*d``, of the spectral algorithm on each backend
and of the spatial algorithm: the wall time per call with a device sync after every call, the
host time per call when calls are queued without syncs, then a ``cProfile`` of the band-limited
calls (top functions by own time) and the ``torch.profiler`` host ops that block (synchronize,
memcpy). Runs on the CPU too (``--device cpu``). Prints text; ``--out DIR`` also writes the tables as JSON.
"""

from __future__ import annotations

import os
import sys

if "torch" not in sys.modules and os.environ.get("TRITON_INTERPRET") is None:
    import torch as _torch_probe  # decides whether the CUDA path must be forced on the CPU

    if not _torch_probe.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import argparse
import cProfile
import io
import json
import pstats
import time
from pathlib import Path

import torch

from bench.profile_layers import _fwd_bwd
from bench.shapes import FCN_LAYERS, SHAPES_1D, SHAPES_2D, SHAPES_HOST, ConvShape, make_layer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_calls(step, device: torch.device, calls: int, sync_each: bool) -> float:
    """Mean ms per call of ``step`` over ``calls`` calls (after 5 warm-up calls), with a device
    sync after each call or only at the end (then: the host's time per queued call)."""
    for _ in range(5):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        step()
        if sync_each:
            _sync(device)
    host = time.perf_counter() - t0
    _sync(device)
    return host / calls * 1e3


def _cprofile(step, device: torch.device, calls: int, top: int) -> str:
    """``cProfile`` of ``calls`` calls of ``step``: the ``top`` functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        step()
    _sync(device)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def profile_layer(shape: ConvShape, impl: str, rate: float, device: torch.device, calls: int) -> dict:
    """One layer's host time per fwd+bwd. ``impl`` ``"triton-stub"``: the triton backend's CUDA
    code path on the CPU with every Triton launch stubbed out (``bench.launches``), i.e. the
    host's own time per call without the interpreter."""
    if impl == "triton-stub":
        from bench.launches import TritonLaunches

        with TritonLaunches(stub=True):
            return profile_layer(shape, "triton", rate, device, calls) | {"impl": impl}
    layer = make_layer(shape, impl, rate, device)
    x = torch.randn(shape.n, shape.c, *shape.size, device=device, requires_grad=True)
    step = _fwd_bwd(layer, x, torch.randn_like(layer(x)))
    row = {
        "shape": shape.id,
        "impl": impl,
        "rate": rate,
        "ms_per_call_synced": round(time_calls(step, device, calls, True), 4),
        "host_ms_per_call_queued": round(time_calls(step, device, calls, False), 4),
    }
    if impl == "nn":
        return row
    row["cprofile_tottime"] = _cprofile(step, device, calls, 25)
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as tp:
        for _ in range(10):
            step()
        _sync(device)
    events = [e for e in tp.key_averages() if e.device_type == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    row["host_ops_self_ms_per_call"] = [
        (e.key[:70], e.count // 10, round(e.self_cpu_time_total / 10 / 1e3, 4)) for e in events[:20]
    ]
    return row


def profile_model(spec: str, impl: str, rate: float, device: torch.device, steps: int = 10) -> dict:
    """``spec`` = "model:batch" of ``bench.models``: ms per synced train step and a cProfile of
    ``steps`` steps (top functions by own time). ``impl`` as :func:`bench.shapes.make_layer`:
    ``"nn"``, ``"spatial"`` or a backend name (the spectral algorithm on it)."""
    from bench.models import MODELS, inputs, make_variant, train_step_fn

    name, batch = spec.split(":")
    case = MODELS[name]
    torch.manual_seed(0)
    if impl == "nn":
        kwargs = {}
    elif impl == "spatial":
        kwargs = {"algorithm": "spatial"}
    else:
        kwargs = {"backend": impl, "algorithm": "spectral"}
    net = make_variant(case.build(), None if impl == "nn" else rate, **kwargs).to(device)
    x, target = inputs(case, int(batch), device)
    step = train_step_fn(net, x, target)
    row = {
        "model": spec,
        "impl": impl,
        "rate": rate,
        "ms_per_step": round(time_calls(step, device, steps, True), 3),
    }
    row["cprofile_tottime"] = _cprofile(step, device, steps, 30)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", default="host-tiny", help="comma list of bench.shapes names")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--models", default="", help='comma list of "model:batch" train steps to profile')
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    by_id = {s.name: s for s in SHAPES_2D + SHAPES_1D + FCN_LAYERS + SHAPES_HOST}
    # On the CPU the triton backend's CUDA path runs with its launches stubbed (triton-stub).
    impls = ["nn", "torch", "spatial"] + (["triton"] if device.type == "cuda" else ["triton-stub"])
    rows = []
    for spec in filter(None, args.models.split(",")):
        for impl in impls:
            if impl == "triton-stub":
                continue  # a model's other layers run for real: no stubbed step
            row = profile_model(spec, impl, args.rate, device)
            rows.append(row)
            print(f"{spec} {impl}: {row['ms_per_step']} ms/step")
            print(row["cprofile_tottime"][:7000], flush=True)
    for sid in filter(None, args.shapes.split(",")):
        for impl in impls:
            row = profile_layer(by_id[sid], impl, args.rate, device, args.calls)
            rows.append(row)
            print(
                f"{sid} {impl}: {row['ms_per_call_synced']} ms/call synced, "
                f"{row['host_ms_per_call_queued']} ms host/call queued",
                flush=True,
            )
            if "cprofile_tottime" in row:
                print(row["cprofile_tottime"][:6000])
                for key, count, ms in row["host_ops_self_ms_per_call"]:
                    print(f"  {ms:8.4f} ms  x{count:<4d} {key}")
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "host_profile.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

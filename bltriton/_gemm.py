"""The real fp32 GEMMs of the CPU transforms, through oneDNN where it runs faster than ``torch.mm``.

``torch.mm`` on the CPU calls the BLAS torch was built with (MKL in the official wheels), and MKL
takes AVX2 code paths on AMD CPUs: on the 2-core AMD EPYC (AVX-512) of bench/NOTES.md a
``[65536, 32] x [32, 26]`` product (a 32x32 map's column transform) took 0.94 ms through
``torch.mm`` and 0.42 ms through oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``, the
kernel ``torch.compile`` uses for frozen linear layers); a 1024-cube 11.0 ms against 4.6 ms.
On a CPU where MKL is as fast, the one-time probe below keeps ``torch.mm``.

Only the real float32 GEMMs of :mod:`bltriton.transforms` come here (the transforms' column
stages, the direct transforms and the filter transform); complex products and the batched
contractions stay on torch. ``BLTRITON_CPU_GEMM`` forces a provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode

from bltriton import _env

__all__ = ["matmul_nt", "provider"]

# Below this many multiply-adds a oneDNN call's fixed cost (about 11 us here, against 1 us for
# torch.mm) outweighs its faster arithmetic.
MIN_MACS = 1 << 21

_PROBE: dict[str, str] = {}  # "choice" -> "onednn" | "torch", once per process


def _onednn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")


def _probe() -> str:
    """Time both providers on one transform-like shape (``[16384, 32] x [32, 32]``, two warm-up
    calls each, then 9 interleaved rounds) and keep oneDNN if its best time is at least 1.25x
    faster than ``torch.mm``'s (best times: a busy moment of the machine must not decide)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return "torch"
        x, w = torch.randn(16384, 32), torch.randn(32, 32)
        if not torch.allclose(_onednn(x, w), x @ w.T, rtol=1e-4, atol=1e-4):
            return "torch"
    except Exception:  # an op missing from this build, or rejecting the call
        return "torch"
    best = best_times({"onednn": lambda: _onednn(x, w), "torch": lambda: x @ w.T})
    return "onednn" if best["onednn"] * 1.25 <= best["torch"] else "torch"


def best_times(fns: dict[str, Callable[[], object]], warmup: int = 2, rounds: int = 9) -> dict[str, float]:
    """Best seconds of each function over ``rounds`` interleaved rounds after ``warmup`` calls
    each: the providers' probes (best times: a busy moment of the machine must not decide)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(v) for name, v in times.items()}


def provider() -> str:
    """The provider of large real fp32 CPU GEMMs in this process: ``"onednn"`` or ``"torch"``
    (``BLTRITON_CPU_GEMM``, or the probe's choice under ``auto``)."""
    forced = _env.cpu_gemm()
    if forced != "auto":
        return forced
    if "choice" not in _PROBE:
        if _current_dispatch_mode() is not None or torch.compiler.is_compiling():
            return "torch"  # no timing under fake tensors or a tracer; probe at a real call
        _PROBE["choice"] = _probe()
    return _PROBE["choice"]


def matmul_nt(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` for 2-D ``x`` ``[M, K]`` and ``w`` ``[N, K]`` (a fresh ``[M, N]`` tensor).

    oneDNN serves it when both are contiguous float32 CPU tensors that autograd does not track,
    the product has at least :data:`MIN_MACS` multiply-adds and :func:`provider` says so; else
    ``torch.mm``.
    """
    m, k = x.shape
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and m * k * w.shape[0] >= MIN_MACS
        and x.is_contiguous()
        and w.is_contiguous()
        and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
        and provider() == "onednn"
    ):
        return _onednn(x, w)
    return x @ w.T

"""Launch configs of ``band_cmac_kernel``: the tuner's menu, the heuristic default, the fit rule.

A config is a ``triton.Config`` whose kwargs are the complex tile ``BLOCK_M × BLOCK_N ×
BLOCK_K`` and ``FREQS`` (frequencies per program). The kernel's real GEMM tile is ``BLOCK_M ×
2·BLOCK_N × 2·BLOCK_K`` (see ``band_mac``). The autotuner stores configs as flat dicts
(:func:`as_dict` / :func:`as_config` convert).

Which configs fit (no register spill, shared memory within the device's limit) was measured by
compiling every menu entry for sm_80 and sm_90 in every precision (``python -m
bench.compile_report``); :func:`fits` is the rule that reproduces it, and the ``compile_check``
tests hold the rule against the compiler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import triton

CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "FREQS")


def as_config(cfg: triton.Config | Mapping[str, Any]) -> triton.Config:
    """A ``triton.Config`` from itself or from its flat dict (``BLOCK_*``, ``FREQS``,
    ``num_warps``, ``num_stages``)."""
    if isinstance(cfg, triton.Config):
        return cfg
    if not isinstance(cfg, Mapping):
        raise TypeError(f"config must be a triton.Config or a dict; got {type(cfg).__name__}")
    unknown = set(cfg) - {*CONFIG_KEYS, "num_warps", "num_stages"}
    missing = set(CONFIG_KEYS) - set(cfg)
    if unknown or missing:
        raise ValueError(
            f"config must have keys {CONFIG_KEYS} (+ num_warps, num_stages); "
            f"unknown {sorted(unknown)}, missing {sorted(missing)}"
        )
    return triton.Config(
        {k: int(cfg[k]) for k in CONFIG_KEYS},
        num_warps=int(cfg.get("num_warps", 4)),
        num_stages=int(cfg.get("num_stages", 2)),
    )


def as_dict(cfg: triton.Config | Mapping[str, Any]) -> dict[str, int]:
    """The flat dict of a config (the autotuner's JSON form)."""
    cfg = as_config(cfg)
    return {
        **{k: cfg.kwargs[k] for k in CONFIG_KEYS},
        "num_warps": cfg.num_warps,
        "num_stages": cfg.num_stages,
    }


def _cfg(bm: int, bn: int, bk: int, warps: int, stages: int, freqs: int = 1) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "FREQS": freqs},
        num_warps=warps,
        num_stages=stages,
    )


def uses_dot(cfg: triton.Config) -> bool:
    """The tile feeds ``tl.dot`` (real ``[BLOCK_M, 2·BLOCK_K] @ [2·BLOCK_K, 2·BLOCK_N]`` needs
    every dim >= 16); smaller tiles take the broadcast-and-sum path."""
    kw = cfg.kwargs
    return kw["BLOCK_M"] >= 16 and kw["BLOCK_N"] >= 8 and kw["BLOCK_K"] >= 8


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(1, int(n)))


# Dot-path menus (complex tile M, N, K, warps, stages) per arithmetic class, every entry compiled
# for sm_80 and sm_90 in fwd/dx/dw without a register spill (bench/results/compile-sm*.md):
#   "mma"  tf32/bf16/fp16 tensor cores (wgmma on sm_90 where the tile allows, mma.sync on sm_80);
#   "fma"  fp32 ieee (no fp32 tensor-core path: FMA, registers hold whole K-slices of both tiles);
#   "fp64" complex128 (mma.m8n8k4 f64).
# Dropped after compiling (spill bytes): mma 32x64x16/4w (8, bf16 dx sm_90), 32x32x32/4w (32,
# odd shapes sm_90), 32x32x16/4w with 3-4 stages (24, half dx/dw on sm_80, 8-byte-aligned rows);
# fma 64x32x16/8w (16-32), 32x64x16/8w (8), 32x64x8/8w (24-48, odd shapes), 64x64x16 and larger
# (1-9 KB); fp64 16x16x16/2w and /4w (8-24), 32x32x16/4w (8-24, odd shapes sm_80), 64x64x16/4w
# and larger (0.7-2.5 KB).
DOT_MENUS = {
    "mma": [
        _cfg(16, 16, 16, 4, 3),
        _cfg(64, 64, 16, 4, 3),
        _cfg(128, 64, 16, 8, 3),
        _cfg(64, 128, 16, 8, 3),
    ],
    "fma": [
        _cfg(16, 16, 8, 4, 3),
        _cfg(16, 16, 16, 4, 3),
        _cfg(32, 32, 16, 8, 3),
        _cfg(64, 64, 8, 8, 3),
    ],
    "fp64": [
        _cfg(16, 16, 8, 4, 3),
        _cfg(32, 32, 8, 4, 3),
        _cfg(32, 32, 16, 8, 3),
        _cfg(64, 32, 16, 8, 3),
        _cfg(32, 64, 16, 8, 3),
        _cfg(64, 64, 8, 8, 3),
    ],
}
# Entries clean on sm_90 (wgmma keeps the accumulator of a warpgroup) that spill on sm_80:
# 64x64x32/4w (40-312 B), 128x128x16/8w (48-296 B), 64x32x16/4w (24 B, tf32 fwd), 64x16x16/4w
# (24 B, half dx), 64x64x16/8w (8 B, tf32 dw), 32x32x16/4w/2st (28 B, tf32 fwd), fma 32x32x8/4w
# (16 B, dw with 8-byte-aligned rows). Offered on compute capability 9.x. (The small sm_80 spills
# sit at 80-128 registers: ptxas trading a few bytes for occupancy, not register pressure.)
SM90_MENUS = {
    "mma": [
        _cfg(32, 32, 16, 4, 2),
        _cfg(64, 16, 16, 4, 3),
        _cfg(64, 32, 16, 4, 3),
        _cfg(64, 64, 32, 4, 3),
        _cfg(64, 64, 16, 8, 4),
        _cfg(128, 128, 16, 8, 3),
    ],
    "fma": [_cfg(32, 32, 8, 4, 3)],
    "fp64": [],
}
# Heuristic default per class (must be clean on every arch): the first entry of this order that
# the matrix fills. Without GPU timings the compiler's evidence decides: the largest spill-free
# tile at moderate register use (mma 64x64x16/4w: 141 registers and wgmma on sm_90, 235 on
# sm_80; fma 32x32x16/8w: 178; fp64 32x32x16/8w: 128).
DEFAULT_ORDER = {
    "mma": [(64, 64, 16, 4), (16, 16, 16, 4)],
    "fma": [(32, 32, 16, 8), (16, 16, 16, 4), (16, 16, 8, 4)],
    "fp64": [(32, 32, 16, 8), (32, 32, 8, 4), (16, 16, 8, 4)],
}


def arith_class(precision: str, dtype: Any = "torch.complex64") -> str:
    """``"fp64"`` (complex128), ``"fma"`` (fp32 ieee) or ``"mma"`` (tf32/bf16/fp16)."""
    if str(dtype).endswith("complex128"):
        return "fp64"
    return "fma" if precision == "ieee" else "mma"


def _dot_shape_class(m: int, n: int, k: int) -> bool:
    return m >= 16 and n >= 8 and k >= 8


def _fills(cfg: triton.Config, m: int, n: int, k: int) -> bool:
    """A tile more than twice the matrix only computes masked zeros."""
    kw = cfg.kwargs
    return (
        kw["BLOCK_M"] <= max(16, _pow2(m))
        and kw["BLOCK_N"] <= max(16, _pow2(n))
        and kw["BLOCK_K"] <= max(16, _pow2(k))
    )


def _small_config(m: int, n: int, k: int, f: int, freqs: int | None = None) -> triton.Config:
    """Broadcast-path tile sized to the matrix: at most 1024 complex products per program and few
    warps, so each thread still loads a contiguous pair (a 16x1x1 tile on 4 warps gave every
    thread one 4-byte element)."""
    bm = min(64, _pow2(m))
    bn = min(16, _pow2(n))
    bk = max(1, min(_pow2(k), 64, 1024 // (bm * bn)))
    warps = max(1, min(4, bm * bn * bk // 256))
    if freqs is None:
        freqs = max(1, min(8, 2048 // max(1, m * n * max(1, min(k, bk)))))
        freqs = min(freqs, _pow2(f))
    return _cfg(bm, bn, bk, warps, 2, freqs)


def default_config(
    m: int, n: int, k: int, f: int, precision: str = "tf32", dtype: Any = "torch.complex64"
) -> triton.Config:
    """Heuristic config for an ``M × N × K`` product over ``F`` frequencies (what runs untuned):
    the class's preferred dot tile that the matrix fills, or the broadcast tile of
    :func:`_small_config` when a matrix dim is too small for ``tl.dot``."""
    if not _dot_shape_class(m, n, k):
        return _small_config(m, n, k, f)
    cls = arith_class(precision, dtype)
    for bm, bn, bk, warps in DEFAULT_ORDER[cls]:
        for cfg in DOT_MENUS[cls]:
            kw = cfg.kwargs
            tile = (kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"], cfg.num_warps)
            if tile == (bm, bn, bk, warps) and _fills(cfg, m, n, k):
                return cfg
    return DOT_MENUS[cls][0]


@lru_cache(maxsize=1024)
def _candidate_configs(m: int, n: int, k: int, f: int, cls: str) -> tuple[triton.Config, ...]:
    if not _dot_shape_class(m, n, k):
        base = _small_config(m, n, k, f)
        out = [base]
        for freqs in (1, 2, 4, 8, 16):
            if freqs != base.kwargs["FREQS"] and freqs <= _pow2(f):
                out.append(_small_config(m, n, k, f, freqs))
        return tuple(out)
    return tuple(cfg for cfg in DOT_MENUS[cls] + SM90_MENUS[cls] if _fills(cfg, m, n, k))


def candidate_configs(
    m: int, n: int, k: int, f: int, precision: str = "tf32", dtype: Any = "torch.complex64"
) -> tuple[triton.Config, ...]:
    """Configs the autotuner may time for this shape and precision (tiles the shape can fill,
    the heuristic default among them), before the device rule :func:`prune_configs`. The same
    tuple for the same arguments."""
    return _candidate_configs(m, n, k, f, arith_class(precision, dtype))


# Opt-in shared memory per block (bytes) by compute capability; other devices report theirs.
SHARED_LIMIT = {(8, 0): 166912, (8, 6): 101376, (8, 9): 101376, (9, 0): 232448}


def shared_estimate(cfg: triton.Config, dtype: Any = "torch.complex64") -> int:
    """Upper bound of the kernel's shared memory in bytes: the pipeline's ``num_stages`` copies of
    the A tile ``[BM, 2BK]`` and the block form ``[2BK, 2BN]`` in the storage dtype (half
    precisions convert after the load), or the accumulator's layout-conversion scratch ``[BM,
    2BN]``, whichever is larger. The compile check holds it against the compiled metadata."""
    kw = cfg.kwargs
    elem = 8 if str(dtype).endswith("complex128") else 4
    stage = (kw["BLOCK_M"] * 2 * kw["BLOCK_K"] + 4 * kw["BLOCK_K"] * kw["BLOCK_N"]) * elem
    return max(stage * max(1, cfg.num_stages), kw["BLOCK_M"] * 2 * kw["BLOCK_N"] * elem)


def menu(cls: str, capability: tuple[int, int]) -> list[triton.Config]:
    """The compile-checked dot configs of an arithmetic class on a device of this capability."""
    return DOT_MENUS[cls] + (SM90_MENUS[cls] if capability[0] >= 9 else [])


def fits(
    cfg: triton.Config, precision: str, dtype: Any, capability: tuple[int, int], shared_limit: int
) -> bool:
    """Whether ``cfg`` runs without register spills and within ``shared_limit`` bytes of shared
    memory on a device of ``capability``: a broadcast tile, or an entry of its class's
    compile-checked menu for that arch whose :func:`shared_estimate` fits."""
    if not uses_dot(cfg):
        return True
    allowed = {tuple(sorted(as_dict(c).items())) for c in menu(arith_class(precision, dtype), capability)}
    if tuple(sorted(as_dict(cfg).items())) not in allowed:
        return False
    return shared_estimate(cfg, dtype) <= shared_limit


def device_shared_limit(device: Any) -> int:
    """Opt-in shared memory per block of a CUDA device."""
    import torch

    props = torch.cuda.get_device_properties(device)
    limit = getattr(props, "shared_memory_per_block_optin", None)
    return int(limit) if limit else SHARED_LIMIT.get((props.major, props.minor), 101376)


def prune_configs(configs: Sequence[Mapping[str, Any]], key: Mapping[str, Any], device: Any) -> list[dict]:
    """The autotuner's prune hook: drop configs that would spill or exceed the device's shared
    memory (see :func:`fits`), before any timing."""
    import torch

    if device is None or torch.device(device).type != "cuda":
        return [dict(c) for c in configs]
    limit = device_shared_limit(device)
    cap = tuple(torch.cuda.get_device_capability(device))
    prec, dtype = str(key.get("precision", "ieee")), str(key.get("dtype", "torch.complex64"))
    return [dict(c) for c in configs if fits(as_config(c), prec, dtype, cap, limit)]

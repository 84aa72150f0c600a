"""The GPU pipeline's band contraction: planar complex GEMMs over the kept frequencies, with the
filter band formed from the raw filter taps inside the contraction and the bias gradient out of
the dW contraction.

The three contractions of :mod:`bltriton.ops` (conjugate domain: the operands arrive
pre-conjugated, so nothing here conjugates) on compact frequency-major complex bands, each within a
channel group (``C = groups·Cg``, ``O = groups·Og``):

    fwd  Y[f, b, o]   = Σ_c X[f, b, c] · Wc[f, o, c]     P[m=b, k=c] = X,   Q[k=c, n=o] = Wc[o, c]
    dx   dXc[f, b, c] = Σ_o Gc[f, b, o] · Wc[f, o, c]    P[m=b, k=o] = Gc,  Q[k=o, n=c] = Wc[o, c]
    dw   dW[f, o, c]  = Σ_b Gc[f, b, o] · X[f, b, c]     P[m=o, k=b] = Gc,  Q[k=b, n=c] = X

all as ``out[f, m, n] = Σ_k P[f, m, k] · Q[f, k, n]`` with every operand addressed by strides.

*Filter from taps.* In fwd and dx the filter may be the real weight ``w [O, Cg, taps]`` with the
tap operator ``T [2, F, taps]`` (the DFT of each tap position at each kept frequency, already
conjugated): ``Wc[f, o, c] = Σ_t (T[0, f, t] + i·T[1, f, t]) · w[o, c, t]``. A program forms its
``[BLOCK_K, BLOCK_N]`` slab of ``Wc`` in registers, one real ``w`` slab per tap (a runtime loop),
so the layer needs no separate filter-transform launch and never stores the filter band. dx reads
the same ``w`` with k = o and n = c: only the strides differ.

*Bias gradient.* In dw, ``db[o] = Σ_b Re Gc[0, b, o]`` (frequency 0 is the DC term): the program
that holds frequency 0 and the first N-tile of each (group, M-tile) sums the real parts of the
``Gc[0]`` tiles it reads and writes its ``BLOCK_M`` entries of ``db``: one writer per element, no
atomics, deterministic.

*Planar arithmetic.* Triton has no complex dtype: operands are ``torch.view_as_real`` views with
re/im interleaved, each tile is loaded as contiguous runs of real pairs and ``tl.split`` into its
real and imaginary planes; a K-step is four real ``tl.dot`` s into two accumulators,

    acc_r += pr·qr + pi·(−qi),    acc_i += pr·qi + pi·qr

and the result is stored as ``tl.join(acc_r, acc_i)``, one contiguous run of pairs per output row.
Every dot dim is at least 16 (ragged edges masked; a depthwise K = 1 wastes lanes but stays
correct), and a program loops over ``FREQS`` frequencies so tiny per-frequency products still give
it real work. Grid: ``(cdiv(F, FREQS), groups · tiles_m · tiles_n)``; neighbouring programs hold
the same tile at neighbouring frequencies, so they share the (frequency-independent) ``w`` slabs
in L2.

Precision (complex64): ``"ieee"`` fp32 dots, ``"tf32"`` tensor-core tf32, ``"bf16"``/``"fp16"``
operands rounded to that dtype (after the filter is formed in fp32) with fp32 accumulation.
complex128 always takes fp64 "ieee" dots. The launch configs (menu and heuristic default) are at
the end of the file with the launcher that takes them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
from pathlib import Path
from typing import Any

import torch
import triton
import triton.language as tl
from bltriton.kernels.band_mac import _INTERPRETER_LOCK

# Hash of this file (kernel, menu and launcher): part of the tuner's cache key, so an edited
# kernel or menu is tuned anew.
SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

MODES = ("fwd", "dx", "dw")
PRECISIONS = ("ieee", "tf32", "bf16", "fp16")
CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "FREQS")

# int32 offsets unless a tensor spans this many reals: half of 2^31, so the masked offsets a
# tile computes past a tensor's end cannot wrap either (as in band_mac).
INT32_SPAN_LIMIT = 2**30

# CUDA grid dims 1 and 2 hold at most 65535 programs.
MAX_GRID_Y = 65535

# Register ceiling for ptxas (``.maxnreg``) on every direct launch. Left to itself, ptxas capped
# this kernel at 72-168 registers in a fifth of the small and mid tiles (16x16 to 64x32, varying
# with the shape's divisibility, the mode and FREQS) and spilled 8-56 bytes; at the hardware's
# 255 the same tiles compile without a spill (python -m bench.compile_tap_mac). Compiler evidence
# only, no GPU timing yet. torch's wrap_triton takes no maxnreg: launches through it go without.
MAXNREG = 255


# --------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def _load_planar(
    base, start_r, start_c, limit_r, limit_c, stride_r, stride_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, UNIT_COLS: tl.constexpr, IDX: tl.constexpr,
):  # fmt: skip
    """The complex tile ``[start_r : +BLOCK_R, start_c : +BLOCK_C]`` (zero past the limits) as
    its real and imaginary planes, each ``[BLOCK_R, BLOCK_C]``.

    ``UNIT_COLS``: the columns are unit-stride complex, so each tile row is ``2·BLOCK_C``
    contiguous reals (``stride_c`` unused). Else the rows are (``stride_r`` unused): the tile is
    loaded as ``2·BLOCK_R`` contiguous reals per column and the planes transposed. Strides in
    complex elements, doubled here so the compiler sees every row start on an 8-byte boundary.
    """
    if UNIT_COLS:
        rows = start_r + tl.arange(0, BLOCK_R).to(IDX)
        reals = 2 * start_c + tl.arange(0, 2 * BLOCK_C).to(IDX)
        ptr = base + (2 * stride_r) * rows[:, None] + reals[None, :]
        mask = (rows < limit_r)[:, None] & (reals < 2 * limit_c)[None, :]
        t = tl.load(ptr, mask=mask, other=0.0)
        re, im = tl.split(tl.reshape(t, (BLOCK_R, BLOCK_C, 2)))
    else:
        cols = start_c + tl.arange(0, BLOCK_C).to(IDX)
        reals = 2 * start_r + tl.arange(0, 2 * BLOCK_R).to(IDX)
        ptr = base + (2 * stride_c) * cols[:, None] + reals[None, :]
        mask = (cols < limit_c)[:, None] & (reals < 2 * limit_r)[None, :]
        t = tl.load(ptr, mask=mask, other=0.0)  # t[c, 2r + j]
        re_t, im_t = tl.split(tl.reshape(t, (BLOCK_C, BLOCK_R, 2)))
        re, im = tl.trans(re_t), tl.trans(im_t)
    return re, im


@triton.jit
def _form_filter(
    w_base, t_base, taps, stride_tp, start_k, start_n, limit_k, limit_n, stride_wk, stride_wn,
    BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, IDX: tl.constexpr, ACC_DTYPE: tl.constexpr,
):  # fmt: skip
    """The filter-band slab ``Q[start_k : +BLOCK_K, start_n : +BLOCK_N]`` (zero past the limits)
    formed from the real taps: ``Σ_t (T[0, f, t] + i·T[1, f, t]) · w[k, n, t]`` as its real and
    imaginary planes in ``ACC_DTYPE``.

    ``w_base`` points at the group's first weight, ``w[k, n, t]`` at ``stride_wk·k + stride_wn·n +
    t`` (reals); ``t_base`` at ``T[0, f, 0]``, with ``T[1, f, 0]`` ``stride_tp`` reals further.
    """
    ks = start_k + tl.arange(0, BLOCK_K).to(IDX)
    ns = start_n + tl.arange(0, BLOCK_N).to(IDX)
    ptr = w_base + stride_wk * ks[:, None] + stride_wn * ns[None, :]
    mask = (ks < limit_k)[:, None] & (ns < limit_n)[None, :]
    qr = tl.zeros((BLOCK_K, BLOCK_N), dtype=ACC_DTYPE)
    qi = tl.zeros((BLOCK_K, BLOCK_N), dtype=ACC_DTYPE)
    for t in range(taps):
        w = tl.load(ptr + t, mask=mask, other=0.0).to(ACC_DTYPE)
        tr = tl.load(t_base + t).to(ACC_DTYPE)
        ti = tl.load(t_base + stride_tp + t).to(ACC_DTYPE)
        qr += tr * w
        qi += ti * w
    return qr, qi


@triton.jit
def tap_cmac_kernel(
    # Real (view_as_real) views: P, Q (the complex band, or the real weight w when Q_TAPS), the tap
    # operator T (real [2, F, taps]; unused unless Q_TAPS), the output, db (unused unless HAS_DB).
    p_ptr, q_ptr, t_ptr, out_ptr, db_ptr,
    # Problem: out[f, m, n] = Σ_k P[f, m, k] · Q[f, k, n] per group; taps of w; tiles per group.
    M, N, K, F, taps, tiles_m, tiles_n,
    # Strides of P and the output in complex elements: frequency, tile row, tile column, group.
    # The output's unit-stride axis is n. Q's strides: complex as P's for a band; in reals of w
    # (stride_qf unused) when Q_TAPS.
    stride_pf, stride_pr, stride_pc, stride_pg,
    stride_qf, stride_qr, stride_qc, stride_qg,
    stride_of, stride_or, stride_og,
    # T[p, f, t] at p·stride_tp + f·stride_tf + t (reals).
    stride_tf, stride_tp,
    # Launch config (triton.Config kwargs).
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FREQS: tl.constexpr,
    # Derived by the launcher (_flags): operand layouts, filter form, bias gradient, index width,
    # precision.
    P_UNIT_COLS: tl.constexpr, Q_UNIT_COLS: tl.constexpr, Q_TAPS: tl.constexpr,
    HAS_DB: tl.constexpr, IDX: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    HALF_DTYPE: tl.constexpr, EMULATE_HALF: tl.constexpr, ACC_DTYPE: tl.constexpr,
):  # fmt: skip
    """One program: a ``BLOCK_M × BLOCK_N`` complex tile of ``out`` for ``FREQS`` consecutive kept
    frequencies of one channel group, and (``HAS_DB``, dw) the tile's ``BLOCK_M`` entries of
    ``db`` when it holds frequency 0 and the group's first N-tile. Grid: ``(cdiv(F, FREQS),
    groups · tiles_m · tiles_n)``. ``IDX``: the index dtype (int32 unless a tensor spans 2^30
    reals or more)."""
    pid_f = tl.program_id(0)
    pid_t = tl.program_id(1)
    tiles = tiles_m * tiles_n
    g = (pid_t // tiles).to(IDX)
    t = pid_t % tiles
    tile_n = t % tiles_n
    start_m = ((t // tiles_n) * BLOCK_M).to(IDX)
    start_n = (tile_n * BLOCK_N).to(IDX)

    for fi in range(FREQS):
        f = (pid_f * FREQS + fi).to(IDX)
        if f < F:
            p_base = p_ptr + 2 * (f * stride_pf + g * stride_pg)
            if Q_TAPS:
                q_base = q_ptr + g * stride_qg
                t_base = t_ptr + f * stride_tf
            else:
                q_base = q_ptr + 2 * (f * stride_qf + g * stride_qg)
            acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
            acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
            for k0 in range(0, K, BLOCK_K):
                pr, pi = _load_planar(p_base, start_m, k0, M, K, stride_pr, stride_pc,
                                      BLOCK_M, BLOCK_K, P_UNIT_COLS, IDX)  # fmt: skip
                if Q_TAPS:
                    qr, qi = _form_filter(q_base, t_base, taps, stride_tp, k0, start_n, K, N,
                                          stride_qr, stride_qc, BLOCK_K, BLOCK_N, IDX,
                                          ACC_DTYPE)  # fmt: skip
                else:
                    qr, qi = _load_planar(q_base, k0, start_n, K, N, stride_qr, stride_qc,
                                          BLOCK_K, BLOCK_N, Q_UNIT_COLS, IDX)  # fmt: skip
                if HALF_DTYPE is not None:
                    pr, pi = pr.to(HALF_DTYPE), pi.to(HALF_DTYPE)
                    qr, qi = qr.to(HALF_DTYPE), qi.to(HALF_DTYPE)
                    if EMULATE_HALF:
                        # The CPU interpreter's bf16 dot is wrong; a product of two half values
                        # is exact in fp32, so rounding then an fp32 dot is the same arithmetic
                        # as a half MMA with fp32 accumulation.
                        pr, pi = pr.to(ACC_DTYPE), pi.to(ACC_DTYPE)
                        qr, qi = qr.to(ACC_DTYPE), qi.to(ACC_DTYPE)
                # out_dtype spelled out: Triton 3.6 asserts it equals the fp64 accumulator's.
                # The minus sign goes on the smaller operand plane (exact in every dtype).
                acc_r = tl.dot(pr, qr, acc_r, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                acc_r = tl.dot(pi, -qi, acc_r, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                acc_i = tl.dot(pr, qi, acc_i, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                acc_i = tl.dot(pi, qr, acc_i, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
            acc = tl.reshape(tl.join(acc_r, acc_i), (BLOCK_M, 2 * BLOCK_N))
            # Output offsets formed here, not before the loops: held across them they cost
            # registers (and ptxas spilled a few bytes of them in small tiles).
            rows = start_m + tl.arange(0, BLOCK_M).to(IDX)
            reals = 2 * start_n + tl.arange(0, 2 * BLOCK_N).to(IDX)
            o_ptr = out_ptr + 2 * (f * stride_of + g * stride_og)
            o_ptr += (2 * stride_or) * rows[:, None] + reals[None, :]
            mask = (rows < M)[:, None] & (reals < 2 * N)[None, :]
            tl.store(o_ptr, acc.to(out_ptr.dtype.element_ty), mask=mask)

    # A second pass over Gc[0] (B × Og complex per group, read by one program per o-tile) rather
    # than sums in the main loop: the hot loop keeps its registers, and the sum is of the
    # unrounded values in every precision. (HAS_DB first: a constexpr False drops the branch.)
    if HAS_DB and (pid_f == 0) & (tile_n == 0):
        p_base = p_ptr + 2 * (g * stride_pg)
        bias = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
        for k0 in range(0, K, BLOCK_K):
            pr, pi = _load_planar(p_base, start_m, k0, M, K, stride_pr, stride_pc,
                                  BLOCK_M, BLOCK_K, P_UNIT_COLS, IDX)  # fmt: skip
            bias += tl.sum(pr.to(ACC_DTYPE), axis=1)
        rows = start_m + tl.arange(0, BLOCK_M).to(IDX)
        tl.store(db_ptr + g * M + rows, bias.to(db_ptr.dtype.element_ty), mask=rows < M)


# --------------------------------------------------------------------------------------------
# Launch configs
# --------------------------------------------------------------------------------------------


def _cfg(bm: int, bn: int, bk: int, warps: int, stages: int, freqs: int = 1) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "FREQS": freqs},
        num_warps=warps,
        num_stages=stages,
    )


def arith_class(precision: str, dtype: Any = "torch.complex64") -> str:
    """``"fp64"`` (complex128), ``"fma"`` (fp32 ieee) or ``"mma"`` (tf32/bf16/fp16)."""
    if str(dtype).endswith("complex128"):
        return "fp64"
    return "fma" if precision == "ieee" else "mma"


# Complex tiles (M, N, K, warps, stages) per arithmetic class, FREQS chosen per shape. Every entry
# compiled for sm_80 and sm_90 without a register spill in fwd/dx (band and taps filters) and dw
# (with db) for the CIFAR 3x3 layer and an odd-sized one (python -m bench.compile_tap_mac; the
# compile_check test holds it): 368 compiles, none spilling (triton 3.8). Dropped after compiling
# for register pressure at 255 registers (spill bytes): mma 32x32x32/4w (16-168), 64x64x32/4w
# (108-380, sm_80); fma 32x32x16/4w/2st (20, odd), 64x64x16/8w (16-116); fp64 64x64x16/8w
# (24-112). Without MAXNREG, 8-56 byte spills at 72-168 registers also hit 16x16 to 64x32 tiles.
MENUS = {
    "mma": [
        (16, 16, 16, 1, 1),
        (32, 32, 16, 4, 3),
        (64, 32, 16, 4, 3),
        (64, 64, 16, 4, 3),
        (128, 64, 16, 8, 3),
    ],
    "fma": [(16, 16, 16, 2, 2), (16, 16, 16, 4, 1), (32, 32, 16, 8, 3)],
    "fp64": [(16, 16, 16, 2, 2), (16, 16, 16, 4, 1), (64, 32, 16, 8, 3)],
}
# Heuristic default per class: the first tile of this order that the matrix fills. Without GPU
# timings the compiler decides: the largest spill-free tile (mma 64x64x16/4w, wgmma on sm_90).
DEFAULT_ORDER = {
    "mma": [(64, 64, 16, 4, 3), (32, 32, 16, 4, 3), (16, 16, 16, 1, 1)],
    "fma": [(32, 32, 16, 8, 3), (16, 16, 16, 2, 2)],
    "fp64": [(64, 32, 16, 8, 3), (16, 16, 16, 2, 2)],
}

# Per-program work the FREQS heuristic aims at (complex MACs), and the programs it keeps at
# least (two waves of an H100/H200's 132 SMs).
_WORK_TARGET = 64 * 64 * 32
_MIN_PROGRAMS = 264


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    # Plain Python: triton.cdiv is a constexpr function whose host-side call costs ~4 µs.
    return -(-a // b)


def _fills(tile: tuple[int, ...], m: int, n: int, k: int) -> bool:
    """A tile more than twice the matrix (past the 16 minimum) only computes masked zeros."""
    bm, bn, bk = tile[:3]
    return bm <= max(16, _pow2(m)) and bn <= max(16, _pow2(n)) and bk <= max(16, _pow2(k))


def _freqs(tile: tuple[int, ...], m: int, n: int, k: int, f: int, groups: int = 1) -> int:
    """Frequencies per program: doubled while a program's work is under the target and the grid
    keeps two waves (at most 8)."""
    bm, bn = tile[:2]
    work = min(m, bm) * min(n, bn) * max(1, k)
    tiles = groups * _cdiv(max(m, 1), bm) * _cdiv(max(n, 1), bn)
    freqs = 1
    while freqs < 8 and work * freqs < _WORK_TARGET and _cdiv(f, 2 * freqs) * tiles >= _MIN_PROGRAMS:
        freqs *= 2
    return freqs


def _check_menu_args(mode: str, precision: str) -> None:
    if mode not in MODES:
        raise ValueError(f"tap_mac: mode must be one of {MODES}; got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"tap_mac: precision must be one of {PRECISIONS}; got {precision!r}")


@functools.lru_cache(maxsize=1024)
def default_config(
    mode: str, m: int, n: int, k: int, f: int, taps: int = 0, precision: str = "tf32",
    dtype: Any = "torch.complex64", groups: int = 1,
) -> triton.Config:  # fmt: skip
    """Heuristic config for one contraction (what runs untuned): the class's preferred tile that
    the ``M × N × K`` matrix fills, with ``FREQS`` from the per-program work and the grid.

    Args:
        mode: ``"fwd"``, ``"dx"`` or ``"dw"``.
        m, n, k: the per-group GEMM dims: fwd ``(B, Og, Cg)``, dx ``(B, Cg, Og)``, dw ``(Og, Cg,
            B)`` (see :func:`gemm_dims`).
        f: kept frequencies.
        taps: filter taps when the filter is formed from them (fwd/dx), else 0.
        precision: ``"ieee"``, ``"tf32"``, ``"bf16"`` or ``"fp16"``.
        dtype: the band dtype (or its ``str``); complex128 takes the fp64 class.
        groups: channel groups (only the grid size, for ``FREQS``).

    The same object for the same arguments (cached).
    """
    _check_menu_args(mode, precision)
    cls = arith_class(precision, dtype)
    tile = next((t for t in DEFAULT_ORDER[cls] if _fills(t, m, n, k)), DEFAULT_ORDER[cls][-1])
    return _cfg(*tile, freqs=_freqs(tile, m, n, k, f, groups))


@functools.lru_cache(maxsize=1024)
def candidate_configs(
    mode: str, m: int, n: int, k: int, f: int, taps: int = 0, precision: str = "tf32",
    dtype: Any = "torch.complex64", groups: int = 1,
) -> tuple[triton.Config, ...]:  # fmt: skip
    """The menu the tuner may time for one contraction (arguments as :func:`default_config`):
    the class's tiles the matrix fills, each at its heuristic ``FREQS`` and, for small
    per-frequency products, at four times as many; the default first. The same tuple for the
    same arguments (cached; never mutate)."""
    _check_menu_args(mode, precision)
    cls = arith_class(precision, dtype)
    default = default_config(mode, m, n, k, f, taps, precision, dtype, groups)
    out, seen = [default], {_key(default)}
    for tile in MENUS[cls]:
        if not _fills(tile, m, n, k):
            continue
        freqs = _freqs(tile, m, n, k, f, groups)
        for fr in (freqs, min(8, 4 * freqs)) if freqs > 1 else (freqs,):
            cfg = _cfg(*tile, freqs=fr)
            if _key(cfg) not in seen:
                seen.add(_key(cfg))
                out.append(cfg)
    return tuple(out)


def _key(cfg: triton.Config) -> tuple[int, ...]:
    kw = cfg.kwargs
    return (*(kw[k] for k in CONFIG_KEYS), cfg.num_warps, cfg.num_stages)


# --------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------

_HALF = {"bf16": tl.bfloat16, "fp16": tl.float16}
_REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}

# Under TRITON_INTERPRET=1 ``triton.jit`` gives an interpreted function: CPU tensors can run.
_INTERPRETED = not isinstance(tap_cmac_kernel, triton.runtime.jit.JITFunction)


def _span(t: torch.Tensor) -> int:
    """Reals between a tensor's first and last element, plus one (complex counts two)."""
    n = 1 + sum((d - 1) * s for d, s in zip(t.shape, t.stride()) if d > 0)
    return 2 * n if t.is_complex() else n


def gemm_dims(mode: str, a: torch.Tensor, b: torch.Tensor, groups: int = 1) -> tuple[int, int, int, int]:
    """``(m, n, k, f)`` of the per-group GEMM :func:`mac` runs for these operands (the arguments
    :func:`default_config` and :func:`candidate_configs` take). ``b`` may be the band or the real
    weight."""
    f, bsz = a.shape[0], a.shape[1]
    if mode == "dw":
        return b.shape[2] // groups, a.shape[2] // groups, bsz, f
    cg = b.shape[1] if not b.is_complex() else b.shape[2]
    o = b.shape[0] if not b.is_complex() else b.shape[1]
    if mode == "fwd":
        return bsz, o // groups, cg, f
    return bsz, cg, o // groups, f


def _fail(mode: str, msg: str) -> ValueError:
    return ValueError(f"tap_mac.mac({mode!r}): {msg}")


def _check_band(mode: str, name: str, t: torch.Tensor, shape: tuple[int, ...] | None = None) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype not in _REAL or t.dim() != 3:
        got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise _fail(mode, f"{name} must be a 3-D complex64/complex128 band; got {got}")
    if not t.is_contiguous():
        raise _fail(mode, f"{name} must be contiguous (frequency-major band); got strides {t.stride()}")
    if shape is not None and tuple(t.shape) != shape:
        raise _fail(mode, f"{name} must have shape {list(shape)}; got {list(t.shape)}")


def _check_same(mode: str, ref: torch.Tensor, name: str, t: torch.Tensor, dtype: torch.dtype) -> None:
    if t.dtype != dtype:
        raise _fail(mode, f"{name} must be {dtype} (as a); got {t.dtype}")
    if t.device != ref.device:
        raise _fail(mode, f"{name} is on {t.device}, a on {ref.device}")


def mac(
    mode: str,
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor,
    *,
    taps_op: torch.Tensor | None = None,
    groups: int = 1,
    precision: str = "ieee",
    db: torch.Tensor | None = None,
    config: triton.Config | None = None,
    wrap=None,
) -> None:
    """One band contraction on Triton, written into ``out`` (every element written, none read).

    ``C = groups·Cg`` input and ``O = groups·Og`` output channels; bands complex64 (or complex128),
    contiguous, frequency-major; no conjugation anywhere (see the module docstring).

    Args:
        mode: ``"fwd"``: ``a = X [F, B, C]`` -> ``out = Y [F, B, O]``,
            ``Y[f, b, o] = Σ_{c in group(o)} X[f, b, c] · Wc[f, o, c]``;
            ``"dx"``: ``a = Gc [F, B, O]`` -> ``out = dXc [F, B, C]``,
            ``dXc[f, b, c] = Σ_{o in group(c)} Gc[f, b, o] · Wc[f, o, c]``;
            ``"dw"``: ``a = X [F, B, C]``, ``b = Gc [F, B, O]`` -> ``out = dW [F, O, Cg]``,
            ``dW[f, o, c] = Σ_b Gc[f, b, o] · X[f, b, c]``.
        b: fwd/dx: the filter, either the complex band ``Wc [F, O, Cg]`` (``taps_op`` None) or the
            real weight ``w [O, Cg, *k]`` (1 or 2 kernel dims, contiguous, float32 for complex64
            bands, float64 for complex128); dw: ``Gc [F, B, O]``.
        out: the complex result (shapes above), contiguous, the bands' dtype and device.
        taps_op: with a real weight, real ``[2, F, taps]`` contiguous (``taps = prod(k)``,
            row-major tap order, the weight's dtype): ``Wc[f, o, c] = Σ_t (taps_op[0, f, t] +
            i·taps_op[1, f, t]) · w[o, c, t]``.
        groups: channel groups (``groups == C == O``: depthwise).
        precision: ``"ieee"``, ``"tf32"``, ``"bf16"``, ``"fp16"`` (complex64; half operands with
            fp32 accumulation); complex128 always computes in fp64.
        db: dw only: real ``[O]`` (float32 or float64), contiguous, written with ``db[o] = Σ_b Re
            Gc[0, b, o]`` (the bias gradient).
        config: a ``triton.Config`` with kwargs ``BLOCK_M``, ``BLOCK_N``, ``BLOCK_K`` (each >= 16),
            ``FREQS``; ``None`` takes :func:`default_config`.
        wrap: ``torch.library.wrap_triton`` inside a ``triton_op`` (torch.compile traces the
            launch), else ``None``.

    Raises:
        ValueError: naming the argument whose shape, dtype, device, layout or value is wrong.
    """
    interpret = isinstance(a, torch.Tensor) and a.device.type != "cuda"
    if interpret and not (a.device.type == "cpu" and _INTERPRETED):
        raise _fail(mode, f"a must be a CUDA tensor (or a CPU one with TRITON_INTERPRET=1); got {a.device}")
    planned = launch_args(mode, a, b, out, taps_op, groups, precision, db, config, interpret)
    if planned is None:  # nothing to compute
        if db is not None:
            db.zero_()  # no frequency or no batch: an empty sum
        return
    grid, args, constexprs, config = planned
    with _INTERPRETER_LOCK if interpret else contextlib.nullcontext():
        if wrap is None:
            tap_cmac_kernel[grid](
                *args, **constexprs, num_warps=config.num_warps, num_stages=config.num_stages, maxnreg=MAXNREG
            )
        else:
            wrap(tap_cmac_kernel)[grid](
                *args, **constexprs, num_warps=config.num_warps, num_stages=config.num_stages
            )


def launch_args(
    mode: str,
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor,
    taps_op: torch.Tensor | None,
    groups: int,
    precision: str,
    db: torch.Tensor | None,
    config: triton.Config | None,
    interpret: bool,
) -> tuple[tuple[int, int], tuple, dict, triton.Config] | None:
    """Check :func:`mac`'s arguments (any device: ``bench.compile_tap_mac`` passes meta tensors)
    and return ``(grid, runtime args in the kernel's order, constexprs, config)``, or ``None``
    when ``out`` is empty."""
    if mode not in MODES:
        raise ValueError(f"tap_mac.mac: mode must be one of {MODES}; got {mode!r}")
    if precision not in PRECISIONS:
        raise _fail(mode, f"precision must be one of {PRECISIONS}; got {precision!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise _fail(mode, f"groups must be a positive int; got {groups!r}")
    _check_band(mode, "a", a)
    dtype, device = a.dtype, a.device
    real = _REAL[dtype]
    f, bsz, a_ch = a.shape
    if a_ch % groups:
        name = "C" if mode != "dx" else "O"
        raise _fail(mode, f"groups={groups} must divide a's channels ({name} = {a_ch})")
    taps = 0
    if mode == "dw":
        if taps_op is not None:
            raise _fail(mode, "taps_op is for the filter of fwd/dx; dw takes none")
        _check_band(mode, "b", b)
        _check_same(mode, a, "b", b, dtype)
        if b.shape[:2] != a.shape[:2]:
            raise _fail(mode, f"b (Gc) must have shape [F, B, O] = [{f}, {bsz}, O]; got {list(b.shape)}")
        o_ch = b.shape[2]
        if o_ch % groups:
            raise _fail(mode, f"groups={groups} must divide b's channels (O = {o_ch})")
        cg, og = a_ch // groups, o_ch // groups
        _check_band(mode, "out", out, (f, o_ch, cg))
        _check_same(mode, a, "out", out, dtype)
        if db is not None:
            if not isinstance(db, torch.Tensor) or db.dtype not in (torch.float32, torch.float64):
                got = db.dtype if isinstance(db, torch.Tensor) else type(db).__name__
                raise _fail(mode, f"db must be a float32 or float64 tensor; got {got}")
            if tuple(db.shape) != (o_ch,) or not db.is_contiguous():
                raise _fail(mode, f"db must be contiguous with shape [O] = [{o_ch}]; got {list(db.shape)}")
            if db.device != device:
                raise _fail(mode, f"db is on {db.device}, a on {device}")
        m, n, k = og, cg, bsz
    else:
        if db is not None:
            raise _fail(mode, "db is written by dw only")
        if taps_op is None:
            _check_band(mode, "b", b)
            _check_same(mode, a, "b", b, dtype)
            if b.shape[0] != f:
                raise _fail(mode, f"b (Wc) must have F = {f} frequencies (as a); got {list(b.shape)}")
            o_ch, cg = b.shape[1], b.shape[2]
        else:
            if not isinstance(b, torch.Tensor) or b.dtype != real or b.dim() not in (3, 4):
                got = f"{b.dtype} {tuple(b.shape)}" if isinstance(b, torch.Tensor) else type(b).__name__
                raise _fail(
                    mode, f"b must be the real weight [O, Cg, *k] ({real}, 1 or 2 kernel dims); got {got}"
                )
            if not b.is_contiguous():
                raise _fail(mode, "b (the weight) must be contiguous")
            if b.device != device:
                raise _fail(mode, f"b is on {b.device}, a on {device}")
            o_ch, cg = b.shape[0], b.shape[1]
            taps = math.prod(b.shape[2:])
            if not isinstance(taps_op, torch.Tensor) or taps_op.dtype != real:
                got = taps_op.dtype if isinstance(taps_op, torch.Tensor) else type(taps_op).__name__
                raise _fail(mode, f"taps_op must be a real {real} tensor; got {got}")
            if tuple(taps_op.shape) != (2, f, taps) or not taps_op.is_contiguous():
                raise _fail(
                    mode, f"taps_op must be contiguous with shape [2, F, taps] = [2, {f}, {taps}]; "
                    f"got {list(taps_op.shape)}",
                )  # fmt: skip
            if taps_op.device != device:
                raise _fail(mode, f"taps_op is on {taps_op.device}, a on {device}")
        if o_ch % groups:
            raise _fail(mode, f"groups={groups} must divide the filter's O = {o_ch}")
        og = o_ch // groups
        if mode == "fwd":
            if cg * groups != a_ch:
                raise _fail(mode, f"b's Cg = {cg} times groups={groups} must equal a's C = {a_ch}")
            _check_band(mode, "out", out, (f, bsz, o_ch))
            m, n, k = bsz, og, cg
        else:
            if o_ch != a_ch:
                raise _fail(mode, f"b's O = {o_ch} must equal a's (Gc's) O = {a_ch}")
            _check_band(mode, "out", out, (f, bsz, cg * groups))
            m, n, k = bsz, cg, og
        _check_same(mode, a, "out", out, dtype)

    if config is None:
        config = default_config(mode, m, n, k, f, taps, precision, dtype, groups)
    kw = config.kwargs
    bm, bn, bk, freqs = kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"], kw["FREQS"]
    if min(bm, bn, bk) < 16 or freqs < 1:
        raise _fail(mode, f"config needs BLOCK_M/N/K >= 16 and FREQS >= 1; got {kw}")

    if out.numel() == 0:
        return None
    tiles_m, tiles_n = _cdiv(m, bm), _cdiv(n, bn)
    grid_y = groups * tiles_m * tiles_n
    if grid_y > MAX_GRID_Y:
        raise _fail(mode, f"groups={groups} × {tiles_m}×{tiles_n} tiles = {grid_y} programs > {MAX_GRID_Y}")

    # Operand strides (complex elements for bands, reals for w) per mode; the layouts are fixed by
    # the contiguity checks above.
    ar, outr = torch.view_as_real(a), torch.view_as_real(out)
    if mode == "fwd":  # P[b, c] = X (cols unit); Q[c, o] = Wc[o, c] (rows unit)
        sp = (bsz * a_ch, a_ch, 1, cg)
        so = (bsz * o_ch, o_ch, og)
        p_cols, q_cols = True, False
    elif mode == "dx":  # P[b, o] = Gc (cols unit); Q[o, c] = Wc[o, c] (cols unit)
        sp = (bsz * a_ch, a_ch, 1, og)
        so = (bsz * cg * groups, cg * groups, cg)
        p_cols, q_cols = True, True
    else:  # P[o, b] = Gc[b, o] (rows unit); Q[b, c] = X (cols unit)
        sp = (bsz * o_ch, 1, o_ch, og)
        so = (o_ch * cg, cg, og * cg)
        p_cols, q_cols = False, True
    if mode == "dw":
        qr_t, tr_t = ar, outr  # T unused
        sq = (bsz * a_ch, a_ch, 1, cg)
    elif taps:
        qr_t, tr_t = b, taps_op
        # w[o, c, t] at (o·Cg + c)·taps + t; fwd k = c, n = o; dx k = o, n = c.
        sq = (0, taps, cg * taps, og * cg * taps) if mode == "fwd" else (0, cg * taps, taps, og * cg * taps)
    else:
        qr_t, tr_t = torch.view_as_real(b), outr
        sq = (o_ch * cg, 1, cg, og * cg) if mode == "fwd" else (o_ch * cg, cg, 1, og * cg)
    p_t = torch.view_as_real(b) if mode == "dw" else ar
    big = max(_span(a), _span(b), _span(out), _span(taps_op) if taps else 0) >= INT32_SPAN_LIMIT
    c128 = dtype == torch.complex128
    half = None if c128 else _HALF.get(precision)
    grid = (_cdiv(f, freqs), grid_y)
    args = (
        p_t, qr_t, tr_t, outr, db if db is not None else outr,
        m, n, k, f, taps, tiles_m, tiles_n,
        *sp, *sq, *so,
        taps, f * taps,
    )  # fmt: skip
    constexprs = dict(
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, FREQS=freqs,
        P_UNIT_COLS=p_cols, Q_UNIT_COLS=q_cols or bool(taps), Q_TAPS=bool(taps),
        HAS_DB=db is not None, IDX=tl.int64 if big else tl.int32,
        INPUT_PRECISION="ieee" if (half is not None or c128) else precision,
        HALF_DTYPE=half, EMULATE_HALF=interpret, ACC_DTYPE=tl.float64 if c128 else tl.float32,
    )  # fmt: skip
    return grid, args, constexprs, config

"""Triton kernels for the spatial <-> band transforms of the GPU pipeline: dense GEMMs against
precomputed direct-DFT operands (evaluated only at the kept frequencies and at the positions that
exist), several independent transforms per launch.

    to_band    out[f, m] = Σ_p E[f, p] · signal[m, p]                        (real -> complex)
    from_band  out[m, p] = Σ_f Re band[f, m] · D[2f, p] + Im band[f, m] · D[2f+1, p]
                           (+ bias[o])                                      (complex -> real)

with ``m = b·C + c`` (``b·O + o``) and ``p = h·W + w``. Who builds the operands (crop, stride,
conjugation, normalisation folded in) is the layer plan's business; these kernels only contract.

Layout. The signal and the spatial output are 4-D ``[B, C, H, W]`` tensors with any strides. Each
of the GEMM's two signal axes is the flattening of two tensor axes, ``m = (b, c)`` and ``p = (h,
w)``, addressed in one of three ways chosen by the launcher (constexpr ``*_MODE``):

    FLAT     the pair collapses to one stride (NCHW-contiguous m and p, channels_last p, H = 1)
    ALIGNED  the inner extent is a multiple of the tile: one scalar div per tile, then
             ``outer·s_outer + (inner0 + arange)·s_inner`` (channels_last m with C % BLOCK = 0)
    GENERAL  a div/mod per index (odd channel counts in channels_last, sliced views)

In FLAT and ALIGNED the compiler sees the unit-stride axis as contiguous (a unit stride is
specialised to the constant 1), so loads and stores coalesce along whichever axis is unit-stride;
``tl.dot`` takes either operand order. The DFT operands are contiguous along ``p`` (rows of
``E`` and ``D``); the complex band is ``view_as_real``, one contiguous run of ``2·BLOCK_M`` reals
per frequency row, loaded and stored as such: ``to_band`` joins its re/im accumulators into
interleaved pairs before the store, ``from_band`` loads ``[BLOCK_F, 2·BLOCK_M]`` band rows and
permutes them in registers into the A tile ``[BLOCK_M, 2·BLOCK_F]`` whose column ``2f + j``
meets row ``2f + j`` of ``D``.

Grid. One 1-D grid holds the tiles of every job (up to 3): program ids ``[0, end_0)`` are job 0,
``[end_0, end_1)`` job 1, the rest job 2, a runtime branch to one inlined tile body per job
(``NJOBS`` is a constexpr, so a one-job launch compiles one body). Within a job the tile index
runs fastest along the operator's rows (``f`` in ``to_band``, ``p`` in ``from_band``), so
consecutive programs share the large signal/band tile and the small DFT operand stays in L2.

Precision: ``"ieee"``/``"tf32"`` fp32 dots; ``"bf16"``/``"fp16"`` round both operands to that
dtype with fp32 accumulation (on the CPU interpreter, whose bf16 dot is wrong, rounded then
multiplied in fp32: the same arithmetic, as in ``band_mac``); float64 operands take the fp64
dot. The configs (menus, heuristic default) are at the end of this file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl
from bltriton.kernels.band_mac import _INTERPRETER_LOCK, resolve_precision

# Hash of this file (kernels, launchers and config menus): part of the tuner's cache key.
SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]

PRECISIONS = ("ieee", "tf32", "bf16", "fp16")
MAX_JOBS = 3

# Addressing modes of a flattened (outer, inner) axis pair; see the module docstring.
FLAT, ALIGNED, GENERAL = 0, 1, 2

# Index width: int32 offsets unless a tensor spans this many reals (half of 2^31, so that the
# masked offsets a tile computes past a tensor's end cannot wrap either).
INT32_SPAN_LIMIT = 2**30

TO_BAND_KEYS = ("BLOCK_F", "BLOCK_M", "BLOCK_P")
FROM_BAND_KEYS = ("BLOCK_M", "BLOCK_P", "BLOCK_F")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _axis_offsets(
    start, limit, inner, stride_outer, stride_inner,
    BLOCK: tl.constexpr, MODE: tl.constexpr, IDX: tl.constexpr,
):  # fmt: skip
    """Element offsets and mask of the flattened indices ``start + arange(BLOCK)`` of an axis
    pair ``(outer, inner)`` (``idx = outer·inner_extent + inner``). FLAT: ``stride_inner`` is the
    collapsed stride. ALIGNED: the launcher guarantees ``inner % BLOCK == 0``, so the tile lies
    in one outer row."""
    idx = start + tl.arange(0, BLOCK)
    mask = idx < limit
    if MODE == 0:
        off = idx.to(IDX) * stride_inner
    elif MODE == 1:
        outer = start // inner
        first = start - outer * inner
        off = outer.to(IDX) * stride_outer + (first + tl.arange(0, BLOCK)).to(IDX) * stride_inner
    else:
        off = (idx // inner).to(IDX) * stride_outer + (idx % inner).to(IDX) * stride_inner
    return off, mask


@triton.jit
def _round(x, HALF_DTYPE: tl.constexpr, EMULATE_HALF: tl.constexpr):
    """An operand tile as the dot takes it: rounded to the half dtype if one is set (and back to
    fp32 on the interpreter: a product of two half values is exact in fp32, so rounding then an
    fp32 dot is the same arithmetic as a half MMA with fp32 accumulation)."""
    if HALF_DTYPE is not None:
        x = x.to(HALF_DTYPE)
        if EMULATE_HALF:
            x = x.to(tl.float32)
    return x


# --------------------------------------------------------------------------------------------
# to_band
# --------------------------------------------------------------------------------------------


@triton.jit
def _to_band_tile(
    t, sig_ptr, op_ptr, out_ptr,
    F, M, P, C, W, stride_sb, stride_sc, stride_sh, stride_sw, stride_of, tiles_f,
    BLOCK_F: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr,
    M_MODE: tl.constexpr, P_MODE: tl.constexpr, IDX: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, HALF_DTYPE: tl.constexpr, EMULATE_HALF: tl.constexpr,
):  # fmt: skip
    """Tile ``t`` of one job: ``out[f0 : +BLOCK_F, m0 : +BLOCK_M]`` as two real dots (re, im
    rows of ``E``) sharing the signal tile ``[BLOCK_P, BLOCK_M]``."""
    acc_dtype = op_ptr.dtype.element_ty
    start_f = (t % tiles_f) * BLOCK_F
    start_m = ((t // tiles_f) * BLOCK_M).to(IDX)  # 2·start_m indexes reals
    offs_f = start_f + tl.arange(0, BLOCK_F)
    mask_f = offs_f < F
    m_off, mask_m = _axis_offsets(start_m, M, C, stride_sb, stride_sc, BLOCK_M, M_MODE, IDX)
    row_re = offs_f.to(IDX) * P  # op[0, f, :]
    row_im = (offs_f + F).to(IDX) * P  # op[1, f, :]
    acc_re = tl.zeros((BLOCK_F, BLOCK_M), dtype=acc_dtype)
    acc_im = tl.zeros((BLOCK_F, BLOCK_M), dtype=acc_dtype)
    for p0 in range(0, P, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        p_off, _ = _axis_offsets(p0, P, W, stride_sh, stride_sw, BLOCK_P, P_MODE, IDX)
        s = tl.load(
            sig_ptr + p_off[:, None] + m_off[None, :],
            mask=mask_p[:, None] & mask_m[None, :],
            other=0.0,
        ).to(acc_dtype)
        mask_e = mask_f[:, None] & mask_p[None, :]
        e_re = tl.load(op_ptr + row_re[:, None] + offs_p[None, :], mask=mask_e, other=0.0)
        e_im = tl.load(op_ptr + row_im[:, None] + offs_p[None, :], mask=mask_e, other=0.0)
        s = _round(s, HALF_DTYPE, EMULATE_HALF)
        e_re = _round(e_re, HALF_DTYPE, EMULATE_HALF)
        e_im = _round(e_im, HALF_DTYPE, EMULATE_HALF)
        # out_dtype spelled out: Triton 3.6 asserts it equals the fp64 accumulator's.
        acc_re = tl.dot(e_re, s, acc_re, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
        acc_im = tl.dot(e_im, s, acc_im, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
    # Interleaved (re, im) pairs: each output row is one contiguous run of 2·BLOCK_M reals.
    pairs = tl.reshape(tl.join(acc_re, acc_im), (BLOCK_F, 2 * BLOCK_M))
    reals = 2 * start_m + tl.arange(0, 2 * BLOCK_M)
    out_off = offs_f.to(IDX)[:, None] * (2 * stride_of) + reals[None, :]
    tl.store(out_ptr + out_off, pairs, mask=mask_f[:, None] & (reals < 2 * M)[None, :])


@triton.jit
def to_band_kernel(
    # Job j: signal, operator and (view_as_real) output pointers; F, M = B·C, P = H·W, the inner
    # extents C and W of the two axis pairs, signal strides (elements), output row stride
    # (complex elements), f-tiles. Jobs past NJOBS are dummies (never read).
    sig0, op0, out0, F0, M0, P0, C0, W0, ssb0, ssc0, ssh0, ssw0, sof0, tf0,
    sig1, op1, out1, F1, M1, P1, C1, W1, ssb1, ssc1, ssh1, ssw1, sof1, tf1,
    sig2, op2, out2, F2, M2, P2, C2, W2, ssb2, ssc2, ssh2, ssw2, sof2, tf2,
    end0, end1,
    # Launch config.
    BLOCK_F: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr,
    # Derived by the launcher: job count, per-job axis modes, index width, precision.
    NJOBS: tl.constexpr,
    M_MODE0: tl.constexpr, P_MODE0: tl.constexpr,
    M_MODE1: tl.constexpr, P_MODE1: tl.constexpr,
    M_MODE2: tl.constexpr, P_MODE2: tl.constexpr,
    IDX: tl.constexpr, INPUT_PRECISION: tl.constexpr, HALF_DTYPE: tl.constexpr,
    EMULATE_HALF: tl.constexpr,
):  # fmt: skip
    """Real signals -> complex bands: one ``BLOCK_F × BLOCK_M`` complex output tile per
    program, over up to three jobs. Grid: ``(end_{NJOBS-1},)`` with ``end_j`` the cumulative
    tile counts; within a job ``f``-tiles run fastest."""
    pid = tl.program_id(0)
    if pid < end0:
        _to_band_tile(pid, sig0, op0, out0, F0, M0, P0, C0, W0, ssb0, ssc0, ssh0, ssw0, sof0, tf0,
                      BLOCK_F, BLOCK_M, BLOCK_P, M_MODE0, P_MODE0, IDX,
                      INPUT_PRECISION, HALF_DTYPE, EMULATE_HALF)  # fmt: skip
    # Nested ifs, not `and`: the constexpr test must drop the unused bodies at compile time.
    if NJOBS > 1:  # noqa: SIM102
        if (pid >= end0) & (pid < end1):
            _to_band_tile(pid - end0, sig1, op1, out1, F1, M1, P1, C1, W1, ssb1, ssc1, ssh1, ssw1,
                          sof1, tf1, BLOCK_F, BLOCK_M, BLOCK_P, M_MODE1, P_MODE1, IDX,
                          INPUT_PRECISION, HALF_DTYPE, EMULATE_HALF)  # fmt: skip
    if NJOBS > 2:  # noqa: SIM102
        if pid >= end1:
            _to_band_tile(pid - end1, sig2, op2, out2, F2, M2, P2, C2, W2, ssb2, ssc2, ssh2, ssw2,
                          sof2, tf2, BLOCK_F, BLOCK_M, BLOCK_P, M_MODE2, P_MODE2, IDX,
                          INPUT_PRECISION, HALF_DTYPE, EMULATE_HALF)  # fmt: skip


# --------------------------------------------------------------------------------------------
# from_band
# --------------------------------------------------------------------------------------------


@triton.jit
def _from_band_tile(
    t, band_ptr, op_ptr, out_ptr, bias_ptr,
    F, M, P, O, Wo, stride_bf, stride_ob, stride_oo, stride_oh, stride_ow, tiles_p,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_F: tl.constexpr,
    M_MODE: tl.constexpr, P_MODE: tl.constexpr, HAS_BIAS: tl.constexpr, IDX: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, HALF_DTYPE: tl.constexpr, EMULATE_HALF: tl.constexpr,
):  # fmt: skip
    """Tile ``t`` of one job: ``out[m0 : +BLOCK_M, p0 : +BLOCK_P]`` as one real dot of the band
    tile ``[BLOCK_M, 2·BLOCK_F]`` (re/im interleaved along k) with ``D[2f0 : +2·BLOCK_F, p0 :
    +BLOCK_P]``, bias and the cast to the output dtype in the epilogue."""
    acc_dtype = op_ptr.dtype.element_ty
    start_p = (t % tiles_p) * BLOCK_P
    start_m = ((t // tiles_p) * BLOCK_M).to(IDX)  # 2·start_m indexes reals
    offs_p = start_p + tl.arange(0, BLOCK_P)
    mask_p = offs_p < P
    reals_m = 2 * start_m + tl.arange(0, 2 * BLOCK_M)
    mask_rm = reals_m < 2 * M  # int32 2·M: the launcher keeps M < 2^30
    acc = tl.zeros((BLOCK_M, BLOCK_P), dtype=acc_dtype)
    for f0 in range(0, F, BLOCK_F):
        offs_f = f0 + tl.arange(0, BLOCK_F)
        a = tl.load(
            band_ptr + offs_f.to(IDX)[:, None] * (2 * stride_bf) + reals_m[None, :],
            mask=(offs_f < F)[:, None] & mask_rm[None, :],
            other=0.0,
        )  # a[f, 2m + j]
        a = tl.reshape(tl.permute(tl.reshape(a, (BLOCK_F, BLOCK_M, 2)), (1, 0, 2)), (BLOCK_M, 2 * BLOCK_F))
        rows = 2 * f0 + tl.arange(0, 2 * BLOCK_F)
        d = tl.load(
            op_ptr + rows.to(IDX)[:, None] * P + offs_p[None, :],
            mask=(rows < 2 * F)[:, None] & mask_p[None, :],
            other=0.0,
        )
        a = _round(a, HALF_DTYPE, EMULATE_HALF)
        d = _round(d, HALF_DTYPE, EMULATE_HALF)
        acc = tl.dot(a, d, acc, input_precision=INPUT_PRECISION, out_dtype=acc_dtype)
    m_off, mask_m = _axis_offsets(start_m, M, O, stride_ob, stride_oo, BLOCK_M, M_MODE, IDX)
    if HAS_BIAS:
        offs_m = start_m + tl.arange(0, BLOCK_M)
        bias = tl.load(bias_ptr + offs_m % O, mask=mask_m, other=0.0)
        acc += bias.to(acc_dtype)[:, None]
    p_off, _ = _axis_offsets(start_p, P, Wo, stride_oh, stride_ow, BLOCK_P, P_MODE, IDX)
    tl.store(
        out_ptr + m_off[:, None] + p_off[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_p[None, :],
    )


@triton.jit
def from_band_kernel(
    # Job j: band (view_as_real), operator, output and bias pointers; F, M = B·O, P = Ho·Wo, the
    # inner extents O and Wo, band row stride (complex elements), output strides (elements),
    # p-tiles. Jobs past NJOBS are dummies (never read).
    band0, op0, out0, bias0, F0, M0, P0, O0, Wo0, sbf0, sob0, soo0, soh0, sow0, tp0,
    band1, op1, out1, bias1, F1, M1, P1, O1, Wo1, sbf1, sob1, soo1, soh1, sow1, tp1,
    band2, op2, out2, bias2, F2, M2, P2, O2, Wo2, sbf2, sob2, soo2, soh2, sow2, tp2,
    end0, end1,
    # Launch config.
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_F: tl.constexpr,
    # Derived by the launcher.
    NJOBS: tl.constexpr,
    M_MODE0: tl.constexpr, P_MODE0: tl.constexpr, HAS_BIAS0: tl.constexpr,
    M_MODE1: tl.constexpr, P_MODE1: tl.constexpr, HAS_BIAS1: tl.constexpr,
    M_MODE2: tl.constexpr, P_MODE2: tl.constexpr, HAS_BIAS2: tl.constexpr,
    IDX: tl.constexpr, INPUT_PRECISION: tl.constexpr, HALF_DTYPE: tl.constexpr,
    EMULATE_HALF: tl.constexpr,
):  # fmt: skip
    """Complex bands -> real signals: one ``BLOCK_M × BLOCK_P`` output tile per program, over
    up to three jobs. Grid: ``(end_{NJOBS-1},)``; within a job ``p``-tiles run fastest."""
    pid = tl.program_id(0)
    if pid < end0:
        _from_band_tile(pid, band0, op0, out0, bias0, F0, M0, P0, O0, Wo0, sbf0, sob0, soo0, soh0,
                        sow0, tp0, BLOCK_M, BLOCK_P, BLOCK_F, M_MODE0, P_MODE0, HAS_BIAS0, IDX,
                        INPUT_PRECISION, HALF_DTYPE, EMULATE_HALF)  # fmt: skip
    # Nested ifs, not `and`: the constexpr test must drop the unused bodies at compile time.
    if NJOBS > 1:  # noqa: SIM102
        if (pid >= end0) & (pid < end1):
            _from_band_tile(pid - end0, band1, op1, out1, bias1, F1, M1, P1, O1, Wo1, sbf1, sob1,
                            soo1, soh1, sow1, tp1, BLOCK_M, BLOCK_P, BLOCK_F, M_MODE1, P_MODE1,
                            HAS_BIAS1, IDX, INPUT_PRECISION, HALF_DTYPE, EMULATE_HALF)  # fmt: skip
    if NJOBS > 2:  # noqa: SIM102
        if pid >= end1:
            _from_band_tile(pid - end1, band2, op2, out2, bias2, F2, M2, P2, O2, Wo2, sbf2, sob2,
                            soo2, soh2, sow2, tp2, BLOCK_M, BLOCK_P, BLOCK_F, M_MODE2, P_MODE2,
                            HAS_BIAS2, IDX, INPUT_PRECISION, HALF_DTYPE, EMULATE_HALF)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Jobs and checks
# --------------------------------------------------------------------------------------------


class ToBand(NamedTuple):
    """One real -> band transform ``out[f, b·C + c] = Σ_p E[f, p] · signal[b, c, p]``.

    Attributes:
        signal: real ``[B, C, H, W]``, any strides; float32/float64/float16/bfloat16.
        op: real contiguous ``[2, F, H·W]`` in the compute dtype (float32 or float64):
            ``op[0] = Re E``, ``op[1] = Im E``, position ``p = h·W + w``.
        out: complex ``[F, B·C]`` (complex64, or complex128 for a float64 ``op``) with
            ``out.stride(1) == 1``; any ``out.stride(0)``. Written.
    """

    signal: torch.Tensor
    op: torch.Tensor
    out: torch.Tensor


class FromBand(NamedTuple):
    """One band -> real transform ``out[b, o, p] = Σ_f Re band[f, m]·op[2f, p] + Im band[f,
    m]·op[2f+1, p] (+ bias[o])``, ``m = b·O + o``.

    Attributes:
        band: complex ``[F, B·O]`` in the compute dtype, ``band.stride(1) == 1``.
        op: real contiguous ``[2F, Ho·Wo]`` in the compute dtype.
        out: real ``[B, O, Ho, Wo]``, any strides, any float dtype (cast at the store). Written.
        bias: optional real ``[O]``, any float dtype, added in the epilogue.
    """

    band: torch.Tensor
    op: torch.Tensor
    out: torch.Tensor
    bias: torch.Tensor | None = None


_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _span(t: torch.Tensor) -> int:
    """Elements between a tensor's first and last element, plus one."""
    return 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()) if n > 0)


def _axis(n_outer: int, n_inner: int, s_outer: int, s_inner: int, block: int) -> tuple[int, int, int]:
    """(mode, stride_outer, stride_inner) of a flattened axis pair for a tile of ``block``."""
    if n_inner == 1:
        return FLAT, 0, s_outer
    if n_outer == 1 or s_outer == n_inner * s_inner:
        return FLAT, 0, s_inner
    return (ALIGNED if n_inner % block == 0 else GENERAL), s_outer, s_inner


def _common(jobs: Sequence, name: str, what: str) -> tuple[torch.dtype, torch.device]:
    if not isinstance(jobs, Sequence) or not 1 <= len(jobs) <= MAX_JOBS:
        n = len(jobs) if isinstance(jobs, Sequence) else type(jobs).__name__
        raise ValueError(f"{name}: jobs must be a sequence of 1 to {MAX_JOBS} {what}; got {n}")
    ops = [job.op for job in jobs]
    dtype, device = ops[0].dtype, ops[0].device
    if dtype not in _COMPLEX:
        raise ValueError(f"{name}: jobs[0].op must be float32 or float64 (the compute dtype); got {dtype}")
    for i, op in enumerate(ops):
        if op.dtype != dtype:
            raise ValueError(f"{name}: jobs[{i}].op is {op.dtype}, jobs[0].op {dtype}: one compute dtype")
        if op.device != device:
            raise ValueError(f"{name}: jobs[{i}].op on {op.device}, jobs[0].op on {device}")
    return dtype, device


def _check_device(name: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"{name} on {t.device}, the operators on {device}")


def _check_to_band(jobs: Sequence[ToBand]) -> tuple[torch.dtype, torch.device]:
    dtype, device = _common(jobs, "to_band", "ToBand")
    for i, (signal, op, out) in enumerate(jobs):
        j = f"to_band: jobs[{i}]"
        if signal.dim() != 4 or signal.dtype not in _FLOATS:
            raise ValueError(
                f"{j}.signal must be a real 4-D [B, C, H, W] tensor (float32/64/16, bfloat16); "
                f"got {signal.dtype} {tuple(signal.shape)}"
            )
        b, c, h, w = signal.shape
        if op.dim() != 3 or tuple(op.shape[::2]) != (2, h * w) or not op.is_contiguous():
            raise ValueError(f"{j}.op must be a contiguous [2, F, H*W={h * w}] tensor; got {tuple(op.shape)}")
        f = op.shape[1]
        if out.dtype != _COMPLEX[dtype]:
            raise ValueError(f"{j}.out must be {_COMPLEX[dtype]} for a {dtype} op; got {out.dtype}")
        if out.dim() != 2 or tuple(out.shape) != (f, b * c):
            raise ValueError(f"{j}.out must be [F, B*C] = [{f}, {b * c}]; got {tuple(out.shape)}")
        if b * c >= INT32_SPAN_LIMIT:
            raise ValueError(f"{j}.signal has B*C = {b * c} >= 2^30 columns")
        if out.stride(1) != 1 and b * c > 1:
            raise ValueError(f"{j}.out must be unit-stride along B*C; got strides {out.stride()}")
        _check_device(f"{j}.signal", signal, device)
        _check_device(f"{j}.out", out, device)
    return dtype, device


def _check_from_band(jobs: Sequence[FromBand]) -> tuple[torch.dtype, torch.device]:
    dtype, device = _common(jobs, "from_band", "FromBand")
    for i, job in enumerate(jobs):
        if len(job) != 4:
            raise ValueError(f"from_band: jobs[{i}] must be a FromBand(band, op, out, bias)")
        band, op, out, bias = job
        j = f"from_band: jobs[{i}]"
        if out.dim() != 4 or out.dtype not in _FLOATS:
            raise ValueError(
                f"{j}.out must be a real 4-D [B, O, Ho, Wo] tensor (float32/64/16, bfloat16); "
                f"got {out.dtype} {tuple(out.shape)}"
            )
        b, o, ho, wo = out.shape
        if band.dtype != _COMPLEX[dtype] or band.dim() != 2 or band.shape[1] != b * o:
            raise ValueError(
                f"{j}.band must be a {_COMPLEX[dtype]} [F, B*O={b * o}] tensor; "
                f"got {band.dtype} {tuple(band.shape)}"
            )
        if b * o >= INT32_SPAN_LIMIT:
            raise ValueError(f"{j}.out has B*O = {b * o} >= 2^30 columns")
        if band.stride(1) != 1 and b * o > 1:
            raise ValueError(f"{j}.band must be unit-stride along B*O; got strides {band.stride()}")
        f = band.shape[0]
        if op.dim() != 2 or tuple(op.shape) != (2 * f, ho * wo) or not op.is_contiguous():
            raise ValueError(
                f"{j}.op must be a contiguous [2F, Ho*Wo] = [{2 * f}, {ho * wo}] tensor; "
                f"got {tuple(op.shape)}"
            )
        if bias is not None:
            if bias.dim() != 1 or bias.shape[0] != o or bias.dtype not in _FLOATS:
                raise ValueError(
                    f"{j}.bias must be a real [O={o}] tensor; got {bias.dtype} {tuple(bias.shape)}"
                )
            _check_device(f"{j}.bias", bias, device)
        _check_device(f"{j}.band", band, device)
        _check_device(f"{j}.out", out, device)
    return dtype, device


# --------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------

_HALF = {"bf16": tl.bfloat16, "fp16": tl.float16}
# Per-job runtime arguments (suffixed with the job's index in the kernel signatures).
_TO_BAND_JOB_ARGS = ("sig", "op", "out", "F", "M", "P", "C", "W", "ssb", "ssc", "ssh", "ssw", "sof", "tf")
_FROM_BAND_JOB_ARGS = (
    "band",
    "op",
    "out",
    "bias",
    "F",
    "M",
    "P",
    "O",
    "Wo",
    "sbf",
    "sob",
    "soo",
    "soh",
    "sow",
    "tp",
)


def _cdiv(a: int, b: int) -> int:
    # Plain Python: triton.cdiv is a constexpr function whose host-side call costs ~4 µs.
    return -(-a // b)


def _precision_flags(
    dtype: torch.dtype, precision: str | None, device: torch.device, interpret: bool
) -> dict:
    prec = resolve_precision(_COMPLEX[dtype], device, precision)
    half = None if dtype == torch.float64 else _HALF.get(prec)
    return dict(
        INPUT_PRECISION="ieee" if (half is not None or dtype == torch.float64) else prec,
        HALF_DTYPE=half,
        EMULATE_HALF=interpret,
    )


def to_band_args(jobs: Sequence[ToBand], cfg: triton.Config, precision: str | None, interpret: bool):
    """``(grid, kwargs)`` of one ``to_band_kernel`` launch over the non-empty ``jobs`` (checked):
    runtime arguments and derived constexprs, without the config. ``grid`` is ``None`` when
    every job is empty."""
    kw = cfg.kwargs
    bf, bm, bp = kw["BLOCK_F"], kw["BLOCK_M"], kw["BLOCK_P"]
    dtype, device = jobs[0].op.dtype, jobs[0].op.device
    args: dict[str, Any] = {}
    ends, span, n = [], 0, 0
    for signal, op, out in jobs:
        if out.numel() == 0:
            continue
        b, c, h, w = signal.shape
        f, m, p = op.shape[1], b * c, h * w
        if p == 0:  # an empty sum: the band is zero
            out.zero_()
            continue
        sb, sc, sh, sw = signal.stride()
        m_mode, ssb, ssc = _axis(b, c, sb, sc, bm)
        p_mode, ssh, ssw = _axis(h, w, sh, sw, bp)
        tiles_f = _cdiv(f, bf)
        ends.append((ends[-1] if ends else 0) + tiles_f * _cdiv(m, bm))
        out_r = torch.view_as_real(out)
        span = max(span, _span(signal), op.numel(), _span(out_r))
        args.update({
            f"sig{n}": signal, f"op{n}": op, f"out{n}": out_r,
            f"F{n}": f, f"M{n}": m, f"P{n}": p, f"C{n}": c, f"W{n}": w,
            f"ssb{n}": ssb, f"ssc{n}": ssc, f"ssh{n}": ssh, f"ssw{n}": ssw,
            f"sof{n}": out.stride(0), f"tf{n}": tiles_f,
            f"M_MODE{n}": m_mode, f"P_MODE{n}": p_mode,
        })  # fmt: skip
        n += 1
    if n == 0:
        return None, {}
    for k in range(n, MAX_JOBS):  # dummies: job 0's values, never read
        for name in _TO_BAND_JOB_ARGS:
            args[f"{name}{k}"] = args[f"{name}0"]
        args[f"M_MODE{k}"] = args[f"P_MODE{k}"] = FLAT
    args["end0"] = ends[0]
    args["end1"] = ends[1] if n > 1 else ends[0]
    args["NJOBS"] = n
    args["IDX"] = tl.int64 if span >= INT32_SPAN_LIMIT else tl.int32
    args.update(_precision_flags(dtype, precision, device, interpret))
    return (ends[-1],), args


def from_band_args(jobs: Sequence[FromBand], cfg: triton.Config, precision: str | None, interpret: bool):
    """``(grid, kwargs)`` of one ``from_band_kernel`` launch over the non-empty ``jobs``
    (checked); ``grid`` is ``None`` when every job is empty."""
    kw = cfg.kwargs
    bm, bp = kw["BLOCK_M"], kw["BLOCK_P"]
    dtype, device = jobs[0].op.dtype, jobs[0].op.device
    args: dict[str, Any] = {}
    ends, span, n = [], 0, 0
    for band, op, out, bias in jobs:
        if out.numel() == 0:
            continue
        b, o, ho, wo = out.shape
        f, m, p = band.shape[0], b * o, ho * wo
        sb, so, sh, sw = out.stride()
        m_mode, sob, soo = _axis(b, o, sb, so, bm)
        p_mode, soh, sow = _axis(ho, wo, sh, sw, bp)
        tiles_p = _cdiv(p, bp)
        ends.append((ends[-1] if ends else 0) + tiles_p * _cdiv(m, bm))
        band_r = torch.view_as_real(band)
        span = max(span, _span(band_r), op.numel(), _span(out))
        args.update({
            f"band{n}": band_r, f"op{n}": op, f"out{n}": out,
            f"bias{n}": bias if bias is not None else op,
            f"F{n}": f, f"M{n}": m, f"P{n}": p, f"O{n}": o, f"Wo{n}": wo,
            f"sbf{n}": band.stride(0), f"sob{n}": sob, f"soo{n}": soo, f"soh{n}": soh, f"sow{n}": sow,
            f"tp{n}": tiles_p,
            f"M_MODE{n}": m_mode, f"P_MODE{n}": p_mode, f"HAS_BIAS{n}": bias is not None,
        })  # fmt: skip
        n += 1
    if n == 0:
        return None, {}
    for k in range(n, MAX_JOBS):
        for name in _FROM_BAND_JOB_ARGS:
            args[f"{name}{k}"] = args[f"{name}0"]
        args[f"M_MODE{k}"] = args[f"P_MODE{k}"] = FLAT
        args[f"HAS_BIAS{k}"] = False
    args["end0"] = ends[0]
    args["end1"] = ends[1] if n > 1 else ends[0]
    args["NJOBS"] = n
    args["IDX"] = tl.int64 if span >= INT32_SPAN_LIMIT else tl.int32
    args.update(_precision_flags(dtype, precision, device, interpret))
    return (ends[-1],), args


def _launch(kernel, grid, args: dict, cfg: triton.Config, device: torch.device, wrap=None) -> None:
    # ``wrap``: torch.library.wrap_triton inside a triton_op (torch.compile traces the launch).
    launcher = kernel if wrap is None else wrap(kernel)
    if device.type == "cuda":
        with torch.cuda.device(device):
            launcher[grid](**args, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        with _INTERPRETER_LOCK:
            launcher[grid](**args, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def to_band(
    jobs: Sequence[ToBand],
    *,
    precision: str | None,
    config: triton.Config | Mapping[str, int] | None = None,
    wrap=None,
) -> None:
    """Real signals -> complex bands, every job in one launch.

    Args:
        jobs: 1 to 3 :class:`ToBand` ``(signal [B, C, H, W], op [2, F, H·W], out [F, B·C])``;
            sizes may differ between jobs, the compute dtype (``op``'s) may not. Empty jobs
            are skipped.
        precision: ``"ieee"``, ``"tf32"``, ``"bf16"``, ``"fp16"`` (half operands, fp32
            accumulation) or ``None`` (see ``band_mac.resolve_precision``); float64 is always
            fp64 ``"ieee"``.
        config: a ``triton.Config`` (or its flat dict) with kwargs ``BLOCK_F``, ``BLOCK_M``,
            ``BLOCK_P``; ``None``: :func:`default_config` of the largest job.
        wrap: ``torch.library.wrap_triton`` inside a ``triton_op`` (torch.compile traces the
            launch), else ``None``.
    """
    dtype, device = _check_to_band(jobs)
    if config is None:
        config = default_config_for("to_band", jobs, _prec(dtype, precision, device))
    elif not isinstance(config, triton.Config):
        config = as_config("to_band", config)
    grid, args = to_band_args(jobs, config, precision, device.type != "cuda")
    if grid is not None:
        _launch(to_band_kernel, grid, args, config, device, wrap)


def from_band(
    jobs: Sequence[FromBand],
    *,
    precision: str | None,
    config: triton.Config | Mapping[str, int] | None = None,
    wrap=None,
) -> None:
    """Complex bands -> real signals (bias in the epilogue), every job in one launch.

    Args:
        jobs: 1 to 3 :class:`FromBand` ``(band [F, B·O], op [2F, Ho·Wo], out [B, O, Ho, Wo],
            bias [O] | None)``; sizes may differ between jobs, the compute dtype may not.
            Empty jobs are skipped.
        precision: as for :func:`to_band`.
        config: a ``triton.Config`` (or its flat dict) with kwargs ``BLOCK_M``, ``BLOCK_P``,
            ``BLOCK_F``; ``None``: :func:`default_config` of the largest job.
        wrap: ``torch.library.wrap_triton`` inside a ``triton_op`` (torch.compile traces the
            launch), else ``None``.
    """
    dtype, device = _check_from_band(jobs)
    if config is None:
        config = default_config_for("from_band", jobs, _prec(dtype, precision, device))
    elif not isinstance(config, triton.Config):
        config = as_config("from_band", config)
    grid, args = from_band_args(jobs, config, precision, device.type != "cuda")
    if grid is not None:
        _launch(from_band_kernel, grid, args, config, device, wrap)


def _work(fmp: tuple[int, int, int]) -> int:
    return fmp[0] * fmp[1] * fmp[2]


def largest_job(kind: str, jobs: Sequence) -> tuple[int, int, int]:
    """``(F, M, P)`` of the job with the most work in one launch of ``jobs`` (:class:`ToBand`
    jobs for ``kind="to_band"``, :class:`FromBand` for ``"from_band"``): the shape its config
    is chosen for."""
    if kind == "to_band":
        return max(((j.op.shape[1], j.out.shape[1], j.op.shape[2]) for j in jobs), key=_work)
    return max(((j.band.shape[0], j.band.shape[1], j.op.shape[1]) for j in jobs), key=_work)


def default_config_for(kind: str, jobs: Sequence, precision: str) -> triton.Config:
    """:func:`default_config` of the :func:`largest_job` (``precision`` resolved)."""
    f, m, p = largest_job(kind, jobs)
    return default_config(kind, f, m, p, precision, jobs[0].op.dtype)


def _prec(dtype: torch.dtype, precision: str | None, device: torch.device) -> str:
    return resolve_precision(_COMPLEX[dtype], device, precision)


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

KINDS = {"to_band": TO_BAND_KEYS, "from_band": FROM_BAND_KEYS}


def _keys(kind: str) -> tuple[str, ...]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {tuple(KINDS)}; got {kind!r}")
    return KINDS[kind]


def as_config(kind: str, cfg: triton.Config | Mapping[str, Any]) -> triton.Config:
    """A ``triton.Config`` of ``kind``'s kernel from itself or its flat dict (block sizes,
    ``num_warps``, ``num_stages``)."""
    keys = _keys(kind)
    if isinstance(cfg, triton.Config):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ValueError(f"config must be a triton.Config or a dict; got {type(cfg).__name__}")
    unknown = set(cfg) - {*keys, "num_warps", "num_stages"}
    missing = set(keys) - set(cfg)
    if unknown or missing:
        raise ValueError(
            f"{kind} config must have keys {keys} (+ num_warps, num_stages); "
            f"unknown {sorted(unknown)}, missing {sorted(missing)}"
        )
    return triton.Config(
        {k: int(cfg[k]) for k in keys},
        num_warps=int(cfg.get("num_warps", 4)),
        num_stages=int(cfg.get("num_stages", 2)),
    )


def as_dict(kind: str, cfg: triton.Config | Mapping[str, Any]) -> dict[str, int]:
    """The flat dict of a config (the tuner's JSON form)."""
    cfg = as_config(kind, cfg)
    return {
        **{k: cfg.kwargs[k] for k in _keys(kind)},
        "num_warps": cfg.num_warps,
        "num_stages": cfg.num_stages,
    }


def arith_class(precision: str, dtype: Any) -> str:
    """``"fp64"`` (float64), ``"fma"`` (fp32 ieee: no fp32 tensor-core path) or ``"mma"``."""
    if str(dtype).endswith("float64"):
        return "fp64"
    return "fma" if precision == "ieee" else "mma"


def _c(a: int, b: int, c: int, warps: int, stages: int) -> tuple[int, int, int, int, int]:
    return (a, b, c, warps, stages)


# Menus as (tile dims in the kernel's key order, warps, stages). to_band: BLOCK_F × BLOCK_M
# output (two accumulators, re and im) over BLOCK_P positions; from_band: BLOCK_M × BLOCK_P
# output over BLOCK_F frequencies (a real K of 2·BLOCK_F). The first entry of each list is the
# heuristic default. Every entry compiles spill-free for sm_80 and sm_90 on the CIFAR layer, its
# two-job backward and an odd shape (python -m bench.compile_transform; held by
# tests/test_compile_check_transform.py). Dropped after compiling (spill bytes, registers):
# to_band mma 64x64x32/4w (no spill, but 244-255 registers on the odd shape, whose 225-position
# rows allow only 4-byte loads; 8 warps: 128-197), mma 64x64x16/4w (16 B, bf16 backward sm_80),
# fma 32x64x16/4w (32 B, odd sm_80), fp64 32x32x16/4w (16-24 B at 96 registers), 32x32x8/4w
# (24 B, backward sm_90), 16x32x16/2w (16 B).
MENUS = {
    "to_band": {
        "mma": [
            _c(64, 64, 32, 8, 3),
            _c(32, 64, 32, 4, 3),
            _c(64, 128, 32, 8, 3),
            _c(128, 64, 16, 8, 3),
        ],
        "fma": [_c(32, 64, 16, 8, 2), _c(32, 32, 16, 4, 2), _c(64, 64, 16, 8, 2)],
        "fp64": [_c(32, 32, 16, 8, 2), _c(32, 64, 16, 8, 2), _c(16, 16, 16, 2, 2)],
    },
    "from_band": {
        "mma": [_c(64, 64, 16, 4, 3), _c(64, 32, 16, 4, 3), _c(128, 64, 16, 8, 3), _c(64, 128, 16, 8, 3)],
        "fma": [_c(32, 64, 8, 4, 2), _c(32, 32, 8, 4, 2), _c(64, 64, 8, 8, 2)],
        "fp64": [_c(32, 32, 8, 4, 2), _c(32, 64, 8, 8, 2), _c(16, 32, 8, 2, 2)],
    },
}

# Smallest block per kernel axis: tl.dot needs every dim >= 16 (from_band's BLOCK_F is half a
# real K of 2·BLOCK_F).
_MIN_BLOCK = {"to_band": (16, 16, 16), "from_band": (16, 16, 8)}


def _fit(kind: str, dims: tuple[int, int, int], sizes: tuple[int, int, int]) -> tuple[int, int, int]:
    """Block sizes shrunk to the problem (a tile more than twice a dim only computes masked
    zeros)."""
    return tuple(
        min(d, max(lo, triton.next_power_of_2(max(1, s)))) for d, lo, s in zip(dims, _MIN_BLOCK[kind], sizes)
    )  # type: ignore[return-value]


def _problem_sizes(kind: str, f: int, m: int, p: int) -> tuple[int, int, int]:
    # In each kernel's key order: to_band (F, M, P), from_band (M, P, F).
    return (f, m, p) if kind == "to_band" else (m, p, f)


@lru_cache(maxsize=1024)
def candidate_configs(
    kind: str, f: int, m: int, p: int, precision: str = "tf32", dtype: Any = torch.float32
) -> tuple[triton.Config, ...]:
    """The tuner's menu for one job of ``F`` kept frequencies, ``M`` (batch × channel) columns
    and ``P`` positions: the class's tiles shrunk to the problem, duplicates dropped, the
    default first. The same tuple for the same arguments."""
    keys = _keys(kind)
    sizes = _problem_sizes(kind, f, m, p)
    out, seen = [], set()
    for *dims, warps, stages in MENUS[kind][arith_class(precision, dtype)]:
        tile = _fit(kind, tuple(dims), sizes)
        # A tile that shrank gets proportionally fewer warps (the same work per thread).
        w = max(1, warps * tile[0] * tile[1] // (dims[0] * dims[1]))
        ident = (*tile, w, stages)
        if ident not in seen:
            seen.add(ident)
            out.append(triton.Config(dict(zip(keys, tile)), num_warps=w, num_stages=stages))
    return tuple(out)


def default_config(
    kind: str, f: int, m: int, p: int, precision: str = "tf32", dtype: Any = torch.float32
) -> triton.Config:
    """Heuristic config for one job (what runs untuned): the class's first tile shrunk to the
    problem (see :func:`candidate_configs`)."""
    return candidate_configs(kind, f, m, p, precision, dtype)[0]

"""Triton kernels for the band-limited complex multiply-accumulate and its two gradients.

All three contractions of the design (``bltriton.ops``) are batched complex GEMMs over the kept
frequencies ``f``:

    out[f, m, n] = sum_k  P[f, m, k] · Q[f, k, n]        (per channel group)

with every operand addressed by explicit strides, so one kernel serves

    forward  Y[f, b, o]   = sum_c X[f, b, c] · Wc[f, o, c]      P = X,    Q = Wc^T
    dX       dXc[f, b, c] = sum_o Gc[f, b, o] · Wc[f, o, c]     P = Gc,   Q = Wc
    dW       dW[f, o, c]  = sum_b Gc[f, b, o] · X[f, b, c]      P = Gc^T, Q = X

on the compact frequency-major band tensors of :mod:`bltriton.ops` (``[F, B, C]``, ``[F, O, Cg]``).
The filter and output-gradient bands arrive conjugated (``Wc = conj(W)``, ``Gc = conj(G)``: the
transforms produce them for free), which is why no contraction needs a conjugation.

Triton has no complex dtype. Operands are ``torch.view_as_real`` views, re/im interleaved, and
every operand has one unit-stride complex axis (the launcher copies the rare one that has none),
so each tile is one contiguous run of real pairs per row: one vector load. The complex product is
one real ``tl.dot`` per K-step:

    A = P tile as real [BLOCK_M, 2·BLOCK_K]          (re/im interleaved along k)
    B = block form of the Q tile, real [2·BLOCK_K, 2·BLOCK_N]:
        row 2k   = (qr, qi) pairs of Q[k, :]         (the Q tile as loaded)
        row 2k+1 = (−qi, qr) pairs of Q[k, :]        (built in registers)
    A @ B = real [BLOCK_M, 2·BLOCK_N], already the interleaved complex result:
        out[m, 2n]   = Σ pr·qr − pi·qi,   out[m, 2n+1] = Σ pr·qi + pi·qr

The same four real products per complex MAC as four separate dots, but one MMA chain, one
accumulator and contiguous loads and stores. Tiles with ``BLOCK_M < 16`` or ``BLOCK_K``/``BLOCK_N
< 8`` (depthwise layers, K = 1) take a broadcast-multiply-and-sum of the same ``A``/``B``
(``USE_DOT`` is derived from the tile), and a program may loop over several frequencies
(``FREQS``) so tiny per-frequency products still give each program real work.

Kernel and launcher share this file (over 400 lines) on purpose: the launcher's operands and
derived flags are the kernel's arguments, read side by side. The config menu is in ``configs``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from pathlib import Path
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from bltriton.kernels import configs as _configs
from bltriton.kernels.configs import (
    as_config,
    as_dict,
    candidate_configs,
    default_config,
    prune_configs,
    uses_dot,
)

# Hash of the kernel and its config menu: part of the autotuner's cache key, so an edited kernel
# or menu is tuned anew.
_SOURCES = Path(__file__).read_bytes() + Path(_configs.__file__).read_bytes()
SOURCE_HASH = hashlib.sha256(_SOURCES).hexdigest()[:16]

MODES = ("fwd", "dx", "dw")
PRECISIONS = ("ieee", "tf32", "bf16", "fp16")


# --------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def _load_pairs(
    base, start_r, start_c, limit_r, limit_c, stride_r, stride_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, UNIT_COLS: tl.constexpr, IDX: tl.constexpr,
):  # fmt: skip
    """The complex tile ``[start_r : +BLOCK_R, start_c : +BLOCK_C]`` (zero past the limits) as a
    real ``[BLOCK_R, 2·BLOCK_C]`` tile, re/im interleaved along the columns.

    ``UNIT_COLS``: columns are unit-stride complex, each tile row is ``2·BLOCK_C`` contiguous
    reals (``stride_c`` unused). Else rows are unit-stride (``stride_r`` unused): the tile is
    loaded column-major, ``2·BLOCK_R`` contiguous reals per column, and the pairs transposed in
    registers. Strides in complex elements (doubled here, so the compiler knows every row starts
    on an 8-byte boundary even when a stride is odd).
    """
    if UNIT_COLS:
        rows = start_r + tl.arange(0, BLOCK_R).to(IDX)
        reals = 2 * start_c + tl.arange(0, 2 * BLOCK_C).to(IDX)
        ptr = base + (2 * stride_r) * rows[:, None] + reals[None, :]
        mask = (rows < limit_r)[:, None] & (reals < 2 * limit_c)[None, :]
        tile = tl.load(ptr, mask=mask, other=0.0)
    else:
        cols = start_c + tl.arange(0, BLOCK_C).to(IDX)
        reals = 2 * start_r + tl.arange(0, 2 * BLOCK_R).to(IDX)
        ptr = base + (2 * stride_c) * cols[:, None] + reals[None, :]
        mask = (cols < limit_c)[:, None] & (reals < 2 * limit_r)[None, :]
        t = tl.load(ptr, mask=mask, other=0.0)  # t[c, 2r + j]
        t = tl.permute(tl.reshape(t, (BLOCK_C, BLOCK_R, 2)), (1, 0, 2))
        tile = tl.reshape(t, (BLOCK_R, 2 * BLOCK_C))
    return tile


@triton.jit
def _block_form(qp, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """Interleaved complex ``[BLOCK_K, 2·BLOCK_N]`` -> real ``[2·BLOCK_K, 2·BLOCK_N]`` whose rows
    ``2k``, ``2k+1`` are the (qr, qi) and (−qi, qr) pairs of complex row ``k``."""
    qr, qi = tl.split(tl.reshape(qp, (BLOCK_K, BLOCK_N, 2)))
    rot = tl.reshape(tl.join(-qi, qr), (BLOCK_K, 2 * BLOCK_N))
    both = tl.permute(tl.join(qp, rot), (0, 2, 1))  # [BLOCK_K, 2 (row parity), 2·BLOCK_N]
    return tl.reshape(both, (2 * BLOCK_K, 2 * BLOCK_N))


@triton.jit
def band_cmac_kernel(
    # Real (view_as_real) views of the complex operands and of the output.
    p_ptr, q_ptr, out_ptr,
    # Problem: out[f, m, n] = Σ_k P[f, m, k] · Q[f, k, n] per group; tiles per group.
    M, N, K, F, tiles_m, tiles_n,
    # Strides in complex elements: frequency, tile row, tile column, channel group. The unit-stride
    # (pair) axis of each operand is fixed by P_UNIT_COLS / Q_UNIT_COLS; the output's is n.
    # (Complex, not real: the JIT only marks multiples of 16 as aligned, so an odd group stride
    # in reals would hide the 8-byte alignment of every pair and cost the vector loads.)
    stride_pf, stride_pr, stride_pc, stride_pg,
    stride_qf, stride_qr, stride_qc, stride_qg,
    stride_of, stride_or, stride_og,
    # Launch config (triton.Config kwargs).
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FREQS: tl.constexpr,
    # Derived by the launcher (band_mac._derived): dot or broadcast path, operand layouts, index
    # width, precision.
    USE_DOT: tl.constexpr, P_UNIT_COLS: tl.constexpr, Q_UNIT_COLS: tl.constexpr,
    IDX: tl.constexpr, INPUT_PRECISION: tl.constexpr, HALF_DTYPE: tl.constexpr,
    EMULATE_HALF: tl.constexpr, ACC_DTYPE: tl.constexpr,
):  # fmt: skip
    """One program: a ``BLOCK_M × BLOCK_N`` complex tile of ``out`` for ``FREQS`` consecutive kept
    frequencies of one channel group. Grid: ``(cdiv(F, FREQS), groups · tiles_m · tiles_n)``.

    ``IDX`` is the index dtype (int32 unless a tensor spans 2^31 reals or more).
    """
    pid_f = tl.program_id(0)
    pid_t = tl.program_id(1)
    tiles = tiles_m * tiles_n
    g = (pid_t // tiles).to(IDX)
    t = pid_t % tiles
    start_m = ((t // tiles_n) * BLOCK_M).to(IDX)
    start_n = ((t % tiles_n) * BLOCK_N).to(IDX)
    rows = start_m + tl.arange(0, BLOCK_M).to(IDX)
    reals = 2 * start_n + tl.arange(0, 2 * BLOCK_N).to(IDX)
    out_off = (2 * stride_or) * rows[:, None] + reals[None, :]
    out_mask = (rows < M)[:, None] & (reals < 2 * N)[None, :]

    for fi in range(FREQS):
        f = (pid_f * FREQS + fi).to(IDX)
        if f < F:
            p_base = p_ptr + 2 * (f * stride_pf + g * stride_pg)
            q_base = q_ptr + 2 * (f * stride_qf + g * stride_qg)
            acc = tl.zeros((BLOCK_M, 2 * BLOCK_N), dtype=ACC_DTYPE)
            for k0 in range(0, K, BLOCK_K):
                a = _load_pairs(p_base, start_m, k0, M, K, stride_pr, stride_pc,
                                BLOCK_M, BLOCK_K, P_UNIT_COLS, IDX)  # fmt: skip
                qp = _load_pairs(q_base, k0, start_n, K, N, stride_qr, stride_qc,
                                 BLOCK_K, BLOCK_N, Q_UNIT_COLS, IDX)  # fmt: skip
                if HALF_DTYPE is not None:
                    a = a.to(HALF_DTYPE)
                    qp = qp.to(HALF_DTYPE)
                    if EMULATE_HALF:
                        # The CPU interpreter's bf16 dot is wrong; a product of two half values
                        # is exact in fp32, so rounding then an fp32 dot is the same arithmetic
                        # as a half MMA with fp32 accumulation.
                        a = a.to(ACC_DTYPE)
                        qp = qp.to(ACC_DTYPE)
                b = _block_form(qp, BLOCK_K, BLOCK_N)
                if USE_DOT:
                    # out_dtype spelled out: Triton 3.6 asserts it equals the fp64 accumulator's.
                    acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                else:
                    # Reduced over the last axis against the transposed B: Triton's combine pass
                    # rewrites sum(a[:, :, None] * b[None, :, :], axis=1) into a tt.dot at the
                    # default (tf32) precision, which Triton 3.6 rounds to tf32 even on the FMA
                    # path (1e-3 errors in 'ieee' mode on an H200). tests/test_compile_check.py
                    # holds that the broadcast path compiles to no tt.dot.
                    prod = a.to(ACC_DTYPE)[:, None, :] * tl.trans(b.to(ACC_DTYPE))[None, :, :]
                    acc += tl.sum(prod, axis=2)
            o_base = out_ptr + 2 * (f * stride_of + g * stride_og)
            tl.store(o_base + out_off, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


# --------------------------------------------------------------------------------------------
# Operands
# --------------------------------------------------------------------------------------------

# Index width: int32 offsets unless a tensor spans this many reals. Half of 2^31, so that the
# (masked) offsets a tile computes past a tensor's end cannot wrap either.
INT32_SPAN_LIMIT = 2**30


class Operand(NamedTuple):
    """A complex ``[F, rows, cols]`` operand as the kernel addresses it.

    Attributes:
        real: ``view_as_real`` of the complex tensor (the kernel's pointer).
        stride_f: stride between kept frequencies, in complex elements.
        stride_r: stride between tile rows, in complex elements.
        stride_c: stride between tile columns, in complex elements.
        stride_g: offset between channel groups, in complex elements.
        unit_cols: the columns are unit-stride complex (else the rows are).
    """

    real: torch.Tensor
    stride_f: int
    stride_r: int
    stride_c: int
    stride_g: int
    unit_cols: bool


class Problem(NamedTuple):
    """One contraction ``out[f, m, n] = Σ_k P[f, m, k] · Q[f, k, n]`` per channel group."""

    out: torch.Tensor
    p: Operand
    q: Operand
    o: Operand
    m: int
    n: int
    k: int
    f: int
    groups: int


def _operand(t: torch.Tensor, rows: int, cols: int, group_dim: int, group_size: int) -> Operand:
    """Address the matrix ``t[f]`` with dims ``rows``/``cols`` (1 or 2) of a complex 3-D tensor;
    channel group ``g`` starts ``g · group_size`` along ``group_dim``. A tensor with neither
    matrix dim unit-stride (never produced by the library) is copied first."""
    unit = [t.stride(d) == 1 or t.shape[d] == 1 for d in (0, 1, 2)]
    if not (unit[1] or unit[2]):
        t = t.contiguous()
        unit = [t.stride(d) == 1 or t.shape[d] == 1 for d in (0, 1, 2)]
    s = t.stride()
    return Operand(
        real=torch.view_as_real(t),
        stride_f=s[0],
        stride_r=s[rows],
        stride_c=s[cols],
        stride_g=s[group_dim] * group_size,
        unit_cols=unit[cols],
    )


def _operands(mode: str, a: torch.Tensor, b: torch.Tensor, groups: int) -> Problem:
    """Map a mode onto the named operands P, Q and the (fresh, contiguous) output."""
    f = a.shape[0]
    if mode == "fwd":  # P[m=b, k=c] = X, Q[k=c, n=o] = Wc[o, c]
        x, w = a, b
        bsz, cg, og = x.shape[1], w.shape[2], w.shape[1] // groups
        out = torch.empty((f, bsz, w.shape[1]), dtype=x.dtype, device=x.device)
        p, q, o = _operand(x, 1, 2, 2, cg), _operand(w, 2, 1, 1, og), _operand(out, 1, 2, 2, og)
        return Problem(out, p, q, o, bsz, og, cg, f, groups)
    if mode == "dx":  # P[m=b, k=o] = Gc, Q[k=o, n=c] = Wc[o, c]
        gr, w = a, b
        bsz, cg, og = gr.shape[1], w.shape[2], gr.shape[2] // groups
        out = torch.empty((f, bsz, cg * groups), dtype=gr.dtype, device=gr.device)
        p, q, o = _operand(gr, 1, 2, 2, og), _operand(w, 1, 2, 1, og), _operand(out, 1, 2, 2, cg)
        return Problem(out, p, q, o, bsz, cg, og, f, groups)
    if mode == "dw":  # P[m=o, k=b] = Gc[b, o], Q[k=b, n=c] = X
        x, gr = a, b
        bsz, cg, og = x.shape[1], x.shape[2] // groups, gr.shape[2] // groups
        out = torch.empty((f, og * groups, cg), dtype=x.dtype, device=x.device)
        p, q, o = _operand(gr, 2, 1, 2, og), _operand(x, 1, 2, 2, cg), _operand(out, 1, 2, 1, og)
        return Problem(out, p, q, o, og, cg, bsz, f, groups)
    raise ValueError(f"mode must be one of {MODES}; got {mode!r}")


def _span(t: torch.Tensor) -> int:
    """Reals between a tensor's first and last element, plus one."""
    return 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()) if n > 0)


def needs_int64(problem: Problem) -> bool:
    """Whether any operand spans too many reals for int32 offsets."""
    return max(_span(op.real) for op in (problem.p, problem.q, problem.o)) >= INT32_SPAN_LIMIT


def _check(mode: str, a: torch.Tensor, b: torch.Tensor, groups: int) -> None:
    for name, t in (("a", a), ("b", b)):
        if not t.is_complex() or t.dim() != 3:
            raise ValueError(
                f"band_mac({mode}): {name} must be a 3-D complex tensor; got {t.dtype} {tuple(t.shape)}"
            )
    if a.dtype != b.dtype:
        raise ValueError(f"band_mac({mode}): a and b dtypes differ ({a.dtype} vs {b.dtype})")
    if a.device != b.device:
        raise ValueError(f"band_mac({mode}): a on {a.device}, b on {b.device}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"band_mac({mode}): frequency counts differ ({a.shape[0]} vs {b.shape[0]})")


# --------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------


def resolve_precision(dtype: torch.dtype, device: torch.device, precision: str | None) -> str:
    """``None`` follows the convolution the layer replaces: on CUDA, fp32 contractions use
    ``'tf32'`` when ``torch.backends.cudnn.allow_tf32`` is true (torch's default for
    convolutions), else ``'ieee'``; on the CPU interpreter ``'ieee'``. complex128 is always
    ``'ieee'``."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or None; got {precision!r}")
    if dtype == torch.complex128:
        return "ieee"
    if precision is None:
        if torch.device(device).type == "cuda" and torch.backends.cudnn.allow_tf32:
            return "tf32"
        return "ieee"
    return precision


_HALF = {"bf16": tl.bfloat16, "fp16": tl.float16}

# The Triton interpreter patches triton.language's module globals for the length of a launch
# (triton/runtime/interpreter.py, _patch_lang), so two threads interpreting at once break each
# other ("Did you forget to add @triton.jit?": 45 of 72 threaded calls raised). Interpreter
# launches are serialised; compiled GPU launches take no lock.
_INTERPRETER_LOCK = threading.Lock()


def _cdiv(a: int, b: int) -> int:
    # Plain Python: triton.cdiv is a constexpr function whose host-side call costs ~4 µs.
    return -(-a // b)


def kernel_args(problem: Problem, cfg: triton.Config) -> dict:
    """The kernel's runtime arguments by name (pointers, sizes, strides) for one config."""
    p, q, o = problem.p, problem.q, problem.o
    return dict(
        p_ptr=p.real, q_ptr=q.real, out_ptr=o.real,
        M=problem.m, N=problem.n, K=problem.k, F=problem.f,
        tiles_m=_cdiv(problem.m, cfg.kwargs["BLOCK_M"]),
        tiles_n=_cdiv(problem.n, cfg.kwargs["BLOCK_N"]),
        stride_pf=p.stride_f, stride_pr=p.stride_r, stride_pc=p.stride_c, stride_pg=p.stride_g,
        stride_qf=q.stride_f, stride_qr=q.stride_r, stride_qc=q.stride_c, stride_qg=q.stride_g,
        stride_of=o.stride_f, stride_or=o.stride_r, stride_og=o.stride_g,
    )  # fmt: skip


def derived_flags(problem: Problem, cfg: triton.Config, precision: str, interpret: bool) -> dict:
    """Every constexpr the launcher derives (not part of the config): one place."""
    c128 = problem.p.real.dtype == torch.float64
    half = None if c128 else _HALF.get(precision)
    return dict(
        USE_DOT=uses_dot(cfg),
        P_UNIT_COLS=problem.p.unit_cols,
        Q_UNIT_COLS=problem.q.unit_cols,
        IDX=tl.int64 if needs_int64(problem) else tl.int32,
        INPUT_PRECISION="ieee" if (half is not None or c128) else precision,
        HALF_DTYPE=half,
        EMULATE_HALF=interpret,
        ACC_DTYPE=tl.float64 if c128 else tl.float32,
    )


def grid(problem: Problem, cfg: triton.Config) -> tuple[int, int]:
    kw = cfg.kwargs
    tiles = _cdiv(problem.m, kw["BLOCK_M"]) * _cdiv(problem.n, kw["BLOCK_N"])
    return (_cdiv(problem.f, kw["FREQS"]), problem.groups * tiles)


def band_mac(
    mode: str,
    a: torch.Tensor,
    b: torch.Tensor,
    groups: int = 1,
    *,
    precision: str | None = None,
    config: triton.Config | dict | None = None,
    return_config: bool = False,
    tune=None,
) -> torch.Tensor | tuple[torch.Tensor, triton.Config | None]:
    """Band contraction on Triton.

    Args:
        mode: ``"fwd"``: ``a = X [F, B, C]``, ``b = Wc [F, O, C/groups]`` -> ``Y [F, B, O]``;
            ``"dx"``: ``a = Gc [F, B, O]``, ``b = Wc [F, O, C/groups]`` -> ``dXc [F, B, C]``;
            ``"dw"``: ``a = X [F, B, C]``, ``b = Gc [F, B, O]`` -> ``dW [F, O, C/groups]``.
            Plain (unconjugated) contractions; see the module docstring.
            All complex64 (or complex128), any strides.
        groups: channel groups.
        precision: ``None`` (follow the convolution's precision, see :func:`resolve_precision`),
            ``"ieee"``, ``"tf32"``, ``"bf16"``, ``"fp16"`` (half operands, fp32 accumulation).
        config: a ``triton.Config`` (or its flat dict) with kwargs ``BLOCK_M``, ``BLOCK_N``,
            ``BLOCK_K``, ``FREQS``; ``None`` asks ``tune``, or without one takes the heuristic
            default.
        return_config: also return the ``triton.Config`` that ran (e.g. the tuner's choice).
        tune: the caller's tuner, called as ``bltriton.autotune.get_config`` (keyword
            arguments ``kernel``, ``source_hash``, ``key``, ``configs``, ``default``, ``run``,
            ``device``, ``prune``); the kernel file imports no tuner.

    Returns:
        The complex result, contiguous, on ``a``'s device (and the config, if asked).
    """
    _check(mode, a, b, groups)
    problem = _operands(mode, a, b, groups)
    if problem.out.numel() == 0:
        return (problem.out, None) if return_config else problem.out
    prec = resolve_precision(a.dtype, a.device, precision)
    interpret = a.device.type != "cuda"

    def launch(cfg: triton.Config | dict) -> None:
        cfg = as_config(cfg)
        with _INTERPRETER_LOCK if interpret else contextlib.nullcontext():
            band_cmac_kernel[grid(problem, cfg)](
                **kernel_args(problem, cfg),
                **cfg.kwargs,
                **derived_flags(problem, cfg, prec, interpret),
                num_warps=cfg.num_warps,
                num_stages=cfg.num_stages,
            )

    # Launch (and tune) on the operands' GPU, whatever the current device is.
    with torch.cuda.device(a.device) if a.device.type == "cuda" else contextlib.nullcontext():
        if config is None:
            config = _tuned_config(mode, problem, prec, a, launch, tune)
        config = as_config(config)
        launch(config)
    return (problem.out, config) if return_config else problem.out


@functools.lru_cache(maxsize=1024)
def _menu(m: int, n: int, k: int, f: int, prec: str, dtype: torch.dtype) -> tuple[list[dict], dict]:
    """The tuner's candidate list and default for one shape, as one list object per shape: the
    tuner's per-call lookup is then an identity hit instead of comparing the list's contents
    (read only; never mutate)."""
    configs = [as_dict(c) for c in candidate_configs(m, n, k, f, prec, dtype)]
    return configs, as_dict(default_config(m, n, k, f, prec, dtype))


def _bucket_pow2(n: int) -> int:
    """``n`` rounded up to a power of two (the tuner's batch buckets)."""
    return 1 << max(0, int(n) - 1).bit_length()


def _tuned_config(mode: str, problem: Problem, prec: str, a: torch.Tensor, launch, tune) -> triton.Config:
    m, n, k, f = problem.m, problem.n, problem.k, problem.f
    configs, default = _menu(m, n, k, f, prec, a.dtype)
    if tune is None:
        return as_config(default)
    key = {
        "mode": mode,
        "M": _bucket_pow2(m) if mode != "dw" else m,
        "N": n,
        "K": _bucket_pow2(k) if mode == "dw" else k,
        "F": f,
        "groups": problem.groups,
        "precision": prec,
        "dtype": str(a.dtype),
    }
    chosen = tune(
        kernel="band_cmac",
        source_hash=SOURCE_HASH,
        key=key,
        configs=configs,
        default=default,
        run=launch,
        device=a.device,
        prune=prune_configs,
    )
    return as_config(chosen)

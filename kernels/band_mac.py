"""Triton kernels for the band-limited complex multiply-accumulate and its two gradients.

All three contractions of DESIGN §3 are batched complex GEMMs over the kept frequencies ``f``:

    out[f, m, n] = sum_k  P[f, m, k] · Q[f, k, n]        (per channel group)

with every operand addressed by explicit strides, so one kernel serves

    forward  Y[f, b, o]   = sum_c X[f, b, c] · Wc[f, o, c]      P = X,    Q = Wc^T
    dX       dXc[f, b, c] = sum_o Gc[f, b, o] · Wc[f, o, c]     P = Gc,   Q = Wc
    dW       dW[f, o, c]  = sum_b Gc[f, b, o] · X[f, b, c]      P = Gc^T, Q = X

on the compact frequency-major band tensors of :mod:`bltriton.ops` (``[F, B, C]``, ``[F, O, Cg]``).
The filter and output-gradient bands arrive conjugated (``Wc = conj(W)``, ``Gc = conj(G)``: the
transforms produce them for free), which is why no contraction needs a conjugation.
Triton has no complex dtype: operands are ``torch.view_as_real`` views (re/im interleaved, the
last stride is 1), each tile is loaded as a re and an im plane and the product is four real
``tl.dot``s accumulated in fp32 (fp64 for complex128).

Tiles that cannot feed ``tl.dot`` (any of M, N, K below 16, e.g. depthwise layers where K = 1)
take a broadcast-multiply-and-sum path instead (``USE_DOT=False``), and a program may loop over
several frequencies (``FREQS``) so tiny per-frequency products still give each program real work.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from functools import lru_cache
from pathlib import Path

import torch
import triton
import triton.language as tl

# Hash of this file: part of the autotuner's cache key, so an edited kernel is tuned anew.
SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]

MODES = ("fwd", "dx", "dw")
PRECISIONS = ("ieee", "tf32", "bf16", "fp16")


# --------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def _load_complex_tile(
    base, start_r, start_c, limit_r, limit_c, stride_r, stride_c,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, UNIT: tl.constexpr,
):  # fmt: skip
    """Load the complex tile ``[start_r : start_r + BLOCK_R, start_c : start_c + BLOCK_C]`` (zero
    past ``limit_r``/``limit_c``) as (re, im) planes from interleaved storage.

    ``UNIT = 0``: two loads, re at +0 and im at +1 (any strides; each a stride-2 stream when the
    tile is contiguous). ``UNIT = 1`` / ``2``: rows / columns are unit-stride complex (real stride
    2): one contiguous load of the interleaved pairs, split in registers.
    """
    if UNIT == 2:
        offs_r = start_r + tl.arange(0, BLOCK_R).to(tl.int64)
        offs_c2 = tl.arange(0, 2 * BLOCK_C).to(tl.int64)
        cols = start_c + offs_c2 // 2
        ptr = base + offs_r[:, None] * stride_r + cols[None, :] * stride_c + (offs_c2 % 2)[None, :]
        mask = (offs_r < limit_r)[:, None] & (cols < limit_c)[None, :]
        pair = tl.load(ptr, mask=mask, other=0.0)
        re, im = tl.split(tl.reshape(pair, (BLOCK_R, BLOCK_C, 2)))
    elif UNIT == 1:
        offs_c = start_c + tl.arange(0, BLOCK_C).to(tl.int64)
        offs_r2 = tl.arange(0, 2 * BLOCK_R).to(tl.int64)
        rows = start_r + offs_r2 // 2
        ptr = base + offs_c[:, None] * stride_c + rows[None, :] * stride_r + (offs_r2 % 2)[None, :]
        mask = (offs_c < limit_c)[:, None] & (rows < limit_r)[None, :]
        pair = tl.load(ptr, mask=mask, other=0.0)
        re_t, im_t = tl.split(tl.reshape(pair, (BLOCK_C, BLOCK_R, 2)))
        re = tl.trans(re_t)
        im = tl.trans(im_t)
    else:
        offs_r = start_r + tl.arange(0, BLOCK_R).to(tl.int64)
        offs_c = start_c + tl.arange(0, BLOCK_C).to(tl.int64)
        off = offs_r[:, None] * stride_r + offs_c[None, :] * stride_c
        mask = (offs_r < limit_r)[:, None] & (offs_c < limit_c)[None, :]
        re = tl.load(base + off, mask=mask, other=0.0)
        im = tl.load(base + off + 1, mask=mask, other=0.0)
    return re, im


@triton.jit
def band_cmac_kernel(
    p_ptr,
    q_ptr,
    out_ptr,
    M,
    N,
    K,
    F,
    stride_pf,
    stride_pm,
    stride_pk,
    group_stride_p,
    stride_qf,
    stride_qk,
    stride_qn,
    group_stride_q,
    stride_of,
    stride_om,
    stride_on,
    group_stride_o,
    tiles_m,
    tiles_n,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    FREQS: tl.constexpr,
    USE_DOT: tl.constexpr,
    P_UNIT: tl.constexpr,
    Q_UNIT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    HALF_DTYPE: tl.constexpr,
    EMULATE_HALF: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    """One program: a ``BLOCK_M × BLOCK_N`` tile of ``out`` for ``FREQS`` consecutive kept
    frequencies of one channel group. Grid: ``(cdiv(F, FREQS), groups · tiles_m · tiles_n)``.

    All strides are in real elements of the ``view_as_real`` tensors (re at +0, im at +1).
    """
    pid_f = tl.program_id(0)
    pid_t = tl.program_id(1)
    tiles = tiles_m * tiles_n
    g = (pid_t // tiles).to(tl.int64)
    t = pid_t % tiles
    start_m = ((t // tiles_n) * BLOCK_M).to(tl.int64)
    start_n = ((t % tiles_n) * BLOCK_N).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
    mask_m = offs_m < M
    mask_n = offs_n < N
    out_off = offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    out_mask = mask_m[:, None] & mask_n[None, :]

    for fi in range(FREQS):
        f = (pid_f * FREQS + fi).to(tl.int64)
        if f < F:
            p_base = p_ptr + f * stride_pf + g * group_stride_p
            q_base = q_ptr + f * stride_qf + g * group_stride_q
            acc_re = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
            acc_im = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
            for k0 in range(0, K, BLOCK_K):
                pr, pi = _load_complex_tile(p_base, start_m, k0, M, K, stride_pm, stride_pk,
                                            BLOCK_M, BLOCK_K, P_UNIT)  # fmt: skip
                qr, qi = _load_complex_tile(q_base, k0, start_n, K, N, stride_qk, stride_qn,
                                            BLOCK_K, BLOCK_N, Q_UNIT)  # fmt: skip
                if USE_DOT:
                    if HALF_DTYPE is not None:
                        pr = pr.to(HALF_DTYPE)
                        pi = pi.to(HALF_DTYPE)
                        qr = qr.to(HALF_DTYPE)
                        qi = qi.to(HALF_DTYPE)
                        if EMULATE_HALF:
                            # The CPU interpreter's bf16 dot is wrong; a product of two half
                            # values is exact in fp32, so rounding then an fp32 dot is the same
                            # arithmetic as a half MMA with fp32 accumulation.
                            pr = pr.to(ACC_DTYPE)
                            pi = pi.to(ACC_DTYPE)
                            qr = qr.to(ACC_DTYPE)
                            qi = qi.to(ACC_DTYPE)
                    # (pr + i·pi)(qr + i·qi) = (pr·qr − pi·qi) + i(pr·qi + pi·qr)
                    acc_re = tl.dot(pr, qr, acc_re, input_precision=INPUT_PRECISION)
                    acc_re = tl.dot(-pi, qi, acc_re, input_precision=INPUT_PRECISION)
                    acc_im = tl.dot(pr, qi, acc_im, input_precision=INPUT_PRECISION)
                    acc_im = tl.dot(pi, qr, acc_im, input_precision=INPUT_PRECISION)
                else:
                    pr3 = pr.to(ACC_DTYPE)[:, :, None]
                    pi3 = pi.to(ACC_DTYPE)[:, :, None]
                    qr3 = qr.to(ACC_DTYPE)[None, :, :]
                    qi3 = qi.to(ACC_DTYPE)[None, :, :]
                    acc_re += tl.sum(pr3 * qr3 - pi3 * qi3, axis=1)
                    acc_im += tl.sum(pr3 * qi3 + pi3 * qr3, axis=1)
            o_base = out_ptr + f * stride_of + g * group_stride_o
            tl.store(o_base + out_off, acc_re.to(out_ptr.dtype.element_ty), mask=out_mask)
            tl.store(o_base + out_off + 1, acc_im.to(out_ptr.dtype.element_ty), mask=out_mask)


# --------------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------------


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _use_dot(m: int, n: int, k: int) -> bool:
    return m >= 16 and n >= 16 and k >= 16


def default_config(m: int, n: int, k: int, f: int) -> dict:
    """Heuristic launch config for an ``M × N × K`` product over ``F`` frequencies.

    Dot path: tiles of 16–64 matched to the matrix, ``BLOCK_K`` 32. Small path: tiles sized to the
    matrix (power of two), ``BLOCK_M·BLOCK_N·BLOCK_K <= 4096`` elements of the broadcast
    product, and several frequencies per program when one frequency is little work.
    """
    if _use_dot(m, n, k):
        bm = min(64, max(16, _pow2(m)))
        bn = min(64, max(16, _pow2(n)))
        bk = 32 if k >= 32 else 16
        work = bm * bn * bk
        return {
            "BLOCK_M": bm,
            "BLOCK_N": bn,
            "BLOCK_K": bk,
            "FREQS": 1,
            "USE_DOT": True,
            "SPLIT_LOAD": False,
            "num_warps": 4 if work <= 64 * 64 * 32 else 8,
            "num_stages": 3,
        }
    bm = min(16, _pow2(m))
    bn = min(16, _pow2(n))
    bk = max(1, min(_pow2(k), 4096 // (bm * bn), 64))
    freqs = max(1, min(8, 2048 // max(1, m * n * max(1, min(k, bk)))))
    freqs = min(freqs, _pow2(f))
    return {
        "BLOCK_M": bm,
        "BLOCK_N": bn,
        "BLOCK_K": bk,
        "FREQS": freqs,
        "USE_DOT": False,
        "num_warps": 4,
        "num_stages": 2,
    }


# Dot-path candidates: the usual GEMM tile menu (a compile costs ~1 s, so the list is short and
# pruned per shape rather than a full product of every knob).
_DOT_MENU = [
    (16, 16, 32, 4, 3),
    (32, 32, 32, 4, 3),
    (32, 64, 32, 4, 3),
    (64, 32, 32, 4, 3),
    (64, 64, 32, 4, 3),
    (64, 64, 64, 4, 3),
    (64, 64, 32, 8, 4),
    (64, 128, 32, 4, 4),
    (128, 64, 32, 4, 4),
    (128, 128, 32, 8, 3),
    (128, 128, 64, 8, 3),
    (32, 32, 64, 4, 4),
]


_SPLIT_TILES = {(32, 32, 32), (64, 64, 32), (64, 128, 32), (128, 128, 32)}


@lru_cache(maxsize=1024)
def _candidate_configs(m: int, n: int, k: int, f: int) -> tuple[dict, ...]:
    base = default_config(m, n, k, f)
    if not base["USE_DOT"]:
        out = [base]
        for freqs in (1, 2, 4, 8, 16):
            if freqs != base["FREQS"] and freqs <= _pow2(f):
                out.append({**base, "FREQS": freqs})
        return tuple(out)
    configs = []
    for bm, bn, bk, warps, stages in _DOT_MENU:
        # A tile more than twice the matrix only computes masked zeros.
        if bm > max(16, _pow2(m)) or bn > max(16, _pow2(n)) or bk > max(16, _pow2(k)):
            continue
        configs.append(
            {
                "BLOCK_M": bm,
                "BLOCK_N": bn,
                "BLOCK_K": bk,
                "FREQS": 1,
                "USE_DOT": True,
                "SPLIT_LOAD": False,
                "num_warps": warps,
                "num_stages": stages,
            }
        )
    # The split-load layout variant (one contiguous load of re/im pairs, see _load_complex_tile)
    # on a few of the tiles, so the tuner measures it against the two-stream loads.
    for cfg in list(configs):
        if (cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]) in _SPLIT_TILES:
            configs.append({**cfg, "SPLIT_LOAD": True})
    if base not in configs:
        configs.append(base)
    return tuple(configs)


def candidate_configs(m: int, n: int, k: int, f: int) -> tuple[dict, ...]:
    """Configs the autotuner times for this shape (pruned to tiles the shape can fill). The same
    tuple object is returned for the same shape, which keeps the tuner's lookups cheap."""
    return _candidate_configs(m, n, k, f)


def resolve_precision(dtype: torch.dtype, device: torch.device, precision: str | None) -> str:
    """``None`` follows torch: ``'tf32'`` for fp32 on CUDA when ``allow_tf32`` is set, else
    ``'ieee'``. fp64 is always ``'ieee'``."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or None; got {precision!r}")
    if dtype == torch.complex128:
        return "ieee"
    if precision is None:
        if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
            return "tf32"
        return "ieee"
    return precision


_HALF = {"bf16": tl.bfloat16, "fp16": tl.float16}

# The Triton interpreter patches triton.language's module globals for the length of a launch
# (triton/runtime/interpreter.py, _patch_lang), so two threads interpreting at once break each
# other ("Did you forget to add @triton.jit?": 45 of 72 threaded calls raised). Interpreter
# launches are serialised; compiled GPU launches take no lock.
_INTERPRETER_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _operands(mode: str, a: torch.Tensor, b: torch.Tensor, groups: int):
    """Map a mode onto (out, P, Q, out strides, M, N, K). Strides in real elements."""
    f = a.shape[0]
    if mode == "fwd":
        x, w = a, b
        _, bsz, c = x.shape
        o, cg = w.shape[1], w.shape[2]
        og = o // groups
        out = torch.empty((f, bsz, o), dtype=x.dtype, device=x.device)
        xs, ws, os_ = _rstrides(x), _rstrides(w), _rstrides(out)
        p = (x, xs[0], xs[1], xs[2], cg * xs[2])  # P[f, m=b, k=c]
        q = (w, ws[0], ws[2], ws[1], og * ws[1])  # Q[f, k=c, n=o] = Wc[f, o, c]
        o_ = (os_[0], os_[1], os_[2], og * os_[2])
        return out, p, q, o_, bsz, og, cg
    if mode == "dx":
        gr, w = a, b
        _, bsz, o = gr.shape
        cg = w.shape[2]
        og = o // groups
        out = torch.empty((f, bsz, cg * groups), dtype=gr.dtype, device=gr.device)
        gs, ws, os_ = _rstrides(gr), _rstrides(w), _rstrides(out)
        p = (gr, gs[0], gs[1], gs[2], og * gs[2])  # P[f, m=b, k=o]
        q = (w, ws[0], ws[1], ws[2], og * ws[1])  # Q[f, k=o, n=c] = Wc[f, o, c]
        o_ = (os_[0], os_[1], os_[2], cg * os_[2])
        return out, p, q, o_, bsz, cg, og
    if mode == "dw":
        x, gr = a, b
        _, bsz, c = x.shape
        o = gr.shape[2]
        cg, og = c // groups, o // groups
        out = torch.empty((f, o, cg), dtype=x.dtype, device=x.device)
        xs, gs, os_ = _rstrides(x), _rstrides(gr), _rstrides(out)
        p = (gr, gs[0], gs[2], gs[1], og * gs[2])  # P[f, m=o, k=b] = Gc[f, b, o]
        q = (x, xs[0], xs[1], xs[2], cg * xs[2])  # Q[f, k=b, n=c] = X[f, b, c]
        o_ = (os_[0], os_[1], os_[2], og * os_[1])
        return out, p, q, o_, og, cg, bsz
    raise ValueError(f"mode must be one of {MODES}; got {mode!r}")


def _unit_axis(stride_rows: int, stride_cols: int) -> int:
    """Which tile axis holds unit-stride complex elements (real stride 2): 2 = columns, 1 = rows,
    0 = neither (then the split load does not apply)."""
    if stride_cols == 2:
        return 2
    if stride_rows == 2:
        return 1
    return 0


def _rstrides(t: torch.Tensor) -> tuple[int, int, int]:
    """Strides of a complex ``[F, R, S]`` tensor in real elements of its ``view_as_real``."""
    return tuple(2 * s for s in t.stride())


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


def band_mac(
    mode: str,
    a: torch.Tensor,
    b: torch.Tensor,
    groups: int = 1,
    *,
    precision: str | None = None,
    config: dict | None = None,
    return_config: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict]:
    """Band contraction on Triton.

    Args:
        mode: ``"fwd"``: ``a = X [F, B, C]``, ``b = Wc [F, O, C/groups]`` -> ``Y [F, B, O]``;
            ``"dx"``: ``a = Gc [F, B, O]``, ``b = Wc [F, O, C/groups]`` -> ``dXc [F, B, C]``;
            ``"dw"``: ``a = X [F, B, C]``, ``b = Gc [F, B, O]`` -> ``dW [F, O, C/groups]``.
            Plain (unconjugated) contractions; see the module docstring.
            All complex64 (or complex128), any strides.
        groups: channel groups.
        precision: ``None`` (follow torch's tf32 flag), ``"ieee"``, ``"tf32"``, ``"bf16"``,
            ``"fp16"`` (half operands, fp32 accumulation).
        config: launch config (``BLOCK_M``, ``BLOCK_N``, ``BLOCK_K``, ``FREQS``, ``USE_DOT``,
            ``SPLIT_LOAD``, ``num_warps``, ``num_stages``); ``None`` asks the autotuner
            (heuristic default on the interpreter or with ``BLTRITON_AUTOTUNE=0``).
        return_config: also return the config that ran (e.g. the tuner's choice).

    Returns:
        The complex result, contiguous, on ``a``'s device (and the config, if asked).
    """
    _check(mode, a, b, groups)
    out, p, q, o_strides, m, n, k = _operands(mode, a, b, groups)
    f = a.shape[0]
    if out.numel() == 0:
        return (out, {}) if return_config else out
    prec = resolve_precision(a.dtype, a.device, precision)
    acc = tl.float64 if a.dtype == torch.complex128 else tl.float32
    half = _HALF.get(prec)
    interpret = a.device.type != "cuda"
    p_t, q_t, out_r = torch.view_as_real(p[0]), torch.view_as_real(q[0]), torch.view_as_real(out)
    p_unit = _unit_axis(p[2], p[3])
    q_unit = _unit_axis(q[2], q[3])

    def launch(cfg: dict) -> None:
        use_dot = bool(cfg["USE_DOT"]) and _use_dot(m, n, k)
        tiles_m, tiles_n = triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(n, cfg["BLOCK_N"])
        grid = (triton.cdiv(f, cfg["FREQS"]), groups * tiles_m * tiles_n)
        with _INTERPRETER_LOCK if interpret else contextlib.nullcontext():
            band_cmac_kernel[grid](
                p_t, q_t, out_r, m, n, k, f,
                *p[1:], *q[1:], *o_strides,
                tiles_m, tiles_n,
                BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
                FREQS=cfg["FREQS"], USE_DOT=use_dot,
                P_UNIT=p_unit if cfg.get("SPLIT_LOAD") else 0,
                Q_UNIT=q_unit if cfg.get("SPLIT_LOAD") else 0,
                INPUT_PRECISION="ieee" if half is not None else prec,
                HALF_DTYPE=half, EMULATE_HALF=interpret, ACC_DTYPE=acc,
                num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
            )  # fmt: skip

    # Launch (and tune) on the operands' GPU, whatever the current device is.
    with torch.cuda.device(a.device) if a.device.type == "cuda" else contextlib.nullcontext():
        if config is None:
            config = _tuned_config(mode, m, n, k, f, groups, prec, a, launch)
        launch(config)
    return (out, config) if return_config else out


def _tuned_config(mode, m, n, k, f, groups, prec, a, launch) -> dict:
    from bltriton import autotune

    default = default_config(m, n, k, f)
    key = {
        "mode": mode,
        "M": autotune.bucket_pow2(m) if mode != "dw" else m,
        "N": n,
        "K": autotune.bucket_pow2(k) if mode == "dw" else k,
        "F": f,
        "groups": groups,
        "precision": prec,
        "dtype": str(a.dtype),
    }
    return autotune.get_config(
        kernel="band_cmac",
        source_hash=SOURCE_HASH,
        key=key,
        configs=candidate_configs(m, n, k, f),
        default=default,
        run=launch,
        device=a.device,
    )

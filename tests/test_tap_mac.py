"""``kernels/tap_mac.py`` against a float64 einsum reference: every mode, both filter forms (the
complex band and the real taps with the tap operator), 1-D and 2-D filters, dense, grouped and
depthwise layers, odd sizes, NaN-poisoned outputs (every element must be written), the bias
gradient, every precision, the config menu and the argument errors.

Under ``TRITON_INTERPRET=1`` on the CPU (tiny shapes); the ``gpu`` tests repeat the check on CUDA
at a real layer's size.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import pytest
import torch
import triton

from tests.helpers import assert_close_rel

tm = pytest.importorskip("bltriton.kernels.tap_mac")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Relative (Frobenius) error per precision: fp32 ieee, tf32 (10-bit mantissa), bf16 (7-bit),
# fp16 (10-bit) operands with fp32 accumulation; complex128.
TOL = {"ieee": 1e-5, "tf32": 5e-3, "bf16": 3e-2, "fp16": 5e-3, "c128": 1e-12}


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------


def wc_from_taps(w: torch.Tensor, taps_op: torch.Tensor) -> torch.Tensor:
    """``Wc[f, o, c] = Σ_t (T[0, f, t] + i·T[1, f, t]) · w[o, c, t]`` in complex128."""
    t = torch.complex(taps_op[0].double(), taps_op[1].double())
    w = w.reshape(w.shape[0], w.shape[1], -1).double().to(torch.complex128)
    return torch.einsum("ft,oct->foc", t, w)


def reference(mode: str, a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """The three conjugate-domain contractions (bltriton.ops) by einsum in complex128; ``b`` is
    the filter band ``Wc [F, O, Cg]`` in fwd/dx and ``Gc`` in dw."""
    a, b = a.to(torch.complex128), b.to(torch.complex128)
    f, bsz = a.shape[:2]
    if mode == "fwd":  # a = X [F, B, C]
        x = a.reshape(f, bsz, groups, -1)
        w = b.reshape(f, groups, -1, b.shape[2])
        return torch.einsum("fbgc,fgoc->fbgo", x, w).reshape(f, bsz, -1)
    if mode == "dx":  # a = Gc [F, B, O]
        g = a.reshape(f, bsz, groups, -1)
        w = b.reshape(f, groups, -1, b.shape[2])
        return torch.einsum("fbgo,fgoc->fbgc", g, w).reshape(f, bsz, -1)
    x = a.reshape(f, bsz, groups, -1)  # dw: a = X, b = Gc
    g = b.reshape(f, bsz, groups, -1)
    return torch.einsum("fbgc,fbgo->fgoc", x, g).reshape(f, -1, x.shape[-1])


def nan_like(shape, dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def check(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> None:
    if out.is_complex():
        out, ref = torch.view_as_real(out), torch.view_as_real(ref.to(torch.complex128))
    assert_close_rel(out, ref, tol, what)


def filter_case(f, c, o, groups, kernel, dtype, form):
    """``(b, taps_op, Wc)``: the filter as the kernel takes it and its band for the reference."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    w = torch.randn(o, c // groups, *kernel, dtype=real, device=DEVICE)
    taps_op = torch.randn(2, f, math.prod(kernel), dtype=real, device=DEVICE)
    wc = wc_from_taps(w, taps_op)
    if form == "taps":
        return w, taps_op, wc
    return wc.to(dtype), None, wc


def run_filter_mode(mode, f, bsz, c, o, groups, kernel, form, dtype, precision, config=None):
    b, taps_op, wc = filter_case(f, c, o, groups, kernel, dtype, form)
    a = torch.randn(f, bsz, c if mode == "fwd" else o, dtype=dtype, device=DEVICE)
    out = nan_like((f, bsz, o if mode == "fwd" else c), dtype)
    tm.mac(mode, a, b, out, taps_op=taps_op, groups=groups, precision=precision, config=config)
    return out, reference(mode, a, wc, groups)


def run_dw(f, bsz, c, o, groups, dtype, precision, db_dtype=None, config=None):
    x = torch.randn(f, bsz, c, dtype=dtype, device=DEVICE)
    gc = torch.randn(f, bsz, o, dtype=dtype, device=DEVICE)
    out = nan_like((f, o, c // groups), dtype)
    db = None if db_dtype is None else nan_like((o,), db_dtype)
    tm.mac("dw", x, gc, out, groups=groups, precision=precision, db=db, config=config)
    return out, reference("dw", x, gc, groups), db, gc[0].real.double().sum(0)


# (F, B, C, O, groups, kernel): odd sizes, 1-D and 2-D filters, dense / grouped / depthwise.
FILTER_CASES = [
    pytest.param(1, 1, 3, 7, 1, (5,), id="F1-B1-C3-O7-k5"),
    pytest.param(3, 3, 7, 7, 7, (3, 3), id="F3-B3-C7-O7-depthwise-3x3"),
    pytest.param(7, 33, 6, 4, 2, (2, 3), id="F7-B33-C6-O4-g2-2x3"),
    pytest.param(3, 3, 33, 33, 1, (1, 1), id="F3-B3-C33-O33-1x1"),
    pytest.param(7, 3, 14, 6, 2, (3, 3), id="F7-B3-C14-O6-g2-3x3"),
    pytest.param(3, 7, 3, 3, 3, (5,), id="F3-B7-C3-O3-depthwise-k5"),
]


@pytest.mark.parametrize("form", ["taps", "band"])
@pytest.mark.parametrize("mode", ["fwd", "dx"])
@pytest.mark.parametrize("f, bsz, c, o, groups, kernel", FILTER_CASES)
def test_filter_modes_match_reference(mode, form, f, bsz, c, o, groups, kernel):
    out, ref = run_filter_mode(mode, f, bsz, c, o, groups, kernel, form, torch.complex64, "ieee")
    check(out, ref, TOL["ieee"], f"{mode} {form}")


# (F, B, C, O, groups)
DW_CASES = [
    pytest.param(1, 1, 3, 7, 1, id="F1-B1-C3-O7"),
    pytest.param(3, 33, 7, 7, 7, id="F3-B33-C7-O7-depthwise"),
    pytest.param(7, 3, 6, 4, 2, id="F7-B3-C6-O4-g2"),
    pytest.param(3, 33, 33, 3, 1, id="F3-B33-C33-O3"),
    pytest.param(7, 33, 3, 33, 1, id="F7-B33-C3-O33"),
]


@pytest.mark.parametrize("db_dtype", [None, torch.float32, torch.float64], ids=["no-db", "db32", "db64"])
@pytest.mark.parametrize("f, bsz, c, o, groups", DW_CASES)
def test_dw_and_bias_gradient_match_reference(f, bsz, c, o, groups, db_dtype):
    out, ref, db, db_ref = run_dw(f, bsz, c, o, groups, torch.complex64, "ieee", db_dtype)
    check(out, ref, TOL["ieee"], "dw")
    if db is not None:
        check(db, db_ref, TOL["ieee"], "db")


PRECISION_CASES = [
    *(pytest.param(torch.complex64, p, id=f"c64-{p}") for p in ("tf32", "bf16", "fp16")),
    pytest.param(torch.complex128, "ieee", id="c128"),
]
ALL_PRECISIONS = [*PRECISION_CASES, pytest.param(torch.complex64, "ieee", id="c64-ieee")]


@pytest.mark.parametrize("dtype, precision", PRECISION_CASES)
@pytest.mark.parametrize("mode", ["fwd", "dx", "dw"])
def test_precisions(mode, dtype, precision):
    tol = TOL["c128" if dtype == torch.complex128 else precision]
    if mode == "dw":
        db_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
        out, ref, db, db_ref = run_dw(3, 33, 20, 18, 2, dtype, precision, db_dtype)
        # The bias gradient sums the unrounded Gc in every precision.
        check(db, db_ref, TOL["c128" if dtype == torch.complex128 else "ieee"], "db")
    else:
        out, ref = run_filter_mode(mode, 3, 17, 20, 18, 2, (3, 3), "taps", dtype, precision)
    check(out, ref, tol, f"{mode} {precision}")
    if dtype == torch.complex128:
        assert out.dtype == torch.complex128


@pytest.mark.parametrize("form", ["taps", "band"])
def test_complex128_band_form_and_depthwise(form):
    out, ref = run_filter_mode("dx", 3, 5, 7, 7, 7, (2, 3), form, torch.complex128, "ieee")
    check(out, ref, TOL["c128"], f"dx c128 {form}")


@pytest.mark.parametrize("mode", ["fwd", "dx", "dw"])
def test_every_menu_config_is_correct(mode):
    """Each tile the tuner may pick (an M, N, K past 16 so tiles differ; FREQS not dividing F)."""
    f, bsz, c, o = 5, 33, 20, 18
    m, n, k = {"fwd": (bsz, o, c), "dx": (bsz, c, o), "dw": (o, c, bsz)}[mode]
    menu = tm.candidate_configs(mode, m, n, k, f, 0 if mode == "dw" else 9, "ieee", torch.complex64)
    configs = [*menu, tm._cfg(16, 16, 16, 1, 1, freqs=3)]
    for cfg in configs:
        if mode == "dw":
            out, ref, db, db_ref = run_dw(f, bsz, c, o, 1, torch.complex64, "ieee", torch.float32, cfg)
            check(db, db_ref, TOL["ieee"], f"db {cfg}")
        else:
            out, ref = run_filter_mode(mode, f, bsz, c, o, 1, (3, 3), "taps", torch.complex64, "ieee", cfg)
        check(out, ref, TOL["ieee"], f"{mode} {cfg}")


def test_empty_batch_writes_zeros_and_bias():
    """B = 0: the forward output is empty; dW and db are empty sums, written as zeros."""
    x = torch.randn(3, 0, 4, dtype=torch.complex64, device=DEVICE)
    gc = torch.randn(3, 0, 6, dtype=torch.complex64, device=DEVICE)
    out, db = nan_like((3, 6, 4), torch.complex64), nan_like((6,), torch.float32)
    tm.mac("dw", x, gc, out, db=db)
    assert torch.equal(out, torch.zeros_like(out)) and torch.equal(db, torch.zeros_like(db))


# --------------------------------------------------------------------------------------------
# Menu, host path, hash
# --------------------------------------------------------------------------------------------


def test_source_hash_is_the_files_sha256():
    assert hashlib.sha256(Path(tm.__file__).read_bytes()).hexdigest() == tm.SOURCE_HASH


@pytest.mark.parametrize("dtype, precision", ALL_PRECISIONS)
@pytest.mark.parametrize(
    "mode, m, n, k, f, taps",
    [("fwd", 128, 64, 64, 325, 9), ("dx", 128, 64, 64, 325, 9), ("dw", 64, 64, 128, 325, 0),
     ("fwd", 33, 1, 1, 7, 5), ("dw", 1, 1, 33, 7, 0), ("dx", 3, 7, 33, 1, 1)],
)  # fmt: skip
def test_menu_and_default(mode, m, n, k, f, taps, dtype, precision):
    menu = tm.candidate_configs(mode, m, n, k, f, taps, precision, dtype)
    default = tm.default_config(mode, m, n, k, f, taps, precision, dtype)
    assert tm._key(menu[0]) == tm._key(default)
    assert tm.candidate_configs(mode, m, n, k, f, taps, precision, dtype) is menu  # cached
    assert len(menu) == len({tm._key(c) for c in menu}) <= 12
    for cfg in menu:
        assert set(cfg.kwargs) == set(tm.CONFIG_KEYS)
        assert min(cfg.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K")) >= 16
        assert 1 <= cfg.kwargs["FREQS"] <= 8


def test_launch_with_config_builds_no_config(monkeypatch):
    """The hot path: with a config passed in, no triton.Config is constructed."""
    cfg = tm.default_config("fwd", 3, 4, 5, 2, 9, "ieee", torch.complex64)

    def refuse(*args, **kwargs):
        raise AssertionError("triton.Config built on the launch path")

    x = torch.randn(2, 3, 5, dtype=torch.complex64, device=DEVICE)
    w = torch.randn(4, 5, 3, 3, device=DEVICE)
    taps_op = torch.randn(2, 2, 9, device=DEVICE)
    out = nan_like((2, 3, 4), torch.complex64)
    monkeypatch.setattr(triton, "Config", refuse)
    tm.mac("fwd", x, w, out, taps_op=taps_op, config=cfg)
    check(out, reference("fwd", x, wc_from_taps(w, taps_op), 1), TOL["ieee"], "fwd")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _ok_fwd():
    x = torch.randn(2, 3, 4, dtype=torch.complex64, device=DEVICE)
    w = torch.randn(6, 2, 3, 3, device=DEVICE)
    taps_op = torch.randn(2, 2, 9, device=DEVICE)
    out = torch.empty(2, 3, 6, dtype=torch.complex64, device=DEVICE)
    return dict(mode="fwd", a=x, b=w, out=out, taps_op=taps_op, groups=2)


def _ok_dw():
    x = torch.randn(2, 3, 4, dtype=torch.complex64, device=DEVICE)
    gc = torch.randn(2, 3, 6, dtype=torch.complex64, device=DEVICE)
    out = torch.empty(2, 6, 2, dtype=torch.complex64, device=DEVICE)
    db = torch.empty(6, device=DEVICE)
    return dict(mode="dw", a=x, b=gc, out=out, groups=2, db=db)


ERRORS = [
    ("mode", _ok_fwd, dict(mode="bwd"), "mode"),
    ("precision", _ok_fwd, dict(precision="fp8"), "precision"),
    ("groups-zero", _ok_fwd, dict(groups=0), "groups"),
    ("groups-divide", _ok_fwd, dict(groups=3), "groups"),
    ("a-real", _ok_fwd, dict(a=torch.randn(2, 3, 4)), "a must"),
    ("a-noncontig", _ok_fwd, dict(a=torch.randn(2, 4, 3, dtype=torch.complex64).transpose(1, 2)), "a must"),
    ("out-shape", _ok_fwd, dict(out=torch.empty(2, 3, 5, dtype=torch.complex64)), "out must"),
    ("out-dtype", _ok_fwd, dict(out=torch.empty(2, 3, 6, dtype=torch.complex128)), "out must"),
    ("weight-dtype", _ok_fwd, dict(b=torch.randn(6, 2, 3, 3, dtype=torch.float64)), "b must"),
    ("weight-dims", _ok_fwd, dict(b=torch.randn(6, 2, 3, 3, 3)), "b must"),
    ("weight-cg", _ok_fwd, dict(b=torch.randn(6, 3, 3, 3)), "Cg"),
    ("taps-shape", _ok_fwd, dict(taps_op=torch.randn(2, 2, 8)), "taps_op"),
    ("taps-dtype", _ok_fwd, dict(taps_op=torch.randn(2, 2, 9, dtype=torch.float64)), "taps_op"),
    ("band-dtype", _ok_fwd, dict(b=torch.randn(2, 6, 2, dtype=torch.complex128), taps_op=None), "b must"),
    ("band-freqs", _ok_fwd, dict(b=torch.randn(3, 6, 2, dtype=torch.complex64), taps_op=None), "b (Wc)"),
    ("db-in-fwd", _ok_fwd, dict(db=torch.empty(6)), "db"),
    ("dx-channels", _ok_fwd, dict(mode="dx", out=torch.empty(2, 3, 4, dtype=torch.complex64)), "O"),
    ("taps-in-dw", _ok_dw, dict(taps_op=torch.randn(2, 2, 9)), "taps_op"),
    ("dw-gc-shape", _ok_dw, dict(b=torch.randn(2, 4, 6, dtype=torch.complex64)), "b (Gc)"),
    ("dw-out-shape", _ok_dw, dict(out=torch.empty(2, 6, 4, dtype=torch.complex64)), "out must"),
    ("db-shape", _ok_dw, dict(db=torch.empty(5)), "db must"),
    ("db-dtype", _ok_dw, dict(db=torch.empty(6, dtype=torch.float16)), "db must"),
    ("config-small", _ok_dw, dict(config=tm._cfg(16, 8, 16, 4, 2)), "config"),
]


@pytest.mark.parametrize("base, change, expect", [pytest.param(b, c, e, id=n) for n, b, c, e in ERRORS])
def test_errors_name_the_argument(base, change, expect):
    kwargs = base()
    kwargs.update({k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in change.items()})
    with pytest.raises(ValueError, match=re.escape(expect)):
        tm.mac(kwargs.pop("mode"), kwargs.pop("a"), kwargs.pop("b"), kwargs.pop("out"), **kwargs)


def test_menu_errors():
    with pytest.raises(ValueError, match="mode"):
        tm.default_config("bwd", 4, 4, 4, 1)
    with pytest.raises(ValueError, match="precision"):
        tm.candidate_configs("fwd", 4, 4, 4, 1, 0, "fp8")


# --------------------------------------------------------------------------------------------
# CUDA: a real layer's size (CIFAR 3x3 band at r=0.5) in every precision
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, precision", ALL_PRECISIONS)
@pytest.mark.parametrize("mode", ["fwd", "dx", "dw"])
def test_cuda_cifar_layer(mode, dtype, precision):
    tol = TOL["c128" if dtype == torch.complex128 else precision]
    if mode == "dw":
        out, ref, db, db_ref = run_dw(325, 128, 64, 64, 1, dtype, precision, torch.float32)
        check(db, db_ref, 1e-5, "db")
    else:
        out, ref = run_filter_mode(mode, 325, 128, 64, 64, 1, (3, 3), "taps", dtype, precision)
    check(out, ref, tol, f"{mode} {precision}")

"""Property test: random valid configurations against torch's convolution (rate 0) and the dense
float64 reference (rate > 0), forward and all gradients.

The default suite runs 300 configurations (about 15 s on a quiet 2-core CPU); ``-m slow`` adds
3000 more. Shapes are drawn per axis (kernel, stride, dilation, padding as int, tuple,
``'same'`` or ``'valid'``), with groups, every padding mode, an explicit or ``'paper'`` FFT size,
unbatched inputs and the energy mode.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bltriton import bl_conv1d, bl_conv2d
from bltriton.reference import bl_conv_reference
from tests.helpers import assert_close_rel, rel_err

MODES = ["zeros", "reflect", "replicate", "circular"]


@st.composite
def configs(draw):
    ndim = draw(st.sampled_from([1, 2]))
    g = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    mode = draw(st.sampled_from(MODES))
    kind = draw(
        st.sampled_from(["int", "tuple", "same", "valid"] if stride == (1,) * ndim else ["int", "tuple"])
    )
    if kind == "same":
        pairs = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation))
        padding = "same"
    elif kind == "valid":
        pairs, padding = ((0, 0),) * ndim, "valid"
    else:
        per = tuple(draw(st.integers(0, 3)) for _ in range(ndim))
        padding = per if kind == "tuple" else per[0]
        per = per if kind == "tuple" else (per[0],) * ndim
        pairs = tuple((p, p) for p in per)
    # Lengths large enough for the kernel and for reflect (padding < size).
    size = tuple(
        max(d * (k - 1) + 1 - lo - hi, max(lo, hi) + 1, 1) + draw(st.integers(0, 8))
        for k, d, (lo, hi) in zip(kernel, dilation, pairs)
    )
    band = draw(st.sampled_from(["rate0", "rate", "rate", "energy"]))
    rate = 0.0 if band != "rate" else draw(st.floats(0.01, 0.95))
    energy = draw(st.floats(0.3, 1.0)) if band == "energy" else None
    fft = draw(st.sampled_from([None, None, "paper", "plus"]))
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(size, pairs))
    fft_size = tuple(p + draw(st.integers(0, 5)) for p in padded) if fft == "plus" else fft
    return {
        "ndim": ndim, "b": draw(st.integers(1, 3)), "unbatched": draw(st.booleans()), "c": cg * g,
        "o": og * g, "g": g, "size": size, "kernel": kernel, "stride": stride, "dilation": dilation,
        "padding": padding, "pairs": pairs, "mode": mode, "bias": draw(st.booleans()), "rate": rate,
        "energy": energy, "fft_size": fft_size,
    }  # fmt: skip


def _torch_conv(cfg, x, w, bias):
    flat = [v for pair in reversed(cfg["pairs"]) for v in pair]
    x_pad = F.pad(x, flat) if cfg["mode"] == "zeros" else F.pad(x, flat, mode=cfg["mode"])
    conv = F.conv2d if cfg["ndim"] == 2 else F.conv1d
    return conv(x_pad, w, bias, cfg["stride"], 0, cfg["dilation"], cfg["g"])


def _assert_close(out, ref, scale, tol, what):
    """Relative error, with a floor for outputs that are zero up to rounding (a stride that
    lands only on padding): there ``||ref||`` is noise, so compare with the operands' scale."""
    if float(ref.detach().norm()) > 1e-6 * scale:
        assert_close_rel(out, ref, tol, what)
    else:
        assert float((out.detach() - ref.detach()).norm()) <= tol * scale, f"{what}: {rel_err(out, ref)}"


def check_config(cfg):
    ndim, unbatched = cfg["ndim"], cfg["unbatched"]
    dt = torch.float64
    x = torch.randn(cfg["b"], cfg["c"], *cfg["size"], dtype=dt, requires_grad=True)
    w = torch.randn(cfg["o"], cfg["c"] // cfg["g"], *cfg["kernel"], dtype=dt, requires_grad=True)
    bias = torch.randn(cfg["o"], dtype=dt, requires_grad=True) if cfg["bias"] else None
    fn = bl_conv2d if ndim == 2 else bl_conv1d
    x_in = x[0] if unbatched else x
    band = {"compress_rate": cfg["rate"], "energy": cfg["energy"], "fft_size": cfg["fft_size"]}
    y = fn(x_in, w, bias, cfg["stride"], cfg["padding"], cfg["dilation"], cfg["g"], padding_mode=cfg["mode"],
           backend="torch", **band)  # fmt: skip
    if unbatched:
        y = y.unsqueeze(0)
        x_ref = x[:1]
    else:
        x_ref = x
    if cfg["rate"] == 0.0 and cfg["energy"] is None:
        y_ref = _torch_conv(cfg, x_ref, w, bias)
    else:
        y_ref, _ = bl_conv_reference(
            x_ref, w, bias, stride=cfg["stride"], padding=cfg["pairs"], dilation=cfg["dilation"],
            groups=cfg["g"], padding_mode=cfg["mode"], compress_rate=cfg["rate"], energy=cfg["energy"],
            fft_size=cfg["fft_size"],
        )  # fmt: skip
    scale = float(x.detach().norm() * w.detach().norm()) + 1.0
    _assert_close(y, y_ref, scale, 1e-10, f"output {cfg}")
    gy = torch.randn_like(y)
    inputs = [x, w] + ([bias] if bias is not None else [])
    for name, a, r in zip(
        ["dx", "dw", "db"], torch.autograd.grad(y, inputs, gy), torch.autograd.grad(y_ref, inputs, gy)
    ):
        _assert_close(a, r, scale * float(gy.norm()) + 1.0, 1e-9, f"{name} {cfg}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs())
def test_random_configs_match_torch_and_reference(cfg):
    check_config(cfg)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs())
def test_random_configs_many(cfg):
    check_config(cfg)

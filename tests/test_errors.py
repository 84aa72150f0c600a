"""Bad input gets a clear error that names the argument (table-driven)."""

from __future__ import annotations

import pytest
import torch

from bltriton import BLConv1d, BLConv2d, bl_conv1d, bl_conv2d, convert, set_compress_rate


def x4(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


W = lambda: torch.randn(4, 3, 3, 3)

BAD_CALLS = [
    # (id, callable, exception, text the message must contain)
    ("input-not-tensor", lambda: bl_conv2d([[1.0]], W()), TypeError, "input"),
    ("weight-not-tensor", lambda: bl_conv2d(x4(1, 3, 8, 8), 3.0), TypeError, "weight"),
    (
        "input-complex",
        lambda: bl_conv2d(x4(1, 3, 8, 8).to(torch.complex64), W()),
        TypeError,
        "input must be real",
    ),
    (
        "input-int",
        lambda: bl_conv2d(torch.ones(1, 3, 8, 8, dtype=torch.int64), W()),
        TypeError,
        "floating-point",
    ),
    ("input-rank-5", lambda: bl_conv2d(x4(1, 1, 3, 8, 8), W()), ValueError, "input must be"),
    ("input-rank-2-for-2d", lambda: bl_conv2d(x4(3, 8), W()), ValueError, "input must be"),
    (
        "weight-rank",
        lambda: bl_conv2d(x4(1, 3, 8, 8), torch.randn(4, 3, 3)),
        ValueError,
        "weight must have shape",
    ),
    ("channels", lambda: bl_conv2d(x4(1, 5, 8, 8), W()), ValueError, "channels"),
    (
        "dtype-mismatch",
        lambda: bl_conv2d(x4(1, 3, 8, 8, dtype=torch.float64), W()),
        TypeError,
        "same dtype",
    ),
    ("groups-zero", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), groups=0), ValueError, "groups"),
    (
        "groups-not-dividing-out",
        lambda: bl_conv2d(x4(1, 6, 8, 8), torch.randn(5, 3, 3, 3), groups=2),
        ValueError,
        "divisible by groups",
    ),
    ("bias-shape", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), torch.randn(3)), ValueError, "bias"),
    ("stride-zero", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), stride=0), ValueError, "stride"),
    (
        "dilation-tuple-len",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), dilation=(1, 1, 1)),
        ValueError,
        "dilation",
    ),
    ("padding-negative", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), padding=-1), ValueError, "padding"),
    (
        "padding-string",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), padding="full"),
        ValueError,
        "padding",
    ),
    (
        "same-with-stride",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), stride=2, padding="same"),
        ValueError,
        "padding='same'",
    ),
    (
        "padding-mode",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), padding_mode="mirror"),
        ValueError,
        "padding_mode",
    ),
    (
        "reflect-too-wide",
        lambda: bl_conv2d(x4(1, 3, 4, 4), W(), padding=4, padding_mode="reflect"),
        ValueError,
        "reflect",
    ),
    (
        "kernel-larger-than-input",
        lambda: bl_conv2d(x4(1, 3, 2, 8), W()),
        ValueError,
        "larger than the padded input",
    ),
    (
        "rate-percent",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=50),
        ValueError,
        "did you mean 0.5",
    ),
    (
        "rate-one",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=1.0),
        ValueError,
        "compress_rate",
    ),
    (
        "rate-negative",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=-0.1),
        ValueError,
        "compress_rate",
    ),
    (
        "rate-nan",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=float("nan")),
        ValueError,
        "compress_rate",
    ),
    (
        "rate-string",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate="0.5"),
        TypeError,
        "compress_rate",
    ),
    (
        "rate-and-energy",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=0.5, energy=0.9),
        ValueError,
        "exclusive",
    ),
    ("energy-range", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), energy=1.5), ValueError, "energy"),
    ("fft-size-small", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), fft_size=4), ValueError, "fft_size"),
    (
        "fft-size-word",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), fft_size="huge"),
        ValueError,
        "fft_size",
    ),
    ("backend", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), backend="cuda"), ValueError, "backend"),
    (
        "conv1d-rank",
        lambda: bl_conv1d(x4(1, 3, 8, 8), torch.randn(4, 3, 3)),
        ValueError,
        "input must be",
    ),
    ("module-rate", lambda: BLConv2d(3, 4, 3, compress_rate=75), ValueError, "did you mean 0.75"),
    (
        "module-rate-set",
        lambda: setattr(BLConv1d(3, 4, 3), "compress_rate", 2.0),
        ValueError,
        "compress_rate",
    ),
    ("module-backend", lambda: BLConv2d(3, 4, 3, backend="gpu"), ValueError, "backend"),
    (
        "set-rate",
        lambda: set_compress_rate(torch.nn.Sequential(BLConv2d(3, 4, 3)), 1.2),
        ValueError,
        "compress_rate",
    ),
    ("convert-not-module", lambda: convert("model"), TypeError, "nn.Module"),
    (
        "convert-unknown-name",
        lambda: convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), {"7": 0.5}),
        ValueError,
        "do not exist",
    ),
]


@pytest.mark.parametrize("call,exc,text", [pytest.param(c, e, t, id=i) for i, c, e, t in BAD_CALLS])
def test_bad_input_raises_clear_error(call, exc, text):
    with pytest.raises(exc, match=None) as info:
        call()
    assert text in str(info.value), f"message {str(info.value)!r} should mention {text!r}"


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        bl_conv2d(x4(1, 3, 8, 8), W(), backend="triton")


def test_env_backend_invalid(monkeypatch):
    monkeypatch.setenv("BLTRITON_BACKEND", "fast")
    with pytest.raises(ValueError, match="BLTRITON_BACKEND"):
        bl_conv2d(x4(1, 3, 8, 8), W())

"""Autocast: band-limited layers follow nn.Conv*d's policy (CPU bf16 here; CUDA fp16/bf16 and
GradScaler on the gpu lane). Chains of layers and mixed nn/band-limited models run, and the output
dtype is what nn.Conv*d gives under the same autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bltriton import BLConv1d, BLConv2d, bl_conv2d, convert
from tests.helpers import assert_close_rel


def _pair(device):
    """A model with a 1×1 nn.Conv2d before two band-limited layers, and its nn twin."""
    dense = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)
    ).to(device)
    bl = convert(nn.Sequential(*dense), 0.0)  # skip_1x1 keeps the 1×1 nn.Conv2d (shared with dense)
    assert type(bl[0]) is nn.Conv2d and type(bl[1]) is BLConv2d
    return dense, bl


def _check(device, dtype, tol, backend=None):
    dense, bl = _pair(device)
    for m in bl:
        if isinstance(m, BLConv2d):
            m.backend = backend
    x = torch.randn(2, 3, 12, 12, device=device)
    with torch.autocast(device, dtype):
        y, y_ref = bl(x), dense(x)
    assert y.dtype == y_ref.dtype == dtype
    assert_close_rel(y.float(), y_ref.float(), tol, f"{device} {dtype}")
    y.float().square().mean().backward()
    for m in bl:
        if isinstance(m, (nn.Conv2d,)):
            assert m.weight.grad is not None and m.weight.grad.dtype == torch.float32
            assert torch.isfinite(m.weight.grad).all()


def test_cpu_bf16_chain_and_mixed_model():
    _check("cpu", torch.bfloat16, 3e-2)


def test_cpu_bf16_1d_and_mixed_dtype_inputs():
    layer = BLConv1d(4, 4, 3, padding=1, compress_rate=0.5)
    with torch.autocast("cpu", torch.bfloat16):
        y = layer(torch.randn(2, 4, 16, dtype=torch.bfloat16))  # bf16 activation, fp32 weight
        y2 = layer(y)
        ref = nn.Conv1d(4, 4, 3, padding=1)(torch.randn(2, 4, 16, dtype=torch.bfloat16))
    assert y.dtype == y2.dtype == ref.dtype == torch.bfloat16


def test_float64_under_autocast_stays_float64():
    """Autocast leaves float64 alone (as for nn.Conv2d), and a float64 input still needs a float64
    weight."""
    layer = BLConv2d(2, 2, 3).double()
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    with torch.autocast("cpu", torch.bfloat16):
        assert layer(x).dtype == nn.Conv2d(2, 2, 3).double()(x).dtype == torch.float64
        with pytest.raises(TypeError, match="same dtype"):
            bl_conv2d(x, torch.randn(2, 2, 3, 3))


def test_outside_autocast_dtypes_must_match():
    with pytest.raises(TypeError, match="same dtype"):
        bl_conv2d(torch.randn(1, 2, 8, 8, dtype=torch.bfloat16), torch.randn(2, 2, 3, 3))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 3e-2)], ids=["fp16", "bf16"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cuda_autocast(dtype, tol, backend):
    _check("cuda", dtype, tol, backend)


@pytest.mark.gpu
def test_cuda_grad_scaler_trains():
    _, bl = _pair("cuda")
    opt = torch.optim.SGD(bl.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(4, 3, 12, 12, device="cuda")
    losses = []
    for _ in range(5):
        opt.zero_grad()
        with torch.autocast("cuda", torch.float16):
            loss = bl(x).float().square().mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_backward_inside_autocast():
    """A backward called inside the autocast region runs the op's transforms in fp32 too."""
    layer = BLConv2d(3, 4, 3, padding=1, compress_rate=0.5)
    x = torch.randn(2, 3, 10, 10, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        layer(x).float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and layer.weight.grad.dtype == torch.float32

"""The output keeps the input's (or weight's) channels_last memory format, as nn.Conv2d does."""

from __future__ import annotations

import pytest
import torch

from bltriton import BLConv2d
from tests.helpers import assert_close_rel

CL = torch.channels_last


@pytest.mark.parametrize(
    ("device", "backend"),
    [("cpu", "torch"), pytest.param("cuda", "triton", marks=pytest.mark.gpu)],
    ids=["cpu", "cuda-triton"],
)
@pytest.mark.parametrize("where", ["input", "weight", "both", "neither"])
def test_memory_format_follows_conv2d(where, device, backend):
    layer = BLConv2d(3, 4, 3, padding=1, stride=(1, 2), compress_rate=0.5, backend=backend).to(device)
    dense = torch.nn.Conv2d(3, 4, 3, padding=1, stride=(1, 2)).to(device)
    dense.load_state_dict(layer.state_dict())
    if where in ("weight", "both"):
        layer, dense = layer.to(memory_format=CL), dense.to(memory_format=CL)
    x = torch.randn(2, 3, 9, 10, device=device)
    if where in ("input", "both"):
        x = x.to(memory_format=CL)
    x.requires_grad_()
    y, y_dense = layer(x), dense(x)
    assert y.is_contiguous(memory_format=CL) == y_dense.is_contiguous(memory_format=CL)
    assert y.is_contiguous() == y_dense.is_contiguous()
    assert y.is_contiguous(memory_format=CL) == (where != "neither")
    ref = BLConv2d(3, 4, 3, padding=1, stride=(1, 2), compress_rate=0.5, backend=backend).to(device)
    ref.load_state_dict(layer.state_dict())
    x_ref = x.detach().contiguous().requires_grad_()
    y_ref = ref(x_ref)
    assert_close_rel(y, y_ref, 1e-6, "channels_last output values")
    gy = torch.randn_like(y_ref)
    (gx,) = torch.autograd.grad(y, x, gy)
    (gx_ref,) = torch.autograd.grad(y_ref, x_ref, gy)
    assert_close_rel(gx, gx_ref, 1e-6, "input gradient")

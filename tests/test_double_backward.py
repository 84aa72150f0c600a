"""Double backward: first-order gradients work with create_graph=True; differentiating them
raises a bltriton error naming the feature (never a silently wrong second derivative)."""

from __future__ import annotations

import pytest
import torch

from bltriton import bl_conv1d, bl_conv2d
from tests.helpers import assert_close_rel

KW = {"compress_rate": 0.5, "backend": "torch"}


@pytest.mark.parametrize(
    "conv, shape", [(bl_conv1d, (2, 3, 12)), (bl_conv2d, (2, 3, 8, 9))], ids=["1d", "2d"]
)
def test_create_graph_first_order_matches(conv, shape):
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(4, 3, *(3,) * (len(shape) - 2), requires_grad=True)
    gy = torch.randn_like(conv(x, w, padding=1, **KW))
    g1 = torch.autograd.grad(conv(x, w, padding=1, **KW), (x, w), gy, create_graph=True)
    g0 = torch.autograd.grad(conv(x, w, padding=1, **KW), (x, w), gy)
    for a, b in zip(g1, g0):
        assert_close_rel(a, b, 0.0, "create_graph gradient")


def test_gradient_penalty_raises_clear_error():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = bl_conv2d(x, w, padding=1, **KW)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"bltriton: double backward .* not supported"):
        gx.square().sum().backward()


def test_reverse_over_reverse_hessian_raises_clear_error():
    x = torch.randn(1, 2, 6, 6)
    w = torch.randn(2, 2, 3, 3)
    jac = torch.func.jacrev(lambda w: bl_conv2d(x, w, padding=1, **KW).square().sum())
    with pytest.raises(RuntimeError, match=r"bltriton: double backward"):
        torch.func.jacrev(jac)(w)


def test_hessian_raises_clear_error():
    """torch.func.hessian is forward-over-reverse: the forward mode reaches the gradient."""
    x = torch.randn(1, 2, 6, 6)
    with pytest.raises(RuntimeError, match=r"bltriton: double backward"):
        torch.func.hessian(lambda w: bl_conv2d(x, w, padding=1, **KW).square().sum())(torch.randn(2, 2, 3, 3))

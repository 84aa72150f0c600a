"""The op's autograd glue: which gradients are produced when only some inputs need them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bltriton import BLConv1d, BLConv2d, bl_conv1d, bl_conv2d
from tests.helpers import assert_close_rel


@pytest.mark.parametrize("ndim", [1, 2])
def test_only_bias_needs_grad(ndim):
    """Frozen weight and an input without grad: the bias gradient alone (regression: the backward
    op returned one empty tensor for both dx and dw, which autograd rejects as aliased outputs)."""
    conv, f = (bl_conv1d, F.conv1d) if ndim == 1 else (bl_conv2d, F.conv2d)
    x = torch.randn(2, 3, *(8,) * ndim)
    w = torch.randn(4, 3, *(3,) * ndim)
    b = torch.zeros(4, requires_grad=True)
    gy = torch.randn(2, 4, *(6,) * ndim)
    (db,) = torch.autograd.grad(conv(x, w, b, compress_rate=0.5, backend="torch"), b, gy)
    (db_ref,) = torch.autograd.grad(f(x, w, b), b, gy)
    assert_close_rel(db, db_ref, 1e-6, "db")


@pytest.mark.parametrize("cls", [BLConv1d, BLConv2d])
def test_frozen_weight_module_trains_bias(cls):
    layer = cls(3, 4, 3, padding=1, compress_rate=0.25, backend="torch")
    layer.weight.requires_grad_(False)
    x = torch.randn(2, 3, *(7,) * (1 if cls is BLConv1d else 2))
    layer(x).square().sum().backward()
    assert layer.weight.grad is None
    assert layer.bias.grad is not None and torch.isfinite(layer.bias.grad).all()
    assert layer.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("need", ["x", "w", "xw"])
def test_partial_gradients_match_full(need):
    """Each subset of needed gradients gives the same values as computing all of them."""
    x = torch.randn(3, 2, 9, 10)
    w = torch.randn(5, 2, 3, 3)
    gy = torch.randn(3, 5, 9, 10)
    xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
    full = torch.autograd.grad(bl_conv2d(xa, wa, padding=1, compress_rate=0.5, backend="torch"), (xa, wa), gy)
    xs = x.clone().requires_grad_("x" in need)
    ws = w.clone().requires_grad_("w" in need)
    wanted = [t for t, k in ((xs, "x"), (ws, "w")) if k in need]
    part = torch.autograd.grad(bl_conv2d(xs, ws, padding=1, compress_rate=0.5, backend="torch"), wanted, gy)
    for got, ref in zip(part, [g for g, k in zip(full, "xw") if k in need]):
        assert_close_rel(got, ref, 1e-6, "partial gradient")


def test_eager_calls_the_op_bodies_directly_with_the_same_results(monkeypatch):
    """Plain eager mode skips the custom-op dispatch (autograd._eager) and must compute exactly
    what the registered ops compute; the ops themselves must not run there."""
    from bltriton import autograd as bl_autograd

    layer = BLConv2d(3, 4, 3, padding=1, stride=2, compress_rate=0.5, backend="torch")
    x = torch.randn(2, 3, 11, 9, requires_grad=True)

    def run():
        x.grad = None
        layer.zero_grad()
        y = layer(x)
        y.square().sum().backward()
        return y.detach(), x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()

    def boom(*args, **kwargs):
        raise AssertionError("the custom op ran in plain eager mode")

    with monkeypatch.context() as m:
        m.setattr(bl_autograd, "_band_conv_op", boom)
        m.setattr(bl_autograd, "_band_conv_backward_op", boom)
        fast = run()
    with monkeypatch.context() as m:
        m.setattr(bl_autograd, "_eager", lambda: False)
        through_ops = run()
    for a, b in zip(fast[:3], through_ops[:3]):
        assert torch.equal(a, b)
    # The bias gradient: eager reads Σ dy off the gradient's band (its DC term), the op path sums
    # dy; the same sum in another order.
    assert_close_rel(fast[3], through_ops[3], 1e-5, "bias gradient")
    assert_close_rel(fast[3], (2 * through_ops[0]).sum(dim=(0, 2, 3)), 1e-5, "bias gradient = Σ dy")


def test_ops_run_under_a_dispatch_mode():
    """Under a dispatch mode (here FakeTensorMode, as compilers and export use) the registered op
    runs, with its fake implementation."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bltriton import autograd as bl_autograd

    assert bl_autograd._eager()
    with FakeTensorMode() as mode:
        assert not bl_autograd._eager()
        x = mode.from_tensor(torch.randn(2, 3, 8, 8))
        w = mode.from_tensor(torch.randn(4, 3, 3, 3))
        y = bl_conv2d(x, w, None, padding=1, compress_rate=0.5, backend="torch")
        assert y.shape == (2, 4, 8, 8)

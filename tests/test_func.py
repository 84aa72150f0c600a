"""torch.func: grad, vmap (batching rules, no fallback warning), jacrev, per-sample gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

from bltriton import BLConv1d, BLConv2d, bl_conv1d, bl_conv2d
from bltriton.reference import bl_conv_reference
from tests.helpers import assert_close_rel

KW = {"compress_rate": 0.5, "backend": "torch"}
F64 = torch.float64


@pytest.fixture(autouse=True)
def _no_warnings():
    """vmap's slow fallback announces itself with a UserWarning: none may appear (torch's own
    DeprecationWarnings, e.g. from its jvp decompositions, are not ours)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        yield


def test_grad_matches_autograd():
    x = torch.randn(2, 3, 9, 8, dtype=F64)
    w = torch.randn(4, 3, 3, 3, dtype=F64)
    b = torch.randn(4, dtype=F64)

    def loss(w, b):
        return bl_conv2d(x, w, b, stride=(1, 2), padding=1, **KW).sin().sum()

    gw, gb = grad(loss, argnums=(0, 1))(w, b)
    wa, ba = w.clone().requires_grad_(), b.clone().requires_grad_()
    ref = torch.autograd.grad(loss(wa, ba), (wa, ba))
    assert_close_rel(gw, ref[0], 1e-12, "grad w")
    assert_close_rel(gb, ref[1], 1e-12, "grad b")


@pytest.mark.parametrize("ndim", [1, 2])
def test_vmap_over_samples_equals_batched_call(ndim):
    """A vmapped input with a shared weight folds into the op's batch (one call)."""
    conv = bl_conv1d if ndim == 1 else bl_conv2d
    x = torch.randn(3, 2, 4, *(9,) * ndim, dtype=F64)  # [V, B, C, *L]
    w = torch.randn(6, 2, *(3,) * ndim, dtype=F64)
    b = torch.randn(6, dtype=F64)
    y = vmap(lambda xi: conv(xi, w, b, padding=1, groups=2, **KW))(x)
    ref = conv(x.flatten(0, 1), w, b, padding=1, groups=2, **KW).unflatten(0, (3, 2))
    assert_close_rel(y, ref, 1e-12, "vmap over samples")


def test_vmap_over_weights_loops_per_slice():
    x = torch.randn(2, 3, 8, 7, dtype=F64)
    w = torch.randn(4, 5, 3, 3, 3, dtype=F64)  # 4 weight sets
    b = torch.randn(4, 5, dtype=F64)
    y = vmap(lambda wi, bi: bl_conv2d(x, wi, bi, padding=1, **KW))(w, b)
    ref = torch.stack([bl_conv2d(x, w[i], b[i], padding=1, **KW) for i in range(4)])
    assert_close_rel(y, ref, 1e-12, "vmap over weights")


@pytest.mark.parametrize("ndim", [1, 2])
def test_jacrev_matches_dense_reference(ndim):
    """The Jacobian of a tiny layer, w.r.t. input and weight, against autograd through the
    dense float64 reference (full spectrum × mask)."""
    conv = bl_conv1d if ndim == 1 else bl_conv2d
    x = torch.randn(1, 2, *(5,) * ndim, dtype=F64)
    w = torch.randn(2, 2, *(3,) * ndim, dtype=F64)
    pads = ((1, 1),) * ndim

    def f(x, w):
        return conv(x, w, padding=1, **KW)

    def f_ref(x, w):
        one = (1,) * ndim
        return bl_conv_reference(x, w, stride=one, padding=pads, dilation=one, compress_rate=0.5)[0]

    jx, jw = jacrev(f, argnums=(0, 1))(x, w)
    rx, rw = torch.autograd.functional.jacobian(f_ref, (x, w))
    assert_close_rel(jx, rx, 1e-10, "d y / d x")
    assert_close_rel(jw, rw, 1e-10, "d y / d w")


@pytest.mark.parametrize(
    ("cls", "device", "backend"),
    [
        (BLConv1d, "cpu", "torch"),
        (BLConv2d, "cpu", "torch"),
        pytest.param(BLConv2d, "cuda", "triton", marks=pytest.mark.gpu),
    ],
    ids=["1d", "2d", "cuda-triton-2d"],
)
def test_per_sample_gradients_match_a_loop(cls, device, backend):
    ndim = 1 if cls is BLConv1d else 2
    layer = cls(3, 4, 3, padding=1, stride=2, compress_rate=0.5, backend=backend).to(device, F64)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x = torch.randn(5, 3, *(10,) * ndim, dtype=F64, device=device)
    target = torch.randn(5, 4, *(5,) * ndim, dtype=F64, device=device)

    def loss(p, xi, ti):
        return (functional_call(layer, p, (xi[None],)) - ti[None]).square().sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, target)
    for i in range(x.shape[0]):
        layer.zero_grad()
        loss(dict(layer.named_parameters()), x[i], target[i]).backward()
        for name, p in layer.named_parameters():
            assert_close_rel(per_sample[name][i], p.grad, 1e-12, f"sample {i} {name}")


@pytest.mark.parametrize("ndim", [1, 2])
def test_forward_mode_jacfwd_and_jvp(ndim):
    """Forward mode from the saved bands: jacfwd equals jacrev for input, weight and bias, and a
    jvp equals the bilinear expansion conv(x_t, w) + conv(x, w_t) + b_t."""
    conv = bl_conv1d if ndim == 1 else bl_conv2d
    x = torch.randn(2, 3, *(7,) * ndim, dtype=F64)
    w = torch.randn(4, 3, *(3,) * ndim, dtype=F64)
    b = torch.randn(4, dtype=F64)

    def f(x, w, b):
        return conv(x, w, b, padding=1, stride=2, **KW)

    for fwd, rev in zip(jacfwd(f, argnums=(0, 1, 2))(x, w, b), jacrev(f, argnums=(0, 1, 2))(x, w, b)):
        assert_close_rel(fwd, rev, 1e-12, "jacfwd vs jacrev")
    xt, wt, bt = torch.randn_like(x), torch.randn_like(w), torch.randn_like(b)
    _, y_t = jvp(f, (x, w, b), (xt, wt, bt))
    expected = f(xt, w, None) + f(x, wt, None) + bt.reshape(-1, *(1,) * ndim)
    assert_close_rel(y_t, expected, 1e-12, "jvp")

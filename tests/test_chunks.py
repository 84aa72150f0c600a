"""Frequency chunks of the torch path (``ops.CHUNK_BYTES``): the filter band built and consumed a
few frequencies at a time computes exactly what the whole band computes, forward and every
gradient, for each save policy, 1D and 2D, strides, dilations and groups."""

from __future__ import annotations

import pytest
import torch

from bltriton import BLConv1d, BLConv2d, ops
from tests.helpers import assert_close_rel

pytestmark = pytest.mark.usefixtures("spectral_only")  # the spectral algorithm's internals

CASES = [
    # (id, cls, C, O, kernel, kwargs, input size)
    ("1d", BLConv1d, 6, 8, 5, {"padding": 2}, (23,)),
    ("1d-dilated-grouped", BLConv1d, 6, 9, 3, {"dilation": 2, "groups": 3}, (20,)),
    ("2d-stride2", BLConv2d, 4, 6, 3, {"padding": 1, "stride": 2}, (11, 9)),
    ("2d-grouped", BLConv2d, 6, 4, 3, {"groups": 2, "padding": 1}, (8, 8)),
    ("2d-depthwise", BLConv2d, 4, 4, 3, {"groups": 4}, (9, 7)),
]


def _run(layer, x, dy=None):
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad()
    y = layer(x)
    y.backward(dy)
    return [y.detach(), x.grad, layer.weight.grad, layer.bias.grad]


@pytest.mark.parametrize("save", ["input", "band"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_chunked_filter_band_matches_whole(case, save, monkeypatch):
    _, cls, c, o, k, kwargs, size = case
    layer = cls(c, o, k, compress_rate=0.4, backend="torch", **kwargs).double()
    layer.save = save
    x = torch.randn(3, c, *size, dtype=torch.float64)
    dy = torch.randn_like(layer(x))
    whole = _run(layer, x, dy)
    calls = []
    real_mac = ops.mac

    def counting_mac(mode, a, *args, **kw):
        calls.append((mode, a.shape[0]))
        return real_mac(mode, a, *args, **kw)

    monkeypatch.setattr(ops, "CHUNK_BYTES", {"cpu": 1})  # one frequency per chunk
    monkeypatch.setattr(ops, "CHUNK_MIN_TAPS", 0)
    monkeypatch.setattr(ops, "mac", counting_mac)
    chunked = _run(layer, x, dy)
    for name, a, b in zip(("y", "dx", "dw", "db"), chunked, whole):
        assert_close_rel(a, b, 1e-12, name)
    f = layer.last_band.num_kept
    assert f > 1
    # dW always goes by chunks; fwd and dX too unless the filter band is kept whole (save='band'
    # with more taps than the batch).
    per_mode = {m: [n for mm, n in calls if mm == m] for m in ("fwd", "dx", "dw")}
    assert per_mode["dw"] == [1] * f
    kept_whole = save == "band" and layer.kernel_size[0] ** len(size) > x.shape[0]
    assert per_mode["fwd"] == ([f] if kept_whole else [1] * f)
    assert per_mode["dx"] == ([f] if kept_whole else [1] * f)


def test_chunk_sizes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ops._chunks(40, 1, 1, cuda, "torch") == [(0, 40)]  # whole band off the CPU
    assert ops._chunks(40, 1, 1, cpu, "triton") == [(0, 40)]  # and on the triton backend
    mib = 1 << 20
    assert ops._chunks(40, mib, 1, cpu, "torch") == [(s, s + 2) for s in range(0, 40, 2)]
    assert ops._chunks(40, mib, 5, cpu, "torch") == [(0, 10), (10, 20), (20, 30), (30, 40)]  # >= 2 taps
    assert ops._chunks(6, 2 * mib, 9, cpu, "torch") == [(0, 6)]
    assert ops._chunks(0, 8, 1, cpu, "torch") == [(0, 0)]

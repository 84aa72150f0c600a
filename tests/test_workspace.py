"""The per-thread scratch (``ops._scratch``, ``ops.WORKSPACE_BYTES``) of the chunk loops and of
the spatial algorithm's projected input: the same
results with buffers kept or not, nothing returned aliases a kept buffer, the cap holds, and each
thread has its own buffers."""

from __future__ import annotations

import threading

import pytest
import torch

from bltriton import BLConv1d, BLConv2d, ops

pytestmark = pytest.mark.usefixtures("spectral_only")  # the spectral algorithm's internals


@pytest.fixture(autouse=True)
def _fresh_workspace():
    ops.clear_workspace()
    yield
    ops.clear_workspace()


def _step(layer, x, gy):
    x = x.clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(gy)
    return y.detach(), x.grad, layer.weight.grad


def _kept_ranges():
    return [(b.data_ptr(), b.data_ptr() + b.nbytes) for b in ops._WORKSPACE.buffers.values()]


@pytest.mark.parametrize(
    "make",
    [
        lambda: (BLConv1d(6, 8, 5, padding=2, compress_rate=0.5), (3, 6, 40)),  # 5 taps: torch.mm path
        lambda: (BLConv2d(6, 8, 3, padding=1, compress_rate=0.5), (3, 6, 12, 12)),  # 9 taps
        # the spatial algorithm's projected input (separable on a 12x12 map)
        lambda: (BLConv2d(6, 8, 3, padding=1, compress_rate=0.5, algorithm="spatial"), (3, 6, 12, 12)),
    ],
    ids=["1d-k5", "2d-k3", "2d-spatial"],
)
def test_kept_scratch_changes_no_result_and_never_escapes(monkeypatch, make):
    layer, shape = make()
    monkeypatch.setattr(ops, "CHUNK_BYTES", {"cpu": 1})  # many chunks: every loop runs
    x, x2 = torch.randn(shape), torch.randn(shape)
    gy = torch.randn_like(layer(x))
    monkeypatch.setattr(ops, "WORKSPACE_BYTES", {})  # nothing kept: per-call buffers
    ops.clear_workspace()
    ref = _step(layer, x, gy)
    assert not ops._WORKSPACE.buffers
    monkeypatch.setattr(ops, "WORKSPACE_BYTES", {"cpu": 64 << 20})
    first = _step(layer, x, gy)
    assert ops._WORKSPACE.buffers, "nothing kept scratch"
    for a, b in zip(first, ref):
        assert torch.equal(a, b)
    kept = [t.clone() for t in first]
    _step(layer, x2, torch.randn_like(gy))  # reuses the scratch with other values
    for a, b in zip(first, kept):
        assert torch.equal(a, b), "a returned tensor shares memory with the scratch"
    for t in first:
        lo = t.data_ptr()
        assert all(not (s <= lo < e) for s, e in _kept_ranges())


def test_the_cap_holds(monkeypatch):
    monkeypatch.setattr(ops, "WORKSPACE_BYTES", {"cpu": 1000})
    small = ops._scratch("a", (10,), torch.float32, torch.device("cpu"))
    assert small.shape == (10,) and len(ops._WORKSPACE.buffers) == 1
    big = ops._scratch("b", (1000,), torch.float32, torch.device("cpu"))  # 4000 B: over the cap
    assert big.shape == (1000,) and set(k[0] for k in ops._WORKSPACE.buffers) == {"a"}
    again = ops._scratch("a", (5, 2), torch.float32, torch.device("cpu"))
    assert again.data_ptr() == small.data_ptr()  # reused, viewed to the new shape
    monkeypatch.setattr(ops, "WORKSPACE_BYTES", {})  # no workspace on this device: nothing kept
    ops.clear_workspace()
    ops._scratch("a", (10,), torch.float32, torch.device("cpu"))
    assert not ops._WORKSPACE.buffers


def test_each_thread_has_its_own_scratch():
    mine = ops._scratch("a", (16,), torch.float32, torch.device("cpu"))
    seen = {}

    def other():
        seen["ptr"] = ops._scratch("a", (16,), torch.float32, torch.device("cpu")).data_ptr()
        seen["count"] = len(ops._WORKSPACE.buffers)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen["ptr"] != mine.data_ptr() and seen["count"] == 1
    assert len(ops._WORKSPACE.buffers) == 1


@pytest.mark.parametrize("kernel", [(5,), (3, 3)])
def test_chunk_loop_results_own_their_memory(monkeypatch, kernel):
    """``filter_mac`` and ``weight_grad`` themselves return fresh tensors: a later call, which
    rewrites the scratch, leaves an earlier result as it was."""
    from bltriton import spectral

    monkeypatch.setattr(ops, "CHUNK_BYTES", {"cpu": 1})
    band = spectral.band_for_rate((16,) * len(kernel), 0.5)
    f, ones = band.num_kept, (1,) * len(kernel)

    def call():
        xb = torch.randn(f, 3, 6, dtype=torch.complex64)
        gcb = torch.randn(f, 3, 8, dtype=torch.complex64)
        w = torch.randn(8, 6, *kernel)
        return (
            ops.filter_mac("fwd", xb, w, band, ones, 1, "torch"),
            ops.filter_mac("dx", gcb, w, band, ones, 1, "torch"),
            ops.weight_grad(xb, gcb, band, kernel, ones, 1, "torch"),
        )

    first = call()
    kept = [t.clone() for t in first]
    call()
    for a, b in zip(first, kept):
        assert torch.equal(a, b), "a result shares memory with the scratch"

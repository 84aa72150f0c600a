"""The per-thread scratch (``bltriton._workspace``) of the chunk loops and of
the spatial algorithm's projected input: the same
results with buffers kept or not, nothing returned aliases a kept buffer, the cap holds, and each
thread has its own buffers."""

from __future__ import annotations

import threading

import pytest
import torch

from bltriton import BLConv1d, BLConv2d, _workspace, ops, transforms

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
    return [(b.data_ptr(), b.data_ptr() + b.nbytes) for b in _workspace._WORKSPACE.buffers.values()]


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
    _check_scratch_invariance(monkeypatch, layer, shape)


@pytest.mark.parametrize("method", ["direct", "gemm", "fft", "blocked"])
@pytest.mark.parametrize("save", ["input", "band"])
@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 2)])
def test_transforms_scratch_changes_no_result(monkeypatch, method, save, stride, groups):
    """The transforms' intermediates and the bands consumed inside one call (input band under
    save='input', output band, gradient band, dX's band) live in scratch; a band the backward
    keeps (save='band') must not."""
    monkeypatch.setattr(transforms, "FORCE_METHOD", method)
    transforms.clear_plans()
    layer = BLConv2d(
        4, 6, 3, stride=stride, padding=1, groups=groups, compress_rate=0.5, algorithm="spectral"
    )
    layer.save = save
    try:
        _check_scratch_invariance(monkeypatch, layer, (3, 4, 14, 14))
    finally:
        transforms.clear_plans()


def _check_scratch_invariance(monkeypatch, layer, shape):
    x, x2 = torch.randn(shape), torch.randn(shape)
    gy = torch.randn_like(layer(x))
    monkeypatch.setattr(_workspace, "WORKSPACE_BYTES", {})  # nothing kept: per-call buffers
    ops.clear_workspace()
    ref = _step(layer, x, gy)
    assert not _workspace._WORKSPACE.buffers
    monkeypatch.setattr(_workspace, "WORKSPACE_BYTES", {"cpu": 64 << 20})
    first = _step(layer, x, gy)
    assert _workspace._WORKSPACE.buffers, "nothing kept scratch"
    for a, b in zip(first, ref):
        assert torch.equal(a, b)
    kept = [t.clone() for t in first]
    _step(layer, x2, torch.randn_like(gy))  # reuses the scratch with other values
    for a, b in zip(first, kept):
        assert torch.equal(a, b), "a returned tensor shares memory with the scratch"
    for t in first:
        lo = t.data_ptr()
        assert all(not (s <= lo < e) for s, e in _kept_ranges())
    # What the backward keeps must not be scratch either: a second forward (another layer of the
    # same shape, in a model) runs before the first one's backward.
    xa = x.clone().requires_grad_()
    ya = layer(xa)
    layer(x2.clone().requires_grad_())
    dx, dw = torch.autograd.grad(ya, [xa, layer.weight], gy)
    assert torch.equal(ya.detach(), ref[0]) and torch.equal(dx, ref[1]) and torch.equal(dw, ref[2])


def test_the_cap_holds(monkeypatch):
    monkeypatch.setattr(_workspace, "WORKSPACE_BYTES", {"cpu": 1000})
    small = _workspace.scratch("a", (10,), torch.float32, torch.device("cpu"))
    assert small.shape == (10,) and len(_workspace._WORKSPACE.buffers) == 1
    big = _workspace.scratch("b", (1000,), torch.float32, torch.device("cpu"))  # 4000 B: over the cap
    assert big.shape == (1000,) and set(k[0] for k in _workspace._WORKSPACE.buffers) == {"a"}
    again = _workspace.scratch("a", (5, 2), torch.float32, torch.device("cpu"))
    assert again.data_ptr() == small.data_ptr()  # reused, viewed to the new shape
    monkeypatch.setattr(_workspace, "WORKSPACE_BYTES", {})  # no workspace on this device: nothing kept
    ops.clear_workspace()
    assert _workspace.scratch("a", (10,), torch.float32, torch.device("cpu")) is None
    assert not _workspace._WORKSPACE.buffers


def test_no_scratch_inside_functorch_transforms():
    """jvp / vmap forbid writing into a tensor made outside them: the callers compute out of
    place there (``torch.func.jacfwd`` through a 1D layer failed on the transforms' copies)."""
    cpu = torch.device("cpu")
    assert _workspace.scratch("a", (4,), torch.float32, cpu) is not None
    seen = []

    def f(x):
        seen.append(_workspace.scratch("a", (4,), torch.float32, cpu))
        return x * 2

    torch.func.jvp(f, (torch.ones(3),), (torch.ones(3),))
    torch.func.vmap(f)(torch.ones(2, 3))
    assert seen == [None, None]


def test_each_thread_has_its_own_scratch():
    mine = _workspace.scratch("a", (16,), torch.float32, torch.device("cpu"))
    seen = {}

    def other():
        seen["ptr"] = _workspace.scratch("a", (16,), torch.float32, torch.device("cpu")).data_ptr()
        seen["count"] = len(_workspace._WORKSPACE.buffers)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen["ptr"] != mine.data_ptr() and seen["count"] == 1
    assert len(_workspace._WORKSPACE.buffers) == 1


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


@pytest.mark.parametrize("algorithm", ["spectral", "spatial"])
def test_scratch_made_under_inference_mode_serves_training(algorithm):
    """A buffer first made inside ``inference_mode`` must not be an inference tensor: the next
    training call writes into it (this failed with 'Inplace update to inference tensor')."""
    layer = BLConv2d(4, 6, 3, padding=1, compress_rate=0.5, algorithm=algorithm)
    x = torch.randn(2, 4, 12, 12)  # the spatial algorithm's separable projection: scratch
    layer.eval()
    with torch.inference_mode():
        y_inf = layer(x)
    assert _workspace._WORKSPACE.buffers, "the inference call used no scratch"
    assert not any(b.is_inference() for b in _workspace._WORKSPACE.buffers.values())
    layer.train()
    y, dx, dw = _step(layer, x, torch.randn_like(y_inf))
    assert torch.allclose(y, y_inf, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(dx).all() and torch.isfinite(dw).all()


def test_checkpoint_recompute_between_backwards_changes_no_result():
    """``torch.utils.checkpoint`` runs a block's forward again in the middle of the backward pass,
    between other layers' backward ops: the scratch they share must not leak between them."""
    from torch.utils.checkpoint import checkpoint

    l1 = BLConv2d(4, 8, 3, padding=1, compress_rate=0.5, algorithm="spectral")
    l2 = BLConv2d(8, 8, 3, padding=1, compress_rate=0.5, algorithm="spectral")
    l3 = BLConv2d(8, 4, 3, padding=1, compress_rate=0.5, algorithm="spatial")
    x = torch.randn(2, 4, 20, 20, requires_grad=True)

    def block(z):
        return l2(torch.relu(l1(z)))

    def grads(use_checkpoint):
        for m in (l1, l2, l3):
            m.zero_grad(set_to_none=True)
        x.grad = None
        h = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
        l3(torch.relu(h)).square().sum().backward()
        return [x.grad] + [m.weight.grad for m in (l1, l2, l3)]

    plain, checkpointed = grads(False), grads(True)
    assert _workspace._WORKSPACE.buffers, "no scratch used"
    for a, b in zip(plain, checkpointed):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)

"""The inference filter-band cache: same results as the uncached path, and no stale band."""

from __future__ import annotations

import pytest
import torch

from bltriton import BLConv1d, BLConv2d
from tests.helpers import assert_close_rel

pytestmark = pytest.mark.usefixtures("spectral_only")  # the spectral algorithm's internals


def _layer(ndim: int = 2, **kw):
    torch.manual_seed(0)
    if ndim == 2:
        return BLConv2d(3, 5, 3, padding=1, compress_rate=0.5, backend="torch", **kw)
    return BLConv1d(3, 5, 4, padding="same", compress_rate=0.5, backend="torch", **kw)


def _x(ndim: int = 2, size: int = 10, dtype=torch.float32):
    return torch.randn(2, 3, *((size,) * ndim), dtype=dtype)


def _uncached(layer, x):
    """The same layer's output through the training path (the cache is not consulted)."""
    layer.train()
    with torch.no_grad():
        y = layer(x)
    layer.eval()
    return y


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_cache_hit_gives_the_uncached_result(ndim, mode):
    layer = _layer(ndim).eval()
    x = _x(ndim)
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with ctx():
        y1 = layer(x)
        y2 = layer(x)
    assert layer._filter_cache.misses == 1
    assert torch.equal(y1, y2)
    assert_close_rel(y1, _uncached(layer, x), 1e-6, "cached output")


def test_no_cache_while_training_or_recording_grad():
    layer = _layer()
    x = _x()
    with torch.no_grad():
        layer(x)  # training mode
    layer.eval()
    layer(x)  # grad enabled: the filter band must stay differentiable
    assert layer._filter_cache.misses == 0


def _misses_after(layer, x, change) -> tuple[int, torch.Tensor, torch.Tensor]:
    layer.eval()
    with torch.no_grad():
        layer(x)
    before = layer._filter_cache.misses
    new_x = change(layer, x)
    x = x if new_x is None else new_x
    layer.eval()
    with torch.no_grad():
        y = layer(x)
    return layer._filter_cache.misses - before, y, x


def _sgd_step(layer, x):
    layer.train()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x).square().sum().backward()
    opt.step()


def _load_state(layer, x):
    other = _layer()
    with torch.no_grad():
        other.weight.mul_(-3.0)
    layer.load_state_dict(other.state_dict())


def _to_double(layer, x):
    layer.to(torch.float64)
    return x.double()


def _rate(layer, x):
    layer.compress_rate = 0.75


def _size(layer, x):
    return _x(size=13)


def _in_place(layer, x):
    with torch.no_grad():
        layer.weight[0].zero_()


def _data_swap(layer, x):
    layer.weight.data = torch.randn_like(layer.weight)


@pytest.mark.parametrize(
    "change",
    [_sgd_step, _load_state, _to_double, _rate, _size, _in_place, _data_swap],
    ids=["optimizer-step", "load_state_dict", "to-float64", "rate", "input-size", "in-place", "data-swap"],
)
def test_each_change_invalidates(change):
    layer = _layer()
    misses, y, x = _misses_after(layer, _x(), change)
    assert misses == 1
    assert_close_rel(y, _uncached(layer, x), 1e-6, "output after the change")


def test_unchanged_layer_keeps_its_band():
    layer = _layer()
    misses, _, _ = _misses_after(layer, _x(), lambda layer, x: None)
    assert misses == 0


def test_deepcopy_starts_empty():
    import copy

    layer = _layer().eval()
    with torch.no_grad():
        layer(_x())
    clone = copy.deepcopy(layer)
    assert clone._filter_cache.misses == 0 and clone._filter_cache._band is None

"""The memo of checked calls (``functional._CALLS``) and the eager ``Function`` entry: a call that
hits the memo computes what a fresh call computes, every argument it depends on is part of its
key, bad arguments are still rejected, and forward-mode AD works through the eager entry."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from bltriton import BLConv2d, bl_conv1d, bl_conv2d
from bltriton import functional as BF
from tests.helpers import assert_close_rel


@pytest.fixture(autouse=True)
def _empty_memo():
    BF._CALLS.clear()
    yield
    BF._CALLS.clear()


def test_a_remembered_call_computes_what_a_fresh_one_does():
    x, w, b = torch.randn(2, 3, 12, 10), torch.randn(4, 3, 3, 3), torch.randn(4)
    fresh = bl_conv2d(x, w, b, padding=1, compress_rate=0.5)
    assert len(BF._CALLS) == 1
    again = bl_conv2d(x, w, b, padding=1, compress_rate=0.5)
    assert len(BF._CALLS) == 1  # a hit, no new entry
    assert torch.equal(fresh, again)


@pytest.mark.parametrize(
    "change",
    [
        {"padding": 2},
        {"stride": 2},
        {"dilation": 2},
        {"padding": "valid"},
        {"padding_mode": "reflect"},
        {"padding": [1, 2]},
    ],
)
def test_each_geometry_argument_is_part_of_the_key(change):
    """After a remembered call, changing one argument gives F.conv2d's result for the new one (at
    rate 0 the band-limited convolution equals it)."""
    x, w = torch.randn(2, 3, 12, 10, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    base = {"padding": 1}
    bl_conv2d(x, w, **base)
    kwargs = {**base, **change}
    got = bl_conv2d(x, w, **kwargs)
    mode = kwargs.pop("padding_mode", "zeros")
    if mode != "zeros":
        pad = kwargs.pop("padding")
        ref = F.conv2d(F.pad(x, (pad,) * 4, mode=mode), w, **kwargs)
    else:
        ref = F.conv2d(x, w, **kwargs)
    assert got.shape == ref.shape
    assert_close_rel(got, ref, 1e-10, str(change))


def test_rate_dtype_size_and_groups_are_part_of_the_key():
    x, w = torch.randn(2, 4, 16, 16), torch.randn(4, 4, 3, 3)
    y_half = bl_conv2d(x, w, padding=1, compress_rate=0.5)
    y_full = bl_conv2d(x, w, padding=1, compress_rate=0.0)
    assert_close_rel(y_full, F.conv2d(x, w, padding=1), 1e-5, "rate 0 after rate 0.5")
    assert not torch.allclose(y_half, y_full, atol=1e-3)
    y64 = bl_conv2d(x.double(), w.double(), padding=1)
    assert y64.dtype == torch.float64
    assert_close_rel(y64, F.conv2d(x.double(), w.double(), padding=1), 1e-10, "float64")
    small = x[:, :, :9, :7]
    assert_close_rel(bl_conv2d(small, w, padding=1), F.conv2d(small, w, padding=1), 1e-5, "size")
    wg = torch.randn(4, 2, 3, 3)
    ref = F.conv2d(x, wg, padding=1, groups=2)
    assert_close_rel(bl_conv2d(x, wg, padding=1, groups=2), ref, 1e-5, "groups")


def test_bad_arguments_are_rejected_after_a_remembered_call():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(4, 4, 3, 3)
    bl_conv2d(x, w, padding=1, compress_rate=0.5)
    with pytest.raises(ValueError, match="compress_rate"):
        bl_conv2d(x, w, padding=1, compress_rate=1.5)
    with pytest.raises(ValueError, match="groups"):
        bl_conv2d(x, w, padding=1, compress_rate=0.5, groups=3)
    with pytest.raises(ValueError, match="channels"):
        bl_conv2d(x[:, :3], w, padding=1, compress_rate=0.5)
    with pytest.raises(ValueError, match="save"):
        bl_conv2d(x, w, padding=1, compress_rate=0.5, save="everything")


def test_the_backend_variable_is_part_of_the_key(monkeypatch):
    x, w = torch.randn(1, 2, 8), torch.randn(3, 2, 3)
    bl_conv1d(x, w, padding=1)
    monkeypatch.setenv("BLTRITON_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="BLTRITON_BACKEND"):
        bl_conv1d(x, w, padding=1)


def test_energy_mode_and_unhashable_arguments_are_not_remembered():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    bl_conv2d(x, w, padding=1, energy=0.9)
    assert not BF._CALLS
    args = (1, {"padding": 1}, 1, 1, "zeros", 0.5, None, None, None, "input")  # a dict: unhashable
    assert BF._call_key(x, w, None, None, args) is None


def test_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(BF, "_MAX_CALLS", 3)
    w = torch.randn(2, 2, 3)
    for length in range(5, 12):
        bl_conv1d(torch.randn(1, 2, length), w)
    assert len(BF._CALLS) == 3


def test_forward_mode_ad_through_the_eager_entry():
    """Dual tensors (torch.autograd.forward_ad, no functorch transform) reach the Function's jvp."""
    layer = BLConv2d(3, 4, 3, padding=1, compress_rate=0.5).double()
    x, t = torch.randn(2, 3, 9, 9, dtype=torch.float64), torch.randn(2, 3, 9, 9, dtype=torch.float64)
    with fwAD.dual_level():
        y_t = fwAD.unpack_dual(layer(fwAD.make_dual(x, t))).tangent
    eps = 1e-6
    with torch.no_grad():
        fd = (layer(x + eps * t) - layer(x - eps * t)) / (2 * eps)
    assert_close_rel(y_t, fd, 1e-7, "jvp against central differences")

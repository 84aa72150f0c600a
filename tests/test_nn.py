"""Modules: drop-in behaviour, state_dict round trips, convert, set_compress_rate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bltriton import BLConv1d, BLConv2d, convert, set_compress_rate
from tests.helpers import assert_close_rel


def test_same_parameters_and_init_as_torch():
    torch.manual_seed(3)
    ref = nn.Conv2d(4, 6, (3, 5), stride=2, padding=(1, 2), groups=2, padding_mode="reflect")
    torch.manual_seed(3)
    bl = BLConv2d(4, 6, (3, 5), stride=2, padding=(1, 2), groups=2, padding_mode="reflect", compress_rate=0.5)
    assert list(bl.state_dict()) == list(ref.state_dict())
    for k in ref.state_dict():
        assert torch.equal(bl.state_dict()[k], ref.state_dict()[k])


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_state_dict_round_trip_and_rate0_equality(padding_mode):
    conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode=padding_mode)
    bl = BLConv2d(3, 5, 3, padding=1, padding_mode=padding_mode)
    bl.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 11, 9)
    assert_close_rel(bl(x), conv(x), 1e-5, "rate-0 output")
    back = nn.Conv2d(3, 5, 3, padding=1, padding_mode=padding_mode)
    back.load_state_dict(bl.state_dict())
    assert torch.equal(back.weight, conv.weight)


def test_conv1d_from_conv_and_repr():
    conv = nn.Conv1d(2, 4, 5, padding="same", bias=False)
    bl = BLConv1d.from_conv(conv, compress_rate=0.5)
    assert bl.kept_fraction is None
    x = torch.randn(3, 2, 40)
    y = bl(x)
    assert y.shape == conv(x).shape
    assert 0.4 < bl.kept_fraction < 0.55
    text = repr(bl)
    assert "compress_rate=0.5" in text and "kept=" in text


def test_rate_can_change_between_calls():
    bl = BLConv2d(2, 3, 3, padding=1, compress_rate=0.75)
    x = torch.randn(1, 2, 16, 16)
    bl(x)
    small = bl.kept_fraction
    bl.compress_rate = 0.25
    bl(x)
    assert bl.kept_fraction > small
    bl.compress_rate = 0.0
    ref = nn.Conv2d(2, 3, 3, padding=1)
    ref.load_state_dict(bl.state_dict())
    assert_close_rel(bl(x), ref(x), 1e-5, "rate 0 after change")


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
        )
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.shortcut = nn.Conv2d(8, 16, 1, stride=2)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.block(x)
        x = self.down(x) + self.shortcut(x)
        return self.head(x.mean((2, 3)))


def test_convert_keeps_outputs_at_rate0_and_skips_1x1():
    model = TinyResNet().eval()
    x = torch.randn(2, 3, 12, 12)
    before = model(x)
    convert(model, compress_rate=0.0)
    assert isinstance(model.stem, BLConv2d) and isinstance(model.block[3], BLConv2d)
    assert type(model.shortcut) is nn.Conv2d
    assert_close_rel(model(x), before, 1e-5, "converted model")


def test_convert_per_layer_rates_by_name_and_callable():
    model = TinyResNet()
    convert(model, {"stem": 0.5, "down": None})
    assert isinstance(model.stem, BLConv2d) and model.stem.compress_rate == 0.5
    assert type(model.down) is nn.Conv2d and type(model.block[0]) is nn.Conv2d
    model2 = TinyResNet()
    convert(model2, lambda name, conv: 0.25 if conv.out_channels == 8 else None, skip_1x1=False)
    assert isinstance(model2.block[0], BLConv2d) and type(model2.down) is nn.Conv2d
    set_compress_rate(model2, 0.6)
    assert all(m.compress_rate == 0.6 for m in model2.modules() if isinstance(m, BLConv2d))


def test_module_trains():
    torch.manual_seed(0)
    model = convert(
        nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.Conv1d(4, 1, 5, padding=2)),
        compress_rate=0.3,
    )
    x = torch.randn(8, 1, 32)
    target = torch.roll(x, 1, -1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for _ in range(30):
        loss = (model(x) - target).square().mean()
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first


def test_convert_energy_mode_without_rate():
    model = convert(nn.Sequential(nn.Conv1d(1, 4, 5, padding=2)), energy=0.9)
    assert isinstance(model[0], BLConv1d) and model[0].energy == 0.9 and model[0].compress_rate == 0.0
    model[0](torch.randn(2, 1, 40).cumsum(-1))
    assert model[0].kept_fraction < 1.0
    default = convert(nn.Sequential(nn.Conv1d(1, 4, 5)))
    assert default[0].compress_rate == 0.5


def test_convert_bare_layer_returns_band_limited_layer():
    """A bare conv cannot replace itself in place: convert returns its band-limited copy, with
    the same state_dict keys and weights (no child named '')."""
    for conv, cls in ((nn.Conv2d(3, 3, 3), BLConv2d), (nn.Conv1d(2, 4, 5), BLConv1d)):
        out = convert(conv, 0.5)
        assert type(out) is cls and out.compress_rate == 0.5
        assert list(out.state_dict()) == list(conv.state_dict())
        assert torch.equal(out.weight, conv.weight)
        assert dict(conv.named_children()) == {}
    one = nn.Conv2d(3, 3, 1)
    assert convert(one, 0.5) is one  # skip_1x1: nothing to convert
    assert type(convert(one, 0.5, skip_1x1=False)) is BLConv2d


def test_convert_shared_layer_replaced_everywhere():
    shared = nn.Conv2d(2, 2, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    convert(model, 0.5)
    assert type(model[0]) is BLConv2d and model[0] is model[2]


def test_numpy_scalars_accepted_like_python_numbers():
    import numpy as np

    layer = BLConv2d(
        3, 4, np.int64(3), stride=np.int64(1), compress_rate=np.float32(0.5), fft_size=np.int64(16)
    )
    ref = BLConv2d(3, 4, 3, compress_rate=0.5, fft_size=16)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 12, 12)
    assert torch.equal(layer(x), ref(x))
    assert layer.last_band == ref.last_band and layer.last_band.n == (16, 16)
    layer.compress_rate = np.float32(0.25)
    assert layer.compress_rate == 0.25 and type(layer.compress_rate) is float
    set_compress_rate(nn.Sequential(layer), np.float64(0.75))
    assert layer.compress_rate == 0.75
    convert(nn.Sequential(nn.Conv2d(3, 4, 3)), np.float32(0.5))


def test_energy_with_rate_none():
    layer = BLConv2d(3, 4, 3, compress_rate=None, energy=0.9)
    smooth = torch.randn(1, 3, 16, 16).cumsum(-1).cumsum(-2)  # energy in the low frequencies
    layer(smooth)
    assert layer.energy == 0.9 and layer.compress_rate == 0.0 and layer.kept_fraction < 1


def test_repr_before_first_forward_says_band_depends_on_input():
    layer = BLConv2d(3, 4, 3, compress_rate=0.5)
    assert "depends on the input size" in repr(layer)
    layer(torch.randn(1, 3, 8, 8))
    assert "kept=" in repr(layer) and "depends on" not in repr(layer)


def test_band_limited_layers_found_one_way():
    from bltriton.nn import BLConvMixin, is_band_limited

    model = convert(TinyResNet(), 0.5)
    found = [n for n, m in model.named_modules() if is_band_limited(m)]
    assert found == ["stem", "block.0", "block.3", "down"]
    assert all(isinstance(model.get_submodule(n), BLConvMixin) for n in found)
    assert not is_band_limited(nn.Conv2d(1, 1, 3))

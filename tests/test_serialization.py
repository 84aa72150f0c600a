"""Serialization: state_dict round trips and ``torch.load(weights_only=True)`` of whole models."""

from __future__ import annotations

import io

import torch
from torch import nn

from bltriton import BLConv1d, BLConv2d, convert
from tests.helpers import assert_close_rel


def _round_trip(obj, safe=()):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    with torch.serialization.safe_globals(list(safe)):
        return torch.load(buf, weights_only=True)


def test_whole_converted_model_loads_weights_only():
    """Only the model's own (here torch's) classes need allow-listing, not bltriton's."""
    model = convert(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 4, 3)), 0.5)
    model = nn.Sequential(model[0], model[1])
    x = torch.randn(2, 3, 10, 10)
    y = model(x)  # the layers now hold their last band
    loaded = _round_trip(model, safe=[nn.Sequential, nn.ReLU])
    assert type(loaded[0]) is BLConv2d and loaded[0].last_band == model[0].last_band
    assert loaded[0].compress_rate == 0.5
    assert_close_rel(loaded(x), y, 1e-6, "reloaded output")


def test_bare_layers_load_weights_only():
    for layer, x in (
        (BLConv1d(2, 3, 5, energy=0.9, fft_size=32, backend="torch"), torch.randn(1, 2, 20)),
        (BLConv2d(2, 3, 3, compress_rate=0.25, fft_size="paper"), torch.randn(1, 2, 9, 9)),
    ):
        layer(x)
        loaded = _round_trip(layer)
        assert (loaded.energy, loaded.fft_size, loaded.backend) == (
            layer.energy,
            layer.fft_size,
            layer.backend,
        )
        assert torch.equal(loaded(x), layer(x))

"""TorchScript cannot compile or trace the band-limited op: a clear bltriton error that points to
torch.compile / torch.export."""

from __future__ import annotations

import warnings

import pytest
import torch

from bltriton import BLConv1d, BLConv2d

POINTER = r"bltriton: torch\.jit\.\w+ cannot .* use torch\.compile, or torch\.export\.export"


@pytest.mark.parametrize("cls", [BLConv1d, BLConv2d])
def test_script_raises_clear_error(cls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit itself is deprecated
        with pytest.raises(RuntimeError, match=POINTER):
            torch.jit.script(cls(2, 2, 3, compress_rate=0.5))
        model = torch.nn.Sequential(torch.nn.ReLU(), cls(2, 2, 3, compress_rate=0.5))
        with pytest.raises(RuntimeError, match=POINTER):
            torch.jit.script(model)  # a band-limited layer nested in a model


def test_trace_raises_clear_error():
    layer = BLConv2d(2, 3, 3, padding=1, compress_rate=0.5, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the argument checks before the op
        with pytest.raises(RuntimeError, match=POINTER):
            torch.jit.trace(layer, torch.randn(1, 2, 8, 8))

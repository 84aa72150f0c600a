"""torch.fx: band-limited layers and the functional entries trace as one leaf call each."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

import bltriton
from bltriton import BLConv1d, BLConv2d, bl_conv2d
from bltriton.functional import bl_conv1d
from tests.helpers import assert_close_rel


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.conv = BLConv2d(8, 8, 3, padding=1, compress_rate=0.5)
        self.head = BLConv2d(8, 4, 3, stride=2, padding_mode="reflect", padding=1, compress_rate=0.25)
        self.w = nn.Parameter(torch.randn(4, 4, 3, 3))

    def forward(self, x):
        x = torch.relu(self.conv(self.stem(x)))
        x = self.head(x)
        return bltriton.bl_conv2d(x, self.w, padding="same", compress_rate=0.5)


def test_symbolic_trace_keeps_band_layers_as_calls():
    net = Net()
    gm = fx.symbolic_trace(net)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(bl_conv2d) == 3, targets
    x = torch.randn(2, 3, 12, 12)
    assert_close_rel(gm(x), net(x), 1e-6, "traced output")
    # Gradients flow through the traced graph as through the module.
    gm(x).sum().backward()
    assert net.conv.weight.grad is not None and net.w.grad is not None


def test_feature_extraction_with_fx():
    """What torchvision's create_feature_extractor does: return an intermediate node's value."""
    net = Net()
    gm = fx.symbolic_trace(net)
    relu = next(n for n in gm.graph.nodes if n.target is torch.relu)
    out = next(n for n in gm.graph.nodes if n.op == "output")
    out.args = ({"features": relu, "out": out.args[0]},)
    gm.recompile()
    x = torch.randn(1, 3, 10, 10)
    feats = gm(x)
    expected = torch.relu(net.conv(net.stem(x)))
    assert_close_rel(feats["features"], expected, 1e-6, "features")
    assert_close_rel(feats["out"], net(x), 1e-6, "out")


def test_trace_1d_and_functional():
    layer = BLConv1d(2, 3, 5, padding=2, compress_rate=0.5)
    gm = fx.symbolic_trace(layer)
    x = torch.randn(2, 2, 30)
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [bl_conv1d]
    assert_close_rel(gm(x), layer(x), 1e-6, "1d")
    w = torch.randn(3, 2, 3)
    gf = fx.symbolic_trace(lambda x: bl_conv1d(x, w, compress_rate=0.5))
    assert_close_rel(gf(x), bl_conv1d(x, w, compress_rate=0.5), 1e-6, "functional")

"""torch.export.export with a dynamic batch: no guard on the batch inside the traced region, and
the exported program runs at other batch sizes with eager's values."""

from __future__ import annotations

import pytest
import torch

from bltriton import BLConv1d, BLConv2d
from tests.helpers import assert_close_rel


def _model() -> torch.nn.Module:
    # 3x3 kernels and a batch of 4 at export: in eager the filter band would be saved for this
    # batch (9 taps > 4); the export must not branch on that.
    return torch.nn.Sequential(
        BLConv2d(2, 4, 3, padding=1, compress_rate=0.5, backend="torch"),
        torch.nn.ReLU(),
        BLConv2d(4, 4, 3, stride=2, groups=2, compress_rate=0.25, backend="torch"),
    )


def test_export_dynamic_batch_runs_at_other_batches():
    model = _model().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(model, (torch.randn(4, 2, 9, 8),), dynamic_shapes=({0: batch},))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "bltriton.band_conv.default" in targets, targets
    for b in (1, 7, 16):
        x = torch.randn(b, 2, 9, 8)
        assert_close_rel(ep.module()(x), model(x), 1e-6, f"exported program at batch {b}")


def test_export_1d_dynamic_batch():
    layer = BLConv1d(3, 2, 5, padding=2, compress_rate=0.5, backend="torch").eval()
    batch = torch.export.Dim("batch", min=2, max=32)
    ep = torch.export.export(layer, (torch.randn(3, 3, 20),), dynamic_shapes=({0: batch},))
    x = torch.randn(11, 3, 20)
    assert_close_rel(ep.module()(x), layer(x), 1e-6, "exported 1d layer")


@pytest.mark.gpu
def test_export_on_cuda_with_triton_backend():
    model = torch.nn.Sequential(
        BLConv2d(2, 4, 3, padding=1, compress_rate=0.5, backend="triton"),
        torch.nn.ReLU(),
        BLConv2d(4, 4, 3, stride=2, compress_rate=0.25, backend="triton"),
    ).cuda()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(model, (torch.randn(4, 2, 9, 8, device="cuda"),), dynamic_shapes=({0: batch},))
    x = torch.randn(6, 2, 9, 8, device="cuda")
    assert_close_rel(ep.module()(x), model(x), 1e-5, "exported program on cuda")

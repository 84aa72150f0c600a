"""torch.compile keeps the band-limited op whole: no graph break, same values and gradients."""

from __future__ import annotations

import torch

from bltriton import BLConv2d
from tests.helpers import assert_close_rel


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    layer = BLConv2d(3, 4, 3, padding=1, compress_rate=0.5, backend="torch")
    x = torch.randn(2, 3, 10, 12, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    y_c = compiled(x)
    y_e = layer(x)
    assert_close_rel(y_c, y_e, 1e-6, "compiled forward")
    gy = torch.randn_like(y_e)
    g_c = torch.autograd.grad(y_c, (x, layer.weight), gy)
    g_e = torch.autograd.grad(y_e, (x, layer.weight), gy)
    for a, b in zip(g_c, g_e):
        assert_close_rel(a, b, 1e-6, "compiled gradient")


def test_custom_op_passes_opcheck():
    from bltriton.autograd import ConvSpec, _band_conv_op, _spec_args
    from bltriton.spectral import band_for_rate

    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    spec = ConvSpec(
        band=band_for_rate((9, 9), 0.5),
        padded=(9, 9),
        kernel=(3, 3),
        stride=(1, 1),
        dilation=(1, 1),
        groups=1,
        backend="torch",
    )
    torch.library.opcheck(_band_conv_op, (x, w, b, *_spec_args(spec)))

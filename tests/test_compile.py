"""torch.compile keeps the band-limited op whole: no graph break, same values and gradients; the
fake implementations match the real ops exactly (``torch.library.opcheck``)."""

from __future__ import annotations

import pytest
import torch

from bltriton import BLConv2d
from bltriton.autograd import ConvSpec, _band_conv_backward_op, _band_conv_op, _op_kwargs
from bltriton.spectral import band_for_rate
from tests.helpers import assert_close_rel

# (batch, channels, out_channels, groups, padded size, kernel, stride, dilation, rate, save band)
OPCHECK_CASES = [
    pytest.param(2, 3, 4, 1, (9, 9), (3, 3), (1, 1), (1, 1), 0.5, False, id="2d"),
    pytest.param(3, 4, 6, 2, (11, 8), (3, 2), (2, 3), (1, 1), 0.25, True, id="2d-strided-grouped"),
    pytest.param(1, 2, 2, 1, (10, 12), (3, 3), (1, 1), (2, 1), 0.0, True, id="2d-dilated-b1"),
    pytest.param(2, 4, 4, 4, (17,), (5,), (3,), (1,), 0.5, False, id="1d-strided-depthwise"),
    pytest.param(3, 3, 5, 1, (20,), (4,), (1,), (2,), 0.75, True, id="1d-dilated"),
]


def _op_inputs(b, c, o, g, padded, kernel, stride, dilation, rate, save_band, dtype=torch.float64):
    from bltriton.spectral import fft_lengths

    ke = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    spec = ConvSpec(
        band=band_for_rate(fft_lengths(padded, ke, None), rate),
        padded=padded,
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        groups=g,
        backend="torch",
        save_filter_band=save_band,
    )
    x = torch.randn(b, c, *padded, dtype=dtype)
    w = torch.randn(o, c // g, *kernel, dtype=dtype)
    bias = torch.randn(o, dtype=dtype)
    return spec, x, w, bias


@pytest.mark.parametrize(
    ("b", "c", "o", "g", "padded", "kernel", "stride", "dilation", "rate", "save"), OPCHECK_CASES
)
def test_forward_op_passes_opcheck(b, c, o, g, padded, kernel, stride, dilation, rate, save):
    spec, x, w, bias = _op_inputs(b, c, o, g, padded, kernel, stride, dilation, rate, save)
    for t in (x, w, bias):
        t.requires_grad_()
    torch.library.opcheck(_band_conv_op, (x, w, bias), _op_kwargs(spec))
    torch.library.opcheck(_band_conv_op, (x.detach(), w.detach(), None), _op_kwargs(spec))


@pytest.mark.parametrize(
    ("b", "c", "o", "g", "padded", "kernel", "stride", "dilation", "rate", "save"), OPCHECK_CASES
)
@pytest.mark.parametrize("need", ["x", "w", "xw", "none"])
def test_backward_op_passes_opcheck(b, c, o, g, padded, kernel, stride, dilation, rate, save, need):
    spec, x, w, bias = _op_inputs(b, c, o, g, padded, kernel, stride, dilation, rate, save)
    y, xb, wb = _band_conv_op(x, w, bias, **_op_kwargs(spec))
    filt = wb if save and "x" in need else w
    kwargs = {
        "x_shape": list(x.shape),
        "w_shape": list(w.shape),
        "need_x": "x" in need,
        "need_w": "w" in need,
        **_op_kwargs(spec),
    }
    torch.library.opcheck(_band_conv_backward_op, (torch.randn_like(y), xb, filt), kwargs)


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

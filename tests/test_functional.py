"""Band-limited convolution (torch path) against torch's convolutions and the dense reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bltriton import ops, transforms
from bltriton.functional import bl_conv1d, bl_conv2d, bl_conv_with_band
from bltriton.reference import bl_conv_reference
from bltriton.utils import SavedTensorBytes
from tests.helpers import assert_close_rel, check_against_reference

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _torch_conv(ndim, x, w, b, stride, padding, dilation, groups, padding_mode):
    conv = F.conv2d if ndim == 2 else F.conv1d
    if padding_mode == "zeros":
        return conv(x, w, b, stride, padding, dilation, groups)
    # As nn.Conv*d does for other modes: pad explicitly, then a valid convolution.
    k = w.shape[2:]
    d = (dilation,) * ndim if isinstance(dilation, int) else dilation
    if padding == "same":
        pairs = [(dd * (kk - 1) // 2, dd * (kk - 1) - dd * (kk - 1) // 2) for kk, dd in zip(k, d)]
    elif padding == "valid":
        pairs = [(0, 0)] * ndim
    else:
        p = (padding,) * ndim if isinstance(padding, int) else padding
        pairs = [(pp, pp) for pp in p]
    flat = [v for pair in reversed(pairs) for v in pair]
    return conv(F.pad(x, flat, mode=padding_mode), w, b, stride, 0, dilation, groups)


# (id, batch, C, O, groups, size, kernel, stride, padding, dilation, padding_mode, bias)
CASES_2D = [
    ("c1o1-k1", 2, 1, 1, 1, (5, 7), (1, 1), 1, 0, 1, "zeros", True),
    ("c3o5-k3-p1", 2, 3, 5, 1, (9, 11), (3, 3), 1, 1, 1, "zeros", True),
    ("c4o6-g2-k2x4-s2", 3, 4, 6, 2, (10, 9), (2, 4), 2, (1, 2), 1, "zeros", False),
    ("c5o5-dw-k3-reflect", 2, 5, 5, 5, (8, 8), (3, 3), 1, 1, 1, "reflect", True),
    ("c3o6-dw-mult2-k5", 1, 3, 6, 3, (13, 7), (5, 3), 1, 2, 1, "zeros", True),
    ("c2o3-k7-same", 2, 2, 3, 1, (12, 15), (7, 7), 1, "same", 1, "zeros", True),
    ("c2o3-k4-same-even", 2, 2, 3, 1, (9, 10), (4, 2), 1, "same", 1, "zeros", False),
    ("c4o4-k3-valid-s3", 2, 4, 4, 1, (17, 11), (3, 3), 3, "valid", 1, "zeros", True),
    ("c3o2-k3-d2-replicate", 2, 3, 2, 1, (11, 11), (3, 3), 1, 2, 2, "replicate", True),
    ("c3o2-k3-d3-circular", 2, 3, 2, 1, (12, 10), (3, 2), 1, (3, 1), (3, 2), "circular", False),
    ("c4o4-g4-k3-s2-circular", 2, 4, 4, 4, (9, 9), (3, 3), 2, 1, 1, "circular", True),
    ("c2o4-k6x1-s(1,3)", 2, 2, 4, 1, (14, 9), (6, 1), (1, 3), (2, 0), 1, "zeros", True),
    ("c1o3-k3-same-reflect-d2", 1, 1, 3, 1, (7, 9), (3, 3), 1, "same", 2, "reflect", True),
    ("c5o3-k1-s2", 2, 5, 3, 1, (7, 8), (1, 1), 2, 0, 1, "zeros", True),
    ("b1-c2o2-k5x2-d(1,3)", 1, 2, 2, 1, (6, 12), (5, 2), 1, 1, (1, 3), "zeros", True),
]

CASES_1D = [
    ("c1o1-k1", 2, 1, 1, 1, (9,), (1,), 1, 0, 1, "zeros", True),
    ("c3o4-k5-p2", 2, 3, 4, 1, (31,), (5,), 1, 2, 1, "zeros", True),
    ("c4o6-g2-k8-same", 3, 4, 6, 2, (20,), (8,), 1, "same", 1, "zeros", False),
    ("c4o4-dw-k3-s2-reflect", 2, 4, 4, 4, (17,), (3,), 2, 1, 1, "reflect", True),
    ("c2o3-k4-d3-s3-circular", 2, 2, 3, 1, (25,), (4,), 3, 3, 3, "circular", True),
    ("c3o3-k7-valid-replicate", 1, 3, 3, 1, (15,), (7,), 1, "valid", 1, "replicate", True),
    ("c5o2-k6-p1", 2, 5, 2, 1, (12,), (6,), 1, 1, 2, "zeros", True),
]


def _run_case(ndim, case, dtype):
    _, b, c, o, g, size, k, stride, padding, dilation, mode, has_bias = case
    x = torch.randn(b, c, *size, dtype=dtype, requires_grad=True)
    w = torch.randn(o, c // g, *k, dtype=dtype, requires_grad=True)
    bias = torch.randn(o, dtype=dtype, requires_grad=True) if has_bias else None
    fn = bl_conv2d if ndim == 2 else bl_conv1d
    y = fn(x, w, bias, stride, padding, dilation, g, padding_mode=mode, backend="torch")
    y_ref = _torch_conv(ndim, x, w, bias, stride, padding, dilation, g, mode)
    tol = TOL[dtype]
    assert_close_rel(y, y_ref, tol, "output")
    gy = torch.randn_like(y)
    inputs = [x, w] + ([bias] if has_bias else [])
    grads = torch.autograd.grad(y, inputs, gy)
    grads_ref = torch.autograd.grad(y_ref, inputs, gy)
    for name, gr, gref in zip(["dx", "dw"], grads, grads_ref):
        assert_close_rel(gr, gref, tol * 10, name)
    if has_bias:
        # db is one sum per channel: compare with the exact (float64) sum, relative to the sum of
        # magnitudes, since a sum of random signs can cancel to far below its rounding error.
        dims = (0, *range(2, gy.dim()))
        exact = gy.to(torch.float64).sum(dims)
        scale = gy.to(torch.float64).abs().sum(dims)
        err = ((grads[2].to(torch.float64) - exact).abs() / scale).max()
        assert err <= tol, f"db: error {float(err):.2e} of the summed magnitude > {tol:.0e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in CASES_2D])
def test_rate0_equals_conv2d(case, dtype):
    _run_case(2, case, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in CASES_1D])
def test_rate0_equals_conv1d(case, dtype):
    _run_case(1, case, dtype)


@settings(max_examples=40, deadline=None)
@given(
    ndim=st.sampled_from([1, 2]),
    b=st.integers(1, 3),
    cg=st.integers(1, 3),
    og=st.integers(1, 3),
    g=st.integers(1, 3),
    k=st.integers(1, 5),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 3),
    extra=st.integers(0, 9),
    mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    bias=st.booleans(),
)
def test_rate0_property(ndim, b, cg, og, g, k, stride, dilation, pad, extra, mode, bias):
    """Random valid configurations: rate 0 equals torch's convolution in float64."""
    ke = dilation * (k - 1) + 1
    size = max(ke, pad + 1) + extra  # reflect needs pad < size
    case = (
        "h",
        b,
        cg * g,
        og * g,
        g,
        (size,) * ndim,
        (k,) * ndim,
        stride,
        pad,
        dilation,
        mode,
        bias,
    )
    _run_case(ndim, case, torch.float64)


BAND_CASES = [
    # (id, ndim, b, c, o, g, size, k, stride, padding, dilation, mode)
    ("2d-c3o4-k3", 2, 2, 3, 4, 1, (10, 13), (3, 3), 1, 1, 1, "zeros"),
    ("2d-g2-k4x2-s2-reflect", 2, 2, 4, 6, 2, (11, 9), (4, 2), 2, 1, 1, "reflect"),
    ("2d-dw-k5-d2-circular", 2, 1, 3, 3, 3, (12, 12), (5, 5), 1, 2, 2, "circular"),
    ("1d-c2o3-k8-same", 1, 2, 2, 3, 1, (33,), (8,), 1, "same", 1, "zeros"),
    ("1d-g2-k3-s3-replicate", 1, 3, 4, 2, 2, (21,), (3,), 3, 1, 2, "replicate"),
]


@pytest.mark.parametrize("column_path", ["fft", "gemm", "direct"])
@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 0.75, 0.95])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAND_CASES])
def test_band_limited_matches_dense_reference(case, rate, column_path, monkeypatch):
    """Forward and custom backward equal the dense reference (full spectrum × explicit mask) and
    autograd through it, in float64, through each transform method (FFT, column DFT GEMM, direct 2D DFT)."""
    monkeypatch.setattr(transforms, "FORCE_METHOD", column_path)
    check_against_reference(case, rate, "torch")


GRADCHECK_CASES = [
    ("2d-r0.5-s2-g2", 2, 0.5, (2, 4, 7, 6), (4, 2, 3, 2), 2, 1, 1, 2, "zeros"),
    ("2d-r0.3-d2-reflect", 2, 0.3, (1, 2, 8, 7), (3, 2, 2, 3), 1, 1, 2, 1, "reflect"),
    ("2d-r0.7-dw-circular", 2, 0.7, (2, 3, 6, 6), (3, 1, 3, 3), 1, 1, 1, 3, "circular"),
    ("1d-r0.5-s3-replicate", 1, 0.5, (2, 2, 13), (3, 2, 4), 3, 2, 1, 1, "replicate"),
    ("1d-r0.8-d3-g2", 1, 0.8, (1, 4, 16), (2, 2, 3), 1, 1, 3, 2, "zeros"),
]


@pytest.mark.parametrize("algorithm", ["spectral", "spatial"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in GRADCHECK_CASES])
def test_gradcheck(case, algorithm):
    _, ndim, rate, xs, ws, stride, padding, dilation, g, mode = case
    x = torch.randn(*xs, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*ws, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(ws[0], dtype=torch.float64, requires_grad=True)
    fn = bl_conv2d if ndim == 2 else bl_conv1d

    def f(x, w, bias):
        return fn(
            x,
            w,
            bias,
            stride,
            padding,
            dilation,
            g,
            padding_mode=mode,
            compress_rate=rate,
            backend="torch",
            algorithm=algorithm,
        )

    assert torch.autograd.gradcheck(f, (x, w, bias), eps=1e-6, atol=1e-7)


def test_saved_bytes_shrink_with_band():
    """With save='band' only band spectra are saved: at rate 0.5 at most 0.55× of the rate-0
    figure."""
    x = torch.randn(4, 8, 32, 32, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, requires_grad=True)
    saved = {}
    for rate in (0.0, 0.5, 0.75):
        with SavedTensorBytes() as s:
            y = bl_conv2d(x, w, None, 1, 1, compress_rate=rate, backend="torch", save="band")
        y.sum().backward()
        saved[rate] = s.nbytes
    assert saved[0.5] <= 0.55 * saved[0.0], saved
    assert saved[0.75] < saved[0.5], saved


@pytest.mark.parametrize("energy", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("ndim", [1, 2])
def test_energy_mode_matches_reference(ndim, energy):
    size = (24,) * ndim
    x = torch.randn(2, 3, *size, dtype=torch.float64).cumsum(-1)  # low-pass-ish signal
    w = torch.randn(4, 3, *((3,) * ndim), dtype=torch.float64)
    y, band = bl_conv_with_band(x, w, None, 1, 1, 1, 1, ndim=ndim, energy=energy, backend="torch")
    y_ref, band_ref = bl_conv_reference(
        x,
        w,
        None,
        stride=(1,) * ndim,
        padding=((1, 1),) * ndim,
        dilation=(1,) * ndim,
        energy=energy,
    )
    assert band == band_ref
    assert_close_rel(y, y_ref, 1e-12, "output")


def test_unbatched_input_like_torch():
    x = torch.randn(3, 9, 10)
    w = torch.randn(4, 3, 3, 3)
    assert_close_rel(bl_conv2d(x, w, padding=1, backend="torch"), F.conv2d(x, w, padding=1), 1e-5, "y")
    x1 = torch.randn(3, 20)
    w1 = torch.randn(4, 3, 5)
    assert_close_rel(bl_conv1d(x1, w1, backend="torch"), F.conv1d(x1, w1), 1e-5, "y1")


def test_non_contiguous_inputs():
    x = torch.randn(2, 10, 9, 4).permute(0, 3, 1, 2)  # channels-last-like view
    w = torch.randn(3, 5, 3, 3)[:, ::2, :, :]  # strided view, 3 input channels
    w = torch.cat([w, w[:, :1]], dim=1)  # 4 input channels, non-trivial layout
    y = bl_conv2d(x, w, padding=1, backend="torch")
    assert_close_rel(y, F.conv2d(x, w, padding=1), 1e-5, "y")


def test_nonfinite_propagates():
    x = torch.randn(1, 2, 8, 8)
    x[0, 0, 3, 3] = float("nan")
    w = torch.randn(2, 2, 3, 3)
    y = bl_conv2d(x, w, padding=1, backend="torch")
    assert torch.isnan(y).any()


@pytest.mark.parametrize("column_path", ["fft", "gemm", "direct"])
@pytest.mark.parametrize("rate", [0.0, 0.5])
@pytest.mark.parametrize("shape", [(3, 4, 20), (3, 4, 9, 12)], ids=["1d", "2d"])
def test_band_tensors_are_compact(shape, rate, column_path, monkeypatch):
    """Band tensors own exactly their storage and are contiguous: a view into a larger spectrum
    would keep it alive for backward, and a frequency stride of 1 sends CPU bmm to a slow path."""
    monkeypatch.setattr(transforms, "FORCE_METHOD", column_path)
    from bltriton.spectral import band_for_rate

    x = torch.randn(*shape)
    band = band_for_rate(tuple(n + 2 for n in shape[2:]), rate)
    for out in (ops.forward_transform(x, band), ops.grad_transform(x, band, shape[2:], (1,) * band.ndim)):
        assert out.is_contiguous() and not out.is_conj()
        assert out.untyped_storage().nbytes() == out.numel() * out.element_size()


@pytest.mark.parametrize("batch", [4, 16], ids=["save-filter-band", "recompute-filter-band"])
def test_filter_band_saved_or_recomputed(batch):
    """The backward recomputes the filter band from the weight when that costs at most one
    contraction (prod(kernel) <= batch) and saves it otherwise; both give the reference gradients,
    and the recomputing one saves only the input band (plus the weight, alive anyway)."""
    case = ("c", 2, batch, 8, 6, 1, (12, 11), (3, 3), 1, 1, 1, "zeros")
    check_against_reference(case, 0.5, "torch")
    x = torch.randn(batch, 8, 12, 11, requires_grad=True)
    w = torch.randn(6, 8, 3, 3, requires_grad=True)
    with SavedTensorBytes() as saved:
        y, band = bl_conv_with_band(
            x, w, None, 1, 1, 1, 1, ndim=2, compress_rate=0.5, backend="torch", save="band"
        )
    x_band = band.num_kept * batch * 8 * 8  # complex64
    w_band = band.num_kept * 6 * 8 * 8
    expected = x_band + (w.numel() * 4 if batch >= 9 else w_band)
    assert saved.nbytes == expected, (saved.nbytes, expected)
    y.sum().backward()


@pytest.mark.parametrize(
    "x_shape,w_shape",
    [((2, 0, 8, 8), (6, 0, 3, 3)), ((0, 3, 8, 8), (6, 3, 3, 3)), ((2, 0, 8, 8), (0, 0, 3, 3))],
    ids=["c0", "b0", "c0-o0"],
)
def test_empty_shapes_like_torch(x_shape, w_shape):
    """Zero-size calls give torch's shapes, values and errors (C=0 once gave [2, 6, 8, 8] of bias)."""
    x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
    try:
        ref = F.conv2d(x, w, b, padding=1)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            bl_conv2d(x, w, b, padding=1)
        return
    y = bl_conv2d(x, w, b, padding=1, compress_rate=0.5)
    assert y.shape == ref.shape and torch.equal(y, ref)
    y1 = bl_conv1d(x[..., 0], w[..., 0], b, padding=1)
    assert y1.shape == F.conv1d(x[..., 0], w[..., 0], b, padding=1).shape


def test_numpy_arguments_functional():
    import numpy as np

    x, w = torch.randn(2, 4, 10, 9), torch.randn(6, 2, 3, 3)
    y = bl_conv2d(x, w, None, np.int64(2), (np.int32(1), 1), np.int64(1), np.int64(2),
                  compress_rate=np.float32(0.0), fft_size=(np.int64(12), 12))  # fmt: skip
    assert_close_rel(y, F.conv2d(x, w, None, 2, 1, 1, 2), 1e-5, "numpy args")
    ye = bl_conv2d(x, w, groups=2, energy=np.float32(0.9))
    assert ye.shape == F.conv2d(x, w, groups=2).shape

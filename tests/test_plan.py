"""Layer plans (bltriton.plan): the triton backend's launch sequence against the float64 torch
path and F.conv*d, plan reuse, what a warmed-up call does on the host, the pinned launch counts.

The plan's operands and bookkeeping are checked with the pure-torch kernels
(``plan.KERNELS = "naive"``, exact in float64, any size); the Triton kernels themselves under the
interpreter on tiny layers (their own tests are tests/test_transform_kernels.py and
tests/test_tap_mac.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench import launches
from bltriton import BLConv2d, bl_conv1d, bl_conv2d
from bltriton import plan as plan_mod

# (ndim, B, C, O, L, k, padding, stride, dilation, groups, rate, save, padding_mode)
CASES = [
    pytest.param((2, 2, 3, 5, 9, 3, 1, 1, 1, 1, 0.5, "input", "zeros"), id="2d-3x3-pad1"),
    pytest.param((2, 2, 4, 6, 9, 3, 1, 2, 1, 2, 0.5, "band", "zeros"), id="2d-stride2-groups2-band"),
    pytest.param((2, 3, 3, 4, 11, 7, 2, 1, 1, 1, 0.3, "input", "zeros"), id="2d-7x7-unfused-filter"),
    pytest.param((2, 1, 3, 3, 12, 2, 0, 1, 1, 3, 0.5, "input", "zeros"), id="2d-2x2-depthwise"),
    pytest.param((2, 2, 3, 4, 10, 3, 2, 1, 2, 1, 0.75, "input", "reflect"), id="2d-dilated-reflect"),
    pytest.param((1, 2, 3, 5, 17, 5, 2, 1, 2, 1, 0.5, "input", "zeros"), id="1d-k5-dilated"),
    pytest.param((1, 2, 3, 5, 17, 5, 0, 3, 1, 1, 0.0, "band", "zeros"), id="1d-stride3-rate0-band"),
    pytest.param((1, 3, 2, 4, 33, 31, 15, 1, 1, 1, 0.5, "input", "circular"), id="1d-k31-circular"),
]


def _conv(ndim, x, w, b, stride, pad, dil, groups, **kw):
    fn = bl_conv2d if ndim == 2 else bl_conv1d
    return fn(x, w, b, stride, pad, dil, groups, algorithm="spectral", **kw)


def _inputs(ndim, bsz, c, o, length, k, groups, dtype, bias=True):
    x = torch.randn((bsz, c, *(length,) * ndim), dtype=dtype, requires_grad=True)
    w = torch.randn((o, c // groups, *(k,) * ndim), dtype=dtype, requires_grad=True)
    b = torch.randn(o, dtype=dtype, requires_grad=True) if bias else None
    return x, w, b


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.fixture
def naive(monkeypatch):
    monkeypatch.setattr(plan_mod, "KERNELS", "naive")
    plan_mod.clear_plans()
    yield
    plan_mod.clear_plans()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_plan_matches_torch_path_float64(naive, case, bias):
    ndim, bsz, c, o, length, k, pad, stride, dil, groups, rate, save, mode = case
    x, w, b = _inputs(ndim, bsz, c, o, length, k, groups, torch.float64, bias)
    params = [x, w] + ([b] if bias else [])
    kw = dict(compress_rate=rate, save=save, padding_mode=mode)
    y = _conv(ndim, x, w, b, stride, pad, dil, groups, backend="triton", **kw)
    assert len(plan_mod._PLANS) == 1  # the plan path ran
    ref = _conv(ndim, x, w, b, stride, pad, dil, groups, backend="torch", **kw)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(y, params, g)
    want = torch.autograd.grad(ref, params, g)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert _rel(y, ref) < 1e-12
    for name, a, r in zip(("dx", "dw", "db"), got, want):
        assert a.shape == r.shape and a.dtype == r.dtype, name
        assert _rel(a, r) < 1e-12, name


@pytest.mark.parametrize("ndim", [1, 2])
def test_plan_rate0_equals_conv(naive, ndim):
    x, w, b = _inputs(ndim, 2, 3, 4, 9, 3, 1, torch.float64)
    y = _conv(ndim, x, w, b, 2, 1, 1, 1, backend="triton")
    conv = F.conv2d if ndim == 2 else F.conv1d
    ref = conv(x, w, b, 2, 1)
    g = torch.randn_like(ref)
    for a, r in zip(torch.autograd.grad(y, [x, w, b], g), torch.autograd.grad(ref, [x, w, b], g)):
        assert _rel(a, r) < 1e-12
    assert _rel(y, ref) < 1e-12


def test_plan_gradcheck(naive):
    x, w, b = _inputs(2, 2, 2, 3, 7, 3, 1, torch.float64)
    fn = lambda x, w, b: _conv(2, x, w, b, 1, 1, 1, 1, backend="triton", compress_rate=0.5)
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_plan_built_once_per_shape_not_per_batch(naive):
    layer = BLConv2d(3, 4, 3, padding=1, compress_rate=0.5, backend="triton", algorithm="spectral").double()
    for batch in (2, 5, 2):
        layer(torch.randn(batch, 3, 8, 8, dtype=torch.float64)).sum().backward()
    assert len(plan_mod._PLANS) == 1
    layer.compress_rate = 0.25
    layer(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert len(plan_mod._PLANS) == 2


@pytest.mark.parametrize(
    "ndim,k,rate,save",
    [
        pytest.param(2, 3, 0.5, "input", id="2d-3x3-fused-filter"),
        pytest.param(2, 7, 0.5, "band", id="2d-7x7-filter-band"),
        pytest.param(1, 5, 0.5, "input", id="1d-k5"),
    ],
)
def test_plan_triton_kernels_fp32(poison_empty, ndim, k, rate, save):
    """The whole sequence on the Triton kernels (interpreter: ieee fp32) against the float64
    torch path; outputs allocated NaN-filled, so an element no kernel writes fails."""
    plan_mod.clear_plans()
    x, w, b = _inputs(ndim, 2, 3, 5, 11, k, 1, torch.float32)
    y = _conv(ndim, x, w, b, 1, k // 2, 1, 1, backend="triton", compress_rate=rate, save=save)
    assert len(plan_mod._PLANS) == 1
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = _conv(ndim, x64, w64, b64, 1, k // 2, 1, 1, backend="torch", compress_rate=rate, save=save)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(y, [x, w, b], g.float())
    want = torch.autograd.grad(ref, [x64, w64, b64], g)
    assert _rel(y.double(), ref) < 1e-5
    for name, a, r in zip(("dx", "dw", "db"), got, want):
        assert a.dtype == torch.float32
        assert _rel(a.double(), r) < 1e-5, name


def _warm_layer(save="input"):
    layer = BLConv2d(8, 8, 3, padding=1, compress_rate=0.5, backend="triton", algorithm="spectral")
    layer.save = save
    x = torch.randn(4, 8, 12, 12, requires_grad=True)
    return layer, x


@pytest.mark.parametrize("save", ["input", "band"])
def test_warm_call_only_allocates_and_launches(save):
    """After a warm-up call a fwd+bwd makes no tensor other than its outputs' allocations (no
    operand built, no host tensor, no copy): every aten op is an allocation or a view."""
    plan_mod.clear_plans()
    layer, x = _warm_layer(save=save)
    counts = launches.count_cpu(layer, x, stub=True)
    assert counts["aten_fwd"] == [] and counts["aten_bwd"] == []
    assert counts["triton_fwd"] and counts["triton_bwd"]


def test_launch_counts_pinned():
    """The 3x3 C=O=8 layer at r=0.5 (the issue's CIFAR layer, smaller: the counts do not depend
    on the channel count) on the CUDA path: 3 launches forward, 4 backward (bench.launches)."""
    plan_mod.clear_plans()
    layer, x = _warm_layer()
    counts = launches.count_cpu(layer, x, stub=True)
    assert (counts["fwd"], counts["bwd"]) == (3, 4), counts
    assert counts["triton_fwd"] == ["to_band_kernel", "tap_cmac_kernel", "from_band_kernel"]
    mac = "tap_cmac_kernel"
    assert counts["triton_bwd"] == ["to_band_kernel", mac, mac, "from_band_kernel"]


def test_triton_ops_match_eager_plan():
    """The plan's triton_ops (what torch.compile traces on CUDA) compute what the eager plan
    does; called directly they launch the kernels as in eager mode."""
    from bltriton import functional, pipeline
    from bltriton.autograd import _op_kwargs

    plan_mod.clear_plans()
    x, w, b = _inputs(2, 2, 3, 4, 9, 3, 1, torch.float32)
    info = {}
    y = functional.bl_conv_with_band(
        x, w, b, 1, 1, 1, 1, ndim=2, compress_rate=0.5, backend="triton", algorithm="spectral", info=info
    )[0]
    spec = info["spec"]
    y_op, xb, wb = pipeline.plan_conv_op(x.detach(), w.detach(), b.detach(), **_op_kwargs(spec))
    assert _rel(y_op, y.detach()) < 1e-6 and wb.numel() == 0 and xb.shape[0] == 0
    g = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, [x, w], g)
    kw = _op_kwargs(spec)
    dx_op, dw_op = pipeline.plan_conv_backward_op(
        g,
        x.detach(),
        w.detach(),
        x_shape=list(x.shape),
        w_shape=list(w.shape),
        need_x=True,
        need_w=True,
        **kw,
    )
    assert _rel(dx_op, dx) < 1e-6 and _rel(dw_op, dw) < 1e-6


@pytest.mark.gpu
def test_compiled_training_step_traces_the_kernels():
    """On CUDA, torch.compile (inductor, fullgraph) traces the plan's triton_ops: the step
    matches eager, and the compiled graph holds the Triton kernels (no opaque bltriton op)."""
    from torch._inductor.utils import run_and_get_code

    plan_mod.clear_plans()
    layer = BLConv2d(8, 8, 3, padding=1, compress_rate=0.5, backend="triton", algorithm="spectral").cuda()
    x = torch.randn(4, 8, 16, 16, device="cuda", requires_grad=True)

    def step(x):
        y = layer(x)
        return torch.autograd.grad(y.square().sum(), [x, layer.weight])

    want = step(x)
    compiled = torch.compile(step, fullgraph=True)
    got, code = run_and_get_code(compiled, x)
    for a, r in zip(got, want):
        assert _rel(a, r) < 1e-3
    text = "\n".join(code)
    assert "to_band_kernel" in text and "tap_cmac_kernel" in text
    assert "bltriton.band_conv" not in text and "bltriton.plan_conv" not in text


def test_tuner_asked_when_a_signature_is_first_seen(monkeypatch, tmp_path):
    """Each of the 7 launches asks the tuner once, at the first call of a shape; later calls
    with the same signature ask nothing, a new batch size asks again."""
    from bltriton import autotune

    monkeypatch.setenv("BLTRITON_CACHE_DIR", str(tmp_path))
    asked = []
    real = autotune.get_config

    def counting(**kw):
        asked.append(kw["kernel"])
        return real(**kw)

    monkeypatch.setattr(autotune, "get_config", counting)
    plan_mod.clear_plans()
    # A small layer: these calls launch for real under the interpreter.
    layer = BLConv2d(2, 3, 3, padding=1, compress_rate=0.5, backend="triton", algorithm="spectral")
    x = torch.randn(3, 2, 6, 6, requires_grad=True)
    for _ in range(3):
        layer(x).sum().backward()
    assert sorted(asked) == sorted(
        ["to_band", "tap_cmac", "from_band", "to_band", "tap_cmac", "tap_cmac", "from_band"]
    )
    layer(x[:2]).sum().backward()
    assert len(asked) == 14


# (ndim, B, C, O, L, k, padding, stride, dilation, groups, padding_mode)
SMALL = [
    pytest.param((2, 2, 3, 4, 8, 3, 1, 1, 1, 1, "zeros"), id="2d-8x8-pad1"),
    pytest.param((2, 3, 4, 6, 9, 3, 1, 2, 1, 2, "zeros"), id="2d-9x9-stride2-groups2"),
    pytest.param((2, 1, 2, 2, 7, 2, 2, 1, 2, 1, "reflect"), id="2d-7x7-dilated-reflect"),
    pytest.param((1, 2, 3, 5, 32, 3, 1, 1, 1, 1, "zeros"), id="1d-L32"),
    pytest.param((1, 2, 4, 4, 40, 5, 2, 3, 1, 4, "circular"), id="1d-L40-depthwise-stride3"),
]


@pytest.mark.parametrize("case", SMALL)
def test_projection_plan_matches_the_general_paths(case):
    """Small CPU maps on the spatial algorithm run through a ProjectionPlan; it computes what the
    general spatial path and the spectral torch path compute (float64, every gradient)."""
    ndim, bsz, c, o, length, k, pad, stride, dil, groups, mode = case
    plan_mod.clear_plans()
    x, w, b = _inputs(ndim, bsz, c, o, length, k, groups, torch.float64)
    kw = dict(compress_rate=0.5, padding_mode=mode, backend="torch")
    fn = bl_conv2d if ndim == 2 else bl_conv1d
    y = fn(x, w, b, stride, pad, dil, groups, algorithm="spatial", **kw)
    assert [type(p).__name__ for p in plan_mod._PLANS.values()] == ["ProjectionPlan"]
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, w, b], g)
    for ref_max in (0, None):  # the general spatial path, then the spectral one
        if ref_max == 0:
            plan_mod.PROJECTION_MAX_ENTRIES, saved = 0, plan_mod.PROJECTION_MAX_ENTRIES
            try:
                ref = fn(x, w, b, stride, pad, dil, groups, algorithm="spatial", **kw)
            finally:
                plan_mod.PROJECTION_MAX_ENTRIES = saved
        else:
            ref = fn(x, w, b, stride, pad, dil, groups, algorithm="spectral", **kw)
        want = torch.autograd.grad(ref, [x, w, b], g)
        assert _rel(y, ref) < 1e-12
        for name, a, r in zip(("dx", "dw", "db"), got, want):
            assert _rel(a, r) < 1e-12, name


def test_projection_plan_gradcheck():
    plan_mod.clear_plans()
    x, w, b = _inputs(2, 1, 2, 3, 6, 3, 1, torch.float64)
    fn = lambda x, w, b: bl_conv2d(x, w, b, 1, 1, compress_rate=0.5, backend="torch", algorithm="spatial")
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_projection_plan_aten_calls_pinned():
    """The tiny 4-channel 8x8 layer's fwd+bwd on the CPU spatial path: 2 aten calls forward (the
    projection GEMM, the convolution), 3 backward (the projection again, the convolution's
    backward, the transposed projection); nothing else but views and allocations."""
    plan_mod.clear_plans()
    layer = BLConv2d(4, 4, 3, padding=1, compress_rate=0.5, backend="torch", algorithm="spatial")
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    counts = launches.count_cpu(layer, x, stub=True)
    assert [op.split(".")[0] for op in counts["aten_fwd"]] == ["mm", "convolution"]
    assert [op.split(".")[0] for op in counts["aten_bwd"]] == ["mm", "convolution_backward", "mm"]

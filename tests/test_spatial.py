"""The spatial algorithm (bltriton/spatial.py) computes the band-limited convolution of
docs/design.md §1 exactly: against the dense float64 reference, the ops' fake implementations,
torch.compile, torch.func, autocast and the modules; and the ``auto`` choice. (gradcheck and
what the backward keeps: tests/test_functional.py and tests/test_save_policy.py, per algorithm.)"""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from torch import nn

from bltriton import BLConv1d, BLConv2d, bl_conv2d, convert, spatial
from bltriton.autograd import ConvSpec, _band_conv_backward_op, _band_conv_op, _op_kwargs
from bltriton.functional import ALGORITHMS
from bltriton.spectral import band_for_rate, fft_lengths, kept_mask
from tests.helpers import assert_close_rel, check_against_reference
from tests.test_functional import BAND_CASES


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAND_CASES])
def test_spatial_matches_dense_reference(case, rate, monkeypatch, poison_empty):
    """Forward and all three gradients in float64 against the reference, with every padding
    mode, stride, dilation and group count of the spectral algorithm's own cases; uninitialised
    memory is NaN (the input-gradient product reads only the shape of its dummy input)."""
    monkeypatch.setenv("BLTRITON_ALGORITHM", "spatial")
    check_against_reference(case, rate, "torch")


@pytest.mark.parametrize("fft_size", ["paper", 23])
def test_fft_sizes(fft_size):
    x = torch.randn(2, 3, 13, 11, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    kw = {"padding": 1, "compress_rate": 0.5, "fft_size": fft_size}
    assert_close_rel(
        bl_conv2d(x, w, algorithm="spatial", **kw), bl_conv2d(x, w, algorithm="spectral", **kw), 1e-12
    )


@pytest.mark.parametrize("method", ["direct", "separable", "fft"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_limiter_is_the_band_projection_and_its_adjoint(method, ndim):
    """``apply`` equals ``irfftn(mask · rfftn(x placed on the grid))`` read at the output
    positions (built here from the mask's definition), and ``adjoint`` is its transpose."""
    n = (10, 9)[:ndim] if ndim == 2 else (17,)
    band = band_for_rate(n, 0.6)
    length_in, offset = (7, 6)[:ndim] if ndim == 2 else (12,), (2, 1)[:ndim] if ndim == 2 else (3,)
    length_out = (9, 8)[:ndim] if ndim == 2 else (16,)
    lim = spatial.Limiter(band, length_in, offset, length_out, torch.device("cpu"), torch.float64, method)
    x = torch.randn(2, 3, *length_in, dtype=torch.float64)
    grid = torch.zeros(2, 3, *n, dtype=torch.float64)
    grid[(..., *(slice(o, o + s) for o, s in zip(offset, length_in)))] = x
    dims = tuple(range(-ndim, 0))
    spec = torch.fft.rfftn(grid, s=n, dim=dims) * kept_mask(band)
    want = torch.fft.irfftn(spec, s=n, dim=dims)[(..., *(slice(0, s) for s in length_out))]
    assert_close_rel(lim.apply(x), want, 1e-12)
    g = torch.randn(2, 3, *length_out, dtype=torch.float64)
    assert math.isclose((lim.apply(x) * g).sum().item(), (x * lim.adjoint(g)).sum().item(), rel_tol=1e-12)


def _op_inputs(b, c, o, g, padded, kernel, stride, rate):
    ke = tuple(k for k in kernel)
    spec = ConvSpec(
        band=band_for_rate(fft_lengths(padded, ke, None), rate),
        padded=padded,
        kernel=kernel,
        stride=stride,
        dilation=(1,) * len(kernel),
        groups=g,
        backend="torch",
        save_filter_band=False,
        save_input=True,
        algorithm="spatial",
    )
    x = torch.randn(b, c, *padded, dtype=torch.float64)
    w = torch.randn(o, c // g, *kernel, dtype=torch.float64)
    return spec, x, w, torch.randn(o, dtype=torch.float64)


@pytest.mark.parametrize(
    "args",
    [(2, 4, 6, 2, (9, 8), (3, 2), (2, 1), 0.5), (3, 2, 3, 1, (17,), (5,), (3,), 0.25)],
    ids=["2d", "1d"],
)
def test_ops_pass_opcheck(args):
    """The registered ops with ``algorithm='spatial'``: schema, fake against real, both
    directions (what torch.compile and torch.export run)."""
    spec, x, w, bias = _op_inputs(*args)
    torch.library.opcheck(_band_conv_op, (x, w, bias), _op_kwargs(spec))
    y, _, _ = _band_conv_op(x, w, bias, **_op_kwargs(spec))
    for need_x, need_w in [(True, True), (True, False), (False, True)]:
        kwargs = {"x_shape": list(x.shape), "w_shape": list(w.shape), "need_x": need_x, "need_w": need_w}
        torch.library.opcheck(
            _band_conv_backward_op, (torch.randn_like(y), x, w), {**kwargs, **_op_kwargs(spec)}
        )


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_compiled_training_matches_eager(dynamic):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    eager = convert(copy.deepcopy(base), 0.5, algorithm="spatial")
    compiled_model = convert(copy.deepcopy(base), 0.5, algorithm="spatial")
    compiled = torch.compile(compiled_model, backend="inductor", fullgraph=True, dynamic=dynamic)
    x = torch.randn(3, 3, 12, 12)
    for model in (eager, compiled):
        model(x).square().sum().backward()
    assert_close_rel(compiled(x), eager(x), 1e-5, "output")
    for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters()):
        assert_close_rel(q.grad, p.grad, 1e-5, name)


def test_torch_func_grad_vmap_and_jvp():
    """Per-sample gradients (vmap over grad) and forward mode (jvp) through the spatial op."""
    x = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64)

    def loss(w, xi, alg):
        return bl_conv2d(xi[None], w, padding=1, compress_rate=0.5, algorithm=alg).square().sum()

    per_sample = {
        alg: torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, None))(w, x, alg)
        for alg in ("spatial", "spectral")
    }
    assert_close_rel(per_sample["spatial"], per_sample["spectral"], 1e-12)
    t = torch.randn_like(w)
    outs = {}
    for alg in ("spatial", "spectral"):

        def conv(w, alg=alg):
            return bl_conv2d(x, w, padding=1, compress_rate=0.5, algorithm=alg)

        outs[alg] = torch.func.jvp(conv, (w,), (t,))
    for a, b in zip(outs["spatial"], outs["spectral"]):
        assert_close_rel(a, b, 1e-12)


def test_autocast_output_dtype_and_values():
    x, w = torch.randn(2, 3, 12, 12), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bl_conv2d(x, w, padding=1, compress_rate=0.5, algorithm="spatial")
    assert y.dtype == torch.bfloat16
    assert_close_rel(y.float(), bl_conv2d(x, w, padding=1, compress_rate=0.5, algorithm="spectral"), 1e-2)


def test_module_argument_repr_pickle_and_convert():
    layer = BLConv2d(3, 4, 3, padding=1, compress_rate=0.5, algorithm="spatial")
    assert "algorithm='spatial'" in repr(layer)
    assert pickle.loads(pickle.dumps(layer)).algorithm == "spatial"
    model = convert(nn.Sequential(nn.Conv1d(2, 3, 5)), 0.5, algorithm="spectral")
    assert model[0].algorithm == "spectral"
    x = torch.randn(2, 3, 10, 10)
    layer.eval()
    with torch.inference_mode():  # no filter band to cache: the eval path runs the op's body
        y = layer(x)
    ref = bl_conv2d(
        x, layer.weight.detach(), layer.bias.detach(), padding=1, compress_rate=0.5, algorithm="spectral"
    )
    assert_close_rel(y, ref, 1e-5)


def test_bad_algorithm_names_the_argument(monkeypatch):
    x, w = torch.randn(1, 2, 8, 8), torch.randn(2, 2, 3, 3)
    with pytest.raises(ValueError, match="algorithm"):
        bl_conv2d(x, w, algorithm="fast")
    with pytest.raises(ValueError, match="algorithm"):
        BLConv1d(2, 2, 3, algorithm="fast")
    with pytest.raises(ValueError, match="algorithm"):
        convert(nn.Sequential(nn.Conv2d(2, 2, 3)), 0.5, algorithm="fast")
    monkeypatch.setenv("BLTRITON_ALGORITHM", "fast")
    with pytest.raises(ValueError, match="BLTRITON_ALGORITHM"):
        bl_conv2d(x, w)
    assert set(ALGORITHMS) == {"auto", "spectral", "spatial"}


def _spec(x_shape, w_shape, stride, rate, padding=1, save_input=True):
    ndim = len(x_shape) - 2
    padded = tuple(s + 2 * padding for s in x_shape[2:])
    kernel = tuple(w_shape[2:])
    return ConvSpec(
        band=band_for_rate(fft_lengths(padded, kernel, None), rate),
        padded=padded,
        kernel=kernel,
        stride=(stride,) * ndim,
        dilation=(1,) * ndim,
        groups=1,
        backend="torch",
        pad=(padding, padding) * ndim,
        save_input=save_input,
    )


@pytest.mark.parametrize("provider", ["torch", "kernel"])
def test_auto_choice_follows_the_estimate(monkeypatch, provider):
    """On either CPU rule: a strided 3×3 layer of ResNet-18 takes the cheaper estimate (the
    spatial algorithm on the torch rule; on the kernel rule, whose fused contractions make the
    two a near tie there, 25.5 against 23.4 ms measured at b32, whichever it estimates), an
    11×11 kernel and a 4×4 map at batch 32 the spectral one; save='band' and explicit requests
    win; the estimate scales with the batch."""
    from bltriton import _cgemm

    if provider == "kernel" and not _cgemm.available():
        pytest.skip("the CPU complex-GEMM kernel could not be built")
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", provider)
    cpu = torch.device("cpu")
    assert spatial.rule_key(cpu) == {"torch": "cpu", "kernel": "cpu-kernel"}[provider]
    strided = ((32, 64, 32, 32), (128, 64, 3, 3), 2, 0.5)
    spectral_s, spatial_s = spatial.estimate(_spec(*strided), *strided[:2], cpu, True)
    cheaper = "spatial" if spatial_s < spectral_s else "spectral"
    assert provider == "kernel" or cheaper == "spatial"
    assert spatial.choose_algorithm("auto", _spec(*strided), *strided[:2], cpu, True) == cheaper
    k11 = ((16, 32, 64, 64), (32, 32, 11, 11), 1, 0.5)
    assert spatial.choose_algorithm("auto", _spec(*k11, padding=5), *k11[:2], cpu, True) == "spectral"
    deep = ((32, 512, 4, 4), (512, 512, 3, 3), 1, 0.5)
    assert spatial.choose_algorithm("auto", _spec(*deep), *deep[:2], cpu, True) == "spectral"
    assert (
        spatial.choose_algorithm("auto", _spec(*strided, save_input=False), *strided[:2], cpu, True)
        == "spectral"
    )
    assert spatial.choose_algorithm("spatial", _spec(*k11, padding=5), *k11[:2], cpu, True) == "spatial"
    small = spatial.estimate(_spec(*strided), (8, 64, 32, 32), strided[1], cpu, True)
    large = spatial.estimate(_spec(*strided), strided[0], strided[1], cpu, True)
    assert all(s < g for s, g in zip(small, large))


def test_rule_key_per_device():
    assert spatial.rule_key(torch.device("cuda")) == "cuda"
    assert spatial.rule_key(torch.device("meta")) == "cuda"  # types without a rule take CUDA's
    assert set(spatial.RULES) >= {"cpu", "cpu-kernel", "cuda"}


def test_auto_is_remembered_per_call_and_reported(monkeypatch):
    """The layer records the algorithm of its last call; the call memo keys on grad mode (the
    estimate differs for inference), so each mode is decided once. (The estimate decides here,
    ``BLTRITON_AUTOTUNE=0``; the measured choice: tests/test_choice.py.)"""
    from bltriton import functional

    monkeypatch.setenv("BLTRITON_AUTOTUNE", "0")
    functional._CALLS.clear()
    seen, picked = [], {}
    choose = spatial.choose_algorithm

    def recording(*args, **kwargs):
        seen.append(args[-1])  # training
        picked[args[-1]] = choose(*args, **kwargs)
        return picked[args[-1]]

    monkeypatch.setattr(spatial, "choose_algorithm", recording)
    layer = BLConv2d(64, 128, 3, stride=2, padding=1, compress_rate=0.5)
    x = torch.randn(32, 64, 32, 32)
    for _ in range(2):
        layer(x)
        assert layer.last_algorithm == picked[True]
        with torch.no_grad():
            layer(x)
        assert layer.last_algorithm == picked[False]
    assert seen == [True, False]
    assert set(picked.values()) <= {"spectral", "spatial"}


def test_export_with_a_dynamic_batch():
    model = convert(
        nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1)),
        0.5,
        algorithm="spatial",
    )
    batch = torch.export.Dim("batch", min=2, max=64)
    program = torch.export.export(model, (torch.randn(4, 3, 12, 12),), dynamic_shapes={"input": {0: batch}})
    x = torch.randn(7, 3, 12, 12)
    assert_close_rel(program.module()(x), model(x), 1e-6)


def test_energy_mode_takes_either_algorithm():
    """The band chosen from the data per call, then either algorithm: the same result."""
    x = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    y = {
        a: bl_conv2d(x, w, padding=1, compress_rate=None, energy=0.9, algorithm=a)
        for a in ("spectral", "spatial")
    }
    assert_close_rel(y["spatial"], y["spectral"], 1e-12)


def test_which_filters_are_fused():
    """Few taps (every 3x3 filter), or few weights: the CPU kernel's fused contractions; larger
    filters of many channels keep the written band. The cpu-kernel rule counts the band's bytes
    only for the latter."""
    from bltriton import _cgemm

    assert _cgemm.fuses_filter(3, 256 * 128 * 3) and _cgemm.fuses_filter(8, 1 << 20)
    assert _cgemm.fuses_filter(9, 512 * 512 * 9) and _cgemm.fuses_filter(25, 32 * 32 * 25)
    assert not _cgemm.fuses_filter(25, 256 * 256 * 25)
    kernel_rule, cpu_rule = spatial.RULES["cpu-kernel"], spatial.RULES["cpu"]
    for c, k in ((64, 3), (256, 3), (256, 5)):
        taps = k * k
        spec = _spec((8, c, 16, 16), (c, c, k, k), 1, 0.5)
        f = spec.band.num_kept
        fused = spatial.cost_terms(spec, (8, c, 16, 16), (c, c, k, k), True, kernel_rule)[0]
        plain = spatial.cost_terms(spec, (8, c, 16, 16), (c, c, k, k), True, cpu_rule)[0]
        assert plain["filter_bytes"] == 3 * c * c * 4 * (taps + 2 * f)
        assert fused["filter_bytes"] == (3 * c * c * 4 * taps if k == 3 else plain["filter_bytes"])


def test_a_forward_alone_pays_a_third_of_the_per_call_cost():
    """The per-call terms are fitted to fwd+bwd calls; an inference call is one of three passes
    (the FCN's one-channel first layer then takes the spatial algorithm in inference, as it
    measures: 0.2 against 0.5 ms)."""
    spec = _spec((16, 1, 150), (128, 1, 8), 1, 0.5, padding=4)
    rule = spatial.RULES["cpu-kernel"]
    for training, calls in ((True, 1.0), (False, 1 / 3)):
        spectral_terms, spatial_terms = spatial.cost_terms(spec, (16, 1, 150), (128, 1, 8), training, rule)
        assert spectral_terms["spectral_call"] == pytest.approx(calls)
        assert spatial_terms["spatial_call"] == pytest.approx(calls)

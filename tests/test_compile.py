"""torch.compile keeps the band-limited op whole: no graph break, same values and gradients; the
fake implementations match the real ops exactly (``torch.library.opcheck``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from bltriton import BLConv1d, BLConv2d, set_compress_rate
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


def _op_inputs(
    b,
    c,
    o,
    g,
    padded,
    kernel,
    stride,
    dilation,
    rate,
    save_band,
    dtype=torch.float64,
    backend="torch",
    device="cpu",
):
    from bltriton.spectral import fft_lengths

    ke = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    spec = ConvSpec(
        band=band_for_rate(fft_lengths(padded, ke, None), rate),
        padded=padded,
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        groups=g,
        backend=backend,
        save_filter_band=save_band,
    )
    x = torch.randn(b, c, *padded, dtype=dtype, device=device)
    w = torch.randn(o, c // g, *kernel, dtype=dtype, device=device)
    bias = torch.randn(o, dtype=dtype, device=device)
    return spec, x, w, bias


@pytest.mark.parametrize(
    ("b", "c", "o", "g", "padded", "kernel", "stride", "dilation", "rate", "save"), OPCHECK_CASES
)
def test_forward_op_passes_opcheck(b, c, o, g, padded, kernel, stride, dilation, rate, save):
    """The op's autograd is bltriton.autograd._BandConv (checked by the compiled training
    tests); here the op itself: schema, fake vs real (sizes, strides, dtypes), dynamic shapes."""
    spec, x, w, bias = _op_inputs(b, c, o, g, padded, kernel, stride, dilation, rate, save)
    torch.library.opcheck(_band_conv_op, (x, w, bias), _op_kwargs(spec))
    torch.library.opcheck(_band_conv_op, (x, w, None), _op_kwargs(spec))


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


@pytest.mark.parametrize(
    "device",
    [
        # The interpreter runs only where CUDA is absent (tests/conftest.py sets it then).
        pytest.param("cpu", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")),
        pytest.param("cuda", marks=pytest.mark.gpu),
    ],
    ids=["interpreter", "cuda"],
)
def test_ops_pass_opcheck_on_triton_backend(device):
    """The triton contractions behind the same ops (the CPU interpreter without CUDA)."""
    spec, x, w, bias = _op_inputs(
        2, 4, 6, 2, (9, 8), (3, 2), (2, 1), (1, 1), 0.5, True, torch.float32, "triton", device
    )
    torch.library.opcheck(_band_conv_op, (x, w, bias), _op_kwargs(spec))
    y, xb, wb = _band_conv_op(x, w, bias, **_op_kwargs(spec))
    assert wb.numel() == 0  # the layer plan keeps no filter band: the backward gets the weight
    kwargs = {"x_shape": list(x.shape), "w_shape": list(w.shape), "need_x": True, "need_w": True}
    torch.library.opcheck(
        _band_conv_backward_op, (torch.randn_like(y), xb, w), {**kwargs, **_op_kwargs(spec)}
    )


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


# ------------------------------------------------------------------------------------------
# Training under the default inductor backend. Compiles are slow on a CPU: one tiny model per
# dimensionality and mode, compiled once per module (fixture) and reused by the checks.
# ------------------------------------------------------------------------------------------


class TinyNet(torch.nn.Module):
    """A 2D and a 1D branch of band-limited layers (strided, grouped), one compiled graph. The
    input channels (5) differ from the batch sizes: under ``dynamic=True`` dynamo gives equal
    sizes one symbol, and the channel check would then specialise the batch too."""

    def __init__(self, backend: str = "torch"):
        super().__init__()
        self.c2a = BLConv2d(5, 4, 3, padding=1, compress_rate=0.5, backend=backend)
        self.c2b = BLConv2d(4, 4, 3, stride=2, groups=2, compress_rate=0.25, backend=backend)
        self.c1 = BLConv1d(5, 3, 5, padding=2, bias=False, compress_rate=0.5, backend=backend)

    def forward(self, x2, x1):
        y2 = self.c2b(torch.relu(self.c2a(x2)))
        return y2.square().mean() + self.c1(x1).square().mean()


def _train_steps(model, batches, compiled=None):
    run = model if compiled is None else compiled
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses, grads = [], []
    for x2, x1 in batches:
        opt.zero_grad()
        loss = run(x2, x1)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
        losses.append(loss.detach())
    return losses, grads


@pytest.mark.parametrize(
    ("dynamic", "device", "backend"),
    [
        (False, "cpu", "torch"),
        pytest.param(True, "cpu", "torch", marks=pytest.mark.slow),
        pytest.param(False, "cuda", "triton", marks=pytest.mark.gpu),
        pytest.param(True, "cuda", "triton", marks=pytest.mark.gpu),
    ],
    ids=["static", "dynamic", "cuda-triton-static", "cuda-triton-dynamic"],
)
def test_inductor_trains_like_eager(dynamic, device, backend):
    """fwd+bwd+step, fullgraph (a graph break raises), default inductor backend: the same losses,
    gradients and parameters as eager over batches of 2, 2, 3 and then at another compress rate
    (the rate is a guarded constant, never a symbolic float). With ``dynamic=True`` the batch
    stays symbolic: one graph for the three batches."""
    torch._dynamo.reset()
    counters.clear()
    model = TinyNet(backend).to(device)
    ref = copy.deepcopy(model)
    batches = [
        (torch.randn(b, 5, 8, 7, device=device), torch.randn(b, 5, 12, device=device)) for b in (2, 2, 3)
    ]
    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic)
    losses_c, grads_c = _train_steps(model, batches, compiled)
    losses_e, grads_e = _train_steps(ref, batches)
    if dynamic:
        assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    for m in (model, ref):
        set_compress_rate(m, 0.75)
    batch = [(torch.randn(3, 5, 8, 7, device=device), torch.randn(3, 5, 12, device=device))]
    for (lc, gc), (le, ge) in ((_train_steps(model, batch, compiled), _train_steps(ref, batch)),):
        losses_c, losses_e, grads_c, grads_e = losses_c + lc, losses_e + le, grads_c + gc, grads_e + ge
    for step, (lc, le, gc, ge) in enumerate(zip(losses_c, losses_e, grads_c, grads_e)):
        assert_close_rel(lc, le, 1e-5, f"loss at step {step}")
        for g_c, g_e in zip(gc, ge):
            assert_close_rel(g_c, g_e, 1e-5, f"gradient at step {step}")
    for p_c, p_e in zip(model.parameters(), ref.parameters()):
        assert_close_rel(p_c, p_e, 1e-5, "parameters after training")


def test_energy_under_compile_says_what_to_do():
    torch._dynamo.reset()
    layer = BLConv2d(2, 3, 3, padding=1, energy=0.9, backend="torch")
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    with pytest.raises(Exception, match=r"energy=.*compress_rate=.*torch.compiler.disable"):
        compiled(torch.randn(1, 2, 8, 8))
    layer.forward = torch.compiler.disable(layer.forward)  # the documented way out
    x = torch.randn(1, 2, 8, 8)
    assert_close_rel(torch.compile(layer, backend="eager")(x), layer(x), 0.0, "energy layer kept out")


def test_rate_stays_a_guarded_constant_after_copy_and_pickle():
    """The forward reads the rate from a string attribute, which dynamo treats as a guarded
    constant (a float attribute would turn symbolic under ``dynamic=True``); deep copies and
    pickles (plain float and str, loadable with ``weights_only=True``) keep it, and a pickled
    layer compiled with ``dynamic=True`` follows a rate change like eager."""
    import pickle

    torch._dynamo.reset()
    layer = BLConv2d(2, 3, 3, padding=1, compress_rate=0.5, backend="torch")
    copies = (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)))
    for copied in copies:
        assert copied.compress_rate == 0.5 and copied._rate_repr == repr(0.5)
    compiled = torch.compile(copies[1], dynamic=True, fullgraph=True)
    x = torch.randn(2, 2, 9, 9)
    for rate in (0.5, 0.3):
        copies[1].compress_rate = rate
        eager = layer.__class__.forward(copies[1], x)
        torch.testing.assert_close(compiled(x), eager, rtol=1e-4, atol=1e-5)


def test_energy_under_export_says_what_to_do():
    layer = BLConv2d(2, 3, 3, padding=1, energy=0.9, backend="torch")
    with pytest.raises(Exception, match=r"energy=.*compress_rate="):
        torch.export.export(layer, (torch.randn(1, 2, 8, 8),))


def test_compiling_before_the_cpu_gemm_probe_neither_breaks_nor_recompiles(monkeypatch):
    """A layer compiled first thing in a process, before the CPU GEMM provider's probe: the trace
    has no graph break (fullgraph), and the probe that the compiled call's GEMMs then make does
    not recompile it (a guard on the probe's state did, and dynamo could not trace the eager
    path's dispatch-mode query)."""
    from bltriton import _cgemm

    monkeypatch.delenv("BLTRITON_CPU_CGEMM", raising=False)
    monkeypatch.delitem(_cgemm._STATE, "choice", raising=False)
    torch._dynamo.reset()
    counters.clear()
    layer = BLConv2d(3, 4, 3, padding=1, compress_rate=0.5)
    ref = copy.deepcopy(layer)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    for _ in range(3):
        x = torch.randn(2, 3, 8, 8)
        assert_close_rel(compiled(x), ref(x), 1e-5, "compiled layer")
    assert "choice" in _cgemm._STATE  # the eager calls probed between the compiled ones
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])

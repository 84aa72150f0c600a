"""Triton kernels against the float64 reference: under TRITON_INTERPRET=1 on the CPU (tiny
shapes), and on CUDA (marker ``gpu``) at real sizes in every precision mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bltriton import BLConv2d, bl_conv1d, bl_conv2d, convert
from tests.helpers import assert_close_rel, check_against_reference

band_mac_mod = pytest.importorskip("bltriton.kernels.band_mac")
band_mac = band_mac_mod.band_mac

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _reference_mac(mode, a, b, groups):
    """The three (conjugate-domain, see bltriton.ops) contractions by einsum in complex128,
    independent of ops.py: fwd Y = Σ_c X·Wc, dx dXc = Σ_o Gc·Wc, dw dW = Σ_b Gc·X."""
    a, b = a.to(torch.complex128), b.to(torch.complex128)
    f = a.shape[0]
    if mode == "fwd":  # a = X [F,B,C], b = Wc [F,O,Cg]
        x = a.reshape(f, a.shape[1], groups, -1)
        w = b.reshape(f, groups, -1, b.shape[2])
        return torch.einsum("fbgc,fgoc->fbgo", x, w).reshape(f, a.shape[1], -1)
    if mode == "dx":  # a = Gc [F,B,O], b = Wc [F,O,Cg]
        g = a.reshape(f, a.shape[1], groups, -1)
        w = b.reshape(f, groups, -1, b.shape[2])
        return torch.einsum("fbgo,fgoc->fbgc", g, w).reshape(f, a.shape[1], -1)
    x = a.reshape(f, a.shape[1], groups, -1)  # dw: a = X, b = Gc
    g = b.reshape(f, b.shape[1], groups, -1)
    return torch.einsum("fbgc,fbgo->fgoc", x, g).reshape(f, -1, x.shape[-1])


def _operands(mode, f, bsz, c, o, groups, dtype, device, layout="contig"):
    """Random operands in one of three storage layouts with the same logical shape: ``contig``
    (the library's), ``rows`` (last two dims swapped in memory: the unit-stride axis is the
    other tile axis) and ``strided`` (all dims reversed: no unit-stride matrix axis)."""

    def rnd(*shape):
        if layout == "rows":
            return torch.randn(shape[0], shape[2], shape[1], dtype=dtype, device=device).transpose(1, 2)
        if layout == "strided":
            t = torch.randn(*shape[::-1], dtype=dtype, device=device)
            return t.permute(*range(len(shape) - 1, -1, -1))
        return torch.randn(*shape, dtype=dtype, device=device)

    x, w, g = rnd(f, bsz, c), rnd(f, o, c // groups), rnd(f, bsz, o)
    return {"fwd": (x, w), "dx": (g, w), "dw": (x, g)}[mode]


# (id, F, B, C, O, groups): odd sizes, 1s, depthwise, and sizes that take the tl.dot path.
MAC_SHAPES = [
    ("f1-b1-c1-o1", 1, 1, 1, 1, 1),
    ("f3-b3-c7-o5", 3, 3, 7, 5, 1),
    ("f5-b17-c32-o48-dot", 5, 17, 32, 48, 1),
    ("f2-b33-c40-o20-g2-dot", 2, 33, 40, 20, 2),
    ("f4-b2-c6-o6-depthwise", 4, 2, 6, 6, 6),
    ("f3-b5-c4-o8-dw-mult2", 3, 5, 4, 8, 4),
    ("f7-b16-c16-o16-dot", 7, 16, 16, 16, 1),
]


@pytest.mark.parametrize("layout", ["contig", "rows", "strided"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize("mode", ["fwd", "dx", "dw"])
@pytest.mark.parametrize("shape", [pytest.param(s[1:], id=s[0]) for s in MAC_SHAPES])
def test_band_mac_matches_reference(shape, mode, dtype, layout, poison_empty):
    """Heuristic configs (dot and broadcast paths) in every storage layout."""
    f, bsz, c, o, groups = shape
    a, b = _operands(mode, f, bsz, c, o, groups, dtype, DEVICE, layout)
    out = band_mac(mode, a, b, groups, precision="ieee")
    ref = _reference_mac(mode, a, b, groups)
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(ref), tol, f"band_mac {mode}")


# Error bounds of the precision modes (relative Frobenius error of a K=32 contraction of unit
# normal operands; docs/numerics.md quotes the same modes): tf32 operands keep 10 mantissa bits, bf16 7,
# fp16 10, all with fp32 accumulation.
PRECISION_TOL = {"ieee": 1e-5, "tf32": 5e-3, "bf16": 2e-2, "fp16": 4e-3}


@pytest.mark.parametrize("layout", ["contig", "rows"])
@pytest.mark.parametrize("mode", ["fwd", "dx", "dw"])
@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
def test_band_mac_reduced_precision(precision, mode, layout, poison_empty):
    """Reduced-precision operands with fp32 accumulation on the tl.dot path, every mode."""
    a, b = _operands(mode, 2, 32, 32, 24, 1, torch.complex64, DEVICE, layout)
    out = band_mac(mode, a, b, 1, precision=precision)
    assert out.dtype == torch.complex64
    ref = _reference_mac(mode, a, b, 1)
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(ref), PRECISION_TOL[precision], precision)


def test_band_mac_rejects_bad_operands():
    a = torch.randn(2, 3, 4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="complex"):
        band_mac("fwd", a.real, a, 1)
    with pytest.raises(ValueError, match="mode"):
        band_mac("up", a, torch.randn(2, 5, 4, dtype=torch.complex64), 1)
    with pytest.raises(ValueError, match="frequency counts"):
        band_mac("fwd", a, torch.randn(3, 5, 4, dtype=torch.complex64), 1)


# The interpreter runs one program per output tile and frequency: the grouped and depthwise
# cases keep their spectra small (an odd and an even side each); 10x10 took 12 s at rate 0.
CONV_CASES = [
    # (id, ndim, b, c, o, groups, size, k, stride, padding, dilation, mode)
    ("2d-c3o4-k3", 2, 2, 3, 4, 1, (9, 10), (3, 3), 1, 1, 1, "zeros"),
    ("2d-g2-k2x3-s2-reflect", 2, 2, 4, 6, 2, (6, 7), (2, 3), 2, 1, 1, "reflect"),
    ("2d-dw-k3-d2", 2, 1, 3, 3, 3, (6, 5), (3, 3), 1, 2, 2, "circular"),
    ("1d-c2o3-k5", 1, 2, 2, 3, 1, (21,), (5,), 1, 2, 1, "zeros"),
    ("1d-g2-k3-s2", 1, 2, 4, 4, 2, (15,), (3,), 2, 1, 1, "replicate"),
]


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.8])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in CONV_CASES])
def test_triton_conv_matches_reference(case, rate):
    """Forward and all gradients through the triton backend vs the dense float64 reference."""
    check_against_reference(case, rate, "triton", DEVICE)


def test_triton_conv_fp32_matches_torch_path():
    x = torch.randn(3, 5, 12, 11, device=DEVICE, requires_grad=True)
    w = torch.randn(7, 5, 3, 3, device=DEVICE, requires_grad=True)
    outs = {}
    for backend in ("torch", "triton"):
        y = bl_conv2d(x, w, None, 1, 1, compress_rate=0.5, backend=backend)
        outs[backend] = (y, *torch.autograd.grad(y.square().sum(), (x, w)))
    for name, a, r in zip(["y", "dx", "dw"], outs["triton"], outs["torch"]):
        assert_close_rel(a, r, 1e-5, name)


def test_triton_gradcheck_fp64():
    # fast_mode: random projections instead of one evaluation per input element (the interpreter
    # launches are slow); the full Jacobians are compared against the reference above.
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, device=DEVICE, requires_grad=True)
    w = torch.randn(4, 1, 3, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, device=DEVICE, requires_grad=True)

    def f(x, w, bias):
        return bl_conv2d(x, w, bias, (2, 1), 1, 1, 2, compress_rate=0.5, backend="triton")

    assert torch.autograd.gradcheck(f, (x, w, bias), eps=1e-6, atol=1e-7, fast_mode=True)
    x1 = torch.randn(1, 2, 11, dtype=torch.float64, device=DEVICE, requires_grad=True)
    w1 = torch.randn(3, 2, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w: bl_conv1d(x, w, None, 1, 2, compress_rate=0.6, backend="triton"),
        (x1, w1),
        eps=1e-6,
        atol=1e-7,
        fast_mode=True,
    )


def test_module_trains_identically_on_both_backends():
    """A few SGD steps of a small CNN: triton and torch backends stay within fp32 tolerance."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    x = torch.randn(2, 2, 8, 8, device=DEVICE)
    target = torch.randn(2, 3, 8, 8, device=DEVICE)
    params = {}
    for backend in ("torch", "triton"):
        model = convert(_clone(base), compress_rate=0.5, backend=backend).to(DEVICE)
        assert all(isinstance(m, BLConv2d) for m in (model[0], model[2]))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(3):
            loss = F.mse_loss(model(x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        params[backend] = [p.detach().clone() for p in model.parameters()]
    for a, r in zip(params["triton"], params["torch"]):
        assert_close_rel(a, r, 1e-5, "parameters after training")


def _clone(module):
    import copy

    return copy.deepcopy(module)


# ---------------------------------------------------------------------------------- GPU lane

GPU_SHAPES = [  # (F, B, C, O, groups): CIFAR 3x3 layer band at r=0.5, a grouped and a depthwise one
    (325, 128, 64, 64, 1),
    (180, 128, 128, 128, 1),
    (300, 64, 64, 64, 4),
    (300, 64, 64, 64, 64),
]


@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("ieee", 1e-5), ("tf32", 5e-3), ("bf16", 2e-2), ("fp16", 4e-3)])
@pytest.mark.parametrize("mode", ["fwd", "dx", "dw"])
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "f{}-b{}-c{}-o{}-g{}".format(*s))
def test_band_mac_gpu_real_sizes(shape, mode, precision, tol, poison_empty):
    f, bsz, c, o, groups = shape
    a, b = _operands(mode, f, bsz, c, o, groups, torch.complex64, "cuda")
    out = band_mac(mode, a, b, groups, precision=precision)
    ref = _reference_mac(mode, a, b, groups)
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(ref), tol, f"{mode} {precision}")


@pytest.mark.gpu
@pytest.mark.parametrize("rate", [0.0, 0.5, 0.75])
def test_triton_conv_gpu_real_size(rate):
    x = torch.randn(32, 64, 32, 32, device="cuda", requires_grad=True)
    conv = nn.Conv2d(64, 64, 3, padding=1).cuda()
    layer = BLConv2d.from_conv(conv, compress_rate=rate, backend="triton")
    ref_layer = BLConv2d.from_conv(conv, compress_rate=rate, backend="torch")
    # ieee contractions (precision follows torch.backends.cudnn.allow_tf32, see resolve_precision)
    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        y, y_ref = layer(x), ref_layer(x)
        assert_close_rel(y, y_ref, 1e-5, "forward")
        gy = torch.randn_like(y)
        for a, r in zip(
            torch.autograd.grad(y, (x, layer.weight), gy),
            torch.autograd.grad(y_ref, (x, ref_layer.weight), gy),
        ):
            assert_close_rel(a, r, 1e-5, "grad")
    finally:
        torch.backends.cudnn.allow_tf32 = prev


def test_env_backend_override_selects_triton(monkeypatch):
    """BLTRITON_BACKEND=triton routes the default (backend=None) through the Triton kernels (the
    layer plan's launches, counted at the kernels).

    The spectral algorithm is pinned: the default one is chosen by shape, and on CUDA the rule
    computes this small layer in the spatial domain, where no band kernel runs at all."""
    from bench.launches import TritonLaunches

    monkeypatch.setenv("BLTRITON_BACKEND", "triton")
    x = torch.randn(1, 2, 6, 6, device=DEVICE, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, device=DEVICE, requires_grad=True)
    with TritonLaunches(stub=False) as launched:
        bl_conv2d(x, w, padding=1, compress_rate=0.5, algorithm="spectral").sum().backward()
    mac = "tap_cmac_kernel"
    assert launched.names == [
        "to_band_kernel",
        mac,
        "from_band_kernel",
        "to_band_kernel",
        mac,
        mac,
        "from_band_kernel",
    ]
    monkeypatch.setenv("BLTRITON_BACKEND", "torch")
    with TritonLaunches(stub=False) as launched:
        bl_conv2d(x, w, padding=1, compress_rate=0.5, algorithm="spectral").sum().backward()
    assert launched.names == []


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_band_mac_launches_on_operand_device():
    a, b = _operands("fwd", 3, 16, 16, 16, 1, torch.complex64, "cuda:1")
    with torch.cuda.device(0):
        out = band_mac("fwd", a, b, 1, precision="ieee")
    assert out.device == a.device
    assert_close_rel(
        torch.view_as_real(out), torch.view_as_real(_reference_mac("fwd", a, b, 1)), 1e-5, "cuda:1"
    )


# Explicit configs: the smallest dot tile (real 16×16×16 GEMM), a broadcast tile over several
# frequencies with a partial last frequency block, and a dot tile with FREQS > 1.
EXPLICIT_CONFIGS = [
    pytest.param({"BLOCK_M": 16, "BLOCK_N": 8, "BLOCK_K": 8, "FREQS": 1}, id="dot-16x8x8"),
    pytest.param({"BLOCK_M": 4, "BLOCK_N": 4, "BLOCK_K": 2, "FREQS": 2}, id="small-4x4x2-f2"),
    pytest.param({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "FREQS": 2}, id="dot-16x16x16-f2"),
]


@pytest.mark.parametrize("layout", ["contig", "rows"])
@pytest.mark.parametrize("mode", ["fwd", "dx", "dw"])
@pytest.mark.parametrize("cfg", EXPLICIT_CONFIGS)
def test_band_mac_explicit_configs(cfg, mode, layout, poison_empty):
    """Tiles that do not divide the matrix (masked edges in M, N and K) on both paths."""
    a, b = _operands(mode, 3, 17, 20, 12, 2, torch.complex64, DEVICE, layout)
    out = band_mac(mode, a, b, 2, precision="ieee", config={**cfg, "num_warps": 4, "num_stages": 2})
    ref = _reference_mac(mode, a, b, 2)
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(ref), 1e-5, mode)


@pytest.mark.parametrize("mode", ["fwd", "dw"])
def test_band_mac_int64_offsets(mode, monkeypatch, poison_empty):
    """The int64 index path (taken when a tensor spans 2^30 reals or more) computes the same."""
    calls = []
    real_flags = band_mac_mod.derived_flags

    def spy(*args, **kwargs):
        flags = real_flags(*args, **kwargs)
        calls.append(flags["IDX"])
        return flags

    monkeypatch.setattr(band_mac_mod, "INT32_SPAN_LIMIT", 0)
    monkeypatch.setattr(band_mac_mod, "derived_flags", spy)
    a, b = _operands(mode, 2, 17, 20, 12, 1, torch.complex64, DEVICE)
    out = band_mac(mode, a, b, 1, precision="ieee")
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(_reference_mac(mode, a, b, 1)), 1e-5, mode)
    assert [str(d) for d in calls] == ["int64"]


def test_int64_only_for_huge_tensors():
    """The launcher picks int32 offsets unless a tensor spans 2^30 reals (meta tensors: no
    memory)."""
    small = band_mac_mod._operands("fwd", *_operands("fwd", 4, 8, 8, 8, 1, torch.complex64, "meta"), 1)
    assert not band_mac_mod.needs_int64(small)
    x = torch.empty(2**12, 2**9, 2**8, dtype=torch.complex64, device="meta")  # 2^30 reals
    w = torch.empty(2**12, 4, 2**8, dtype=torch.complex64, device="meta")
    assert band_mac_mod.needs_int64(band_mac_mod._operands("fwd", x, w, 1))


def test_precision_follows_cudnn_tf32_flag():
    """fp32 contractions follow the convolution they replace: tf32 on CUDA when
    torch.backends.cudnn.allow_tf32 (torch's default) is true, else ieee."""
    resolve = band_mac_mod.resolve_precision
    cuda = torch.device("cuda")
    # Saved and restored by hand: the matmul flag is a property of torch's cuBLAS module object,
    # which pytest's monkeypatch (9.2) tries to delete at teardown.
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
        assert resolve(torch.complex64, cuda, None) == "tf32"
        assert resolve(torch.complex128, cuda, None) == "ieee"
        assert resolve(torch.complex64, torch.device("cpu"), None) == "ieee"
        assert resolve(torch.complex64, cuda, "bf16") == "bf16"
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, True
        assert resolve(torch.complex64, cuda, None) == "ieee"
        with pytest.raises(ValueError, match="precision"):
            resolve(torch.complex64, cuda, "fp8")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def test_config_validation():
    a, b = _operands("fwd", 2, 3, 4, 5, 1, torch.complex64, DEVICE)
    with pytest.raises(ValueError, match="unknown \\['SPLIT_LOAD'\\]"):
        band_mac("fwd", a, b, 1, config={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "FREQS": 1,
                                         "SPLIT_LOAD": True})  # fmt: skip
    with pytest.raises(ValueError, match="missing \\['FREQS'\\]"):
        band_mac("fwd", a, b, 1, config={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16})
    with pytest.raises(TypeError, match=r"triton\.Config or a dict"):
        band_mac("fwd", a, b, 1, config=(16, 16, 16, 1))


def test_candidates_unique_and_include_default():
    from bltriton.kernels.configs import as_dict, candidate_configs, default_config

    for shape in [(128, 64, 64, 325), (64, 64, 64, 300), (128, 1, 1, 300), (17, 48, 32, 5)]:
        configs = [tuple(sorted(as_dict(c).items())) for c in candidate_configs(*shape)]
        assert len(set(configs)) == len(configs)
        assert tuple(sorted(as_dict(default_config(*shape)).items())) in configs


def test_band_mac_returns_the_config_that_ran():
    from bltriton.kernels.configs import as_dict

    a, b = _operands("fwd", 2, 3, 4, 5, 1, torch.complex64, DEVICE)
    out, cfg = band_mac("fwd", a, b, 1, return_config=True)
    assert torch.equal(out, band_mac("fwd", a, b, 1, config=cfg))
    if DEVICE == "cpu":  # the interpreter never tunes: the heuristic default ran
        assert as_dict(cfg) == as_dict(band_mac_mod.default_config(3, 5, 4, 2))

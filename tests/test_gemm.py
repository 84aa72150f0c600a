"""The CPU GEMM provider of the transforms (:mod:`bltriton._gemm`): both providers compute
``x @ w.T``, the transforms and a whole layer agree across providers, and the choice falls back
to ``torch.mm`` wherever oneDNN cannot serve."""

from __future__ import annotations

import pytest
import torch

from bltriton import BLConv2d, _env, _gemm, ops, spectral
from bltriton.transforms import clear_plans, filter_plan

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN linear")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    wide = torch.complex128 if a.is_complex() else torch.float64
    a, b = a.to(wide), b.to(wide)
    return ((a - b).norm() / b.norm()).item()


@needs_onednn
@pytest.mark.parametrize("shape", [(4096, 32, 26), (20, 5, 32768), (700, 150, 152)])
def test_onednn_product_matches_float64(monkeypatch, shape):
    m, k, n = shape
    x, w = torch.randn(m, k), torch.randn(n, k)
    ref = x.double() @ w.double().T
    monkeypatch.setenv("BLTRITON_CPU_GEMM", "onednn")
    got = _gemm.matmul_nt(x, w)
    assert got.shape == (m, n) and got.dtype == torch.float32
    assert _rel(got, ref) < 1e-5
    monkeypatch.setenv("BLTRITON_CPU_GEMM", "torch")
    assert _rel(_gemm.matmul_nt(x, w), ref) < 1e-5


def test_small_float64_and_tracked_products_stay_on_torch(monkeypatch):
    monkeypatch.setenv("BLTRITON_CPU_GEMM", "onednn")
    calls = []
    monkeypatch.setattr(_gemm, "_onednn", lambda x, w: calls.append(1) or x @ w.T)
    big = (torch.randn(4096, 32), torch.randn(32, 32))
    _gemm.matmul_nt(*big)
    assert calls == [1]  # the spy sees the large fp32 product
    _gemm.matmul_nt(torch.randn(8, 4), torch.randn(4, 4))  # under MIN_MACS
    _gemm.matmul_nt(big[0].double(), big[1].double())  # float64
    _gemm.matmul_nt(big[0].T.contiguous().T, big[1])  # not contiguous
    xg = big[0].clone().requires_grad_()
    out = _gemm.matmul_nt(xg, big[1])  # autograd records it
    assert calls == [1]
    out.sum().backward()
    torch.testing.assert_close(xg.grad, big[1].sum(0).expand(4096, 32))


def test_provider_env_and_probe(monkeypatch):
    monkeypatch.setenv("BLTRITON_CPU_GEMM", "TORCH ")
    assert _gemm.provider() == "torch"
    monkeypatch.setenv("BLTRITON_CPU_GEMM", "mkl")
    with pytest.raises(_env.EnvVarError, match="BLTRITON_CPU_GEMM"):
        _gemm.provider()
    monkeypatch.delenv("BLTRITON_CPU_GEMM")
    monkeypatch.setattr(_gemm, "_PROBE", {})
    assert _gemm.provider() in ("onednn", "torch")
    monkeypatch.setattr(_gemm, "_PROBE", {})
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert _gemm.provider() == "torch"  # no oneDNN: the probe keeps torch.mm


def test_no_probe_under_fake_tensors(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    monkeypatch.delenv("BLTRITON_CPU_GEMM", raising=False)
    monkeypatch.setattr(_gemm, "_PROBE", {})
    with FakeTensorMode():
        assert _gemm.provider() == "torch"
    assert not _gemm._PROBE  # nothing decided from fake timings


def _broken(x, w):
    raise RuntimeError("no such kernel")


def test_probe_keeps_torch_when_onednn_fails(monkeypatch):
    monkeypatch.delenv("BLTRITON_CPU_GEMM", raising=False)
    monkeypatch.setattr(_gemm, "_PROBE", {})
    monkeypatch.setattr(_gemm, "_onednn", _broken)
    assert _gemm.provider() == "torch"


@needs_onednn
@pytest.mark.parametrize("method", ["gemm", "direct"])
def test_transforms_agree_across_providers(monkeypatch, method):
    from bltriton import transforms

    monkeypatch.setattr(transforms, "FORCE_METHOD", method)
    clear_plans()
    band = spectral.band_for_rate((36, 36), 0.5)
    x = torch.randn(8, 48, 32, 32)
    w = torch.randn(32, 48, 3, 3)
    out = {}
    for prov in ("torch", "onednn"):
        monkeypatch.setenv("BLTRITON_CPU_GEMM", prov)
        xb = ops.forward_transform(x, band, offset=(1, 1))
        y = ops.inverse_transform(xb, band, (34, 34), (1, 1))
        wb = filter_plan(band, (3, 3), (1, 1), x.device, x.dtype).forward(w)
        out[prov] = (xb, y, wb)
    for a, b in zip(out["onednn"], out["torch"]):
        assert _rel(a, b) < 1e-5
    clear_plans()


@needs_onednn
def test_layer_forward_and_gradients_agree_across_providers(monkeypatch):
    layer = BLConv2d(48, 32, 3, padding=1, compress_rate=0.5)
    x = torch.randn(8, 48, 32, 32)
    gy = torch.randn(8, 32, 32, 32)
    res = {}
    for prov in ("torch", "onednn"):
        monkeypatch.setenv("BLTRITON_CPU_GEMM", prov)
        xg = x.clone().requires_grad_()
        layer.zero_grad(set_to_none=True)
        y = layer(xg)
        y.backward(gy)
        res[prov] = (y.detach(), xg.grad, layer.weight.grad)
    for a, b in zip(res["onednn"], res["torch"]):
        assert _rel(a, b) < 1e-5

"""The CPU complex64 GEMM kernel (bltriton/csrc/cgemm.cpp) against float64 products, and the
layers through it against the same layers on torch.matmul."""

from __future__ import annotations

import pytest
import torch

from bltriton import _cgemm, _env, ops, transforms
from bltriton.nn import BLConv1d, BLConv2d

needs_kernel = pytest.mark.skipif(
    not _cgemm.available(), reason=f"the CPU kernel could not be built: {_cgemm._STATE.get('error')}"
)


def _c64(*shape):
    return torch.randn(*shape, dtype=torch.complex64)


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.to(torch.complex128) - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def _poisoned(*shape):
    return torch.full(shape, complex(float("nan"), float("nan")), dtype=torch.complex64)


@needs_kernel
@pytest.mark.parametrize("f", [1, 3])
@pytest.mark.parametrize(("m", "k", "n"), [(1, 1, 1), (5, 3, 7), (6, 16, 16), (13, 9, 33), (32, 64, 40)])
@pytest.mark.parametrize("layout", ["nn", "tn", "nt", "tt"])
def test_kernel_matches_float64(monkeypatch, f, m, k, n, layout):
    """Every tail (rows not a multiple of 6, columns not of 16), either operand transposed
    (strided reads and the gathering pack), into a NaN-poisoned output."""
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "kernel")
    a = _c64(f, k, m).transpose(1, 2) if layout[0] == "t" else _c64(f, m, k)
    b = _c64(f, n, k).transpose(1, 2) if layout[1] == "t" else _c64(f, k, n)
    out = _poisoned(f, m, n)
    got = _cgemm.matmul(a, b, out=out)
    assert got.data_ptr() == out.data_ptr()
    ref = torch.matmul(a.to(torch.complex128), b.to(torch.complex128))
    assert _rel(got, ref) < 1e-5


@needs_kernel
def test_kernel_2d_accumulate_and_empty(monkeypatch):
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "kernel")
    a, b = _c64(25, 32), _c64(32, 300)
    acc = _c64(25, 300)
    expect = acc.to(torch.complex128) + a.to(torch.complex128) @ b.to(torch.complex128)
    got = _cgemm.matmul(a, b, out=acc, accumulate=True)
    assert got is acc and _rel(got, expect) < 1e-5
    fresh = _cgemm.matmul(a, b)  # no out: a fresh result
    assert fresh.shape == (25, 300) and _rel(fresh, a.to(torch.complex128) @ b.to(torch.complex128)) < 1e-5
    zero_k = _cgemm.matmul(_c64(4, 0), _c64(0, 5), out=_poisoned(4, 5))
    assert torch.equal(zero_k, torch.zeros(4, 5, dtype=torch.complex64))
    with pytest.raises(ValueError, match="accumulate"):
        _cgemm.matmul(a, b, accumulate=True)


@pytest.mark.parametrize("provider", ["kernel", "torch"])
@pytest.mark.parametrize(("m", "k", "n"), [(8, 3, 70), (13, 9, 16), (1, 1, 5)])
def test_complex_times_real(monkeypatch, provider, m, k, n):
    """A float32 ``b`` (the filter transform: complex rows times the real weight, read
    transposed), into a NaN-poisoned ``out``."""
    if provider == "kernel" and not _cgemm.available():
        pytest.skip("the CPU kernel could not be built")
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", provider)
    a, w = _c64(m, k), torch.randn(n, k)
    out = _poisoned(m, n)
    got = _cgemm.matmul(a, w.T, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert _rel(got, a.to(torch.complex128) @ w.T.to(torch.complex128)) < 1e-5


@needs_kernel
@pytest.mark.parametrize(
    ("f", "m", "k", "n"), [(1, 40, 150, 64), (3, 7, 13, 19), (2, 21, 5, 130), (1, 8, 2, 8)]
)
@pytest.mark.parametrize("b_layout", ["k-contiguous", "n-contiguous"])
@pytest.mark.parametrize("accumulate", [False, True])
def test_complex_times_real_kernel_paths(monkeypatch, f, m, k, n, b_layout, accumulate):
    """Both complex-times-real paths: a real ``b`` with unit stride along K (a signal read as it
    lies: the transposed product, its 8 x 8 register transpose and its tails of fewer than 8
    columns or panels of at most 8 rows) and one packed panel by panel; a strided ``a``; into a
    NaN-poisoned ``out`` that is itself a strided view."""
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "kernel")
    a = _c64(f, k, m).transpose(1, 2)
    b = torch.randn(f, n, k).transpose(1, 2) if b_layout == "k-contiguous" else torch.randn(f, k, n)
    store = _poisoned(m, f, n) if not accumulate else _c64(m, f, n)
    out = store.transpose(0, 1)  # [f, m, n], unit stride along n only
    expect = torch.matmul(a.to(torch.complex128), b.to(torch.complex128))
    if accumulate:
        expect = expect + out.to(torch.complex128)
    got = _cgemm.matmul(a, b, out=out, accumulate=accumulate)
    assert got.data_ptr() == out.data_ptr()
    assert _rel(got, expect) < 1e-5


@pytest.mark.parametrize("provider", ["kernel", "torch"])
@pytest.mark.parametrize(
    ("f", "m", "k", "n"), [(1, 200, 40, 150), (3, 7, 13, 19), (2, 9, 1, 32), (1, 1, 3, 1)]
)
@pytest.mark.parametrize("a_layout", ["row-major", "band"])
def test_real_part_product(monkeypatch, provider, f, m, k, n, a_layout):
    """``matmul_re`` = Re(a @ b) in float32: ``a`` as it lies or read across a band's power-of-two
    frequency stride (the inverse transforms), row tails of the 8-row micro-kernel and of the
    96-row blocks, partial 32-column panels; into a NaN-poisoned ``out``."""
    if provider == "kernel" and not _cgemm.available():
        pytest.skip("the CPU kernel could not be built")
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", provider)
    a = _c64(f, k, m).transpose(1, 2) if a_layout == "band" else _c64(f, m, k)
    b = _c64(f, k, n)
    out = torch.full((f, m, n), float("nan"))
    got = _cgemm.matmul_re(a, b, out=out)
    assert got.data_ptr() == out.data_ptr() and got.dtype == torch.float32
    ref = torch.matmul(a.to(torch.complex128), b.to(torch.complex128)).real
    assert ((got.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5
    fresh = _cgemm.matmul_re(a[0], b[0])  # 2-D, no out
    assert fresh.shape == (m, n) and torch.allclose(fresh.double(), ref[0], rtol=1e-4, atol=1e-4)


@needs_kernel
def test_real_part_kernel_accumulates_and_handles_empty(monkeypatch):
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "kernel")
    assert _cgemm.provider() == "kernel"
    a, b = _c64(2, 100, 6), _c64(2, 6, 40)
    acc = torch.randn(2, 100, 40)
    expect = acc.double() + torch.matmul(a.to(torch.complex128), b.to(torch.complex128)).real
    _cgemm._STATE["module"].cgemm_re(a, b, acc, True)
    assert ((acc.double() - expect).abs().max() / expect.abs().max()).item() < 1e-5
    zero_k = torch.full((1, 4, 5), float("nan"))
    _cgemm._STATE["module"].cgemm_re(_c64(1, 4, 0), _c64(1, 0, 5), zero_k, False)
    assert torch.equal(zero_k, torch.zeros(1, 4, 5))


def test_ineligible_operands_stay_on_torch(monkeypatch):
    """complex128, autograd-tracked and lazily conjugated operands never reach the kernel."""

    def boom(*args):
        raise AssertionError("the kernel was called")

    monkeypatch.setattr(_cgemm, "_kernel", boom)
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "auto")
    a, b = _c64(2, 5, 4), _c64(2, 4, 3)
    ref = torch.matmul(a.to(torch.complex128), b.to(torch.complex128))
    assert _rel(_cgemm.matmul(a.to(torch.complex128), b.to(torch.complex128)), ref) < 1e-12
    conj_ref = torch.matmul(a.conj().to(torch.complex128), b.to(torch.complex128))
    assert _rel(_cgemm.matmul(a.conj(), b), conj_ref) < 1e-5
    at = a.clone().requires_grad_()
    out = _cgemm.matmul(at, b)
    assert out.grad_fn is not None  # autograd recorded it
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "torch")
    assert _rel(_cgemm.matmul(a, b), ref) < 1e-5


def test_env_value_is_checked(monkeypatch):
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "fast")
    with pytest.raises(_env.EnvVarError, match="BLTRITON_CPU_CGEMM"):
        _cgemm.provider()


@needs_kernel
@pytest.mark.parametrize("method", ["gemm", "fft", "direct", "blocked"])
def test_layer_same_through_kernel_and_torch_per_transform_method(monkeypatch, method):
    """With the separable GEMM transform the kernel reads the column spectrum in place and writes
    the band's rows straight (no transposing copy): same forward and gradients as torch."""
    monkeypatch.setattr(transforms, "FORCE_METHOD", method)
    monkeypatch.setenv("BLTRITON_ALGORITHM", "spectral")
    mod = BLConv2d(5, 7, 3, padding=1, compress_rate=0.4)
    _assert_same_through_kernel_and_torch(
        monkeypatch, mod, torch.randn(4, 5, 13, 11), torch.randn(4, 7, 13, 11)
    )


def _assert_same_through_kernel_and_torch(monkeypatch, mod, x, dy):
    """The layer's output and gradients with the complex products on the kernel and on torch."""
    results = {}
    for name in ("torch", "kernel"):
        monkeypatch.setenv("BLTRITON_CPU_CGEMM", name)
        xi = x.clone().requires_grad_()
        mod.zero_grad()
        y = mod(xi)
        y.backward(dy)
        results[name] = (y.detach(), xi.grad, mod.weight.grad.clone())
    for got, ref in zip(results["kernel"], results["torch"]):
        assert torch.isfinite(got).all()
        assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-5


@needs_kernel
@pytest.mark.parametrize("method", ["gemm", "fft"])
def test_1d_layer_same_through_kernel_and_torch(monkeypatch, method):
    """A 1-D layer whose column GEMM runs as the kernel's real-operand products (the band
    written frequency-major, and read in place by the inverse; with the FFT method, the
    contractions only): same forward and gradients as torch."""
    monkeypatch.setattr(transforms, "FORCE_METHOD", method)
    monkeypatch.setenv("BLTRITON_ALGORITHM", "spectral")
    mod = BLConv1d(6, 9, 5, padding=2, compress_rate=0.5)
    _assert_same_through_kernel_and_torch(monkeypatch, mod, torch.randn(3, 6, 37), torch.randn(3, 9, 37))


@needs_kernel
@pytest.mark.parametrize(("length", "method"), [((150,), "gemm"), ((6, 5), "direct")])
def test_kernel_transforms_make_no_layout_copy(monkeypatch, length, method):
    """The direct transforms (and the 1-D column GEMM) on the kernel write the band
    frequency-major and read it in place: no ``copy_`` in either direction, and the same
    result as the torch path."""
    from torch.profiler import ProfilerActivity, profile

    from bltriton.spectral import band_for_rate

    monkeypatch.setattr(transforms, "FORCE_METHOD", method)
    band = band_for_rate(tuple(s + 2 for s in length), 0.5)
    x = torch.randn(4, 8, *length)
    results = {}
    for name in ("torch", "kernel"):
        monkeypatch.setenv("BLTRITON_CPU_CGEMM", name)
        transforms.clear_plans()
        xb = ops.forward_transform(x, band, offset=(1,) * len(length))
        y = ops.inverse_transform(xb, band, length, (1,) * len(length), offset=(1,) * len(length))
        results[name] = (xb, y)
        if name == "kernel":
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                xb = ops.forward_transform(x, band, offset=(1,) * len(length))
                ops.inverse_transform(xb, band, length, (1,) * len(length), offset=(1,) * len(length))
            names = {e.key for e in prof.key_averages()}
            assert "aten::copy_" not in names, names
    for got, ref in zip(results["kernel"], results["torch"]):
        assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-5
    # A band that is not contiguous (its batch and channel axes swapped in memory) is read too.
    xb = results["kernel"][0]
    strided = xb.transpose(1, 2).contiguous().transpose(1, 2)
    ones = (1,) * len(length)
    y = ops.inverse_transform(strided, band, length, ones, offset=ones)
    assert torch.equal(y, ops.inverse_transform(xb, band, length, ones, offset=ones))


@needs_kernel
def test_kernel_writes_a_strided_out(monkeypatch):
    """``out`` with unit stride along its last dimension only (a transposed view of a band), and
    ``b`` read in place with its batch entries adjacent (the grouped pack: a full group of 8 and
    a partial one, a full panel of 16 columns and a partial one)."""
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "kernel")
    a = _c64(5, 9).expand(11, 5, 9)  # one shared operand (batch stride 0)
    b = _c64(20, 9, 11).permute(2, 1, 0)  # [11, 9, 20], columns far apart, batch entries adjacent
    band = _poisoned(5, 11, 20)
    _cgemm.matmul(a, b, out=band.transpose(0, 1))
    ref = torch.matmul(a.to(torch.complex128), b.to(torch.complex128)).transpose(0, 1)
    assert _rel(band, ref) < 1e-5


@needs_kernel
@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (lambda: BLConv2d(6, 10, 3, padding=1, compress_rate=0.5), (5, 6, 14, 14)),
        (lambda: BLConv2d(7, 9, 5, stride=2, padding=2, compress_rate=0.3), (3, 7, 17, 15)),
        (lambda: BLConv1d(8, 12, 5, padding=2, compress_rate=0.5), (7, 8, 41)),
    ],
)
@pytest.mark.parametrize("path", ["fused", "band", "band-chunked"])
def test_layer_same_through_kernel_and_torch(monkeypatch, layer, shape, path):
    """Forward, input and weight gradients of a spectral layer equal (fp32 tolerance) with the
    kernel and with torch.matmul: the fused contractions (the filter band formed and folded
    inside the kernel), or the contractions against a written band, the row stages and the
    filter-gradient folds (with one frequency per chunk, the folds accumulate)."""
    monkeypatch.setenv("BLTRITON_ALGORITHM", "spectral")
    if path != "fused":
        monkeypatch.setattr(_cgemm, "FUSED_MAX_TAPS", 0)
        monkeypatch.setattr(_cgemm, "FUSED_MAX_FILTER", 0)
    if path == "band-chunked":
        monkeypatch.setattr(ops, "CHUNK_BYTES", {"cpu": 1})
        monkeypatch.setattr(ops, "CHUNK_MIN_TAPS", 0)
    mod = layer()
    x = torch.randn(*shape)
    dy = None
    results = {}
    for name in ("torch", "kernel"):
        monkeypatch.setenv("BLTRITON_CPU_CGEMM", name)
        xi = x.clone().requires_grad_()
        mod.zero_grad()
        y = mod(xi)
        dy = torch.randn_like(y) if dy is None else dy
        y.backward(dy)
        results[name] = (y.detach(), xi.grad, mod.weight.grad.clone())
    for got, ref in zip(results["kernel"], results["torch"]):
        assert torch.isfinite(got).all()
        assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-5


@needs_kernel
@pytest.mark.parametrize(
    ("f", "m", "k", "t", "n"), [(1, 1, 1, 1, 1), (3, 5, 7, 3, 16), (4, 13, 9, 5, 37), (2, 6, 33, 9, 50)]
)
@pytest.mark.parametrize("layout", ["contiguous", "filter-fwd", "filter-dx"])
def test_taps_kernel_matches_float64(monkeypatch, f, m, k, t, n, layout):
    """``a[f] @ Σ_t e[f,t]·w[t]`` (the band formed while packing): row and column tails, a read
    transposed, the filter tap-major or read as it lies (``[O, Cg, taps]`` viewed for the forward
    and for dX: gathered a panel at a time), into a NaN-poisoned output."""
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "kernel")
    a = _c64(f, k, m).transpose(1, 2) if layout != "contiguous" else _c64(f, m, k)
    e = _c64(f, t)
    w = {
        "contiguous": lambda: torch.randn(t, k, n),
        "filter-fwd": lambda: torch.randn(n, k, t).permute(2, 1, 0),
        "filter-dx": lambda: torch.randn(k, n, t).permute(2, 0, 1),
    }[layout]()
    out = _poisoned(f, m, n)
    got = _cgemm.matmul_taps(a, e, w, out=out)
    assert got.data_ptr() == out.data_ptr()
    c = torch.complex128
    ref = torch.einsum("fmk,ft,tkn->fmn", a.to(c), e.to(c), w.to(c))
    assert _rel(got, ref) < 1e-5


@needs_kernel
@pytest.mark.parametrize(
    ("f", "m", "k", "t", "n"),
    [
        (1, 1, 1, 1, 1),
        (3, 5, 7, 3, 16),
        (4, 13, 9, 5, 37),
        (2, 6, 33, 9, 50),
        (2, 150, 5, 5, 20),
        (1, 20, 3, 63, 17),
    ],
)
@pytest.mark.parametrize("out_layout", ["taps-major", "filter"])
def test_fold_kernel_matches_float64(monkeypatch, f, m, k, t, n, out_layout):
    """``Re Σ_f e[f,t]·(a[f] @ b[f])`` (the dW band folded into the taps as it goes), ``a``
    transposed as the filter gradient reads it, ``b`` with padded rows; rows in several blocks
    of the kernel's per-task tap buffer (72 rows at 5 taps, 6 at 63) with a partial last one."""
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "kernel")
    a = _c64(f, k, m).transpose(1, 2)
    b = _c64(f, k, n + 3)[:, :, :n]
    e = _c64(f, t)
    # A reused buffer the kernel overwrites whole: [t, m, n], or the filter gradient as it lies.
    if out_layout == "filter":
        out = torch.full((m, n, t), float("nan")).permute(2, 0, 1)
    else:
        out = torch.full((t, m, n), float("nan"))
    got = _cgemm.matmul_fold(a, b, e, out=out)
    assert got.data_ptr() == out.data_ptr()
    c = torch.complex128
    ref = torch.einsum("fmk,fkn,ft->tmn", a.to(c), b.to(c), e.to(c)).real
    assert got.shape == (t, m, n) and got.dtype == torch.float32
    assert ((got.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_fused_products_on_torch_match(monkeypatch):
    """Without the kernel the two fused products build the band whole: the same numbers."""
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "torch")
    a, e, w = _c64(3, 5, 7), _c64(3, 4), torch.randn(4, 7, 6)
    c = torch.complex128
    ref = torch.einsum("fmk,ft,tkn->fmn", a.to(c), e.to(c), w.to(c))
    assert _rel(_cgemm.matmul_taps(a, e, w), ref) < 1e-5
    b = _c64(3, 7, 6)
    fold = _cgemm.matmul_fold(a.transpose(1, 2).contiguous().transpose(1, 2), b, e)
    ref = torch.einsum("fmk,fkn,ft->tmn", a.to(c), b.to(c), e.to(c)).real
    assert ((fold.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_a_failed_build_falls_back_with_a_warning(monkeypatch):
    """No compiler or ninja: ``auto`` warns once and stays on torch (same results); ``kernel``
    raises, naming the variable."""

    def no_compiler():
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(_cgemm, "_STATE", {})
    monkeypatch.setattr(_cgemm, "_build", no_compiler)
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "auto")
    a, b = _c64(2, 5, 4), _c64(2, 4, 3)
    with pytest.warns(RuntimeWarning, match="could not be built"):
        got = _cgemm.matmul(a, b)
    assert _rel(got, torch.matmul(a.to(torch.complex128), b.to(torch.complex128))) < 1e-5
    assert _cgemm.provider() == "torch" and not _cgemm.available()
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "kernel")
    with pytest.raises(RuntimeError, match=r"BLTRITON_CPU_CGEMM=kernel.*Ninja"):
        _cgemm.matmul(a, b)


@needs_kernel
def test_kernel_filter_transform_takes_no_planes_scratch(monkeypatch):
    """With the kernel building the filter band, no planes buffer is requested (it would hold
    workspace budget for nothing); on torch the few-tap layer still writes its planes there."""
    from bltriton import _workspace

    monkeypatch.setenv("BLTRITON_ALGORITHM", "spectral")
    layer = BLConv1d(8, 12, 5, padding=2, compress_rate=0.5)
    x = torch.randn(3, 8, 40, requires_grad=True)
    for provider, expected in (("kernel", False), ("torch", True)):
        monkeypatch.setenv("BLTRITON_CPU_CGEMM", provider)
        _workspace.clear()
        layer(x).sum().backward()
        names = {key[0] for key in _workspace._WORKSPACE.buffers}
        assert ("filter_planes" in names) is expected, (provider, names)


def _grid_positions(offset, length, step):
    return [torch.arange(n) * s + o for o, n, s in zip(offset, length, step)]


@needs_kernel
@pytest.mark.parametrize(
    ("length", "step", "offset", "rate"),
    [((13, 11), (1, 1), (1, 1), 0.5), ((8, 7), (2, 2), (1, 0), 0.5), ((16, 16), (1, 1), (1, 1), 0.75),
     ((21, 37), (1, 1), (2, 3), 0.3), ((5, 64), (1, 1), (0, 0), 0.9)],
)  # fmt: skip
@pytest.mark.parametrize("conj", [False, True])
def test_blocked_transforms_match_float64_reference(monkeypatch, length, step, offset, rate, conj):
    """The blocked separable transforms (both stages per block of maps in the kernel) against
    rfftn / irfftn in float64: signals placed at ``offset + t·step`` on the grid, the band's kept
    rows and columns, the conjugate band; 3 x 7 maps (a partial block of 16)."""
    from bltriton.spectral import band_for_rate

    monkeypatch.setattr(transforms, "FORCE_METHOD", "blocked")
    monkeypatch.setenv("BLTRITON_CPU_CGEMM", "kernel")
    calls = []
    for name in ("separable_forward", "separable_inverse"):
        real = getattr(_cgemm, name)
        monkeypatch.setattr(_cgemm, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    transforms.clear_plans()
    n = tuple(o + (s * (k - 1) + 1) + 2 for o, k, s in zip(offset, length, step))
    band = band_for_rate(n, rate)
    plan = transforms.signal_plan(band, length, step, torch.device("cpu"), torch.float32, offset)
    rows, cols = band.kept_row_indices(), band.cols
    pos = _grid_positions(offset, length, step)
    x = torch.randn(3, 7, *length)
    grid = torch.zeros(3, 7, *n, dtype=torch.float64)
    grid[:, :, pos[0][:, None], pos[1][None, :]] = x.double()
    spec = torch.fft.rfftn(grid, s=n)[:, :, rows, :cols]  # [3, 7, R, cols]
    ref = spec.permute(2, 3, 0, 1).reshape(-1, 3, 7)
    ref = ref.conj() if conj else ref
    got = plan.forward(x, conj)
    assert ((got.to(torch.complex128) - ref).abs().max() / ref.abs().max()).item() < 1e-5

    yb = torch.randn(band.num_kept, 3, 7, dtype=torch.complex64)
    z = torch.zeros(3, 7, n[0], n[1] // 2 + 1, dtype=torch.complex128)
    zb = yb.to(torch.complex128)
    z[:, :, rows, :cols] = (zb.conj() if conj else zb).reshape(len(rows), cols, 3, 7).permute(2, 3, 0, 1)
    yref = torch.fft.irfftn(z, s=n)[:, :, pos[0][:, None], pos[1][None, :]]
    y = plan.inverse(yb, conj)
    assert ((y.double() - yref).abs().max() / yref.abs().max()).item() < 1e-5
    assert calls == ["separable_forward", "separable_inverse"]  # the kernel ran, no fallback
    transforms.clear_plans()


@needs_kernel
def test_separable_kernel_writes_every_output_through_strided_views():
    """The kernel's two entries write every element of outputs with non-unit outer strides (views
    of larger poisoned tensors), for 37 maps (two full blocks of 16 and a partial one), and read
    operands of any strides; against the same products through torch in float64."""
    g = torch.Generator().manual_seed(0)
    m, h, w, r, cols = 37, 9, 20, 5, 6
    x = torch.randn(m, h, w + 3, generator=g)[:, :, :w]  # row stride w + 3
    ecol = torch.randn(2 * cols, w, generator=g).T  # [W, 2cols], transposed strides
    erow = torch.randn(h, r, dtype=torch.complex64, generator=g).T  # [R, H]
    big = torch.full((r, cols + 2, m), complex(float("nan"), float("nan")), dtype=torch.complex64)
    out = big[:, 1 : cols + 1]
    _cgemm.separable_forward(x, ecol, erow, out)
    ec = torch.complex(ecol[:, 0::2], ecol[:, 1::2]).to(torch.complex128)
    t = x.to(torch.complex128) @ ec  # [M, H, cols]
    ref = torch.einsum("rh,mhc->rcm", erow.to(torch.complex128), t)
    assert torch.isfinite(torch.view_as_real(out)).all()
    assert ((out.to(torch.complex128) - ref).abs().max() / ref.abs().max()).item() < 1e-5
    assert (
        torch.isnan(torch.view_as_real(big[:, 0])).all() and torch.isnan(torch.view_as_real(big[:, -1])).all()
    )

    drow = torch.randn(h, r, dtype=torch.complex64, generator=g)
    dcol = torch.randn(2 * cols, w, generator=g)
    band = torch.randn(r, cols, m, dtype=torch.complex64, generator=g)
    ybig = torch.full((m, h + 1, w + 5), float("nan"))
    y = ybig[:, 1:, 2 : w + 2]
    _cgemm.separable_inverse(band, drow, dcol, y)
    s = torch.einsum("hr,rcm->mhc", drow.to(torch.complex128), band.to(torch.complex128))
    yref = s.real @ dcol[0::2].double() + s.imag @ dcol[1::2].double()
    assert torch.isfinite(y).all()
    assert ((y.double() - yref).abs().max() / yref.abs().max()).item() < 1e-5
    assert (
        torch.isnan(ybig[:, 0]).all()
        and torch.isnan(ybig[:, :, :2]).all()
        and torch.isnan(ybig[:, :, w + 2 :]).all()
    )

"""The transform kernels (``bltriton.kernels.transform``) against plain-torch float64 references:
real DFT operands checked against ``torch.fft``, random operands for the general contraction,
every signal/output layout the launcher addresses differently (flat, aligned, general), half
signal and output dtypes, the bias epilogue, multi-job launches and the argument checks.

Outputs are filled with NaN first, so an element the kernel does not write fails.
"""

from __future__ import annotations

import math

import pytest
import torch
import triton
from bltriton.kernels import transform as T

from tests.helpers import assert_close_rel

TOL = {"ieee": 1e-5, "tf32": 5e-3, "bf16": 2e-2, "fp16": 4e-3}
# The compiled kernels on a CUDA machine, the interpreter (tests/conftest.py) elsewhere.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _on_device():
    """Every tensor a test makes without naming a device is on DEVICE."""
    with torch.device(DEVICE):
        yield


# --------------------------------------------------------------------------------------------
# Operands and references
# --------------------------------------------------------------------------------------------


def _freqs(h: int, w: int, f: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``f`` distinct random frequencies (kh, kw) of an ``h × w`` grid."""
    idx = torch.randperm(h * w)[:f]
    return idx // w, idx % w


def _dft(h: int, w: int, kh: torch.Tensor, kw: torch.Tensor, sign: float) -> torch.Tensor:
    """``exp(sign·2πi (kh·y/h + kw·x/w))`` as complex128 ``[F, h·w]``, position ``y·w + x``."""
    y = torch.arange(h, dtype=torch.float64).repeat_interleave(w)
    x = torch.arange(w, dtype=torch.float64).repeat(h)
    phase = sign * 2 * math.pi * (kh.double()[:, None] * y / h + kw.double()[:, None] * x / w)
    return torch.polar(torch.ones_like(phase), phase)


def _to_band_op(e: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Complex ``E [F, P]`` -> the kernel's real ``[2, F, P]``."""
    return torch.stack([e.real, e.imag]).to(dtype).contiguous()


def _from_band_op(g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Complex ``G [F, P]`` with ``out = Re Σ_f band·G`` -> the kernel's real ``[2F, P]``
    (``Re(b·g) = br·gr − bi·gi``)."""
    return torch.stack([g.real, -g.imag], dim=1).reshape(2 * g.shape[0], g.shape[1]).to(dtype).contiguous()


def ref_to_band(signal: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """``[F, B·C]`` complex128 from the float64 contraction."""
    s = signal.double().reshape(signal.shape[0] * signal.shape[1], -1)
    e = op.double()
    return torch.complex(e[0] @ s.T, e[1] @ s.T)


def ref_from_band(band: torch.Tensor, op: torch.Tensor, shape, bias=None) -> torch.Tensor:
    """``[B, O, Ho, Wo]`` float64."""
    a = torch.view_as_real(band.to(torch.complex128)).permute(1, 0, 2).reshape(band.shape[1], -1)
    out = (a @ op.double()).reshape(shape)
    if bias is not None:
        out = out + bias.double()[:, None, None]
    return out


def _signal(b, c, h, w, layout: str, dtype=torch.float32) -> torch.Tensor:
    """A ``[b, c, h, w]`` signal in one of the layouts the launcher tells apart."""
    if layout == "contiguous":
        return torch.randn(b, c, h, w).to(dtype)
    if layout == "channels_last":
        return torch.randn(b, c, h, w).to(dtype).to(memory_format=torch.channels_last)
    if layout == "sliced":  # every other column of a wider map, every other channel
        return torch.randn(b, 2 * c, h, 2 * w + 1).to(dtype)[:, ::2, :, 1::2]
    if layout == "window":  # a window of a larger map: neither axis pair collapses
        return torch.randn(b, c + 2, h, 2 * w).to(dtype)[:, 1 : 1 + c, :, :w]
    if layout == "permuted":  # [W, H, C, B] storage
        return torch.randn(w, h, c, b).to(dtype).permute(3, 2, 1, 0)
    raise ValueError(layout)


def _nan_band(f: int, m: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.full((f, m), complex("nan+nanj"), dtype=dtype)


# --------------------------------------------------------------------------------------------
# to_band
# --------------------------------------------------------------------------------------------

SHAPES = [  # (B, C, H, W, F)
    pytest.param(1, 1, 1, 1, 1, id="1x1-1x1-f1"),
    pytest.param(1, 3, 3, 7, 5, id="1x3-3x7-f5"),
    pytest.param(2, 3, 7, 3, 21, id="2x3-7x3-f21"),
    pytest.param(3, 7, 1, 33, 17, id="3x7-1x33-f17"),
    pytest.param(2, 17, 5, 7, 33, id="2x17-5x7-f33"),
]
LAYOUTS = ["contiguous", "channels_last", "sliced", "window", "permuted"]


@pytest.mark.parametrize("b,c,h,w,f", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_to_band_matches_fft(b, c, h, w, f, layout):
    """With DFT operands the band is ``fft2`` at the kept frequencies, for every layout."""
    x = _signal(b, c, h, w, layout)
    kh, kw = _freqs(h, w, f)
    op = _to_band_op(_dft(h, w, kh, kw, -1.0), torch.float32)
    out = _nan_band(f, b * c, torch.complex64)
    T.to_band([T.ToBand(x, op, out)], precision="ieee")
    ref = torch.fft.fft2(x.double())[:, :, kh, kw].reshape(b * c, f).T
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(ref), TOL["ieee"], f"to_band {layout}")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_to_band_float64_exact(layout):
    b, c, h, w, f = 2, 3, 5, 6, 13
    x = _signal(b, c, h, w, layout, torch.float64)
    kh, kw = _freqs(h, w, f)
    op = _to_band_op(_dft(h, w, kh, kw, -1.0), torch.float64)
    out = _nan_band(f, b * c, torch.complex128)
    T.to_band([T.ToBand(x, op, out)], precision="tf32")  # float64 is always fp64 ieee
    ref = torch.fft.fft2(x)[:, :, kh, kw].reshape(b * c, f).T
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(ref), 1e-12, "to_band float64")


@pytest.mark.parametrize("precision", ["ieee", "tf32", "bf16", "fp16"])
@pytest.mark.parametrize("sig_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_to_band_precisions_and_signal_dtypes(precision, sig_dtype):
    """Half/double signals are converted in the kernel; the reference uses the signal as stored."""
    b, c, h, w, f = 2, 5, 3, 11, 7
    x = _signal(b, c, h, w, "channels_last", sig_dtype)
    op = torch.randn(2, f, h * w)
    out = _nan_band(f, b * c, torch.complex64)
    T.to_band([T.ToBand(x, op, out)], precision=precision)
    ref = ref_to_band(x, op)
    what = f"to_band {precision} {sig_dtype}"
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(ref), TOL[precision], what)


@pytest.mark.parametrize(
    "layout,config,modes",
    [
        # channels_last with C a multiple of BLOCK_M: m tiles lie in one batch row.
        pytest.param("channels_last", dict(BLOCK_F=16, BLOCK_M=16, BLOCK_P=16), ("ALIGNED", "FLAT"), id="cl"),
        # A window with W a multiple of BLOCK_P (p tiles lie in one map row), C not of BLOCK_M.
        pytest.param("window", dict(BLOCK_F=16, BLOCK_M=32, BLOCK_P=16), ("GENERAL", "ALIGNED"), id="window"),
        pytest.param("contiguous", dict(BLOCK_F=32, BLOCK_M=16, BLOCK_P=32), ("FLAT", "FLAT"), id="nchw"),
    ],
)
def test_to_band_axis_modes(layout, config, modes):
    """Each addressing mode of the launcher is taken and correct (several tiles per axis)."""
    b, c, h, w, f = 3, 16, 3, 16, 40
    x = _signal(b, c, h, w, layout)
    op = torch.randn(2, f, h * w)
    out = _nan_band(f, b * c, torch.complex64)
    job = T.ToBand(x, op, out)
    cfg = T.as_config("to_band", {**config, "num_warps": 4, "num_stages": 2})
    _, args = T.to_band_args([job], cfg, "ieee", interpret=True)
    assert (args["M_MODE0"], args["P_MODE0"]) == tuple(getattr(T, m) for m in modes)
    T.to_band([job], precision="ieee", config=cfg)
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(ref_to_band(x, op)), TOL["ieee"], layout)


def test_to_band_out_row_stride():
    """``out`` may be a column slice of a wider band (any stride(0)); nothing else is written."""
    b, c, h, w, f = 2, 3, 4, 5, 9
    x = torch.randn(b, c, h, w)
    op = torch.randn(2, f, h * w)
    wide = torch.full((f, b * c + 5), complex(7.0, -7.0), dtype=torch.complex64)
    out = wide[:, 2 : 2 + b * c]
    out.fill_(complex("nan+nanj"))
    T.to_band([T.ToBand(x, op, out)], precision="ieee")
    assert_close_rel(torch.view_as_real(out), torch.view_as_real(ref_to_band(x, op)), TOL["ieee"], "slice")
    assert (wide[:, :2] == complex(7.0, -7.0)).all() and (wide[:, 2 + b * c :] == complex(7.0, -7.0)).all()


class _CountingKernel:
    """Stands in for a ``@triton.jit`` kernel and counts its launches."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


def test_to_band_three_jobs_one_launch(monkeypatch):
    """The input band, the filter band and a channels_last half signal: three sizes, one launch."""
    counter = _CountingKernel(T.to_band_kernel)
    monkeypatch.setattr(T, "to_band_kernel", counter)
    specs = [  # (B, C, H, W, F, layout, signal dtype)
        (2, 3, 7, 5, 33, "contiguous", torch.float32),
        (4, 3, 3, 3, 9, "window", torch.float32),
        (1, 7, 1, 17, 3, "channels_last", torch.float16),
    ]
    jobs, refs = [], []
    for b, c, h, w, f, layout, dt in specs:
        x = _signal(b, c, h, w, layout, dt)
        op = torch.randn(2, f, h * w)
        jobs.append(T.ToBand(x, op, _nan_band(f, b * c, torch.complex64)))
        refs.append(ref_to_band(x, op))
    T.to_band(jobs, precision="ieee")
    assert counter.launches == 1
    for i, (job, ref) in enumerate(zip(jobs, refs)):
        assert_close_rel(torch.view_as_real(job.out), torch.view_as_real(ref), TOL["ieee"], f"job {i}")


def test_to_band_empty_jobs_skipped(monkeypatch):
    counter = _CountingKernel(T.to_band_kernel)
    monkeypatch.setattr(T, "to_band_kernel", counter)
    empty = T.ToBand(torch.randn(0, 3, 4, 4), torch.randn(2, 5, 16), _nan_band(5, 0, torch.complex64))
    T.to_band([empty], precision="ieee")
    assert counter.launches == 0
    x = torch.randn(2, 3, 4, 4)
    op = torch.randn(2, 5, 16)
    job = T.ToBand(x, op, _nan_band(5, 6, torch.complex64))
    T.to_band([empty, job, empty], precision="ieee")
    assert counter.launches == 1
    assert_close_rel(torch.view_as_real(job.out), torch.view_as_real(ref_to_band(x, op)), TOL["ieee"], "job")


# --------------------------------------------------------------------------------------------
# from_band
# --------------------------------------------------------------------------------------------

FROM_SHAPES = [  # (B, O, Ho, Wo, F)
    pytest.param(1, 1, 1, 1, 1, id="1x1-1x1-f1"),
    pytest.param(1, 3, 3, 7, 5, id="1x3-3x7-f5"),
    pytest.param(3, 7, 1, 33, 17, id="3x7-1x33-f17"),
    pytest.param(2, 17, 5, 7, 33, id="2x17-5x7-f33"),
]


def _out(b, o, h, w, layout: str, dtype=torch.float32) -> torch.Tensor:
    """A NaN-filled ``[b, o, h, w]`` output in one of the layouts the launcher tells apart."""
    if layout == "contiguous":
        t = torch.empty(b, o, h, w, dtype=dtype)
    elif layout == "channels_last":
        t = torch.empty(b, o, h, w, dtype=dtype).to(memory_format=torch.channels_last)
    elif layout == "sliced":  # a window of a larger buffer (e.g. a concatenation's slot)
        t = torch.empty(b, o + 3, h + 1, w + 2, dtype=dtype)[:, 1 : 1 + o, 1:, 2:]
    else:
        raise ValueError(layout)
    return t.fill_(float("nan"))


@pytest.mark.parametrize("b,o,h,w,f", FROM_SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_from_band_matches_reference(b, o, h, w, f, layout, with_bias):
    band = torch.randn(f, b * o, dtype=torch.complex64)
    op = torch.randn(2 * f, h * w)
    bias = torch.randn(o) if with_bias else None
    out = _out(b, o, h, w, layout)
    T.from_band([T.FromBand(band, op, out, bias)], precision="ieee")
    assert_close_rel(out, ref_from_band(band, op, out.shape, bias), TOL["ieee"], f"from_band {layout}")


def test_from_band_sliced_out_writes_only_its_window():
    b, o, h, w, f = 2, 3, 4, 5, 7
    band = torch.randn(f, b * o, dtype=torch.complex64)
    op = torch.randn(2 * f, h * w)
    buf = torch.full((b, o + 3, h + 1, w + 2), 7.0)
    out = buf[:, 1 : 1 + o, 1:, 2:]
    out.fill_(float("nan"))
    T.from_band([T.FromBand(band, op, out)], precision="ieee")
    assert_close_rel(out, ref_from_band(band, op, out.shape), TOL["ieee"], "window")
    mask = torch.ones_like(buf, dtype=torch.bool)
    mask[:, 1 : 1 + o, 1:, 2:] = False
    assert (buf[mask] == 7.0).all()


@pytest.mark.parametrize("precision", ["ieee", "tf32", "bf16", "fp16"])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_from_band_precisions_and_out_dtypes(precision, out_dtype):
    b, o, h, w, f = 2, 5, 3, 11, 21
    band = torch.randn(f, b * o, dtype=torch.complex64)
    op = torch.randn(2 * f, h * w)
    bias = torch.randn(o).to(out_dtype)
    out = _out(b, o, h, w, "channels_last", out_dtype)
    T.from_band([T.FromBand(band, op, out, bias)], precision=precision)
    # The store rounds to the output dtype: its half ulp adds to the kernel's error.
    tol = TOL[precision] + {torch.float32: 0, torch.bfloat16: 4e-3, torch.float16: 5e-4}[out_dtype]
    ref = ref_from_band(band, op, out.shape, bias)
    assert_close_rel(out, ref, tol, f"from_band {precision} {out_dtype}")


def test_from_band_float64_exact():
    b, o, h, w, f = 2, 3, 5, 6, 13
    band = torch.randn(f, b * o, dtype=torch.complex128)
    op = torch.randn(2 * f, h * w, dtype=torch.float64)
    bias = torch.randn(o, dtype=torch.float64)
    out = _out(b, o, h, w, "sliced", torch.float64)
    T.from_band([T.FromBand(band, op, out, bias)], precision="bf16")  # float64 is always fp64 ieee
    assert_close_rel(out, ref_from_band(band, op, out.shape, bias), 1e-12, "from_band float64")


@pytest.mark.parametrize(
    "layout,config,modes",
    [
        pytest.param("channels_last", dict(BLOCK_M=16, BLOCK_P=16, BLOCK_F=8), ("ALIGNED", "FLAT"), id="cl"),
        pytest.param("sliced", dict(BLOCK_M=32, BLOCK_P=16, BLOCK_F=8), ("GENERAL", "ALIGNED"), id="sliced"),
        pytest.param("contiguous", dict(BLOCK_M=32, BLOCK_P=16, BLOCK_F=16), ("FLAT", "FLAT"), id="nchw"),
    ],
)
def test_from_band_axis_modes(layout, config, modes):
    b, o, h, w, f = 3, 16, 3, 16, 40
    band = torch.randn(f, b * o, dtype=torch.complex64)
    op = torch.randn(2 * f, h * w)
    bias = torch.randn(o)
    out = _out(b, o, h, w, layout)
    job = T.FromBand(band, op, out, bias)
    cfg = T.as_config("from_band", {**config, "num_warps": 4, "num_stages": 2})
    _, args = T.from_band_args([job], cfg, "ieee", interpret=True)
    assert (args["M_MODE0"], args["P_MODE0"]) == tuple(getattr(T, m) for m in modes)
    T.from_band([job], precision="ieee", config=cfg)
    assert_close_rel(out, ref_from_band(band, op, out.shape, bias), TOL["ieee"], layout)


def test_from_band_band_row_stride():
    """The band may be a column slice of a wider one (any stride(0))."""
    b, o, h, w, f = 2, 3, 4, 4, 9
    wide = torch.randn(f, b * o + 4, dtype=torch.complex64)
    band = wide[:, 1 : 1 + b * o]
    op = torch.randn(2 * f, h * w)
    out = _out(b, o, h, w, "contiguous")
    T.from_band([T.FromBand(band, op, out)], precision="ieee")
    assert_close_rel(out, ref_from_band(band, op, out.shape), TOL["ieee"], "band slice")


def test_from_band_three_jobs_one_launch(monkeypatch):
    """Layer output (bias), input gradient and filter-gradient fold: three sizes, one launch."""
    counter = _CountingKernel(T.from_band_kernel)
    monkeypatch.setattr(T, "from_band_kernel", counter)
    specs = [  # (B, O, Ho, Wo, F, layout, out dtype, bias)
        (2, 5, 6, 7, 33, "contiguous", torch.float32, True),
        (2, 3, 7, 7, 21, "channels_last", torch.bfloat16, False),
        (5, 3, 3, 3, 9, "sliced", torch.float32, False),
    ]
    jobs, refs = [], []
    for b, o, h, w, f, layout, dt, has_bias in specs:
        band = torch.randn(f, b * o, dtype=torch.complex64)
        op = torch.randn(2 * f, h * w)
        bias = torch.randn(o) if has_bias else None
        out = _out(b, o, h, w, layout, dt)
        jobs.append(T.FromBand(band, op, out, bias))
        refs.append(ref_from_band(band, op, out.shape, bias))
    T.from_band(jobs, precision="ieee")
    assert counter.launches == 1
    for i, (job, ref) in enumerate(zip(jobs, refs)):
        tol = TOL["ieee"] + (4e-3 if job.out.dtype == torch.bfloat16 else 0)
        assert_close_rel(job.out, ref, tol, f"job {i}")


def test_from_band_empty_band_is_bias(monkeypatch):
    """No kept frequency (F = 0): the output is the bias; an empty output is no launch."""
    b, o, h, w = 2, 3, 2, 5
    bias = torch.randn(o)
    out = _out(b, o, h, w, "contiguous")
    T.from_band([T.FromBand(torch.empty(0, b * o, dtype=torch.complex64), torch.empty(0, h * w), out, bias)],
                precision="ieee")  # fmt: skip
    assert torch.equal(out, bias[:, None, None].expand_as(out))
    counter = _CountingKernel(T.from_band_kernel)
    monkeypatch.setattr(T, "from_band_kernel", counter)
    empty = T.FromBand(torch.randn(4, 0, dtype=torch.complex64), torch.randn(8, 10), torch.empty(0, 3, 2, 5))
    T.from_band([empty], precision="ieee")
    assert counter.launches == 0


# --------------------------------------------------------------------------------------------
# Both
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=["fp32", "fp64"])
def test_round_trip_full_band(dtype, tol):
    """Every frequency kept: the direct DFT then its inverse (real part, 1/HW) gives x back."""
    b, c, h, w = 2, 3, 3, 5
    x = _signal(b, c, h, w, "channels_last", dtype)
    kh, kw = _freqs(h, w, h * w)
    cdtype = T._COMPLEX[dtype]
    band = _nan_band(h * w, b * c, cdtype)
    T.to_band([T.ToBand(x, _to_band_op(_dft(h, w, kh, kw, -1.0), dtype), band)], precision="ieee")
    out = _out(b, c, h, w, "contiguous", dtype)
    d = _from_band_op(_dft(h, w, kh, kw, 1.0) / (h * w), dtype)
    T.from_band([T.FromBand(band, d, out)], precision="ieee")
    assert_close_rel(out, x, tol, "round trip")


@pytest.mark.parametrize("kind", ["to_band", "from_band"])
@pytest.mark.parametrize(
    "precision,dtype", [("tf32", torch.float32), ("ieee", torch.float32), ("ieee", torch.float64)]
)
def test_configs(kind, precision, dtype):
    """The default heads the menu; tiles shrink to small problems but stay dot-sized; dict
    round trip."""
    for f, m, p in [(325, 8192, 1024), (1, 1, 1), (33, 7, 3)]:
        menu = T.candidate_configs(kind, f, m, p, precision, dtype)
        assert menu and menu[0] is T.default_config(kind, f, m, p, precision, dtype)
        assert T.candidate_configs(kind, f, m, p, precision, dtype) is menu
        for cfg in menu:
            assert isinstance(cfg, triton.Config)
            dims = [cfg.kwargs[k] for k in T.KINDS[kind]]
            assert min(dims[:2]) >= 16 and dims[2] >= (16 if kind == "to_band" else 8)
            assert T.as_config(kind, T.as_dict(kind, cfg)).kwargs == cfg.kwargs
    small = T.default_config(kind, 1, 1, 1, precision, dtype)
    assert sorted(small.kwargs.values()) == ([8, 16, 16] if kind == "from_band" else [16, 16, 16])


def test_source_hash():
    assert isinstance(T.SOURCE_HASH, str) and len(T.SOURCE_HASH) == 16


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _good_to_band():
    return T.ToBand(torch.randn(2, 3, 4, 5), torch.randn(2, 7, 20), torch.empty(7, 6, dtype=torch.complex64))


def _good_from_band():
    return T.FromBand(
        torch.randn(7, 6, dtype=torch.complex64), torch.randn(14, 20), torch.empty(2, 3, 4, 5), torch.randn(3)
    )


C64 = torch.complex64
TO_BAND_ERRORS = [  # (id, field, bad value, message)
    ("signal-3d", "signal", lambda: torch.randn(6, 4, 5), r"jobs\[0\]\.signal must be a real 4-D"),
    ("signal-int", "signal", lambda: torch.ones(2, 3, 4, 5, dtype=torch.int32), r"\.signal must be"),
    ("op-p", "op", lambda: torch.randn(2, 7, 21), r"\.op must be a contiguous \[2, F, H\*W=20\]"),
    ("op-noncontig", "op", lambda: torch.randn(7, 2, 20).transpose(0, 1), r"\.op must be a contiguous"),
    ("op-half", "op", lambda: torch.randn(2, 7, 20).half(), r"jobs\[0\]\.op must be float32 or float64"),
    ("out-c128", "out", lambda: torch.empty(7, 6, dtype=torch.complex128), r"\.out must be torch\.complex64"),
    ("out-shape", "out", lambda: torch.empty(7, 5, dtype=C64), r"\.out must be \[F, B\*C\] = \[7, 6\]"),
    ("out-stride", "out", lambda: torch.empty(6, 7, dtype=C64).T, r"\.out must be unit-stride"),
]


@pytest.mark.parametrize("field,bad,match", [pytest.param(*e[1:], id=e[0]) for e in TO_BAND_ERRORS])
def test_to_band_errors(field, bad, match):
    job = _good_to_band()._replace(**{field: bad()})
    with pytest.raises(ValueError, match=match):
        T.to_band([job], precision="ieee")


def test_to_band_job_list_errors():
    good = _good_to_band()
    with pytest.raises(ValueError, match=r"jobs must be a sequence of 1 to 3"):
        T.to_band([], precision="ieee")
    with pytest.raises(ValueError, match=r"jobs must be a sequence of 1 to 3"):
        T.to_band([good] * 4, precision="ieee")
    dbl = T.ToBand(good.signal, good.op.double(), good.out.to(torch.complex128))
    with pytest.raises(ValueError, match=r"jobs\[1\]\.op is torch\.float64, jobs\[0\]\.op torch\.float32"):
        T.to_band([good, dbl], precision="ieee")
    with pytest.raises(ValueError, match=r"precision must be one of"):
        T.to_band([good], precision="tf16")
    with pytest.raises(ValueError, match=r"to_band config must have keys"):
        T.to_band([good], precision="ieee", config=dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16))
    meta = good._replace(signal=good.signal.to("meta"))
    with pytest.raises(ValueError, match=r"jobs\[0\]\.signal on meta"):
        T.to_band([meta], precision="ieee")


FROM_BAND_ERRORS = [  # (id, field, bad value, message)
    ("out-3d", "out", lambda: torch.empty(6, 4, 5), r"jobs\[0\]\.out must be a real 4-D"),
    ("band-real", "band", lambda: torch.randn(7, 6), r"\.band must be a torch\.complex64 \[F, B\*O=6\]"),
    ("band-m", "band", lambda: torch.randn(7, 5, dtype=C64), r"\.band must be a"),
    ("band-stride", "band", lambda: torch.randn(6, 7, dtype=C64).T, r"\.band must be unit-stride"),
    ("op-f", "op", lambda: torch.randn(7, 20), r"\.op must be a contiguous \[2F, Ho\*Wo\] = \[14, 20\]"),
    ("bias-len", "bias", lambda: torch.randn(4), r"\.bias must be a real \[O=3\]"),
    ("bias-device", "bias", lambda: torch.randn(3, device="meta"), r"jobs\[0\]\.bias on meta"),
]


def test_column_count_limit():
    """int32 column indices: B*C (B*O) of 2^30 or more is refused (meta tensors, no memory)."""
    meta = dict(device="meta")
    sig = torch.empty(2**15, 2**15, 1, 1, **meta)
    with pytest.raises(ValueError, match=r"jobs\[0\]\.signal has B\*C = 1073741824 >= 2\^30"):
        T.to_band([T.ToBand(sig, torch.empty(2, 1, 1, **meta), torch.empty(1, 2**30, dtype=C64, **meta))],
                  precision="ieee")  # fmt: skip
    band = torch.empty(1, 2**30, dtype=C64, **meta)
    with pytest.raises(ValueError, match=r"jobs\[0\]\.out has B\*O = 1073741824 >= 2\^30"):
        T.from_band([T.FromBand(band, torch.empty(2, 1, **meta), sig)], precision="ieee")


@pytest.mark.parametrize("field,bad,match", [pytest.param(*e[1:], id=e[0]) for e in FROM_BAND_ERRORS])
def test_from_band_errors(field, bad, match):
    job = _good_from_band()._replace(**{field: bad()})
    with pytest.raises(ValueError, match=match):
        T.from_band([job], precision="ieee")

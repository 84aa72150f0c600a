"""Complex64 GEMMs of the CPU path through the library's own C++ kernel where it is faster.

``torch.matmul`` on complex CPU tensors calls the BLAS torch was built with (MKL in the official
wheels), and MKL takes AVX2 code paths on AMD CPUs: on the 2-core AMD EPYC (AVX-512) of
bench/NOTES.md a band contraction ``[325, 32, 64] @ [325, 64, 64]`` ran at about 95 real GMAC/s
through ``torch.matmul`` and about 215 through ``csrc/cgemm.cpp``, which is compiled on the
machine that runs it (``-march=native``, GCC vector extensions: AVX-512 where the CPU has it).

The kernel is built on first use with ``torch.utils.cpp_extension`` (a C++ compiler and ninja;
about 20 s once, then loaded from torch's extension cache, ``TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``). The build is keyed by the source's content, this CPU's flags and
the torch version, and compiles a copy of the source kept in its build directory: every checkout
of the same source (a second clone, the base commit ``bench.ab_versions`` extracts, the tests'
temporary copies) loads the one build instead of compiling again. Where the build fails, or a one-time
probe finds it no faster than ``torch.matmul`` on this machine, every call stays on torch.
``BLTRITON_CPU_CGEMM=kernel|torch`` forces a provider (``kernel`` raises if the build fails).

Only complex64 CPU tensors that autograd does not track, outside fake-tensor modes and functorch
transforms, come to the kernel; everything else (complex128 for gradcheck, CUDA) goes to torch.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import threading
import warnings
from pathlib import Path

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode

from bltriton import _env
from bltriton._gemm import best_times

__all__ = [
    "available",
    "fuses_filter",
    "matmul",
    "matmul_fold",
    "matmul_re",
    "matmul_taps",
    "provider",
    "separable_forward",
    "separable_inverse",
    "takes",
    "takes_separable",
]

_SOURCE = Path(__file__).parent / "csrc" / "cgemm.cpp"
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "module": the loaded extension or None; "choice": provider
_functorch_active = torch._C._are_functorch_transforms_active


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def build_directory(tag: str | None = None) -> Path:
    """The folder of the kernel's build for this source, CPU and torch (created if missing)."""
    from torch.utils import cpp_extension

    name = f"bltriton_cgemm_{tag or _tag()}"
    try:  # torch's own choice (TORCH_EXTENSIONS_DIR, else its cache with a python/CUDA folder)
        return Path(cpp_extension._get_build_directory(name, False))
    except AttributeError:  # a torch without the helper
        folder = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()) / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _tag() -> str:
    # -march=native ties the binary to this CPU: its flags are part of the cached module's name.
    return hashlib.sha256(
        _SOURCE.read_bytes() + _cpu_flags().encode() + torch.__version__.encode()
    ).hexdigest()[:12]


def _source_in(folder: Path) -> Path:
    """A copy of the source in the build folder, written atomically where missing or different.
    ninja rebuilds whenever a compile command changes, and the command names the source's path:
    compiling each checkout's own file made two checkouts of the same source rebuild in turn
    (about 20 s each time, a minute on a loaded 2-core machine)."""
    text = _SOURCE.read_bytes()
    copy = folder / _SOURCE.name
    if not copy.is_file() or copy.read_bytes() != text:
        tmp = folder / f".{_SOURCE.name}.{os.getpid()}.tmp"
        tmp.write_bytes(text)
        os.replace(tmp, copy)
    return copy


def _build():
    """The compiled extension module (raises where it cannot be built)."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:  # the ninja wheel's binary, where its scripts dir is off PATH
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass  # cpp_extension then says that ninja is missing
    tag = _tag()
    folder = build_directory(tag)
    return cpp_extension.load(
        name=f"bltriton_cgemm_{tag}",
        sources=[str(_source_in(folder))],
        # -fopenmp: at::parallel_for is a header-inlined OpenMP region; without it, one thread.
        extra_cflags=["-O3", "-march=native", "-fopenmp"],
        build_directory=str(folder),
        verbose=False,
    )


def _module(strict: bool):
    if "module" not in _STATE:
        try:
            _STATE["module"] = _build()
        except Exception as exc:  # no compiler, no ninja, a read-only cache
            _STATE["module"] = None
            _STATE["error"] = f"{type(exc).__name__}: {exc}"
            if not strict:
                warnings.warn(
                    "bltriton: the CPU complex-GEMM kernel could not be built; complex products "
                    f"stay on torch.matmul ({_STATE['error'].splitlines()[0][:200]})",
                    RuntimeWarning,
                    stacklevel=3,
                )
    if _STATE["module"] is None and strict:
        raise RuntimeError(f"BLTRITON_CPU_CGEMM=kernel, but the kernel could not be built: {_STATE['error']}")
    return _STATE["module"]


def _kernel(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, accumulate: bool) -> torch.Tensor:
    a3, b3, o3 = (t if t.dim() == 3 else t.unsqueeze(0) for t in (a, b, out))
    _STATE["module"].cgemm(a3, b3, o3, accumulate)
    return out


def _probe() -> str:
    """Check the kernel against a float64 product, then time it against ``torch.matmul`` on a
    contraction-like shape (``[64, 32, 64] @ [64, 64, 64]``, two warm-up calls each, 9
    interleaved rounds) and keep it if its best time is at least 1.25x faster."""
    if _module(strict=False) is None:
        return "torch"
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 7, 13, dtype=torch.complex64, generator=g)
    b = torch.randn(3, 19, 13, dtype=torch.complex64, generator=g).transpose(1, 2)
    ref = torch.matmul(a.to(torch.complex128), b.to(torch.complex128))
    got = _kernel(a, b, torch.empty(3, 7, 19, dtype=torch.complex64), False)
    if not torch.allclose(got.to(torch.complex128), ref, rtol=1e-4, atol=1e-4):
        warnings.warn(
            "bltriton: the CPU complex-GEMM kernel failed its self-check; using torch.matmul",
            RuntimeWarning,
            stacklevel=3,
        )
        return "torch"
    a = torch.randn(64, 32, 64, dtype=torch.complex64, generator=g)
    b = torch.randn(64, 64, 64, dtype=torch.complex64, generator=g)
    out = torch.empty(64, 32, 64, dtype=torch.complex64)
    best = best_times(
        {"kernel": lambda: _kernel(a, b, out, False), "torch": lambda: torch.matmul(a, b, out=out)}
    )
    return "kernel" if best["kernel"] * 1.25 <= best["torch"] else "torch"


def provider() -> str:
    """The provider of complex64 CPU GEMMs in this process: ``"kernel"`` or ``"torch"``
    (``BLTRITON_CPU_CGEMM``, or the probe's choice under ``auto``; the first call builds the
    kernel)."""
    if torch.compiler.is_compiling():
        return _provider_seen_by_tracer()
    forced = _env.cpu_cgemm()
    if forced == "torch":
        return "torch"
    if forced == "kernel":
        with _LOCK:
            _module(strict=True)
        return "kernel"
    if "choice" not in _STATE:
        if _current_dispatch_mode() is not None:
            return "torch"  # no build or timing under fake tensors
        with _LOCK:
            if "choice" not in _STATE:
                _STATE["choice"] = _probe()
    return _STATE["choice"]


@torch.compiler.assume_constant_result
def _provider_seen_by_tracer() -> str:
    """:func:`provider` under dynamo: the forced provider, else the probe's choice if made, else
    ``"torch"``; no build or timing. Run as a constant, so the graph holds no guard on the
    probe's state: the eager calls that probe after a first compile recompiled the graph (and
    dynamo cannot trace the dispatch-mode query of the eager path: a graph break)."""
    forced = _env.cpu_cgemm()
    if forced in ("torch", "kernel"):
        return forced
    return str(_STATE.get("choice", "torch"))


def available() -> bool:
    """Whether the kernel is built and loaded in this process (builds it on the first call)."""
    with _LOCK:
        return _module(strict=False) is not None


_C64 = torch.complex64


def _eligible(*ts: torch.Tensor) -> bool:
    """``ts`` = ``(a, b[, out])``: complex64 CPU tensors, ``b`` also float32. (Plain loops: this
    runs a few times per layer call, where generator expressions cost microseconds.)"""
    if ts[0].dtype != _C64 or ts[1].dtype not in (_C64, torch.float32):
        return False
    grad = torch.is_grad_enabled()
    for i, t in enumerate(ts):
        if (
            type(t) is not torch.Tensor
            or t.device.type != "cpu"
            or (i > 1 and t.dtype != _C64)
            or (grad and t.requires_grad)
            or t.is_conj()
            or t.is_neg()
        ):
            return False
    return _current_dispatch_mode() is None and not _functorch_active()


def takes(*tensors: torch.Tensor) -> bool:
    """Whether :func:`matmul` on these operands (and ``out``) runs the kernel: for callers that
    lay operands out differently for it (strided views it reads in place, where ``torch.matmul``
    would first copy them)."""
    return _eligible(*tensors) and provider() == "kernel"


# Filters of at most this many taps, or of at most this many weights, go to the fused
# contractions (matmul_taps, matmul_fold), which form and fold the filter band inside the kernel
# instead of writing it out. Every 3x3 filter: once the kernel read the filter as it lies (no
# tap-major copy per call) and formed the band four rows at a time, fusing the 128-512-channel
# 3x3 layers too took ResNet-18 r=0.5 training from 0.89 to 0.77-0.79x nn at b32, 1.30 to 1.02x
# at b8 and 0.70 to 0.66x at b128 (in-process, interleaved; bench/NOTES.md). With the tap-major
# copy the limit had been 8 taps (those layers then lost: 0.96 -> 1.00x at b32).
# Larger filters lose when fused (5x5 and 7x7 at 32x32 and 16x16, 1-D k15: 0.95-1.21x the
# unfused time): forming the band costs 2*taps multiply-adds per element for every task.
FUSED_MAX_TAPS = 9
FUSED_MAX_FILTER = 1 << 16


def fuses_filter(taps: int, weights: int) -> bool:
    """Whether a filter of ``taps`` taps and ``weights`` weights in all takes the fused
    contractions (where the kernel runs: :func:`takes_taps`, :func:`takes_fold`)."""
    return taps <= FUSED_MAX_TAPS or weights <= FUSED_MAX_FILTER


def takes_taps(a: torch.Tensor, e: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether :func:`matmul_taps` runs the kernel on these operands (else it builds the filter
    band ``e @ w`` whole and multiplies)."""
    return w.dtype == torch.float32 and _takes_fused(a, w, e)


def matmul_taps(
    a: torch.Tensor, e: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``out[f] = a[f] @ Σ_t e[f, t]·w[t]`` for ``a`` ``[F, M, K]`` complex64, ``e`` ``[F, T]``
    complex64 and ``w`` ``[T, K, N]`` float32: a contraction against the band of a real filter
    (``e`` its DFT phases at the ``T`` taps, ``w`` the filter tap-major, any strides: a view of
    the filter as it lies is read in place). The kernel forms each frequency's band panel by
    panel while packing, so the band ``[F, K, N]`` is never written out; elsewhere the band is
    built whole (``e @ w``) and multiplied. ``out``: as in :func:`matmul` (unit stride along its
    last dimension)."""
    shape = (a.shape[0], a.shape[1], w.shape[2])
    if (out is None or out.stride(-1) == 1) and takes_taps(a, e, w):
        if out is None:
            out = a.new_empty(shape)
        _STATE["module"].cgemm_taps(a, e, w, out, False)
        return out
    band = (e @ w.reshape(w.shape[0], -1).to(e.dtype)).view(shape[0], w.shape[1], shape[2])
    return torch.matmul(a, band, out=out)


def takes_fold(a: torch.Tensor, b: torch.Tensor, e: torch.Tensor) -> bool:
    """Whether :func:`matmul_fold` runs the kernel on these operands."""
    return b.dtype == torch.complex64 and _takes_fused(a, b, e)


def _takes_fused(a: torch.Tensor, b: torch.Tensor, e: torch.Tensor) -> bool:
    """The fused products' shared conditions: 3-D ``a`` and ``b``, all three eligible CPU
    operands (``e`` complex64), the kernel chosen."""
    return a.dim() == 3 and b.dim() == 3 and _eligible(a, b, e) and provider() == "kernel"


def matmul_fold(
    a: torch.Tensor, b: torch.Tensor, e: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``out[t] = Re Σ_f e[f, t]·(a[f] @ b[f])``, ``[T, M, N]`` float32, for ``a`` ``[F, M, K]``,
    ``b`` ``[F, K, N]`` and ``e`` ``[F, T]`` complex64: a band contraction folded into ``T`` real
    outputs as it goes (the filter gradient's taps, ``e`` the adjoint's phases), its band
    ``[F, M, N]`` never written out by the kernel; elsewhere the band is built whole and
    folded. ``out``: a float32 tensor of the result's shape to write into, any strides (e.g. a
    view of the filter gradient as it lies)."""
    shape = (e.shape[1], a.shape[1], b.shape[2])
    if takes_fold(a, b, e) and (out is None or (out.dtype == torch.float32 and out.device.type == "cpu")):
        b = b if b.stride(-1) == 1 else b.contiguous()
        out = torch.empty(shape, dtype=torch.float32) if out is None else out
        _STATE["module"].cgemm_fold(a, b, e, out)
        return out
    band = torch.matmul(a, b)
    res = (e.T @ band.reshape(band.shape[0], -1)).real.reshape(shape)
    return res if out is None else out.copy_(res)


def matmul(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None, accumulate: bool = False
) -> torch.Tensor:
    """``a @ b`` for 2-D ``[M, K] @ [K, N]`` or batched 3-D ``[F, M, K] @ [F, K, N]`` complex64
    operands (``b`` may be float32: a complex result from a real operand), any strides, into
    ``out`` when given (the result's shape and dtype; the kernel takes any ``out`` with unit
    stride along its last dimension, so a caller can write straight into a strided view) or a
    fresh tensor; with ``accumulate`` the product is added to ``out`` (``out.addmm_`` /
    ``baddbmm_``)."""
    if accumulate and out is None:
        raise ValueError("matmul: accumulate=True needs out")
    if (
        a.dim() == b.dim()
        and a.dim() in (2, 3)
        and (out is None or out.stride(-1) == 1)
        and _eligible(a, b, *(() if out is None else (out,)))
        and provider() == "kernel"
    ):
        if out is None:
            out = a.new_empty((*a.shape[:-1], b.shape[-1]))
        return _kernel(a, b, out, accumulate)
    if a.is_complex() and not b.is_complex():
        b = b.to(a.dtype)
    if accumulate:
        return out.addmm_(a, b) if a.dim() == 2 else out.baddbmm_(a, b)
    return torch.matmul(a, b, out=out)


def matmul_re(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``Re(a @ b)`` for 2-D ``[M, K] @ [K, N]`` or batched 3-D complex64 operands, any strides,
    float32, into ``out`` when given (the result's shape; the kernel takes any ``out`` with unit
    stride along its last dimension) or a fresh tensor. The kernel computes only the real part
    (two multiply-adds per output where a complex product takes four); elsewhere the complex
    product is formed and its real part kept."""
    shape = (*a.shape[:-1], b.shape[-1])
    if (
        a.dim() == b.dim()
        and a.dim() in (2, 3)
        and b.dtype == torch.complex64
        and (out is None or (out.dtype == torch.float32 and out.stride(-1) == 1))
        and _eligible(a, b)
        and (out is None or (type(out) is torch.Tensor and out.device.type == "cpu"))
        and provider() == "kernel"
    ):
        if out is None:
            out = torch.empty(shape, dtype=torch.float32)
        a3, b3, o3 = (t if t.dim() == 3 else t.unsqueeze(0) for t in (a, b, out))
        _STATE["module"].cgemm_re(a3, b3, o3, False)
        return out
    res = torch.matmul(a, b).real
    return res.contiguous() if out is None else out.copy_(res)


# The separable 2-D transforms with both stages per block of maps (sep2_fwd / sep2_inv in the
# kernel): at most this many kept columns (4 vectors per intermediate row) and output columns.
SEPARABLE_MAX_COLS = 32
SEPARABLE_MAX_WIDTH = 64


def takes_separable(a: torch.Tensor, b: torch.Tensor, cols: int, width: int) -> bool:
    """Whether :func:`separable_forward` / :func:`separable_inverse` run on these operands (``a``
    complex64, ``b`` complex64 or float32, as :func:`matmul`'s: the row operand and the real maps,
    or the band and the column operand) with ``cols`` kept columns and maps ``width`` wide."""
    return (
        cols <= SEPARABLE_MAX_COLS
        and width <= SEPARABLE_MAX_WIDTH
        and _eligible(a, b)
        and provider() == "kernel"
    )


def separable_forward(
    x: torch.Tensor, ecol: torch.Tensor, erow: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """``out[r, c, m] = Σ_h erow[r, h] Σ_w x[m, h, w]·ecol[w, c]`` for real maps ``x`` ``[M, H,
    W]`` (unit stride along ``W``), ``ecol`` ``[W, 2·cols]`` float32 (re/im interleaved columns),
    ``erow`` ``[R, H]`` complex64, into ``out`` ``[R, cols, M]`` complex64 (unit stride along
    ``M``): a 2-D transform to a frequency-major band, both stages per block of maps in the
    kernel, the intermediate never written to memory. Callers check :func:`takes_separable`."""
    _STATE["module"].sep2_fwd(x, ecol, erow, out)
    return out


def separable_inverse(
    band: torch.Tensor, drow: torch.Tensor, dcol: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """``out[m, h, w] = Σ_c Re(S[h, c])·dcol[2c, w] + Im(S[h, c])·dcol[2c + 1, w]`` with ``S[h, c] =
    Σ_r drow[h, r]·band[r, c, m]``, for ``band`` ``[R, cols, M]`` complex64 (unit stride along
    ``M``), ``drow`` ``[H, R]`` complex64, ``dcol`` ``[2·cols, W]`` float32, into ``out`` ``[M, H,
    W]`` float32 (unit stride along ``W``): the inverse of :func:`separable_forward`'s layout.
    Callers check :func:`takes_separable`."""
    _STATE["module"].sep2_inv(band, drow, dcol, out)
    return out

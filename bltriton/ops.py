"""Backend dispatch and the torch path: band-pruned transforms and the three band contractions.

Band tensors are *frequency-major* and compact: ``[F, B, C]`` for inputs/gradients and
``[F, O, C // groups]`` for filters, ``F = band.num_kept`` numbered as in :mod:`bltriton.spectral`.
Only these are saved for backward. The transforms (DFT GEMMs at the kept frequencies, or FFTs
for long signals) are planned and cached per shape in :mod:`bltriton.transforms`, which also
chooses between them per device class.

*Conjugate domain.* The filter band is kept as ``Wc = conj(W)`` and the output-gradient band as
``Gc = conj(G)`` (the transforms produce them directly by flipping the DFT phase: no extra pass),
so the three contractions of docs/design.md §3 carry no conjugation at all:

* ``fwd``: ``Y[f, b, o]   = sum_c X[f, b, c] · Wc[f, o, c]``   (= ``sum_c X · conj(W)``)
* ``dx``:  ``dXc[f, b, c] = sum_o Gc[f, b, o] · Wc[f, o, c]``  (= ``conj(sum_o G · W)``)
* ``dw``:  ``dW[f, o, c]  = sum_b Gc[f, b, o] · X[f, b, c]``   (= ``sum_b conj(G) · X``)

each within a group (``C = groups·Cg``, ``O = groups·Og``); ``dXc`` is inverted with
``conj_input=True``. On the CPU this matters: a lazily conjugated ``bmm`` operand is cloned once per
batch element, and a physical conjugate of the filter band of the 1D k63 layer (35 MB) took as
long as the contraction itself (16.8 ms vs 16.1 ms).
"""

from __future__ import annotations

import math
import sys
import weakref
from functools import lru_cache

import torch

from bltriton import _cgemm, _env, _workspace
from bltriton.spectral import Band
from bltriton.transforms import complex_dtype, filter_plan, signal_plan

__all__ = [
    "BACKENDS",
    "FilterBandCache",
    "forward_transform",
    "grad_transform",
    "inverse_transform",
    "mac",
    "resolve_backend",
    "weight_from_band",
    "weight_transform",
]

BACKENDS = _env.BACKENDS


# --------------------------------------------------------------------------------------------
# Backend choice
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401

        from bltriton.kernels import band_mac  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Turn ``None``/``"auto"``/``"torch"``/``"triton"`` into the backend that will run.

    ``None`` takes ``BLTRITON_BACKEND`` (default ``"auto"``). ``"auto"`` is triton on CUDA when it
    imports, torch otherwise. ``"triton"`` on a CPU tensor needs ``TRITON_INTERPRET=1``.
    """
    choice = _env.backend() if backend is None else backend
    if choice not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None; got {backend!r}")
    if choice == "auto":
        return "triton" if device.type == "cuda" and _triton_importable() else "torch"
    if choice == "triton":
        if device.type != "cuda" and not _env.triton_interpret():
            raise ValueError(
                f"backend='triton' needs a CUDA tensor (got device {device}); on the CPU set "
                "TRITON_INTERPRET=1 before importing triton, or use backend='torch'"
            )
        if device.type != "cuda" and _kernels_imported_without_interpreter():
            raise ValueError(
                f"backend='triton' on a {device.type} tensor runs the kernels on Triton's CPU "
                "interpreter, but TRITON_INTERPRET=1 was set after bltriton's kernels were imported "
                "(Triton reads it when a kernel is defined, at that import): set it before the "
                "first import of bltriton.kernels or triton, e.g. in the shell "
                "(TRITON_INTERPRET=1 python ...), or use backend='torch'"
            )
        if not _triton_importable():
            raise RuntimeError("backend='triton' was asked for but triton does not import here")
    return choice


def _kernels_imported_without_interpreter() -> bool:
    """Whether a module of bltriton's kernels holds a ``@triton.jit`` kernel made for a GPU
    (a ``JITFunction``; under ``TRITON_INTERPRET=1`` Triton makes ``InterpretedFunction`` objects,
    which are no subclass of it)."""
    try:
        from triton.runtime.jit import JITFunction
    except Exception:
        return False
    return any(
        name.startswith("bltriton.kernels.")
        and module is not None
        and any(type(v) is JITFunction for v in vars(module).values())
        for name, module in list(sys.modules.items())
    )


# --------------------------------------------------------------------------------------------
# Transforms (shared by both backends: GEMMs and FFTs planned in bltriton.transforms)
# --------------------------------------------------------------------------------------------


def forward_transform(
    x: torch.Tensor,
    band: Band,
    stride: tuple[int, ...] | None = None,
    conj: bool = False,
    offset: tuple[int, ...] | None = None,
    scratch: str | None = None,
) -> torch.Tensor:
    """Band of ``rfftn(up(x), s=band.n)``, frequency-major, where ``up`` zero-upsamples by
    ``stride`` (1 for the input; the output stride for the gradient of a strided layer) and
    shifts by ``offset`` (the leading zero padding of the input; the trailing zeros are implied).

    Args:
        x: ``[B, C, *L]`` real with ``offset + L·stride <= band.n`` per axis.
        conj: return the conjugate band (same cost).
        scratch: write the band into this thread's scratch buffer of that name
            (:mod:`bltriton._workspace`): for a band consumed before the caller returns.

    Returns:
        ``[F, B, C]`` complex, contiguous: a fresh tensor (safe to save for backward) unless
        ``scratch``.
    """
    stride = tuple(stride or (1,) * band.ndim)
    plan = signal_plan(band, tuple(x.shape[2:]), stride, x.device, x.dtype, offset)
    out = None
    if scratch is not None:
        out = _workspace.scratch(scratch, (band.num_kept, *x.shape[:2]), complex_dtype(x.dtype), x.device)
    return plan.forward(x, conj, out=out)


def grad_transform(
    dy: torch.Tensor,
    band: Band,
    full_len: tuple[int, ...],
    stride: tuple[int, ...],
    scratch: str | None = None,
) -> torch.Tensor:
    """``Gc``: the *conjugate* band of the spectrum of the output gradient, zero-upsampled by
    the stride.

    Args:
        dy: ``[B, O, *out]`` with ``out = ceil(full_len / stride)``.
        full_len: stride-1 output length per axis (``Lp - ke + 1``).
        scratch: as in :func:`forward_transform`.

    Returns:
        ``[F, B, O]`` complex.
    """
    expected = tuple(-(-f // s) for f, s in zip(full_len, stride))
    if tuple(dy.shape[2:]) != expected:
        raise ValueError(f"grad_transform: dy has spatial shape {tuple(dy.shape[2:])}, expected {expected}")
    return forward_transform(dy, band, stride, conj=True, scratch=scratch)


def inverse_transform(
    yb: torch.Tensor,
    band: Band,
    crop: tuple[int, ...],
    stride: tuple[int, ...],
    conj_input: bool = False,
    offset: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Zero-filled band -> ``irfftn(·, s=band.n)`` at positions ``offset + t·stride``,
    ``t < ceil(crop / stride)``: cropped (after skipping ``offset``) and subsampled, evaluated only
    at the surviving positions.

    Args:
        yb: ``[F, B, O]`` complex band.
        crop: length per axis kept from the start of the circular result (before ``stride``).
        conj_input: ``yb`` holds the conjugate of the band to invert (the ``dx`` contraction's
            output); conjugated DFT operands absorb it.
        offset: first position per axis (the leading zero padding, for the input gradient).

    Returns:
        ``[B, O, *out]`` real and contiguous, ``out = ceil(crop / stride)``.
    """
    out = tuple(-(-c // s) for c, s in zip(crop, stride))
    return signal_plan(band, out, tuple(stride), yb.device, yb.dtype, offset).inverse(yb, conj_input)


def weight_transform(weight: torch.Tensor, band: Band, dilation: tuple[int, ...]) -> torch.Tensor:
    """``Wc``: the *conjugate* band of ``rfftn(dilated weight, s=band.n)``, by direct DFT,
    frequency-major.

    Args:
        weight: ``[O, Cg, *k]`` real.

    Returns:
        ``[F, O, Cg]`` complex, contiguous.
    """
    plan = filter_plan(band, tuple(weight.shape[2:]), tuple(dilation), weight.device, weight.dtype)
    return plan.forward(weight)


def weight_from_band(
    dwb: torch.Tensor, band: Band, kernel: tuple[int, ...], dilation: tuple[int, ...]
) -> torch.Tensor:
    """Adjoint of :func:`weight_transform` as ``irfftn`` sees it: ``irfftn(zero-filled band)``
    cropped to the dilated taps and un-dilated, evaluated directly at the taps.

    Args:
        dwb: ``[F, O, Cg]`` complex.

    Returns:
        ``[O, Cg, *kernel]`` real.
    """
    return filter_plan(band, tuple(kernel), tuple(dilation), dwb.device, dwb.dtype).adjoint(dwb)


# Frequency chunks (torch path): a wide layer's filter band holds F·O·Cg complex values (10 MiB
# for the FCN's 128->256 k5 layer at r=0.5, 16x its weight), written by the filter transform and
# read by the contraction. Built and consumed a few frequencies at a time it stays in the core's
# cache: that layer's forward (filter transform + contraction, B16, 2-core CPU) took 7.4 ms whole
# and 1.9 ms in chunks of 8 frequencies (2 MiB). Each chunk also reads the whole weight (taps
# reals per filter pair) and, in dW, writes a whole filter-sized partial sum, so a chunk spans at
# least 2·taps frequencies (one frequency per chunk made the 512->512 4x4 layer 3.7x slower).
# Band bytes per chunk by device type; devices not listed (CUDA: one large GEMM fills the GPU
# better) take the whole band at once.
CHUNK_BYTES: dict[str, int] = {"cpu": 2 << 20}
# dW's band folded into the taps inside the kernel (_cgemm.matmul_fold) where the filter fuses;
# False writes it in chunks and folds them (the FCN b16 step, in-process: 1.04-1.15x -> 0.98-1.00x
# nn.Conv1d fused; b64 0.87 -> 0.90x, within the spread).
FUSED_FOLD = True
CHUNK_MIN_TAPS = 2  # a chunk spans at least this many times the filter's taps in frequencies


# A filter transform over at most this many taps is memory-bound: its GEMM goes through torch.mm
# into the kept scratch (oneDNN's linear has no ``out=``) instead of oneDNN into fresh memory. The
# FCN's k5/k3 layers (b16 train step 23.6-25.8 -> 22.1-22.3 ms); with 9 taps (3x3) MKL's slower
# arithmetic costs more than the fresh memory (ResNet-18 b32 step 455.9 -> 477.0 ms; again no
# gain with the transforms' scratch, bench/NOTES.md "Page faults, scratch").
SCRATCH_GEMM_MAX_TAPS = 8


def clear_workspace() -> None:
    """Release this thread's kept scratch buffers (:mod:`bltriton._workspace`)."""
    _workspace.clear()


def _chunks(
    f: int, bytes_per_freq: int, taps: int, device: torch.device, backend: str
) -> list[tuple[int, int]]:
    limit = CHUNK_BYTES.get(device.type) if backend == "torch" else None
    n = f if limit is None else max(1, CHUNK_MIN_TAPS * taps, limit // max(1, bytes_per_freq))
    return [(s, min(f, s + n)) for s in range(0, f, n)] or [(0, 0)]


def filter_mac(
    mode: str,
    a: torch.Tensor,
    weight: torch.Tensor,
    band: Band,
    dilation: tuple[int, ...],
    groups: int,
    backend: str,
    precision: str | None = None,
    scratch: str | None = None,
) -> torch.Tensor:
    """``mac(mode, a, weight_transform(weight))`` for ``mode`` ``"fwd"`` or ``"dx"``, the filter
    band built chunk by chunk (:data:`CHUNK_BYTES`) and never held whole. ``scratch``: the result
    goes into this thread's scratch buffer of that name (as in :func:`forward_transform`)."""
    f = a.shape[0]
    plan = filter_plan(band, tuple(weight.shape[2:]), tuple(dilation), weight.device, weight.dtype)
    taps = math.prod(weight.shape[2:])
    if backend == "torch" and groups == 1 and _cgemm.fuses_filter(taps, weight.numel()):
        # The CPU kernel forms the band panel by panel inside the contraction (never written).
        o, cg = weight.shape[:2]
        taps_major = (
            weight.reshape(o, cg, taps).permute(2, 1, 0)
            if mode == "fwd"
            else weight.reshape(o, cg, taps).permute(2, 0, 1)
        )
        e = plan.complex_rows(0, f)
        if _cgemm.takes_taps(a, e, taps_major):
            width = o if mode == "fwd" else cg
            out = (
                None
                if scratch is None
                else _workspace.scratch(scratch, (f, a.shape[1], width), a.dtype, a.device)
            )
            # The kernel reads the filter as it lies (a panel of it gathered at a time): no
            # tap-major copy (0.05-0.14 ms per call for the FCN's filters).
            return _cgemm.matmul_taps(a, e, taps_major, out=out)
    chunks = _chunks(f, weight.shape[0] * weight.shape[1] * a.element_size(), taps, a.device, backend)
    width = weight.shape[0] if mode == "fwd" else weight.shape[1] * groups
    shape = (f, a.shape[1], width)
    out = None if scratch is None else _workspace.scratch(scratch, shape, a.dtype, a.device)
    if len(chunks) == 1:
        wb = _filter_chunk(plan, weight, taps, 0, f, a, backend)
        return mac(mode, a, wb, groups, backend, precision, out=out)
    out = a.new_empty(shape) if out is None else out
    for s, e in chunks:
        mac(
            mode,
            a[s:e],
            _filter_chunk(plan, weight, taps, s, e, a, backend),
            groups,
            backend,
            precision,
            out=out[s:e],
        )
    return out


def _filter_chunk(
    plan, weight: torch.Tensor, taps: int, start: int, stop: int, like: torch.Tensor, backend: str
):
    """``Wc[start:stop]`` for a contraction that consumes it at once: on the torch backend it is
    written into this thread's scratch (:func:`bltriton._workspace.scratch`)."""
    if backend != "torch":
        return plan.forward(weight, start, stop)
    o, cg = weight.shape[:2]
    buf = _workspace.scratch("filter_band", (stop - start, o, cg), like.dtype, like.device)
    work = None if taps > SCRATCH_GEMM_MAX_TAPS else "filter_planes"
    return plan.forward(weight, start, stop, out=buf, work=work)


def weight_grad(
    xb: torch.Tensor,
    gcb: torch.Tensor,
    band: Band,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    backend: str,
    precision: str | None = None,
) -> torch.Tensor:
    """``weight_from_band(mac("dw", xb, gcb))``, the band of ``dW`` computed and folded into the
    filter gradient chunk by chunk (:data:`CHUNK_BYTES`)."""
    f, o = xb.shape[0], gcb.shape[2]
    cg = xb.shape[2] // groups
    plan = filter_plan(band, tuple(kernel), tuple(dilation), xb.device, xb.dtype)
    taps = math.prod(kernel)
    if FUSED_FOLD and backend == "torch" and groups == 1 and _cgemm.fuses_filter(taps, o * cg * taps):
        a = gcb.transpose(1, 2)
        if _cgemm.takes_fold(a, xb, plan.adj):  # folded into the taps inside the kernel
            dw = torch.empty((o, cg, *kernel), dtype=torch.float32, device=xb.device)
            _cgemm.matmul_fold(a, xb, plan.adj, out=dw.view(o, cg, taps).permute(2, 0, 1))  # as it lies
            return dw
    chunks = _chunks(f, o * cg * xb.element_size(), math.prod(kernel), xb.device, backend)
    scratch = backend == "torch"  # the dW band and the sum are consumed here: this thread's scratch
    acc = None  # Σ over chunks of dW[chunk]ᵀ · adj[chunk] (FilterPlan.adjoint_sum)
    for s, e in chunks:
        buf = _workspace.scratch("dw_band", (e - s, o, cg), xb.dtype, xb.device) if scratch else None
        dwb = mac("dw", xb[s:e], gcb[s:e], groups, backend, precision, out=buf)
        if acc is None:
            out = (
                _workspace.scratch("dw_taps", plan.sum_shape(o * cg), xb.dtype, xb.device)
                if scratch
                else None
            )
            acc = plan.adjoint_sum(dwb, s, out=out)
        else:
            plan.adjoint_sum(dwb, s, acc)
    return plan.adjoint_result(acc, o, cg)  # a fresh tensor: the scratch stays here


class FilterBandCache:
    """One layer's conjugate filter band for inference, reused while nothing it depends on changed.

    The band depends only on the weight, so a layer in ``eval()`` under ``no_grad`` or
    ``inference_mode`` need not transform its filter on every call. The entry is keyed by the
    weight's identity (a weak reference, so the cache keeps no parameter alive), its storage
    address and version counter (an optimizer step, ``load_state_dict`` or any in-place write
    bumps it; ``.to()`` or ``.data =`` moves the storage), dtype, device, the band (rate and input
    size) and the dilation. One entry: a layer sees one input size at a time in practice.
    """

    def __init__(self) -> None:
        self._ref: weakref.ref | None = None
        self._key: tuple | None = None
        self._band: torch.Tensor | None = None
        self.misses = 0  # transforms computed (for tests and benchmarks)

    def get(self, weight: torch.Tensor, band: Band, dilation: tuple[int, ...], dtype: torch.dtype):
        """The conjugate filter band ``[F, O, Cg]`` of ``weight`` cast to the real ``dtype``."""
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, band, tuple(dilation), dtype)
        if self._key == key and self._ref is not None and self._ref() is weight:
            return self._band
        self.misses += 1
        wb = weight_transform(weight.to(dtype), band, dilation)
        if wb.device.type == "cpu":
            # Laid out [F, Cg, O] (a transposed view is returned): the forward contraction on the
            # CPU reads the band transposed, and packs it row by row from this layout instead of
            # gathering each column (ResNet-18 b32, 64-channel 32x32 layer: 2.2 -> 1.5 ms).
            wb = wb.transpose(1, 2).contiguous().transpose(1, 2)
        self._band = wb
        self._ref, self._key = weakref.ref(weight), key
        return self._band

    def clear(self) -> None:
        self._ref = self._key = self._band = None

    def __deepcopy__(self, memo) -> FilterBandCache:
        return FilterBandCache()  # a copied layer has its own weight: start empty


# --------------------------------------------------------------------------------------------
# Contractions: torch path
# --------------------------------------------------------------------------------------------


def _torch_mac_fwd(xb: torch.Tensor, wcb: torch.Tensor, groups: int, out=None) -> torch.Tensor:
    """``Y[f, b, o] = sum_c X[f, b, c] · Wc[f, o, c]``."""
    f, b, _ = xb.shape
    o, cg = wcb.shape[1], wcb.shape[2]
    if groups == 1:
        return _cgemm.matmul(xb, wcb.transpose(1, 2), out=out)
    og = o // groups
    if cg == 1:  # depthwise-style: an element-wise product per channel
        y = xb.reshape(f, b, groups, 1) * wcb.reshape(f, 1, groups, og)
        return y.reshape(f, b, o)
    xg = xb.reshape(f, b, groups, cg).transpose(1, 2)  # [F, g, B, Cg]
    wg = wcb.reshape(f, groups, og, cg).transpose(-1, -2)  # [F, g, Cg, Og]
    return torch.matmul(xg, wg).transpose(1, 2).reshape(f, b, o)


def _torch_mac_dx(gcb: torch.Tensor, wcb: torch.Tensor, groups: int, out=None) -> torch.Tensor:
    """``dXc[f, b, c] = sum_o Gc[f, b, o] · Wc[f, o, c]``."""
    f, b, o = gcb.shape
    cg = wcb.shape[2]
    if groups == 1:
        return _cgemm.matmul(gcb, wcb, out=out)
    og = o // groups
    if cg == 1:
        return (gcb.reshape(f, b, groups, og) * wcb.reshape(f, 1, groups, og)).sum(-1)
    gg = gcb.reshape(f, b, groups, og).transpose(1, 2)  # [F, g, B, Og]
    wg = wcb.reshape(f, groups, og, cg)  # [F, g, Og, Cg]
    return torch.matmul(gg, wg).transpose(1, 2).reshape(f, b, groups * cg)


def _torch_mac_dw(xb: torch.Tensor, gcb: torch.Tensor, groups: int, out=None) -> torch.Tensor:
    """``dW[f, o, c] = sum_b Gc[f, b, o] · X[f, b, c]``."""
    f, b, c = xb.shape
    o = gcb.shape[2]
    cg, og = c // groups, o // groups
    if groups == 1:
        return _cgemm.matmul(gcb.transpose(1, 2), xb, out=out)
    if cg == 1:
        dw = (gcb.reshape(f, b, groups, og) * xb.reshape(f, b, groups, 1)).sum(1)
        return dw.reshape(f, o, 1)
    gg = gcb.reshape(f, b, groups, og).permute(0, 2, 3, 1)  # [F, g, Og, B]
    xg = xb.reshape(f, b, groups, cg).transpose(1, 2)  # [F, g, B, Cg]
    return torch.matmul(gg, xg).reshape(f, o, cg)


_TORCH_MACS = {"fwd": _torch_mac_fwd, "dx": _torch_mac_dx, "dw": _torch_mac_dw}


def mac(
    mode: str,
    a: torch.Tensor,
    b: torch.Tensor,
    groups: int,
    backend: str,
    precision: str | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One of the three band contractions on the chosen backend.

    Args:
        mode: ``"fwd"`` (``a=X [F,B,C]``, ``b=Wc [F,O,Cg]`` -> ``Y [F,B,O]``), ``"dx"``
            (``a=Gc [F,B,O]``, ``b=Wc [F,O,Cg]`` -> ``dXc [F,B,C]``) or ``"dw"``
            (``a=X [F,B,C]``, ``b=Gc [F,B,O]`` -> ``dW [F,O,Cg]``); see the module docstring.
        backend: ``"torch"`` or ``"triton"`` (already resolved).
        precision: triton operand precision (see :func:`bltriton.kernels.band_mac.band_mac`).
        out: write the result into this contiguous tensor (of the result's shape and dtype).
    """
    if backend == "triton":
        from bltriton import autotune
        from bltriton.kernels import band_mac

        res = band_mac.band_mac(mode, a, b, groups, precision=precision, tune=autotune.get_config)
    elif groups == 1:
        return _TORCH_MACS[mode](a, b, groups, out=out)
    else:
        res = _TORCH_MACS[mode](a, b, groups)
    return res if out is None else out.copy_(res)

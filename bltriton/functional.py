"""Functional API: ``bl_conv1d`` / ``bl_conv2d`` with ``F.conv1d``/``F.conv2d`` arguments plus the
band arguments. Argument checking lives here; the math lives in :mod:`bltriton.autograd`.

:func:`bl_conv_with_band` reads top to bottom: check the tensors (under the autocast policy),
normalise the geometry, size the FFT, pick the band, run the op. Each step is a named helper below
it, so a new argument (a save policy, a cached filter band) is one more keyword through the body.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import handle_torch_function, has_torch_function_variadic

from bltriton import _env, ops, spatial
from bltriton.autograd import ConvSpec, band_conv
from bltriton.spectral import Band, band_for_rate, check_energy, check_rate, energy_band, fft_lengths

__all__ = ["PADDING_MODES", "ConvGeometry", "bl_conv1d", "bl_conv2d", "bl_conv_with_band", "pad_input"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
IntOrTuple = int | Sequence[int]


#: The algorithms a call may take (keys: ``bltriton._env.ALGORITHM_NAMES``); docs/design.md §3.
ALGORITHMS = {
    "auto": "the faster of the two for the call's shapes, timed at its first call (bltriton.choice; "
    "the estimate bltriton.spatial.estimate where nothing may be timed)",
    "spectral": "transforms to the band, three band contractions (torch or triton backend), "
    "inverse transforms: fewest multiply-adds where the band is small against kernel × output",
    "spatial": "the input projected onto the band, then the library convolution (oneDNN, cuDNN) "
    "and its gradients: the convolution's speed, no filter band; needs save='input'",
}

SAVE_POLICIES = {
    "input": "keep a reference to the input and the weight and recompute both bands in the "
    "backward: no saved bytes of the layer's own when autograd keeps the input anyway (a ReLU or "
    "batch-norm output); costs one input and one filter transform per backward",
    "band": "save the input band (and the filter band when its taps exceed the batch): no "
    "recomputation, but the band is stored beside an input that is often kept anyway",
}


def bl_conv_with_band(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrTuple,
    padding: str | IntOrTuple,
    dilation: IntOrTuple,
    groups: int,
    *,
    ndim: int,
    padding_mode: str = "zeros",
    compress_rate: float | None = 0.0,
    energy: float | None = None,
    fft_size: str | int | tuple[int, ...] | None = None,
    backend: str | None = None,
    band_fn: Callable[[torch.Tensor, tuple[int, ...]], Band] | None = None,
    save: str = "input",
    filter_cache: ops.FilterBandCache | None = None,
    algorithm: str | None = None,
    info: dict | None = None,
) -> tuple[torch.Tensor, Band]:
    """Band-limited convolution over ``ndim`` spatial axes; returns ``(output, band)``.

    Arguments and shapes as :func:`bl_conv1d`/:func:`bl_conv2d`. The band is reported so a module
    can show its measured kept fraction. ``band_fn(x_pad, n)``, when given, chooses the band
    instead of ``compress_rate``/``energy`` (the modules' energy mode, :mod:`bltriton.energy`);
    with zero padding it gets the unpadded input, whose ``rfftn`` at length ``n`` has the padded
    input's magnitudes (a circular shift). ``save`` is what the backward keeps (see
    :data:`SAVE_POLICIES`); ``filter_cache`` serves the filter band when no gradient is recorded
    (a module in ``eval()`` passes its own). ``algorithm``: see :data:`ALGORITHMS`; when ``info``
    is a dict, ``info["algorithm"]`` is set to the algorithm the call took and ``info["spec"]`` to
    the op's :class:`~bltriton.autograd.ConvSpec`.
    """
    conv = f"bl_conv{ndim}d"
    # Zero padding is folded into the transforms (no padded copy; the op sees the caller's tensor,
    # which the backward can then keep for free); other modes are padded here.
    fold = padding_mode == "zeros"
    algorithm = _env.algorithm() if algorithm is None else algorithm
    args = (
        stride, padding, dilation, groups, padding_mode, compress_rate, energy, fft_size, backend, save,
        algorithm,
    )  # fmt: skip
    key = _call_key(ndim, input, weight, bias, args)
    hit = _CALLS.get(key) if key is not None and band_fn is None else None
    if hit is not None:  # the same tensors' metadata and arguments as an earlier call: checked then
        out_dtype, geo, band, spec = hit
        unbatched = input.dim() == ndim + 1
        x = input.unsqueeze(0) if unbatched else input
        if _env.check_finite():
            _raise_if_not_finite(conv, input=x, weight=weight, bias=bias)
        x_pad = x if fold else pad_input(x, geo.pads, padding_mode)
    else:
        out_dtype = check_tensors(conv, ndim, input, weight, bias)
        unbatched = input.dim() == ndim + 1
        x = input.unsqueeze(0) if unbatched else input
        if _env.check_finite():
            _raise_if_not_finite(conv, input=x, weight=weight, bias=bias)
        training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        _env.check_all()  # every BLTRITON_* value, also those this call's path never reads
        geo = conv_geometry(conv, x, weight, bias, stride, padding, dilation, groups, padding_mode)
        rate = check_rate(compress_rate)
        energy = check_energy(energy, compress_rate)
        n = fft_lengths(geo.padded, geo.effective_kernel, fft_size)
        backend_r = ops.resolve_backend(backend, x.device)
        if save not in SAVE_POLICIES:
            raise ValueError(f"{conv}: save must be one of {tuple(SAVE_POLICIES)}; got {save!r}")
        if algorithm not in _env.ALGORITHM_NAMES:
            raise ValueError(f"{conv}: algorithm must be one of {tuple(ALGORITHMS)}; got {algorithm!r}")
        x_pad = x if fold else pad_input(x, geo.pads, padding_mode)
        if energy is not None:
            _check_energy_not_traced(conv)
        band = band_fn(x_pad, n) if band_fn is not None else _choose_band(x_pad, n, rate, energy)
        spec = replace(
            geo.spec(band, backend_r, out_dtype),
            pad=tuple(p for lo_hi in geo.pads for p in lo_hi) if fold and any(map(any, geo.pads)) else (),
            save_input=save == "input",
        )
        call = (x_pad, weight, bias, filter_cache, band_fn is None and energy is None)  # timed
        spec = replace(
            spec,
            algorithm=spatial.choose_algorithm(
                algorithm, spec, tuple(x_pad.shape), tuple(weight.shape), x.device, training, call=call
            ),
        )
        if key is not None and band_fn is None and energy is None:
            _remember_call(key, (out_dtype, geo, band, spec))
    if info is not None:
        info["algorithm"] = spec.algorithm
        info["spec"] = spec
    if x_pad.numel() == 0 or weight.numel() == 0:
        x_full = pad_input(x, geo.pads, padding_mode) if fold else x_pad
        y = _empty_conv(x_full, weight, bias, geo)  # nothing to transform: torch's own shapes/errors
    else:
        y = band_conv(x_pad, weight, bias, spec, filter_cache)
        if ndim == 2 and not unbatched and (_is_channels_last(input) or _is_channels_last(weight)):
            y = y.contiguous(memory_format=torch.channels_last)  # as nn.Conv2d (one output-sized copy)
    return (y.squeeze(0) if unbatched else y), band


# ------------------------------------------------------------------------------------------------
# The steps of bl_conv_with_band
# ------------------------------------------------------------------------------------------------

# Calls already checked: the static part of a call (geometry, band, the op's spec) keyed by every
# argument it depends on. Checking and normalising the arguments again took ~100 us of a small
# layer's 350 us fwd+bwd on the CPU; on a GPU, where a training step is host-bound
# (bench/NOTES.md), that is per layer per step. Eager mode only: under torch.compile the
# arguments are checked once at trace time anyway, and the cache would be state to guard on.
_CALLS: dict[tuple, tuple] = {}
_MAX_CALLS = 256


def _call_key(ndim: int, input, weight, bias, args: tuple) -> tuple | None:
    """Everything the checks and the static part of a call depend on: the tensors' shapes (not
    the batch), dtypes and devices, the autocast state, whether a gradient is recorded, the
    non-tensor ``args`` and the backend variables; ``None`` where it must not be cached
    (compiling, symbolic sizes, unhashable arguments, arguments that are not tensors: the
    checks then run and raise)."""
    if torch.compiler.is_compiling():
        return None
    try:
        device = input.device
        cast = None
        if device.type in ("cuda", "cpu") and torch.is_autocast_enabled(device.type):
            cast = torch.get_autocast_dtype(device.type)
        key = (
            input.dim(),
            tuple(input.shape[-(ndim + 1) :]),
            input.dtype,
            device,
            tuple(weight.shape),
            weight.dtype,
            weight.device,
            None if bias is None else (tuple(bias.shape), bias.dtype, bias.device),
            cast,
            torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad),
            # Each argument with its type (and its items' types): ``1`` and ``1.0``, ``True``
            # and ``1``, ``(1, 2)`` and ``(1, 2.0)`` must not share a checked call.
            tuple(
                [
                    (type(a), tuple(a), tuple(map(type, a))) if isinstance(a, (list, tuple)) else (type(a), a)
                    for a in args
                ]
            ),
            _env.backend_raw(),
        )
        hash(key)
    except (AttributeError, TypeError):  # not tensors, symbolic sizes, an unhashable argument
        return None
    return key


def _remember_call(key: tuple, value: tuple) -> None:
    if len(_CALLS) >= _MAX_CALLS:
        _CALLS.pop(next(iter(_CALLS)))
    _CALLS[key] = value


_HALF_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def _static_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Spatial sizes as Python ints. The band (FFT lengths, kept rows and columns) is derived
    from them and must be static for the ops; under ``torch.compile(dynamic=True)`` this
    specialises the spatial sizes (one graph per spatial size) while the batch stays dynamic."""
    return tuple(operator.index(v) for v in sizes)


def _is_channels_last(t: torch.Tensor) -> bool:
    if t.dim() != 4:
        return False
    try:
        return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:  # inside torch.vmap memory formats cannot be queried: keep the default
        return False


def _check_energy_not_traced(conv: str) -> None:
    if torch.compiler.is_compiling():
        raise RuntimeError(
            f"{conv}: energy= chooses the band from the input's values on the host at every call, "
            "and the band sets tensor shapes, so torch.compile/torch.export cannot trace it. Use "
            "compress_rate= (a fixed band) in compiled code, or keep this layer out of the graph "
            "with torch.compiler.disable (e.g. layer.forward = torch.compiler.disable(layer.forward))."
        )


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device``'s type, or ``None`` outside autocast."""
    if device.type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def check_tensors(
    conv: str, ndim: int, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.dtype | None:
    """Types, ranks, dtypes and devices of the tensor arguments.

    Under autocast the dtype rule is ``nn.Conv2d``'s: fp16/bf16/fp32 tensors count as the autocast
    dtype (so a bf16 activation meets an fp32 weight), float64 ones stay float64; the tensors
    must then agree. The op is not cast here: the FFTs run in fp32 whatever the operand dtype
    (cuFFT half precision needs power-of-two sizes).

    Returns:
        The output dtype under autocast (the autocast dtype), else ``None`` (the input's dtype).
    """
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is None and name == "bias":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{conv}: {name} must be a torch.Tensor; got {type(t).__name__}")
        if t.is_complex():
            raise TypeError(f"{conv}: {name} must be real; got complex dtype {t.dtype}")
        if not t.is_floating_point():
            raise TypeError(f"{conv}: {name} must be a floating-point tensor; got {t.dtype}")
    if weight.dim() != ndim + 2:
        kernel = "kh, kw" if ndim == 2 else "k"
        raise ValueError(
            f"{conv}: weight must have shape [out_channels, in_channels/groups, {kernel}] "
            f"({ndim + 2} dims); got {tuple(weight.shape)}"
        )
    if input.dim() not in (ndim + 1, ndim + 2):
        raise ValueError(
            f"{conv}: input must be [batch, channels, *{ndim} spatial] or unbatched "
            f"[channels, *{ndim} spatial]; got shape {tuple(input.shape)}"
        )
    cast = _autocast_dtype(input.device)
    effective = lambda t: cast if cast is not None and t.dtype != torch.float64 else t.dtype
    if effective(input) != effective(weight):
        raise TypeError(f"{conv}: input ({input.dtype}) and weight ({weight.dtype}) must have the same dtype")
    if bias is not None and effective(bias) != effective(weight):
        raise TypeError(f"{conv}: bias ({bias.dtype}) and weight ({weight.dtype}) must have the same dtype")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != input.device:
            raise ValueError(f"{conv}: input is on {input.device} but {name} is on {t.device}")
    return cast if cast is not None and input.dtype != torch.float64 else None


def _as_int(value: object) -> int | None:
    """A Python or numpy integer as an int (``None`` for anything else, bools included)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return None


def _int_tuple(value: IntOrTuple, ndim: int, name: str, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``ndim`` ints (Python or numpy) as a tuple, each ``>= minimum``."""
    form = f"{name} must be an int or a tuple of {ndim} ints"
    if _as_int(value) is not None:
        out = (int(value),) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        items = [_as_int(v) for v in value]
        if any(v is None for v in items):  # a float or bool item: a TypeError, as F.conv*d's
            raise TypeError(f"{form}; got {value!r}")
        if len(items) != ndim:
            raise ValueError(f"{form}; got {value!r}")
        out = tuple(items)
    else:
        raise TypeError(f"{form}; got {value!r}")
    if any(v < minimum for v in out):
        raise ValueError(f"{name} must be >= {minimum} on every axis; got {value!r}")
    return out


@dataclass(frozen=True)
class ConvGeometry:
    """Normalised per-axis arguments of one call (first spatial axis first).

    Attributes:
        length: input length per axis.
        kernel: filter taps per axis.
        stride, dilation: per axis.
        pads: ``(before, after)`` padding per axis.
        groups: channel groups.
    """

    length: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    groups: int

    @property
    def padded(self) -> tuple[int, ...]:
        """Padded input length ``Lp`` per axis."""
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.length, self.pads))

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        """Dilated kernel length ``ke = d·(k−1)+1`` per axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def spec(self, band: Band, backend: str, out_dtype: torch.dtype | None) -> ConvSpec:
        """The op's static description for ``band`` on ``backend``."""
        return ConvSpec(
            band=band,
            padded=self.padded,
            kernel=self.kernel,
            stride=self.stride,
            dilation=self.dilation,
            groups=self.groups,
            backend=backend,
            precision=_HALF_NAMES.get(out_dtype) if out_dtype is not None else None,
            out_dtype=out_dtype,
        )


def conv_geometry(
    conv: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrTuple,
    padding: str | IntOrTuple,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
) -> ConvGeometry:
    """Check channels, groups, bias shape, strides, padding (and its mode's limits) against a
    batched input ``x`` ``[B, C, *L]``, ``weight`` ``[O, C/groups, *k]`` and ``bias`` ``[O]``;
    return the normalised geometry."""
    ndim = weight.dim() - 2
    g = _as_int(groups)
    if g is None:  # a float or bool: a TypeError, as F.conv*d's
        raise TypeError(f"{conv}: groups must be a positive int; got {groups!r}")
    if g < 1:
        raise ValueError(f"{conv}: groups must be a positive int; got {groups!r}")
    out_channels, cg = weight.shape[:2]
    if out_channels % g:
        raise ValueError(
            f"{conv}: weight.shape[0] (out_channels={out_channels}) must be divisible by groups={g}"
        )
    if x.shape[1] != cg * g:
        raise ValueError(
            f"{conv}: input has {x.shape[1]} channels but weight expects "
            f"in_channels = weight.shape[1]·groups = {cg}·{g} = {cg * g}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"{conv}: bias must have shape [{out_channels}]; got {tuple(bias.shape)}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{conv}: padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}")
    kernel = _static_sizes(weight.shape[2:])
    if any(k < 1 for k in kernel):
        raise ValueError(f"{conv}: weight has an empty kernel {kernel}")
    stride_t = _int_tuple(stride, ndim, "stride", 1)
    dilation_t = _int_tuple(dilation, ndim, "dilation", 1)
    pads = _padding_pairs(padding, ndim, kernel, dilation_t, stride_t)
    geo = ConvGeometry(_static_sizes(x.shape[2:]), kernel, stride_t, dilation_t, pads, g)
    _check_zero_size(conv, x, geo, padding_mode)
    _check_padding_mode_limits(conv, padding_mode, geo)
    for axis, (lp, ke) in enumerate(zip(geo.padded, geo.effective_kernel)):
        if ke > lp:
            raise ValueError(
                f"{conv}: kernel size (dilated: {geo.effective_kernel}) is larger than the padded "
                f"input {geo.padded} on axis {axis}"
            )
    return geo


def _check_zero_size(conv: str, x: torch.Tensor, geo: ConvGeometry, padding_mode: str) -> None:
    """``nn.Conv*d``'s rule for an input with an empty spatial axis, with its error type: only a
    zero batch or zero channels may have one (the output is then empty too), ``F.pad`` cannot
    pad it in the other padding modes, and the padded input must still hold the kernel. An empty
    axis has no values to transform; without this check zero padding turned it into a non-empty
    output of the bias alone."""
    if all(x.shape[2:]):
        return
    if x.shape[0] and x.shape[1]:
        raise RuntimeError(
            f"{conv}: only zero batch or zero channel inputs are supported (as F.conv{len(geo.kernel)}d), "
            f"but got input shape {list(x.shape)}"
        )
    if padding_mode != "zeros" and any(map(any, geo.pads)):
        raise RuntimeError(
            f"{conv}: padding_mode={padding_mode!r} cannot pad an input with an empty spatial axis "
            f"(as F.pad); got input shape {list(x.shape)} and padding {geo.pads}"
        )
    for axis, (lp, ke) in enumerate(zip(geo.padded, geo.effective_kernel)):
        if ke > lp:
            raise RuntimeError(
                f"{conv}: kernel size (dilated: {geo.effective_kernel}) is larger than the padded "
                f"input {geo.padded} on axis {axis}"
            )


def _padding_pairs(
    padding: str | IntOrTuple,
    ndim: int,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
    stride: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions (stride != 1)")
            # As nn.Conv*d: the odd extra tap of an even kernel goes to the end.
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ValueError(f"padding must be 'same', 'valid', an int or a tuple of ints; got {padding!r}")
    return tuple((p, p) for p in _int_tuple(padding, ndim, "padding", 0))


def _check_padding_mode_limits(conv: str, padding_mode: str, geo: ConvGeometry) -> None:
    """``F.pad``'s limits, raised with the argument names: reflect needs padding < size, circular
    padding <= size."""
    if padding_mode not in ("reflect", "circular"):
        return
    strict = padding_mode == "reflect"
    for axis, ((lo, hi), n) in enumerate(zip(geo.pads, geo.length)):
        if max(lo, hi) > n or (strict and max(lo, hi) == n):
            need = "padding < input size" if strict else "padding <= input size"
            raise ValueError(
                f"{conv}: padding_mode={padding_mode!r} needs {need}; axis {axis} has "
                f"padding {(lo, hi)} and size {n}"
            )


def pad_input(x: torch.Tensor, padding: tuple[tuple[int, int], ...], padding_mode: str) -> torch.Tensor:
    """``F.pad`` with per-axis ``(before, after)`` pairs, first spatial axis first.

    Args:
        x: ``[B, C, *L]``.

    Returns:
        ``[B, C, *Lp]``; ``x`` itself when there is no padding.
    """
    pads: list[int] = []
    for before, after in reversed(padding):
        pads += [before, after]
    if not any(pads):
        return x
    if padding_mode == "zeros":
        return F.pad(x, pads)
    return F.pad(x, pads, mode=padding_mode)


def _choose_band(x_pad: torch.Tensor, n: tuple[int, ...], rate: float, energy: float | None) -> Band:
    """The fixed band of ``rate``, or (energy mode) the smallest band holding ``energy`` of this
    input's spectrum: one extra fp32 transform and one host sync per call."""
    if energy is None:
        return band_for_rate(n, rate)
    if x_pad.device.type == "meta":  # no values to search: the full band gives the same shapes
        return band_for_rate(n, 0.0)
    ndim = len(n)
    with torch.no_grad():
        x32 = x_pad.detach().to(torch.float32 if x_pad.dtype != torch.float64 else x_pad.dtype)
        spectrum = torch.fft.rfftn(x32, s=n, dim=tuple(range(-ndim, 0)))
    return energy_band(spectrum, n, energy)


def _empty_conv(
    x_pad: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geo: ConvGeometry
) -> torch.Tensor:
    """A call with no elements (batch 0, channels 0, out_channels 0) has no spectrum: torch's own
    convolution gives the shapes, values (the bias) and errors ``F.conv*d`` users expect."""
    conv = F.conv2d if len(geo.kernel) == 2 else F.conv1d
    return conv(x_pad, weight, bias, geo.stride, 0, geo.dilation, geo.groups)


def _raise_if_not_finite(conv: str, **tensors: torch.Tensor | None) -> None:
    """``BLTRITON_CHECK_FINITE=1``: one inf/NaN input element spreads over about half the outputs
    of its sample in a transform-domain convolution, so find it at the source (one host sync)."""
    for name, t in tensors.items():
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            bad = int((~torch.isfinite(t.detach())).sum())
            raise ValueError(
                f"{conv}: {name} has {bad} non-finite element(s) (BLTRITON_CHECK_FINITE=1 is set); "
                "in a band-limited convolution one inf/NaN spreads to about half the outputs of "
                "its sample"
            )


# ------------------------------------------------------------------------------------------------
# Public entries (F.conv*d signatures)
# ------------------------------------------------------------------------------------------------


def bl_conv1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    compress_rate: float | None = 0.0,
    energy: float | None = None,
    fft_size: str | int | tuple[int, ...] | None = None,
    backend: str | None = None,
    save: str = "input",
    algorithm: str | None = None,
) -> torch.Tensor:
    """Band-limited ``F.conv1d``.

    Args:
        input: ``[B, C, L]`` or ``[C, L]``.
        weight: ``[O, C // groups, k]``.
        bias: ``[O]`` or ``None``.
        stride, padding, dilation, groups: as ``F.conv1d`` (``padding`` may be ``'same'``/``'valid'``).
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
        compress_rate: fraction of the spectrum discarded, in ``[0, 1)``; 0 (or ``None``) equals
            ``F.conv1d``.
        energy: keep the smallest band holding this fraction of the input's spectral energy
            (per call; exclusive with a non-zero ``compress_rate``).
        fft_size: ``None``/``'fast'``, ``'paper'``, or an explicit length.
        backend: ``None`` (``BLTRITON_BACKEND``), ``'auto'``, ``'torch'`` or ``'triton'``.
        save: what the backward keeps: ``'input'`` (a reference to the input; both bands are
            recomputed) or ``'band'`` (the input band); see :data:`SAVE_POLICIES`.
        algorithm: ``None`` (``BLTRITON_ALGORITHM``, default ``'auto'``), ``'auto'``,
            ``'spectral'`` or ``'spatial'``; all compute the same function, see :data:`ALGORITHMS`.

    Returns:
        ``[B, O, L_out]`` (``[O, L_out]`` for unbatched input), ``L_out`` as ``F.conv1d``.
    """
    if has_torch_function_variadic(input, weight, bias):  # FX proxies: one leaf call in the graph
        return handle_torch_function(
            bl_conv1d, (input, weight, bias), input, weight, bias, stride, padding, dilation, groups,
            padding_mode=padding_mode, compress_rate=compress_rate, energy=energy, fft_size=fft_size,
            backend=backend, save=save, algorithm=algorithm,
        )  # fmt: skip
    return bl_conv_with_band(
        input, weight, bias, stride, padding, dilation, groups, ndim=1, padding_mode=padding_mode,
        compress_rate=compress_rate, energy=energy, fft_size=fft_size, backend=backend, save=save,
        algorithm=algorithm,
    )[0]  # fmt: skip


def bl_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    compress_rate: float | None = 0.0,
    energy: float | None = None,
    fft_size: str | int | tuple[int, ...] | None = None,
    backend: str | None = None,
    save: str = "input",
    algorithm: str | None = None,
) -> torch.Tensor:
    """Band-limited ``F.conv2d``.

    Args:
        input: ``[B, C, H, W]`` or ``[C, H, W]``.
        weight: ``[O, C // groups, kh, kw]``.
        bias: ``[O]`` or ``None``.
        stride, padding, dilation, groups: as ``F.conv2d``.
        padding_mode, compress_rate, energy, fft_size, backend, save, algorithm: see
            :func:`bl_conv1d`.

    Returns:
        ``[B, O, H_out, W_out]``, sizes as ``F.conv2d``.
    """
    if has_torch_function_variadic(input, weight, bias):  # FX proxies: one leaf call in the graph
        return handle_torch_function(
            bl_conv2d, (input, weight, bias), input, weight, bias, stride, padding, dilation, groups,
            padding_mode=padding_mode, compress_rate=compress_rate, energy=energy, fft_size=fft_size,
            backend=backend, save=save, algorithm=algorithm,
        )  # fmt: skip
    return bl_conv_with_band(
        input, weight, bias, stride, padding, dilation, groups, ndim=2, padding_mode=padding_mode,
        compress_rate=compress_rate, energy=energy, fft_size=fft_size, backend=backend, save=save,
        algorithm=algorithm,
    )[0]  # fmt: skip

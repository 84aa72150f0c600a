"""Functional API: ``bl_conv1d`` / ``bl_conv2d`` with ``F.conv1d``/``F.conv2d`` arguments plus the
band arguments. Argument checking lives here; the math lives in :mod:`bltriton.autograd`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import torch

from bltriton import ops
from bltriton.autograd import ConvSpec, band_conv
from bltriton.reference import pad_input
from bltriton.spectral import Band, band_for_rate, check_rate, energy_band, fft_lengths

__all__ = ["bl_conv1d", "bl_conv2d", "bl_conv_with_band"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
IntOrTuple = int | Sequence[int]


def _tuple(value: IntOrTuple, ndim: int, name: str, minimum: int) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a tuple of {ndim} ints; got {value!r}")
    if isinstance(value, int):
        out = (value,) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        out = tuple(value)
        if len(out) != ndim or not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
            raise ValueError(f"{name} must be an int or a tuple of {ndim} ints; got {value!r}")
    else:
        raise TypeError(f"{name} must be an int or a tuple of {ndim} ints; got {value!r}")
    if any(v < minimum for v in out):
        raise ValueError(f"{name} must be >= {minimum} on every axis; got {value!r}")
    return out


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
            pairs = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise ValueError(f"padding must be 'same', 'valid', an int or a tuple of ints; got {padding!r}")
    per_axis = _tuple(padding, ndim, "padding", 0)
    return tuple((p, p) for p in per_axis)


def _check_rate_energy(compress_rate: float, energy: float | None) -> None:
    if energy is None:
        return
    if compress_rate not in (0, 0.0, None):
        raise ValueError(
            "compress_rate and energy are exclusive: pass energy=None for a fixed band, or "
            "compress_rate=0.0 for the energy-driven band"
        )
    if isinstance(energy, bool) or not isinstance(energy, (int, float)):
        raise TypeError(f"energy must be a float in (0, 1] or None; got {type(energy).__name__}")
    if not (0.0 < float(energy) <= 1.0):
        raise ValueError(f"energy must be in (0, 1] (fraction of spectrum energy kept); got {energy!r}")


def _static_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Spatial sizes as Python ints. The band (FFT lengths, kept rows and columns) is derived
    from them and must be static for the ops; under ``torch.compile(dynamic=True)`` this
    specialises the spatial sizes (one graph per spatial size) while the batch stays dynamic."""
    return tuple(operator.index(v) for v in sizes)


def _is_channels_last(t: torch.Tensor) -> bool:
    if t.dim() != 4:
        return False
    try:
        return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
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


_HALF_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def _autocast_precision(input: torch.Tensor) -> tuple[str | None, torch.dtype | None]:
    """Under autocast (CUDA or CPU) the band operands of the triton contractions go to the
    autocast dtype with fp32 accumulation and the output takes that dtype, as ``nn.Conv2d`` does.
    FFTs stay in fp32."""
    device_type = input.device.type
    if device_type not in ("cuda", "cpu") or input.dtype == torch.float64:
        return None, None
    if not torch.is_autocast_enabled(device_type):
        return None, None
    dtype = torch.get_autocast_dtype(device_type)
    return _HALF_NAMES.get(dtype), dtype


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
    compress_rate: float = 0.0,
    energy: float | None = None,
    fft_size: str | int | tuple[int, ...] | None = None,
    backend: str | None = None,
    band_fn: Callable[[torch.Tensor, tuple[int, ...]], Band] | None = None,
) -> tuple[torch.Tensor, Band]:
    """Band-limited convolution over ``ndim`` spatial axes; returns ``(output, band)``.

    The band is reported so a module can show its measured kept fraction. ``band_fn(x_pad, n)``,
    when given, chooses the band instead of ``compress_rate``/``energy`` (the modules' energy
    mode, :mod:`bltriton.energy`).
    """
    conv = f"bl_conv{ndim}d"
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{conv}: input must be a torch.Tensor; got {type(input).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{conv}: weight must be a torch.Tensor; got {type(weight).__name__}")
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.is_complex():
            raise TypeError(f"{conv}: {name} must be real; got complex dtype {t.dtype}")
        if not t.is_floating_point():
            raise TypeError(f"{conv}: {name} must be a floating-point tensor; got {t.dtype}")
    if weight.dim() != ndim + 2:
        raise ValueError(
            f"{conv}: weight must have shape [out_channels, in_channels/groups, "
            f"{', '.join('k' + a for a in 'hw'[-ndim:] if ndim == 2) or 'k'}] ({ndim + 2} dims); "
            f"got {tuple(weight.shape)}"
        )
    unbatched = input.dim() == ndim + 1
    if input.dim() not in (ndim + 1, ndim + 2):
        raise ValueError(
            f"{conv}: input must be [batch, channels, *{ndim} spatial] or unbatched "
            f"[channels, *{ndim} spatial]; got shape {tuple(input.shape)}"
        )
    if unbatched:
        input = input.unsqueeze(0)
    if input.dtype != weight.dtype:
        raise TypeError(f"{conv}: input ({input.dtype}) and weight ({weight.dtype}) must have the same dtype")
    if input.device != weight.device:
        raise ValueError(f"{conv}: input is on {input.device} but weight is on {weight.device}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{conv}: groups must be a positive int; got {groups!r}")
    out_channels, cg = weight.shape[:2]
    if out_channels % groups:
        raise ValueError(
            f"{conv}: weight.shape[0] (out_channels={out_channels}) must be divisible by groups={groups}"
        )
    if input.shape[1] != cg * groups:
        raise ValueError(
            f"{conv}: input has {input.shape[1]} channels but weight expects "
            f"in_channels = weight.shape[1]·groups = {cg}·{groups} = {cg * groups}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"{conv}: bias must have shape [{out_channels}]; got {tuple(bias.shape)}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{conv}: padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}")
    stride_t = _tuple(stride, ndim, "stride", 1)
    dilation_t = _tuple(dilation, ndim, "dilation", 1)
    kernel = _static_sizes(weight.shape[2:])
    if any(k < 1 for k in kernel):
        raise ValueError(f"{conv}: weight has an empty kernel {kernel}")
    pads = _padding_pairs(padding, ndim, kernel, dilation_t, stride_t)
    check_rate(compress_rate)
    _check_rate_energy(compress_rate, energy)
    backend_r = ops.resolve_backend(backend, input.device)

    length = _static_sizes(input.shape[2:])
    if padding_mode == "reflect":
        for axis, ((lo, hi), n) in enumerate(zip(pads, length)):
            if max(lo, hi) >= n:
                raise ValueError(
                    f"{conv}: padding_mode='reflect' needs padding < input size; axis {axis} has "
                    f"padding {(lo, hi)} and size {n}"
                )
    if padding_mode == "circular":
        for axis, ((lo, hi), n) in enumerate(zip(pads, length)):
            if max(lo, hi) > n:
                raise ValueError(
                    f"{conv}: padding_mode='circular' needs padding <= input size; axis {axis} has "
                    f"padding {(lo, hi)} and size {n}"
                )
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(length, pads))
    ke = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation_t))
    for axis, (lp, kk) in enumerate(zip(padded, ke)):
        if kk > lp:
            raise ValueError(
                f"{conv}: kernel size (dilated: {ke}) is larger than the padded input {padded} on axis {axis}"
            )
    n = fft_lengths(padded, ke, fft_size)

    x_pad = pad_input(input, pads, padding_mode)
    if energy is not None:
        _check_energy_not_traced(conv)
    if band_fn is not None:
        band = band_fn(x_pad, n)
    elif energy is not None:
        dims = tuple(range(-ndim, 0))
        with torch.no_grad():
            spectrum = torch.fft.rfftn(
                x_pad.detach().to(torch.float32 if x_pad.dtype != torch.float64 else x_pad.dtype),
                s=n,
                dim=dims,
            )
        band = energy_band(spectrum, n, float(energy))
    else:
        band = band_for_rate(n, float(compress_rate))  # a SymFloat under dynamic=True: specialised
    precision, out_dtype = _autocast_precision(input)
    spec = ConvSpec(
        band=band,
        padded=padded,
        kernel=kernel,
        stride=stride_t,
        dilation=dilation_t,
        groups=groups,
        backend=backend_r,
        precision=precision,
        out_dtype=out_dtype,
    )
    y = band_conv(x_pad, weight, bias, spec)
    if ndim == 2 and not unbatched and (_is_channels_last(input) or _is_channels_last(weight)):
        y = y.contiguous(memory_format=torch.channels_last)  # as nn.Conv2d (one output-sized copy)
    if unbatched:
        y = y.squeeze(0)
    return y, band


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
    compress_rate: float = 0.0,
    energy: float | None = None,
    fft_size: str | int | tuple[int, ...] | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Band-limited ``F.conv1d``.

    Args:
        input: ``[B, C, L]`` or ``[C, L]``.
        weight: ``[O, C // groups, k]``.
        bias: ``[O]`` or ``None``.
        stride, padding, dilation, groups: as ``F.conv1d`` (``padding`` may be ``'same'``/``'valid'``).
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
        compress_rate: fraction of the spectrum discarded, in ``[0, 1)``; 0 equals ``F.conv1d``.
        energy: keep the smallest band holding this fraction of the input's spectral energy
            (per call; exclusive with ``compress_rate``).
        fft_size: ``None``/``'fast'``, ``'paper'``, or an explicit length.
        backend: ``None`` (``BLTRITON_BACKEND``), ``'auto'``, ``'torch'`` or ``'triton'``.

    Returns:
        ``[B, O, L_out]`` (``[O, L_out]`` for unbatched input), ``L_out`` as ``F.conv1d``.
    """
    return bl_conv_with_band(
        input,
        weight,
        bias,
        stride,
        padding,
        dilation,
        groups,
        ndim=1,
        padding_mode=padding_mode,
        compress_rate=compress_rate,
        energy=energy,
        fft_size=fft_size,
        backend=backend,
    )[0]


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
    compress_rate: float = 0.0,
    energy: float | None = None,
    fft_size: str | int | tuple[int, ...] | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Band-limited ``F.conv2d``.

    Args:
        input: ``[B, C, H, W]`` or ``[C, H, W]``.
        weight: ``[O, C // groups, kh, kw]``.
        bias: ``[O]`` or ``None``.
        stride, padding, dilation, groups: as ``F.conv2d``.
        padding_mode, compress_rate, energy, fft_size, backend: see :func:`bl_conv1d`.

    Returns:
        ``[B, O, H_out, W_out]``, sizes as ``F.conv2d``.
    """
    return bl_conv_with_band(
        input,
        weight,
        bias,
        stride,
        padding,
        dilation,
        groups,
        ndim=2,
        padding_mode=padding_mode,
        compress_rate=compress_rate,
        energy=energy,
        fft_size=fft_size,
        backend=backend,
    )[0]

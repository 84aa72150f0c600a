"""The static description of one call (:class:`ConvSpec`) and its form at the registered ops'
boundary.

A ``ConvSpec`` crosses a ``torch.library`` op boundary as keyword arguments: :func:`op_kwargs`
flattens it and :func:`spec_from_op` rebuilds it (the padded and kernel lengths travel as the
tensors' shapes). Adding a field to ConvSpec means adding it to these two functions and, with its
schema type, to the op signatures of :mod:`bltriton.registered` and :mod:`bltriton.pipeline`;
nothing else is positional.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bltriton.spectral import Band

__all__ = ["ConvSpec", "compute_dtype", "filter_band_returned", "op_kwargs", "spec_from_op"]


@dataclass(frozen=True)
class ConvSpec:
    """Static description of one call (hashable).

    Attributes:
        band: kept frequency set.
        padded: padded input length per axis (``Lp``).
        kernel: filter taps per axis (``k``).
        stride, dilation: per axis.
        groups: channel groups.
        backend: resolved backend (``"torch"`` or ``"triton"``).
        precision: operand precision of the triton contractions (``None`` follows torch's tf32
            flag; ``"bf16"``/``"fp16"`` under autocast). The torch path computes in fp32/fp64.
        out_dtype: dtype of the output (the autocast dtype under autocast, else the input's).
        save_filter_band: save the filter band for the backward (else the weight, and the band
            is recomputed); ``None`` lets :func:`band_conv` decide from the kernel and batch.
            Ignored when ``save_input``.
        pad: zero padding folded into the transforms, ``(lo, hi)`` per axis flattened; the op's
            input is then unpadded (``padded`` still counts the padding). ``()``: none.
        save_input: the backward keeps the input and the weight and recomputes their bands
            (see the module docstring); ``False`` saves the input band. The functional API's
            default (``save='input'``) sets it.
        algorithm: ``"spectral"`` (transforms and band contractions) or ``"spatial"`` (the
            band-projected input through the library convolution, :mod:`bltriton.spatial`;
            needs ``save_input``). Both compute the same function.
    """

    band: Band
    padded: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    backend: str
    precision: str | None = None
    out_dtype: torch.dtype | None = None
    save_filter_band: bool | None = None
    pad: tuple[int, ...] = ()
    save_input: bool = False
    algorithm: str = "spectral"

    @property
    def full_out(self) -> tuple[int, ...]:
        """Stride-1 output length per axis."""
        return tuple(lp - d * (k - 1) for lp, k, d in zip(self.padded, self.kernel, self.dilation))

    @property
    def pad_lo(self) -> tuple[int, ...]:
        """Leading zero padding per axis folded into the transforms (the input's offset)."""
        return tuple(self.pad[0::2]) if self.pad else (0,) * len(self.padded)

    @property
    def input_len(self) -> tuple[int, ...]:
        """Spatial length of the op's input (``padded`` minus the folded padding)."""
        if not self.pad:
            return self.padded
        return tuple(lp - lo - hi for lp, lo, hi in zip(self.padded, self.pad[0::2], self.pad[1::2]))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def filter_band_returned(spec: ConvSpec) -> bool:
    """Whether the forward op returns the whole filter band (else an empty tensor): only when the
    backward may keep it (:func:`bltriton.autograd._filter_saved_as_band`); static, from the spec."""
    return bool(spec.save_filter_band) and not spec.save_input


def op_kwargs(spec: ConvSpec) -> dict[str, object]:
    """ConvSpec → the static keyword arguments of both ops (schema types: ``int[]``, ``int``,
    ``str``, ``ScalarType``, ``bool``)."""
    b = spec.band
    return {
        "n": list(b.n),
        "band": [b.rows_top, b.rows_bottom, b.cols],
        "stride": list(spec.stride),
        "dilation": list(spec.dilation),
        "groups": spec.groups,
        "backend": spec.backend,
        "precision": spec.precision,
        "out_dtype": spec.out_dtype,
        "save_filter_band": bool(spec.save_filter_band),
        "pad": list(spec.pad),
        "save_input": spec.save_input,
        "algorithm": spec.algorithm,
    }


def spec_from_op(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    n: list[int],
    band: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
    backend: str,
    precision: str | None,
    out_dtype: torch.dtype | None,
    save_filter_band: bool,
    pad: list[int],
    save_input: bool,
    algorithm: str,
) -> ConvSpec:
    """The inverse of :func:`op_kwargs`, given the op's input and weight shapes."""
    ndim = len(n)
    length = tuple(x_shape[-ndim:])
    if pad:
        length = tuple(x + lo + hi for x, lo, hi in zip(length, pad[0::2], pad[1::2]))
    return ConvSpec(
        band=Band(n=tuple(n), rows_top=band[0], rows_bottom=band[1], cols=band[2]),
        padded=length,
        kernel=tuple(w_shape[-ndim:]),
        stride=tuple(stride),
        dilation=tuple(dilation),
        groups=groups,
        backend=backend,
        precision=precision,
        out_dtype=out_dtype,
        save_filter_band=save_filter_band,
        pad=tuple(pad),
        save_input=save_input,
        algorithm=algorithm,
    )

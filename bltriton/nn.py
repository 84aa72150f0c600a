"""Modules: ``BLConv1d`` / ``BLConv2d`` (drop-in for ``nn.Conv1d`` / ``nn.Conv2d``), ``convert`` and
``set_compress_rate``.

The modules subclass their torch counterparts, so constructor arguments, parameter names, init,
``state_dict`` and argument checking are torch's own; only ``forward`` and the band arguments are
new.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from bltriton.energy import band_chooser
from bltriton.functional import _check_rate_energy, bl_conv_with_band
from bltriton.ops import BACKENDS
from bltriton.spectral import Band, check_rate

__all__ = ["BLConv1d", "BLConv2d", "convert", "set_compress_rate"]


class _Rate(float):
    """A compress rate that ``torch.compile`` treats as a constant (guarded: a new value
    recompiles) instead of a symbolic float input: dynamo makes a plain float attribute symbolic
    under ``dynamic=True`` (or after the value changes), and the band's integer geometry cannot be
    derived from a symbolic float. Pickles and copies as a plain float."""

    __slots__ = ()

    def __reduce__(self):
        return (float, (float(self),))


class _BLConvMixin:
    """Band state shared by the 1D and 2D modules."""

    _ndim: int
    last_band: Band | None

    def _init_band(
        self,
        compress_rate: float,
        energy: float | None,
        fft_size: str | int | tuple[int, ...] | None,
        backend: str | None,
    ) -> None:
        check_rate(compress_rate)
        _check_rate_energy(compress_rate, energy)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None; got {backend!r}")
        self._compress_rate = _Rate(compress_rate)
        self.energy = energy
        self.fft_size = fft_size
        self.backend = backend
        self.last_band = None

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # unpickled or deep-copied: the rate came back a plain float
        self._compress_rate = _Rate(self._compress_rate)

    def __prepare_scriptable__(self):
        """Called by ``torch.jit.script`` on every submodule before compiling it: say clearly
        that TorchScript cannot compile the layer (its band arguments and custom op are Python)."""
        raise RuntimeError(
            f"bltriton: torch.jit.script cannot compile {type(self).__name__} (TorchScript does not "
            "support the band-limited op); use torch.compile, or torch.export.export for a saved graph"
        )

    @property
    def compress_rate(self) -> float:
        """Fraction of the spectrum discarded, in ``[0, 1)``; can be changed between calls."""
        return float(self._compress_rate)

    @compress_rate.setter
    def compress_rate(self, value: float) -> None:
        check_rate(value)
        _check_rate_energy(value, self.energy)
        self._compress_rate = _Rate(value)

    @property
    def kept_fraction(self) -> float | None:
        """Measured kept fraction (kept / total rfft coefficients) of the last forward call."""
        return None if self.last_band is None else self.last_band.kept_fraction

    def _band_forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros":
            padding, mode = self.padding, "zeros"
        else:
            padding, mode = self.padding, self.padding_mode
        band_fn = band_chooser(self)  # None: the fixed rate
        y, band = bl_conv_with_band(
            input,
            self.weight,
            self.bias,
            self.stride,
            padding,
            self.dilation,
            self.groups,
            ndim=self._ndim,
            padding_mode=mode,
            compress_rate=self._compress_rate,
            energy=self.energy,
            fft_size=self.fft_size,
            backend=self.backend,
            band_fn=band_fn,
        )
        self.last_band = band
        return y

    def _band_repr(self) -> str:
        parts = []
        if self.energy is not None:
            parts.append(f"energy={self.energy}")
        else:
            parts.append(f"compress_rate={self._compress_rate}")
        if self.fft_size is not None:
            parts.append(f"fft_size={self.fft_size!r}")
        if self.backend is not None:
            parts.append(f"backend={self.backend!r}")
        if self.last_band is not None:
            b = self.last_band
            parts.append(f"kept={b.num_kept}/{b.num_total} ({b.kept_fraction:.3f}) at n={b.n}")
        return ", ".join(parts)

    @classmethod
    def from_conv(cls, conv: nn.Module, **band_kwargs):
        """Build a band-limited copy of ``conv`` (same arguments, weights copied)."""
        base = nn.Conv2d if cls._ndim == 2 else nn.Conv1d
        if not isinstance(conv, base):
            raise TypeError(f"{cls.__name__}.from_conv expects an {base.__name__}; got {type(conv).__name__}")
        padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **band_kwargs,
        )
        layer.load_state_dict(conv.state_dict())
        layer.train(conv.training)
        return layer


class BLConv1d(_BLConvMixin, nn.Conv1d):
    """Band-limited ``nn.Conv1d``.

    Same constructor arguments as ``nn.Conv1d``, plus keyword-only band arguments:

    Args:
        compress_rate: fraction of the rfft coefficients discarded, in ``[0, 1)``.
        energy: keep the smallest band holding this fraction of the spectral energy (per call).
        fft_size: ``None``/``'fast'``, ``'paper'`` or an explicit FFT length.
        backend: ``None`` (``BLTRITON_BACKEND``), ``'auto'``, ``'torch'``, ``'triton'``.

    Shapes: input ``[B, C, L]`` or ``[C, L]``; output as ``nn.Conv1d``.
    """

    _ndim = 1

    def __init__(
        self,
        *args,
        compress_rate: float = 0.0,
        energy: float | None = None,
        fft_size=None,
        backend: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._init_band(compress_rate, energy, fft_size, backend)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._band_forward(input)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._band_repr()}"


class BLConv2d(_BLConvMixin, nn.Conv2d):
    """Band-limited ``nn.Conv2d``.

    Same constructor arguments as ``nn.Conv2d``, plus the keyword-only band arguments of
    :class:`BLConv1d`. Shapes: input ``[B, C, H, W]`` or ``[C, H, W]``; output as ``nn.Conv2d``.
    """

    _ndim = 2

    def __init__(
        self,
        *args,
        compress_rate: float = 0.0,
        energy: float | None = None,
        fft_size=None,
        backend: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._init_band(compress_rate, energy, fft_size, backend)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._band_forward(input)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._band_repr()}"


RateSpec = float | Mapping[str, float | None] | Callable[[str, nn.Module], float | None]


def _is_1x1(conv: nn.Module) -> bool:
    return all(k == 1 for k in conv.kernel_size)


def convert(
    model: nn.Module,
    compress_rate: RateSpec | None = None,
    *,
    energy: float | None = None,
    fft_size: str | int | tuple[int, ...] | None = None,
    backend: str | None = None,
    skip_1x1: bool = True,
) -> nn.Module:
    """Replace the ``nn.Conv1d``/``nn.Conv2d`` layers of ``model`` in place by band-limited ones.

    Weights, buffers, devices, dtypes and training mode are kept.

    Args:
        model: any module (converted in place and returned).
        compress_rate: one rate for every layer; or a mapping ``{qualified name: rate}`` (layers
            not named are left alone, ``None`` skips); or a callable ``(name, conv) -> rate | None``.
            Default: 0.5, or 0 when ``energy`` is given.
        energy: energy-mode band for every converted layer (then ``compress_rate`` must be 0 or
            left out).
        fft_size, backend: passed to each layer.
        skip_1x1: leave 1×1 convolutions alone (their spectrum is flat: nothing to gain), as the
            paper's ResNet did.

    Returns:
        ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module; got {type(model).__name__}")
    if compress_rate is None:
        compress_rate = 0.0 if energy is not None else 0.5
    if isinstance(compress_rate, Mapping):
        missing = set(compress_rate) - {n for n, _ in model.named_modules()}
        if missing:
            raise ValueError(f"convert: compress_rate names layers that do not exist: {sorted(missing)}")

    def rate_for(name: str, conv: nn.Module) -> float | None:
        if isinstance(compress_rate, Mapping):
            return compress_rate.get(name)
        if callable(compress_rate):
            return compress_rate(name, conv)
        return compress_rate

    targets = []
    for name, module in model.named_modules():
        if type(module) in (nn.Conv1d, nn.Conv2d):
            if skip_1x1 and _is_1x1(module):
                continue
            rate = rate_for(name, module)
            if rate is not None:
                targets.append((name, module, rate))
    for name, module, rate in targets:
        cls = BLConv2d if isinstance(module, nn.Conv2d) else BLConv1d
        layer = cls.from_conv(module, compress_rate=rate, energy=energy, fft_size=fft_size, backend=backend)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, layer)
    if not targets and type(model) in (nn.Conv1d, nn.Conv2d):
        raise ValueError("convert: model is itself a conv layer; use BLConv2d.from_conv(model)")
    return model


def set_compress_rate(model: nn.Module, compress_rate: float) -> nn.Module:
    """Set ``compress_rate`` on every band-limited layer of ``model`` (energy mode is cleared)."""
    check_rate(compress_rate)
    for module in model.modules():
        if isinstance(module, _BLConvMixin):
            module.energy = None
            module.compress_rate = compress_rate
    return model

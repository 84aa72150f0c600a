"""Modules: ``BLConv1d`` / ``BLConv2d`` (drop-in for ``nn.Conv1d`` / ``nn.Conv2d``), ``convert`` and
``set_compress_rate``.

The modules subclass their torch counterparts, so constructor arguments, parameter names, init,
``state_dict`` and argument checking are torch's own; only ``forward`` and the band arguments are
new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn
from torch.overrides import has_torch_function_variadic

from bltriton import functional as BF
from bltriton import ops
from bltriton._env import ALGORITHM_NAMES, BACKENDS
from bltriton.energy import EnergyBand, band_chooser
from bltriton.spectral import Band, check_energy, check_fft_size, check_rate

__all__ = [
    "LAYER_KINDS",
    "BLConv1d",
    "BLConv2d",
    "BLConvMixin",
    "convert",
    "is_band_limited",
    "layer_kinds",
    "set_compress_rate",
]


def _fresh_call_info() -> dict:
    """A layer's record of its last call (``last_algorithm``), before any call. Its keys exist
    from the start: under torch.compile, writing a new key made dynamo guard on the dict being
    empty, and every compiled model compiled twice (the second call failed that guard)."""
    return {"algorithm": None, "spec": None}


class BLConvMixin:
    """What makes an ``nn.Conv1d``/``nn.Conv2d`` subclass band-limited: the keyword-only band
    arguments, the forward through :func:`bltriton.functional.bl_conv_with_band`, the measured band
    of the last call and the repr. ``isinstance(m, BLConvMixin)`` (or :func:`is_band_limited`) is
    how the library finds band-limited layers.

    Band arguments (keyword-only, after the torch constructor's own):

    Args:
        compress_rate: fraction of the rfft coefficients discarded, in ``[0, 1)`` (``None``: 0).
        energy: keep the smallest band holding this fraction of the spectral energy (per call).
        fft_size: ``None``/``'fast'``, ``'paper'`` or an explicit FFT length (int or per-axis tuple).
        backend: ``None`` (``BLTRITON_BACKEND``), ``'auto'``, ``'torch'``, ``'triton'``.
        algorithm: ``None`` (``BLTRITON_ALGORITHM``), ``'auto'``, ``'spectral'``, ``'spatial'``
            (see :data:`bltriton.functional.ALGORITHMS`; every choice computes the same function).
    """

    _ndim: int
    last_band: Band | None

    def __init__(
        self,
        *args,
        compress_rate: float | None = 0.0,
        energy: float | None = None,
        fft_size: str | int | tuple[int, ...] | None = None,
        backend: str | None = None,
        algorithm: str | None = None,
        **kwargs,
    ) -> None:
        rate = check_rate(compress_rate)
        energy = check_energy(energy, compress_rate)
        fft_size = check_fft_size(fft_size, self._ndim)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None; got {backend!r}")
        if algorithm is not None and algorithm not in ALGORITHM_NAMES:
            raise ValueError(f"algorithm must be one of {ALGORITHM_NAMES} or None; got {algorithm!r}")
        super().__init__(*args, **kwargs)
        self._set_rate(rate)
        self.energy = energy
        self.fft_size = fft_size
        self.backend = backend
        self.algorithm = algorithm
        self.save = "input"  # what the backward keeps: see bltriton.functional.SAVE_POLICIES
        # Filter band reused across eval()-mode calls without autograd (ops.FilterBandCache).
        self._filter_cache = ops.FilterBandCache()
        self._last_call = _fresh_call_info()
        self.last_band = None

    def _set_rate(self, rate: float) -> None:
        # The forward reads the rate from its repr, a string: torch.compile treats a string
        # attribute as a constant (guarded: a new value recompiles), while a float attribute
        # becomes a symbolic input under dynamic=True (or after the value changes), from which
        # the band's integer geometry cannot be derived. float(repr(r)) == r for every float,
        # and float() of a constant string folds under dynamo on torch 2.11 and 2.13 alike (a
        # float subclass did not trace on 2.11).
        self._compress_rate = float(rate)
        self._rate_repr = repr(float(rate))

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_filter_cache", None)
        state.pop("_last_call", None)  # a cache, not state (and no type weights_only allows)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # unpickled or deep-copied
        self._set_rate(self._compress_rate)  # also fills _rate_repr for pickles that lack it
        self._filter_cache = ops.FilterBandCache()
        self._last_call = _fresh_call_info()
        if not hasattr(self, "save"):  # pickled before the save policy existed
            self.save = "input"
        if not hasattr(self, "algorithm"):  # pickled before the spatial algorithm existed
            self.algorithm = None

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
        return self._compress_rate

    @compress_rate.setter
    def compress_rate(self, value: float | None) -> None:
        rate = check_rate(value)
        check_energy(self.energy, value)
        self._set_rate(rate)

    @property
    def last_algorithm(self) -> str | None:
        """The algorithm (``'spectral'`` or ``'spatial'``) of the last forward call, ``None``
        before the first one."""
        return self._last_call.get("algorithm")

    @property
    def kept_fraction(self) -> float | None:
        """Measured kept fraction (kept / total rfft coefficients) of the last forward call."""
        return None if self.last_band is None else self.last_band.kept_fraction

    def _conv_kwargs(self) -> dict:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "padding_mode": self.padding_mode,
            "compress_rate": float(self._rate_repr),
            "energy": self.energy,
            "fft_size": self.fft_size,
            "backend": self.backend,
            "save": self.save,
            "algorithm": self.algorithm,
        }

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if has_torch_function_variadic(input, self.weight, self.bias):
            # FX tracing (or a tensor subclass): one call of the functional entry, no band recorded.
            entry = BF.bl_conv2d if self._ndim == 2 else BF.bl_conv1d
            return entry(input, self.weight, self.bias, **self._conv_kwargs())
        band_fn = band_chooser(self)  # the energy mode's state; None: the fixed rate
        y, band = BF.bl_conv_with_band(
            input,
            self.weight,
            self.bias,
            ndim=self._ndim,
            band_fn=band_fn,
            filter_cache=None if self.training else self._filter_cache,
            info=self._last_call,
            **self._conv_kwargs(),
        )
        # The memo hands back the same band: skip Module.__setattr__ (eager only: compiled code
        # would guard on the attribute and recompile).
        if torch.compiler.is_compiling() or self.last_band is not band:
            self.last_band = band
        return y

    def extra_repr(self) -> str:
        parts = [super().extra_repr()]
        if self.energy is not None:
            parts.append(f"energy={self.energy}")
        else:
            parts.append(f"compress_rate={self._compress_rate}")
        if self.fft_size is not None:
            parts.append(f"fft_size={self.fft_size!r}")
        if self.backend is not None:
            parts.append(f"backend={self.backend!r}")
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm!r}")
        b = self.last_band
        if b is None:
            parts.append("kept=? (the band depends on the input size; measured at the first forward)")
        else:
            parts.append(f"kept={b.num_kept}/{b.num_total} ({b.kept_fraction:.3f}) at n={b.n}")
        return ", ".join(parts)

    @classmethod
    def from_conv(cls, conv: nn.Module, **band_kwargs):
        """Build a band-limited copy of ``conv`` (same arguments, weights copied)."""
        base = nn.Conv2d if cls._ndim == 2 else nn.Conv1d
        if not isinstance(conv, base):
            raise TypeError(
                f"{cls.__name__}.from_conv expects an nn.{base.__name__}; got {type(conv).__name__}"
            )
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


def is_band_limited(module: object) -> bool:
    """True for a band-limited layer (a :class:`BLConvMixin` module)."""
    return isinstance(module, BLConvMixin)


class BLConv1d(BLConvMixin, nn.Conv1d):
    """Band-limited ``nn.Conv1d``: ``nn.Conv1d``'s constructor arguments plus the keyword-only band
    arguments of :class:`BLConvMixin`. Shapes: input ``[B, C, L]`` or ``[C, L]``; output as
    ``nn.Conv1d``."""

    _ndim = 1


class BLConv2d(BLConvMixin, nn.Conv2d):
    """Band-limited ``nn.Conv2d``: ``nn.Conv2d``'s constructor arguments plus the keyword-only band
    arguments of :class:`BLConvMixin`. Shapes: input ``[B, C, H, W]`` or ``[C, H, W]``; output as
    ``nn.Conv2d``."""

    _ndim = 2


RateSpec = float | Mapping[str, float | None] | Callable[[str, nn.Module], float | None]


def _is_1x1(conv: nn.Module) -> bool:
    return all(k == 1 for k in conv.kernel_size)


#: The kinds :func:`convert`'s ``layers=`` may name (see :func:`layer_kinds`).
LAYER_KINDS = ("dense", "grouped", "depthwise", "strided", "1d", "2d")

LayerFilter = str | Iterable[str] | Callable[[str, nn.Module], bool]


def layer_kinds(conv: nn.Module) -> tuple[str, ...]:
    """The :data:`LAYER_KINDS` of a convolution: ``"dense"`` (``groups=1``), ``"depthwise"``
    (one input channel per group, several groups) or ``"grouped"`` (the rest); ``"strided"``
    where a stride exceeds 1; ``"1d"`` or ``"2d"``."""
    groups, cin = conv.groups, conv.in_channels
    kinds = ["dense" if groups == 1 else "depthwise" if groups == cin else "grouped"]
    if any(s > 1 for s in conv.stride):
        kinds.append("strided")
    kinds.append(f"{len(conv.kernel_size)}d")
    return tuple(kinds)


def _layer_rule(model: nn.Module, layers: LayerFilter | None) -> Callable[[str, nn.Module], bool]:
    """``convert``'s ``layers`` argument as a predicate ``(name, conv) -> bool``."""
    if layers is None:
        return lambda name, conv: True
    if callable(layers) and not isinstance(layers, str):
        return lambda name, conv: bool(layers(name, conv))
    items = [layers] if isinstance(layers, str) else layers
    try:
        items = list(items)
    except TypeError:
        raise TypeError(
            f"convert: layers must be layer names or kinds {LAYER_KINDS} (a string or an iterable of "
            f"them) or a predicate (name, conv) -> bool; got {type(layers).__name__}"
        ) from None
    if not all(isinstance(i, str) for i in items):
        raise TypeError(f"convert: layers must hold strings (layer names or kinds); got {items!r}")
    # A name of the model wins over a kind of the same spelling.
    known = {n for n, _ in model.named_modules(remove_duplicate=False)}
    names = {i for i in items if i in known}
    kinds = {i for i in items if i not in known}
    unknown = sorted(kinds - set(LAYER_KINDS))
    if unknown:
        raise ValueError(
            f"convert: layers names {unknown}, neither layers of the model nor kinds {LAYER_KINDS}"
        )
    return lambda name, conv: name in names or bool(kinds & set(layer_kinds(conv)))


def convert(
    model: nn.Module,
    compress_rate: RateSpec | None = None,
    *,
    energy: float | None = None,
    fft_size: str | int | tuple[int, ...] | None = None,
    backend: str | None = None,
    algorithm: str | None = None,
    skip_1x1: bool = True,
    layers: LayerFilter | None = None,
) -> nn.Module:
    """Replace the ``nn.Conv1d``/``nn.Conv2d`` layers of ``model`` in place by band-limited ones.

    Weights, buffers, devices, dtypes and training mode are kept. Atomic: every new layer is built
    (and its arguments checked) before the first one is put in place, so a bad rate leaves
    ``model`` untouched. A layer reachable under several names is replaced by one new layer.

    Args:
        model: any module (converted in place and returned). A bare ``nn.Conv1d``/``nn.Conv2d``
            cannot replace itself in place: its band-limited copy is returned instead (use the
            return value).
        compress_rate: one rate for every layer; or a mapping ``{qualified name: rate}`` (layers
            not named are left alone, ``None`` skips; ``""`` names a bare layer); or a callable
            ``(name, conv) -> rate | None``. Default: 0.5, or 0 when ``energy`` is given.
        energy: energy-mode band for every converted layer (then ``compress_rate`` must be 0 or
            left out).
        fft_size, backend, algorithm: passed to each layer.
        skip_1x1: leave 1×1 convolutions alone (their spectrum is flat: nothing to gain), as the
            paper's ResNet did.
        layers: which layers to convert (default all): qualified names, kinds of
            :data:`LAYER_KINDS` (``"depthwise"``, ``"dense"``, ...; a layer of any kind named is
            taken), a mix of both in one iterable, or a predicate ``(name, conv) -> bool``; e.g.
            ``layers=bltriton.profile(model, x, 0.5).paying()``.

    Returns:
        ``model``, or the new band-limited layer when ``model`` itself is a converted conv layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module; got {type(model).__name__}")
    rate_for = _rate_rule(model, compress_rate, energy)
    chosen = _layer_rule(model, layers)
    built: dict[int, nn.Module] = {}  # id(old conv) -> its band-limited layer
    places: list[tuple[str, nn.Module]] = []
    picked = {
        id(m)
        for n, m in model.named_modules(remove_duplicate=False)
        if type(m) in (nn.Conv1d, nn.Conv2d) and chosen(n, m)
    }  # a layer reachable under several names is taken when one of them is
    for name, module in model.named_modules(remove_duplicate=False):
        if type(module) not in (nn.Conv1d, nn.Conv2d) or (skip_1x1 and _is_1x1(module)):
            continue
        if id(module) not in picked:
            continue
        if id(module) not in built:
            rate = rate_for(name, module)
            if rate is None:
                continue
            cls = BLConv2d if isinstance(module, nn.Conv2d) else BLConv1d
            try:
                built[id(module)] = cls.from_conv(
                    module,
                    compress_rate=rate,
                    energy=energy,
                    fft_size=fft_size,
                    backend=backend,
                    algorithm=algorithm,
                )
            except (TypeError, ValueError) as err:
                raise type(err)(f"convert: layer {name or '(the model itself)'!r}: {err}") from err
        places.append((name, module))
    for name, module in places:  # everything is built: nothing below can fail half-way
        if name == "":
            return built[id(module)]
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, built[id(module)])
    return model


def _rate_rule(
    model: nn.Module, compress_rate: RateSpec | None, energy: float | None
) -> Callable[[str, nn.Module], float | None]:
    """``convert``'s ``compress_rate`` argument as a function ``(name, conv) -> rate | None``."""
    if compress_rate is None:
        compress_rate = 0.0 if energy is not None else 0.5
    if isinstance(compress_rate, Mapping):
        missing = set(compress_rate) - {n for n, _ in model.named_modules()}
        if missing:
            raise ValueError(f"convert: compress_rate names layers that do not exist: {sorted(missing)}")
        return lambda name, conv: compress_rate.get(name)
    if callable(compress_rate):
        return compress_rate
    return lambda name, conv: compress_rate


def set_compress_rate(model: nn.Module, compress_rate: float) -> nn.Module:
    """Set ``compress_rate`` on every band-limited layer of ``model`` (energy mode is cleared)."""
    check_rate(compress_rate)
    for module in model.modules():
        if is_band_limited(module):
            module.energy = None
            module.compress_rate = compress_rate
    return model


# A whole converted model saved with torch.save loads with torch.load(weights_only=True) without
# the user allow-listing bltriton's classes: the layers, the Band they keep from their last call and
# the energy mode's state hold only plain data (numbers, strings, tuples, tensors), nothing that
# runs code on unpickling.
torch.serialization.add_safe_globals([BLConv1d, BLConv2d, Band, EnergyBand])

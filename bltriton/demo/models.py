"""Models of the demo, built from plain ``torch.nn`` layers and band-limited with ``convert``.

* :func:`build_fcn`: the fully convolutional network of Wang, Yan and Oates ("Time Series
  Classification from Scratch with Deep Neural Networks: A Strong Baseline", IJCNN 2017), the 1D
  model of the band-limiting paper: three blocks Conv1d → BatchNorm → ReLU with 128, 256, 128
  channels and kernels 8, 5, 3 ('same' padding), global average pooling, a linear classifier.
* :func:`build_resnet`: a small ResNet-style 2D CNN for 8x8 digits: a 3x3 stem and three basic
  residual blocks (the middle one strided), global average pooling, a linear classifier.

Both are ordinary ``nn.Module`` trees; with ``band=True`` they go through
:func:`bltriton.convert`, which swaps every ``nn.Conv1d``/``nn.Conv2d`` (but 1x1 convolutions)
for its band-limited counterpart in place, keeping the weights: the way a user band-limits their
own model.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from bltriton.nn import is_band_limited


def _ch(base: int, width: float) -> int:
    return max(1, round(base * width))


def _band(
    model: nn.Module,
    band: bool,
    compress_rate: float,
    energy: float | None,
    backend: str | None,
    algorithm: str | None = None,
) -> nn.Module:
    if not band:
        return model
    from bltriton import convert

    if energy is not None:
        return convert(model, compress_rate=0.0, energy=energy, backend=backend, algorithm=algorithm)
    return convert(model, compress_rate=compress_rate, backend=backend, algorithm=algorithm)


def build_fcn(
    in_channels: int,
    num_classes: int,
    *,
    width: float = 1.0,
    band: bool = True,
    compress_rate: float = 0.0,
    energy: float | None = None,
    backend: str | None = None,
    algorithm: str | None = None,
) -> nn.Sequential:
    """The FCN of Wang et al. (2017) for series ``[batch, in_channels, length]``.

    Args:
        in_channels: channels of the input series.
        num_classes: outputs of the classifier (logits ``[batch, num_classes]``).
        width: multiplies the 128/256/128 channels (``0.25`` gives 32/64/32).
        band: convert the convolutions to band-limited layers.
        compress_rate: fraction of the spectrum discarded (when ``band``).
        energy: instead of a fixed rate, keep the smallest band holding this fraction of the
            input's spectral energy (the layer's ``energy`` argument).
        backend: band-limited backend (``None``: the library's default).
        algorithm: the layers' algorithm (``None``: the library's default, ``'auto'``).
    """
    c1, c2, c3 = _ch(128, width), _ch(256, width), _ch(128, width)
    model = nn.Sequential(
        nn.Conv1d(in_channels, c1, 8, padding="same"),
        nn.BatchNorm1d(c1),
        nn.ReLU(),
        nn.Conv1d(c1, c2, 5, padding="same"),
        nn.BatchNorm1d(c2),
        nn.ReLU(),
        nn.Conv1d(c2, c3, 3, padding="same"),
        nn.BatchNorm1d(c3),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(c3, num_classes),
    )
    return _band(model, band, compress_rate, energy, backend, algorithm)  # type: ignore[return-value]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def build_resnet(
    in_channels: int,
    num_classes: int,
    *,
    width: float = 1.0,
    band: bool = True,
    compress_rate: float = 0.0,
    energy: float | None = None,
    backend: str | None = None,
    algorithm: str | None = None,
) -> nn.Sequential:
    """A small ResNet for images ``[batch, in_channels, H, W]`` (made for 8x8 digits).

    Stem 3x3 conv (32·width channels) → BasicBlock(32) → BasicBlock(64, stride 2) →
    BasicBlock(64) → global average pooling → linear. The 1x1 projection shortcut stays a plain
    ``nn.Conv2d`` (``convert`` skips 1x1 layers: nothing to band-limit in a 1x1 filter).
    Arguments as in :func:`build_fcn`.
    """
    c1, c2 = _ch(32, width), _ch(64, width)
    model = nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
        nn.BatchNorm2d(c1),
        nn.ReLU(),
        BasicBlock(c1, c1),
        BasicBlock(c1, c2, stride=2),
        BasicBlock(c2, c2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c2, num_classes),
    )
    return _band(model, band, compress_rate, energy, backend, algorithm)  # type: ignore[return-value]


def build_model(spatial_dims: int, in_channels: int, num_classes: int, **kwargs: object) -> nn.Sequential:
    """The FCN for series (``spatial_dims=1``), the ResNet for images (``2``)."""
    if spatial_dims == 1:
        return build_fcn(in_channels, num_classes, **kwargs)  # type: ignore[arg-type]
    if spatial_dims == 2:
        return build_resnet(in_channels, num_classes, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"spatial_dims must be 1 (series) or 2 (images); got {spatial_dims}")


def conv_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` for every convolution: band-limited layers and plain ones alike."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            yield name, module


def band_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every band-limited layer."""
    return [(n, m) for n, m in model.named_modules() if is_band_limited(m)]


def kept_fractions(model: nn.Module) -> list[float]:
    """Measured kept fraction of each band-limited layer in its last forward (NaN if none yet)."""
    out = []
    for _, m in band_layers(model):
        k = m.kept_fraction
        out.append(float("nan") if k is None else float(k))
    return out


def set_band(model: nn.Module, *, rate: float | None = None, energy: float | None = None) -> None:
    """Put every band-limited layer at a fixed ``rate`` or in ``energy`` mode (exactly one)."""
    if (rate is None) == (energy is None):
        raise ValueError("set_band takes exactly one of rate= and energy=")
    if energy is None:
        from bltriton import set_compress_rate

        set_compress_rate(model, rate)  # also leaves energy mode
        return
    for _, m in band_layers(model):
        m.compress_rate = 0.0
        m.energy = energy

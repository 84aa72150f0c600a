"""Whole models for the benchmarks: CIFAR ResNet-18 and the paper's full-width FCN.

Both are built from plain ``nn.Conv*d`` layers, the way a user writes them, and band-limited with
:func:`bltriton.convert` (which keeps every 1x1 convolution, the ResNet shortcuts, as
``nn.Conv2d``). Helpers here build the variants of one model with the same weights, run one
training step (forward, backward, SGD) or one inference call, and count the bytes autograd saves
for backward (once per storage).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bltriton import convert
from bltriton.demo.models import BasicBlock, build_fcn

__all__ = [
    "MODELS",
    "ModelCase",
    "infer_fn",
    "inputs",
    "make_variant",
    "resnet18_cifar",
    "saved_bytes",
    "train_step_fn",
]


def resnet18_cifar(num_classes: int = 10) -> nn.Sequential:
    """ResNet-18 for 32x32 images: 3x3 stem (no max-pool), stages of 64-128-256-512 channels with
    two basic blocks each (stride 2 at the first block of stages 2-4), average pool, linear."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def fcn_full() -> nn.Sequential:
    """The FCN of Wang et al. at the paper's width (128/256/128, kernels 8/5/3) for one-channel
    series, two classes (GunPoint)."""
    return build_fcn(1, 2, width=1.0, band=False)


@dataclass(frozen=True)
class ModelCase:
    """A model and the input it trains on: ``build()`` and ``[batch, *input_shape]``."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int


MODELS = {
    "resnet18": ModelCase("resnet18", resnet18_cifar, (3, 32, 32), 10),
    "fcn": ModelCase("fcn", fcn_full, (1, 150), 2),
}


def make_variant(base: nn.Module, rate: float | None, **band_kwargs) -> nn.Module:
    """A deep copy of ``base``: unchanged for ``rate=None`` (``nn.Conv*d``), else converted at
    ``compress_rate=rate`` (same weights)."""
    model = copy.deepcopy(base)
    if rate is not None:
        convert(model, compress_rate=rate, **band_kwargs)
    return model


def train_step_fn(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """One SGD step (forward, cross-entropy, backward, ``optimizer.step``) as a closure."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        opt.step()

    return step


def infer_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One inference call under ``eval()`` and ``torch.inference_mode`` as a closure."""
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def saved_bytes(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, params: bool = False) -> int:
    """Bytes autograd saves for backward in one training forward, counted once per storage (a
    tensor kept by both a ReLU and a convolution counts once).

    Args:
        params: count the parameters too (``False``: they live anyway, so the comparison between
            two models with the same parameters is about activations and spectra).
    """
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if params or s.data_ptr() not in param_ptrs:
            storages[s.data_ptr()] = s.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), target)
    del loss
    return sum(storages.values())


def inputs(case: ModelCase, batch: int, device: torch.device | str = "cpu", seed: int = 0):
    """A random input batch and integer targets for ``case``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *case.input_shape, generator=g).to(device)
    target = torch.randint(0, case.num_classes, (batch,), generator=g).to(device)
    return x, target

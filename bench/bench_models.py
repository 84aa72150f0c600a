"""Whole models, one training step (fwd + bwd + SGD) and one inference call (pytest-benchmark).

CIFAR ResNet-18 (batch 32) and the paper's full-width FCN (batch 16 and 64, L=150): ``nn.Conv*d``
against the band-limited model at rates 0, 0.5 and 0.75: ``auto`` (the library's default: each
layer's algorithm by the cost estimate) and the spectral algorithm on each backend (``torch``; on
CUDA ``triton`` too, beside cuDNN, and ResNet-18 at batch 128). For ratios read ``bench/ab_models.py``
(interleaved runs); these rows are the suite's record. The plain test command runs each case once.
"""

from __future__ import annotations

import pytest
import torch

from bench.models import MODELS, infer_fn, inputs, make_variant, train_step_fn
from bench.shapes import RATES

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
BATCHES = {"resnet18": (32, 128) if CUDA else (32,), "fcn": (16, 64)}
# "auto": backend and algorithm left to the library; a backend name: the spectral algorithm on it.
IMPLS = ("auto", "torch", "triton") if CUDA else ("auto", "torch")


def _cases() -> list:
    cases = []
    for model, batches in BATCHES.items():
        for batch in batches:
            for mode in ("train", "infer"):
                cases.append(pytest.param(model, batch, mode, "nn", None, id=f"{model}-b{batch}-{mode}-nn"))
                cases += [
                    pytest.param(model, batch, mode, impl, r, id=f"{model}-b{batch}-{mode}-{impl}-r{r}")
                    for impl in IMPLS
                    for r in RATES
                ]
    return cases


@pytest.mark.parametrize("model,batch,mode,impl,rate", _cases())
def test_model_step(benchmark, model: str, batch: int, mode: str, impl: str, rate: float | None):
    case = MODELS[model]
    torch.manual_seed(0)
    kwargs = {} if impl in ("nn", "auto") else {"backend": impl, "algorithm": "spectral"}
    net = make_variant(case.build(), rate, **kwargs).to(DEVICE)
    x, target = inputs(case, batch, DEVICE)
    fn = train_step_fn(net, x, target) if mode == "train" else infer_fn(net, x)

    def call() -> None:
        fn()
        if CUDA:
            torch.cuda.synchronize()

    benchmark.group = f"{model}-b{batch}-{mode}"
    benchmark.extra_info.update({"impl": impl, "rate": rate, "device": str(DEVICE), "batch": batch})
    benchmark.pedantic(call, rounds=20 if CUDA else 5, warmup_rounds=1, iterations=1)

"""The whole-model benchmark helpers: saved-bytes counting and the interleaved timer."""

from __future__ import annotations

import torch
from torch import nn

from bench.ab_models import interleaved_medians
from bench.models import MODELS, inputs, make_variant, saved_bytes


def test_saved_bytes_counts_each_storage_once():
    # ReLU saves its output; the Linear after it saves the same tensor as its input: one storage.
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(5, 8)
    target = torch.randint(0, 4, (5,))
    relu_out = 5 * 16 * 4
    got = saved_bytes(model, x, target)
    # What the loss itself saves, measured on logits that need a gradient.
    loss_only = saved_bytes(nn.Identity(), torch.randn(5, 4, requires_grad=True), target)
    assert loss_only > 0
    # x (input of the first Linear: 5·8 floats) + the ReLU output once + the loss's tensors.
    assert got == 5 * 8 * 4 + relu_out + loss_only
    with_params = saved_bytes(model, x, target, params=True)
    # Only the second Linear saves its weight (for the gradient of its input).
    assert with_params == got + 4 * 16 * 4


def test_variants_share_weights_and_convert():
    case = MODELS["fcn"]
    base = case.build()
    bl = make_variant(base, 0.5)
    convs = [m for m in bl.modules() if hasattr(m, "compress_rate")]
    assert len(convs) == 3 and all(m.compress_rate == 0.5 for m in convs)
    assert torch.equal(convs[0].weight, base[0].weight)
    x, target = inputs(case, 2)
    assert x.shape == (2, 1, 150) and target.shape == (2,)


def test_interleaved_medians_calls_round_robin():
    order: list[str] = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    med = interleaved_medians(fns, rounds=3, warmup=1)
    assert order == ["a", "b"] + ["a", "b"] * 3
    assert set(med) == {"a", "b"} and all(v >= 0 for v in med.values())

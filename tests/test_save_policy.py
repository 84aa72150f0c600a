"""What the backward keeps: ``save='input'`` (a reference to the input, bands recomputed) against
``save='band'`` (the input band saved). Both give the same results; the input policy adds no
saved bytes of its own when autograd keeps the input anyway."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.models import saved_bytes
from bltriton import convert
from bltriton.functional import bl_conv_with_band
from tests.helpers import assert_close_rel

CASES = [
    # (id, ndim, x shape, w shape, stride, padding, dilation, groups, mode)
    ("2d-s2-g2", 2, (2, 4, 11, 9), (6, 2, 3, 2), 2, 1, 1, 2, "zeros"),
    ("2d-d2-reflect", 2, (2, 3, 10, 12), (4, 3, 3, 3), 1, 2, 2, 1, "reflect"),
    ("2d-same-odd", 2, (3, 2, 7, 9), (3, 2, 4, 3), 1, "same", 1, 1, "zeros"),
    ("1d-s3-circular", 1, (2, 4, 21), (2, 2, 3), 3, 1, 2, 2, "circular"),
    ("1d-k8-same", 1, (2, 2, 33), (3, 2, 8), 1, "same", 1, 1, "zeros"),
]


@pytest.mark.parametrize("rate", [0.0, 0.5])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in CASES])
def test_policies_give_the_same_results(case, rate):
    _, ndim, xs, ws, stride, padding, dilation, groups, mode = case
    x = torch.randn(*xs, dtype=torch.float64)
    w = torch.randn(*ws, dtype=torch.float64)
    bias = torch.randn(ws[0], dtype=torch.float64)
    results = {}
    for save in ("input", "band"):
        xi, wi, bi = (t.clone().requires_grad_() for t in (x, w, bias))
        y, _ = bl_conv_with_band(
            xi, wi, bi, stride, padding, dilation, groups, ndim=ndim, padding_mode=mode,
            compress_rate=rate, backend="torch", save=save,
        )  # fmt: skip
        gy = torch.randn_like(y, generator=torch.Generator().manual_seed(1))
        results[save] = (y, *torch.autograd.grad(y, (xi, wi, bi), gy))
    for name, a, b in zip(("y", "dx", "dw", "db"), results["input"], results["band"]):
        assert_close_rel(a, b, 1e-12, name)


@pytest.mark.parametrize("algorithm", ["spectral", "spatial"])
def test_input_policy_keeps_the_callers_tensor(algorithm):
    """Zero padding is folded into the transforms (the spatial algorithm's projection), so what
    the backward keeps is the input itself (no padded copy, no band, no projected input)."""
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    kept = []

    def pack(t):
        kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        bl_conv_with_band(
            x, w, None, 1, 1, 1, 1, ndim=2, compress_rate=0.5, backend="torch", algorithm=algorithm
        )
    ptrs = {t.untyped_storage().data_ptr() for t in kept}
    assert ptrs == {x.untyped_storage().data_ptr(), w.untyped_storage().data_ptr()}


def _small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.75])
def test_saved_bytes_per_policy_on_a_small_model(rate):
    """``save='input'`` saves exactly what ``nn.Conv2d`` saves (the input, kept by the ReLU before
    anyway, and the weight); ``save='band'`` adds the input band of each layer and the filter
    bands its rule keeps."""
    torch.manual_seed(0)
    base = _small_cnn()
    x = torch.randn(4, 3, 16, 16)
    target = torch.randint(0, 4, (4,))
    nn_bytes = saved_bytes(base, x, target)
    per_policy = {}
    for save in ("input", "band"):
        model = convert(_small_cnn(), compress_rate=rate, backend="torch")
        model.load_state_dict(base.state_dict())
        for m in model.modules():
            if hasattr(m, "save"):
                m.save = save
        per_policy[save] = saved_bytes(model, x, target)
    assert per_policy["input"] == nn_bytes
    bands = [m.last_band for m in model.modules() if hasattr(m, "last_band")]
    x_bands = sum(b.num_kept * 4 * c * 8 for b, c in zip(bands, (3, 8, 8)))  # complex64
    # At batch 4 the 3x3 filters have more taps than the batch: their bands are saved too, but
    # only where the input gradient needs them (not in the first layer, whose input is data).
    w_bands = sum(b.num_kept * o * c * 8 for b, (o, c) in zip(bands[1:], ((8, 8), (16, 8))))
    # The data batch is kept by nn.Conv2d and by the input policy, not by the band policy.
    assert per_policy["band"] == nn_bytes - x.numel() * 4 + x_bands + w_bands

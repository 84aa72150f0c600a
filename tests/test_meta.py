"""Meta-device inputs give the output's shape and dtype, as ``F.conv1d``/``F.conv2d`` do, for
every layer kind and both algorithms (meta tensors are how large models are initialised, with
deferred init and ``to_empty``, and how shapes are inferred); and a model built under
``torch.device("meta")`` runs once its storage is materialised."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bltriton import BLConv1d, BLConv2d, bl_conv1d, bl_conv2d, convert

META = torch.device("meta")
ALGORITHMS = ("spectral", "spatial")
DTYPES = (torch.float32, torch.float64)

# (id, input shape, weight shape, conv keywords): odd sizes, strides, groups, unbatched input.
CASES_2D = [
    pytest.param((2, 4, 8, 8), (6, 4, 3, 3), {"padding": 1}, id="B2-C4-8x8-k3-p1"),
    pytest.param((3, 6, 7, 9), (4, 3, 3, 2), {"stride": 2, "groups": 2}, id="B3-C6-7x9-k3x2-s2-g2"),
    pytest.param((1, 3, 33, 5), (5, 3, 5, 3), {"padding": (2, 1), "dilation": (2, 1)}, id="B1-C3-33x5-d2"),
    pytest.param((4, 7, 7), (2, 4, 3, 3), {"padding": "same"}, id="unbatched-C4-7x7-same"),
]
CASES_1D = [
    pytest.param((2, 4, 16), (6, 4, 5), {"padding": 2}, id="B2-C4-L16-k5-p2"),
    pytest.param((3, 6, 33), (4, 3, 7), {"stride": 3, "groups": 2}, id="B3-C6-L33-k7-s3-g2"),
    pytest.param((4, 7), (2, 4, 3), {"padding": "same"}, id="unbatched-C4-L7-same"),
]


def _expected(conv, x_shape, w_shape, kwargs, dtype):
    """The shape and dtype ``F.conv*d`` gives for the same call on meta tensors."""
    x = torch.empty(x_shape, device=META, dtype=dtype)
    w = torch.empty(w_shape, device=META, dtype=dtype)
    return conv(x, w, torch.empty(w_shape[0], device=META, dtype=dtype), **kwargs)


def _check(y: torch.Tensor, ref: torch.Tensor) -> None:
    assert y.device.type == "meta", y.device
    assert (tuple(y.shape), y.dtype) == (tuple(ref.shape), ref.dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("x_shape,w_shape,kwargs", CASES_2D)
def test_bl_conv2d_meta(x_shape, w_shape, kwargs, algorithm, dtype):
    ref = _expected(F.conv2d, x_shape, w_shape, kwargs, dtype)
    x = torch.empty(x_shape, device=META, dtype=dtype)
    w = torch.empty(w_shape, device=META, dtype=dtype)
    b = torch.empty(w_shape[0], device=META, dtype=dtype)
    _check(bl_conv2d(x, w, b, **kwargs, compress_rate=0.5, algorithm=algorithm), ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("x_shape,w_shape,kwargs", CASES_1D)
def test_bl_conv1d_meta(x_shape, w_shape, kwargs, algorithm, dtype):
    ref = _expected(F.conv1d, x_shape, w_shape, kwargs, dtype)
    x = torch.empty(x_shape, device=META, dtype=dtype)
    w = torch.empty(w_shape, device=META, dtype=dtype)
    b = torch.empty(w_shape[0], device=META, dtype=dtype)
    _check(bl_conv1d(x, w, b, **kwargs, compress_rate=0.5, algorithm=algorithm), ref)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("save", ["input", "band"])
@pytest.mark.parametrize(
    "module,x_shape",
    [
        pytest.param(lambda **k: BLConv2d(4, 6, 3, padding=1, **k), (2, 4, 8, 8), id="BLConv2d-B2-C4-8x8"),
        pytest.param(lambda **k: BLConv1d(4, 6, 5, stride=2, **k), (3, 4, 33), id="BLConv1d-B3-C4-L33-s2"),
    ],
)
def test_module_meta(module, x_shape, save, algorithm):
    """The issue's call: a layer built on the meta device, called in training and eval mode."""
    layer = module(compress_rate=0.5, device="meta", algorithm=algorithm)
    layer.save = save
    plain = nn.Conv2d if isinstance(layer, nn.Conv2d) else nn.Conv1d
    ref_layer = plain(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
    ref = ref_layer.to("meta")(torch.empty(x_shape, device=META))
    _check(layer(torch.empty(x_shape, device=META)), ref)
    layer.eval()
    with torch.no_grad():
        _check(layer(torch.empty(x_shape, device=META)), ref)


def test_energy_mode_meta():
    """The energy mode has no values to search on meta tensors: the output's shape all the same,
    and the layer's band state is left for the first real call."""
    layer = BLConv2d(4, 6, 3, padding=1, compress_rate=None, energy=0.9, device="meta")
    _check(layer(torch.empty(2, 4, 8, 8, device=META)), torch.empty(2, 6, 8, 8, device=META))
    assert getattr(layer, "_energy_state", None) is None or layer._energy_state.searches == 0
    x, w = torch.empty(3, 4, 17, device=META), torch.empty(6, 4, 5, device=META)
    _check(bl_conv1d(x, w, compress_rate=None, energy=0.9), F.conv1d(x, w))


def test_meta_backward_shapes():
    """A backward on meta tensors gives the gradients' shapes (shape inference of a step)."""
    x = torch.empty(2, 4, 9, 9, device=META, requires_grad=True)
    layer = BLConv2d(4, 6, 3, padding=1, compress_rate=0.5, device="meta", algorithm="spectral")
    layer(x).sum().backward()
    assert x.grad.shape == x.shape and x.grad.device.type == "meta"
    assert layer.weight.grad.shape == layer.weight.shape
    assert layer.bias.grad.shape == layer.bias.shape


def _model() -> nn.Module:
    torch.manual_seed(0)
    return convert(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 5 * 5, 4),
        ),
        compress_rate=0.5,
    )


def test_model_built_on_meta_then_to_empty_runs():
    """Deferred init: build under ``torch.device("meta")``, infer a shape, materialise on the CPU
    with ``to_empty``, load real weights, and train one step with the same values as a model
    built on the CPU directly."""
    with torch.device("meta"):
        model = _model()
        y_meta = model(torch.empty(2, 3, 9, 9))  # shape inference under the context
    assert all(p.device.type == "meta" for p in model.parameters())
    assert y_meta.shape == (2, 4) and y_meta.device.type == "meta"

    model.to_empty(device="cpu")
    reference = _model()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 9, 9)
    y, y_ref = model(x), reference(x)
    assert y.device.type == "cpu" and torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for (name, p), p_ref in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=lambda m, name=name: f"{name}: {m}")

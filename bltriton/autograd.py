"""The differentiable op: a ``torch.autograd.Function`` with a separate ``setup_context`` (rather
than the op's ``register_autograd``, whose generated Function torch.func rejects) ties the
forward and backward ops of :mod:`bltriton.registered` together, so that ``torch.func.grad``,
``vmap``, ``jacrev`` and per-sample gradients work; ``torch.compile`` and ``torch.export`` trace
it into the two ops (or, for a CUDA call a layer plan takes, the plan's ``triton_op``s of
:mod:`bltriton.pipeline`). In plain eager mode a plan call takes the plan's own Function and
every other call the ops' bodies directly.

What the backward keeps (``ConvSpec.save_input``; the functional API's ``save``, default
``'input'``): a reference to the input and the weight, from which it recomputes both bands (one
input transform and one filter transform more per backward). Both tensors are usually alive
anyway (the input is the preceding ReLU's or batch norm's saved output, the weight a parameter),
so the layer adds no saved bytes of its own. ``save_input=False`` saves the input band instead
(smaller than the input at any rate > 0, and no recomputation), and the filter band when
recomputing it would cost more than one contraction."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import torch
import torch.autograd.forward_ad as _forward_ad
from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode

from bltriton import ops, pipeline
from bltriton import plan as _plan
from bltriton.general import band_conv_backward, band_conv_forward, band_conv_jvp
from bltriton.registered import _backward_impl, _band_conv_backward_op, _band_conv_op, _forward_impl
from bltriton.spec import ConvSpec
from bltriton.spec import compute_dtype as _compute_dtype
from bltriton.spec import op_kwargs as _op_kwargs
from bltriton.spec import spec_from_op as _spec_from_op  # noqa: F401  (imported from here by tests)

__all__ = [
    "ConvSpec",
    "band_conv",
    "band_conv_backward",
    "band_conv_forward",
    "band_conv_jvp",
]


def _filter_saved_as_band(spec: ConvSpec, need_x: bool) -> bool:
    """Whether the backward gets the filter band ``[F, O, Cg]`` (else the weight, from which it
    recomputes the band when dX is needed). Static: it depends on the spec only, never on sizes
    inside the traced op, so a graph with a dynamic batch has no branch on it."""
    return bool(spec.save_filter_band) and need_x and not spec.save_input


_NO_DOUBLE_BACKWARD = (
    "bltriton: double backward through a band-limited convolution (differentiating its gradient, "
    "e.g. a gradient penalty, torch.func.hessian or a Hessian-vector product) is not supported. "
    "First-order gradients (also with create_graph=True) and forward-mode derivatives are."
)


def _eager() -> bool:
    """Plain eager mode: no compiler, no functorch transform (vmap, grad, jvp), no dispatch mode
    (fake tensors, FX proxies, functionalization). There the Function calls the ops' bodies
    directly: the custom-op dispatch (schema binding, redispatch) cost about as much as a small
    layer's arithmetic (bench/NOTES.md). Everywhere else the registered ops run, so
    compiled graphs, export, opcheck and the vmap rules see them."""
    return (
        not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active()
        and _current_dispatch_mode() is None
    )


def _traced_plan(spec: ConvSpec, x, weight) -> bool:
    """Under ``torch.compile`` (no functorch transform), a CUDA call a plan takes runs as the
    plan's ``triton_op`` (:mod:`bltriton.pipeline`), whose Triton launches inductor sees;
    elsewhere the general ops (whose vmap rules :mod:`bltriton.batching` registers) call the
    plan inside. The interpreter's kernels cannot be traced (``wrap_triton`` hands them back
    unwrapped), so CPU tensors keep the general ops."""
    return (
        torch.compiler.is_compiling()
        and x.device.type == "cuda"
        and not torch._C._are_functorch_transforms_active()
        and _plan.takes(spec, x, weight)
    )


class _NoDoubleBackward(torch.autograd.Function):
    """Identity on a first-order gradient whose own backward raises: the backward op is not
    differentiable (it would need its own adjoint paths), and without this marker a second
    differentiation would silently see the gradient as a constant."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        return grad.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)

    @staticmethod
    def jvp(ctx, _g_t, _dy_t):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)


class _BandConv(torch.autograd.Function):
    """``(y, xb, wb) = band_conv(x_pad, weight, bias)``; only ``y`` is differentiable. Saves the
    input (``spec.save_input``) or its band, and the filter band or the weight (see
    :func:`_filter_saved_as_band`)."""

    generate_vmap_rule = True  # runs forward under vmap: the ops' batching rules do the work

    @staticmethod
    def forward(x_pad, weight, bias, spec: ConvSpec):
        if _eager():
            return _forward_impl(x_pad, weight, bias, spec)
        if _traced_plan(spec, x_pad, weight):
            return pipeline.plan_conv_op(x_pad, weight, bias, **_op_kwargs(spec))
        return _band_conv_op(x_pad, weight, bias, **_op_kwargs(spec))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x_pad, weight, bias, spec = inputs
        _, xb, wb = output
        ctx.mark_non_differentiable(xb, wb)
        ctx.spec = spec
        ctx.shapes = (list(x_pad.shape), list(weight.shape))
        ctx.dtypes = (x_pad.dtype, weight.dtype, None if bias is None else bias.dtype)
        kept_x = x_pad if spec.save_input else xb
        band = _filter_saved_as_band(spec, ctx.needs_input_grad[0]) and not _plan.takes(spec, x_pad, weight)
        saved = (kept_x, wb if band else weight)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)  # the same tensors: no memory beyond the backward's
        ctx.out_dtype = output[0].dtype

    @staticmethod
    def backward(ctx, dy, _dxb, _dwb):
        xb, filt = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x_shape, w_shape = ctx.shapes
        # The op has no autograd formula of its own (torch.func would reject a generated one
        # under create_graph=True, which torch.func.grad always uses): run it without recording
        # and mark its results as not differentiable again.
        db = None
        # db from the gradient's band is not recorded: under create_graph it comes from dy.sum.
        band_db = bool(need_b) and not torch.is_grad_enabled()
        with torch.no_grad():
            if _eager():
                dx, dw, db = _backward_impl(dy, xb, filt, ctx.spec, bool(need_x), bool(need_w), band_db)
            else:
                traced = _traced_plan(ctx.spec, _plan.Described.input_of(xb, ctx.spec), filt)
                op = pipeline.plan_conv_backward_op if traced else _band_conv_backward_op
                dx, dw = op(
                    dy,
                    xb,
                    filt,
                    x_shape=x_shape,
                    w_shape=w_shape,
                    need_x=bool(need_x),
                    need_w=bool(need_w),
                    **_op_kwargs(ctx.spec),
                )
        if torch.is_grad_enabled():
            dx, dw = _NoDoubleBackward.apply(dx, dy), _NoDoubleBackward.apply(dw, dy)
        if need_b:
            db = (dy.sum(dim=(0, *range(2, dy.dim()))) if db is None else db).to(b_dtype)
        grads = (dx.to(x_dtype) if need_x else None, dw.to(w_dtype) if need_w else None, db)
        return grads + (None,) * (len(ctx.needs_input_grad) - len(grads))  # the spec


class _BandConvWithJvp(_BandConv):
    """:class:`_BandConv` plus forward mode (``torch.func.jvp``/``jacfwd``). Separate because
    dynamo refuses to trace a Function that defines ``jvp``: compiled code uses the parent."""

    @staticmethod
    def jvp(ctx, x_t, w_t, b_t, _spec_t):
        xb, filt = ctx.saved_tensors
        y_t = band_conv_jvp(xb, filt, x_t, w_t, b_t, ctx.spec, ctx.out_dtype)
        return y_t, None, None


def _filter_band_worth_saving(kernel: tuple[int, ...], batch: int | torch.SymInt) -> bool:
    """Recomputing the filter band from the weight (a tensor autograd keeps alive anyway) costs
    ``prod(kernel)/batch`` of one contraction; when that is at most one, saving the band would
    cost more memory than it saves time (for the demo's FCN at batch 16 the saved filter bands
    were 4× the input bands). A symbolic batch (``torch.compile(dynamic=True)``,
    ``torch.export`` with a dynamic batch) is not compared, which would add a guard on it: the
    band is recomputed."""
    return isinstance(batch, int) and math.prod(kernel) > batch


def band_conv(
    x_pad: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    filter_cache: ops.FilterBandCache | None = None,
) -> torch.Tensor:
    """Band-limited valid correlation of a padded input (differentiable; see module docstring).

    Args:
        x_pad: ``[B, C, *Lp]``; weight: ``[O, C/groups, *k]``; bias: ``[O]`` or ``None``.
        spec: the call's description; ``spec.save_filter_band=None`` is decided here from the
            kernel taps and the batch (outside the op, so the op itself has no size branch).
        filter_cache: used only when no gradient is recorded (``no_grad``/``inference_mode``) and
            not under ``torch.compile``: the filter band comes from the cache (see
            :class:`bltriton.ops.FilterBandCache`) and the op's autograd plumbing is skipped.

    Returns:
        ``[B, O, *out]``.

    Raises:
        RuntimeError: under ``torch.jit.trace``, which cannot record the op.
    """
    if torch.jit.is_tracing():
        raise RuntimeError(
            "bltriton: torch.jit.trace cannot record a band-limited convolution (TorchScript does "
            "not support it); use torch.compile, or torch.export.export for a saved graph"
        )
    plan = _plan.lookup(spec, x_pad, weight)
    if plan is not None:
        # Outside a forward-mode level (dual tensors need the general Function's jvp).
        if _eager() and not (_wrapped(x_pad) or _wrapped(weight)) and _forward_ad._current_level < 0:
            return pipeline.apply(x_pad, weight, bias, spec, plan)
        if spec.save_filter_band is not False:  # the registered ops' fakes read it
            spec = _with_save_filter_band(spec, False)  # the plan never keeps the filter band
    elif (
        filter_cache is not None
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active()  # vmap & co. go through the ops
    ):
        if spec.algorithm == "spatial":  # no filter band to cache
            return _forward_impl(x_pad, weight, bias, spec)[0]
        wb = filter_cache.get(weight, spec.band, spec.dilation, _compute_dtype(x_pad.dtype))
        return band_conv_forward(x_pad, weight, bias, spec, filter_band=wb, keep_input_band=False)[0]
    if spec.save_filter_band is None:
        spec = _with_save_filter_band(spec, _filter_band_worth_saving(spec.kernel, x_pad.shape[0]))
    if _eager() and not (_wrapped(x_pad) or _wrapped(weight)):
        # Function.apply binds the arguments with inspect.signature on every call when a Function
        # has a separate setup_context (~20 us, a tenth of a small layer's fwd+bwd); outside
        # functorch transforms (and their leftover wrappers) it then calls the base class's
        # apply, as here.
        y, _, _ = super(torch.autograd.Function, _BandConvWithJvp).apply(x_pad, weight, bias, spec)
        return y
    function = _BandConv if torch.compiler.is_compiling() else _BandConvWithJvp
    y, _, _ = function.apply(x_pad, weight, bias, spec)
    return y


def _wrapped(t: torch.Tensor) -> bool:
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


@lru_cache(maxsize=256)
def _with_save_filter_band(spec: ConvSpec, save: bool) -> ConvSpec:
    return replace(spec, save_filter_band=save)


from bltriton import batching as _batching  # noqa: E402,F401  (registers the ops' vmap rules)

"""Batching rules (``torch.vmap``) for the two band-limited ops.

The forward folds a vmapped input into its batch dimension when the weight and bias are shared
(``vmap`` over samples, ``jacrev``'s forward): one call, no loop. Every other case (a vmapped
weight; the backward, whose weight gradient sums over the batch and so cannot fold the vmapped
dimension into it) runs one op call per vmapped slice and stacks the results: correct and
warning-free, as fast as a Python loop over the slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bltriton.registered import _band_conv_backward_op, _band_conv_op


def _slice(args: Sequence[torch.Tensor | None], in_dims: Sequence[int | None], i: int) -> list:
    return [a if d is None else a.select(d, i) for a, d in zip(args, in_dims)]


def _per_slice(
    op, batch_size: int, args, in_dims, kwargs
) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
    """Call ``op`` on each vmapped slice; outputs stacked along dim 0."""
    outs = [op(*_slice(args, in_dims, i), **kwargs) for i in range(batch_size)]
    stacked = tuple(torch.stack(o) for o in zip(*outs))
    return stacked, (0,) * len(stacked)


@torch.library.register_vmap("bltriton::band_conv")
def _band_conv_vmap(info, in_dims, x_pad, weight, bias, **kwargs):
    """``x_pad`` ``[V, B, C, *Lp]`` with shared weight and bias → one call on ``[V·B, C, *Lp]``;
    ``y`` comes back as ``[V, B, O, *out]``, ``xb`` as ``[F, V, B, C]``, ``wb`` unbatched."""
    x_dim, w_dim, b_dim = in_dims
    if w_dim is not None or b_dim is not None:
        return _per_slice(_band_conv_op, info.batch_size, (x_pad, weight, bias), in_dims, kwargs)
    x = x_pad.movedim(x_dim, 0)
    v, b = x.shape[:2]
    y, xb, wb = _band_conv_op(x.reshape(v * b, *x.shape[2:]), weight, bias, **kwargs)
    return (y.view(v, b, *y.shape[1:]), xb.view(xb.shape[0], v, b, xb.shape[2]), wb), (0, 1, None)


@torch.library.register_vmap("bltriton::band_conv_backward")
def _band_conv_backward_vmap(info, in_dims, dy, xb, filt, **kwargs):
    return _per_slice(_band_conv_backward_op, info.batch_size, (dy, xb, filt), in_dims, kwargs)

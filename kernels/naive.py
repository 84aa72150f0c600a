"""Pure-torch references of the pipeline kernels (:mod:`bltriton.kernels.transform` and
:mod:`bltriton.kernels.tap_mac`), with the same signatures and the same operand conventions.

They define what the Triton kernels compute, one einsum each, in the operands' dtype: the tests
compare the kernels against them, and a :class:`bltriton.plan.LayerPlan` built with
``kernels="naive"`` runs its whole launch sequence through them, which checks the plan's
operands and bookkeeping apart from the kernels. Not fast; never chosen by default.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["FromBand", "ToBand", "from_band", "mac", "to_band"]


class ToBand(NamedTuple):
    """One job of :func:`to_band`: ``out[f, b·C + c] = Σ_p E[f, p] · signal[b, c, p]``.

    Attributes:
        signal: real ``[B, C, H, W]``, any strides.
        op: real ``[2, F, H·W]``: the real and imaginary parts of ``E``.
        out: complex ``[F, B·C]`` with unit stride along the second axis.
    """

    signal: torch.Tensor
    op: torch.Tensor
    out: torch.Tensor


class FromBand(NamedTuple):
    """One job of :func:`from_band`: ``out[b, o, p] = Σ_f Re band[f, m]·op[2f, p] + Im
    band[f, m]·op[2f+1, p] (+ bias[o])``, ``m = b·O + o``.

    Attributes:
        band: complex ``[F, B·O]``.
        op: real ``[2F, Ho·Wo]``.
        out: real ``[B, O, Ho, Wo]``, any strides and float dtype.
        bias: real ``[O]`` or ``None``.
    """

    band: torch.Tensor
    op: torch.Tensor
    out: torch.Tensor
    bias: torch.Tensor | None


def to_band(jobs, *, precision: str = "ieee", config=None, wrap=None) -> None:
    """Every job of ``jobs`` (see :class:`ToBand`); ``precision``, ``config``, ``wrap`` are ignored."""
    for job in jobs:
        b, c = job.signal.shape[:2]
        s = job.signal.reshape(b * c, -1).to(job.op.dtype)
        job.out.copy_(torch.complex(job.op[0] @ s.T, job.op[1] @ s.T))


def from_band(jobs, *, precision: str = "ieee", config=None, wrap=None) -> None:
    """Every job of ``jobs`` (see :class:`FromBand`)."""
    for job in jobs:
        f, m = job.band.shape
        planes = torch.view_as_real(job.band).permute(1, 0, 2).reshape(m, 2 * f)  # [M, 2F]
        y = (planes @ job.op).view(job.out.shape)
        if job.bias is not None:
            y = y + job.bias.to(y.dtype).view(1, -1, 1, 1)
        job.out.copy_(y)


def filter_band(w: torch.Tensor, taps_op: torch.Tensor) -> torch.Tensor:
    """``Wc[f, o, c] = Σ_t (taps_op[0, f, t] + i·taps_op[1, f, t]) · w[o, c, t]``: ``[F, O, Cg]``."""
    o, cg = w.shape[:2]
    w2 = w.reshape(o * cg, -1).to(taps_op.dtype)
    return torch.complex(taps_op[0] @ w2.T, taps_op[1] @ w2.T).view(-1, o, cg)


def mac(
    mode,
    a,
    b,
    out,
    *,
    taps_op=None,
    groups: int = 1,
    precision: str = "ieee",
    db=None,
    config=None,
    wrap=None,
):
    """The three band contractions (``bltriton.ops`` conventions) written into ``out``; ``db``
    (``mode="dw"``) gets ``Σ_b Re b[0, b, o]``."""
    f = a.shape[0]
    if mode in ("fwd", "dx"):
        wc = filter_band(b, taps_op) if taps_op is not None else b
        o, cg = wc.shape[1:]
        og = o // groups
        wg = wc.reshape(f, groups, og, cg)
        if mode == "fwd":
            xg = a.reshape(f, a.shape[1], groups, cg)
            res = torch.einsum("fbgc,fgoc->fbgo", xg, wg).reshape(f, a.shape[1], o)
        else:
            gg = a.reshape(f, a.shape[1], groups, og)
            res = torch.einsum("fbgo,fgoc->fbgc", gg, wg).reshape(f, a.shape[1], groups * cg)
    else:
        bsz, c = a.shape[1:]
        o = b.shape[2]
        cg, og = c // groups, o // groups
        xg, gg = a.reshape(f, bsz, groups, cg), b.reshape(f, bsz, groups, og)
        res = torch.einsum("fbgo,fbgc->fgoc", gg, xg).reshape(f, o, cg)
        if db is not None:
            db.copy_(b[0].real.sum(0))
    out.copy_(res)

"""Comparison helpers shared by the tests."""

from __future__ import annotations

import torch


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative error ``||out - ref|| / ||ref||`` in float64 (0 if both are zero)."""
    out64, ref64 = out.detach().to(torch.float64), ref.detach().to(torch.float64)
    if out64.shape != ref64.shape:
        raise AssertionError(f"shape mismatch: {tuple(out64.shape)} vs {tuple(ref64.shape)}")
    denom = ref64.norm()
    num = (out64 - ref64).norm()
    if denom == 0:
        return float(num)
    return float(num / denom)


def assert_close_rel(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "") -> None:
    """Relative-error check whose message says where values differ most."""
    err = rel_err(out, ref)
    if not err <= tol:  # NaN fails too
        diff = (out.detach().to(torch.float64) - ref.detach().to(torch.float64)).abs()
        diff = torch.nan_to_num(diff, nan=float("inf"))
        idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        raise AssertionError(
            f"{what}: relative error {err:.3e} > {tol:.1e}; worst at index {idx}: "
            f"out={out.detach().flatten()[diff.flatten().argmax()].item():.6g} "
            f"ref={ref.detach().flatten()[diff.flatten().argmax()].item():.6g}; "
            f"{int(torch.isnan(out.detach().to(torch.float64)).sum())} NaN in output"
        )


def _padding_pairs(padding, ndim: int, kernel, dilation: int):
    if padding == "same":
        return tuple((dilation * (k - 1) // 2, dilation * (k - 1) - dilation * (k - 1) // 2) for k in kernel)
    return ((padding, padding),) * ndim


def check_against_reference(case, rate: float, backend: str, device="cpu") -> None:
    """Forward and all gradients of ``bl_conv_with_band`` on ``backend`` against the dense float64
    reference (full spectrum × explicit mask) and autograd through it.

    ``case`` is ``(id, ndim, batch, C, O, groups, size, kernel, stride, padding, dilation,
    padding_mode)`` with int stride/padding/dilation (padding may be ``'same'``).
    """
    from bltriton.functional import bl_conv_with_band
    from bltriton.reference import bl_conv_reference

    _, ndim, b, c, o, g, size, k, stride, padding, dilation, mode = case
    x = torch.randn(b, c, *size, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(o, c // g, *k, dtype=torch.float64, device=device, requires_grad=True)
    bias = torch.randn(o, dtype=torch.float64, device=device, requires_grad=True)
    y, band = bl_conv_with_band(x, w, bias, stride, padding, dilation, g, ndim=ndim, padding_mode=mode,
                                compress_rate=rate, backend=backend)  # fmt: skip
    y_ref, band_ref = bl_conv_reference(
        x, w, bias, stride=(stride,) * ndim, padding=_padding_pairs(padding, ndim, k, dilation),
        dilation=(dilation,) * ndim, groups=g, padding_mode=mode, compress_rate=rate,
    )  # fmt: skip
    assert band == band_ref
    assert (band.kept_fraction < 1.0) == (rate > 0)
    assert_close_rel(y, y_ref, 1e-12, "output")
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, bias), gy)
    grads_ref = torch.autograd.grad(y_ref, (x, w, bias), gy)
    for name, a, r in zip(["dx", "dw", "db"], grads, grads_ref):
        assert_close_rel(a, r, 1e-11, name)

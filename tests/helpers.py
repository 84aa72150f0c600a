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

"""Comparison helpers shared by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def two_sided_power(x: torch.Tensor, n: tuple[int, ...]) -> torch.Tensor:
    """Energy per coefficient of the full (two-sided) ``fftn`` of ``x`` at lengths ``n``, in
    float64, summed over every leading axis (batch, channels): nothing from the library."""
    dims = tuple(range(-len(n), 0))
    return torch.fft.fftn(x.double(), s=n, dim=dims).abs().square().sum(tuple(range(x.dim() - len(n))))


def held_fraction(power: torch.Tensor, band) -> float:
    """Fraction of a :func:`two_sided_power` inside the real-even full-plane mask of ``band``: the
    half-spectrum mask of the definition (``bltriton.spectral.kept_mask``) and its mirror
    ``k -> -k`` on every axis."""
    from bltriton.spectral import kept_mask

    n = band.n
    half = kept_mask(band)
    m = torch.zeros(n, dtype=torch.bool)
    if len(n) == 1:
        m[: half.shape[0]] = half
        m = m | m[(-torch.arange(n[0])) % n[0]]
    else:
        m[:, : half.shape[1]] = half
        m = m | m[(-torch.arange(n[0])) % n[0]][:, (-torch.arange(n[1])) % n[1]]
    return float(power[m].sum() / power.sum())


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


def child_env(cache_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["BLTRITON_CACHE_DIR"] = str(cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    for name in ("BLTRITON_AUTOTUNE", "BLTRITON_FORCE_RETUNE", "BLTRITON_PRINT_AUTOTUNING"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def run_autotune_child(
    code: str,
    cache_dir: Path,
    args: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    """Run ``code`` in a fresh ``python -c`` process sharing ``cache_dir``; return the JSON
    object the child printed on its last stdout line (e.g. ``{"stats": autotune.stats()}``).

    A variant that tunes through the real Triton launch path (``TRITON_INTERPRET=1`` on CPU, or
    CUDA) passes its own ``code`` and ``env={"TRITON_INTERPRET": "1"}``.
    """
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=child_env(cache_dir, env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])

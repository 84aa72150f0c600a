"""The compiler vouches for ``tap_cmac_kernel``: compiled for sm_90 and sm_80 with the ptxas shipped
in the triton wheel (no GPU needed), the heuristic default and every menu entry of the CIFAR 3x3
layer and an odd-sized one, in every mode and filter form, in tf32, bf16 and complex128, have no
register spill, shared memory within the device limit, tensor-core instructions on the tf32/bf16
path and 8-byte (or wider) global loads.

Marked ``compile_check`` (deselect with ``-m 'not compile_check'``). The full table, every
precision: ``python -m bench.compile_tap_mac --arch 90 --arch 80``.
"""

from __future__ import annotations

import functools

import pytest

from bench import compile_report as cr
from bench import compile_tap_mac as ct

pytestmark = pytest.mark.compile_check

_REASON = cr.nvidia_backend_available()
PRECISIONS = [p for p in ct.PRECISIONS if p[0] in ("tf32", "bf16", "c128")]


def _problems(r: ct.Result) -> list[str]:
    out = []
    if r.spill_bytes:
        out.append(f"spills {r.spill_bytes} B ({r.registers} registers)")
    if r.shared > r.shared_limit:
        out.append(f"shared {r.shared} B > limit {r.shared_limit}")
    if r.precision in ("tf32", "bf16") and r.tensor_core == "-":
        out.append("no tensor-core instruction")
    # wgmma takes 64-row tiles: the CIFAR layer's default (64x64) has them, the odd layer's
    # (32x32) runs mma.sync.
    wgmma_tile = r.tile.startswith("64x") or r.tile.startswith("128x")
    if (
        r.arch >= 90
        and r.precision in ("tf32", "bf16")
        and r.default
        and wgmma_tile
        and r.tensor_core != "wgmma"
    ):
        out.append(f"default tile without wgmma on sm_{r.arch} ({r.tensor_core})")
    if r.precision != "c128" and r.widest_load < 8:
        out.append(f"widest global load {r.widest_load} B < 8 B (one complex pair)")
    return out


@functools.lru_cache(maxsize=1)
def _defaults() -> tuple[ct.Result, ...]:
    """The default lane's compiles of both archs, in one child process (one start-up)."""
    jobs = ct.jobs(90, quick=True, precisions=PRECISIONS) + ct.jobs(80, quick=True, precisions=PRECISIONS)
    return tuple(ct.compile_jobs(jobs))


@pytest.mark.skipif(_REASON is not None, reason=str(_REASON))
@pytest.mark.parametrize(
    "arch,menu",
    [
        pytest.param(90, False, id="sm90-defaults"),
        pytest.param(80, False, id="sm80-defaults"),
        # Every menu entry: ~110 compiles per arch, minutes on a 2-core CPU.
        pytest.param(90, True, id="sm90-menu", marks=pytest.mark.slow),
        pytest.param(80, True, id="sm80-menu", marks=pytest.mark.slow),
    ],
)
def test_defaults_and_menu_compile_clean(arch, menu):
    jobs = ct.jobs(arch, quick=not menu, precisions=PRECISIONS)
    results = [r for r in _defaults() if r.arch == arch] if not menu else ct.compile_jobs(jobs)
    assert len(results) == len(jobs)
    assert sum(r.default for r in results) >= len(ct.SHAPES) * len(ct.FORMS) * len(PRECISIONS)
    failures = []
    for r in results:
        print(ct.row(r))
        failures += [f"{ct.row(r)}: {p}" for p in _problems(r)]
    assert not failures, "\n".join(failures)

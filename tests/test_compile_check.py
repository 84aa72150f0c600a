"""The compiler vouches for the kernel: compiled for sm_90 and sm_80 with the ptxas shipped in the
triton wheel (no GPU needed), the heuristic defaults and a random sample of the tuner's menu have
no register spill, shared memory within the device limit and the fit rule's estimate, tensor-core
instructions on the tf32/bf16/fp16/complex128 dot path and vector global loads.

Marked ``compile_check`` (deselect with ``-m 'not compile_check'``). The full table is
``python -m bench.compile_report --arch 90 --arch 80``.
"""

from __future__ import annotations

import functools

import pytest
import torch
from bltriton.kernels import band_mac as bm
from bltriton.kernels import configs as kc

from bench import compile_report as cr

pytestmark = pytest.mark.compile_check

_REASON = cr.nvidia_backend_available()

# (name, F, B, C, O, groups): a dense layer (16-byte aligned rows), the odd-sized one (8-byte
# alignment only), a depthwise one (broadcast path, K = 1) and a grouped one whose dw product
# (M = 10) takes the broadcast path with a K-slice wide enough for Triton's combine pass to
# have turned it into a tf32 dot.
SHAPES = [cr.SHAPES[0], cr.SHAPES[4], cr.SHAPES[3], ("small-grouped", 2, 33, 40, 20, 2)]


def _mnk(mode: str, shape: tuple) -> tuple[int, int, int]:
    _, b, c, o, g = shape
    return {"fwd": (b, o // g, c // g), "dx": (b, c // g, o // g), "dw": (o // g, c // g, b)}[mode]


def _jobs(arch: int, sample: int) -> list[tuple]:
    """Every heuristic default of SHAPES, plus ``sample`` random (mode, precision, pruned
    candidate) of the dense layer."""
    jobs = []
    for name, *shape in SHAPES:
        for mode in bm.MODES:
            m, n, k = _mnk(mode, shape)
            for _, dtype, prec in cr.PRECISIONS:
                cfg = kc.default_config(m, n, k, shape[0], prec, dtype)
                jobs.append((mode, tuple(shape), dtype, prec, cfg, arch, name))
    name, *shape = SHAPES[0]
    cap = (arch // 10, arch % 10)
    for _ in range(sample):  # what the tuner may pick for the dense layer on this arch
        mode = bm.MODES[int(torch.randint(3, ()))]
        _, dtype, prec = cr.PRECISIONS[int(torch.randint(len(cr.PRECISIONS), ()))]
        m, n, k = _mnk(mode, shape)
        menu = [
            c
            for c in kc.candidate_configs(m, n, k, shape[0], prec, dtype)
            if kc.fits(c, prec, dtype, cap, kc.SHARED_LIMIT[cap])
        ]
        cfg = menu[int(torch.randint(len(menu), ()))]
        jobs.append((mode, tuple(shape), dtype, prec, cfg, arch, name))
    return jobs


def _problems(r: cr.CompileResult, dtype: torch.dtype, default: bool) -> list[str]:
    out = []
    if r.spill_bytes:
        out.append(f"spills {r.spill_bytes} B ({r.registers} registers)")
    if r.shared > r.shared_limit:
        out.append(f"shared {r.shared} B > limit {r.shared_limit}")
    if r.dot and r.shared > r.shared_estimate:
        out.append(f"shared {r.shared} B above the fit rule's estimate {r.shared_estimate}")
    if not r.dot and r.ttir_dots:
        out.append(f"broadcast path compiled to {r.ttir_dots} tt.dot (precision not ours)")
    if r.dot and r.precision != "ieee" and r.tensor_core == "-":
        out.append("no tensor-core instruction")
    # The small grouped shape is here for the tt.dot check; its loads compile 4 bytes wide (an
    # open item in bench/NOTES.md), so its load width is not asserted.
    if dtype == torch.complex64 and r.shape != "small-grouped":
        # At least one 8-byte pair per thread everywhere; 16 bytes for the dense layer's defaults
        # (aligned rows, tiles large enough for two pairs per thread; a 16x16x8 tile on 4 warps
        # holds one pair per thread).
        want = 16 if (r.shape == "cifar3x3" and default) else 8
        if r.widest_load < want:
            out.append(f"widest global load {r.widest_load} B < {want} B")
    return out


SAMPLE = 4  # random menu entries of the dense layer per arch


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[int, dict[int, tuple[list, list]]]:
    """Both archs' jobs compiled in one child process (one start-up for all compiles); the menu
    sample is drawn under the seed of the first test that asks (returned, printed by each)."""
    seed = torch.initial_seed()
    jobs = {arch: _jobs(arch, SAMPLE) for arch in (90, 80)}
    results = cr.compile_jobs(jobs[90] + jobs[80])
    n90 = len(jobs[90])
    return seed, {90: (jobs[90], results[:n90]), 80: (jobs[80], results[n90:])}


@pytest.mark.skipif(_REASON is not None, reason=str(_REASON))
@pytest.mark.parametrize("arch", [90, 80])
def test_defaults_and_menu_sample_compile_clean(arch):
    sample = SAMPLE
    seed, compiled = _compiled()
    print(f"menu sample drawn under torch seed {seed}")
    jobs, results = compiled[arch]
    assert len(results) == len(jobs)
    assert all(r.arch == arch for r in results)
    failures = []
    for i, (job, r) in enumerate(zip(jobs, results)):
        print(cr._row(r))
        failures += [f"{cr._row(r)}: {p}" for p in _problems(r, job[2], i < len(jobs) - sample)]
    assert not failures, "\n".join(failures)


def test_fit_rule_prunes_what_cannot_run():
    """The prune hook's rule: off-menu dot tiles and tiles over the shared-memory limit go."""
    sm80, sm90 = (8, 0), (9, 0)
    mma = kc.DOT_MENUS["mma"][0]
    assert kc.fits(mma, "tf32", torch.complex64, sm90, 232448)
    assert not kc.fits(mma, "tf32", torch.complex64, sm90, kc.shared_estimate(mma) - 1)
    assert not kc.fits(kc._cfg(128, 128, 64, 8, 3), "tf32", torch.complex64, sm90, 232448)  # off-menu
    assert not kc.fits(kc._cfg(64, 64, 16, 4, 3), "ieee", torch.complex64, sm90, 232448)  # FMA spills
    big = kc.SM90_MENUS["mma"][-1]  # clean with wgmma, spills with mma.sync
    assert kc.fits(big, "bf16", torch.complex64, sm90, 232448)
    assert not kc.fits(big, "bf16", torch.complex64, sm80, 232448)
    assert kc.fits(kc._cfg(4, 4, 2, 1, 2), "ieee", torch.complex64, sm80, 0)  # broadcast tile
    for cls in kc.DOT_MENUS:
        dtype = torch.complex128 if cls == "fp64" else torch.complex64
        prec = {"mma": "tf32", "fma": "ieee", "fp64": "ieee"}[cls]
        for cap in (sm80, sm90):
            for cfg in kc.menu(cls, cap):
                assert kc.fits(cfg, prec, dtype, cap, kc.SHARED_LIMIT[cap]), (cls, kc.as_dict(cfg))

"""The compiler vouches for the transform kernels: compiled for sm_90 and sm_80 with the ptxas
shipped in the triton wheel (no GPU needed), the heuristic defaults of every shape of
``bench.compile_transform.SHAPES`` and the whole menu of the CIFAR layer (one job and its
two-job backward) in tf32, bf16 and float64 have no register spill, shared memory within the
device limit, tensor-core instructions (``wgmma``/``mma``) on every dot and, on the CIFAR
layer's aligned rows, 16-byte global loads.

Marked ``compile_check`` (deselect with ``-m 'not compile_check'``). The full table, fp32 ieee
included: ``python -m bench.compile_transform --arch 90 --arch 80``.
"""

from __future__ import annotations

import functools

import pytest
import torch

from bench import compile_report as cr
from bench import compile_transform as ct

pytestmark = pytest.mark.compile_check

_REASON = cr.nvidia_backend_available()
PRECISIONS = [p for p in ct.PRECISIONS if p[0] in ("fp32-tf32", "fp32-bf16", "fp64")]


#: The shapes whose whole menu is compiled (the ``slow`` lane); the default lane compiles every
#: shape's defaults.
MENU_SHAPES = ("cifar", "cifar-bwd")


@functools.lru_cache(maxsize=2)
def _results(menus: bool) -> tuple[ct.CompileResult, ...]:
    """Every compile of both archs, in one child process (one start-up for all compiles)."""
    jobs = []
    for arch in (90, 80):
        jobs += ct.make_jobs(arch, menu_shapes=MENU_SHAPES if menus else (), precisions=PRECISIONS)
    return tuple(ct.compile_jobs(jobs, workers=2))


@pytest.mark.skipif(_REASON is not None, reason=str(_REASON))
@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("kind", ["to_band", "from_band"])
@pytest.mark.parametrize(
    "menus", [pytest.param(False, id="defaults"), pytest.param(True, id="menus", marks=pytest.mark.slow)]
)
def test_transform_configs_compile_clean(kind, arch, menus):
    results = [r for r in _results(menus) if r.kind == kind and r.arch == arch]
    shapes = MENU_SHAPES if menus else ()
    expected = [j for j in ct.make_jobs(arch, menu_shapes=shapes, precisions=PRECISIONS)]
    assert len(results) == sum(1 for j in expected if j[0] == kind)
    problems = []
    for r in results:
        what = f"sm_{r.arch} {r.kind} {r.precision} {r.shape} {r.tile}/{r.warps}w/{r.stages}s"
        if r.spill_bytes:
            problems.append(f"{what}: spills {r.spill_bytes} B ({r.registers} registers)")
        if r.shared > r.shared_limit:
            problems.append(f"{what}: shared {r.shared} B > {r.shared_limit}")
        if r.tensor_core == "-":
            problems.append(f"{what}: no tensor-core instruction")
        if r.precision == "fp64" and not r.tensor_core.startswith("mma"):
            problems.append(f"{what}: fp64 without mma ({r.tensor_core})")
        if r.shape.startswith("cifar") and r.widest_load < 16:
            problems.append(f"{what}: widest global load {r.widest_load} B on aligned rows")
    assert not problems, "\n".join(problems)
    # wgmma where sm_90 can use it: the CIFAR defaults in tf32/bf16 (64-row tiles per warpgroup).
    if arch == 90:
        for r in results:
            if r.default and r.shape == "cifar" and r.precision != "fp64":
                assert r.tensor_core == "wgmma", f"{r.kind} {r.precision} default: {r.tensor_core}"


@pytest.mark.skipif(_REASON is not None, reason=str(_REASON))
def test_compile_helper_covers_every_kernel_argument():
    """The helper's signature names exactly the kernel's parameters (an added argument would
    otherwise compile a different kernel than the launcher runs)."""
    from bltriton.kernels import transform as T

    for kind, fn, build in (
        ("to_band", T.to_band_kernel, T.to_band_args),
        ("from_band", T.from_band_kernel, T.from_band_args),
    ):
        specs = next(s for n, k, s in ct.SHAPES if n == "cifar-bwd" and k == kind)
        jobs = ct._jobs_of(kind, specs, torch.float32)
        cfg = T.default_config(kind, 325, 8192, 1024, "tf32", torch.float32)
        _, args = build(jobs, cfg, "tf32", False)
        names = set(getattr(fn, "arg_names", None) or [p.name for p in fn.params])
        assert names == set(args) | set(cfg.kwargs)

"""What the compiler says about the transform kernels (``to_band_kernel``, ``from_band_kernel``),
without a GPU: the analogue of :mod:`bench.compile_report` for ``bltriton.kernels.transform``.
Registers and spill bytes (``ptxas -v``), shared memory (compiled metadata), tensor-core
instructions (``wgmma`` / ``mma`` in the PTX) and the widest global load per thread. Usage::

    python -m bench.compile_transform --arch 90 --arch 80 [--quick]

prints one markdown table per arch. ``tests/test_compile_check_transform.py`` uses
:func:`compile_jobs` on the heuristic defaults and the menu of the CIFAR shape.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from dataclasses import asdict, dataclass

import torch
import triton
from bltriton.kernels import transform as T

from bench import compile_report as cr

# (name, kind, jobs): each job is (B, C|O, H, W, F, memory format, bias) on the "meta" device.
# The CIFAR layer (128 x 64 maps of 32x32, the 3x3 band at r = 0.5: F = 325) as one job, its
# backward pair (to_band: the input and the output-gradient band; from_band: the input gradient
# and the filter-gradient fold [O, Cg, 3, 3]) as one two-job launch, channels_last, an odd shape
# (rows of 225 positions: no 16-element alignment) and three tiny jobs in one launch.
SHAPES = [
    ("cifar", "to_band", [(128, 64, 32, 32, 325, "nchw", False)]),
    ("cifar-cl", "to_band", [(128, 64, 32, 32, 325, "cl", False)]),
    ("cifar-bwd", "to_band", [(128, 64, 32, 32, 325, "nchw", False), (64, 64, 3, 3, 325, "nchw", False)]),
    ("odd", "to_band", [(30, 24, 15, 15, 63, "nchw", False)]),
    ("cifar", "from_band", [(128, 64, 32, 32, 325, "nchw", True)]),
    ("cifar-cl", "from_band", [(128, 64, 32, 32, 325, "cl", True)]),
    ("cifar-bwd", "from_band", [(128, 64, 32, 32, 325, "nchw", False), (64, 64, 3, 3, 325, "nchw", False)]),
    ("odd", "from_band", [(30, 40, 15, 15, 63, "nchw", True)]),
    # Three jobs with extents of 1 (which the JIT specialises to constants) and P = 17.
    (
        "ones",
        "to_band",
        [(1, 1, 1, 1, 1, "nchw", False), (1, 1, 1, 17, 1, "cl", False), (2, 3, 1, 1, 1, "nchw", False)],
    ),
    (
        "ones",
        "from_band",
        [(1, 1, 1, 1, 1, "nchw", True), (1, 1, 1, 17, 1, "cl", False), (2, 3, 1, 1, 1, "nchw", True)],
    ),
]
# (label, compute dtype, precision)
PRECISIONS = [
    ("fp32-tf32", torch.float32, "tf32"),
    ("fp32-ieee", torch.float32, "ieee"),
    ("fp32-bf16", torch.float32, "bf16"),
    ("fp64", torch.float64, "ieee"),
]
_DTYPES = {"torch.float32": torch.float32, "torch.float64": torch.float64}
_PTR = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


@dataclass(frozen=True)
class CompileResult:
    arch: int
    kind: str
    precision: str
    shape: str
    tile: str
    warps: int
    stages: int
    registers: int
    spill_bytes: int
    shared: int
    shared_limit: int
    tensor_core: str
    widest_load: int
    default: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.spill_bytes == 0 and self.shared <= self.shared_limit


def _jobs_of(kind: str, specs: list[tuple], dtype: torch.dtype) -> list:
    """Meta-device jobs of a SHAPES entry in the compute dtype."""
    cdtype = T._COMPLEX[dtype]
    out = []
    for b, c, h, w, f, fmt, bias in specs:
        mf = torch.channels_last if fmt == "cl" else torch.contiguous_format
        spatial = torch.empty(b, c, h, w, dtype=dtype, device="meta").to(memory_format=mf)
        if kind == "to_band":
            op = torch.empty(2, f, h * w, dtype=dtype, device="meta")
            out.append(T.ToBand(spatial, op, torch.empty(f, b * c, dtype=cdtype, device="meta")))
        else:
            band = torch.empty(f, b * c, dtype=cdtype, device="meta")
            op = torch.empty(2 * f, h * w, dtype=dtype, device="meta")
            b_t = torch.empty(c, dtype=dtype, device="meta") if bias else None
            out.append(T.FromBand(band, op, spatial, b_t))
    return out


def _signature(fn, args: dict, constexprs: dict):
    """As :func:`bench.compile_report._signature`, for any float pointer dtype."""
    signature, consts, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name], consts[name] = "constexpr", constexprs[name]
            continue
        value = args[name]
        if isinstance(value, torch.Tensor):
            signature[name] = _PTR[value.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif value == 1:
            signature[name], consts[name] = "constexpr", 1
        else:
            signature[name] = "i64" if abs(value) >= 2**31 else "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, consts, attrs


def compile_config(kind: str, shape: str, dtype, precision: str, cfg, arch: int, default: bool = False):
    """Compile one (kind, SHAPES entry, precision, config) for ``sm_<arch>``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = T.to_band_kernel if kind == "to_band" else T.from_band_kernel
    if not isinstance(fn, triton.runtime.jit.JITFunction):
        raise RuntimeError("compile_config needs TRITON_INTERPRET unset (use compile_jobs)")
    cfg = T.as_config(kind, cfg)
    specs = next(s for n, k, s in SHAPES if n == shape and k == kind)
    jobs = _jobs_of(kind, specs, dtype)
    build = T.to_band_args if kind == "to_band" else T.from_band_args
    _, args = build(jobs, cfg, precision, False)
    names = {p.name for p in fn.params if p.is_constexpr}
    constexprs = {k: v for k, v in args.items() if k in names}
    sig, consts, attrs = _signature(fn, args, {**cfg.kwargs, **constexprs})
    out = io.StringIO()
    knobs = triton.knobs
    start = time.perf_counter()
    with knobs.nvidia.scope(), knobs.compilation.scope(), contextlib.redirect_stdout(out):
        knobs.nvidia.dump_ptxas_log = True
        knobs.compilation.always_compile = True
        compiled = triton.compile(
            ASTSource(fn, sig, consts, attrs),
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
        )
    seconds = time.perf_counter() - start
    regs, spill = cr._ptxas_counts(out.getvalue())
    ptx = compiled.asm["ptx"]
    label = next((lab for lab, d, p in PRECISIONS if d == dtype and p == precision), precision)
    return CompileResult(
        arch=arch,
        kind=kind,
        precision=label,
        shape=shape,
        tile="x".join(str(cfg.kwargs[k]) for k in T.KINDS[kind]),
        warps=cfg.num_warps,
        stages=cfg.num_stages,
        registers=regs,
        spill_bytes=spill,
        shared=int(compiled.metadata.shared),
        shared_limit=cr.kc.SHARED_LIMIT[(arch // 10, arch % 10)],
        tensor_core=cr.tensor_core_instr(ptx),
        widest_load=cr.widest_load(ptx),
        default=default,
        seconds=seconds,
    )


def _largest(kind: str, specs: list[tuple]) -> tuple[int, int, int]:
    """(F, M, P) of the job with the most work: what the launcher's default is sized for."""
    return max(((f, b * c, h * w) for b, c, h, w, f, *_ in specs), key=lambda t: t[0] * t[1] * t[2])


def make_jobs(arch: int, *, menu_shapes: tuple[str, ...] = (), precisions=None) -> list[tuple]:
    """Every shape's heuristic default per precision, plus the whole menu of ``menu_shapes``:
    ``(kind, shape, dtype, precision, config dict, arch, is_default)``, one per distinct config."""
    jobs, seen = [], set()
    for name, kind, specs in SHAPES:
        f, m, p = _largest(kind, specs)
        for _, dtype, prec in precisions or PRECISIONS:
            menu = T.candidate_configs(kind, f, m, p, prec, dtype)
            for i, cfg in enumerate(menu if name in menu_shapes else menu[:1]):
                ident = (name, kind, str(dtype), prec, tuple(sorted(T.as_dict(kind, cfg).items())))
                if ident not in seen:
                    seen.add(ident)
                    jobs.append((kind, name, dtype, prec, T.as_dict(kind, cfg), arch, i == 0))
    return jobs


def _run(job: tuple) -> CompileResult:
    return compile_config(*job)


def compile_jobs(jobs: list[tuple], workers: int = 2, timeout: float = 900) -> list[CompileResult]:
    """Compile :func:`make_jobs` entries in a child process without ``TRITON_INTERPRET``."""
    payload = [[k, n, str(d), p, c, a, dflt] for k, n, d, p, c, a, dflt in jobs]
    return [
        CompileResult(**row)
        for row in cr.run_compile_child("bench.compile_transform", payload, workers, timeout)
    ]


def _jobs_json_main(workers: int) -> int:
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(k, n, _DTYPES[d], p, c, a, dflt) for k, n, d, p, c, a, dflt in json.load(sys.stdin)]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for r in pool.map(_run, jobs):
            print(json.dumps(asdict(r)), flush=True)
    return 0


HEADER = (
    "| arch | kernel | precision | shape | tile | warps/stages | default | registers | spill B "
    "| shared / limit (B) | tensor core | widest load (B) |"
)


def row(r: CompileResult) -> str:
    return (
        f"| sm_{r.arch} | {r.kind} | {r.precision} | {r.shape} | {r.tile} | {r.warps}/{r.stages} | "
        f"{'yes' if r.default else ''} | {r.registers} | {r.spill_bytes} | {r.shared} / {r.shared_limit} | "
        f"{r.tensor_core} | {r.widest_load} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", help="compute capability ×10 (80, 90)")
    parser.add_argument("--quick", action="store_true", help="heuristic defaults only")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compiles")
    parser.add_argument("--jobs-json", help="'-': compile the JSON job list on stdin (see compile_jobs)")
    args = parser.parse_args(argv)
    reason = cr.nvidia_backend_available()
    if reason:
        print(f"compile report skipped: {reason}", file=sys.stderr)
        return 2
    if args.jobs_json:
        return _jobs_json_main(args.jobs)
    from concurrent.futures import ProcessPoolExecutor

    for arch in args.arch or [90, 80]:
        jobs = make_jobs(arch, menu_shapes=() if args.quick else tuple({n for n, _, _ in SHAPES}))
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(_run, jobs))
        print(f"# transform kernels compiled for sm_{arch}\n")
        print(f"triton {triton.__version__}, {len(jobs)} compiles in {time.perf_counter() - start:.0f} s.\n")
        print(HEADER)
        print("|" + "---|" * (HEADER.count("|") - 1))
        for r in results:
            print(row(r))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

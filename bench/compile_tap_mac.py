"""What the compiler says about ``tap_cmac_kernel`` (``kernels/tap_mac.py``), without a GPU.

The same reading as :mod:`bench.compile_report` (registers and spill bytes from ``ptxas -v``,
shared memory from the compiled metadata, ``wgmma`` / ``mma`` in the PTX, the widest global load)
for the tap-filter contraction: every mode, both filter forms, the heuristic default and the menu.
Usage::

    python -m bench.compile_tap_mac --arch 90 --arch 80 [--quick]

prints one markdown table per arch. ``tests/test_compile_check_tap_mac.py`` holds the defaults and
the menu to it.
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
from bltriton.kernels import tap_mac as tm

from bench import compile_report as cr

# (name, F, B, C, O, groups, kernel): the CIFAR 3x3 band at r=0.5 and an odd-sized layer (rows
# 8-byte aligned only, ragged tiles everywhere).
SHAPES = [
    ("cifar3x3", 325, 128, 64, 64, 1, (3, 3)),
    ("odd", 37, 30, 21, 35, 1, (2, 3)),
]
# (label, complex dtype, precision)
PRECISIONS = [
    ("tf32", torch.complex64, "tf32"),
    ("bf16", torch.complex64, "bf16"),
    ("fp16", torch.complex64, "fp16"),
    ("ieee", torch.complex64, "ieee"),
    ("c128", torch.complex128, "ieee"),
]
# (mode, filter form): dw always writes db.
FORMS = [("fwd", "taps"), ("fwd", "band"), ("dx", "taps"), ("dx", "band"), ("dw", "db")]

SHARED_LIMIT = {80: 166912, 90: 232448}


@dataclass(frozen=True)
class Result:
    arch: int
    mode: str
    form: str
    precision: str
    shape: str
    tile: str
    warps: int
    stages: int
    default: bool
    registers: int
    spill_bytes: int
    shared: int
    shared_limit: int
    tensor_core: str
    widest_load: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.spill_bytes == 0 and self.shared <= self.shared_limit


def dims(mode: str, shape: tuple) -> tuple[int, int, int, int, int]:
    """``(m, n, k, f, taps)`` of one layer's contraction (taps 0 for dw)."""
    f, b, c, o, g, kernel = shape
    taps = 1
    for d in kernel:
        taps *= d
    m, n, k = {"fwd": (b, o // g, c // g), "dx": (b, c // g, o // g), "dw": (o // g, c // g, b)}[mode]
    return m, n, k, f, 0 if mode == "dw" else taps


def _operands(mode: str, form: str, shape: tuple, dtype: torch.dtype) -> dict:
    f, b, c, o, g, kernel = shape
    real = torch.float64 if dtype == torch.complex128 else torch.float32

    def meta(*s, dt=dtype):
        return torch.empty(*s, dtype=dt, device="meta")

    if mode == "dw":
        return dict(a=meta(f, b, c), b=meta(f, b, o), out=meta(f, o, c // g), db=meta(o, dt=torch.float32))
    a = meta(f, b, c) if mode == "fwd" else meta(f, b, o)
    out = meta(f, b, o) if mode == "fwd" else meta(f, b, c)
    if form == "taps":
        taps = dims(mode, shape)[4]
        return dict(a=a, b=meta(o, c // g, *kernel, dt=real), out=out, taps_op=meta(2, f, taps, dt=real))
    return dict(a=a, b=meta(f, o, c // g), out=out)


def _signature(args: tuple, constexprs: dict):
    """Types, constexprs and divisibility as the JIT specializes these values (ints equal to 1
    become constexprs; ints and pointers divisible by 16 get ``tt.divisibility = 16``)."""
    fn = tm.tap_cmac_kernel
    signature, consts, attrs = {}, {}, {}
    values = dict(zip(fn.arg_names, args))
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name], consts[name] = "constexpr", constexprs[name]
            continue
        value = values[name]
        if isinstance(value, torch.Tensor):
            signature[name] = {torch.float32: "*fp32", torch.float64: "*fp64"}[value.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif value == 1:
            signature[name], consts[name] = "constexpr", 1
        else:
            signature[name] = "i64" if abs(value) >= 2**31 else "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, consts, attrs


def compile_config(mode, form, shape, dtype, precision, cfg_dict, arch, shape_name, default) -> Result:
    """Compile one (mode, form, shape, precision, config) for ``sm_<arch>`` and read the result."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if not isinstance(tm.tap_cmac_kernel, triton.runtime.jit.JITFunction):
        raise RuntimeError("compile_config needs TRITON_INTERPRET unset (use compile_jobs)")
    cfg = tm._cfg(*(cfg_dict[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")), cfg_dict["num_warps"],
                  cfg_dict["num_stages"], freqs=cfg_dict["FREQS"])  # fmt: skip
    ops = _operands(mode, form, shape, dtype)
    _grid, args, constexprs, _ = tm.launch_args(
        mode, ops["a"], ops["b"], ops["out"], ops.get("taps_op"), shape[4], precision, ops.get("db"),
        cfg, False,
    )  # fmt: skip
    sig, consts, attrs = _signature(args, constexprs)
    src = ASTSource(tm.tap_cmac_kernel, sig, consts, attrs)
    knobs = triton.knobs
    log = io.StringIO()
    start = time.perf_counter()
    with knobs.nvidia.scope(), knobs.compilation.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log = True
        knobs.compilation.always_compile = True
        compiled = triton.compile(
            src,
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, "maxnreg": tm.MAXNREG},
        )
    seconds = time.perf_counter() - start
    regs, spill = cr._ptxas_counts(log.getvalue())
    ptx = compiled.asm["ptx"]
    kw = cfg.kwargs
    return Result(
        arch=arch,
        mode=mode,
        form=form,
        precision=precision if dtype == torch.complex64 else "c128",
        shape=shape_name,
        tile=f"{kw['BLOCK_M']}x{kw['BLOCK_N']}x{kw['BLOCK_K']}/f{kw['FREQS']}",
        warps=cfg.num_warps,
        stages=cfg.num_stages,
        default=default,
        registers=regs,
        spill_bytes=spill,
        shared=int(compiled.metadata.shared),
        shared_limit=SHARED_LIMIT[arch],
        tensor_core=cr.tensor_core_instr(ptx),
        widest_load=cr.widest_load(ptx),
        seconds=seconds,
    )


def jobs(arch: int, quick: bool = False, shapes=SHAPES, precisions=PRECISIONS) -> list[tuple]:
    """Every (mode, form, shape, precision, config) of the default (``quick``) or of the menu."""
    out = []
    for name, *shape in shapes:
        for mode, form in FORMS:
            m, n, k, f, taps = dims(mode, tuple(shape))
            for _, dtype, prec in precisions:
                default = tm.default_config(mode, m, n, k, f, taps, prec, dtype, shape[4])
                menu = (
                    [default]
                    if quick
                    else tm.candidate_configs(mode, m, n, k, f, taps, prec, dtype, shape[4])
                )
                for cfg in menu:
                    cfg_dict = {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
                    is_default = tm._key(cfg) == tm._key(default)
                    out.append((mode, form, tuple(shape), dtype, prec, cfg_dict, arch, name, is_default))
    return out


def _run(job: tuple) -> Result:
    return compile_config(*job)


_DTYPES = {"torch.complex64": torch.complex64, "torch.complex128": torch.complex128}


def compile_jobs(job_list: list[tuple], workers: int = 2, timeout: float = 900) -> list[Result]:
    """Compile jobs in a child process without ``TRITON_INTERPRET`` (under the interpreter
    ``@triton.jit`` gives functions the compiler cannot take), ``workers`` at a time."""
    payload = [
        [mode, form, [*shape[:5], list(shape[5])], str(dtype), prec, cfg, arch, name, default]
        for mode, form, shape, dtype, prec, cfg, arch, name, default in job_list
    ]
    return [Result(**row) for row in cr.run_compile_child("bench.compile_tap_mac", payload, workers, timeout)]


def _jobs_json_main(workers: int) -> int:
    from concurrent.futures import ProcessPoolExecutor

    job_list = [
        (mode, form, (*shape[:5], tuple(shape[5])), _DTYPES[dtype], prec, cfg, arch, name, default)
        for mode, form, shape, dtype, prec, cfg, arch, name, default in json.load(sys.stdin)
    ]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for r in pool.map(_run, job_list):
            print(json.dumps(asdict(r)), flush=True)
    return 0


HEADER = (
    "| arch | mode | filter | precision | shape | tile (M×N×K/FREQS) | warps/stages | default | registers "
    "| spill B | shared / limit (B) | tensor core | widest load (B) |"
)


def row(r: Result) -> str:
    return (
        f"| sm_{r.arch} | {r.mode} | {r.form} | {r.precision} | {r.shape} | {r.tile} | "
        f"{r.warps}/{r.stages} | {'yes' if r.default else ''} | {r.registers} | {r.spill_bytes} | "
        f"{r.shared} / {r.shared_limit} | {r.tensor_core} | {r.widest_load} |"
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
    for arch in args.arch or [90, 80]:
        job_list = jobs(arch, args.quick)
        start = time.perf_counter()
        results = compile_jobs(job_list, args.jobs)
        bad = [r for r in results if not r.ok]
        print(f"# tap_cmac_kernel compiled for sm_{arch}\n")
        print(
            f"triton {triton.__version__}, {len(results)} compiles in {time.perf_counter() - start:.0f} s; "
        )
        print(f"spilling or over shared memory: **{len(bad)}**\n")
        print(HEADER)
        print("|" + "---|" * (HEADER.count("|") - 1))
        for r in results:
            print(row(r))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

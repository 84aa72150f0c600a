"""What the compiler says about ``band_cmac_kernel``, without a GPU.

Triton compiles for an explicit NVIDIA target with the ``ptxas`` shipped in its wheel, so every
config the tuner may pick can be checked on a CPU machine: registers and spill bytes (``ptxas
-v``), shared memory (the compiled metadata) against the device limit, tensor-core instructions
(``wgmma`` / ``mma`` in the PTX) and the widest global load per thread (``ld.global.v*`` and
``cp.async`` sizes). Usage::

    python -m bench.compile_report --arch 90 --arch 80 [--quick] [--out bench/results]

prints one table per arch and writes ``compile-sm<arch>.md`` under ``--out``. The
``compile_check`` tests use :func:`compile_config` on the heuristic defaults and a sample of the
menu.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import triton
from bltriton.kernels import band_mac as bm
from bltriton.kernels import configs as kc

# (name, F, B, C, O, groups): the GPU-lane shapes (CIFAR 3x3 band at r=0.5, the wide layer, a
# grouped and a depthwise layer) and an odd-sized one (alignment that allows only 8-byte loads).
SHAPES = [
    ("cifar3x3", 325, 128, 64, 64, 1),
    ("wide", 91, 128, 128, 128, 1),
    ("grouped", 300, 64, 64, 64, 4),
    ("depthwise", 300, 64, 64, 64, 64),
    ("odd", 50, 30, 24, 40, 1),
]
# (label, complex dtype, precision)
PRECISIONS = [
    ("c64-ieee", torch.complex64, "ieee"),
    ("c64-tf32", torch.complex64, "tf32"),
    ("c64-bf16", torch.complex64, "bf16"),
    ("c64-fp16", torch.complex64, "fp16"),
    ("c128", torch.complex128, "ieee"),
]


def nvidia_backend_available() -> str | None:
    """``None`` when this triton can compile for NVIDIA targets, else the reason it cannot."""
    try:
        from triton.backends import backends

        if "nvidia" not in backends:
            return "the installed triton has no NVIDIA backend"
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except Exception as err:  # any import failure means no usable backend
        return f"the installed triton has no usable NVIDIA backend ({type(err).__name__}: {err})"
    return None


@dataclass(frozen=True)
class CompileResult:
    arch: int
    mode: str
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
    dot: bool
    shared_estimate: int
    rule_fits: bool
    seconds: float
    # tt.dot ops in the Triton IR: one on the dot path; none on the broadcast path (Triton's
    # combine pass can turn a broadcast-multiply-sum into a dot at the default tf32 precision).
    ttir_dots: int = -1

    @property
    def ok(self) -> bool:
        return self.spill_bytes == 0 and self.shared <= self.shared_limit


def _operands(mode: str, shape: tuple[int, ...], dtype: torch.dtype):
    f, b, c, o, g = shape
    x = torch.empty(f, b, c, dtype=dtype, device="meta")
    w = torch.empty(f, o, c // g, dtype=dtype, device="meta")
    gr = torch.empty(f, b, o, dtype=dtype, device="meta")
    return {"fwd": (x, w), "dx": (gr, w), "dw": (x, gr)}[mode]


def _signature(args: dict, constexprs: dict):
    """Types, constexprs and divisibility attributes as the JIT would specialize these values
    (ints equal to 1 become constexprs; ints and 16-byte aligned pointers divisible by 16 get
    ``tt.divisibility = 16``; torch allocations are aligned)."""
    fn = bm.band_cmac_kernel
    signature, consts, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name], consts[name] = "constexpr", constexprs[name]
            continue
        value = args[name]
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


_LOAD_RE = re.compile(r"ld\.global[\w.]*?(?:\.v(\d))?\.[bfsu](\d+)\s")
_CP_ASYNC_RE = re.compile(
    r"cp\.async\.c[ag]\.shared\.global\s*\[[^\]]*\],\s*\[[^\]]*\],\s*(0x[0-9a-fA-F]+|\d+)"
)


def widest_load(ptx: str) -> int:
    """Widest global load per thread in bytes (vector ``ld.global`` or ``cp.async``)."""
    widths = [int(v or 1) * int(bits) // 8 for v, bits in _LOAD_RE.findall(ptx)]
    widths += [int(n, 0) for n in _CP_ASYNC_RE.findall(ptx)]
    return max(widths, default=0)


def tensor_core_instr(ptx: str) -> str:
    if "wgmma" in ptx:
        return "wgmma"
    m = re.search(r"mma\.sync\.aligned\.(\w+)", ptx)
    return f"mma.{m.group(1)}" if m else "-"


def _ptxas_counts(log: str) -> tuple[int, int]:
    regs = re.findall(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if not regs:
        raise RuntimeError(f"no ptxas register count in the log:\n{log[-2000:]}")
    return int(regs[-1]), sum(int(st) + int(ld) for st, ld in spills)


def compile_config(mode, shape, dtype, precision, cfg, arch: int, shape_name: str = "") -> CompileResult:
    """Compile one (mode, shape, precision, config) for ``sm_<arch>`` and read what came out."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if not isinstance(bm.band_cmac_kernel, triton.runtime.jit.JITFunction):
        raise RuntimeError("compile_config needs TRITON_INTERPRET unset (use compile_jobs)")
    cfg = kc.as_config(cfg)
    problem = bm._operands(mode, *_operands(mode, shape, dtype), shape[-1])
    flags = bm.derived_flags(problem, cfg, precision, interpret=False)
    sig, consts, attrs = _signature(bm.kernel_args(problem, cfg), {**cfg.kwargs, **flags})
    src = ASTSource(bm.band_cmac_kernel, sig, consts, attrs)
    knobs = triton.knobs
    out = io.StringIO()
    start = time.perf_counter()
    with (
        knobs.nvidia.scope(),
        knobs.compilation.scope(),
        contextlib.redirect_stdout(out),
    ):
        knobs.nvidia.dump_ptxas_log = True
        knobs.compilation.always_compile = True
        compiled = triton.compile(
            src,
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
        )
    seconds = time.perf_counter() - start
    regs, spill = _ptxas_counts(out.getvalue())
    ptx = compiled.asm["ptx"]
    kw = cfg.kwargs
    cap = (arch // 10, arch % 10)
    return CompileResult(
        arch=arch,
        mode=mode,
        precision=precision if dtype == torch.complex64 else "c128",
        shape=shape_name,
        tile=f"{kw['BLOCK_M']}x{kw['BLOCK_N']}x{kw['BLOCK_K']}"
        + (f"/f{kw['FREQS']}" if kw["FREQS"] > 1 else ""),
        warps=cfg.num_warps,
        stages=cfg.num_stages,
        registers=regs,
        spill_bytes=spill,
        shared=int(compiled.metadata.shared),
        shared_limit=kc.SHARED_LIMIT[cap],
        tensor_core=tensor_core_instr(ptx),
        widest_load=widest_load(ptx),
        dot=kc.uses_dot(cfg),
        shared_estimate=kc.shared_estimate(cfg, dtype),
        rule_fits=kc.fits(cfg, precision, dtype, cap, kc.SHARED_LIMIT[cap]),
        seconds=seconds,
        ttir_dots=len(re.findall(r"\btt\.dot\b", compiled.asm["ttir"])),
    )


def _jobs(arch: int, quick: bool) -> list[tuple]:
    """Every (mode, shape, precision, config) the tuner may pick for the report's shapes, one
    entry per distinct compile. ``quick``: the heuristic defaults only."""
    jobs, seen = [], set()
    for name, *shape in SHAPES:
        f, b, c, o, g = shape
        for mode in bm.MODES:
            m, n, k = {"fwd": (b, o // g, c // g), "dx": (b, c // g, o // g), "dw": (o // g, c // g, b)}[mode]
            for label, dtype, prec in PRECISIONS:
                default = kc.default_config(m, n, k, f, prec, dtype)
                menu = [default] if quick else kc.candidate_configs(m, n, k, f, prec, dtype)
                for cfg in menu:
                    # Specialization sees sizes and strides only through divisibility by 16.
                    sizes = tuple((v % 16 == 0, v == 1) for v in (f, b, c, o, g, m, n, k))
                    ident = (mode, label, sizes, tuple(sorted(kc.as_dict(cfg).items())))
                    if ident not in seen:
                        seen.add(ident)
                        jobs.append((mode, tuple(shape), dtype, prec, kc.as_dict(cfg), arch, name))
    return jobs


def _run(job: tuple) -> CompileResult:
    return compile_config(*job)


_DTYPES = {"torch.complex64": torch.complex64, "torch.complex128": torch.complex128}


def run_compile_child(module: str, payload: list, workers: int, timeout: float) -> list[dict]:
    """Run ``python -m <module> --jobs-json - --jobs <workers>`` with the JSON ``payload`` on stdin
    and without ``TRITON_INTERPRET`` (under the interpreter ``@triton.jit`` gives functions the
    compiler cannot take); one result dict per JSON line it prints. Shared by the compile
    reports of every kernel."""
    import json
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", module, "--jobs-json", "-", "--jobs", str(workers)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"compile child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def compile_jobs(jobs: list[tuple], workers: int = 2, timeout: float = 600) -> list[CompileResult]:
    """Compile ``(mode, shape, dtype, precision, config, arch, shape_name)`` jobs in a child
    process without ``TRITON_INTERPRET`` (under the interpreter ``@triton.jit`` gives functions
    the compiler cannot take), ``workers`` compiles at a time."""
    payload = [
        [mode, list(shape), str(dtype), prec, kc.as_dict(cfg), arch, name]
        for mode, shape, dtype, prec, cfg, arch, name in jobs
    ]
    rows = run_compile_child("bench.compile_report", payload, workers, timeout)
    return [CompileResult(**row) for row in rows]


def _jobs_json_main(workers: int) -> int:
    """Child side of :func:`compile_jobs`: jobs as JSON on stdin, one result per line."""
    import json
    from concurrent.futures import ProcessPoolExecutor

    jobs = [
        (mode, tuple(shape), _DTYPES[dtype], prec, cfg, arch, name)
        for mode, shape, dtype, prec, cfg, arch, name in json.load(sys.stdin)
    ]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for r in pool.map(_run, jobs):
            print(json.dumps(asdict(r)), flush=True)
    return 0


_HEADER = (
    "| arch | mode | precision | shape | tile (M×N×K complex) | warps/stages | registers | spill B "
    "| shared / limit (B) | tensor core | widest load (B) | rule: fits |"
)


def _row(r: CompileResult) -> str:
    return (
        f"| sm_{r.arch} | {r.mode} | {r.precision} | {r.shape} | {r.tile} | {r.warps}/{r.stages} | "
        f"{r.registers} | {r.spill_bytes} | {r.shared} / {r.shared_limit} | {r.tensor_core} | "
        f"{r.widest_load} | {'yes' if r.rule_fits else 'pruned'} |"
    )


def summary(results: list[CompileResult]) -> list[str]:
    """Counts that matter: the pruned menu must be clean, the rule should not drop clean configs."""
    kept = [r for r in results if r.rule_fits]
    bad = [r for r in kept if not r.ok]
    lost = [r for r in results if not r.rule_fits and r.ok]
    no_tc = [r for r in kept if r.dot and r.precision != "ieee" and r.tensor_core == "-"]
    over = [r for r in results if r.dot and r.shared > r.shared_estimate]
    c64 = [r for r in kept if r.precision != "c128"]
    return [
        f"- compiles: {len(results)}; kept by the fit rule: {len(kept)}; pruned: {len(results) - len(kept)}",
        f"- kept configs that spill or exceed shared memory: **{len(bad)}**",
        f"- pruned configs that would have fit (rule too strict): {len(lost)}",
        f"- kept dot-path configs (tf32/bf16/fp16/c128) without a tensor-core instruction: {len(no_tc)}",
        f"- compiled shared memory above the rule's estimate: {len(over)}",
        f"- widest complex64 load per thread: min {min((r.widest_load for r in c64), default=0)} B, "
        f"max {max((r.widest_load for r in c64), default=0)} B",
        f"- registers of kept configs: max {max((r.registers for r in kept), default=0)}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", help="compute capability ×10 (80, 90)")
    parser.add_argument("--quick", action="store_true", help="heuristic defaults only")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compiles")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--jobs-json", help="'-': compile the JSON job list on stdin (see compile_jobs)")
    args = parser.parse_args(argv)
    reason = nvidia_backend_available()
    if reason:
        print(f"compile report skipped: {reason}", file=sys.stderr)
        return 2
    if args.jobs_json:
        return _jobs_json_main(args.jobs)
    from concurrent.futures import ProcessPoolExecutor

    args.out.mkdir(parents=True, exist_ok=True)
    for arch in args.arch or [90, 80]:
        jobs = _jobs(arch, args.quick)
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(_run, jobs))
        lines = [
            f"# band_cmac_kernel compiled for sm_{arch}",
            "",
            f"triton {triton.__version__}, `python -m bench.compile_report --arch {arch}"
            + (" --quick" if args.quick else "")
            + f"`, {len(jobs)} compiles in {time.perf_counter() - start:.0f} s.",
            "",
            *summary(results),
            "",
            _HEADER,
            "|" + "---|" * (_HEADER.count("|") - 1),
            *(_row(r) for r in results),
        ]
        text = "\n".join(lines) + "\n"
        print(text)
        (args.out / f"compile-sm{arch}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

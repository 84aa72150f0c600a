"""The GPU report: one call on a lent GPU machine (under 10 minutes) that

1. measures the device's two ceilings (device-to-device copy GB/s, matmul TFLOP/s per precision);
2. runs the test suite on CUDA (the ``gpu`` lane included), sharded over parallel processes;
3. runs ``pytest bench --benchmark-only`` per file (whole models first), heuristic configs;
4. checks autotune cache reuse: a cold process tunes a few benchmark layers into a fresh cache
   directory, a second process with the same cache must do zero timings (cold vs warm time);
5. compares tuned against default kernel configs on the MAC benchmark shapes;
6. profiles whole-model steps (``bench.gpu_overhead``: host vs device time, CUDA graphs) and
   times both algorithms per layer (``bench.algorithms``);
7. writes ``bench/results/<date>-<gpu>.json`` and ``.md`` (and copies them to ``$OUT`` if set).

Each step has its own time budget and the results file is rewritten after every step, so a run
cut short still leaves what it measured. Usage: ``bash bench/gpu_report.sh [--quick]``.

``--dry-run`` runs every step end to end on the CPU (Triton interpreter, tiny shapes, the tuner
allowed to time on the CPU, the same functions and output files, written to ``--out`` or a
temporary folder), so the script itself is tested without a GPU (``tests/test_gpu_report.py``).
One file (over 400 lines) because a lent GPU runs it in one call and its steps read top to bottom.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# A child process that runs fwd+bwd of every benchmark layer on the triton backend (so every
# launcher asks the autotuner) and prints the tuner's stats as JSON on its last line.
TUNE_CHILD = r"""
import json, sys, time, torch
from bench.shapes import SHAPES_2D, SHAPES_1D, FCN_LAYERS, RATES, ConvShape
from bltriton import BLConv1d, BLConv2d, autotune
quick, dry = sys.argv[1] == "1", sys.argv[2] == "1"
device = "cpu" if dry else "cuda"
shapes = [s.with_batch(128) for s in SHAPES_2D] + SHAPES_1D + FCN_LAYERS
rates = RATES
# Tuning compiles every menu entry of every (mode, shape, precision) key: a few layers at one
# rate fit the step's minute; the check is that the second process times nothing.
shapes, rates = (shapes[:1] if quick else shapes[:2]), (0.5,)
if dry:  # interpreter: one tiny layer, the tuner allowed to time on the CPU
    shapes, rates = [ConvShape("tiny", 1, 2, 2, (6, 6), 3, 1)], (0.5,)
    autotune.configure(tune_on_cpu=True, cpu_reps=1)
t0 = time.perf_counter()
for s in shapes:
    cls = BLConv2d if s.ndim == 2 else BLConv1d
    for r in rates:
        # The spectral algorithm: the band MAC kernels are what the tuner tunes (on CUDA the rule
        # computes small layers in the spatial domain, where no band MAC runs).
        layer = cls(s.c, s.o, s.kernel, padding=s.padding, compress_rate=r, backend="triton",
                    algorithm="spectral").to(device)
        x = torch.randn(s.n, s.c, *s.size, device=device, requires_grad=True)
        layer(x).sum().backward()
if not dry:
    torch.cuda.synchronize()
st = autotune.stats()
st["wall_s"] = time.perf_counter() - t0
print(json.dumps(st))
"""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        out += f"\n[timed out after {timeout:.0f} s]"
        rc = 124
    return rc, out, time.perf_counter() - t0


def _log(name: str, text: str) -> None:
    """Keep a step's full output under ``$OUT`` (the reply carries only the tail). Steps with
    several parts append to one file each: the device returns at most 8 files."""
    out = os.environ.get("OUT")
    if out:
        with open(Path(out) / name, "a") as fh:
            fh.write(text + "\n")


def _bench_ms(fn, dry: bool) -> float:
    """Median milliseconds of ``fn``: ``do_bench`` on CUDA, the tuner's CPU timer in a dry run."""
    if dry:
        from bltriton import autotune

        return autotune.cpu_timer(fn)
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def measure_peaks(dry: bool = False) -> dict:
    """The two ceilings, measured: copy bandwidth (read + write bytes) and matmul rates."""
    import torch

    device = "cpu" if dry else "cuda"
    peaks: dict = {}
    n = 1 << (16 if dry else 28)  # 1 GiB of fp32 on the GPU
    a = torch.randn(n, device=device)
    b = torch.empty_like(a)
    ms = _bench_ms(lambda a=a, b=b: b.copy_(a), dry)
    peaks["copy_gbps"] = 2 * a.numel() * 4 / (ms * 1e-3) / 1e9
    size = 128 if dry else 8192
    for name, dtype, tf32 in (
        ("fp32_ieee", torch.float32, False),
        ("tf32", torch.float32, True),
        ("bf16", torch.bfloat16, False),
    ):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        x = torch.randn(size, size, device=device, dtype=dtype)
        y = torch.randn(size, size, device=device, dtype=dtype)
        ms = _bench_ms(lambda x=x, y=y: x @ y, dry)
        peaks[f"matmul_{name}_tflops"] = 2 * size**3 / (ms * 1e-3) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    return peaks


# The dry run's test selection: one quick interpreter test.
DRY_TESTS = ["tests/test_kernels.py::test_band_mac_matches_reference[f1-b1-c1-o1-fwd-c64-contig]"]


# Files that each take about three minutes on the device (their own shard; with the others
# dealt round-robin they ran past the step's cap).
LONG_TEST_FILES = ("tests/test_demo.py", "tests/test_functional.py")


def _test_shards(dry: bool) -> list[list[str]]:
    """pytest argument lists run side by side: the kernel tests in two halves, every other file
    in its own process. Files dealt six to a shard ran past the step's cap on an H200 (the
    compile, spatial and benchmark-tool files take 110-135 s each alone); the 19 files of those
    shards, one process each, finished in 134 s on its 16 cores."""
    if dry:
        return [DRY_TESTS]
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    kernels = "tests/test_kernels.py"
    # The long files first, so they start before the short ones take the cores.
    long = [f for f in LONG_TEST_FILES if f in files]
    rest = [f for f in files if f != kernels and f not in LONG_TEST_FILES]
    return [[f] for f in long] + [[kernels, "-k", "c128"], [kernels, "-k", "not c128"]] + [[f] for f in rest]


def run_tests(timeout: float, dry: bool = False) -> dict:
    """The test suite on CUDA, sharded over parallel processes, with the heuristic configs (the
    tuner has its own tests; tuning every test shape would spend the budget compiling)."""
    env = {**os.environ, "BLTRITON_AUTOTUNE": "0"}
    common = ["-q", "-rfE", "--tb=short", "-m", "not slow and not compile_check", "--benchmark-disable"]
    common += ["-p", "no:cacheprovider"]
    t0 = time.perf_counter()
    # At most one process per core: the files are started longest first as cores free up.
    pending = list(enumerate(_test_shards(dry)))
    running: list[tuple[int, subprocess.Popen, Path]] = []
    done: dict[int, tuple[str, str, int]] = {}  # shard -> (label, log text, return code)
    workers = max(1, os.cpu_count() or 1)
    while pending or running:
        while pending and len(running) < workers:
            i, shard = pending.pop(0)
            log = Path(tempfile.mkdtemp()) / f"tests-{i}-{Path(shard[0]).stem}.log"
            with open(log, "w") as fh:
                cmd = [sys.executable, "-m", "pytest", *shard, *common]
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
            running.append((i, proc, log))
        out_of_time = time.perf_counter() - t0 > timeout
        for item in list(running):
            i, proc, log = item
            if proc.poll() is None:
                if not out_of_time:
                    continue
                proc.kill()
                proc.wait()
                done[i] = (log.name, log.read_text(), 124)
            else:
                done[i] = (log.name, log.read_text(), proc.returncode)
            running.remove(item)
        if out_of_time:
            for i, shard in pending:
                done[i] = (f"not started: {' '.join(shard)}", "", 124)
            pending = []
        time.sleep(0.2)
    counts: dict[str, int] = {}
    failures, logs = [], []
    for label, out, rc in (done[i] for i in sorted(done)):
        logs.append(out)
        tail = [line for line in out.splitlines() if re.search(r"\d+ (passed|failed|error|skipped)", line)]
        last = tail[-1] if tail else ""
        for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", last):
            counts[word] = counts.get(word, 0) + int(n)
        failures += [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
        if rc == 124:
            failures.append(f"[shard timed out: {label}]")
    _log("tests.log", "\n\n".join(logs))
    rc = max((r for _, _, r in done.values() if r != 5), default=0)
    summary = ", ".join(f"{n} {w}" for w, n in counts.items()) or "no summary"
    return {
        "rc": rc,
        "wall_s": round(time.perf_counter() - t0, 1),
        "summary": summary,
        "failures": failures[:40],
    }


def cache_reuse(quick: bool, timeout: float, dry: bool = False) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="bltriton-cache-"))
    env = {**os.environ, "BLTRITON_CACHE_DIR": str(cache), "BLTRITON_AUTOTUNE": "1"}
    env.pop("BLTRITON_FORCE_RETUNE", None)
    result: dict = {"cache_dir": str(cache)}
    for phase in ("cold", "warm"):
        args = ["1" if quick else "0", "1" if dry else "0"]
        rc, out, wall = _run([sys.executable, "-c", TUNE_CHILD, *args], timeout, env)
        stats = None
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                stats = json.loads(line)
                break
        result[phase] = {
            "rc": rc,
            "process_wall_s": round(wall, 2),
            "stats": stats,
            "tail": None if stats else out[-800:],
        }
    cold, warm = result["cold"]["stats"] or {}, result["warm"]["stats"] or {}
    # A reuse only where the first process tuned something: a cold run that timed nothing (no
    # band MAC ran) would make "the second timed nothing" vacuous.
    result["cold_tuned"] = cold.get("timings", 0) > 0
    result["warm_did_no_timing"] = (
        result["cold_tuned"] and warm.get("timings", -1) == 0 and warm.get("disk_hits", 0) > 0
    )
    # Reuse the tuned cache for the benchmarks below.
    os.environ["BLTRITON_CACHE_DIR"] = str(cache)
    return result


# The dry run's MAC shapes: a tl.dot one and a depthwise (broadcast path) one.
DRY_MAC_SHAPES = [("tiny-dot", 2, 17, 16, 16, 1), ("tiny-depthwise", 2, 8, 4, 4, 4)]


def tuned_vs_default(dry: bool = False, budget_s: float = 1e9) -> list[dict]:
    """Per MAC benchmark shape and mode: median time with the heuristic default config and with
    the autotuned config (same process, side by side). Stops starting new shapes after
    ``budget_s`` seconds (tuning compiles every menu entry)."""
    import torch
    from bltriton.kernels import band_mac as bm

    from bench.bench_mac import MAC_SHAPES
    from bltriton import autotune

    device = "cpu" if dry else "cuda"
    if dry:
        autotune.configure(tune_on_cpu=True, cpu_reps=1)
    rows = []
    t_end = time.perf_counter() + budget_s
    for name, f, b, c, o, g in DRY_MAC_SHAPES if dry else MAC_SHAPES:
        if time.perf_counter() > t_end:
            break
        x = torch.randn(f, b, c, dtype=torch.complex64, device=device)
        w = torch.randn(f, o, c // g, dtype=torch.complex64, device=device)
        gr = torch.randn(f, b, o, dtype=torch.complex64, device=device)
        for mode, (a, bb) in {"fwd": (x, w), "dx": (gr, w), "dw": (x, gr)}.items():
            p = bm._operands(mode, a, bb, g)
            prec = bm.resolve_precision(a.dtype, a.device, None)
            default = bm.default_config(p.m, p.n, p.k, f, prec, a.dtype)
            # tunes or reads the cache
            _, tuned = bm.band_mac(mode, a, bb, g, return_config=True, tune=autotune.get_config)
            t_def = _bench_ms(
                lambda mode=mode, a=a, bb=bb, g=g, default=default: bm.band_mac(
                    mode, a, bb, g, config=default
                ),
                dry,
            )
            t_tun = _bench_ms(
                lambda mode=mode, a=a, bb=bb, g=g, tuned=tuned: bm.band_mac(mode, a, bb, g, config=tuned),
                dry,
            )
            rows.append(
                {
                    "shape": name,
                    "mode": mode,
                    "default_ms": t_def,
                    "tuned_ms": t_tun,
                    "speedup": t_def / t_tun,
                    "precision": prec,
                    "default": bm.as_dict(default),
                    "tuned": bm.as_dict(tuned),
                }
            )
    return rows


# The benchmark files in the order they run, each with its share of the step's time: whole
# models first (what users meet), then single layers, then the MAC kernels.
BENCH_FILES = (
    ("bench/bench_models.py", "resnet18", 0.3),
    ("bench/bench_models.py", "fcn", 0.2),
    ("bench/bench_conv.py", None, 0.25),
    ("bench/bench_mac.py", None, 0.25),
)

# The dry run's selection per file: the CPU suite's smallest cases. The ResNet-18 file has none
# that small and the MAC benchmarks skip without CUDA, so a dry run leaves both out (a process
# each that would only collect).
DRY_BENCH = {
    ("bench/bench_models.py", "fcn"): "fcn-b16-infer-nn",
    ("bench/bench_conv.py", None): "fcn-k5 and nn",
}


def run_benchmarks(timeout: float, quick: bool, dry: bool = False) -> dict:
    """``pytest --benchmark-only`` per benchmark file, each with its own time cap and JSON, so a
    file cut short loses only its own rows."""
    # Heuristic configs: tuning every layer shape of the whole models would spend the budget
    # compiling; the tuned-vs-default step measures what tuning adds.
    env = {**os.environ, "BLTRITON_AUTOTUNE": "0"}
    rows, rcs, tails, walls = [], {}, {}, {}
    t_end = time.perf_counter() + timeout
    for path, select, share in BENCH_FILES:
        if dry and (path, select) not in DRY_BENCH:
            continue
        out_json = Path(tempfile.mkdtemp()) / "bench.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            path,
            "--benchmark-only",
            f"--benchmark-json={out_json}",
            "-q",
            "-p",
            "no:cacheprovider",
        ]
        keys = [select] if select else []  # pytest keeps only the last -k: join them
        if quick:
            keys.append("cifar3x3-n128 or long-k63 or fwd-ieee or b32 or b16")
        if dry:
            keys.append(DRY_BENCH[(path, select)])
        if keys:
            cmd += ["-k", " and ".join(f"({k})" for k in keys)]
        cap = max(10.0, min(timeout * share, t_end - time.perf_counter()))
        rc, out, wall = _run(cmd, cap, env)
        name = Path(path).stem + (f"-{select}" if select else "")
        _log("bench.log", f"===== {name}\n{out}")
        rcs[name], walls[name] = rc, round(wall, 1)
        if rc not in (0, 5):
            tails[name] = out[-1500:]
        text = out_json.read_text() if out_json.exists() else ""
        data = json.loads(text) if text.strip() else {"benchmarks": []}
        for bench in data.get("benchmarks", []):
            rows.append(
                {
                    "name": bench["name"],
                    "group": bench.get("group"),
                    "median_ms": bench["stats"]["median"] * 1e3,
                    "iqr_ms": bench["stats"]["iqr"] * 1e3,
                    **bench.get("extra_info", {}),
                }
            )
    rc = max((v for v in rcs.values() if v != 5), default=0)
    return {"rc": rc, "rcs": rcs, "wall_s": walls, "rows": rows, "tail": tails}


def run_overhead(timeout: float, dry: bool = False) -> dict:
    """``python -m bench.gpu_overhead``: kernels, device-busy and wall time per whole-model step
    (eager and under ``torch.compile(mode="reduce-overhead")``). CUDA only."""
    if dry:
        return {"rc": 0, "rows": [], "note": "skipped in a dry run (CUDA only)"}
    out = Path(tempfile.mkdtemp())
    cmd = [sys.executable, "-m", "bench.gpu_overhead", "--quick", "--out", str(out)]
    rc, text, wall = _run(cmd, timeout)
    _log("overhead.log", text)
    path = out / "gpu_overhead.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    return {"rc": rc, "wall_s": round(wall, 1), "rows": rows, "tail": text[-1500:] if rc else ""}


def run_pipeline(timeout: float, dry: bool = False) -> dict:
    """The layer plan's figures (issue: one plan per layer, a handful of launches): device
    launches per spectral fwd+bwd of the 3x3 C64 32x32 layer (``bench.launches``: torch.profiler
    on CUDA, the CUDA path forced on a dry run) and host time per call (``bench.host_profile``:
    on CUDA the real launches, on a dry run the CUDA path with its launches stubbed)."""
    device = "cpu" if dry else "cuda"
    t_end = time.perf_counter() + timeout
    cmd = [sys.executable, "-m", "bench.launches", "--device", device, "--verbose"]
    cmd += ["--batch", "2"] if dry else ["--batch", "128"]
    rc1, text1, _ = _run(cmd, max(10.0, (t_end - time.perf_counter()) / 2))
    _log("pipeline.log", f"===== launches\n{text1}")
    lines = [line for line in text1.splitlines() if line.startswith("launches per fwd+bwd")]
    cmd = [sys.executable, "-m", "bench.host_profile", "--device", device, "--calls", "20" if dry else "200"]
    cmd += ["--shapes", "host-tiny" if dry else "host-tiny,cifar3x3"]
    rc2, text2, _ = _run(cmd, max(10.0, t_end - time.perf_counter()))
    _log("pipeline.log", f"===== host_profile\n{text2}")
    host = [line for line in text2.splitlines() if "ms host/call queued" in line]
    return {"rc": max(rc1, rc2), "launches": lines[-1] if lines else "", "host": host}


def run_algorithms(timeout: float, dry: bool = False) -> dict:
    """``python -m bench.algorithms`` for ResNet-18 b128 and the FCN b64 (b8 and b16 on a dry
    run): both algorithms per layer, the rule's pick and their agreement."""
    device = "cpu" if dry else "cuda"
    cases = [("fcn", 16)] if dry else [("resnet18", 128), ("fcn", 64)]
    out = Path(tempfile.mkdtemp()) / "algorithms.json"
    t_end = time.perf_counter() + timeout
    rcs = []
    for model, batch in cases:
        cmd = [sys.executable, "-m", "bench.algorithms", "--device", device, "--model", model]
        cmd += ["--batch", str(batch), "--reps", "1" if dry else "9", "--json", str(out)]
        rc, text, _ = _run(cmd, max(10.0, t_end - time.perf_counter()))
        _log("algorithms.log", f"===== {model}\n{text}")
        rcs.append(rc)
    rows = json.loads(out.read_text()) if out.exists() else []
    return {"rc": max(rcs), "rows": rows}


def algorithms_table(rows: list[dict]) -> list[str]:
    """Markdown: per layer, ms of nn / spectral / spatial, the rule's pick and their agreement."""
    lines = [
        "| model | layer (×) | nn | spectral | spatial | auto | rel diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = r["ms"]
        lines.append(
            f"| {r['model']} b{r['batch']} | {r['layer']} (×{r['count']}) | {ms['nn']:.3f} | "
            f"{ms['spectral']:.3f} | {ms['spatial']:.3f} | {r['auto']} | {r['rel_diff']:.1e} |"
        )
    return lines


def _group_medians(rows: list[dict], test: str) -> dict[str, dict[str, float]]:
    """``{group: {"nn" | "<impl>-r<rate>": median ms}}`` of one benchmark function's rows."""
    groups: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["name"].startswith(test):
            key = "nn" if r.get("impl") == "nn" else f"{r.get('impl')}-r{r.get('rate')}"
            groups.setdefault(r["group"], {})[key] = r["median_ms"]
    return groups


def model_table(rows: list[dict]) -> list[str]:
    """Markdown: per model/batch/mode, median ms of nn and each impl-rate, and nn / impl ratios."""
    groups = _group_medians(rows, "test_model_step")
    keys = ["nn"] + [f"{i}-r{r}" for i in ("auto", "torch", "triton") for r in (0.0, 0.5, 0.75)]
    ratio_keys = ("auto-r0.5", "triton-r0.5", "torch-r0.5")
    lines = ["| model | " + " | ".join(keys) + " | auto r0.5 / nn | triton r0.5 / nn | torch r0.5 / nn |"]
    lines.append("|" + "---|" * (len(keys) + 4))
    for group, t in groups.items():
        cells = [f"{t[k]:.2f}" if k in t else "-" for k in keys]
        ratios = [f"{t[k] / t['nn']:.2f}×" if k in t and "nn" in t else "-" for k in ratio_keys]
        lines.append(f"| {group} | " + " | ".join(cells + ratios) + " |")
    return lines


def conv_table(rows: list[dict]) -> list[str]:
    """Markdown: per layer shape, median fwd+bwd ms of nn / torch / triton at each rate, and the
    triton-vs-cuDNN and triton-vs-torch ratios at rate 0.5."""
    groups = _group_medians(rows, "test_conv_fwd_bwd")
    lines = [
        "| layer | nn.Conv (cuDNN) | torch r0 | torch r0.5 | torch r0.75 | triton r0 | triton r0.5 "
        "| triton r0.75 | spatial r0.5 | cuDNN / triton r0.5 | torch / triton r0.5 |",
        "|" + "---|" * 11,
    ]
    for group, t in groups.items():

        def cell(k, t=t):
            return f"{t[k]:.3f}" if k in t else "-"

        tri = t.get("triton-r0.5")
        ratio_nn = f"{t['nn'] / tri:.2f}×" if tri and "nn" in t else "-"
        ratio_torch = f"{t['torch-r0.5'] / tri:.2f}×" if tri and "torch-r0.5" in t else "-"
        lines.append(
            f"| {group} | {cell('nn')} | {cell('torch-r0.0')} | {cell('torch-r0.5')} | "
            f"{cell('torch-r0.75')} | {cell('triton-r0.0')} | {cell('triton-r0.5')} | "
            f"{cell('triton-r0.75')} | {cell('spatial-r0.5')} | {ratio_nn} | {ratio_torch} |"
        )
    return lines


def mac_table(rows: list[dict], peaks: dict) -> list[str]:
    from bench.roofline import MacCount, roofline_fraction

    peak_by_prec = {
        "ieee": peaks.get("matmul_fp32_ieee_tflops"),
        "tf32": peaks.get("matmul_tf32_tflops"),
        "bf16": peaks.get("matmul_bf16_tflops"),
    }
    lines = ["| kernel | median ms | TFLOP/s | GB/s | roofline fraction |", "|---|---|---|---|---|"]
    for r in rows:
        if not r["name"].startswith("test_band_mac") or "flops" not in r:
            continue
        prec = re.search(r"-(ieee|tf32|bf16)\]", r["name"])
        peak_t = peak_by_prec.get(prec.group(1) if prec else "ieee")
        frac = "-"
        if peak_t and peaks.get("copy_gbps"):
            count = MacCount(r["flops"], r["bytes"])
            value = roofline_fraction(count, r["median_ms"] * 1e-3, peak_t, peaks["copy_gbps"])
            frac = f"{value:.2f}"
        lines.append(
            f"| {r['name'].removeprefix('test_band_mac')} | {r['median_ms']:.4f} | {r['tflops']:.1f} | "
            f"{r['gbps']:.0f} | {frac} |"
        )
    return lines


def write(report: dict, stem: str, results: Path = RESULTS) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
    md = [f"# GPU report {report['date']} — {report['env'].get('device', '?')}", ""]
    md += ["```", json.dumps(report["env"], indent=1), "```", ""]
    if "peaks" in report:
        md += ["## Measured ceilings", "", "```", json.dumps(report["peaks"], indent=1), "```", ""]
    if "tests" in report:
        md += ["## Tests on CUDA", "", f"`{report['tests']['summary']}` ({report['tests']['wall_s']} s)", ""]
        md += [f"- {f}" for f in report["tests"]["failures"]] + [""]
    if "cache_reuse" in report:
        c = report["cache_reuse"]
        cold, warm = c["cold"], c["warm"]
        md += [
            "## Autotune cache reuse",
            "",
            f"- cold: {cold['process_wall_s']} s, stats {json.dumps(cold['stats'])}",
            f"- warm: {warm['process_wall_s']} s, stats {json.dumps(warm['stats'])}",
            f"- first run tuned: **{c.get('cold_tuned')}**; second run did no timing (reused the "
            f"cache): **{c['warm_did_no_timing']}**",
            "",
        ]
    if "tuned_vs_default" in report:
        md += [
            "## Tuned vs default configs (band MAC)",
            "",
            "| shape | mode | default ms | tuned ms | speedup |",
            "|---|---|---|---|---|",
        ]
        md += [
            f"| {r['shape']} | {r['mode']} | {r['default_ms']:.4f} | {r['tuned_ms']:.4f} "
            f"| {r['speedup']:.2f}× |"
            for r in report["tuned_vs_default"]
        ] + [""]
    if "pipeline" in report:
        p = report["pipeline"]
        md += ["## Layer plans: launches and host time", "", f"- {p.get('launches') or '(no count)'}"]
        md += [f"- {line}" for line in p.get("host", [])] + [""]
    if "bench" in report:
        md += ["## Whole models, median ms per call", "", *model_table(report["bench"]["rows"]), ""]
        md += ["## fwd+bwd (median ms)", "", *conv_table(report["bench"]["rows"]), ""]
        md += ["## Band MAC kernels", "", *mac_table(report["bench"]["rows"], report.get("peaks", {})), ""]
    if report.get("algorithms", {}).get("rows"):
        md += [
            "## The two algorithms per layer (fwd+bwd ms)",
            "",
            *algorithms_table(report["algorithms"]["rows"]),
            "",
        ]
    if report.get("overhead", {}).get("rows"):
        md += [
            "## Whole-model step: wall vs device-busy time (torch.profiler)",
            "",
            "| model | impl | rate | wall ms | device busy ms | kernels/step |",
            "|---|---|---|---|---|---|",
        ]
        md += [
            f"| {r.get('model')} b{r.get('batch')} | {r.get('impl')} | {r.get('rate')} | {r.get('wall_ms')} "
            f"| {r.get('device_busy_ms')} | {r.get('kernels_per_step')} |"
            for r in report["overhead"]["rows"]
        ] + [""]
    (results / f"{stem}.md").write_text("\n".join(md))
    out = os.environ.get("OUT")
    if out and Path(out).resolve() != results.resolve():
        for ext in ("json", "md"):
            shutil.copy(results / f"{stem}.{ext}", Path(out) / f"{stem}.{ext}")


def _environment(dry: bool) -> tuple[str, dict]:
    """File stem ``<date>-<gpu>`` and the environment block of the report."""
    import torch
    import triton

    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    env = {
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": sys.version.split()[0],
        "git": git.stdout.strip() or "unknown",
    }
    if dry:
        env["device"] = "cpu (dry run: Triton interpreter, tiny shapes)"
        gpu = "cpu-dry-run"
    else:
        props = torch.cuda.get_device_properties(0)
        env.update(
            device=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count
        )
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", props.name).strip("-")
    return f"{_dt.date.today().isoformat()}-{gpu}", env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few shapes only (a smoke run)")
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of steps to skip: peaks,tests,cache,tuned,pipeline,bench,overhead,algorithms",
    )
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU, tiny shapes")
    parser.add_argument(
        "--out", type=Path, help="results folder (default bench/results; dry run: a temp dir)"
    )
    parser.add_argument("--budget-s", type=float, default=560.0, help="wall-clock budget of all steps")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    dry = args.dry_run
    if dry:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel import; children inherit it
    import torch

    if not dry and not torch.cuda.is_available():
        print("gpu_report: no CUDA device (use --dry-run to exercise the script on the CPU)", file=sys.stderr)
        return 2
    results = args.out or (Path(tempfile.mkdtemp(prefix="gpu-report-dry-")) if dry else RESULTS)
    stem, env = _environment(dry)
    report: dict = {"date": _now(), "env": env}
    deadline = time.perf_counter() + args.budget_s

    def left(cap: float) -> float:  # a step's timeout: its own cap, within the overall budget
        return max(10.0, min(cap, deadline - time.perf_counter() - 20))

    steps = [
        ("peaks", "peaks", lambda: measure_peaks(dry)),
        ("tests", "tests", lambda: run_tests(left(90 if args.quick else 240), dry)),
        # The fixed-cap steps first; the benchmarks (one file per share) take what is left.
        ("cache_reuse", "cache", lambda: cache_reuse(args.quick, left(90) / 2, dry)),
        ("tuned_vs_default", "tuned", lambda: tuned_vs_default(dry, budget_s=left(40))),
        ("pipeline", "pipeline", lambda: run_pipeline(left(60), dry)),
        ("overhead", "overhead", lambda: run_overhead(left(120), dry)),
        # The benchmarks take what is left but leave the per-layer algorithm table a minute (in a
        # 470 s call, last after it, they had 70 s and the ResNet-18 file was cut).
        (
            "bench",
            "bench",
            lambda: run_benchmarks(
                max(10.0, left(90 if args.quick else 230) - (0 if dry else 60)), args.quick, dry
            ),
        ),
        ("algorithms", "algorithms", lambda: run_algorithms(left(90), dry)),
    ]
    for name, short, fn in steps:
        if short in skip:
            continue
        t0 = time.perf_counter()
        print(f"[{_now()}] {name} ...", flush=True)
        try:
            report[name] = fn()
        except Exception as err:  # keep going: a report with one failed step still says a lot
            report[name + "_error"] = repr(err)
        print(f"[{_now()}] {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
        write(report, stem, results)
    print((results / f"{stem}.md").read_text())
    print(f"results: {results / stem}.json / .md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark helpers: roofline counts and the GPU report's tables (no GPU needed)."""

from __future__ import annotations

import os

import pytest

from bench.gpu_report import conv_table, mac_table
from bench.roofline import MacCount, mac_count, roofline_fraction


def test_mac_count_forward():
    c = mac_count("fwd", f=10, b=4, c=6, o=8, groups=2)
    assert c.flops == 8 * 10 * 4 * 4 * 3 * 2  # 8 FLOPs per complex MAC, per group Og·Cg
    assert c.bytes == 8 * (10 * 4 * 6 + 10 * 8 * 3 + 10 * 4 * 8)


def test_roofline_fraction_binding_term():
    count = MacCount(flops=1e12, bytes=1e9)
    # compute-bound at 100 TFLOP/s: ideal 10 ms; measured 20 ms -> 0.5
    assert roofline_fraction(count, 0.02, peak_tflops=100, peak_gbps=1000) == pytest.approx(0.5)
    # memory-bound at 10 GB/s: ideal 100 ms
    assert roofline_fraction(count, 0.2, peak_tflops=100, peak_gbps=10) == pytest.approx(0.5)


def test_report_tables():
    rows = [
        {"name": "test_conv_fwd_bwd[a-nn]", "group": "a", "median_ms": 3.0, "impl": "nn"},
        {
            "name": "test_conv_fwd_bwd[a-triton-r0.5]",
            "group": "a",
            "median_ms": 1.5,
            "impl": "triton",
            "rate": 0.5,
        },
        {
            "name": "test_conv_fwd_bwd[a-torch-r0.5]",
            "group": "a",
            "median_ms": 6.0,
            "impl": "torch",
            "rate": 0.5,
        },
        {
            "name": "test_band_mac[s-fwd-tf32]",
            "median_ms": 0.5,
            "tflops": 2.0,
            "gbps": 200.0,
            "flops": 1e9,
            "bytes": 1e8,
        },
    ]
    table = conv_table(rows)
    assert table[2].startswith("| a | 3.000 |") and "2.00×" in table[2] and "4.00×" in table[2]
    mac = mac_table(rows, {"copy_gbps": 1000.0, "matmul_tf32_tflops": 100.0})
    # ideal = max(1e9 / 100e12, 1e8 / 1000e9) = 1e-4 s; measured 5e-4 s -> 0.20
    assert mac[2].endswith("| 0.20 |")


def test_ab_versions_extracts_a_renamed_base(tmp_path):
    """The base commit's package comes out as ``bltriton_base`` with its own op namespace, so it
    imports beside this checkout's ``bltriton``."""
    import shutil
    import subprocess
    import sys

    from bench.ab_versions import ROOT, extract_base

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    extract_base("HEAD", tmp_path)
    ops = (tmp_path / "bltriton_base" / "registered.py").read_text()
    assert '"bltriton_base::band_conv"' in ops and '"bltriton::' not in ops
    plan_ops = (tmp_path / "bltriton_base" / "pipeline.py").read_text()
    assert '"bltriton_base::plan_conv"' in plan_ops and '"bltriton::' not in plan_ops
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import bltriton, bltriton_base, torch; "
        "x = torch.randn(1, 2, 8, 8); w = torch.randn(2, 2, 3, 3); "
        "a = bltriton.bl_conv2d(x, w, padding=1, compress_rate=0.5); "
        "b = bltriton_base.bl_conv2d(x, w, padding=1, compress_rate=0.5); "
        "print(float((a - b).abs().max()))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5


def test_a_second_checkout_loads_the_same_kernel_build(tmp_path):
    """The C++ kernel is built once per source, CPU and torch: a copy of the package elsewhere
    (a second clone, the base commit bench.ab_versions extracts) loads the build this checkout
    made instead of compiling again, and this checkout's next load does not compile either."""
    import shutil
    import subprocess
    import sys

    from bench.ab_versions import ROOT
    from bltriton import _cgemm

    if not _cgemm.available():
        pytest.skip("the CPU kernel could not be built")
    folder = _cgemm.build_directory()
    built = {p: p.stat().st_mtime_ns for p in folder.glob("*.so")}
    assert built, f"no extension in {folder}"
    assert str(ROOT) not in (folder / "build.ninja").read_text()  # compiles its own copy
    skip = shutil.ignore_patterns("__pycache__", "data")
    for pkg in ("bltriton", "kernels"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=skip)
    load = "from bltriton import _cgemm; print(_cgemm.__file__, _cgemm.available())"
    for where in (tmp_path, ROOT):  # the copy, then this checkout again
        code = f"import sys; sys.path.insert(0, {str(where)!r}); {load}"
        run = subprocess.run([sys.executable, "-c", code], cwd=where, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        path, ok = run.stdout.split()[-2:]
        assert path.startswith(str(where)) and ok == "True", run.stdout
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.so")} == built, "the kernel was compiled again"


def test_ab_versions_separate_processes_give_a_row():
    """``--separate``: each variant alone in its own process; the row holds nn's time and two
    ratios near 1 (the base is this checkout)."""
    import re
    import shutil
    import subprocess
    import sys

    from bench.ab_versions import ROOT

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    cmd = [sys.executable, "-m", "bench.ab_versions", "--base", "HEAD", "--case", "fcn:2:0.5:infer"]
    out = subprocess.run([*cmd, "--separate", "1", "--rounds", "3"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alone in 1 processes" in out.stdout
    pattern = r"^\| fcn \| 2 \| 0.5 \| infer \| ([0-9.]+) \| ([0-9.]+)× \| ([0-9.]+)× \|$"
    row = re.search(pattern, out.stdout, re.M)
    assert row, out.stdout
    nn_ms, base, this = map(float, row.groups())
    assert nn_ms > 0 and 0 < base < 100 and 0 < this < 100


def test_fit_rule_recovers_known_rates():
    """Synthetic rows timed by a known rule: the fit gives those rates back, and its picks
    cost nothing."""
    import numpy as np

    from bench.fit_rule import ALGORITHMS, fit, nnls, predict

    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert np.allclose(nnls(a, np.array([2.0, -1.0, 1.0])), [1.5, 0.0], atol=1e-9)
    rng = np.random.default_rng(0)
    truth = {
        "contraction": 1e11,
        "transform": 4e10,
        "filter": 2e12,
        "filter_bytes": 1e10,
        "spectral_call": 5e-4,
    }
    truth |= {"conv": 2e11, "limiter": 1e11, "limiter_separable": 3e10, "grid": 2e9, "spatial_call": 1e-3}
    rows = []
    for _ in range(40):
        terms = {  # a per-call term counts one call
            alg: {name: 1.0 if name.endswith("_call") else float(rng.uniform(1e6, 1e9)) for name in names}
            for alg, names in ALGORITHMS.items()
        }
        row = {"model": "m", "batch": 1, "rate": 0.5, "count": 1, "layer": "l", "terms": terms, "ms": {}}
        spec_s, spat_s = predict([row], truth)[0]
        row["ms"] = {"spectral": spec_s * 1e3, "spatial": spat_s * 1e3}
        rows.append(row)
    fitted = fit(rows)
    for name, value in truth.items():
        assert fitted[name] == pytest.approx(value, rel=1e-6), name


def test_cgemm_bench_rows(monkeypatch):
    """bench.cgemm times both providers on every shape and restores the provider variable."""
    from bench import cgemm
    from bltriton import _cgemm

    if not _cgemm.available():
        pytest.skip("the CPU kernel could not be built")
    monkeypatch.delenv("BLTRITON_CPU_CGEMM", raising=False)
    monkeypatch.setattr(cgemm, "SHAPES", [("tiny", (3, 7, 5), (3, 9, 5), False, True)])
    rows = cgemm.run(rounds=1)
    assert len(rows) == 3 and rows[2].startswith("| tiny |") and rows[2].endswith("× |")
    assert "BLTRITON_CPU_CGEMM" not in os.environ


def test_transforms_bench_rows():
    """bench.transforms times every method on each geometry, names the rule's pick, and leaves
    no forced method behind."""
    from bench import transforms as bench_transforms
    from bltriton import _cgemm, transforms

    if not _cgemm.available():
        pytest.skip("the CPU kernel could not be built")
    rows = bench_transforms.run(
        rounds=1, geometries=[((6, 5), (8, 7), 1, 0.5, 21), ((4, 4), (10, 10), 2, 0.5, 3)]
    )
    assert len(rows) == 4 and all(r.count(" / ") == 3 for r in rows[2:])
    assert rows[2].rstrip(" |").split("| ")[-1] in ("direct", "blocked", "gemm", "fft")
    assert transforms.FORCE_METHOD is None

"""The GPU report runs end to end without a GPU (``--dry-run``: Triton interpreter, tiny shapes,
same steps and output files), so the first lent GPU spends its minutes measuring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="with CUDA the real report runs (bash bench/gpu_report.sh)"
)
def test_gpu_report_dry_run(tmp_path):
    env = {**os.environ, "BLTRITON_CACHE_DIR": str(tmp_path / "cache"), "OUT": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_report", "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (report_json,) = tmp_path.glob("*-cpu-dry-run.json")
    assert report_json.with_suffix(".md").exists()
    report = json.loads(report_json.read_text())
    errors = {k: v for k, v in report.items() if k.endswith("_error")}
    assert not errors, errors
    assert report["peaks"]["copy_gbps"] > 0
    pipeline = report["pipeline"]
    assert pipeline["rc"] == 0, pipeline
    assert pipeline["launches"].startswith("launches per fwd+bwd: spectral 7"), pipeline
    assert any("triton-stub" in line for line in pipeline["host"]), pipeline
    assert report["tests"]["rc"] == 0 and "1 passed" in report["tests"]["summary"], report["tests"]
    cache = report["cache_reuse"]
    assert cache["cold"]["stats"]["timings"] > 0, cache
    assert cache["warm_did_no_timing"], cache
    rows = report["tuned_vs_default"]
    assert {(r["shape"], r["mode"]) for r in rows} == {
        (s, m) for s in ("tiny-dot", "tiny-depthwise") for m in ("fwd", "dx", "dw")
    }
    assert all(r["default_ms"] > 0 and r["tuned_ms"] > 0 for r in rows)
    assert report["bench"]["rc"] == 0 and report["bench"]["rows"], report["bench"]
    md = report_json.with_suffix(".md").read_text()
    for section in ("## Measured ceilings", "## Autotune cache reuse", "## Tuned vs default", "## fwd+bwd"):
        assert section in md


def test_gpu_report_shards_run_every_test_file_once():
    """The CUDA test step runs each test file in a process of its own (the kernel tests in two
    halves), so no file is left out and none runs twice."""
    from bench.gpu_report import LONG_TEST_FILES, _test_shards

    shards = _test_shards(dry=False)
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    firsts = [shard[0] for shard in shards]
    assert sorted(set(firsts)) == files
    assert firsts.count("tests/test_kernels.py") == 2 and len(firsts) == len(files) + 1
    assert all(len(shard) == 1 for shard in shards if shard[0] != "tests/test_kernels.py")
    assert firsts[: len(LONG_TEST_FILES)] == list(LONG_TEST_FILES)  # the longest start first

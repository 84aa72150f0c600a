"""``bltriton.utils.keep_freed_memory``: glibc keeps a step's freed memory, so the next step does
not fault it in again (run in a child process: the setting is process-wide)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bltriton.utils import keep_freed_memory

CHILD = r"""
import resource, torch
from bltriton.utils import keep_freed_memory

def faults_per_step(n=5):
    def step():
        bufs = [torch.empty(2 << 20).fill_(1.0) for _ in range(12)]  # 12 x 8 MiB, all freed at once
        del bufs
    step()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / n

before = faults_per_step()
applied = keep_freed_memory()
after = faults_per_step()
print(applied, before, after)
"""


def test_bad_thresholds_are_rejected():
    with pytest.raises(ValueError, match="trim_threshold"):
        keep_freed_memory(trim_threshold=1 << 31)
    with pytest.raises(ValueError, match="mmap_threshold"):
        keep_freed_memory(mmap_threshold=64 << 20)
    with pytest.raises(ValueError, match="mmap_threshold"):
        keep_freed_memory(mmap_threshold=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_not_faulted_in_again():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    applied, before, after = out.stdout.split()
    if applied != "True":
        pytest.skip("not glibc: mallopt is not available")
    # 96 MiB freed per step is 24 576 pages; glibc's default trims it and faults it in again.
    if float(before) < 5000:  # e.g. MALLOC_* variables already set, or another allocator
        pytest.skip(f"this process's allocator does not re-fault freed memory ({before} per step)")
    assert float(after) < 0.2 * float(before), f"{before} -> {after} faults per step"

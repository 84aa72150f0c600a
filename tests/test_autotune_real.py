"""Autotune cache reuse through the real Triton launch path (interpreter on the CPU): a first
process tunes the band MAC kernels of a small band-limited layer into a fresh cache directory;
a second process with the same cache does no timing at all and picks the same configs; results
are the same with and without tuning."""

from __future__ import annotations

import json

import torch

from tests.test_autotune import run_autotune_child

REAL_CHILD_CODE = """
import json, os
os.environ.setdefault("TRITON_INTERPRET", "1")
import torch
from bltriton import autotune, bl_conv2d
from bltriton.kernels import band_mac

autotune.configure(tune_on_cpu=True, cpu_reps=1)
torch.manual_seed(0)
x = torch.randn(2, 3, 8, 8, requires_grad=True)
w = torch.randn(4, 3, 3, 3, requires_grad=True)
y = bl_conv2d(x, w, None, 1, 1, compress_rate=0.5, backend="triton")
y.square().sum().backward()
print(json.dumps({"stats": autotune.stats(), "y": y.detach().flatten()[:8].tolist(),
                  "dw": w.grad.flatten()[:8].tolist()}))
"""


def test_real_launch_path_second_process_does_no_timing(tmp_path):
    cache = tmp_path / "cache"
    env = {"TRITON_INTERPRET": "1"}
    first = run_autotune_child(REAL_CHILD_CODE, cache, env=env, timeout=300)
    assert first["stats"]["timings"] > 0 and first["stats"]["misses"] == 3  # fwd, dx, dw
    files = list(cache.glob("*.json"))
    assert len(files) == 1
    entries = json.loads(files[0].read_text())["entries"]
    assert len(entries) == 3
    assert all(e["timings"] for e in entries.values())
    second = run_autotune_child(REAL_CHILD_CODE, cache, env=env, timeout=300)
    assert second["stats"]["timings"] == 0
    assert second["stats"]["misses"] == 0 and second["stats"]["disk_hits"] == 3
    # Tuning does not change results.
    assert torch.allclose(torch.tensor(first["y"]), torch.tensor(second["y"]))
    assert torch.allclose(torch.tensor(first["dw"]), torch.tensor(second["dw"]))

"""Autotune cache reuse through the real Triton launch path (compiled on CUDA where present, else
the interpreter on the CPU): a first
process tunes the launches of a small band-limited layer's plan into a fresh cache directory;
a second process with the same cache does no timing at all and picks the same configs; results
are the same with and without tuning."""

from __future__ import annotations

import json

import pytest
import torch

from bltriton import _env
from tests.helpers import run_autotune_child

REAL_CHILD_CODE = """
import json, os
import torch
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from bltriton import autotune, bl_conv2d
dev = "cuda" if torch.cuda.is_available() else "cpu"
autotune.configure(tune_on_cpu=True, cpu_reps=1)
torch.manual_seed(0)
# Small: the interpreter times every menu entry of the 7 launches (2x3x8x8 took 7 s cold).
x = torch.randn(1, 2, 6, 6, device=dev, requires_grad=True)
w = torch.randn(3, 2, 3, 3, device=dev, requires_grad=True)
# The spectral algorithm is pinned: on CUDA the rule computes this tiny layer in the spatial
# domain, where no band MAC runs and "no timing" would hold vacuously.
y = bl_conv2d(x, w, None, 1, 1, compress_rate=0.5, backend="triton", algorithm="spectral")
y.square().sum().backward()
print(json.dumps({"stats": autotune.stats(), "y": y.detach().flatten()[:8].tolist(),
                  "dw": w.grad.flatten()[:8].tolist()}))
"""


def test_real_launch_path_second_process_does_no_timing(tmp_path):
    cache = tmp_path / "cache"
    env = {} if torch.cuda.is_available() else {"TRITON_INTERPRET": "1"}
    first = run_autotune_child(REAL_CHILD_CODE, cache, env=env, timeout=300)
    # The layer plan's 7 launches: to_band, fwd MAC, from_band; to_band, dx and dw MACs, from_band.
    assert first["stats"]["timings"] > 0 and first["stats"]["misses"] == 7
    files = list(cache.glob("*.json"))
    assert len(files) == 1
    entries = json.loads(files[0].read_text())["entries"]
    assert len(entries) == 7
    assert all(e["timings"] for e in entries.values())
    second = run_autotune_child(REAL_CHILD_CODE, cache, env=env, timeout=300)
    assert second["stats"]["timings"] == 0
    assert second["stats"]["misses"] == 0 and second["stats"]["disk_hits"] == 7
    # Tuning does not change results.
    assert torch.allclose(torch.tensor(first["y"]), torch.tensor(second["y"]))
    assert torch.allclose(torch.tensor(first["dw"]), torch.tensor(second["dw"]))


@pytest.mark.skipif(not _env.triton_interpret(), reason="needs TRITON_INTERPRET=1 (CPU tensors)")
def test_triton_path_is_thread_safe_under_the_interpreter():
    """The interpreter patches triton.language for the length of a launch: unserialised launches
    from several threads raised (45 of 72 calls). Each thread's result must match the torch path."""
    import threading

    from bltriton import bl_conv2d

    errors: list[str] = []
    mismatches: list[float] = []
    start = threading.Barrier(4)

    def work(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        start.wait(timeout=60)  # all threads launch at once
        for _ in range(2):
            x = torch.randn(2, 3, 8, 8, generator=gen)
            w = torch.randn(4, 3, 3, 3, generator=gen)
            try:
                y = bl_conv2d(x, w, None, 1, 1, compress_rate=0.5, backend="triton", algorithm="spectral")
            except Exception as err:
                errors.append(f"{type(err).__name__}: {str(err)[:120]}")
                continue
            ref = bl_conv2d(x, w, None, 1, 1, compress_rate=0.5, backend="torch")
            mismatches.append(float((y - ref).norm() / ref.norm()))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(mismatches) == 8 and max(mismatches) < 1e-5

"""Test configuration.

Without CUDA the Triton kernels run on the CPU interpreter: ``TRITON_INTERPRET=1`` must be set
before ``triton.jit`` decorates anything, i.e. before any bltriton.kernels import.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The tuner's choices and configs go to a folder of this test session, not the user's cache: a
# run starts from nothing (as CI's fresh machine does) and leaves nothing behind in ~/.cache.
if "BLTRITON_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["BLTRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="bltriton-test-cache-")

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    # `slow` tests run only when a -m expression names them (e.g. -m slow), so the README's
    # plain test command stays the fast default lane.
    run_slow = "slow" in (config.getoption("markexpr", "") or "")
    skip_slow = pytest.mark.skip(reason="slow: select with -m slow")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """A different seed per test (fresh random inputs every check), printed on failure."""
    seed = abs(hash(request.node.nodeid)) % (2**31)
    print(f"torch seed {seed}")  # shown with the captured output of a failing test
    torch.manual_seed(seed)
    yield


@pytest.fixture
def poison_empty(monkeypatch):
    """Make ``torch.empty``/``empty_like``/``new_empty`` return NaN-filled tensors, so an output
    element a kernel forgets to write fails the comparison."""
    real_empty, real_empty_like = torch.empty, torch.empty_like
    real_new_empty = torch.Tensor.new_empty

    def _fill(t):
        if t.is_floating_point() or t.is_complex():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: _fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _fill(real_empty_like(*a, **k)))
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: _fill(real_new_empty(self, *a, **k)))
    yield


@pytest.fixture
def spectral_only(monkeypatch):
    """Run the spectral algorithm wherever a call does not name one: for tests of its internals
    (frequency chunks, the filter-band cache, scratch buffers), which ``algorithm='auto'`` may
    route around. ``tests/test_spatial.py`` covers the other algorithm and the choice."""
    monkeypatch.setenv("BLTRITON_ALGORITHM", "spectral")

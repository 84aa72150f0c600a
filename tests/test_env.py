"""Every ``BLTRITON_*`` value is checked whatever code path runs: a bad value raises an
:class:`~bltriton._env.EnvVarError` naming the variable at a call on the CPU torch path, which
reads none of the tuner's variables itself; the first read of any variable in a process checks
them all; and ``TRITON_INTERPRET=1`` set too late gets a message saying when to set it."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from bltriton import _env, bl_conv1d, bl_conv2d, functional

# One bad value per variable; BLTRITON_CACHE_DIR has none (every path is a value, see below).
BAD_VALUES = {
    "BLTRITON_BACKEND": "gpu",
    "BLTRITON_AUTOTUNE": "maybe",
    "BLTRITON_FORCE_RETUNE": "ture",
    "BLTRITON_PRINT_AUTOTUNING": "verbose",
    "BLTRITON_ALGORITHM": "fft",
    "BLTRITON_CPU_GEMM": "mkl",
    "BLTRITON_CPU_CGEMM": "fast",
    "BLTRITON_CHECK_FINITE": "maybe",
}


@pytest.fixture
def clean_env(monkeypatch):
    """No BLTRITON_* variable set, and this process as if none had been read and no call had
    run yet (the memo of checked calls empty)."""
    for name in _env.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_env, "_all_checked", False)
    monkeypatch.setattr(functional, "_CALLS", {})
    return monkeypatch


def test_every_variable_has_a_bad_value_here_and_a_parser():
    assert set(BAD_VALUES) | {"BLTRITON_CACHE_DIR"} == set(_env.VARIABLES)
    assert set(_env.PARSERS) == set(_env.VARIABLES)


def _torch_path_call(ndim: int, algorithm: str) -> torch.Tensor:
    """A CPU call that names its backend and algorithm, so it reads neither variable itself."""
    if ndim == 1:
        return bl_conv1d(torch.randn(2, 3, 17), torch.randn(4, 3, 5), compress_rate=0.5, backend="torch",
                         algorithm=algorithm)  # fmt: skip
    return bl_conv2d(torch.randn(2, 3, 9, 11), torch.randn(4, 3, 3, 3), compress_rate=0.5, backend="torch",
                     algorithm=algorithm)  # fmt: skip


@pytest.mark.parametrize("algorithm", ["spectral", "spatial"])
@pytest.mark.parametrize("ndim", [1, 2], ids=["1d", "2d"])
@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_bad_value_raises_on_the_cpu_torch_path(clean_env, name, ndim, algorithm):
    """A process started with the bad value: its first band-limited call raises."""
    clean_env.setenv(name, BAD_VALUES[name])
    with pytest.raises(_env.EnvVarError, match=name) as info:
        _torch_path_call(ndim, algorithm)
    assert repr(BAD_VALUES[name]) in str(info.value)  # the value as given
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_value_changed_later_is_checked_at_the_next_new_call(clean_env, name):
    """A value set within a running process is checked by the next call with new arguments or
    shapes (a repeated call is served from the memo of checked calls, which does not read the
    ten variables again; the variables a call reads itself are checked at each read)."""
    _torch_path_call(2, "spectral")
    clean_env.setenv(name, BAD_VALUES[name])
    with pytest.raises(_env.EnvVarError, match=name):
        bl_conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3), backend="torch", algorithm="spectral")


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_first_read_of_any_variable_checks_them_all(clean_env, name):
    """A process that starts with a bad value hears of it at its first read of any variable,
    here one that is fine itself (``BLTRITON_CACHE_DIR``)."""
    clean_env.setenv(name, BAD_VALUES[name])
    with pytest.raises(_env.EnvVarError, match=name):
        _env.cache_dir()
    with pytest.raises(_env.EnvVarError, match=name):  # still not checked: raises again
        _env.cache_dir()
    clean_env.delenv(name)
    _env.cache_dir()
    assert _env._all_checked


def test_spellings_and_blank_values_are_accepted(clean_env):
    for name in ("BLTRITON_AUTOTUNE", "BLTRITON_CHECK_FINITE"):
        clean_env.setenv(name, " OFF ")
    clean_env.setenv("BLTRITON_BACKEND", " Torch ")
    clean_env.setenv("BLTRITON_ALGORITHM", "")  # empty = unset
    _env.check_all()
    assert _torch_path_call(2, "spatial").shape == (2, 4, 7, 9)


def test_cache_dir_accepts_any_path(clean_env, tmp_path):
    """Every path is a value of BLTRITON_CACHE_DIR: a folder that cannot be made or written is
    the tuner's warning when it writes (tests/test_autotune.py), not an error of every call."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for value in (str(blocker / "cache"), "relative/cache", "~/x y"):
        clean_env.setenv("BLTRITON_CACHE_DIR", value)
        assert _env.cache_dir() == __import__("pathlib").Path(value).expanduser()
        _torch_path_call(2, "spectral")
    clean_env.setenv("BLTRITON_CACHE_DIR", "")
    assert _env.cache_dir() == __import__("pathlib").Path("~/.cache/bltriton").expanduser()


def _gpu_kernel(x_ptr):  # the body of a @triton.jit kernel made for a GPU (never launched)
    pass


def test_interpreter_set_after_the_kernels_were_imported(monkeypatch):
    """``TRITON_INTERPRET=1`` set once bltriton's kernels were defined for a GPU (Triton reads it
    when ``@triton.jit`` runs) gets a bltriton message saying when to set it, not Triton's."""
    jit = pytest.importorskip("triton.runtime.jit")
    if torch.cuda.is_available():
        pytest.skip("the triton backend runs on CUDA here")
    module = types.ModuleType("bltriton.kernels._compiled_for_a_gpu")
    module.kernel = jit.JITFunction(_gpu_kernel)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1 was set after bltriton's kernels") as info:
        bl_conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3), backend="triton", algorithm="spectral")
    assert "before the first import" in str(info.value)

"""Bad environment variables and command lines get one clear line naming the culprit.

``BAD_ENV`` has the shape of ``tests/test_errors.py``'s table (id, call, exception, text the
message must contain); ``BAD_CLI`` rows are (id, argv, environment, text): the command must exit
with 2 and print one line on stderr that contains the text, without a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bltriton import _env, autotune, bl_conv2d
from bltriton.__main__ import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tune_stub() -> dict:
    return autotune.get_config("k", "h", {"B": 1}, [{"BLOCK": 1}], {"BLOCK": 1}, lambda cfg: None, "cpu")


def _conv_triton():
    return bl_conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3), backend="triton")


def _with_env(name: str, value: str, call):
    def run():
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return call()
        finally:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old

    return run


BAD_ENV = [
    (
        "env-autotune-maybe",
        _with_env("BLTRITON_AUTOTUNE", "maybe", _tune_stub),
        ValueError,
        "BLTRITON_AUTOTUNE",
    ),
    (
        "env-autotune-maybe-conv",
        _with_env("BLTRITON_AUTOTUNE", "maybe", _conv_triton),
        ValueError,
        "BLTRITON_AUTOTUNE",
    ),
    ("env-autotune-2", _with_env("BLTRITON_AUTOTUNE", "2", _tune_stub), ValueError, "got '2'"),
    (
        "env-force-retune-typo",
        _with_env("BLTRITON_FORCE_RETUNE", "ture", _tune_stub),
        ValueError,
        "BLTRITON_FORCE_RETUNE",
    ),
    (
        "env-print-autotuning-word",
        _with_env("BLTRITON_PRINT_AUTOTUNING", "verbose", _env.print_autotuning),
        ValueError,
        "BLTRITON_PRINT_AUTOTUNING",
    ),
    ("env-backend", _with_env("BLTRITON_BACKEND", "cuda", _env.backend), ValueError, "BLTRITON_BACKEND"),
]


@pytest.mark.parametrize("call,exc,text", [pytest.param(c, e, t, id=i) for i, c, e, t in BAD_ENV])
def test_bad_env_raises_clear_error(call, exc, text):
    with pytest.raises(exc) as info:
        call()
    assert text in str(info.value), f"message {str(info.value)!r} should mention {text!r}"


@pytest.mark.parametrize(
    "value,expected",
    [
        *[("1", True), ("TRUE", True), (" yes ", True), ("On", True), ("", True)],  # "" = unset
        *[("0", False), ("False", False), ("no", False), ("OFF", False)],
    ],
)
def test_boolean_env_spellings(monkeypatch, value, expected):
    monkeypatch.setenv("BLTRITON_AUTOTUNE", value)
    assert _env.autotune_enabled() is expected


NO_INTERPRETER = {"TRITON_INTERPRET": "0"}
DEMO = ["tune", "--demo", "fcn", "--input-shape", "2,1,16"]
TUNE = [*DEMO, "--device", "cpu"]
BAD_CLI = [
    ("tune-triton-without-cuda", [*TUNE, "--backend", "triton"], NO_INTERPRETER, "--backend triton"),
    (
        "tune-device-bogus",
        [*DEMO, "--device", "bogus"],
        {},
        "--device",
    ),
    (
        "tune-device-tpu",
        [*DEMO, "--device", "meta"],
        {},
        "--device",
    ),
    ("tune-shape-zero", ["tune", "--demo", "fcn", "--input-shape", "0,1,16"], {}, "--input-shape"),
    ("tune-shape-short", ["tune", "--demo", "fcn", "--input-shape", "2,16"], {}, "--input-shape"),
    ("tune-num-classes-zero", [*TUNE, "--num-classes", "0"], {}, "--num-classes"),
    ("tune-compress-rate", [*TUNE, "--compress-rate", "1.5"], {}, "--compress-rate"),
    ("tune-model-no-colon", ["tune", "--model", "os.path", "--input-shape", "2,1,16"], {}, "--model"),
    ("tune-model-missing", ["tune", "--model", "no_such_mod:f", "--input-shape", "2,1,16"], {}, "--model"),
    ("tune-model-not-module", ["tune", "--model", "os:getcwd", "--input-shape", "2,1,16"], {}, "--model"),
    ("tune-autotune-maybe", TUNE, {"BLTRITON_AUTOTUNE": "maybe"}, "BLTRITON_AUTOTUNE"),
    ("tune-autotune-off", TUNE, {"BLTRITON_AUTOTUNE": "0"}, "BLTRITON_AUTOTUNE=0"),
    ("tune-backend-word", [*TUNE, "--backend", "gpu"], {}, "--backend"),
    ("cache-device-bogus", ["cache", "show", "--device", "bogus"], {}, "--device"),
    ("cache-action", ["cache", "wipe"], {}, "action"),
    ("check-device-bogus", ["check", "--device", "bogus"], {}, "--device"),
    ("check-device-cuda", ["check", "--device", "cuda:7"], {}, "--device"),
    (
        "check-triton-without-cuda",
        ["check", "--device", "cpu", "--backend", "triton"],
        NO_INTERPRETER,
        "--backend",
    ),
    ("check-repeat-zero", ["check", "--device", "cpu", "--repeat", "0"], {}, "--repeat"),
]


@pytest.mark.parametrize("argv,env,text", [pytest.param(a, e, t, id=i) for i, a, e, t in BAD_CLI])
def test_bad_command_line_exits_2_with_one_line(monkeypatch, tmp_path, capsys, argv, env, text):
    if "cuda" in " ".join(argv) and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    monkeypatch.setenv("BLTRITON_CACHE_DIR", str(tmp_path / "cache"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and text in lines[0], captured.err
    assert not (tmp_path / "cache").exists()  # a mistake writes nothing


def test_command_line_mistake_has_no_traceback(tmp_path):
    """End to end through ``python -m bltriton``: exit status 2 and one line on stderr."""
    env = dict(os.environ, BLTRITON_CACHE_DIR=str(tmp_path), BLTRITON_AUTOTUNE="maybe")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "bltriton", *TUNE],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "python -m bltriton tune: error: BLTRITON_AUTOTUNE must be one of 0/1, true/false, yes/no, "
        "on/off (any case) or unset; got 'maybe'"
    ]

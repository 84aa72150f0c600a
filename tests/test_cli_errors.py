"""Environment variables and the command line beyond the table of ``tests/test_errors.py``
(whose ``env-*`` and ``cli-*`` rows hold the bad values and flags): accepted spellings, the
end-to-end ``python -m bltriton`` exit status, and that every variable is documented (in
docs/environment.md) and strict.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bltriton import _env

REPO_ROOT = Path(__file__).resolve().parents[1]


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


TUNE = ["tune", "--demo", "fcn", "--input-shape", "2,1,16", "--device", "cpu"]


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


def test_every_variable_is_documented_and_every_flag_is_strict(monkeypatch):
    page = (REPO_ROOT / "docs" / "environment.md").read_text()
    for name in (*_env.VARIABLES, "TRITON_INTERPRET"):
        assert f"| `{name}` |" in page, f"{name} is missing from docs/environment.md's table"
    assert "docs/environment.md" in (REPO_ROOT / "README.md").read_text()
    flags = [name for name, (default, _) in _env.VARIABLES.items() if default in ("0", "1")]
    assert len(flags) >= 3
    for name in flags:
        monkeypatch.setenv(name, "maybe")
        with pytest.raises(ValueError, match=name):
            _env.check_flags()
        monkeypatch.delenv(name)

"""Bad input gets a clear error that names the argument (table-driven).

``BAD_CALLS`` is the table: one row per mistake, ``(id, callable, exception type, text the message
must contain)``. Append rows for new arguments, environment variables and CLI flags; a callable
that needs an environment variable sets it with :func:`with_env`.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from bltriton import BLConv1d, BLConv2d, _env, autotune, bl_conv1d, bl_conv2d, convert, set_compress_rate
from bltriton.__main__ import main as cli_main


def with_env(name: str, value: str, call: Callable[[], object]) -> Callable[[], object]:
    """``call`` run with the environment variable ``name`` set to ``value`` (restored after)."""

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


class CommandLineError(Exception):
    """Raised by :func:`cli` when the command exits with 2 and one stderr line (the message)."""


def cli(*argv: str) -> Callable[[], object]:
    """``python -m bltriton *argv`` in-process: raises :class:`CommandLineError` with the stderr
    line for a user mistake (exit status 2, exactly one line, no traceback); anything else is
    an AssertionError naming what happened."""

    def run():
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli_main(list(argv))
            except SystemExit as exit_:  # argparse's own errors
                code = exit_.code
        lines = err.getvalue().strip().splitlines()
        if code == 2 and len(lines) == 1:
            raise CommandLineError(lines[0])
        raise AssertionError(f"exit status {code}, stderr {err.getvalue()!r}")

    return run


_TMP = tempfile.TemporaryDirectory(prefix="bltriton-test-errors-")  # removed at exit


def a_file() -> str:
    """A fresh existing regular file (for ``--out``, which must be a folder)."""
    fd, path = tempfile.mkstemp(prefix="not-a-folder-", dir=_TMP.name)
    os.close(fd)
    return path


def _tune_stub() -> object:
    return autotune.get_config("k", "h", {"B": 1}, [{"BLOCK": 1}], {"BLOCK": 1}, lambda cfg: None, "cpu")


def x4(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


W = lambda: torch.randn(4, 3, 3, 3)
X = lambda: torch.randn(1, 3, 8, 8)
NAN_X = lambda: torch.full((1, 3, 8, 8), float("nan"))
SEQ = lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))

DEMO = ["tune", "--demo", "fcn", "--input-shape", "2,1,16"]
TUNE = [*DEMO, "--device", "cpu"]
NO_ENV: tuple[str | None, str] = (None, "")
NO_INTERP = ("TRITON_INTERPRET", "0")
# Where the triton backend runs: CUDA when present (the interpreter is on only without it).
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Rows about a machine without CUDA, which cannot fire on one with it.
NEEDS_NO_CUDA = {"cli-tune-triton-no-cuda"}

BAD_CALLS = [
    # (id, callable, exception, text the message must contain)
    ("input-not-tensor", lambda: bl_conv2d([[1.0]], W()), TypeError, "input"),
    ("weight-not-tensor", lambda: bl_conv2d(x4(1, 3, 8, 8), 3.0), TypeError, "weight"),
    (
        "input-complex",
        lambda: bl_conv2d(x4(1, 3, 8, 8).to(torch.complex64), W()),
        TypeError,
        "input must be real",
    ),
    (
        "input-int",
        lambda: bl_conv2d(torch.ones(1, 3, 8, 8, dtype=torch.int64), W()),
        TypeError,
        "floating-point",
    ),
    ("input-rank-5", lambda: bl_conv2d(x4(1, 1, 3, 8, 8), W()), ValueError, "input must be"),
    ("input-rank-2-for-2d", lambda: bl_conv2d(x4(3, 8), W()), ValueError, "input must be"),
    (
        "weight-rank",
        lambda: bl_conv2d(x4(1, 3, 8, 8), torch.randn(4, 3, 3)),
        ValueError,
        "weight must have shape",
    ),
    ("channels", lambda: bl_conv2d(x4(1, 5, 8, 8), W()), ValueError, "channels"),
    (
        "dtype-mismatch",
        lambda: bl_conv2d(x4(1, 3, 8, 8, dtype=torch.float64), W()),
        TypeError,
        "same dtype",
    ),
    ("groups-zero", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), groups=0), ValueError, "groups"),
    (
        "groups-not-dividing-out",
        lambda: bl_conv2d(x4(1, 6, 8, 8), torch.randn(5, 3, 3, 3), groups=2),
        ValueError,
        "divisible by groups",
    ),
    ("bias-shape", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), torch.randn(3)), ValueError, "bias"),
    ("stride-zero", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), stride=0), ValueError, "stride"),
    (
        "dilation-tuple-len",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), dilation=(1, 1, 1)),
        ValueError,
        "dilation",
    ),
    ("padding-negative", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), padding=-1), ValueError, "padding"),
    (
        "padding-string",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), padding="full"),
        ValueError,
        "padding",
    ),
    (
        "same-with-stride",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), stride=2, padding="same"),
        ValueError,
        "padding='same'",
    ),
    (
        "padding-mode",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), padding_mode="mirror"),
        ValueError,
        "padding_mode",
    ),
    (
        "reflect-too-wide",
        lambda: bl_conv2d(x4(1, 3, 4, 4), W(), padding=4, padding_mode="reflect"),
        ValueError,
        "reflect",
    ),
    (
        "kernel-larger-than-input",
        lambda: bl_conv2d(x4(1, 3, 2, 8), W()),
        ValueError,
        "larger than the padded input",
    ),
    (
        "rate-percent",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=50),
        ValueError,
        "did you mean 0.5",
    ),
    (
        "rate-one",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=1.0),
        ValueError,
        "compress_rate",
    ),
    (
        "rate-negative",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=-0.1),
        ValueError,
        "compress_rate",
    ),
    (
        "rate-nan",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=float("nan")),
        ValueError,
        "compress_rate",
    ),
    (
        "rate-string",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate="0.5"),
        TypeError,
        "compress_rate",
    ),
    (
        "rate-and-energy",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), compress_rate=0.5, energy=0.9),
        ValueError,
        "exclusive",
    ),
    ("energy-range", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), energy=1.5), ValueError, "energy"),
    ("fft-size-small", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), fft_size=4), ValueError, "fft_size"),
    (
        "fft-size-word",
        lambda: bl_conv2d(x4(1, 3, 8, 8), W(), fft_size="huge"),
        ValueError,
        "fft_size",
    ),
    ("backend", lambda: bl_conv2d(x4(1, 3, 8, 8), W(), backend="cuda"), ValueError, "backend"),
    (
        "conv1d-rank",
        lambda: bl_conv1d(x4(1, 3, 8, 8), torch.randn(4, 3, 3)),
        ValueError,
        "input must be",
    ),
    ("module-rate", lambda: BLConv2d(3, 4, 3, compress_rate=75), ValueError, "did you mean 0.75"),
    (
        "module-rate-set",
        lambda: setattr(BLConv1d(3, 4, 3), "compress_rate", 2.0),
        ValueError,
        "compress_rate",
    ),
    ("module-backend", lambda: BLConv2d(3, 4, 3, backend="gpu"), ValueError, "backend"),
    (
        "set-rate",
        lambda: set_compress_rate(torch.nn.Sequential(BLConv2d(3, 4, 3)), 1.2),
        ValueError,
        "compress_rate",
    ),
    ("convert-not-module", lambda: convert("model"), TypeError, "nn.Module"),
    (
        "convert-unknown-name",
        lambda: convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), {"7": 0.5}),
        ValueError,
        "do not exist",
    ),
    # -- tensors ------------------------------------------------------------------------------
    ("bias-not-tensor", lambda: bl_conv2d(X(), W(), [0.0] * 4), TypeError, "bias"),
    ("bias-int", lambda: bl_conv2d(X(), W(), torch.zeros(4, dtype=torch.int64)), TypeError, "bias"),
    ("bias-dtype", lambda: bl_conv2d(X(), W(), torch.zeros(4, dtype=torch.float64)), TypeError, "bias"),
    ("bias-rank", lambda: bl_conv2d(X(), W(), torch.zeros(4, 1)), ValueError, "bias"),
    ("weight-complex", lambda: bl_conv2d(X(), W().to(torch.complex64)), TypeError, "weight must be real"),
    ("weight-int", lambda: bl_conv2d(X(), W().to(torch.int32)), TypeError, "floating-point"),
    ("input-bool", lambda: bl_conv2d(X() > 0, W()), TypeError, "floating-point"),
    ("weight-empty-kernel", lambda: bl_conv2d(X(), torch.randn(4, 3, 0, 3)), ValueError, "empty kernel"),
    ("unbatched-channels", lambda: bl_conv2d(torch.randn(5, 8, 8), W()), ValueError, "channels"),
    ("conv1d-weight-rank", lambda: bl_conv1d(torch.randn(1, 3, 8), W()), ValueError, "weight must"),
    # -- geometry -----------------------------------------------------------------------------
    ("stride-float", lambda: bl_conv2d(X(), W(), stride=2.0), TypeError, "stride"),
    ("stride-tuple-float", lambda: bl_conv2d(X(), W(), stride=(1, 2.0)), TypeError, "stride"),
    ("stride-tuple-bool", lambda: bl_conv2d(X(), W(), stride=(1, True)), TypeError, "stride"),
    ("dilation-float", lambda: bl_conv2d(X(), W(), dilation=1.0), TypeError, "dilation"),
    ("padding-tuple-float", lambda: bl_conv2d(X(), W(), padding=(1, 1.0)), TypeError, "padding"),
    ("stride-str", lambda: bl_conv2d(X(), W(), stride="2"), TypeError, "stride"),
    ("dilation-zero", lambda: bl_conv2d(X(), W(), dilation=0), ValueError, "dilation"),
    ("padding-tuple-len", lambda: bl_conv2d(X(), W(), padding=(1, 1, 1)), ValueError, "padding"),
    ("padding-float", lambda: bl_conv2d(X(), W(), padding=1.5), TypeError, "padding"),
    ("groups-float", lambda: bl_conv2d(X(), W(), groups=1.5), TypeError, "groups"),
    ("groups-float-whole", lambda: bl_conv2d(X(), W(), groups=1.0), TypeError, "groups"),
    ("groups-bool", lambda: bl_conv2d(X(), W(), groups=True), TypeError, "groups"),
    ("groups-channels", lambda: bl_conv2d(X(), W(), groups=3), ValueError, "channels"),
    (
        "circular-too-wide",
        lambda: bl_conv2d(torch.randn(1, 3, 4, 4), W(), padding=5, padding_mode="circular"),
        ValueError,
        "circular",
    ),
    (
        "dilated-kernel-too-large",
        lambda: bl_conv2d(X(), W(), dilation=4),
        ValueError,
        "larger than the padded input",
    ),
    # -- band arguments -----------------------------------------------------------------------
    ("rate-bool", lambda: bl_conv2d(X(), W(), compress_rate=True), TypeError, "compress_rate"),
    ("rate-np-percent", lambda: bl_conv2d(X(), W(), compress_rate=np.float32(50)), ValueError, "0.5"),
    ("rate-tensor", lambda: bl_conv2d(X(), W(), compress_rate=torch.tensor(0.5)), TypeError, "compress_rate"),
    ("energy-string", lambda: bl_conv2d(X(), W(), energy="0.9"), TypeError, "energy"),
    ("energy-zero", lambda: bl_conv2d(X(), W(), energy=0.0), ValueError, "energy"),
    ("energy-nan", lambda: bl_conv2d(X(), W(), energy=float("nan")), ValueError, "energy"),
    (
        "energy-range-rate-none",
        lambda: bl_conv2d(X(), W(), compress_rate=None, energy=2.0),
        ValueError,
        "energy must be in (0, 1]",
    ),
    ("fft-size-float", lambda: bl_conv2d(X(), W(), fft_size=16.0), TypeError, "fft_size"),
    ("fft-size-negative", lambda: bl_conv2d(X(), W(), fft_size=-3), ValueError, "fft_size"),
    ("fft-size-tuple-len", lambda: bl_conv2d(X(), W(), fft_size=(16, 16, 16)), ValueError, "fft_size"),
    (
        "fft-size-1d-tuple",
        lambda: bl_conv1d(torch.randn(1, 3, 8), torch.randn(4, 3, 3), fft_size=(16, 16)),
        ValueError,
        "fft_size",
    ),
    (
        "check-finite-input",
        with_env("BLTRITON_CHECK_FINITE", "1", lambda: bl_conv2d(NAN_X(), W())),
        ValueError,
        "input has 192 non-finite",
    ),
    (
        "check-finite-weight",
        with_env("BLTRITON_CHECK_FINITE", "1", lambda: bl_conv2d(X(), W() / 0.0 * 0.0)),
        ValueError,
        "weight has",
    ),
    (
        "env-check-finite-typo",
        with_env("BLTRITON_CHECK_FINITE", "maybe", lambda: bl_conv2d(X(), W())),
        ValueError,
        "BLTRITON_CHECK_FINITE must be one of",
    ),
    # -- modules ------------------------------------------------------------------------------
    ("module-fft-bogus", lambda: BLConv2d(3, 4, 3, fft_size="bogus"), ValueError, "fft_size"),
    ("module-fft-negative", lambda: BLConv2d(3, 4, 3, fft_size=-3), ValueError, "fft_size"),
    ("module-fft-float", lambda: BLConv1d(3, 4, 3, fft_size=16.0), TypeError, "fft_size"),
    ("module-fft-tuple-1d", lambda: BLConv1d(3, 4, 3, fft_size=(8, 8)), ValueError, "fft_size"),
    ("module-energy-range", lambda: BLConv2d(3, 4, 3, energy=1.5), ValueError, "energy"),
    (
        "module-energy-rate-none",
        lambda: BLConv2d(3, 4, 3, compress_rate=None, energy=-1.0),
        ValueError,
        "energy must be in (0, 1]",
    ),
    (
        "module-rate-and-energy",
        lambda: BLConv2d(3, 4, 3, compress_rate=0.5, energy=0.9),
        ValueError,
        "exclusive",
    ),
    ("module-rate-string", lambda: BLConv1d(3, 4, 3, compress_rate="half"), TypeError, "compress_rate"),
    ("module-channels", lambda: BLConv2d(3, 4, 3)(torch.randn(1, 5, 8, 8)), ValueError, "channels"),
    (
        "module-int-input",
        lambda: BLConv2d(3, 4, 3)(torch.ones(1, 3, 8, 8, dtype=torch.int64)),
        TypeError,
        "floating-point",
    ),
    (
        "module-dtype",
        lambda: BLConv2d(3, 4, 3)(torch.randn(1, 3, 8, 8, dtype=torch.float64)),
        TypeError,
        "same dtype",
    ),
    ("from-conv-type", lambda: BLConv2d.from_conv(nn.Conv1d(3, 4, 3)), TypeError, "nn.Conv2d"),
    (
        "set-rate-type",
        lambda: set_compress_rate(nn.Sequential(BLConv2d(3, 4, 3)), "0.5"),
        TypeError,
        "compress_rate",
    ),
    # -- convert ------------------------------------------------------------------------------
    ("convert-rate-percent", lambda: convert(SEQ(), 50), ValueError, "did you mean 0.5"),
    ("convert-map-bad-rate", lambda: convert(SEQ(), {"0": 0.5, "2": 2.0}), ValueError, "layer '2'"),
    ("convert-callable-bad", lambda: convert(SEQ(), lambda n, m: "x"), TypeError, "compress_rate"),
    ("convert-energy-range", lambda: convert(SEQ(), energy=1.5), ValueError, "energy"),
    ("convert-rate-and-energy", lambda: convert(SEQ(), 0.5, energy=0.9), ValueError, "exclusive"),
    ("convert-fft-bogus", lambda: convert(SEQ(), 0.5, fft_size="bogus"), ValueError, "fft_size"),
    ("convert-backend", lambda: convert(SEQ(), 0.5, backend="gpu"), ValueError, "backend"),
    # -- environment variables ----------------------------------------------------------------
    (
        "env-autotune-maybe",
        with_env("BLTRITON_AUTOTUNE", "maybe", _tune_stub),
        ValueError,
        "BLTRITON_AUTOTUNE",
    ),
    (
        "env-autotune-maybe-conv",
        with_env(
            "BLTRITON_AUTOTUNE",
            "maybe",
            lambda: bl_conv2d(
                X().to(TRITON_DEVICE), W().to(TRITON_DEVICE), backend="triton", algorithm="spectral"
            ),
        ),
        ValueError,
        "BLTRITON_AUTOTUNE",
    ),
    ("env-autotune-2", with_env("BLTRITON_AUTOTUNE", "2", _tune_stub), ValueError, "got '2'"),
    (
        "env-force-retune-typo",
        with_env("BLTRITON_FORCE_RETUNE", "ture", _tune_stub),
        ValueError,
        "FORCE_RETUNE",
    ),
    (
        "env-print-autotuning-word",
        with_env("BLTRITON_PRINT_AUTOTUNING", "verbose", _env.print_autotuning),
        ValueError,
        "BLTRITON_PRINT_AUTOTUNING",
    ),
    ("env-backend", with_env("BLTRITON_BACKEND", "cuda", _env.backend), ValueError, "BLTRITON_BACKEND"),
    # -- command line: exit status 2 and one line naming the flag --------------------------------
    *[
        (f"cli-{name}", with_env(var, value, cli(*argv)) if var else cli(*argv), CommandLineError, text)
        for name, argv, (var, value), text in [
            ("tune-triton-no-cuda", [*TUNE, "--backend", "triton"], NO_INTERP, "--backend triton"),
            ("tune-device-bogus", [*DEMO, "--device", "bogus"], NO_ENV, "--device"),
            ("tune-device-meta", [*DEMO, "--device", "meta"], NO_ENV, "--device"),
            (
                "tune-shape-zero",
                ["tune", "--demo", "fcn", "--input-shape", "0,1,16"],
                NO_ENV,
                "--input-shape",
            ),
            ("tune-shape-short", ["tune", "--demo", "fcn", "--input-shape", "2,16"], NO_ENV, "--input-shape"),
            ("tune-num-classes-zero", [*TUNE, "--num-classes", "0"], NO_ENV, "--num-classes"),
            ("tune-compress-rate", [*TUNE, "--compress-rate", "1.5"], NO_ENV, "--compress-rate"),
            (
                "tune-model-no-colon",
                ["tune", "--model", "os.path", "--input-shape", "2,1,16"],
                NO_ENV,
                "--model",
            ),
            (
                "tune-model-missing",
                ["tune", "--model", "no_such_mod:f", "--input-shape", "2,1,16"],
                NO_ENV,
                "--model",
            ),
            (
                "tune-model-not-module",
                ["tune", "--model", "os:getcwd", "--input-shape", "2,1,16"],
                NO_ENV,
                "--model",
            ),
            ("tune-autotune-maybe", TUNE, ("BLTRITON_AUTOTUNE", "maybe"), "BLTRITON_AUTOTUNE"),
            ("tune-autotune-off", TUNE, ("BLTRITON_AUTOTUNE", "0"), "BLTRITON_AUTOTUNE=0"),
            ("tune-backend-word", [*TUNE, "--backend", "gpu"], NO_ENV, "--backend"),
            ("cache-device-bogus", ["cache", "show", "--device", "bogus"], NO_ENV, "--device"),
            ("cache-action", ["cache", "wipe"], NO_ENV, "action"),
            ("check-device-bogus", ["check", "--device", "bogus"], NO_ENV, "--device"),
            ("check-device-cuda-99", ["check", "--device", "cuda:99"], NO_ENV, "--device"),
            (
                "check-triton-no-cuda",
                ["check", "--device", "cpu", "--backend", "triton"],
                NO_INTERP,
                "--backend",
            ),
            ("check-repeat-zero", ["check", "--device", "cpu", "--repeat", "0"], NO_ENV, "--repeat"),
            ("demo-device-bogus", ["demo", "--quick", "--device", "bogus"], NO_ENV, "--device"),
            ("demo-epochs-zero", ["demo", "--quick", "--epochs", "0"], NO_ENV, "--epochs"),
            ("demo-width-zero", ["demo", "--quick", "--width", "0"], NO_ENV, "--width"),
            ("demo-batch-size-zero", ["demo", "--quick", "--batch-size", "0"], NO_ENV, "--batch-size"),
            ("demo-calibrated-range", ["demo", "--quick", "--calibrated", "1.5"], NO_ENV, "--calibrated"),
            (
                "tune-shape-shorter-than-kernel",
                ["tune", "--demo", "fcn", "--input-shape", "2,1,3", "--no-progress"],
                NO_ENV,
                "smaller than its kernel (8,)",
            ),
            (
                "tune-shape-2d-shorter-than-kernel",
                ["tune", "--demo", "resnet", "--input-shape", "2,1,2,9", "--no-progress"],
                NO_ENV,
                "--input-shape 2,1,2,9",
            ),
            ("calibrate-energy-range", ["calibrate", "--energy", "0"], NO_ENV, "energy"),
            ("calibrate-batches-zero", ["calibrate", "--batches", "0"], NO_ENV, "--batches"),
            ("calibrate-model-no-colon", ["calibrate", "--model", "os.path"], NO_ENV, "--model"),
        ]
    ],
    ("cli-demo-out-file", lambda: cli("demo", "--quick", "--out", a_file())(), CommandLineError, "--out"),
    (
        "cli-demo-out-under-file",
        lambda: cli("demo", "--quick", "--out", os.path.join(a_file(), "run"))(),
        CommandLineError,
        "is a file",
    ),
]


@pytest.mark.parametrize(
    "call,exc,text",
    [
        pytest.param(
            c,
            e,
            t,
            id=i,
            marks=pytest.mark.skipif(
                i in NEEDS_NO_CUDA and torch.cuda.is_available(), reason="a machine without CUDA"
            ),
        )
        for i, c, e, t in BAD_CALLS
    ],
)
def test_bad_input_raises_clear_error(call, exc, text):
    with pytest.raises(exc, match=None) as info:
        call()
    assert text in str(info.value), f"message {str(info.value)!r} should mention {text!r}"


def test_table_is_large_and_ids_unique():
    ids = [row[0] for row in BAD_CALLS]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


def test_convert_is_atomic():
    """A bad rate for the last layer leaves the model exactly as it was (nothing half-converted)."""
    model = SEQ()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="compress_rate"):
        convert(model, {"0": 0.5, "2": 1.5})
    assert [type(m) for m in model] == [nn.Conv2d, nn.ReLU, nn.Conv2d]
    assert list(model.state_dict()) == list(before)


def test_check_finite_off_by_default(monkeypatch):
    monkeypatch.delenv("BLTRITON_CHECK_FINITE", raising=False)
    assert torch.isnan(bl_conv2d(NAN_X(), W())).all()


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        bl_conv2d(x4(1, 3, 8, 8), W(), backend="triton")


def test_env_backend_invalid(monkeypatch):
    monkeypatch.setenv("BLTRITON_BACKEND", "fast")
    with pytest.raises(ValueError, match="BLTRITON_BACKEND"):
        bl_conv2d(x4(1, 3, 8, 8), W())


# -- float int-arguments: F.conv*d's TypeError on every call ------------------------------------
# (argument, the accepted value, a value equal to it in Python that F.conv*d rejects)
EQUAL_BUT_REJECTED = [
    pytest.param("stride", 1, 1.0, id="stride-1.0"),
    pytest.param("stride", (1, 1), (1, 1.0), id="stride-tuple-1.0"),
    pytest.param("stride", 1, True, id="stride-True"),
    pytest.param("padding", 1, 1.0, id="padding-1.0"),
    pytest.param("padding", [1, 1], [1, 1.0], id="padding-list-1.0"),
    pytest.param("dilation", 1, 1.0, id="dilation-1.0"),
    pytest.param("groups", 1, 1.0, id="groups-1.0"),
    pytest.param("groups", 1, True, id="groups-True"),
]


@pytest.mark.parametrize("conv", ["conv1d", "conv2d"])
@pytest.mark.parametrize("algorithm", ["spectral", "spatial"])
@pytest.mark.parametrize("name,good,bad", EQUAL_BUT_REJECTED)
def test_float_int_argument_raises_after_the_int_ran(name, good, bad, algorithm, conv):
    """What a call accepts does not depend on what ran before it: ``stride=1.0`` is a
    ``TypeError`` as in ``F.conv*d`` even after the same call with ``stride=1`` was checked and
    remembered (``1.0 == 1`` and both hash alike)."""
    x, w = (torch.randn(2, 3, 9), torch.randn(4, 3, 3)) if conv == "conv1d" else (X(), W())
    if conv == "conv1d" and isinstance(good, (tuple, list)):
        good, bad = type(good)(good[-1:]), type(bad)(bad[-1:])  # keeps the float item
    f_conv, bl_conv = getattr(torch.nn.functional, conv), {"conv1d": bl_conv1d, "conv2d": bl_conv2d}[conv]
    with pytest.raises(TypeError):
        f_conv(x, w, **{name: bad})
    for _ in range(2):  # checked on the first call, served from the memo on the second
        bl_conv(x, w, **{name: good}, compress_rate=0.5, algorithm=algorithm)
    for _ in range(2):
        with pytest.raises(TypeError, match=name):
            bl_conv(x, w, **{name: bad}, compress_rate=0.5, algorithm=algorithm)


# -- zero-size spatial inputs: F.conv*d's result, or its error type -------------------------------
ZERO_SIZE = [
    # (input shape, weight shape, padding)
    pytest.param((2, 4, 0, 12), (6, 4, 3, 3), 2, id="B2-C4-0x12-p2"),
    pytest.param((2, 4, 0, 12), (6, 4, 3, 3), 1, id="B2-C4-0x12-p1"),
    pytest.param((2, 4, 0, 12), (6, 4, 3, 3), (2, 0), id="B2-C4-0x12-p2x0"),
    pytest.param((2, 4, 5, 0), (6, 4, 3, 3), 2, id="B2-C4-5x0-p2"),
    pytest.param((4, 0, 7), (6, 4, 3, 3), 2, id="unbatched-C4-0x7-p2"),
    pytest.param((0, 4, 0, 12), (6, 4, 3, 3), 2, id="B0-C4-0x12-p2"),
    pytest.param((0, 4, 0, 12), (6, 4, 3, 3), 0, id="B0-C4-0x12-p0"),
    pytest.param((2, 0, 0, 12), (6, 0, 3, 3), 2, id="B2-C0-0x12-p2"),
    pytest.param((2, 4, 0), (6, 4, 3), 2, id="1d-B2-C4-L0-p2"),
    pytest.param((0, 4, 0), (6, 4, 3), 2, id="1d-B0-C4-L0-p2"),
    pytest.param((4, 0), (6, 4, 3), 1, id="1d-unbatched-C4-L0-p1"),
]


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular", "replicate"])
@pytest.mark.parametrize("x_shape,w_shape,padding", ZERO_SIZE)
def test_zero_size_spatial_input_follows_torch(x_shape, w_shape, padding, padding_mode):
    """An empty spatial axis gives ``nn.Conv*d``'s output (shape and the bias' values) or an
    error of the type it raises; padding must not make an empty input non-empty."""
    ndim = len(w_shape) - 2
    plain = (nn.Conv1d if ndim == 1 else nn.Conv2d)(
        w_shape[1], w_shape[0], w_shape[2:], padding=padding, padding_mode=padding_mode
    )
    band = (BLConv1d if ndim == 1 else BLConv2d).from_conv(plain, compress_rate=0.5)
    x = torch.randn(x_shape)
    try:
        expected = plain(x)
    except Exception as error:  # the type is what is compared
        with pytest.raises(type(error)):
            band(x)
        return
    y = band(x)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    torch.testing.assert_close(y, expected)

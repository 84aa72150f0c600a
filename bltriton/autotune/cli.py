"""``python -m bltriton cache show|path|clear``, ``python -m bltriton tune`` and
``python -m bltriton profile``.

``tune`` pre-tunes a model (:func:`bltriton.tune`): it runs one forward and backward pass (and/or
an inference forward) on random input with tuning enabled, which measures every band-limited
layer's algorithm (:mod:`bltriton.choice`) and makes every Triton launcher call
:func:`bltriton.autotune.get_config` for its shapes; the choices land in the cache files that
later runs read. ``profile`` (:func:`bltriton.profile`) times each convertible layer dense
against band-limited and names the layers that pay.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from bltriton import _env
from bltriton._cli import UsageError, check_backend, parse_device
from bltriton.autotune import cache as _cache
from bltriton.autotune import files as _files
from bltriton.autotune import tuner as _tuner

DEMO_MODELS = ("fcn", "resnet")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cache`` and ``tune`` subcommands (each sets ``func``) to ``subparsers``."""
    p_cache = subparsers.add_parser(
        "cache",
        help="show, locate or clear the autotune cache",
        description="Inspect the autotuner's JSON cache (one file per device under "
        "BLTRITON_CACHE_DIR, default ~/.cache/bltriton).",
    )
    p_cache.add_argument("action", choices=("show", "path", "clear"), help="what to do")
    p_cache.add_argument(
        "--all", action="store_true", help="show: every device's file, not only the current one"
    )
    p_cache.add_argument(
        "--device",
        default=None,
        help="show: the device whose file to list (default: current CUDA device, else the CPU)",
    )
    p_cache.set_defaults(func=cmd_cache)
    _add_tune_parser(subparsers)


def _add_tune_parser(subparsers: argparse._SubParsersAction) -> None:
    p_tune = subparsers.add_parser(
        "tune",
        help="pre-tune the band-limited layers of a model for one input shape",
        description="Run one forward+backward pass of a model on random input with autotuning "
        "on, so that every band-limited layer's kernels are tuned and cached.",
    )
    source = p_tune.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="import MODULE and call FUNCTION() to build the nn.Module",
    )
    source.add_argument("--demo", choices=DEMO_MODELS, help="a bundled demo model")
    p_tune.add_argument(
        "--input-shape",
        required=True,
        type=_parse_shape,
        metavar="B,C,L[,W]",
        help="input shape, e.g. 32,1,150 (1D) or 64,3,32,32 (2D)",
    )
    p_tune.add_argument(
        "--num-classes",
        type=_positive_int,
        default=10,
        help="demo models: output classes (default 10)",
    )
    p_tune.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p_tune.add_argument(
        "--compress-rate",
        type=float,
        default=None,
        help="fraction of spectrum coefficients discarded, in [0, 1) (default: the model's own)",
    )
    p_tune.add_argument(
        "--backend",
        choices=_env.BACKENDS,
        default="auto",
        help="backend of the band-limited layers (default auto: triton on CUDA; only the triton "
        "backend has configs to tune)",
    )
    p_tune.add_argument(
        "--tune-on-cpu",
        action="store_true",
        help="also time configs on the CPU / Triton interpreter (only useful for testing)",
    )
    p_tune.add_argument(
        "--mode",
        choices=("train", "eval", "both"),
        default="train",
        help="what to tune: a training step (forward+backward, default), inference, or both",
    )
    p_tune.add_argument("--no-progress", action="store_true", help="no progress bar or per-layer lines")
    p_tune.set_defaults(func=cmd_tune)
    _add_profile_parser(subparsers)


def _add_profile_parser(subparsers: argparse._SubParsersAction) -> None:
    p_prof = subparsers.add_parser(
        "profile",
        help="time each convertible layer of a model dense and band-limited, and say which pay",
        description="Time every nn.Conv1d/nn.Conv2d (or band-limited) layer of a model on this "
        "machine, dense against band-limited at one compress rate (each with its measured "
        "algorithm), on the shapes the model gives it; print a table and the layers that pay.",
    )
    source = p_prof.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="MODULE:FUNCTION", help="import MODULE, call FUNCTION()")
    source.add_argument("--demo", choices=DEMO_MODELS, help="a bundled demo model")
    p_prof.add_argument(
        "--input-shape", required=True, type=_parse_shape, metavar="B,C,L[,W]", help="input shape"
    )
    p_prof.add_argument("--num-classes", type=_positive_int, default=10, help="demo models: classes")
    p_prof.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p_prof.add_argument(
        "--compress-rate", type=float, default=0.5, help="compress rate to try, in [0, 1) (default 0.5)"
    )
    p_prof.add_argument("--infer", action="store_true", help="time inference (the forward) only")
    p_prof.add_argument("--reps", type=_positive_int, default=5, help="timed rounds per layer (default 5)")
    p_prof.set_defaults(func=cmd_profile)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if len(shape) < 3 or any(n <= 0 for n in shape):
        raise argparse.ArgumentTypeError(
            f"expected a positive shape like 32,1,150 (batch, channels, length[, width]); got {text!r}"
        )
    return shape


# -- cache -------------------------------------------------------------------------------------


def cmd_cache(args: argparse.Namespace) -> int:
    """Run ``cache show|path|clear``; returns the exit code."""
    folder = _env.cache_dir()
    if args.action == "path":
        print(folder)
        return 0
    if args.action == "clear":
        return _clear(folder)
    return _show(folder, show_all=getattr(args, "all", False), device=getattr(args, "device", None))


def _show(folder: Path, *, show_all: bool, device: str | None) -> int:
    which = ""
    if show_all:
        files = _cache.list_cache_files(folder)
    else:
        from bltriton import choice

        dev = parse_device(device) if device is not None else None
        ident = _tuner.device_identity(dev)
        names = [ident.name, choice.cache_file_name(_choice_device(dev))]
        paths = dict.fromkeys(_cache.cache_file_path(folder, n) for n in names)  # the GPU's: one file
        files = [p for p in paths if os.path.lexists(p)]
        which = f" for {' or '.join(dict.fromkeys(names))}"
    if not files:
        print(f"no autotune cache{which} in {folder}")
        return 0
    for path in files:
        entries, problem = _cache.CacheFile(path.parent, path.stem).peek()
        if problem is not None:
            print(f"{path}: unusable ({problem})")
            continue
        print(f"{path}: {len(entries)} entries")
        for name in sorted(entries, key=lambda n: _sort_key(entries[n])):
            entry = entries[name]
            full = entry["key"]
            if full.get("kernel") == "algorithm":
                print(_choice_line(entry))
                continue
            best, best_ms = _cache.best_of(entry["timings"])
            timed = len(entry["timings"])
            ms = f"{best_ms:.4f} ms" if best_ms is not None and math.isfinite(best_ms) else "failed"
            print(
                f"  {full.get('kernel', '?')} {_cache.canonical_json(full.get('key', {}))} -> "
                f"{_cache.canonical_json(best) if best is not None else 'default'} {ms} "
                f"({timed} configs; triton {full.get('triton')}, bltriton {full.get('bltriton')}, "
                f"source {str(full.get('source_hash'))[:12]})"
            )
    return 0


def _choice_device(device: Any) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _choice_line(entry: dict[str, Any]) -> str:
    """One algorithm choice of ``cache show``: the call, the pick and every candidate's time."""
    full, shape = entry["key"], entry["key"].get("key", {})
    best, _ = _cache.best_of(entry["timings"])
    times = ", ".join(
        f"{json.loads(c).get('algorithm', c)} {ms:.3f} ms" if math.isfinite(ms) else f"{c} failed"
        for c, ms in sorted(entry["timings"].items())
    )
    mode = "train" if shape.get("training") else "infer"
    where = (
        f"{full.get('device')}, {full.get('threads')} threads" if full.get("threads") else full.get("device")
    )
    return (
        f"  algorithm x{shape.get('x')} w{shape.get('w')} groups={shape.get('groups')} "
        f"stride={shape.get('stride')} {shape.get('dtype')} {mode} -> "
        f"{(best or {}).get('algorithm', 'estimate')} ({times}; {where}; torch {full.get('torch')}, "
        f"bltriton {full.get('bltriton')})"
    )


def _sort_key(entry: dict[str, Any]) -> tuple[str, str]:
    full = entry["key"]
    return str(full.get("kernel")), json.dumps(full.get("key"), sort_keys=True)


def _clear(folder: Path) -> int:
    """Delete the cache files, their locks, set-aside copies and temporary files, and print each
    path removed. A file is deleted only when it is proven the cache's own (name pattern, and for
    cache files the schema marker and kernel-named entries; see :mod:`bltriton.autotune.files`)."""
    if not folder.is_dir():
        print(f"no autotune cache in {folder}")
        return 0
    removed: list[Path] = []
    failed = 0
    for name in _files.cache_names_in(folder):
        path = folder / name
        lock_path = Path(str(path) + ".lock")
        ours = _files.is_cache_file(path)
        victims = ([path] if ours else []) + _files.byproducts_of(name, folder)
        if not victims:
            continue
        # Under the file's lock no writer is between its temporary file and its rename. A writer
        # creates the lock file first: without one there is no writer to wait for (and taking the
        # lock would create a file that is not ours to leave behind).
        locked = ours or lock_path.exists()
        try:
            with _cache.filelock.FileLock(str(lock_path), timeout=10) if locked else contextlib.nullcontext():
                for victim in victims:
                    victim.unlink(missing_ok=True)
                    removed.append(victim)
                if ours:
                    lock_path.unlink(missing_ok=True)
                    removed.append(lock_path)
        except (OSError, _cache.filelock.Timeout) as err:
            print(f"could not clear {path}: {err}", file=sys.stderr)
            failed += 1
    for path in removed:
        print(f"removed {path}")
    n_caches = sum(p.name.endswith(".json") for p in removed)
    print(f"removed {n_caches} cache file(s) and {len(removed) - n_caches} other file(s) from {folder}")
    return 1 if failed else 0


# -- tune --------------------------------------------------------------------------------------


def _build_model(args: argparse.Namespace, in_channels: int) -> Any:
    import torch

    if args.model:
        module_name, sep, func_name = args.model.partition(":")
        if not sep or not module_name or not func_name:
            raise UsageError(f"--model: expected MODULE:FUNCTION; got {args.model!r}")
        try:
            factory = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as err:
            raise UsageError(f"--model: cannot import {args.model!r} ({err})") from err
        model = factory()
    else:
        try:
            demo_models = importlib.import_module("bltriton.demo.models")
        except ImportError as err:
            raise UsageError(
                f"--demo {args.demo}: the demo models (bltriton.demo.models) are not available "
                f"in this installation ({err}); pass --model MODULE:FUNCTION instead"
            ) from err
        build = getattr(demo_models, f"build_{args.demo}", None)
        if build is None:
            raise UsageError(f"--demo {args.demo}: bltriton.demo.models has no build_{args.demo}")
        model = build(in_channels, args.num_classes)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--model: {args.model} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _bl_modules(model: Any) -> list[tuple[str, Any]]:
    from bltriton.nn import is_band_limited

    return [(n, m) for n, m in model.named_modules() if is_band_limited(m)]


def _apply_compress_rate(model: Any, rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise UsageError(f"--compress-rate: expected a fraction in [0, 1); got {rate}")
    from bltriton.nn import set_compress_rate

    set_compress_rate(model, rate)


@contextlib.contextmanager
def _backend(name: str):
    # The backend is chosen through BLTRITON_BACKEND, which bltriton._env reads at call time.
    old = os.environ.get("BLTRITON_BACKEND")
    os.environ["BLTRITON_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BLTRITON_BACKEND", None)
        else:
            os.environ["BLTRITON_BACKEND"] = old


def _progress_hooks(layers: list[tuple[str, Any]], bar: Any) -> list[Any]:
    """Hooks that advance ``bar`` as each layer's forward ends and its backward starts."""
    import torch

    names = {id(m): n for n, m in layers}

    def after_forward(module: Any, inputs: Any, output: Any) -> None:
        name = names[id(module)]
        bar.set_postfix_str(f"fwd {name}", refresh=False)
        bar.update()
        out = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(out, torch.Tensor) and out.requires_grad:
            # Fires when the gradient reaches this layer's output, i.e. as its backward starts.
            out.register_hook(lambda grad: on_backward(name))

    def on_backward(name: str) -> None:
        bar.set_postfix_str(f"bwd {name}", refresh=False)
        bar.update()

    return [module.register_forward_hook(after_forward) for _, module in layers]


def _shape_checks(layers: list[tuple[str, Any]], shape: tuple[int, ...]) -> list[Any]:
    """Forward pre-hooks raising :class:`UsageError` where a layer's input is smaller than its
    dilated kernel on some axis: a padded call still runs, but its band and tuned configs are
    those of a problem no real input of the model makes, so the run would tune nothing useful
    (the first layer's check runs before anything was tuned)."""
    import torch

    flag = f"--input-shape {','.join(map(str, shape))}"

    def before_forward(name: str, module: Any, inputs: Any) -> None:
        x = inputs[0] if inputs else None
        sizes = tuple(x.shape[2:]) if isinstance(x, torch.Tensor) and x.dim() > 2 else ()
        taps, dilation = getattr(module, "kernel_size", ()), getattr(module, "dilation", ())
        kernel = tuple(d * (k - 1) + 1 for k, d in zip(taps, dilation))
        if len(sizes) == len(kernel) and any(n < k for n, k in zip(sizes, kernel)):
            raise UsageError(
                f"{flag}: layer {name!r} gets spatial size {sizes}, smaller than its kernel "
                f"{kernel}; tune with the input shape the model is used at"
            )

    return [
        module.register_forward_pre_hook(functools.partial(before_forward, name)) for name, module in layers
    ]


def cmd_tune(args: argparse.Namespace) -> int:
    """Run ``tune``: :func:`bltriton.tune` on the model (one forward+backward, and/or one
    inference forward, with tuning on); prints the decisions' and the kernel tuner's stats."""
    import torch

    from bltriton import choice
    from bltriton.pretune import tune

    shape = tuple(args.input_shape)
    device = parse_device(args.device)
    check_backend(args.backend, device)
    model = _build_model(args, in_channels=shape[1])
    if args.compress_rate is not None:
        _apply_compress_rate(model, args.compress_rate)
    # The arguments first (a bad flag is named whatever the environment), then the environment.
    if not _env.autotune_enabled():
        raise UsageError("BLTRITON_AUTOTUNE=0 disables tuning; unset it to pre-tune")
    model = model.to(device).train()
    layers = _bl_modules(model)
    if not layers:
        print(
            "warning: the model has no band-limited layers (classes named BL*); nothing to tune",
            file=sys.stderr,
        )
    old_settings = _tuner.configure(tune_on_cpu=True) if args.tune_on_cpu else None
    timed_here = device.type == "cuda" or _tuner.settings().tune_on_cpu
    handles = _shape_checks(layers, shape)
    modes = {"train": ("train",), "eval": ("eval",), "both": ("train", "eval")}[args.mode]
    _tuner.reset_stats()
    before = choice.stats()
    try:
        with _backend(args.backend):
            x = torch.randn(shape, device=device)
            tune(model, x, modes=modes, progress=False if args.no_progress else None)
    finally:
        for handle in handles:
            handle.remove()
        if old_settings is not None:
            _tuner.configure(**old_settings)
    if not timed_here:  # after the run, so that a mistake the run finds is the only line
        print(
            f"note: on {device.type} kernel configs are not timed (defaults are used; the algorithm "
            f"choices are); pass --tune-on-cpu to time them anyway",
            file=sys.stderr,
        )
    after = choice.stats()
    picked = {k: after[k] - before[k] for k in ("timed", "cache_hits", "estimated", "pruned")}
    path = _cache.cache_file_path(_env.cache_dir(), choice.cache_file_name(device))
    print(
        f"algorithm choices: {picked['timed']} timed, {picked['cache_hits']} from the cache, "
        f"{picked['pruned']} by the estimate alone, {picked['estimated']} untimed"
        + (f" ({after['spent_s'] - before['spent_s']:.1f} s); file: {path}" if picked["timed"] else "")
    )
    stats = _tuner.stats()
    print(json.dumps(stats, sort_keys=True))
    print(_cache_file_line(stats, device))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """Run ``profile``: :func:`bltriton.profile` on the model; prints its table and the names of
    the layers that pay (for ``convert(model, rate, layers=...)``)."""
    import torch

    from bltriton.layer_report import profile

    shape = tuple(args.input_shape)
    device = parse_device(args.device)
    if not 0.0 <= args.compress_rate < 1.0:
        raise UsageError(f"--compress-rate: expected a fraction in [0, 1); got {args.compress_rate}")
    model = _build_model(args, in_channels=shape[1]).to(device)
    handles = _shape_checks([(n, m) for n, m in model.named_modules() if hasattr(m, "kernel_size")], shape)
    try:
        report = profile(
            model,
            torch.randn(shape, device=device),
            args.compress_rate,
            training=not args.infer,
            reps=args.reps,
        )
    finally:
        for handle in handles:
            handle.remove()
    print(f"paying: {json.dumps(report.paying())}")
    return 0


def _cache_file_line(stats: dict[str, int], device: Any) -> str:
    """Name the cache file only when this run wrote to it or read from it."""
    path = _cache.cache_file_path(_env.cache_dir(), _tuner.device_identity(device).name)
    if (stats["misses"] or stats["disk_hits"]) and path.is_file():
        return f"cache file: {path}"
    if stats["misses"]:
        return f"cache file: none (could not write {path}; the choices were not kept)"
    return "cache file: none (nothing was timed, so nothing was cached)"

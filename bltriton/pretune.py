"""Pre-tuning: run a model's layer shapes once so that training starts on tuned choices.

:func:`tune` runs one forward and backward (and, if asked, one inference forward) of a model on
an example input, with the timing budget of :mod:`bltriton.choice` lifted: every band-limited
layer's algorithm is measured (and, on CUDA, every Triton kernel's launch config tuned) and lands
in the cache files that later processes read. The model is left as it was: its mode, buffers
(batch-norm statistics) and ``.grad`` fields are restored or untouched.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from bltriton import _env, choice, functional
from bltriton.nn import is_band_limited

__all__ = ["MODES", "tune"]

#: What :func:`tune` runs: ``"train"`` (forward and backward, as a training step) and ``"eval"``
#: (the forward in ``eval()`` under ``no_grad``, as inference).
MODES = ("train", "eval")


def _inputs(example_input: Any) -> tuple[torch.Tensor, ...]:
    items = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise TypeError(
            f"tune: example_input must be a tensor or a tuple of tensors; got {type(example_input).__name__}"
        )
    return tuple(items)


def _modes(modes: str | Sequence[str]) -> tuple[str, ...]:
    chosen = (modes,) if isinstance(modes, str) else tuple(modes)
    bad = [m for m in chosen if m not in MODES]
    if not chosen or bad:
        raise ValueError(f"tune: modes must name some of {MODES}; got {modes!r}")
    return chosen


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(out, dict):
        return _first_tensor(list(out.values()))
    return None


@contextlib.contextmanager
def _model_kept(model: nn.Module) -> Iterator[None]:
    """Restore the modes and buffers of ``model`` (a training forward updates batch-norm
    statistics) after the block."""
    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, training in modes.items():
            m.training = training


def _reporter(layers: list[tuple[str, nn.Module]], modes: tuple[str, ...], progress: bool | None):
    """``(hooks' on_layer(name, mode), close())``: a tqdm bar on a terminal, else one line per
    layer on stderr (a log file gets no bar redraws)."""
    interactive = sys.stderr.isatty() if progress is None else progress
    if interactive:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(layers) * len(modes), desc="tuning layers", unit="layer", file=sys.stderr)

        def on_layer(name: str, mode: str, lines: list[str]) -> None:
            bar.set_postfix_str(f"{mode} {name}", refresh=False)
            bar.update()

        return on_layer, bar.close
    quiet = progress is False

    def log(name: str, mode: str, lines: list[str]) -> None:
        if not quiet:
            print(f"tune {mode} {name}: {'; '.join(lines) or '-'}", file=sys.stderr, flush=True)

    return log, lambda: None


def _describe(record: dict) -> str:
    timed = ", ".join(f"{a} {t:.3f} ms" for a, t in record["ms"].items() if math.isfinite(t))
    return f"{record['pick']} ({timed + '; ' if timed else ''}{record['how']})"


def tune(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    *,
    modes: str | Iterable[str] = ("train",),
    progress: bool | None = None,
) -> list[dict]:
    """Measure every band-limited layer's algorithm (and on CUDA its kernels' configs) for the
    shapes ``model`` sees on ``example_input``, storing the choices in the cache files.

    Args:
        model: a module holding band-limited layers (see :func:`bltriton.convert`).
        example_input: the model's input (a tensor, or a tuple of them: ``model(*inputs)``), at
            the batch size and resolution of the run to come.
        modes: ``"train"`` (forward and backward), ``"eval"`` (inference forward), or both.
        progress: a progress bar (True), one line per layer on stderr (None where stderr is not
            a terminal, the default), or nothing (False).

    Returns:
        The decisions made, one dict per layer call shape and mode (see
        :func:`bltriton.choice.decisions`; ``"layer"`` names the layer).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``example_input`` not a tensor/tuple.
        ValueError: ``modes`` names something else than ``"train"``/``"eval"``.
        RuntimeError: ``BLTRITON_AUTOTUNE=0`` (nothing would be tuned).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"tune: model must be an nn.Module; got {type(model).__name__}")
    inputs = _inputs(example_input)
    chosen = _modes(modes)
    if not _env.autotune_enabled():
        raise RuntimeError("tune: BLTRITON_AUTOTUNE=0 disables tuning; unset it to pre-tune")
    layers = [(n, m) for n, m in model.named_modules() if is_band_limited(m)]
    on_layer, close = _reporter(layers, chosen, progress)
    first = len(choice.decisions())
    mode_now = ["train"]

    seen = [0]

    def before(name: str, module: nn.Module, args: Any) -> None:
        choice.set_layer_label(name)
        seen[0] = len(choice.decisions())

    def after(name: str, module: nn.Module, args: Any, out: Any) -> None:
        choice.set_layer_label(None)
        lines = [_describe(r) for r in choice.decisions()[seen[0] :]]
        if not lines and getattr(module, "last_algorithm", None):
            lines = [f"{module.last_algorithm} (decided earlier in this process)"]
        on_layer(name, mode_now[0], lines)

    hooks = []
    for name, module in layers:
        hooks.append(module.register_forward_pre_hook(lambda m, a, name=name: before(name, m, a)))
        hooks.append(module.register_forward_hook(lambda m, a, o, name=name: after(name, m, a, o)))
    old = choice.configure(budget_s=math.inf)
    functional._CALLS.clear()  # calls decided before (e.g. by the estimate) are decided again
    try:
        with _model_kept(model):
            for mode in chosen:
                mode_now[0] = mode
                if mode == "train":
                    model.train()
                    out = _first_tensor(model(*inputs))
                    params = [p for p in model.parameters() if p.requires_grad]
                    if out is not None and out.requires_grad and params:
                        torch.autograd.grad(out.float().sum(), params, allow_unused=True)
                else:
                    model.eval()
                    with torch.no_grad():
                        model(*inputs)
                if inputs[0].is_cuda:
                    torch.cuda.synchronize(inputs[0].device)
    finally:
        for handle in hooks:
            handle.remove()
        choice.set_layer_label(None)
        choice.configure(**old)
        close()
    return choice.decisions()[first:]

"""Which layers pay: :func:`profile` times every convertible layer of a model on this machine,
dense against band-limited (by its measured algorithm, :mod:`bltriton.choice`), on the shapes
the model gives it, and says what limits each.

    report = bltriton.profile(model, x, 0.5)        # prints the table
    bltriton.convert(model, 0.5, layers=report.paying())
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from bltriton import spatial
from bltriton.nn import BLConv1d, BLConv2d, is_band_limited, layer_kinds
from bltriton.spectral import check_rate

__all__ = ["LayerTiming", "ProfileReport", "profile"]


@dataclass(frozen=True)
class LayerTiming:
    """One layer's row of a :class:`ProfileReport`.

    Attributes:
        name: qualified name in the model (what ``convert(layers=...)`` takes).
        kinds: :func:`bltriton.nn.layer_kinds` of the layer (``("dense", "strided", "2d")``).
        input_shape: the input the model gives it, ``[B, C, *L]``.
        weight_shape: ``[O, C/groups, *k]``.
        kept_fraction: fraction of the spectrum the band keeps.
        dense_ms, band_ms: median times (fwd+bwd when training, else the forward).
        algorithm: the algorithm the band-limited layer took.
        limit: what bounds the band-limited time: the largest term of the estimate for that
            algorithm (``"spatial: conv 71%"``) or why nothing can be gained.
    """

    name: str
    kinds: tuple[str, ...]
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    kept_fraction: float
    dense_ms: float
    band_ms: float
    algorithm: str
    limit: str

    @property
    def ratio(self) -> float:
        """``band_ms / dense_ms`` (below 1: the band pays)."""
        return self.band_ms / self.dense_ms if self.dense_ms > 0 else float("inf")


@dataclass
class ProfileReport:
    """What :func:`profile` measured: one :class:`LayerTiming` per convertible layer."""

    rows: list[LayerTiming]
    rate: float
    training: bool
    device: str
    machine: str = ""
    notes: list[str] = field(default_factory=list)

    def paying(self, margin: float = 1.0) -> list[str]:
        """Names of the layers whose band-limited time is below ``margin`` × the dense one."""
        if not margin > 0:
            raise ValueError(f"paying: margin must be a positive number; got {margin!r}")
        return [r.name for r in self.rows if r.band_ms < margin * r.dense_ms]

    def table(self) -> str:
        """The report as a markdown table, with the machine and the totals."""
        mode = "fwd+bwd" if self.training else "inference"
        lines = [
            f"{self.machine or self.device}, r={self.rate}, {mode}, ms (medians)",
            "| layer | kind | input | weight | kept | dense ms | band-limited ms | ratio | algorithm | "
            "limited by |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.name} | {' '.join(r.kinds)} | {'x'.join(map(str, r.input_shape))} | "
                f"{'x'.join(map(str, r.weight_shape))} | {r.kept_fraction:.2f} | {r.dense_ms:.2f} | "
                f"{r.band_ms:.2f} | {r.ratio:.2f} | {r.algorithm} | {r.limit} |"
            )
        dense = sum(r.dense_ms for r in self.rows)
        band = sum(r.band_ms for r in self.rows)
        pay = self.paying()
        paid = sum(min(r.band_ms, r.dense_ms) for r in self.rows)
        lines.append(
            f"all {len(self.rows)} layers: dense {dense:.2f} ms, band-limited {band:.2f} ms; "
            f"{len(pay)} pay (converting only those: {paid:.2f} ms)"
        )
        return "\n".join(lines + self.notes)

    def __str__(self) -> str:
        return self.table()


def _dense_copy(conv: nn.Module) -> nn.Module:
    """An ``nn.Conv1d``/``nn.Conv2d`` with the layer's arguments and weights (a band-limited
    layer's dense twin; a dense layer's copy)."""
    base = nn.Conv2d if isinstance(conv, nn.Conv2d) else nn.Conv1d
    padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
    dense = base(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    dense.load_state_dict({k: v for k, v in conv.state_dict().items() if k in ("weight", "bias")})
    return dense


def _seen_inputs(model: nn.Module, inputs: tuple[torch.Tensor, ...], skip_1x1: bool):
    """``[(name, conv, input shape, input requires grad)]`` of the convertible layers, in call
    order, from one training-mode forward (grad mode on, so activations carry their flag)."""
    seen: dict[int, tuple] = {}
    hooks = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv1d, nn.Conv2d)):
            continue
        if skip_1x1 and all(k == 1 for k in m.kernel_size):
            continue

        def hook(mod, args, name=name):
            if id(mod) not in seen and args and isinstance(args[0], torch.Tensor):
                x = args[0]
                seen[id(mod)] = (name, mod, tuple(x.shape), x.requires_grad, x.dtype)

        hooks.append(m.register_forward_pre_hook(hook))
    state = copy.deepcopy(model.state_dict())
    try:
        model(*inputs)
    finally:
        for h in hooks:
            h.remove()
        model.load_state_dict(state)  # batch-norm statistics of the forward
    return list(seen.values())


def _step(layer: nn.Module, x: torch.Tensor, training: bool):
    params = [p for p in layer.parameters() if p.requires_grad]
    wanted = ([x] if x.requires_grad else []) + params
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    grad_out: list[torch.Tensor] = []

    def run() -> None:
        if training:
            y = layer(x)
            if not grad_out:
                grad_out.append(torch.randn_like(y))
            torch.autograd.grad(y, wanted, grad_out[0])
        else:
            with torch.no_grad():
                layer(x)
        sync()

    return run


def _limit(layer: nn.Module, x: torch.Tensor, training: bool) -> str:
    """The largest term of the estimate of the algorithm the layer took."""
    spec, algorithm = layer._last_call["spec"], layer._last_call["algorithm"]
    if spec is None or algorithm not in spatial.TERMS:
        return "?"
    if spec.band.num_kept == spec.band.num_total:
        return "the band keeps every frequency"
    rule = spatial.RULES[spatial.rule_key(x.device)]
    w_shape = tuple(layer.weight.shape)
    terms = dict(zip(spatial.TERMS, spatial.cost_terms(spec, tuple(x.shape), w_shape, training, rule)))
    seconds = {n: spatial.term_seconds(n, a, rule) for n, a in terms[algorithm].items()}
    name = max(seconds, key=seconds.get)
    share = seconds[name] / sum(seconds.values())
    label = {"spectral_call": "per-call overhead", "spatial_call": "per-call overhead"}.get(name, name)
    return f"{algorithm}: {label} {share:.0%}"


def profile(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    rate: float = 0.5,
    *,
    training: bool = True,
    reps: int = 5,
    skip_1x1: bool = True,
    verbose: bool = True,
) -> ProfileReport:
    """Time each convertible layer of ``model`` dense and band-limited on this machine.

    Each ``nn.Conv1d``/``nn.Conv2d`` (and already band-limited layer) gets the input the model
    gives it on ``example_input``; its dense form and its band-limited form at ``rate`` (the
    algorithm chosen by :mod:`bltriton.choice`: measured, cached) run fwd+bwd (or the forward
    alone, ``training=False``), interleaved, ``reps`` times; the medians are reported. The model
    is not changed.

    Args:
        model: any module.
        example_input: a tensor, or a tuple of them (``model(*inputs)``).
        rate: the compress rate to try, in ``[0, 1)``.
        training: time forward and backward (else the forward in ``eval()`` under ``no_grad``).
        reps: timed rounds per layer (positive).
        skip_1x1: leave 1×1 convolutions out (``convert`` skips them by default).
        verbose: print the table to stdout.

    Returns:
        A :class:`ProfileReport`; ``report.paying()`` names the layers that pay.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``example_input`` not a tensor/tuple.
        ValueError: ``rate`` outside ``[0, 1)`` or ``reps`` not positive (named).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"profile: model must be an nn.Module; got {type(model).__name__}")
    items = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        kind = type(example_input).__name__
        raise TypeError(f"profile: example_input must be a tensor or a tuple of tensors; got {kind}")
    try:
        rate = check_rate(rate)
    except (TypeError, ValueError) as err:
        raise ValueError(f"profile: rate: {err}") from err
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"profile: reps must be a positive int; got {reps!r}")
    inputs = tuple(items)
    was_training = model.training
    model.train(training)
    try:
        with torch.set_grad_enabled(training):
            seen = _seen_inputs(model, inputs, skip_1x1)
    finally:
        model.train(was_training)
    device = inputs[0].device
    rows = []
    for name, conv, shape, needs_grad, dtype in seen:
        dense = _dense_copy(conv)
        cls = BLConv2d if isinstance(dense, nn.Conv2d) else BLConv1d
        band = cls.from_conv(dense, compress_rate=rate)
        if is_band_limited(conv):
            band.fft_size, band.backend = conv.fft_size, conv.backend
        for m in (dense, band):
            m.train(training)
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=training and needs_grad)
        runs = {"dense": _step(dense, x, training), "band": _step(band, x, training)}
        for run in runs.values():  # the band-limited layer's first call measures its algorithm
            run()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(reps):
            for k, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[k].append((time.perf_counter() - t0) * 1e3)
        rows.append(
            LayerTiming(
                name=name,
                kinds=layer_kinds(conv),
                input_shape=shape,
                weight_shape=tuple(conv.weight.shape),
                kept_fraction=band.kept_fraction or 0.0,
                dense_ms=statistics.median(times["dense"]),
                band_ms=statistics.median(times["band"]),
                algorithm=band.last_algorithm or "?",
                limit=_limit(band, x, training),
            )
        )
    report = ProfileReport(rows, rate, training, str(device), _machine(device))
    if verbose:
        print(report.table(), file=sys.stdout, flush=True)
    return report


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from bltriton.autotune.keys import cpu_model

    return f"{cpu_model()}, {torch.get_num_threads()} threads"

"""Fit the algorithm rule (``bltriton.spatial.RULES``) to measured layer times.

    python -m bench.fit_rule                              # measure on this machine, then fit
    python -m bench.fit_rule --configs full --out rows.json   # the shipped rule's 10 configurations
    python -m bench.algorithms ... --json rows.json      # or measure by hand (any number of runs)
    python -m bench.fit_rule rows.json [--device cpu]     # fit, print the rule and its misses
    python -m bench.fit_rule rows.json --current          # how the current rule does on them

Without row files it measures first: ``bench.algorithms`` on each configuration of
``--configs`` (``quick``: FCN b16 and ResNet-18 b8 at r=0.5, a few minutes on a 2-core CPU;
``full``: the configurations the shipped CPU rules were fitted to), fwd+bwd, into ``--out`` (a
temporary file by default), and fits the rows of this machine's rule key
(``bltriton.spatial.rule_key``). The estimate is the prior of the measured choice
(``bltriton.choice``): a better fit prunes better and decides where nothing may be timed.

Each row of ``bench.algorithms --json`` holds a layer's fwd+bwd time by each algorithm and the
cost terms of ``bltriton.spatial.cost_terms`` behind the estimate. The fit is a non-negative
least-squares fit of the relative error, per algorithm: ``time ≈ Σ term / rate`` (a per-call
term's coefficient is its seconds). It reports, per model configuration, what the rule's picks
cost against the faster algorithm (the regret).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from bltriton import spatial

ALGORITHMS = spatial.TERMS


def nnls(a: np.ndarray, b: np.ndarray, iterations: int = 500) -> np.ndarray:
    """``argmin ||a x − b||`` over ``x ≥ 0`` (Lawson–Hanson active set)."""
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(iterations):
        grad = a.T @ (b - a @ x)
        if passive.all() or grad[~passive].max(initial=-np.inf) <= 1e-12 * max(1.0, np.abs(grad).max()):
            break
        passive[np.argmax(np.where(passive, -np.inf, grad))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
    return x


def _matrix(rows: list[dict], algorithm: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([[row["terms"][algorithm][k] for k in ALGORITHMS[algorithm]] for row in rows], dtype=float)
    t = np.array([row["ms"][algorithm] / 1e3 for row in rows])
    return a, t


def fit(rows: list[dict]) -> dict[str, float]:
    """Rule fields from the rows: rates for work terms, seconds for per-call terms."""
    fields: dict[str, float] = {}
    for algorithm, names in ALGORITHMS.items():
        a, t = _matrix(rows, algorithm)
        w = 1.0 / t
        coef = nnls(a * w[:, None], t * w)
        for name, c in zip(names, coef):
            if name.endswith("_call"):
                fields[name] = float(c)
            else:  # a term the fit gives no weight gets a rate that makes it free
                fields[name] = float(1.0 / c) if c > 0 else 1e15
    return fields


def predict(rows: list[dict], fields: dict[str, float]) -> list[tuple[float, float]]:
    rule = spatial.AlgorithmRule(**{**vars(spatial.RULES["cpu"]), **fields})
    return [
        tuple(
            sum(spatial.term_seconds(name, row["terms"][alg][name], rule) for name in ALGORITHMS[alg])
            for alg in ("spectral", "spatial")
        )
        for row in rows
    ]


def report(rows: list[dict], fields: dict[str, float]) -> float:
    """Prints every miss and the regret per configuration; returns the worst relative regret."""
    per: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row, (spec_s, spat_s) in zip(rows, predict(rows, fields)):
        pick = "spatial" if spat_s < spec_s else "spectral"
        best = min(row["ms"]["spectral"], row["ms"]["spatial"])
        got = row["ms"][pick]
        cfg = per[(row["model"], row["batch"], row["rate"], row.get("infer", False))]
        cfg[0] += (got - best) * row["count"]
        cfg[1] += best * row["count"]
        if got > best:
            print(
                f"  miss: {row['model']} b{row['batch']} r{row['rate']} {row['layer']}: measured "
                f"{row['ms']['spectral']:.2f} / {row['ms']['spatial']:.2f} ms, estimated "
                f"{spec_s * 1e3:.2f} / {spat_s * 1e3:.2f} ms (spectral / spatial)"
            )
    worst = 0.0
    for (model, batch, rate, infer), (lost, best) in sorted(per.items()):
        worst = max(worst, lost / best)
        print(
            f"  {model} b{batch} r{rate}{' infer' if infer else ''}: "
            f"picks cost {lost / best:.1%} over the best"
        )
    return worst


def _rule_key(row: dict) -> str:
    """The ``RULES`` key a row was measured under (rows from before the key was recorded: their
    device type)."""
    return row.get("rule") or row.get("device", "cpu")


#: ``(model, batch, rate)`` measured by ``--configs``: ``full`` is what the shipped CPU rules
#: were fitted to (ResNet-18 b8/b32/b128 and the FCN b16/b64, r = 0.5 and 0.75, fwd+bwd).
CONFIGS = {
    "quick": [("fcn", 16, 0.5), ("resnet18", 8, 0.5)],
    "full": [
        (model, batch, rate)
        for model, batches in (("fcn", (16, 64)), ("resnet18", (8, 32, 128)))
        for batch in batches
        for rate in (0.5, 0.75)
    ],
}


def measure(configs: str, out: Path, reps: int, device: str) -> None:
    """``bench.algorithms`` on every configuration of ``CONFIGS[configs]``, rows appended to
    ``out``. The estimate picks the ``auto`` column (``BLTRITON_AUTOTUNE=0``): the fit needs the
    forced algorithms' times only, and timing the choice as well would double the run."""
    from bench import algorithms

    old = os.environ.get("BLTRITON_AUTOTUNE")
    os.environ["BLTRITON_AUTOTUNE"] = "0"
    try:
        for model, batch, rate in CONFIGS[configs]:
            argv = ["--model", model, "--batch", str(batch), "--rate", str(rate), "--reps", str(reps)]
            algorithms.main([*argv, "--device", device, "--json", str(out)])
    finally:
        if old is None:
            os.environ.pop("BLTRITON_AUTOTUNE", None)
        else:
            os.environ["BLTRITON_AUTOTUNE"] = old


def rule_literal(key: str, fields: dict[str, float]) -> str:
    """The fitted rule as the ``RULES`` entry to paste into ``bltriton/spatial.py``."""
    shown = {name: value for name, value in fields.items() if name != "fused_filter"}
    body = ",\n".join(f"        {name}={value:.3g}" for name, value in shown.items())
    fused = ",\n        fused_filter=True" if fields.get("fused_filter") else ""
    return f'    "{key}": AlgorithmRule(\n{body}{fused},\n    ),'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "rows", type=Path, nargs="*", help="JSON files of bench.algorithms --json (none: measure here first)"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="rows of this rule only: a device type, or a RULES key such as cpu-kernel (rows record "
        "it); default: this machine's key when measuring, else cpu",
    )
    parser.add_argument("--current", action="store_true", help="evaluate the current rule, no fit")
    parser.add_argument("--configs", choices=sorted(CONFIGS), default="quick", help="what to measure")
    parser.add_argument("--out", type=Path, default=None, help="measured rows go here (default: temporary)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds per layer when measuring")
    parser.add_argument("--torch-device", default="cpu", help="where to measure (cpu or cuda)")
    args = parser.parse_args(argv)
    if not args.rows:
        import torch

        out = args.out or Path(tempfile.mkdtemp(prefix="bltriton-fit-")) / "rows.json"
        measure(args.configs, out, args.reps, args.torch_device)
        print(f"rows: {out}")
        args.rows = [out]
        if args.device is None:
            args.device = spatial.rule_key(torch.device(args.torch_device))
    device = args.device or "cpu"
    rows = [r for p in args.rows for r in json.loads(p.read_text()) if _rule_key(r) == device]
    rows = [r for r in rows if "terms" in r]
    if not rows:
        print("no rows with cost terms for this device")
        return 1
    current = vars(spatial.RULES.get(device, spatial.RULES["cuda"]))
    fields = dict(current) if args.current else {**current, **fit(rows)}
    print(f"{len(rows)} layer shapes; {'current rule' if args.current else 'fitted rule'}:")
    for name in ALGORITHMS["spectral"] + ALGORITHMS["spatial"]:
        print(f"  {name} = {fields[name]:.3g}")
    worst = report(rows, fields)
    print(f"worst configuration: {worst:.1%}")
    if not args.current:
        print("as a bltriton.spatial.RULES entry:")
        print(rule_literal(device, fields))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

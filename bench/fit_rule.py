"""Fit the algorithm rule (``bltriton.spatial.RULES``) to measured layer times.

    python -m bench.algorithms ... --json rows.json      # measure (any number of runs)
    python -m bench.fit_rule rows.json [--device cpu]     # fit, print the rule and its misses
    python -m bench.fit_rule rows.json --current          # how the current rule does on them

Each row of ``bench.algorithms --json`` holds a layer's fwd+bwd time by each algorithm and the
cost terms of ``bltriton.spatial.cost_terms`` behind the estimate. The fit is a non-negative
least-squares fit of the relative error, per algorithm: ``time ≈ Σ term / rate`` (a per-call
term's coefficient is its seconds). It reports, per model configuration, what the rule's picks
cost against the faster algorithm (the regret).
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path, nargs="+", help="JSON files of bench.algorithms --json")
    parser.add_argument(
        "--device",
        default="cpu",
        help="rows of this rule only: a device type, or a RULES key such as cpu-kernel (rows record it)",
    )
    parser.add_argument("--current", action="store_true", help="evaluate the current rule, no fit")
    args = parser.parse_args(argv)
    rows = [r for p in args.rows for r in json.loads(p.read_text()) if _rule_key(r) == args.device]
    rows = [r for r in rows if "terms" in r]
    if not rows:
        print("no rows with cost terms for this device")
        return 1
    current = vars(spatial.RULES.get(args.device, spatial.RULES["cuda"]))
    fields = dict(current) if args.current else {**current, **fit(rows)}
    print(f"{len(rows)} layer shapes; {'current rule' if args.current else 'fitted rule'}:")
    for name in ALGORITHMS["spectral"] + ALGORITHMS["spatial"]:
        print(f"  {name} = {fields[name]:.3g}")
    worst = report(rows, fields)
    print(f"worst configuration: {worst:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Commit cost: what one commit of a table costs as its history grows to what the lake keeps.

A table committed every few seconds holds up to `lake.max_snapshots` (100) snapshots between two
expiries, so that is the history every commit of a long-running worker pays for, not the first
commit's. Through the pipeline's own telemetry output (the code every rule table commits with
too), `--commits` commits of `--readings` readings each on a fresh table, no maintenance; the
mean commit time at 1–10, 45–55 and 90–100 snapshots. Twice per round, alternated: with
pyiceberg's own `Transaction` (the baseline) and with `sensorlake.lake.transaction`, which works
out the pending metadata once per change instead of once per look.

Usage: python benchmarks/commit_cost.py [--commits 100] [--readings 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyiceberg.table import Table

import sensorlake.lake.outputs as outputs_module
from lake_growth import Trickle
from sensorlake.config import Config
from sensorlake.faults import NO_FAULTS
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.outputs import telemetry_output
from sensorlake.lake.transaction import transaction

DEPTHS = ((1, 10), (45, 55), (90, 100))
VARIANTS: dict[str, Callable[[Table], Any]] = {
    "pyiceberg Transaction": lambda table: table.transaction(),
    "sensorlake transaction": transaction,
}


def run(variant: str, commits: int, readings: int) -> list[float]:
    """Mean commit time (ms) at each of DEPTHS."""
    outputs_module.transaction = VARIANTS[variant]  # what TableOutput._commit opens
    with tempfile.TemporaryDirectory(prefix="commit-cost-") as tmp:
        config = Config(data_dir=Path(tmp))
        output = telemetry_output(open_catalog(config), config.lake.namespace, NO_FAULTS)
        trickle = Trickle(output, readings)
        times = [trickle.commit() for _ in range(commits)]
    return [statistics.mean(times[low - 1:high]) * 1000 for low, high in DEPTHS
            if high <= len(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--readings", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.commits} commits of {args.readings:,} readings")
    heads = [f"commit at {low}–{high} snapshots" for low, high in DEPTHS if high <= args.commits]
    print("| round | transaction | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(heads))
    for round_ in range(1, args.rounds + 1):
        base: list[float] = []
        for variant in VARIANTS:
            means = run(variant, args.commits, args.readings)
            base = base or means
            cells = [f"{m:,.0f} ms ({m / b:.2f}×)" for m, b in zip(means, base, strict=True)]
            print(f"| {round_} | {variant} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

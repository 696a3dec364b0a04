"""Print a Markdown table of the runs that bench/adept_glue_runs.sh wrote under runs/adept_minilm.

For each task and method: the test metrics (from the test run's metrics.csv), the trainable
values that the module logged, and the wall time of fit plus test from the runner's output.

Run: ``python bench/adept_glue_table.py RUNNER_OUTPUT`` (the file the runner printed to).
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

ROOT = Path("runs/adept_minilm")
TRAINABLE = re.compile(r"rank (\S+), ([\d,]+) prompt-method values .* ([\d,]+) trainable in all")


def last_row(path: Path) -> dict[str, str]:
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle)]
    merged: dict[str, str] = {}
    for row in rows:
        merged.update({key: value for key, value in row.items() if value})
    return merged


def main() -> None:
    seconds = {}
    for line in Path(sys.argv[1]).read_text().splitlines():
        match = re.match(r"(\w+) (\w+) seconds=(\d+)", line)
        if match:
            seconds[(match.group(1), match.group(2))] = int(match.group(3))
    print("| task | method | test metrics | val score | rank | prompt-method values | trainable with head | fit + test time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for (task, method), duration in seconds.items():
        run = ROOT / f"{task}_{method}"
        test = last_row(run / "lightning_logs" / "version_1" / "metrics.csv")
        fit = last_row(run / "lightning_logs" / "version_0" / "metrics.csv")
        metrics = ", ".join(
            f"{key.split('/')[1]} {float(value):.3f}" for key, value in sorted(test.items())
            if key.startswith("test/") and key not in ("test/loss", "test/score")
        )
        found = TRAINABLE.search(Path(f"{run}.fit.log").read_text())
        rank, values, total = found.groups() if found else ("?", "?", "?")
        print(f"| {task} | {method} | {metrics} | {float(fit.get('val/score', 'nan')):.3f} | {rank} | {values} | {total} | {duration} |")


if __name__ == "__main__":
    main()

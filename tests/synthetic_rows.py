"""Small JSONL files that several tests train or evaluate on."""

from __future__ import annotations

import json
from pathlib import Path


def write_sum_rows(path: Path, first_terms: range = range(8)) -> Path:
    """Write instruction rows ``a+b`` -> ``The answer is: a+b`` for ``a`` in ``first_terms`` and
    ``b`` in 0..4, and return ``path``."""
    rows = [{"instruction": f"{a}+{b}", "output": f"The answer is: {a + b}"} for a in first_terms for b in range(5)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def write_grounding_queries(path: Path, count: int) -> str:
    """Write ``count`` grounding queries over six videos and return the path as a string."""
    rows = []
    for index in range(count):
        start = float(index % 7)
        rows.append({"video": f"v{index % 6}", "duration": 20.0 + index % 5, "start": start, "end": start + 4.0 + index % 3,
                     "sentence": f"person number {index} opens the door"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)

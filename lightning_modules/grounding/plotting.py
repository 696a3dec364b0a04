"""Plot predicted against ground-truth moments for a few queries.

Usage: ``python -m lightning_modules.grounding.plotting predictions.jsonl spans.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def plot_predictions(predictions_path: str | Path, output_path: str | Path, max_queries: int = 8, top_k: int = 3) -> Path:
    """Draw one row per query: the ground-truth span and the top-k predicted spans, in seconds.

    Args:
        predictions_path: JSON-lines file written by the prediction writer.
        output_path: Image file to write (PNG by suffix).
        max_queries: Queries drawn (the first ones in the file).
        top_k: Predicted moments drawn per query, best darkest.

    Returns:
        The image path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Path(predictions_path).open(encoding="utf-8") as handle:
        records = [json.loads(line) for _, line in zip(range(max_queries), handle)]
    if not records:
        raise ValueError(f"{predictions_path} has no predictions to plot.")
    figure, axes = plt.subplots(len(records), 1, figsize=(8, 1.1 * len(records)), squeeze=False)
    for axis, record in zip(axes[:, 0], records):
        duration = record["duration"]
        axis.barh(1, duration, left=0, height=0.6, color="#eeeeee")
        if record.get("ground_truth"):
            start, end = record["ground_truth"]
            axis.barh(1, end - start, left=start, height=0.6, color="tab:green", label="ground truth")
        for rank, (start, end, _score) in enumerate(record["moments"][:top_k]):
            axis.barh(0, end - start, left=start, height=0.6, color="tab:blue", alpha=1.0 - 0.3 * rank, label="predicted" if rank == 0 else None)
        axis.set_xlim(0, duration)
        axis.set_yticks([])
        axis.set_title(f"{record['video']}: {record['sentence']}", fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    output_path = Path(output_path)
    figure.savefig(output_path, dpi=100)
    plt.close(figure)
    return output_path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m lightning_modules.grounding.plotting PREDICTIONS.jsonl OUTPUT.png")
    plot_predictions(sys.argv[1], sys.argv[2])

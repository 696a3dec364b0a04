"""Per-task GLUE and SuperGLUE metrics over label ids, and parsing of generated label text.

Metrics per task: accuracy; F1 and accuracy (MRPC, QQP); Pearson and Spearman correlation
(STS-B); Matthews correlation (CoLA); macro-F1 and accuracy (CB); F1 over answers (MultiRC).
Every metric is a torchmetrics class, so ``compute()`` gathers its state from all ranks.
"""

from __future__ import annotations

import re

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, BinaryMatthewsCorrCoef, MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "qqp": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "boolq": ("accuracy",),
    "cb": ("macro_f1", "accuracy"),
    "wic": ("accuracy",),
    "wsc": ("accuracy",),
    "multirc": ("f1",),
}

INTEGER = re.compile(r"-?\d+")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def build_task_metrics(task: str, num_classes: int) -> MetricCollection:
    """Build the metrics of a task, keyed by the names in ``TASK_METRICS``.

    Args:
        task: Task name.
        num_classes: Classes of the task (1 for STS-B).

    Raises:
        ValueError: If the task has no metric definition.
    """
    if task not in TASK_METRICS:
        raise ValueError(f"no metrics defined for task {task!r}; choose one of {sorted(TASK_METRICS)}.")
    factories = {
        "accuracy": lambda: MulticlassAccuracy(num_classes=max(num_classes, 2), average="micro"),
        "f1": BinaryF1Score,
        "matthews_correlation": BinaryMatthewsCorrCoef,
        "macro_f1": lambda: MulticlassF1Score(num_classes=num_classes, average="macro"),
        "pearson": PearsonCorrCoef,
        "spearman": SpearmanCorrCoef,
    }
    return MetricCollection({name: factories[name]() for name in TASK_METRICS[task]})


def parse_class_text(text: str, num_classes: int) -> int | None:
    """Return the class id written at the start of a generated text, or None if there is none."""
    match = INTEGER.match(text.strip())
    if match is None:
        return None
    value = int(match.group())
    return value if 0 <= value < num_classes else None


def parse_score_text(text: str) -> float | None:
    """Return the number at the start of a generated text, or None if there is none."""
    match = NUMBER.match(text.strip())
    return float(match.group()) if match else None


def predictions_from_text(texts: list[str], targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Turn generated texts into predictions that the metrics accept.

    A text without a valid class id counts as wrong: it becomes the class after the target
    (``(target + 1) % num_classes``). For regression (``num_classes == 1``) an unparsable text
    becomes 0.0.

    Args:
        texts: Generated texts, one per row.
        targets: Label ids (B,) long, or scores (B,) float.
        num_classes: Classes of the task (1 for regression).

    Returns:
        Predictions (B,) with the dtype of ``targets``.
    """
    if num_classes == 1:
        scores = [parse_score_text(text) for text in texts]
        return torch.tensor([0.0 if score is None else score for score in scores], dtype=targets.dtype, device=targets.device)
    predictions = []
    for text, target in zip(texts, targets.tolist()):
        value = parse_class_text(text, num_classes)
        predictions.append((target + 1) % num_classes if value is None else value)
    return torch.tensor(predictions, dtype=targets.dtype, device=targets.device)

"""GLUE metrics against hand-computed values, and parsing of generated label text."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.metrics.exact_match import ExactMatch, normalize_answer
from lightning_modules.metrics.glue import build_task_metrics, parse_class_text, predictions_from_text


def compute(task: str, num_classes: int, predictions, targets) -> dict[str, float]:
    metrics = build_task_metrics(task, num_classes)
    metrics.update(torch.tensor(predictions), torch.tensor(targets))
    return {name: float(value) for name, value in metrics.compute().items()}


def test_matthews_correlation_by_hand():
    # TP=2, FP=1, TN=2, FN=0: (2*2 - 1*0) / sqrt(3 * 2 * 3 * 2) = 4 / 6
    values = compute("cola", 2, [1, 1, 0, 0, 1], [1, 0, 0, 0, 1])
    assert values["matthews_correlation"] == pytest.approx(2 / 3, abs=1e-6)


def test_f1_and_accuracy_by_hand():
    # precision 2/3, recall 1 -> F1 0.8; 4 of 5 right
    values = compute("mrpc", 2, [1, 1, 0, 0, 1], [1, 0, 0, 0, 1])
    assert values["f1"] == pytest.approx(0.8, abs=1e-6)
    assert values["accuracy"] == pytest.approx(0.8, abs=1e-6)


def test_pearson_and_spearman_by_hand():
    # Pearson: 3.5 / sqrt(5 * 4.75); Spearman on ranks [1, 2.5, 4, 2.5]: 3 / sqrt(5 * 4.5)
    values = compute("stsb", 1, [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 4.0])
    assert values["pearson"] == pytest.approx(3.5 / (5 * 4.75) ** 0.5, abs=1e-5)
    assert values["spearman"] == pytest.approx(3.0 / (5 * 4.5) ** 0.5, abs=1e-5)


def test_macro_f1_by_hand():
    # per-class F1: class 0 -> 1.0, class 1 -> 0.5, class 2 -> 0.5
    values = compute("cb", 3, [0, 1, 2, 2, 1, 0], [0, 1, 1, 2, 2, 0])
    assert values["macro_f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert values["accuracy"] == pytest.approx(4 / 6, abs=1e-6)


def test_exact_match_by_hand():
    metric = ExactMatch()
    metric.update(["The Paris.", "london", "x"], ["paris", ["Rome", "London"], "y"])
    assert float(metric.compute()) == pytest.approx(2 / 3, abs=1e-6)
    assert normalize_answer("  An  Apple, please! ") == "apple please"


def test_exact_match_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        ExactMatch().update(["a", "b"], ["a"])


def test_invalid_generations_count_as_wrong():
    predictions = predictions_from_text(["1", " 0 ", "yes", "7"], torch.tensor([1, 1, 0, 1]), num_classes=2)
    assert predictions.tolist() == [1, 0, 1, 0]
    scores = predictions_from_text(["3.8", "n/a"], torch.tensor([4.0, 2.0]), num_classes=1)
    assert scores.tolist() == pytest.approx([3.8, 0.0])
    assert parse_class_text("2 because", 3) == 2
    assert parse_class_text("3", 3) is None


def test_unknown_task_metrics_rejected():
    with pytest.raises(ValueError, match="'squad'"):
        build_task_metrics("squad", 2)

"""Exact match of generated answers against one or more reference answers (QA tasks)."""

from __future__ import annotations

import re
import string

import torch
from torchmetrics import Metric

ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, and collapse whitespace."""
    text = text.lower()
    text = "".join(character for character in text if character not in string.punctuation)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


class ExactMatch(Metric):
    """Fraction of predictions whose normalised text equals any normalised reference."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("matches", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, predictions: list[str], references: list[str | list[str]]) -> None:
        """Add a batch: one prediction and a reference or a list of references per row."""
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references; pass one per row.")
        for prediction, reference in zip(predictions, references):
            candidates = [reference] if isinstance(reference, str) else list(reference)
            normalized = normalize_answer(prediction)
            self.matches += float(any(normalized == normalize_answer(candidate) for candidate in candidates))
            self.total += 1

    def compute(self) -> torch.Tensor:
        return self.matches / self.total.clamp(min=1)

"""Open-domain QA answer normalisation and exact match (the SQuAD and NQ-open convention).

Normalisation lower-cases, removes punctuation and the articles a, an and the, and collapses
whitespace. A prediction matches when its normalised text equals that of any reference.
"""

from __future__ import annotations

import re
import string

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Normalise an answer string for exact match."""
    text = text.lower()
    text = "".join(character for character in text if character not in PUNCTUATION)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def first_line(text: str) -> str:
    """Return the generated answer up to its first line break, without surrounding spaces."""
    return text.strip().split("\n", 1)[0].strip()


def exact_match_any(prediction: str, references: list[str]) -> bool:
    """Check whether the normalised prediction equals any normalised reference."""
    predicted = normalize_answer(prediction)
    return any(predicted == normalize_answer(reference) for reference in references)


def cloze_correct(continuation: str, answer: str) -> bool:
    """Check whether a greedy continuation of a cloze prompt starts with the expected answer
    (normalised, whole words)."""
    predicted = normalize_answer(continuation).split()
    expected = normalize_answer(answer).split()
    return bool(expected) and predicted[: len(expected)] == expected

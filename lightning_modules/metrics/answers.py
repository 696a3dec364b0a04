"""Final-answer extraction and exact match for generated math answers.

An answer is the text after the last ``The answer is:`` (MetaMathQA style), else after a GSM8K
``####`` marker, else the last number in the text. Numbers are compared after removing
thousands separators, a trailing period and trailing zeros of a decimal part.
"""

from __future__ import annotations

import re

ANSWER_MARKER = re.compile(r"The answer is:?\s*(.+)", re.IGNORECASE)
GSM8K_MARKER = re.compile(r"####\s*(.+)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_number(text: str) -> str:
    """Return a canonical form of a number string: ``"1,200.50"`` -> ``"1200.5"``."""
    value = text.strip().rstrip(".").replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    if value in ("-0", ""):
        value = "0" if value == "-0" else value
    return value


def extract_final_answer(text: str) -> str | None:
    """Extract the final answer of a worked solution, or ``None`` when it has no number."""
    for marker in (ANSWER_MARKER, GSM8K_MARKER):
        matches = marker.findall(text)
        if matches:
            numbers = NUMBER.findall(matches[-1])
            if numbers:
                return normalize_number(numbers[0])
    numbers = NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def answers_match(prediction: str, reference: str) -> bool:
    """Check whether the final answers of a generated and a reference solution are equal."""
    predicted = extract_final_answer(prediction)
    expected = extract_final_answer(reference)
    return predicted is not None and predicted == expected

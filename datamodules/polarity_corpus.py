"""A small generated sentiment corpus in the SST-2 layout (``sentence``, ``label``: 0 or 1).

Sentences combine a subject, an optional negation and an opinion word, so a classifier must
read the negation: "the plot was not dull" is positive. Used by the offline ADePT demo.
Rows are deterministic: the same split always gives the same rows.
"""

from __future__ import annotations

import random

SUBJECTS = [
    "the film", "the plot", "the acting", "the soundtrack", "the ending", "the dialogue", "the cast",
    "the script", "the pacing", "the camera work", "this movie", "the story", "the director's work",
]
POSITIVE = ["wonderful", "moving", "brilliant", "charming", "gripping", "delightful", "superb", "clever", "warm", "funny"]
NEGATIVE = ["dull", "boring", "clumsy", "tedious", "awful", "flat", "messy", "bland", "forgettable", "painful"]
INTENSIFIERS = ["", "really ", "truly ", "rather ", "quite "]
VERBS = ["was", "is", "felt", "seemed"]
SPLIT_SEEDS = {"train": 0, "validation": 1}
SPLIT_SIZES = {"train": 800, "validation": 200}


def polarity_rows(split: str = "train") -> list[dict]:
    """Generate the rows of one split (``train``: 800 rows, ``validation``: 200 rows).

    Raises:
        ValueError: If the split is unknown.
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown polarity split {split!r}; choose one of {sorted(SPLIT_SEEDS)}.")
    rng = random.Random(SPLIT_SEEDS[split])
    rows = []
    for _ in range(SPLIT_SIZES[split]):
        positive_word = rng.random() < 0.5
        negated = rng.random() < 0.3
        opinion = rng.choice(POSITIVE if positive_word else NEGATIVE)
        negation = "not " if negated else ""
        sentence = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {negation}{rng.choice(INTENSIFIERS)}{opinion} ."
        rows.append({"sentence": sentence, "label": int(positive_word != negated)})
    return rows


def polarity_train_rows() -> list[dict]:
    """The 800 training rows."""
    return polarity_rows("train")


def polarity_validation_rows() -> list[dict]:
    """The 200 validation rows."""
    return polarity_rows("validation")

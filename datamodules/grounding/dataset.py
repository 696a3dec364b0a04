"""Grounding dataset: a query's word vectors, its video's features resampled to N clips, targets.

Time axis: the annotation's duration is authoritative. The ``T`` feature vectors of a video
are taken to cover ``[0, duration]`` evenly and are mean-pooled (or repeated, when ``T < N``)
into ``N`` clips of ``duration / N`` seconds each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.grounding.annotations import GroundingQuery
from datamodules.grounding.feature_stores import FeatureStore
from datamodules.grounding.word_vectors import WordVectors
from lightning_modules.grounding.spans import seconds_to_clip_indices


def resample_clips(features: np.ndarray, num_clips: int) -> np.ndarray:
    """Mean-pool ``(T, F)`` features into ``(N, F)``: clip ``n`` averages the rows in
    ``[floor(n T / N), max(floor((n + 1) T / N), floor(n T / N) + 1))``."""
    length = features.shape[0]
    bounds = np.floor(np.linspace(0, length, num_clips + 1)).astype(np.int64)
    starts = np.minimum(bounds[:-1], length - 1)
    ends = np.maximum(bounds[1:], starts + 1)
    cumulative = np.concatenate([np.zeros((1, features.shape[1]), dtype=np.float64), np.cumsum(features, axis=0, dtype=np.float64)])
    pooled = (cumulative[ends] - cumulative[starts]) / (ends - starts)[:, None]
    return pooled.astype(np.float32)


class GroundingDataset(Dataset):
    """Queries over a feature store.

    Args:
        queries: Queries whose videos have features.
        features: The feature store.
        word_vectors: Word vector table.
        num_clips: Clips per video ``N``.
        max_words: Tokens kept per sentence.
        cache_bytes: Memory for resampled clip features kept between epochs (per loader
            process); videos beyond it are read from the store each time.
    """

    def __init__(
        self,
        queries: list[GroundingQuery],
        features: FeatureStore,
        word_vectors: WordVectors,
        num_clips: int,
        max_words: int,
        cache_bytes: int = 512 * 2**20,
    ) -> None:
        self.queries = queries
        self.features = features
        self.word_vectors = word_vectors
        self.num_clips = num_clips
        self.max_words = max_words
        self.cache_bytes = cache_bytes
        self._clip_cache: dict[str, torch.Tensor] = {}
        self._cached_bytes = 0

    def clips_of(self, video_id: str) -> torch.Tensor:
        """Return the ``(N, F)`` resampled features of a video, from memory when cached."""
        clips = self._clip_cache.get(video_id)
        if clips is None:
            clips = torch.from_numpy(resample_clips(self.features.load(video_id), self.num_clips))
            size = clips.numel() * clips.element_size()
            if self._cached_bytes + size <= self.cache_bytes:
                self._clip_cache[video_id] = clips
                self._cached_bytes += size
        return clips

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        query = self.queries[index]
        words = self.word_vectors.encode(query.sentence, self.max_words)
        if len(words) == 0:
            # Readers reject empty sentences; a sentence of symbols only has no tokens either.
            words = np.zeros((1, self.word_vectors.dim), dtype=np.float32)
        span = torch.tensor([query.start, query.end], dtype=torch.float32)
        duration = torch.tensor(query.duration, dtype=torch.float32)
        return {
            "index": index,
            "video_id": query.video_id,
            "sentence": query.sentence,
            "features": self.clips_of(query.video_id),
            "words": torch.from_numpy(words),
            "span": span,
            "duration": duration,
            "target_clips": seconds_to_clip_indices(span.unsqueeze(0), duration.unsqueeze(0), self.num_clips)[0],
        }


def collate_grounding(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack a batch: ``features (B, N, F)``, ``clip_mask (B, N)``, ``words (B, L, E)``,
    ``word_mask (B, L)``, ``span (B, 2)`` seconds, ``duration (B,)`` seconds,
    ``target_clips (B, 2)``, ``index (B,)`` (dataset positions), and the lists ``video_id`` and
    ``sentence``."""
    features = torch.stack([item["features"] for item in items])
    lengths = torch.tensor([item["words"].shape[0] for item in items])
    words = torch.nn.utils.rnn.pad_sequence([item["words"] for item in items], batch_first=True)
    return {
        "index": torch.tensor([item["index"] for item in items]),
        "video_id": [item["video_id"] for item in items],
        "sentence": [item["sentence"] for item in items],
        "features": features,
        "clip_mask": torch.ones(features.shape[:2], dtype=torch.bool),
        "words": words,
        "word_mask": torch.arange(words.shape[1]).unsqueeze(0) < lengths.unsqueeze(1),
        "span": torch.stack([item["span"] for item in items]),
        "duration": torch.stack([item["duration"] for item in items]),
        "target_clips": torch.stack([item["target_clips"] for item in items]),
    }

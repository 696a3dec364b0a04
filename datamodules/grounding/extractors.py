"""Frozen frame feature extractors, chosen by name from a registry.

An extractor maps decoded RGB frames ``(T, H, W, 3)`` uint8 to features ``(T, F)`` float32. It
declares ``input_size`` ``(height, width)``, which decord scales to while decoding, and
``feature_dim`` ``F``. Add one by decorating a class with ``@register_extractor("name")``; a
frozen CNN wrapped in ``torch.no_grad()`` fits the same interface.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EXTRACTORS: dict[str, type] = {}


def register_extractor(name: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        EXTRACTORS[name] = cls
        return cls

    return decorator


def build_extractor(name: str, **options):
    """Instantiate the extractor registered as ``name`` with ``options``.

    Raises:
        ValueError: Unknown name.
    """
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {sorted(EXTRACTORS)}.")
    return EXTRACTORS[name](**options)


@register_extractor("color_grid")
class ColorGridExtractor:
    """Mean RGB per cell of a ``grid x grid`` layout, scaled to ``[0, 1]``: ``F = 3 * grid**2``.

    Frames are decoded at ``(grid * cell_pixels)`` square pixels, so each cell averages
    ``cell_pixels**2`` pixels.
    """

    def __init__(self, grid: int = 4, cell_pixels: int = 8) -> None:
        self.grid = grid
        self.cell_pixels = cell_pixels
        self.input_size = (grid * cell_pixels, grid * cell_pixels)
        self.feature_dim = 3 * grid * grid

    def signature(self) -> str:
        return f"color_grid-g{self.grid}-c{self.cell_pixels}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        count = frames.shape[0]
        cells = frames.reshape(count, self.grid, self.cell_pixels, self.grid, self.cell_pixels, 3)  # (T, g, c, g, c, 3)
        means = cells.mean(axis=(2, 4), dtype=np.float32) / 255.0  # (T, g, g, 3)
        return means.reshape(count, self.feature_dim)


@register_extractor("color_histogram")
class ColorHistogramExtractor:
    """Per-channel intensity histograms with ``bins`` bins, each summing to 1: ``F = 3 * bins``."""

    def __init__(self, bins: int = 16, frame_size: int = 64) -> None:
        self.bins = bins
        self.input_size = (frame_size, frame_size)
        self.feature_dim = 3 * bins

    def signature(self) -> str:
        return f"color_histogram-b{self.bins}-s{self.input_size[0]}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        count = frames.shape[0]
        bin_index = (frames.astype(np.int32) * self.bins) // 256  # (T, H, W, 3)
        offsets = np.arange(3) * self.bins
        flat = (bin_index + offsets).reshape(count, -1)  # (T, H * W * 3)
        histograms = np.stack([np.bincount(row, minlength=3 * self.bins) for row in flat]).astype(np.float32)
        pixels = frames.shape[1] * frames.shape[2]
        return histograms / pixels


@register_extractor("rgb_histogram")
class JointColorHistogramExtractor:
    """Joint RGB histogram with ``bins`` levels per channel (``F = bins**3``) of pixel fractions
    raised to ``power``; ``power < 1`` lifts small coloured regions against a large background."""

    def __init__(self, bins: int = 4, frame_size: int = 32, power: float = 0.5) -> None:
        self.bins = bins
        self.power = power
        self.input_size = (frame_size, frame_size)
        self.feature_dim = bins**3

    def signature(self) -> str:
        return f"rgb_histogram-b{self.bins}-s{self.input_size[0]}-p{self.power:g}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        count = frames.shape[0]
        levels = (frames.astype(np.int32) * self.bins) // 256  # (T, H, W, 3)
        codes = (levels[..., 0] * self.bins + levels[..., 1]) * self.bins + levels[..., 2]  # (T, H, W)
        codes = codes.reshape(count, -1) + np.arange(count)[:, None] * self.feature_dim
        histograms = np.bincount(codes.ravel(), minlength=count * self.feature_dim).reshape(count, self.feature_dim)
        fractions = histograms.astype(np.float32) / codes.shape[1]
        return fractions**self.power

"""Clip features computed from raw video files and cached on disk.

:meth:`VideoFeatureStore.find_unavailable` decodes every video that has no cached features
(decord, chunked; see :mod:`datamodules.grounding.video_decoding`), runs the frozen extractor
and writes ``(T, F)`` float32 ``.npy`` files. Later calls, later epochs and later runs read
the cache and decode nothing. A video that is missing, truncated or corrupt is reported with
the reason and skipped by the data module, which counts and logs it.

The cache key contains the video's resolved path, size and modification time, the extractor's
signature and the sampling settings, so changing any of them computes new features.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tqdm.auto import tqdm

from datamodules.grounding.extractors import build_extractor
from datamodules.grounding.feature_stores import FeatureStore
from datamodules.grounding.video_decoding import VideoDecodeError, decode_frame_chunks, probe_video, sample_frame_indices
from lightning_modules.model_loading import cache_root

DEFAULT_SAMPLE_FPS = 4.0
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")


class VideoFeatureStore(FeatureStore):
    """Features of raw videos, computed once with a registered extractor.

    Args:
        video_folder: Folder of video files. A video id names a file in it, with or without
            its extension. ``builtin:shapes`` is the suite's generated demo corpus.
        extractor: Registered extractor name (see :mod:`datamodules.grounding.extractors`).
        extractor_options: Keyword arguments of the extractor.
        sample_fps: Frames per second of video time to decode; exclusive with ``num_samples``.
            When neither is set, 4 frames per second.
        num_samples: Frames per video to decode, evenly spread; exclusive with ``sample_fps``.
        chunk_size: Frames per decord ``get_batch`` call.
        reopen_every: Decoded frames after which the reader is reopened (bounds memory).
        cache_dir: Feature cache folder; default ``<cache root>/grounding_features``.
        feature_dim: Expected feature size; ``None`` takes the extractor's.
    """

    def __init__(
        self,
        video_folder: str,
        extractor: str = "color_grid",
        extractor_options: dict | None = None,
        sample_fps: float | None = None,
        num_samples: int | None = None,
        chunk_size: int = 32,
        reopen_every: int = 1024,
        cache_dir: str | None = None,
        feature_dim: int | None = None,
    ) -> None:
        self.extractor = build_extractor(extractor, **(extractor_options or {}))
        if feature_dim is not None and feature_dim != self.extractor.feature_dim:
            raise ValueError(f"feature_dim={feature_dim}, but extractor {extractor!r} gives {self.extractor.feature_dim}-d features.")
        super().__init__(self.extractor.feature_dim)
        if sample_fps is not None and num_samples is not None:
            raise ValueError("set only one of sample_fps and num_samples.")
        if sample_fps is None and num_samples is None:
            sample_fps = DEFAULT_SAMPLE_FPS
        self.video_folder_spec = video_folder
        self.sample_fps = sample_fps
        self.num_samples = num_samples
        self.chunk_size = chunk_size
        self.reopen_every = reopen_every
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else cache_root() / "grounding_features"
        self.decoded_videos = 0  # videos decoded by this object, for checks that the cache is used

    @property
    def video_folder(self) -> Path:
        from datamodules.grounding.synthetic_shapes import resolve_builtin_path

        return resolve_builtin_path(self.video_folder_spec)

    def video_path(self, video_id: str) -> Path:
        """Return the file of a video id; an id without an extension matches the first existing suffix."""
        direct = self.video_folder / video_id
        if direct.suffix.lower() in VIDEO_SUFFIXES or direct.is_file():
            return direct
        for suffix in VIDEO_SUFFIXES:
            candidate = direct.with_name(direct.name + suffix)
            if candidate.is_file():
                return candidate
        return direct.with_name(direct.name + VIDEO_SUFFIXES[0])

    def cache_path(self, video_path: Path) -> Path:
        stat = video_path.stat()
        sampling = f"fps{self.sample_fps}" if self.sample_fps is not None else f"n{self.num_samples}"
        key = f"{video_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{self.extractor.signature()}:{sampling}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.cache_dir / self.extractor.signature() / f"{video_path.stem}-{digest}.npy"

    def describe(self, video_id: str) -> str:
        return str(self.video_path(video_id))

    def extract(self, video_path: Path) -> np.ndarray:
        """Decode and extract the features of one video: ``(T, F)`` float32, ``T`` sampled frames.

        Raises:
            VideoDecodeError: The video cannot be opened or decoded.
        """
        info = probe_video(video_path)
        indices = sample_frame_indices(info, self.sample_fps, self.num_samples)
        chunks = [
            self.extractor(frames)
            for frames in decode_frame_chunks(video_path, indices, self.extractor.input_size, self.chunk_size, self.reopen_every)
        ]
        self.decoded_videos += 1
        return np.concatenate(chunks).astype(np.float32)

    def find_unavailable(self, video_ids: list[str]) -> dict[str, str]:
        """Compute and cache features of uncached videos; return ``{video_id: reason}`` for failures."""
        unavailable: dict[str, str] = {}
        pending = []
        for video_id in sorted(set(video_ids)):
            path = self.video_path(video_id)
            if not path.is_file():
                unavailable[video_id] = f"video file not found: {path}"
            elif not self.cache_path(path).is_file():
                pending.append((video_id, path))
        if pending:
            rank_zero_info(f"Extracting {self.extractor.signature()} features of {len(pending)} videos into {self.cache_dir}.")
        for video_id, path in tqdm(pending, desc="video features", disable=len(pending) < 2):
            try:
                features = self.extract(path)
            except VideoDecodeError as error:
                unavailable[video_id] = str(error)
                rank_zero_warn(f"Skipping video {path}: {error}")
                continue
            target = self.cache_path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp.npy")
            np.save(temporary, features)
            os.replace(temporary, target)  # atomic, so concurrent ranks never read a partial file
        return unavailable

    def read(self, video_id: str) -> np.ndarray:
        path = self.video_path(video_id)
        cached = self.cache_path(path)
        if not cached.is_file():
            raise FileNotFoundError(f"no cached features for {path} at {cached}; call find_unavailable first (the data module does).")
        return np.load(cached)

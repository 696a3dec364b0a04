"""Frame sampling and chunked decoding of raw video with decord.

Memory stays bounded on long videos: frames are decoded in chunks of ``chunk_size`` with
``get_batch`` and handed to the caller one chunk at a time, and the ``VideoReader`` is
reopened every ``reopen_every`` decoded frames, because decord 0.6.0's memory grows over many
``get_batch`` calls and seeks on one reader. Only frame indices below ``len(reader)`` are
requested; on a container that over-reports its frame count in the header
(an AVI claiming 444 frames of which 68 decode) decord 0.6.0 already returns the decodable
count, and a reader whose count is wrong fails or stops instead of waiting.

decord 0.6.0 scales frames while decoding when given a width and height, but for some
sizes (seen: width 8, 16, 24 or 48 from a 64-pixel-wide H.264 source) it fails with
"DECORDArrayCopyFromTo: The size must exactly match". Decoding then falls back to full-size
frames scaled with area interpolation in PyTorch, with a warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.nn import functional as F

SIZE_MISMATCH = "DECORDArrayCopyFromTo"


class VideoDecodeError(RuntimeError):
    """A video file could not be opened or decoded (missing, truncated or corrupt)."""


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts as decord reports them: frames, average fps and ``num_frames / fps`` in seconds."""

    num_frames: int
    fps: float

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def open_reader(path: Path, size: tuple[int, int] | None = None):
    """Open a decord ``VideoReader``; ``size`` is ``(height, width)`` of the decoded frames.

    Raises:
        VideoDecodeError: The file is missing or decord cannot open it.
    """
    import decord

    if not path.is_file():
        raise VideoDecodeError(f"video not found: {path}")
    height, width = size if size is not None else (-1, -1)
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=1)
    except (RuntimeError, decord.DECORDError) as error:
        raise VideoDecodeError(f"decord cannot open {path}: {str(error).splitlines()[0]}") from error


def probe_video(path: Path) -> VideoInfo:
    """Return the frame count and average fps of a video."""
    reader = open_reader(path)
    info = VideoInfo(num_frames=len(reader), fps=float(reader.get_avg_fps()))
    del reader
    if info.num_frames == 0:
        raise VideoDecodeError(f"{path} has no decodable frames.")
    return info


def sample_frame_indices(info: VideoInfo, sample_fps: float | None = None, num_samples: int | None = None) -> np.ndarray:
    """Choose frame indices, either at a rate or a fixed count.

    Args:
        info: Frame count and fps of the video.
        sample_fps: Frames per second of video time to keep (frame ``round(t * fps)`` at
            ``t = 0, 1 / sample_fps, ...``).
        num_samples: Number of frames, at the centres of equal segments of the video.

    Returns:
        Sorted, unique ``int64`` indices in ``[0, num_frames)``.
    """
    if (sample_fps is None) == (num_samples is None):
        raise ValueError("set exactly one of sample_fps and num_samples.")
    if sample_fps is not None:
        if sample_fps <= 0:
            raise ValueError(f"sample_fps must be positive, got {sample_fps}.")
        times = np.arange(0.0, info.duration, 1.0 / sample_fps)
        indices = np.round(times * info.fps).astype(np.int64)
    else:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        indices = ((np.arange(num_samples) + 0.5) * info.num_frames / num_samples).astype(np.int64)
    indices = np.unique(np.clip(indices, 0, info.num_frames - 1))
    return indices if len(indices) else np.zeros(1, dtype=np.int64)


def decode_frame_chunks(
    path: Path,
    indices: np.ndarray,
    size: tuple[int, int] | None = None,
    chunk_size: int = 32,
    reopen_every: int = 1024,
) -> Iterator[np.ndarray]:
    """Decode the given frames in chunks.

    Args:
        path: Video file.
        indices: Sorted frame indices (see :func:`sample_frame_indices`).
        size: ``(height, width)`` to which decord scales while decoding; ``None`` keeps the size.
        chunk_size: Frames per ``get_batch`` call; bounds the memory of one chunk.
        reopen_every: Decoded frames after which the reader is reopened, which releases
            decord's internal buffers.

    Yields:
        ``(C, H, W, 3)`` uint8 RGB arrays, ``C <= chunk_size``, in the order of ``indices``.

    Raises:
        VideoDecodeError: Opening or decoding failed (e.g. a truncated file).
    """
    import decord

    decode_size = size
    reader = open_reader(path, decode_size)
    decoded_since_open = 0
    try:
        for offset in range(0, len(indices), chunk_size):
            chunk = indices[offset : offset + chunk_size]
            if decoded_since_open >= reopen_every:
                del reader
                reader = open_reader(path, decode_size)
                decoded_since_open = 0
            if int(chunk[-1]) >= len(reader):
                raise VideoDecodeError(f"{path}: frame {int(chunk[-1])} requested but the reader has {len(reader)} frames.")
            try:
                frames = reader.get_batch(chunk.tolist()).asnumpy()
            except (RuntimeError, decord.DECORDError) as error:
                if decode_size is None or SIZE_MISMATCH not in str(error):
                    raise VideoDecodeError(f"decoding {path} failed at frames {int(chunk[0])}-{int(chunk[-1])}: {str(error).splitlines()[0]}") from error
                rank_zero_warn(f"decord cannot scale {path} to {size} (height, width) while decoding; scaling full-size frames instead (slower).")
                decode_size = None
                del reader
                reader = open_reader(path, None)
                decoded_since_open = 0
                frames = reader.get_batch(chunk.tolist()).asnumpy()
            decoded_since_open += len(chunk)
            if decode_size is None and size is not None and frames.shape[1:3] != tuple(size):
                frames = resize_frames(frames, size)
            yield frames
    finally:
        del reader


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``(C, H, W, 3)`` uint8 frames to ``size`` ``(height, width)`` with area interpolation."""
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (C, 3, H, W)
    scaled = F.interpolate(tensor, size=size, mode="area")
    return scaled.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

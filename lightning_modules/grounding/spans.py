"""Temporal spans: IoU, clip/second conversion, best-span decoding and top-k with temporal NMS.

Conventions used across the suite:

- A span in seconds is ``(start, end)`` with ``start < end``; a span over clips is the
  inclusive pair ``(i, j)`` with ``i <= j``, covering ``[i * d / N, (j + 1) * d / N)`` seconds for
  a video of duration ``d`` seconds cut into ``N`` clips.
- IoU is ``|intersection| / |union|`` of two intervals; touching intervals have IoU 0.
- A prediction is a hit at threshold ``t`` when ``IoU >= t`` (greater or equal).
"""

from __future__ import annotations

import torch


def temporal_iou(spans_a: torch.Tensor, spans_b: torch.Tensor) -> torch.Tensor:
    """Compute the IoU of two sets of intervals, broadcasting over leading dimensions.

    Args:
        spans_a: ``(..., 2)`` intervals ``(start, end)`` (any unit, e.g. seconds).
        spans_b: ``(..., 2)`` intervals in the same unit, broadcastable with ``spans_a``.

    Returns:
        ``(...)`` IoU in ``[0, 1]``. A pair whose union is empty has IoU 0.
    """
    start = torch.maximum(spans_a[..., 0], spans_b[..., 0])
    end = torch.minimum(spans_a[..., 1], spans_b[..., 1])
    intersection = (end - start).clamp(min=0)
    union = (spans_a[..., 1] - spans_a[..., 0]) + (spans_b[..., 1] - spans_b[..., 0]) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(union))


def seconds_to_clip_indices(spans: torch.Tensor, durations: torch.Tensor, num_clips: int) -> torch.Tensor:
    """Map spans in seconds to the inclusive clip indices that cover them.

    Args:
        spans: ``(B, 2)`` start and end in seconds.
        durations: ``(B,)`` video durations in seconds.
        num_clips: Number of clips ``N`` per video.

    Returns:
        ``(B, 2)`` long tensor ``(i, j)`` with ``0 <= i <= j < N``.
    """
    scale = num_clips / durations.clamp(min=1e-6)
    start = torch.floor(spans[:, 0] * scale).long()
    end = torch.ceil(spans[:, 1] * scale).long() - 1
    start = start.clamp(0, num_clips - 1)
    end = torch.maximum(end.clamp(0, num_clips - 1), start)
    return torch.stack([start, end], dim=-1)


def clip_indices_to_seconds(indices: torch.Tensor, durations: torch.Tensor, num_clips: int) -> torch.Tensor:
    """Map inclusive clip index pairs ``(..., 2)`` to seconds; ``durations`` broadcasts over ``(...)``."""
    clip_seconds = durations / num_clips
    start = indices[..., 0].to(clip_seconds.dtype) * clip_seconds
    end = (indices[..., 1].to(clip_seconds.dtype) + 1) * clip_seconds
    return torch.stack([start, end], dim=-1)


def span_score_matrix(
    start_log_probs: torch.Tensor,
    end_log_probs: torch.Tensor,
    max_span_clips: int | None = None,
) -> torch.Tensor:
    """Score every clip span ``(i, j)`` as ``log p_start(i) + log p_end(j)``.

    Args:
        start_log_probs: ``(B, N)`` log-probabilities of the start clip.
        end_log_probs: ``(B, N)`` log-probabilities of the end clip.
        max_span_clips: Longest allowed span in clips (``j - i + 1``); ``None`` allows all.

    Returns:
        ``(B, N, N)`` scores; spans with ``i > j`` or longer than ``max_span_clips`` are ``-inf``.
    """
    num_clips = start_log_probs.shape[-1]
    scores = start_log_probs.unsqueeze(2) + end_log_probs.unsqueeze(1)  # (B, N, N)
    positions = torch.arange(num_clips, device=scores.device)
    length = positions.unsqueeze(0) - positions.unsqueeze(1) + 1  # (N, N): j - i + 1
    valid = length >= 1
    if max_span_clips is not None:
        valid = valid & (length <= max_span_clips)
    return scores.masked_fill(~valid, float("-inf"))


def decode_best_span(
    start_log_probs: torch.Tensor,
    end_log_probs: torch.Tensor,
    max_span_clips: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the highest-scoring span per video.

    Returns:
        ``(B, 2)`` inclusive clip indices ``(i, j)`` with ``i <= j``, and ``(B,)`` scores.
    """
    scores = span_score_matrix(start_log_probs, end_log_probs, max_span_clips)
    num_clips = scores.shape[-1]
    best, flat = scores.flatten(1).max(dim=1)
    return torch.stack([flat // num_clips, flat % num_clips], dim=-1), best


def temporal_nms(spans: torch.Tensor, scores: torch.Tensor, iou_threshold: float, top_k: int) -> torch.Tensor:
    """Greedy temporal non-maximum suppression for one video.

    Spans are visited in decreasing score order; a span is kept unless its IoU with an
    already kept span is ``>= iou_threshold``.

    Args:
        spans: ``(M, 2)`` candidate spans (any unit).
        scores: ``(M,)`` candidate scores.
        iou_threshold: Suppression threshold in ``[0, 1]``; 1 keeps everything but exact duplicates.
        top_k: Number of spans to keep.

    Returns:
        ``(K,)`` indices into ``spans`` of the kept spans, best first, ``K <= top_k``.
    """
    order = torch.argsort(scores, descending=True)
    kept: list[int] = []
    for index in order.tolist():
        if len(kept) == top_k:
            break
        if kept:
            overlaps = temporal_iou(spans[index].unsqueeze(0), spans[kept])
            if bool((overlaps >= iou_threshold).any()):
                continue
        kept.append(index)
    return torch.tensor(kept, dtype=torch.long, device=spans.device)


def decode_top_k_spans(
    start_log_probs: torch.Tensor,
    end_log_probs: torch.Tensor,
    durations: torch.Tensor,
    top_k: int = 5,
    nms_threshold: float = 0.5,
    max_span_clips: int | None = None,
    candidates_per_video: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the top-k spans per video in seconds, with temporal NMS.

    Args:
        start_log_probs: ``(B, N)`` start log-probabilities.
        end_log_probs: ``(B, N)`` end log-probabilities.
        durations: ``(B,)`` video durations in seconds.
        top_k: Spans returned per video.
        nms_threshold: IoU at or above which a lower-scored span is suppressed.
        max_span_clips: Longest allowed span in clips; ``None`` allows all.
        candidates_per_video: The best spans considered by NMS (the rest are never returned).

    Returns:
        ``(B, top_k, 2)`` spans in seconds and ``(B, top_k)`` scores (log-probabilities), best
        first. Rows with fewer than ``top_k`` surviving spans are padded with span ``(nan, nan)``
        and score ``-inf``.
    """
    scores = span_score_matrix(start_log_probs, end_log_probs, max_span_clips)
    batch_size, num_clips, _ = scores.shape
    flat_scores = scores.flatten(1)
    candidates = min(candidates_per_video, flat_scores.shape[1])
    top_scores, top_flat = flat_scores.topk(candidates, dim=1)  # (B, C)
    clip_spans = torch.stack([top_flat // num_clips, top_flat % num_clips], dim=-1)  # (B, C, 2)
    second_spans = clip_indices_to_seconds(clip_spans, durations.unsqueeze(1), num_clips)  # (B, C, 2)

    spans_out = torch.full((batch_size, top_k, 2), float("nan"), dtype=second_spans.dtype, device=scores.device)
    scores_out = torch.full((batch_size, top_k), float("-inf"), dtype=scores.dtype, device=scores.device)
    for row in range(batch_size):
        finite = torch.isfinite(top_scores[row])
        row_spans, row_scores = second_spans[row][finite], top_scores[row][finite]
        kept = temporal_nms(row_spans, row_scores, nms_threshold, top_k)
        spans_out[row, : len(kept)] = row_spans[kept]
        scores_out[row, : len(kept)] = row_scores[kept]
    return spans_out, scores_out


def random_spans(durations: torch.Tensor, query_indices: torch.Tensor, top_k: int, seed: int = 0) -> torch.Tensor:
    """Draw ``top_k`` uniform random spans per query: the chance baseline.

    Each span's two endpoints are independent uniform draws in ``[0, duration]``, sorted. The
    draws depend only on ``seed`` and the query's index, so every process layout (one process or
    several under DDP) draws the same spans for the same query.

    Args:
        durations: ``(B,)`` video durations in seconds.
        query_indices: ``(B,)`` dataset indices of the queries.
        top_k: Spans per query.
        seed: Base seed of the draws.

    Returns:
        ``(B, top_k, 2)`` spans in seconds.
    """
    rows = []
    for duration, index in zip(durations.tolist(), query_indices.tolist()):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + int(index))
        points = torch.rand(top_k, 2, generator=generator, dtype=torch.float64) * duration
        rows.append(points.sort(dim=-1).values)
    return torch.stack(rows).to(durations.device, durations.dtype)

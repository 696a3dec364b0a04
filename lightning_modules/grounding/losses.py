"""FIAN training losses: start/end cross-entropy over clips plus content binary cross-entropy."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from lightning_modules.grounding.fian import FIANOutput


def inside_mask(target_clips: torch.Tensor, num_clips: int) -> torch.Tensor:
    """Return ``(B, N)`` float targets, 1 for clips ``i <= n <= j`` of each ``(i, j)`` in ``(B, 2)``."""
    positions = torch.arange(num_clips, device=target_clips.device).unsqueeze(0)  # (1, N)
    return ((positions >= target_clips[:, :1]) & (positions <= target_clips[:, 1:])).float()


def grounding_loss(
    output: FIANOutput,
    target_clips: torch.Tensor,
    clip_mask: torch.Tensor,
    boundary_weight: float = 1.0,
    content_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Compute the weighted FIAN loss.

    Args:
        output: Network logits, each ``(B, N)``.
        target_clips: ``(B, 2)`` inclusive ground-truth clip indices ``(i, j)``.
        clip_mask: ``(B, N)`` True for real clips; padded clips get no content loss.
        boundary_weight: Weight of ``CE(start) + CE(end)``.
        content_weight: Weight of the content BCE (mean over real clips).

    Returns:
        ``{"loss", "start", "end", "content"}`` scalar tensors; ``loss`` is the weighted sum.
    """
    start = F.cross_entropy(output.start_logits, target_clips[:, 0])
    end = F.cross_entropy(output.end_logits, target_clips[:, 1])
    inside = inside_mask(target_clips, output.content_logits.shape[1])
    per_clip = F.binary_cross_entropy_with_logits(output.content_logits, inside, reduction="none")
    valid = clip_mask.float()
    content = (per_clip * valid).sum() / valid.sum().clamp(min=1)
    loss = boundary_weight * (start + end) + content_weight * content
    return {"loss": loss, "start": start, "end": end, "content": content}

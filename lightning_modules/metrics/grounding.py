"""Temporal grounding metrics: R@k at IoU thresholds and mean IoU of the top-1 span.

A prediction is a hit at threshold ``t`` when its IoU with the ground-truth span is
``>= t`` (greater or equal). Some papers use ``>``, which gives lower numbers at equality.
R@k is the fraction of queries with at least one hit among their top ``k`` predicted spans;
mIoU averages the IoU of the top-1 span over queries. All states are sums, reduced with
``sum`` across processes, so a DDP run gives the values of one process over the same queries.

NOTE: Lightning's ``DistributedSampler`` pads a split whose size does not divide by the number
of processes with repeated queries, and those repeats are counted here like any other query.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from lightning_modules.grounding.spans import temporal_iou


def metric_key(k: int, threshold: float) -> str:
    """Return the name of an R@k value, e.g. ``r1_iou0.5``."""
    return f"r{k}_iou{threshold:g}"


class GroundingRecall(Metric):
    """R@k at IoU thresholds plus mIoU over ranked span predictions.

    Args:
        ks: The ``k`` values of R@k (e.g. ``(1, 5)``).
        iou_thresholds: IoU thresholds; a hit is ``IoU >= threshold``.

    ``compute()`` returns a dict ``{"r1_iou0.5": ..., "miou": ..., "count": ...}`` with values
    in ``[0, 1]`` (``count`` is the number of queries).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: Sequence[int] = (1, 5), iou_thresholds: Sequence[float] = (0.1, 0.3, 0.5, 0.7), **kwargs) -> None:
        super().__init__(**kwargs)
        if not ks or min(ks) < 1:
            raise ValueError(f"ks must be positive integers, got {list(ks)}.")
        self.ks = tuple(int(k) for k in ks)
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.add_state("hits", default=torch.zeros(len(self.ks), len(self.iou_thresholds), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("iou_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted_spans: torch.Tensor, target_spans: torch.Tensor) -> None:
        """Add a batch.

        Args:
            predicted_spans: ``(B, K, 2)`` spans in seconds, best first. Rows with fewer than
                ``K`` predictions are padded with ``nan`` spans, which never hit.
            target_spans: ``(B, 2)`` ground-truth spans in seconds.
        """
        if predicted_spans.dim() != 3 or predicted_spans.shape[-1] != 2:
            raise ValueError(f"predicted_spans must have shape (B, K, 2), got {tuple(predicted_spans.shape)}.")
        if target_spans.shape != (predicted_spans.shape[0], 2):
            raise ValueError(f"target_spans must have shape ({predicted_spans.shape[0]}, 2), got {tuple(target_spans.shape)}.")
        ious = temporal_iou(predicted_spans.double(), target_spans.double().unsqueeze(1))  # (B, K)
        ious = torch.nan_to_num(ious, nan=-1.0)  # padded predictions never reach a threshold
        thresholds = torch.tensor(self.iou_thresholds, dtype=torch.float64, device=ious.device)
        for row, k in enumerate(self.ks):
            best_of_k = ious[:, :k].max(dim=1).values  # (B,)
            self.hits[row] += (best_of_k.unsqueeze(1) >= thresholds).sum(dim=0).double()
        self.iou_sum += ious[:, 0].clamp(min=0).sum()
        self.count += ious.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        denominator = self.count.clamp(min=1)
        values = {}
        for row, k in enumerate(self.ks):
            for column, threshold in enumerate(self.iou_thresholds):
                values[metric_key(k, threshold)] = (self.hits[row, column] / denominator).float()
        values["miou"] = (self.iou_sum / denominator).float()
        values["count"] = self.count.float()
        return values

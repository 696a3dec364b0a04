"""Span IoU, decoding, temporal NMS and the grounding recall metric against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.grounding.spans import (
    clip_indices_to_seconds,
    decode_best_span,
    decode_top_k_spans,
    random_spans,
    seconds_to_clip_indices,
    temporal_iou,
    temporal_nms,
)
from lightning_modules.metrics.grounding import GroundingRecall


@pytest.mark.parametrize(
    ("span_a", "span_b", "expected"),
    [
        ((0.0, 2.0), (2.0, 4.0), 0.0),  # touching
        ((1.0, 3.0), (0.0, 4.0), 0.5),  # nested: 2 / 4
        ((0.0, 1.0), (3.0, 5.0), 0.0),  # disjoint
        ((0.0, 3.0), (1.0, 4.0), 0.5),  # overlapping: 2 / 4
        ((2.0, 5.0), (2.0, 5.0), 1.0),  # identical
    ],
)
def test_temporal_iou_cases(span_a, span_b, expected):
    value = temporal_iou(torch.tensor(span_a), torch.tensor(span_b))
    assert value.item() == pytest.approx(expected)


def test_temporal_iou_broadcasts():
    predictions = torch.tensor([[[0.0, 2.0], [1.0, 3.0]]])  # (1, 2, 2)
    target = torch.tensor([[1.0, 3.0]]).unsqueeze(1)  # (1, 1, 2)
    assert temporal_iou(predictions, target)[0].tolist() == pytest.approx([1 / 3, 1.0])


def test_clip_second_conversion():
    durations = torch.tensor([10.0, 20.0])
    clips = seconds_to_clip_indices(torch.tensor([[2.5, 5.0], [0.0, 20.0]]), durations, num_clips=10)
    assert clips.tolist() == [[2, 4], [0, 9]]
    seconds = clip_indices_to_seconds(clips, durations, num_clips=10)
    assert seconds[0].tolist() == pytest.approx([2.0, 5.0])
    assert seconds[1].tolist() == pytest.approx([0.0, 20.0])


def test_best_span_respects_order_and_length():
    num_clips = 6
    start = torch.full((1, num_clips), -10.0)
    end = torch.full((1, num_clips), -10.0)
    start[0, 4] = 0.0  # the best start lies after the best end
    end[0, 1] = 0.0
    end[0, 5] = -1.0
    span, _ = decode_best_span(start, end)
    assert span.tolist() == [[4, 5]]
    start[0, 0] = -0.5
    span, _ = decode_best_span(start, end, max_span_clips=2)
    assert span.tolist() == [[0, 1]]  # [4, 5] needs 2 clips too but scores -1.0 < -0.5


def test_nms_suppresses_duplicate_for_r5():
    spans = torch.tensor([[0.0, 5.0], [0.1, 5.0], [6.0, 8.0], [2.0, 3.0], [5.0, 6.0], [9.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    target = torch.tensor([[9.0, 10.0]])
    kept = temporal_nms(spans, scores, iou_threshold=0.5, top_k=5)
    assert kept.tolist() == [0, 2, 3, 4, 5]

    with_nms, without_nms = GroundingRecall(), GroundingRecall()
    with_nms.update(spans[kept].unsqueeze(0), target)
    without_nms.update(spans[:5].unsqueeze(0), target)
    assert with_nms.compute()["r5_iou0.5"].item() == 1.0
    assert without_nms.compute()["r5_iou0.5"].item() == 0.0
    assert with_nms.compute()["r1_iou0.5"].item() == 0.0


def test_decode_top_k_applies_nms_in_seconds():
    num_clips = 10
    start = torch.log_softmax(torch.tensor([[5.0, 4.9, 0, 0, 0, 0, 0, 3.0, 0, 0]]), dim=-1)
    end = torch.log_softmax(torch.tensor([[0, 0, 0, 0, 5.0, 0, 0, 0, 0, 3.0]]), dim=-1)
    spans, scores = decode_top_k_spans(start, end, torch.tensor([20.0]), top_k=3, nms_threshold=0.5, max_span_clips=num_clips)
    # The best span (0, 4) scores 10.0. NMS drops (1, 4) at 9.9 and (0, 9) at 8.0, which overlap
    # it by IoU 0.8 and 0.5. Next come (1, 9) at 7.9 with IoU 0.4, then (7, 9) at 6.0.
    assert spans[0, 0].tolist() == pytest.approx([0.0, 10.0])
    assert spans[0, 1].tolist() == pytest.approx([2.0, 20.0])
    assert spans[0, 2].tolist() == pytest.approx([14.0, 20.0])
    assert bool((scores[0, :-1] >= scores[0, 1:]).all())
    ious = temporal_iou(spans[0].unsqueeze(1), spans[0].unsqueeze(0))
    off_diagonal = ious[~torch.eye(3, dtype=torch.bool)]
    assert bool((off_diagonal < 0.5).all())


def test_recall_and_miou_over_batch():
    metric = GroundingRecall(ks=(1, 5), iou_thresholds=(0.1, 0.3, 0.5, 0.7))
    predictions = torch.tensor(
        [
            [[0.0, 4.0], [5.0, 6.0]],  # IoU 1.0
            [[0.0, 3.0], [5.0, 6.0]],  # IoU 0.5 exactly: a hit at 0.5 because hits use >=
            [[6.0, 8.0], [1.0, 2.0]],  # top-1 IoU 0 with (1, 5); the second has IoU 0.25
        ]
    )
    targets = torch.tensor([[0.0, 4.0], [1.0, 4.0], [1.0, 5.0]])
    values = metric(predictions, targets)
    assert values["r1_iou0.5"].item() == pytest.approx(2 / 3)
    assert values["r1_iou0.7"].item() == pytest.approx(1 / 3)
    assert values["r5_iou0.1"].item() == pytest.approx(1.0)  # third query: (1, 2) vs (1, 5) has IoU 0.25
    assert values["r5_iou0.3"].item() == pytest.approx(2 / 3)
    assert values["miou"].item() == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert values["count"].item() == 3


def test_recall_ignores_nan_padding():
    metric = GroundingRecall()
    padded = torch.tensor([[[0.0, 1.0]] + [[math.nan, math.nan]] * 4])
    metric.update(padded, torch.tensor([[5.0, 6.0]]))
    values = metric.compute()
    assert values["r5_iou0.1"].item() == 0.0
    assert values["miou"].item() == 0.0


def test_random_spans_depend_only_on_query():
    durations = torch.tensor([10.0, 30.0])
    first = random_spans(durations, torch.tensor([3, 7]), top_k=5, seed=1)
    second = random_spans(durations[1:], torch.tensor([7]), top_k=5, seed=1)
    assert torch.equal(first[1], second[0])
    assert bool((first[..., 0] <= first[..., 1]).all())
    assert bool((first[1] <= 30.0).all())
    assert bool((first >= 0).all())

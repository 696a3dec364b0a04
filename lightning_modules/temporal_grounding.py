"""LightningModule: FIAN temporal grounding training, evaluation and prediction.

Validation and test log R@1/R@5 at IoU 0.1/0.3/0.5/0.7 and mIoU of the model
(``val/r1_iou0.5``, ``test/miou``) and of a random-span baseline evaluated on the same queries
(``val/random/r1_iou0.5``). Prediction returns, per query, the top-k moments in seconds with
their scores (:class:`~callbacks.jsonl_prediction_writer.JsonlPredictionWriter` writes them).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from lightning_modules.grounding.fian import FIAN, FIANOutput
from lightning_modules.grounding.losses import grounding_loss
from lightning_modules.grounding.spans import decode_top_k_spans, random_spans
from lightning_modules.metrics.grounding import GroundingRecall
from lightning_modules.parallel import data_parallel_mesh, is_sharded, shard_modules


class TemporalGrounding(LightningModule):
    """Train and evaluate FIAN on batches from
    :class:`~datamodules.grounding.datamodule.TemporalGroundingDataModule`.

    Args:
        feature_dim: Clip feature size ``F`` (linked from the data module by the CLI).
        word_dim: Word vector size ``E`` (50 for ``packaged:glove-6b-50d``).
        hidden_dim: Model width ``H``.
        num_iterations: Iterative attention steps ``K``.
        query_rnn: Query encoder, ``gru`` or ``lstm``.
        video_rnn: Add a BiGRU to the video encoder.
        gate: Fusion in the video-by-query step, ``sigmoid`` or ``none``.
        update_words: Feed enhanced words into the next attention step.
        temporal_encoder: ``gru`` or ``conv``.
        temporal_layers: Layers of the temporal encoder.
        dropout: Dropout probability.
        boundary_weight: Weight of the start and end cross-entropy losses.
        content_weight: Weight of the content binary cross-entropy loss.
        max_span_fraction: Longest decoded span as a fraction of the video (of ``N`` clips).
        top_k: Moments per query in R@k and predictions (R@5 needs 5).
        nms_threshold: Temporal NMS IoU; a span overlapping a better one by at least this is dropped.
        iou_thresholds: IoU thresholds of R@k; a hit is ``IoU >= threshold``.
        random_baseline_seed: Seed of the random-span baseline.
        learning_rate: AdamW learning rate of the default optimiser.
        weight_decay: AdamW weight decay of the default optimiser.
    """

    def __init__(
        self,
        feature_dim: int,
        word_dim: int = 50,
        hidden_dim: int = 128,
        num_iterations: int = 2,
        query_rnn: str = "gru",
        video_rnn: bool = True,
        gate: str = "sigmoid",
        update_words: bool = False,
        temporal_encoder: str = "gru",
        temporal_layers: int = 1,
        dropout: float = 0.1,
        boundary_weight: float = 1.0,
        content_weight: float = 1.0,
        max_span_fraction: float = 1.0,
        top_k: int = 5,
        nms_threshold: float = 0.5,
        iou_thresholds: list[float] = [0.1, 0.3, 0.5, 0.7],
        random_baseline_seed: int = 0,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        if not 0 < max_span_fraction <= 1:
            raise ValueError(f"max_span_fraction must be in (0, 1], got {max_span_fraction}.")
        self.save_hyperparameters()
        self.model = FIAN(
            feature_dim=feature_dim,
            word_dim=word_dim,
            hidden_dim=hidden_dim,
            num_iterations=num_iterations,
            query_rnn=query_rnn,
            video_rnn=video_rnn,
            gate=gate,
            update_words=update_words,
            temporal_encoder=temporal_encoder,
            temporal_layers=temporal_layers,
            dropout=dropout,
        )
        ks = [1, 5] if top_k >= 5 else [1]  # R@5 needs five moments per query
        self.metrics = torch.nn.ModuleDict(
            {
                name: GroundingRecall(ks=ks, iou_thresholds=iou_thresholds)
                for name in ("val_model", "val_random", "test_model", "test_random")
            }
        )

    def configure_model(self) -> None:
        """Shard the network with FSDP2 when ``ModelParallelStrategy`` provides a device mesh.

        The network is built in ``__init__``; without a mesh (single process, DDP) nothing
        changes. With one, each attention step, the two encoders, the temporal encoder and the
        heads become separate ``fully_shard`` groups, and the remaining cross-modal layer
        belongs to the root group. Every parameter trains, so checkpoints hold the whole network.
        """
        if self.device_mesh is None or is_sharded(self.model):
            return
        network = self.model
        blocks = [*network.steps, network.query_encoder, network.video_encoder, network.temporal_encoder, network.heads]
        shard_modules(network, blocks, data_parallel_mesh(self.device_mesh))

    def forward(self, batch: dict[str, Any]) -> FIANOutput:
        return self.model(batch["features"], batch["clip_mask"], batch["words"], batch["word_mask"])

    def decode(self, batch: dict[str, Any], output: FIANOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the top-k spans ``(B, k, 2)`` in seconds and their scores ``(B, k)``."""
        mask = batch["clip_mask"]
        start_log_probs = torch.log_softmax(output.start_logits, dim=-1).masked_fill(~mask, float("-inf"))
        end_log_probs = torch.log_softmax(output.end_logits, dim=-1).masked_fill(~mask, float("-inf"))
        num_clips = mask.shape[1]
        max_span_clips = max(1, round(self.hparams.max_span_fraction * num_clips))
        return decode_top_k_spans(
            start_log_probs,
            end_log_probs,
            batch["duration"],
            top_k=self.hparams.top_k,
            nms_threshold=self.hparams.nms_threshold,
            max_span_clips=max_span_clips,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = grounding_loss(
            self(batch), batch["target_clips"], batch["clip_mask"], self.hparams.boundary_weight, self.hparams.content_weight
        )
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"training loss is {losses['loss'].item()} at step {self.global_step}; lower the learning rate.")
        batch_size = batch["features"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        for name in ("start", "end", "content"):
            self.log(f"train/loss_{name}", losses[name], batch_size=batch_size)
        return losses["loss"]

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        output = self(batch)
        losses = grounding_loss(output, batch["target_clips"], batch["clip_mask"], self.hparams.boundary_weight, self.hparams.content_weight)
        self.log(f"{stage}/loss", losses["loss"], sync_dist=True, batch_size=batch["features"].shape[0])
        spans, _ = self.decode(batch, output)
        self.metrics[f"{stage}_model"].update(spans, batch["span"])
        baseline = random_spans(batch["duration"], batch["index"], self.hparams.top_k, self.hparams.random_baseline_seed)
        self.metrics[f"{stage}_random"].update(baseline, batch["span"])

    def _log_metrics(self, stage: str) -> None:
        for source, prefix in (("model", f"{stage}/"), ("random", f"{stage}/random/")):
            metric = self.metrics[f"{stage}_{source}"]
            values = metric.compute()  # sums states across ranks
            for name, value in values.items():
                self.log(prefix + name, value, prog_bar=(source == "model" and name == "r1_iou0.5"), sync_dist=False)
            metric.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Return one record per query: ids, sentence, duration and top-k ``[start, end, score]`` in seconds."""
        spans, scores = self.decode(batch, self(batch))
        records = []
        for row in range(spans.shape[0]):
            valid = torch.isfinite(scores[row])
            moments = [[round(float(s), 3), round(float(e), 3), round(float(c), 4)] for (s, e), c in zip(spans[row][valid].tolist(), scores[row][valid].tolist())]
            records.append(
                {
                    "index": int(batch["index"][row]),
                    "video": batch["video_id"][row],
                    "sentence": batch["sentence"][row],
                    "duration": round(float(batch["duration"][row]), 3),
                    "ground_truth": [round(float(value), 3) for value in batch["span"][row].tolist()],
                    "moments": moments,
                }
            )
        return records

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)

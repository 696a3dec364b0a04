"""GLUE and SuperGLUE tasks as text-to-text batches, with a seeded train/val/test protocol.

Only the training and validation sets have public labels, so the suite builds its own splits:

- small tasks (CoLA, STS-B, MRPC, RTE, BoolQ, CB, WiC, WSC, MultiRC): the validation set is
  shuffled and split in half into val and test; all training rows train;
- large tasks (MNLI, QQP, QNLI, SST-2): ``large_val_size`` (1,000) shuffled training rows
  are held out as val, and the validation set is the test set.

Batches carry the source tokens (right padded), the target tokens (-100 padded) and the
label ids, so one batch serves encoder-decoder, decoder-only and classifier backbones.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from datamodules.glue_tasks import GlueTask, format_rows, get_task, read_task_rows
from datamodules.samplers import EpochSeededRandomSampler

IGNORE_INDEX = -100


def split_rows(
    task: GlueTask, train_rows: list[dict], validation_rows: list[dict], seed: int, large_val_size: int = 1000
) -> tuple[list[dict], list[dict], list[dict]]:
    """Return ``(train, val, test)`` under the task's split protocol (see the module docstring).

    Raises:
        ValueError: If a large task has no more than ``large_val_size`` training rows.
    """
    generator = torch.Generator().manual_seed(seed)
    if task.small:
        order = torch.randperm(len(validation_rows), generator=generator).tolist()
        half = len(order) // 2
        return list(train_rows), [validation_rows[i] for i in order[:half]], [validation_rows[i] for i in order[half:]]
    if len(train_rows) <= large_val_size:
        raise ValueError(
            f"{task.name} has {len(train_rows)} training rows, too few to hold out large_val_size={large_val_size} "
            f"as val; lower large_val_size."
        )
    order = torch.randperm(len(train_rows), generator=generator).tolist()
    val = [train_rows[i] for i in order[:large_val_size]]
    train = [train_rows[i] for i in order[large_val_size:]]
    return train, val, list(validation_rows)


class GlueDataModule(LightningDataModule):
    """Text-to-text GLUE/SuperGLUE data for prompt tuning.

    Args:
        task: Task name: ``cola``, ``sst2``, ``mrpc``, ``qqp``, ``stsb``, ``mnli``, ``qnli``,
            ``rte``, ``boolq``, ``cb``, ``wic``, ``wsc`` or ``multirc``.
        tokenizer: Backbone source whose tokenizer is used (the CLI links it to the model's
            ``model_name_or_path``).
        train_path: Training rows: a local ``.tsv``/``.jsonl`` file or ``builtin:NAME``; None
            reads the hub data set's ``train`` split.
        validation_path: Validation rows, the same kinds; None reads the hub's validation split.
        max_length: Source tokens per row at most; longer sources are truncated.
        max_target_length: Target tokens per row at most.
        batch_size: Training rows per batch.
        eval_batch_size: Rows per val/test batch; None means ``batch_size``.
        max_train_rows: Use at most this many (shuffled) training rows, for short runs.
        max_eval_rows: Use at most this many val rows and this many test rows.
        large_val_size: Training rows held out as val for large tasks.
        num_workers: DataLoader worker processes.
        seed: Seed of the split and of the shuffling.
    """

    def __init__(
        self,
        task: str = "rte",
        tokenizer: str | None = None,
        train_path: str | None = None,
        validation_path: str | None = None,
        max_length: int = 256,
        max_target_length: int = 8,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        max_train_rows: int | None = None,
        max_eval_rows: int | None = None,
        large_val_size: int = 1000,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.task = get_task(task)  # rejects an unknown name at configuration time
        self.tokenizer_source = tokenizer
        self.train_path = train_path
        self.validation_path = validation_path
        self.max_length = max_length
        self.max_target_length = max_target_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_train_rows = max_train_rows
        self.max_eval_rows = max_eval_rows
        self.large_val_size = large_val_size
        self.num_workers = num_workers
        self.seed = seed
        self.tokenizer = None
        self.train_rows: list[dict] = []
        self.val_rows: list[dict] = []
        self.test_rows: list[dict] = []

    def load_split_rows(self) -> None:
        """Read, format and split the rows (no tokenizer needed)."""
        task = self.task
        train_source = self.train_path or task.hub_id
        validation_source = self.validation_path or task.hub_id
        train = format_rows(task, read_task_rows(task, train_source, "train"), train_source)
        validation = format_rows(task, read_task_rows(task, validation_source, task.hub_validation_split), validation_source)
        train, val, test = split_rows(task, train, validation, self.seed, self.large_val_size)
        if self.max_train_rows is not None:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed + 1)).tolist()
            train = [train[i] for i in order[: self.max_train_rows]]
        if self.max_eval_rows is not None:
            val, test = val[: self.max_eval_rows], test[: self.max_eval_rows]
        self.train_rows, self.val_rows, self.test_rows = train, val, test
        rank_zero_info(f"{task.name}: {len(train)} train, {len(val)} val, {len(test)} test rows.")

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            if self.tokenizer_source is None:
                raise ValueError("GlueDataModule needs a tokenizer: set data.tokenizer to a backbone source.")
            from lightning_modules.prompt_backbones import load_backbone_tokenizer

            self.tokenizer = load_backbone_tokenizer(self.tokenizer_source)
        if not (self.train_rows or self.test_rows):
            self.load_split_rows()

    def collate(self, rows: list[dict]) -> dict[str, Any]:
        """Tokenise rows into a batch.

        Returns:
            ``input_ids`` and ``attention_mask`` (B, S) right padded; ``labels``: target
            tokens (B, T), -100 padded, ending with EOS when the tokenizer has one;
            ``label_ids``: class ids (B,) long, or scores (B,) float for STS-B;
            ``targets``: target texts.
        """
        tokenizer = self.tokenizer
        sources = tokenizer([row["source"] for row in rows], truncation=True, max_length=self.max_length)["input_ids"]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        targets = [
            (tokenizer(row["target"], add_special_tokens=False)["input_ids"] + eos)[: self.max_target_length]
            for row in rows
        ]
        width = max(len(ids) for ids in sources)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, ids in enumerate(sources):
            input_ids[index, : len(ids)] = torch.tensor(ids)
            attention_mask[index, : len(ids)] = 1
        target_width = max(len(ids) for ids in targets)
        labels = torch.full((len(rows), target_width), IGNORE_INDEX, dtype=torch.long)
        for index, ids in enumerate(targets):
            labels[index, : len(ids)] = torch.tensor(ids)
        label_dtype = torch.float if self.task.is_regression else torch.long
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "label_ids": torch.tensor([row["label"] for row in rows], dtype=label_dtype),
            "targets": [row["target"] for row in rows],
        }

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededRandomSampler(self.train_rows, seed=self.seed)
        return DataLoader(
            self.train_rows, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate,
            num_workers=self.num_workers, drop_last=False,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_rows, batch_size=self.eval_batch_size, collate_fn=self.collate, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_rows, batch_size=self.eval_batch_size, collate_fn=self.collate, num_workers=self.num_workers)

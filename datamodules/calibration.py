"""Calibration text -> token batches for activation statistics (e.g. NQ-open questions).

Rows are drawn with a seed, formatted with a template over their columns (``"{question}"``),
tokenised, and either packed into sequences of exactly ``max_length`` tokens separated by the
EOS token (``pack=True``) or padded per batch with an attention mask that excludes the padding.
"""

from __future__ import annotations

import random

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from datamodules.sources import load_rows


class CalibrationTextDataModule(LightningDataModule):
    """Calibration batches of ``input_ids`` and ``attention_mask`` from any text column.

    Args:
        data_path: Local JSON/JSONL/parquet/CSV file, hub data set id or ``builtin:facts``.
        tokenizer: Model source whose tokenizer is used. ``None`` lets the calibration callback
            give the model's tokenizer.
        template: Python format string over the row's columns, e.g. ``"{question}"``.
        split: Hub split of ``data_path``.
        num_samples: Sequences to produce (packed) or rows to draw (not packed).
        max_length: Tokens per sequence.
        pack: Concatenate rows into full sequences instead of padding each row.
        max_rows: Read only the first ``max_rows`` rows of the file, in file order, before
            shuffling; the rows after them stay unseen for held-out evaluation.
        batch_size: Sequences per batch.
        seed: Seed of the row order.
    """

    def __init__(
        self,
        data_path: str,
        tokenizer: str | None = None,
        template: str = "{question}",
        split: str = "train",
        num_samples: int = 32,
        max_length: int = 256,
        pack: bool = True,
        max_rows: int | None = None,
        batch_size: int = 8,
        seed: int = 233,
    ) -> None:
        super().__init__()
        self.data_path = data_path
        self.tokenizer_source = tokenizer
        self.template = template
        self.split = split
        self.num_samples = num_samples
        self.max_length = max_length
        self.pack = pack
        self.max_rows = max_rows
        self.batch_size = batch_size
        self.seed = seed
        self.tokenizer = None
        self.sequences: list[list[int]] = []

    def texts(self) -> list[str]:
        """Format the shuffled rows with the template.

        Raises:
            KeyError: If the template names a column the rows do not have.
        """
        rows = load_rows(self.data_path, self.split)
        if self.max_rows is not None:
            rows = rows[: self.max_rows]
        order = list(range(len(rows)))
        random.Random(self.seed).shuffle(order)
        texts = []
        for index in order:
            try:
                text = self.template.format(**rows[index])
            except KeyError as error:
                raise KeyError(
                    f"calibration template {self.template!r} names column {error.args[0]!r}, but {self.data_path} "
                    f"has columns {sorted(rows[index])}; set template to use one of them."
                ) from None
            if text.strip():
                texts.append(text)
        return texts

    def setup(self, stage: str | None = None) -> None:
        if self.sequences:
            return
        if self.tokenizer is None:
            if self.tokenizer_source is None:
                raise ValueError("CalibrationTextDataModule needs a tokenizer: set its tokenizer to a model source.")
            from lightning_modules.model_loading import load_tokenizer

            self.tokenizer = load_tokenizer(self.tokenizer_source)
        texts = self.texts()
        if self.pack:
            self.sequences = self._packed(texts)
        else:
            self.sequences = [
                self.tokenizer(text, add_special_tokens=True)["input_ids"][: self.max_length]
                for text in texts[: self.num_samples]
            ]
        tokens = sum(len(sequence) for sequence in self.sequences)
        rank_zero_info(f"Calibration data from {self.data_path}: {len(self.sequences)} sequences, {tokens} tokens.")

    def _packed(self, texts: list[str]) -> list[list[int]]:
        separator = [self.tokenizer.eos_token_id]
        sequences: list[list[int]] = []
        current: list[int] = []
        for text in texts:
            current.extend(self.tokenizer(text, add_special_tokens=False)["input_ids"] + separator)
            while len(current) >= self.max_length and len(sequences) < self.num_samples:
                sequences.append(current[: self.max_length])
                current = current[self.max_length:]
            if len(sequences) >= self.num_samples:
                break
        if len(sequences) < self.num_samples and current:
            sequences.append(current)  # the last, shorter sequence; its padding is masked
        return sequences

    def collate(self, sequences: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, sequence in enumerate(sequences):
            input_ids[i, : len(sequence)] = torch.tensor(sequence)
            attention_mask[i, : len(sequence)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.sequences, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate)

"""Supervised fine-tuning rows -> prompt and response tokens with a loss mask.

Each row is mapped to ``instruction``, optional ``input`` and ``output`` fields by a field
mapping, formatted with a prompt template (Alpaca by default), and tokenised as
``prompt + response + eos``. Labels are -100 on the prompt tokens and on padding, so the
loss covers the response only. Test and predict batches also carry the prompt alone, left
padded, for generation, and the reference answer text.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from datamodules.knowledge_probes import KnowledgeProbes
from datamodules.samplers import EpochSeededRandomSampler
from datamodules.sources import load_rows

ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_TEMPLATE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

FIELD_MAPS: dict[str, dict[str, str | None]] = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output"},
    "metamath": {"instruction": "query", "input": None, "output": "response"},
    "gsm8k": {"instruction": "question", "input": None, "output": "answer"},
}

GSM8K_FINAL_ANSWER = re.compile(r"\n?####\s*(.+?)\s*$")
GSM8K_CALCULATOR = re.compile(r"<<[^>]*>>")


def gsm8k_to_metamath_style(answer: str) -> str:
    """Rewrite a GSM8K worked answer: drop ``<<expr=value>>`` annotations and turn the final
    ``#### N`` line into ``The answer is: N`` (commas removed from N)."""
    text = GSM8K_CALCULATOR.sub("", answer)
    match = GSM8K_FINAL_ANSWER.search(text)
    if match is None:
        return text
    final = match.group(1).replace(",", "")
    return text[: match.start()].rstrip() + f"\nThe answer is: {final}"


def format_rows(rows: list[dict], field_map: dict[str, str | None], preset: str | None, source: str) -> list[dict]:
    """Map raw rows to ``{"prompt", "response"}`` dicts with the Alpaca template.

    Raises:
        KeyError: If a mapped column is absent from the rows; the message names the column,
            the source and the columns it has.
    """
    if not rows:
        raise ValueError(f"{source}: no rows to train on.")
    columns = set(rows[0])
    for role, column in field_map.items():
        if column is not None and role != "input" and column not in columns:
            raise KeyError(
                f"field mapping names column {column!r} for {role!r}, but {source} has columns "
                f"{sorted(columns)}; set data.field_map to map {role!r} to one of them."
            )
    formatted = []
    for row in rows:
        instruction = str(row[field_map["instruction"]])
        input_column = field_map.get("input")
        context = str(row.get(input_column) or "") if input_column else ""
        output = str(row[field_map["output"]])
        if preset == "gsm8k":
            output = gsm8k_to_metamath_style(output)
        template = ALPACA_TEMPLATE_WITH_INPUT if context.strip() else ALPACA_TEMPLATE
        formatted.append({"prompt": template.format(instruction=instruction, input=context), "response": output})
    return formatted


class InstructionDataModule(LightningDataModule):
    """Instruction-tuning data for causal LMs (Alpaca, MetaMathQA and GSM8K row styles).

    Args:
        data_path: Training rows: a local JSON/JSONL/parquet/CSV file, a hub data set id or
            ``builtin:arithmetic``.
        tokenizer: Model source whose tokenizer is used (linked to the model's source by the CLI).
        field_map: A preset (``"alpaca"``, ``"metamath"``, ``"gsm8k"``) or a dict mapping
            ``instruction``, ``input`` (may be null) and ``output`` to column names.
        test_path: Rows for ``test`` and ``predict``; defaults to the held-out validation rows.
        split: Hub split of ``data_path``.
        test_split: Hub split of ``test_path``.
        val_size: Rows held out from the training rows for validation.
        max_train_rows: Use at most this many training rows (after holding out validation).
        max_test_rows: Use at most this many test rows.
        max_length: Maximum tokens of prompt plus response; longer responses are truncated.
        batch_size: Rows per batch.
        num_workers: DataLoader worker processes.
        seed: Seed of the train/validation split and of the shuffling.
        knowledge_probes: World-knowledge probes added to ``test`` (see
            :class:`~datamodules.knowledge_probes.KnowledgeProbes`).
    """

    def __init__(
        self,
        data_path: str,
        tokenizer: str | None = None,
        field_map: str | dict[str, str | None] = "alpaca",
        test_path: str | None = None,
        split: str = "train",
        test_split: str = "test",
        val_size: int = 64,
        max_train_rows: int | None = None,
        max_test_rows: int | None = 64,
        max_length: int = 512,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 42,
        knowledge_probes: KnowledgeProbes | None = None,
    ) -> None:
        super().__init__()
        if isinstance(field_map, str) and field_map not in FIELD_MAPS:
            raise ValueError(f"unknown field_map preset {field_map!r}; choose one of {sorted(FIELD_MAPS)} or give a dict.")
        self.data_path = data_path
        self.tokenizer_source = tokenizer
        self.preset = field_map if isinstance(field_map, str) else None
        self.field_map = FIELD_MAPS[field_map] if isinstance(field_map, str) else dict(field_map)
        missing_roles = {"instruction", "output"} - set(self.field_map)
        if missing_roles:
            raise ValueError(f"field_map is missing {sorted(missing_roles)}; it maps instruction, input and output.")
        self.test_path = test_path
        self.split = split
        self.test_split = test_split
        self.val_size = val_size
        self.max_train_rows = max_train_rows
        self.max_test_rows = max_test_rows
        self.max_length = max_length
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.knowledge_probes = knowledge_probes
        self.tokenizer = None
        self.train_rows: list[dict] = []
        self.val_rows: list[dict] = []
        self.test_rows: list[dict] = []

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            if self.tokenizer_source is None:
                raise ValueError("InstructionDataModule needs a tokenizer: set data.tokenizer to a model source.")
            from lightning_modules.model_loading import load_tokenizer

            self.tokenizer = load_tokenizer(self.tokenizer_source)
        if self.knowledge_probes is not None and stage in ("test", None):
            self.knowledge_probes.setup(self.tokenizer)
        if self.train_rows or self.test_rows:
            return
        rows = format_rows(load_rows(self.data_path, self.split), self.field_map, self.preset, self.data_path)
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(rows), generator=generator).tolist()
        if self.val_size >= len(rows):
            raise ValueError(f"val_size={self.val_size} leaves no training rows out of {len(rows)} in {self.data_path}.")
        self.val_rows = [rows[i] for i in order[: self.val_size]]
        self.train_rows = [rows[i] for i in order[self.val_size:]]
        if self.max_train_rows is not None:
            self.train_rows = self.train_rows[: self.max_train_rows]
        if self.test_path is not None:
            test_rows = format_rows(load_rows(self.test_path, self.test_split), self.field_map, self.preset, self.test_path)
        else:
            test_rows = self.val_rows
        self.test_rows = test_rows[: self.max_test_rows] if self.max_test_rows is not None else test_rows
        rank_zero_info(
            f"Instruction data from {self.data_path}: {len(self.train_rows)} train, {len(self.val_rows)} val, "
            f"{len(self.test_rows)} test rows."
        )

    def encode(self, row: dict) -> dict[str, Any]:
        """Tokenise one formatted row into input ids and labels (-100 on the prompt)."""
        prompt_ids = self.tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
        response_ids = self.tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        response_ids = response_ids + [self.tokenizer.eos_token_id]
        if len(prompt_ids) >= self.max_length:
            # Keep the end of the prompt (the instruction header) and one response token.
            prompt_ids = prompt_ids[-(self.max_length - 1):]
        response_ids = response_ids[: self.max_length - len(prompt_ids)]
        input_ids = prompt_ids + response_ids
        labels = [-100] * len(prompt_ids) + response_ids
        return {"input_ids": input_ids, "labels": labels, "prompt_ids": prompt_ids, "reference": row["response"]}

    def collate(self, rows: list[dict]) -> dict[str, Any]:
        encoded = [self.encode(row) for row in rows]
        pad_id = self.tokenizer.pad_token_id
        width = max(len(item["input_ids"]) for item in encoded)
        input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        labels = torch.full((len(encoded), width), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, item in enumerate(encoded):  # right padding for training
            length = len(item["input_ids"])
            input_ids[i, :length] = torch.tensor(item["input_ids"])
            labels[i, :length] = torch.tensor(item["labels"])
            attention_mask[i, :length] = 1
        prompt_width = max(len(item["prompt_ids"]) for item in encoded)
        prompt_ids = torch.full((len(encoded), prompt_width), pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((len(encoded), prompt_width), dtype=torch.long)
        for i, item in enumerate(encoded):  # left padding for generation
            length = len(item["prompt_ids"])
            prompt_ids[i, prompt_width - length:] = torch.tensor(item["prompt_ids"])
            prompt_mask[i, prompt_width - length:] = 1
        return {
            "kind": "task",
            "input_ids": input_ids,  # (B, T)
            "attention_mask": attention_mask,  # (B, T)
            "labels": labels,  # (B, T)
            "prompt_input_ids": prompt_ids,  # (B, P)
            "prompt_attention_mask": prompt_mask,  # (B, P)
            "references": [item["reference"] for item in encoded],
        }

    def _loader(self, rows: list[dict], shuffle: bool) -> DataLoader:
        if not rows:
            rank_zero_warn("The instruction data module has no rows for this stage.")
        sampler = EpochSeededRandomSampler(rows, seed=self.seed) if shuffle else None
        return DataLoader(
            rows,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_rows, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_rows, shuffle=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        task = self._loader(self.test_rows, shuffle=False)
        if self.knowledge_probes is None:
            return task
        return [task, *self.knowledge_probes.dataloaders()]

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_rows, shuffle=False)

"""Test-time probes of world knowledge for fine-tuned causal LMs.

Four kinds of batch, each tagged with ``"kind"`` so the LightningModule can dispatch:

- ``qa``: NQ-open-style questions for greedy short answers (exact match against any reference);
- ``qa_likelihood``: question plus each reference answer, with labels on the answer tokens only
  (mean log-likelihood per answer token, continuous, so it shows forgetting where exact match
  is near zero);
- ``heldout_text``: the same questions as plain text, labels on every token (perplexity);
- ``cloze``: the suite's cloze facts (``datamodules.cloze_facts``) for greedy completion.

QA rows come from a file with ``question`` and ``answer`` (a list of strings) columns, taken
in file order from ``qa_skip_rows`` on, so they can be kept apart from calibration rows
(see ``CalibrationTextDataModule.max_rows``).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from datamodules.cloze_facts import cloze_facts
from datamodules.sources import load_rows

QA_TEMPLATE = "Answer the question with a short phrase.\nQuestion: {question}?\nAnswer:"


class KnowledgeProbes:
    """Knowledge-retention test data.

    Args:
        qa_path: NQ-open-style rows (``question``, ``answer`` list); ``None`` skips the QA probes.
        qa_skip_rows: Rows skipped at the start of ``qa_path`` (those used for calibration).
        max_qa_rows: Questions evaluated.
        cloze: Evaluate the cloze fact probe.
        batch_size: Rows per batch.
    """

    def __init__(
        self,
        qa_path: str | None = None,
        qa_skip_rows: int = 0,
        max_qa_rows: int = 150,
        cloze: bool = True,
        batch_size: int = 8,
    ) -> None:
        self.qa_path = qa_path
        self.qa_skip_rows = qa_skip_rows
        self.max_qa_rows = max_qa_rows
        self.cloze = cloze
        self.batch_size = batch_size
        self.tokenizer = None
        self.qa_rows: list[dict] = []
        self.cloze_rows: list[dict] = []

    def setup(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        if self.qa_path is not None and not self.qa_rows:
            rows = load_rows(self.qa_path)
            selected = rows[self.qa_skip_rows: self.qa_skip_rows + self.max_qa_rows]
            for index, row in enumerate(selected, start=self.qa_skip_rows):
                if "question" not in row or "answer" not in row:
                    raise KeyError(f"{self.qa_path} row {index} lacks 'question' or 'answer'; it has {sorted(row)}.")
                answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
                self.qa_rows.append({"question": str(row["question"]), "answers": [str(answer) for answer in answers]})
            rank_zero_info(f"Knowledge QA probe: {len(self.qa_rows)} questions from {self.qa_path} rows {self.qa_skip_rows}+.")
        if self.cloze and not self.cloze_rows:
            self.cloze_rows = cloze_facts()

    def dataloaders(self) -> list[DataLoader]:
        loaders = []
        if self.qa_rows:
            pairs = [{"question": row["question"], "answer": answer} for row in self.qa_rows for answer in row["answers"]]
            loaders.append(self._loader(self.qa_rows, self._collate_qa))
            loaders.append(self._loader(pairs, self._collate_likelihood))
            loaders.append(self._loader(self.qa_rows, self._collate_text))
        if self.cloze_rows:
            loaders.append(self._loader(self.cloze_rows, self._collate_cloze))
        return loaders

    def _loader(self, rows: list[dict], collate) -> DataLoader:
        return DataLoader(rows, batch_size=self.batch_size, shuffle=False, collate_fn=collate)

    def _left_padded(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [self.tokenizer(text, add_special_tokens=True)["input_ids"] for text in texts]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        return input_ids, mask

    def _right_padded(self, prefixes: list[str], targets: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise ``prefix + target``; labels cover the target tokens (all tokens if the prefix is empty)."""
        rows = []
        for prefix, target in zip(prefixes, targets):
            prefix_ids = self.tokenizer(prefix, add_special_tokens=True)["input_ids"] if prefix else []
            target_ids = self.tokenizer(target, add_special_tokens=not prefix)["input_ids"]
            rows.append((prefix_ids, target_ids))
        width = max(len(p) + len(t) for p, t in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prefix_ids, target_ids) in enumerate(rows):
            ids = prefix_ids + target_ids
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, len(prefix_ids): len(ids)] = torch.tensor(target_ids)
            mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    def _collate_qa(self, rows: list[dict]) -> dict[str, Any]:
        input_ids, mask = self._left_padded([QA_TEMPLATE.format(question=row["question"]) for row in rows])
        return {"kind": "qa", "prompt_input_ids": input_ids, "prompt_attention_mask": mask,
                "answers": [row["answers"] for row in rows]}

    def _collate_likelihood(self, rows: list[dict]) -> dict[str, Any]:
        batch = self._right_padded([QA_TEMPLATE.format(question=row["question"]) for row in rows],
                                   [" " + row["answer"] for row in rows])
        return {"kind": "qa_likelihood", **batch}

    def _collate_text(self, rows: list[dict]) -> dict[str, Any]:
        return {"kind": "heldout_text", **self._right_padded(["" for _ in rows], [row["question"] for row in rows])}

    def _collate_cloze(self, rows: list[dict]) -> dict[str, Any]:
        input_ids, mask = self._left_padded([row["prompt"] for row in rows])
        return {"kind": "cloze", "prompt_input_ids": input_ids, "prompt_attention_mask": mask,
                "answers": [row["answer"] for row in rows]}

"""Test-time evaluation of a fine-tuned causal LM: task score and world-knowledge retention.

Batches are tagged with ``"kind"`` (see :mod:`datamodules.instruction` and
:mod:`datamodules.knowledge_probes`). Every kind is measured on the fine-tuned model and, when
requested, on the base model, which the same network computes while the adapters hold their
initial factors (``W_res + s B0 A0 = W``). Metric states are torchmetrics ``MeanMetric``s, so
they are summed across DDP ranks.

Logged keys (``test/`` prefix):

- ``exact_match``, ``loss``, ``ppl``: task answers (final number) and response perplexity;
- ``knowledge/qa_exact_match``: normalised exact match of greedy short answers, any reference;
- ``knowledge/qa_answer_loglik``: mean log-likelihood per answer token of the references (nats);
- ``knowledge/heldout_ppl``: perplexity of the held-out question text;
- ``knowledge/cloze_accuracy``: share of cloze facts whose greedy continuation starts with the answer;
- ``base/…``: the same for the base model; ``relative/…``: fine-tuned against base, as a ratio
  for exact match, accuracy and perplexity, and as a difference for the log-likelihood.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torchmetrics import MeanMetric

from lightning_modules.metrics.answers import answers_match
from lightning_modules.metrics.qa import cloze_correct, exact_match_any, first_line

KNOWLEDGE_KINDS = ("qa", "qa_likelihood", "heldout_text", "cloze")
QA_NEW_TOKENS = 16
CLOZE_NEW_TOKENS = 8
# Metric name -> how the relative value is formed against the base model.
RELATIVE = {
    "exact_match": "ratio",
    "knowledge/qa_exact_match": "ratio",
    "knowledge/cloze_accuracy": "ratio",
    "knowledge/heldout_ppl": "ratio",
    "ppl": "ratio",
    "knowledge/qa_answer_loglik": "difference",
}


def answer_token_loglik(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean log-probability of the labelled tokens of each row.

    Args:
        logits: (B, T, V) next-token logits.
        labels: (B, T) token ids, -100 where not scored.

    Returns:
        (B,) mean log-likelihood per scored token, in nats.
    """
    shifted_logits = logits[:, :-1].float()  # (B, T-1, V)
    targets = labels[:, 1:]  # (B, T-1)
    scored = targets != -100
    log_probs = torch.log_softmax(shifted_logits, dim=-1)
    token_log_probs = log_probs.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return (token_log_probs * scored).sum(dim=1) / scored.sum(dim=1).clamp_min(1)


class RetentionEvaluator(nn.Module):
    """Metric states and per-kind test steps for :class:`~lightning_modules.causal_lm.CausalLMFineTuning`."""

    NAMES = ("exact_match", "loss", "knowledge/qa_exact_match", "knowledge/qa_answer_loglik",
             "knowledge/heldout_loss", "knowledge/cloze_accuracy")

    def __init__(self) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict({
            self._key(variant, name): MeanMetric() for variant in ("tuned", "base") for name in self.NAMES
        })

    @staticmethod
    def _key(variant: str, name: str) -> str:
        return f"{variant}__{name.replace('/', '__')}"

    def update(self, variant: str, name: str, value: torch.Tensor, weight: torch.Tensor | float = 1.0) -> None:
        metric = self.metrics[self._key(variant, name)]
        # Scores from decoded text are CPU tensors, while the metric states live on the model's device.
        metric.update(torch.as_tensor(value, device=metric.device), torch.as_tensor(weight, device=metric.device))

    def step(self, model: nn.Module, batch: dict[str, Any], generate: Callable[[dict, int], list[str]],
             variant: str, task_new_tokens: int) -> None:
        """Evaluate one batch of any kind and update the metrics of ``variant``."""
        kind = batch.get("kind", "task")
        if kind == "task":
            output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            tokens = (batch["labels"][:, 1:] != -100).sum()
            self.update(variant, "loss", output.loss, tokens)
            texts = generate(batch, task_new_tokens)
            matches = [float(answers_match(text, reference)) for text, reference in zip(texts, batch["references"])]
            self.update(variant, "exact_match", torch.tensor(matches, device=output.loss.device))
        elif kind == "qa":
            texts = generate(batch, QA_NEW_TOKENS)
            matches = [float(exact_match_any(first_line(text), answers)) for text, answers in zip(texts, batch["answers"])]
            self.update(variant, "knowledge/qa_exact_match", torch.tensor(matches))
        elif kind == "qa_likelihood":
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            self.update(variant, "knowledge/qa_answer_loglik", answer_token_loglik(logits, batch["labels"]))
        elif kind == "heldout_text":
            output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            self.update(variant, "knowledge/heldout_loss", output.loss, (batch["labels"][:, 1:] != -100).sum())
        elif kind == "cloze":
            texts = generate(batch, CLOZE_NEW_TOKENS)
            correct = [float(cloze_correct(text, answer)) for text, answer in zip(texts, batch["answers"])]
            self.update(variant, "knowledge/cloze_accuracy", torch.tensor(correct))
        else:
            raise ValueError(f"unknown test batch kind {kind!r}; expected 'task' or one of {KNOWLEDGE_KINDS}.")

    def compute(self) -> dict[str, float]:
        """Return the logged values (without the ``test/`` prefix) and reset the states."""
        values: dict[str, dict[str, float]] = {"tuned": {}, "base": {}}
        for variant in values:
            for name in self.NAMES:
                metric = self.metrics[self._key(variant, name)]
                if not metric.update_called:
                    continue
                value = float(metric.compute())
                if name.endswith("loss"):
                    perplexity_name = name.replace("heldout_loss", "heldout_ppl") if "heldout" in name else "ppl"
                    values[variant][perplexity_name] = float(torch.exp(torch.tensor(value)))
                    if "heldout" in name:
                        continue
                values[variant][name] = value
                metric.reset()
        result = dict(values["tuned"])
        for name, value in values["base"].items():
            result[f"base/{name}"] = value
            if name in values["tuned"] and name in RELATIVE:
                tuned = values["tuned"][name]
                if RELATIVE[name] == "difference":
                    result[f"relative/{name}"] = tuned - value
                elif value != 0:
                    result[f"relative/{name}"] = tuned / value
        for metric in self.metrics.values():
            metric.reset()
        return result

"""LightningModule: a frozen backbone behind prompt tuning, DePT or ADePT.

``method`` picks the prompt method:

- ``pt``: a soft prompt of ``budget_tokens`` tokens (100 by default);
- ``dept``: a shorter prompt (60 tokens by default) plus DePT's position-based low-rank offset;
- ``adept``: a shorter prompt plus ADePT's token-shared feed-forward offset.

DePT's and ADePT's ranks default to the largest that keep the trainable values within the
budget of ``budget_tokens`` prompt tokens (see
:func:`lightning_modules.adapters.prompts.solve_prompt_budget`), so the three methods compare
at equal size. The prompt and the offset network train in two parameter groups with their own
learning rates; an encoder classifier's head trains in a third group.

Text-to-text backbones (T5, decoder-only LMs) are evaluated by greedy generation of the label
text; encoder classifiers by the argmax of their head. Checkpoints hold the trainable tensors
only; loading one needs the same backbone source.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from datamodules.glue_tasks import GlueTask, get_task
from lightning_modules.adapters.prompts import (
    PROMPT_INITS,
    PROMPT_METHODS,
    PromptedModel,
    SoftPrompt,
    adept_parameter_count,
    append_targets,
    build_offset,
    dept_parameter_count,
    prompt_parameter_count,
    solve_prompt_budget,
)
from lightning_modules.metrics.glue import build_task_metrics, predictions_from_text
from lightning_modules.model_loading import parse_dtype
from lightning_modules.prompt_backbones import load_backbone, load_backbone_tokenizer


class PromptTuning(LightningModule):
    """Train a soft prompt (and an input offset) in front of a frozen backbone.

    Args:
        model_name_or_path: Backbone source: hub id (``google-t5/t5-base``), local folder or
            ``packaged:all-minilm-l6-v2``.
        method: ``pt``, ``dept`` or ``adept``.
        task: GLUE/SuperGLUE task for the metrics and the classifier head size; None takes
            the data module's task.
        backbone_kind: ``encoder_decoder``, ``decoder_only`` or ``encoder_classifier``; None
            infers it from the backbone's config.
        prompt_length: Prompt tokens m; None means ``budget_tokens`` for ``pt`` and 60 for
            ``dept`` and ``adept``.
        budget_tokens: Trainable-value budget, in prompt tokens of the backbone's width.
        rank: Offset rank r; None picks the largest rank within the budget.
        max_length: Longest input in tokens (DePT's position table has this many rows); it
            must equal or exceed the data module's ``max_length``.
        prompt_init: ``vocabulary`` (embeddings of sampled frequent tokens), ``text``
            (embeddings of ``prompt_init_text``, cycled) or ``random``.
        prompt_init_text: Text whose token embeddings initialise the prompt (``text`` only).
        offset_dropout: Dropout on ADePT's hidden layer while training.
        prompt_learning_rate: Learning rate of the soft prompt.
        offset_learning_rate: Learning rate of the offset network.
        head_learning_rate: Learning rate of an encoder classifier's head.
        weight_decay: AdamW weight decay of the default optimiser.
        warmup_steps: Linear warm-up steps, then linear decay to 0 at the last step.
        max_new_tokens: Tokens generated per row when evaluating text-to-text backbones.
        dtype: Backbone dtype: ``float32`` or ``bfloat16`` (T5 overflows in ``float16``).
        seed: Seed of the prompt initialisation.
        trust_remote_code: Allow model code from the backbone source to run. Off by default.
    """

    def __init__(
        self,
        model_name_or_path: str = "google-t5/t5-base",
        method: str = "adept",
        task: str | None = None,
        backbone_kind: str | None = None,
        prompt_length: int | None = None,
        budget_tokens: int = 100,
        rank: int | None = None,
        max_length: int = 256,
        prompt_init: str = "vocabulary",
        prompt_init_text: str | None = None,
        offset_dropout: float = 0.1,
        prompt_learning_rate: float = 0.3,
        offset_learning_rate: float = 1e-4,
        head_learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        warmup_steps: int = 500,
        max_new_tokens: int = 4,
        dtype: str = "float32",
        seed: int = 0,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if method not in PROMPT_METHODS:
            raise ValueError(f"unknown prompt method {method!r}; choose one of {PROMPT_METHODS}.")
        if prompt_init not in PROMPT_INITS:
            raise ValueError(f"unknown prompt_init {prompt_init!r}; choose one of {PROMPT_INITS}.")
        if prompt_init == "text" and not prompt_init_text:
            raise ValueError("prompt_init='text' needs prompt_init_text; set it or use prompt_init='vocabulary'.")
        if task is not None:
            get_task(task)
        if parse_dtype(dtype) == torch.float16:
            raise ValueError("dtype='float16' overflows in T5; use 'bfloat16' or 'float32'.")
        self.save_hyperparameters()
        self.network: PromptedModel | None = None
        self.tokenizer = None
        self.task_spec: GlueTask | None = get_task(task) if task is not None else None
        self.val_metrics = None
        self.test_metrics = None
        self.val_loss = MeanMetric()
        # Checkpoints hold the trainable tensors only; the frozen backbone comes from its source.
        self.strict_loading = False

    @property
    def prompt_length(self) -> int:
        if self.hparams.prompt_length is not None:
            return self.hparams.prompt_length
        return self.hparams.budget_tokens if self.hparams.method == "pt" else 60

    def setup(self, stage: str | None = None) -> None:
        if self.task_spec is None:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            task = getattr(datamodule, "task", None)
            if not isinstance(task, GlueTask):
                raise ValueError("PromptTuning needs a task: set model.init_args.task or use datamodules.glue.GlueDataModule.")
            self.task_spec = task
        if self.val_metrics is None:
            self.val_metrics = build_task_metrics(self.task_spec.name, self.task_spec.num_classes)
            self.test_metrics = build_task_metrics(self.task_spec.name, self.task_spec.num_classes)

    def configure_model(self) -> None:
        if self.network is not None:
            return
        if self.task_spec is None:
            self.setup()
        hp = self.hparams
        self.tokenizer = load_backbone_tokenizer(hp.model_name_or_path, trust_remote_code=hp.trust_remote_code)
        backbone = load_backbone(
            hp.model_name_or_path, hp.backbone_kind, num_labels=self.task_spec.num_classes,
            dtype=parse_dtype(hp.dtype), trust_remote_code=hp.trust_remote_code,
        )
        self.build_network(backbone)

    def build_network(self, backbone: torch.nn.Module) -> PromptedModel:
        """Wrap a loaded backbone with the configured prompt and offset and store it as ``self.network``."""
        hp = self.hparams
        embedding = backbone.get_input_embeddings().weight
        hidden_size = embedding.shape[1]
        rank = hp.rank
        if hp.method != "pt" and rank is None:
            budget = solve_prompt_budget(hidden_size, self.prompt_length, hp.max_length, budget_tokens=hp.budget_tokens)
            rank = budget.dept_rank if hp.method == "dept" else budget.adept_rank
        soft_prompt = SoftPrompt(self.prompt_length, hidden_size)
        if hp.prompt_init == "text":
            token_ids = self.tokenizer(hp.prompt_init_text, add_special_tokens=False)["input_ids"]
            soft_prompt.initialize_from_tokens(embedding, token_ids)
        elif hp.prompt_init == "vocabulary":
            soft_prompt.initialize_from_vocabulary(embedding, seed=hp.seed)
        else:
            soft_prompt.initialize_random(seed=hp.seed)
        offset = build_offset(hp.method, hidden_size, rank, hp.max_length, hp.offset_dropout)
        network = PromptedModel(backbone, soft_prompt, offset, kind=hp.backbone_kind, max_length=hp.max_length)
        self.offset_rank = rank
        self.network = network
        rank_zero_info(
            f"{hp.method} on {type(backbone).__name__} ({network.kind}): prompt {self.prompt_length} tokens, "
            f"rank {rank}, {self.prompt_parameter_count():,} prompt-method values "
            f"(expected {self.expected_prompt_parameter_count():,}), {self.trainable_parameter_count():,} trainable in all."
        )
        return network

    def trainable_parameter_count(self) -> int:
        """Trainable values, including an encoder classifier's head."""
        return sum(p.numel() for p in self.network.parameters() if p.requires_grad)

    def prompt_parameter_count(self) -> int:
        """Trainable values of the soft prompt and the offset network only."""
        modules = [self.network.soft_prompt] + ([self.network.offset] if self.network.offset is not None else [])
        return sum(p.numel() for module in modules for p in module.parameters() if p.requires_grad)

    def expected_prompt_parameter_count(self) -> int:
        """The method's parameter-count formula at this prompt length, rank and width."""
        hidden_size = self.network.soft_prompt.embeddings.shape[1]
        if self.hparams.method == "pt":
            return prompt_parameter_count(self.prompt_length, hidden_size)
        if self.hparams.method == "dept":
            return dept_parameter_count(self.prompt_length, self.offset_rank, self.hparams.max_length, hidden_size)
        return adept_parameter_count(self.prompt_length, self.offset_rank, hidden_size)

    def forward(self, batch: dict[str, Any]):
        """Run the prompted backbone on a batch and return its Hugging Face output (with loss)."""
        kind = self.network.kind
        if kind == "encoder_classifier":
            return self.network(batch["input_ids"], batch["attention_mask"], labels=batch["label_ids"])
        if kind == "decoder_only":
            input_ids, attention_mask, labels = append_targets(
                batch["input_ids"], batch["attention_mask"], batch["labels"], self.tokenizer.pad_token_id
            )
            return self.network(input_ids, attention_mask, labels=labels)
        return self.network(batch["input_ids"], batch["attention_mask"], labels=batch["labels"])

    def predict_labels(self, batch: dict[str, Any], output=None) -> torch.Tensor:
        """Predicted label ids (B,) long, or scores (B,) float for regression."""
        targets = batch["label_ids"]
        if self.network.kind == "encoder_classifier":
            logits = output.logits if output is not None else self(batch).logits  # (B, C)
            if self.task_spec.is_regression:
                return logits.squeeze(-1).float()
            return logits.argmax(dim=-1)
        texts = self.generate_text(batch)
        return predictions_from_text(texts, targets, self.task_spec.num_classes)

    @torch.no_grad()
    def generate_text(self, batch: dict[str, Any]) -> list[str]:
        """Greedy generation from the batch's sources; returns the new text of each row."""
        tokens, _ = self.network.generate(
            batch["input_ids"], batch["attention_mask"], max_new_tokens=self.hparams.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(tokens, skip_special_tokens=True)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}; lower prompt_learning_rate, or use "
                f"float32 or bfloat16."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def _evaluate(self, batch: dict[str, Any], metrics) -> None:
        output = self(batch)
        self.val_loss.update(output.loss, weight=batch["input_ids"].shape[0])
        predictions = self.predict_labels(batch, output)
        metrics.update(predictions, batch["label_ids"])

    def _log_metrics(self, stage: str, metrics) -> None:
        values = metrics.compute()  # gathers every rank's state
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, sync_dist=False)
        score = torch.stack([value.float() for value in values.values()]).mean()
        self.log(f"{stage}/score", score, prog_bar=True, sync_dist=False)
        self.log(f"{stage}/loss", self.val_loss.compute(), sync_dist=False)
        metrics.reset()
        self.val_loss.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        predictions = self.predict_labels(batch).tolist()
        return [
            {"prediction": prediction, "target": target}
            for prediction, target in zip(predictions, batch["label_ids"].tolist())
        ]

    def optimizer_parameter_groups(self) -> list[dict[str, Any]]:
        """Parameter groups with their own learning rates: prompt, offset network, classifier head."""
        hp = self.hparams
        network = self.network
        prompt = [p for p in network.soft_prompt.parameters() if p.requires_grad]
        offset = [p for p in network.offset.parameters() if p.requires_grad] if network.offset is not None else []
        head = [p for p in network.backbone.parameters() if p.requires_grad]
        groups = [
            {"name": "prompt", "params": prompt, "lr": hp.prompt_learning_rate},
            {"name": "offset", "params": offset, "lr": hp.offset_learning_rate},
            {"name": "head", "params": head, "lr": hp.head_learning_rate},
        ]
        return [group for group in groups if group["params"]]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.optimizer_parameter_groups(), weight_decay=self.hparams.weight_decay)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup_steps = min(self.hparams.warmup_steps, total_steps)

        def warmup_then_linear_decay(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / (warmup_steps + 1)
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def trainable_state_keys(self) -> set[str]:
        return {f"network.{name}" for name, p in self.network.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Keep the prompt, the offset network and a classifier head; the backbone comes from its source.
        keys = self.trainable_state_keys()
        checkpoint["state_dict"] = {key: value for key, value in checkpoint["state_dict"].items() if key in keys}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.network is None:
            self.configure_model()
        missing = self.trainable_state_keys() - set(checkpoint.get("state_dict", {}))
        if missing:
            raise KeyError(
                f"the checkpoint lacks {len(missing)} trainable tensors of method {self.hparams.method!r} "
                f"(e.g. {sorted(missing)[0]!r}); load it with the method and sizes it was trained with."
            )

"""LightningModule: supervised fine-tuning of a Hugging Face causal LM with LoRA adapters.

The network is built in ``configure_model`` (so ``--print_config`` and CLI parsing load no
weights). Only the adapter factors train. Checkpoints hold the adapter state only
(``lora_A``, ``lora_B`` and the initial factors that rebuild the residual base weights) plus
the optimiser state of those factors, so a 135M-parameter model writes megabytes; loading
one needs the same pre-trained model source.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from lightning_modules.adapters.initializers import get_initializer, initialize_adapters
from lightning_modules.adapters.lora import LoRALinear, initial_adapter_state, inject_lora, is_adapter_key, iter_lora_layers
from lightning_modules.causal_lm_evaluation import RetentionEvaluator
from lightning_modules.metrics.answers import answers_match, extract_final_answer
from lightning_modules.model_loading import load_causal_lm, load_tokenizer, parse_dtype, resolve_source
from lightning_modules.parallel import data_parallel_mesh, shard_modules


class CausalLMFineTuning(LightningModule):
    """Fine-tune a causal LM with LoRA-family adapters (LoRA, LoRA-Null v1/v2, PiSSA, MiLoRA, CorDA).

    Args:
        model_name_or_path: Model source: hub id, local folder, ``.gguf`` file or
            ``packaged:smollm2-135m-instruct``.
        dtype: Dtype of the frozen model: ``float32``, ``bfloat16`` or ``float16``.
        target_modules: Linear layers to adapt, by name (``q_proj``) or full-name regular expression.
        rank: Adapter rank r.
        alpha: Adapter scale numerator; the scale is ``alpha / rank``. ``None`` means scale 1.
        dropout: Dropout on the adapter input while training.
        init: Adapter initialiser: ``lora``, ``lora_null_v1``, ``lora_null_v2``, ``pissa``,
            ``milora`` or ``corda_kpm``. LoRA-Null and CorDA need the
            :class:`~callbacks.null_space_calibration.NullSpaceCalibration` callback.
        init_seed: Seed of random adapter factors (plain LoRA).
        learning_rate: AdamW learning rate of the default optimiser.
        weight_decay: AdamW weight decay of the default optimiser.
        warmup_ratio: Fraction of training steps with linear warm-up before cosine decay.
        max_new_tokens: Tokens generated per task prompt in ``test`` and ``predict``.
        evaluate_base: In ``test``, also evaluate the base model (the adapters at their initial
            factors) and log ``test/base/…`` and ``test/relative/…``.
        results_file: Name of the JSON file with the test metrics, written to the trainer's log
            directory after ``test``.
        trust_remote_code: Allow model code from the model source to run. Off by default.
    """

    def __init__(
        self,
        model_name_or_path: str = "packaged:smollm2-135m-instruct",
        dtype: str = "float32",
        target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        rank: int = 8,
        alpha: float | None = None,
        dropout: float = 0.0,
        init: str = "lora_null_v1",
        init_seed: int = 0,
        learning_rate: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        max_new_tokens: int = 96,
        evaluate_base: bool = True,
        results_file: str = "test_results.json",
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        get_initializer(init)  # reject an unknown initialiser at configuration time
        parse_dtype(dtype)
        self.save_hyperparameters()
        self.model = None
        self.tokenizer = None
        self.adapters: dict[str, LoRALinear] = {}
        # Checkpoints hold adapter tensors only; the pre-trained weights come from the model source.
        self.strict_loading = False
        self.val_loss = MeanMetric()
        self.evaluator = RetentionEvaluator()

    def configure_model(self) -> None:
        """Load the model, inject the adapters and, under ``ModelParallelStrategy``, shard it.

        Without a device mesh every process loads the whole model. With one (FSDP2 through
        ``ModelParallelStrategy``, whose ``tensor_parallel_size`` must be 1):

        1. Rank 0 loads the pre-trained weights into CPU memory with ``from_pretrained``. The
           other ranks build the same architecture from its config with parameters on the meta
           device (``accelerate.init_empty_weights``), so they allocate no weights.
        2. Every rank injects the adapters and applies ``fully_shard`` to each decoder layer
           (the classes in the model's ``_no_split_modules``) and then to the whole model.
        3. ``set_model_state_dict(..., broadcast_from_rank0=True)`` sends rank 0's weights one
           tensor at a time; each rank keeps its own rows. Rank 0 then frees its whole copy.
        4. Initialisers that need no calibration (``lora``, ``pissa``, ``milora``) run now on
           the sharded weights, gathering one layer at a time.

        NOTE: rank 0 still keeps the whole model in CPU memory once, during loading, so a model
        larger than one machine's CPU memory cannot be loaded. ``FSDPStrategy`` (FSDP1) sets no
        device mesh and takes the first path: every rank loads the whole model before Lightning
        wraps it.
        """
        if self.model is not None:
            return
        hp = self.hparams
        self.tokenizer = load_tokenizer(hp.model_name_or_path, trust_remote_code=hp.trust_remote_code)
        initializer = get_initializer(hp.init)
        mesh = data_parallel_mesh(self.device_mesh) if self.device_mesh is not None else None
        if mesh is None:
            model = load_causal_lm(hp.model_name_or_path, parse_dtype(hp.dtype), trust_remote_code=hp.trust_remote_code)
        else:
            model = self._load_on_rank_zero()
        self.adapters = inject_lora(model, hp.target_modules, hp.rank, alpha=hp.alpha if hp.alpha is not None else hp.rank, dropout=hp.dropout)
        model.train()  # from_pretrained returns eval mode; Lightning switches modes per stage
        for adapter in self.adapters.values():
            # Before initialisation the adapters have zero factors: the model equals the base model.
            adapter.set_freeze_A(initializer.freeze_A)
        if mesh is not None:
            self._shard_and_broadcast(model, mesh)
        self.model = model
        if not initializer.needs_covariance:
            initialize_adapters(self.adapters, hp.init, seed=hp.init_seed)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        sharding = f", sharded over {mesh.size()} processes" if mesh is not None else ""
        rank_zero_info(
            f"{hp.init} adapters on {len(self.adapters)} layers: {trainable:,} trainable of {total:,} parameters "
            f"({100 * trainable / total:.3f} %){sharding}."
        )

    def _load_on_rank_zero(self) -> torch.nn.Module:
        """Load the pre-trained model on global rank 0; build it with meta-device parameters elsewhere."""
        hp = self.hparams
        dtype = parse_dtype(hp.dtype)
        if torch.distributed.get_rank() == 0:
            return load_causal_lm(hp.model_name_or_path, dtype, trust_remote_code=hp.trust_remote_code)
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        source = resolve_source(hp.model_name_or_path)
        config = AutoConfig.from_pretrained(source, trust_remote_code=hp.trust_remote_code)
        # Buffers stay real: non-persistent ones (rotary frequencies) are not in the state dict.
        with init_empty_weights(include_buffers=False):
            return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=hp.trust_remote_code)

    @staticmethod
    def _shard_and_broadcast(model: torch.nn.Module, mesh) -> None:
        """Shard ``model`` with FSDP2 and fill every rank's shards from rank 0's weights."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        layer_classes = set(getattr(model, "_no_split_modules", None) or [])
        layers = [module for module in model.modules() if type(module).__name__ in layer_classes]
        if not layers:
            raise ValueError(
                f"{type(model).__name__} names no decoder layer classes in _no_split_modules, so FSDP2 has no "
                f"blocks to shard; use the ddp or fsdp trainer configs for this model."
            )
        full_state = model.state_dict() if torch.distributed.get_rank() == 0 else {}
        shard_modules(model, layers, mesh)
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True)
        set_model_state_dict(model, full_state, options=options)
        del full_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    @staticmethod
    def response_token_count(labels: torch.Tensor) -> torch.Tensor:
        return (labels[:, 1:] != -100).sum()  # the loss is over shifted labels

    def on_fit_start(self) -> None:
        uninitialized = [name for name, adapter in self.adapters.items() if not adapter.is_initialized]
        if uninitialized:
            raise RuntimeError(
                f"init={self.hparams.init!r} needs calibration, but {len(uninitialized)} adapters are not "
                f"initialised (e.g. {uninitialized[0]!r}). Add callbacks.null_space_calibration.NullSpaceCalibration "
                f"to trainer.callbacks, or use init='lora'."
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}; lower the learning rate, use "
                f"float32 or bfloat16 instead of float16, or check the batch for empty responses."
            )
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", torch.exp(loss.detach()))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss = self(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
        self.val_loss.update(loss, weight=self.response_token_count(batch["labels"]))

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()  # MeanMetric syncs across ranks
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(loss))
        self.val_loss.reset()

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], max_new_tokens: int | None = None) -> list[str]:
        """Greedy generation from the left-padded prompts of a batch; returns the new text only."""
        prompt_ids = batch["prompt_input_ids"]
        output = self.model.generate(
            input_ids=prompt_ids,
            attention_mask=batch["prompt_attention_mask"],
            max_new_tokens=max_new_tokens or self.hparams.max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(output[:, prompt_ids.shape[1]:], skip_special_tokens=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluator.step(self.model, batch, self.generate, "tuned", self.hparams.max_new_tokens)
        if self.hparams.evaluate_base:
            with initial_adapter_state(self.model):
                self.evaluator.step(self.model, batch, self.generate, "base", self.hparams.max_new_tokens)

    def on_test_epoch_end(self) -> None:
        for name, value in self.evaluator.compute().items():
            self.log(f"test/{name}", value)  # already reduced across ranks by the metrics

    def on_test_end(self) -> None:
        log_dir = self.trainer.log_dir
        if not self.trainer.is_global_zero or log_dir is None:
            return
        results = {key: float(value) for key, value in self.trainer.callback_metrics.items() if key.startswith("test/")}
        results["init"] = self.hparams.init
        results["model"] = self.hparams.model_name_or_path
        path = Path(log_dir) / self.hparams.results_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        rank_zero_info(f"Test results written to {path}")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        generations = self.generate(batch)
        return [
            {
                "generation": text,
                "answer": extract_final_answer(text),
                "reference_answer": extract_final_answer(reference),
                "exact_match": answers_match(text, reference),
            }
            for text, reference in zip(generations, batch["references"])
        ]

    def optimizer_parameter_groups(self) -> list[dict[str, Any]]:
        parameters = [p for p in self.parameters() if p.requires_grad]
        return [{"params": parameters}]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.optimizer_parameter_groups(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup_steps = int(self.hparams.warmup_ratio * total_steps)

        def warmup_then_cosine(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / (warmup_steps + 1)
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Keep only the adapter tensors; the frozen pre-trained weights come from the model source.
        checkpoint["state_dict"] = {key: value for key, value in checkpoint["state_dict"].items() if is_adapter_key(key)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.model is None:
            self.configure_model()
        if "state_dict" not in checkpoint:
            # ModelParallelStrategy loads the weights into the sharded model itself (not strictly)
            # and removes them from the checkpoint before this hook, so there is nothing to compare.
            return
        saved = {key for key in checkpoint.get("state_dict", {}) if is_adapter_key(key)}
        expected = {key for key in self.state_dict() if is_adapter_key(key)}
        if saved != expected:
            missing, unexpected = sorted(expected - saved), sorted(saved - expected)
            raise ValueError(
                f"the checkpoint's adapters do not match this model's: {len(missing)} missing "
                f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}). Use the "
                f"target_modules and model source of the run that wrote it."
            )

    def lora_layers(self) -> dict[str, LoRALinear]:
        return dict(iter_lora_layers(self.model)) if self.model is not None else {}

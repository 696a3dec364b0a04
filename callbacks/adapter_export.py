"""Callback that exports a run's adapters as a PEFT LoRA adapter and, optionally, a merged model."""

from __future__ import annotations

import copy
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.adapters.export import export_peft_adapter, merge_adapters
from lightning_modules.model_loading import PACKAGED_PREFIX, resolve_source


class AdapterExport(Callback):
    """Write ``<folder>/peft_adapter`` (and ``<folder>/merged``) at the end of ``fit`` or ``test``.

    The PEFT adapter applies to the unmodified base model (``PeftModel.from_pretrained``); see
    :mod:`lightning_modules.adapters.export` for its rank (r or 2r, by initialiser).

    Args:
        folder: Output folder; defaults to ``<trainer.log_dir>/export``.
        merged: Also save the base model with the adapters merged, in Hugging Face format
            (as large as the model).
        stages: Stages after which to export: ``fit``, ``test`` or both.
    """

    def __init__(self, folder: str | None = None, merged: bool = False, stages: list[str] = ["fit"]) -> None:
        unknown = set(stages) - {"fit", "test"}
        if unknown:
            raise ValueError(f"AdapterExport stages {sorted(unknown)} are invalid; use 'fit' and/or 'test'.")
        self.folder = folder
        self.merged = merged
        self.stages = list(stages)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "fit" in self.stages:
            self.export(trainer, pl_module)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "test" in self.stages:
            self.export(trainer, pl_module)

    def export(self, trainer: Trainer, pl_module: LightningModule) -> Path | None:
        if not trainer.is_global_zero:
            return None
        folder = Path(self.folder) if self.folder else Path(trainer.log_dir or trainer.default_root_dir) / "export"
        source = pl_module.hparams.get("model_name_or_path")
        if source is not None and (source.startswith(PACKAGED_PREFIX) or source.endswith(".gguf")):
            source = resolve_source(source)  # the converted folder, which PEFT can load by itself
        adapter_folder = export_peft_adapter(pl_module.model, folder / "peft_adapter", base_model_name_or_path=source)
        rank_zero_info(f"PEFT adapter for the unmodified base model written to {adapter_folder}")
        if self.merged:
            merged = merge_adapters(copy.deepcopy(pl_module.model))
            merged.save_pretrained(folder / "merged")
            if getattr(pl_module, "tokenizer", None) is not None:
                pl_module.tokenizer.save_pretrained(folder / "merged")
            rank_zero_info(f"Merged model written to {folder / 'merged'}")
        return folder

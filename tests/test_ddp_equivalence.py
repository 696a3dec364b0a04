"""Two DDP processes train like one process on the same global batches (LoRA-Null and FIAN).

Both runs draw the training rows through a ``DistributedSampler`` with the same seed, so the
one-process batch ``k`` is exactly the union of the two ranks' batches ``k``. DDP averages the
ranks' gradients, which equals the one-process gradient only when each rank's loss is a mean
over the same number of terms: the LoRA-Null rows all have responses of the same token count
(HF's causal-LM loss is a mean over each rank's response tokens), and FIAN's loss is a mean
over queries with equal queries per rank. What remains is float32 summation order in the
gradient all-reduce, and the runs use SGD so that it stays small. Tolerances: LoRA-Null
adapter products ``B A`` within 1e-7 absolute plus 1e-5 relative after 4 steps (seen: 1.2e-8),
FIAN parameters within 1e-5 absolute after 8 steps, FIAN validation metrics within 1e-4 relative.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, DistributedSampler

from callbacks.null_space_calibration import NullSpaceCalibration
from datamodules.calibration import CalibrationTextDataModule
from datamodules.grounding.datamodule import TemporalGroundingDataModule
from datamodules.grounding.feature_stores import RandomFeatures
from datamodules.instruction import InstructionDataModule
from lightning_modules.adapters.lora import adapter_state_dict
from lightning_modules.causal_lm import CausalLMFineTuning
from lightning_modules.temporal_grounding import TemporalGrounding
from synthetic_rows import write_grounding_queries, write_sum_rows
from tiny_causal_lm import save_tiny_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def global_batch_loader(loader: DataLoader, trainer: Trainer, global_batch_size: int) -> DataLoader:
    """Rebuild ``loader`` so that each step's batches over all ranks form one global batch of
    ``global_batch_size`` rows, drawn in the same seeded order whatever the world size."""
    world_size = trainer.world_size
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size, rank=trainer.global_rank, shuffle=True, seed=0, drop_last=True)
    return DataLoader(loader.dataset, batch_size=global_batch_size // world_size, sampler=sampler, collate_fn=loader.collate_fn)


class GlobalBatchInstructions(InstructionDataModule):
    def train_dataloader(self) -> DataLoader:
        return global_batch_loader(super().train_dataloader(), self.trainer, global_batch_size=4)


class GlobalBatchGrounding(TemporalGroundingDataModule):
    def train_dataloader(self) -> DataLoader:
        return global_batch_loader(super().train_dataloader(), self.trainer, global_batch_size=8)

    def val_dataloader(self) -> DataLoader:
        # use_distributed_sampler=False applies to validation too: split the queries by hand.
        loader = super().val_dataloader()
        sampler = DistributedSampler(loader.dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn)


class SGDFineTuning(CausalLMFineTuning):
    """LoRA-Null with plain SGD. AdamW divides each gradient entry by its running magnitude, so
    entries near zero move by about the learning rate in a direction that rounding decides; SGD
    keeps the float32 differences between the runs as small as the gradients' own."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.optimizer_parameter_groups(), lr=self.hparams.learning_rate)


class SGDGrounding(TemporalGrounding):
    """FIAN with plain SGD, for the reason given at :class:`SGDFineTuning`."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)


class SaveState(Callback):
    """Write rank 0's final tensors (adapters, or all parameters) to a file."""

    def __init__(self, path: Path, adapters_only: bool) -> None:
        self.path = path
        self.adapters_only = adapters_only

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        state = adapter_state_dict(pl_module.model) if self.adapters_only else pl_module.model.state_dict()
        save_file({key: value.detach().clone().contiguous() for key, value in state.items()}, str(self.path))


def run_trainer(root: Path, devices: int, callbacks: list, **options) -> Trainer:
    return Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_fork" if devices > 1 else "auto", logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
        use_distributed_sampler=False, default_root_dir=str(root), callbacks=callbacks, **options,
    )


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def equal_length_file(tmp_path_factory) -> Path:
    """Instruction rows whose responses all have the same token count (two-digit sums)."""
    return write_sum_rows(tmp_path_factory.mktemp("data") / "sums.jsonl", first_terms=range(10, 18))


def train_lora_null(root: Path, devices: int, model_folder: Path, train_file: Path) -> dict[str, torch.Tensor]:
    seed_everything(0)
    root.mkdir()
    module = SGDFineTuning(model_name_or_path=str(model_folder), target_modules=TARGETS, rank=4, init="lora_null_v1", learning_rate=0.5)
    data = GlobalBatchInstructions(data_path=str(train_file), tokenizer=str(model_folder), val_size=8, max_length=128, batch_size=4)
    calibration = NullSpaceCalibration(
        data=CalibrationTextDataModule("builtin:facts", num_samples=16, max_length=64, batch_size=4),
        accumulate_dtype="float64",  # the runs add the same terms in another order
        cache_dir=str(root / "cache"),  # one cache per run, so both runs calibrate
    )
    state_path = root / "adapters.safetensors"
    run_trainer(root, devices, [calibration, SaveState(state_path, adapters_only=True)], max_steps=4, limit_val_batches=0).fit(module, datamodule=data)
    return load_file(str(state_path))


def test_equal_length_rows_have_equal_token_counts(model_folder, equal_length_file):
    data = InstructionDataModule(data_path=str(equal_length_file), tokenizer=str(model_folder), val_size=8, batch_size=4)
    data.setup("fit")
    counts = {int(CausalLMFineTuning.response_token_count(data.collate([row])["labels"])) for row in data.train_rows}
    assert counts == {len("The answer is: 10") + 1}  # one token per character, plus EOS


@pytest.mark.slow
def test_lora_null_ddp_matches_one_process(tmp_path, model_folder, equal_length_file):
    single = train_lora_null(tmp_path / "one", 1, model_folder, equal_length_file)
    distributed = train_lora_null(tmp_path / "two", 2, model_folder, equal_length_file)
    assert single.keys() == distributed.keys()
    layers = sorted(key.removesuffix(".lora_A") for key in single if key.endswith(".lora_A"))
    assert len(layers) == 2 * len(TARGETS)
    for layer in layers:
        # Compare products, because an eigenvector's sign is arbitrary: (-B)(-A) = B A, and
        # AdamW keeps a flipped pair flipped.
        initial = [run[f"{layer}.init_B"] @ run[f"{layer}.init_A"] for run in (single, distributed)]
        trained = [run[f"{layer}.lora_B"] @ run[f"{layer}.lora_A"] for run in (single, distributed)]
        assert initial[0].abs().max() > 0
        torch.testing.assert_close(initial[1], initial[0], rtol=1e-6, atol=1e-8, msg=f"{layer}: initial B0 A0 differs")
        assert not torch.allclose(trained[0], initial[0], atol=1e-5), f"{layer}: training did not move the adapter"
        # Seen: at most 1.2e-8 apart for entries up to 7e-2 (float32, 4 SGD steps).
        torch.testing.assert_close(trained[1], trained[0], rtol=1e-5, atol=1e-7, msg=f"{layer}: trained B A differs")


def train_fian(root: Path, devices: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    seed_everything(0)
    root.mkdir()
    data = GlobalBatchGrounding(
        RandomFeatures(8, num_frames=12), 8, train_file=write_grounding_queries(root / "train.jsonl", 32),
        val_file=write_grounding_queries(root / "val.jsonl", 16), num_clips=10, batch_size=8, eval_batch_size=4,
    )
    torch.manual_seed(0)
    model = SGDGrounding(feature_dim=8, hidden_dim=16, num_iterations=2, dropout=0.0, learning_rate=0.5)  # dropout draws differ per rank
    state_path = root / "parameters.safetensors"
    trainer = run_trainer(root, devices, [SaveState(state_path, adapters_only=False)], max_epochs=2)
    trainer.fit(model, datamodule=data)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("val/")}
    return load_file(str(state_path)), metrics


@pytest.mark.slow
def test_fian_ddp_matches_one_process(tmp_path):
    single, single_metrics = train_fian(tmp_path / "one", 1)
    distributed, distributed_metrics = train_fian(tmp_path / "two", 2)
    assert single.keys() == distributed.keys()
    for name in single:
        difference = (distributed[name] - single[name]).abs().max().item()
        assert difference < 1e-5, f"{name} differs by {difference:.2e}"
    # 16 validation queries split 8 + 8 over the ranks: no padded duplicates, so the sums agree.
    assert single_metrics["val/count"] == 16
    assert distributed_metrics["val/count"] == 16
    assert single_metrics.keys() == distributed_metrics.keys()
    for name, value in single_metrics.items():
        assert distributed_metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name

"""FSDP2 through ModelParallelStrategy on 2 CPU processes (gloo): LoRA-Null and FIAN.

Lightning's ModelParallelStrategy launches its processes by re-running the command, which
inside pytest would run the whole test session twice. These tests use a subclass whose
processes are forked from the test process, as ``strategy="ddp_fork"`` does for DDP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM

from callbacks.null_space_calibration import NullSpaceCalibration
from datamodules.calibration import CalibrationTextDataModule
from datamodules.grounding.datamodule import TemporalGroundingDataModule
from datamodules.grounding.feature_stores import RandomFeatures
from datamodules.instruction import InstructionDataModule
from lightning_modules.adapters.lora import is_adapter_key
from lightning_modules.causal_lm import CausalLMFineTuning
from lightning_modules.parallel import gather_full
from lightning_modules.temporal_grounding import TemporalGrounding
from synthetic_rows import write_grounding_queries, write_sum_rows
from tiny_causal_lm import save_tiny_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ShardedForkLauncher(_MultiProcessingLauncher):
    """Fork launcher that returns metrics but not weights to the test process: the weights are
    DTensor shards, which the unsharded module there cannot load."""

    def _collect_rank_zero_results(self, trainer, results):
        output = super()._collect_rank_zero_results(trainer, results)
        if output is None or output.weights_path is None:
            return output
        Path(output.weights_path).unlink()
        return output._replace(weights_path=None)


class ForkedModelParallelStrategy(ModelParallelStrategy):
    """ModelParallelStrategy with processes forked from the current one (for tests)."""

    def _configure_launcher(self) -> None:
        self._launcher = ShardedForkLauncher(self, start_method="fork")


def fsdp2_trainer(root: Path, callbacks: list, **options) -> Trainer:
    defaults = dict(
        accelerator="cpu", devices=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=str(root), enable_checkpointing=False,
        strategy=ForkedModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, save_distributed_checkpoint=False),
    )
    return Trainer(callbacks=callbacks, **{**defaults, **options})


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama"), hidden_size=32, layers=2)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    return write_sum_rows(tmp_path_factory.mktemp("data") / "sums.jsonl")


PROBE = torch.tensor([[1, 40, 41, 42, 60, 61, 20, 21, 22, 23, 5, 6]])  # token ids of the tiny vocabulary


class RecordShardedRun(Callback):
    """Write each rank's view of the run to ``folder``: logits before training, gathered
    adapter tensors after it, and whether the adapted weights were sharded."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_start(self, trainer, pl_module) -> None:
        # The calibration callback ran in on_fit_start: the adapters hold their initial factors.
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            logits = pl_module(PROBE, torch.ones_like(PROBE)).logits
        pl_module.train(was_training)
        q_proj = pl_module.model.model.layers[0].self_attn.q_proj
        record = {
            "logits": logits.contiguous(),
            "sharded": torch.tensor(isinstance(q_proj.base.weight, DTensor)),
            # Gathered on every rank in the same order: collectives.
            "q_proj.residual": gather_full(q_proj.base.weight).detach().clone(),
            "q_proj.lora_A": gather_full(q_proj.lora_A).detach().clone(),
            "q_proj.lora_B": gather_full(q_proj.lora_B).detach().clone(),
            "q_proj.init_A": q_proj.init_A.clone(),
            "q_proj.init_B": q_proj.init_B.clone(),
        }
        save_file(record, str(self.folder / f"start_rank{trainer.global_rank}.safetensors"))

    def on_fit_end(self, trainer, pl_module) -> None:
        state = {}
        for key, value in pl_module.model.state_dict().items():
            if is_adapter_key(key):
                state[key] = gather_full(value).detach().clone().contiguous()  # a collective on every rank
        save_file(state, str(self.folder / f"end_rank{trainer.global_rank}.safetensors"))


@pytest.mark.slow
def test_lora_null_fsdp2_two_processes(tmp_path, model_folder, train_file):
    seed_everything(0)
    module = CausalLMFineTuning(
        model_name_or_path=str(model_folder), target_modules=TARGETS, rank=4, init="lora_null_v1",
        learning_rate=1e-2, warmup_ratio=0.0, max_new_tokens=8,
    )
    data = InstructionDataModule(data_path=str(train_file), tokenizer=str(model_folder), val_size=8, max_test_rows=4, max_length=128, batch_size=4)
    # 3 calibration batches for 2 processes: rank 1 runs one uncounted pass to keep FSDP2 in step.
    calibration = NullSpaceCalibration(
        data=CalibrationTextDataModule("builtin:facts", num_samples=12, max_length=64, batch_size=4),
        cache_dir=str(tmp_path / "cache"),
    )
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    trainer = fsdp2_trainer(
        tmp_path, [calibration, RecordShardedRun(tmp_path), checkpoints], max_steps=3, limit_val_batches=0,
        enable_checkpointing=True,
    )
    trainer.fit(module, datamodule=data)

    base = AutoModelForCausalLM.from_pretrained(str(model_folder), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = base(PROBE, attention_mask=torch.ones_like(PROBE)).logits
    starts = [load_file(str(tmp_path / f"start_rank{rank}.safetensors")) for rank in (0, 1)]
    for rank, start in enumerate(starts):
        assert bool(start["sharded"]), f"rank {rank}: the adapted weights were not DTensor shards"
        relative = (start["logits"] - expected).abs().max() / expected.abs().max()
        assert relative < 1e-4, f"rank {rank}: initial logits differ from the base model by {relative:.2e} (relative)"
        # The sharded factors and residual base hold the initialisation: W_res = W - B0 A0 (scale 1).
        assert start["q_proj.init_B"].abs().sum() > 0
        assert torch.equal(start["q_proj.lora_A"], start["q_proj.init_A"]), f"rank {rank}: lora_A is not A0"
        assert torch.equal(start["q_proj.lora_B"], start["q_proj.init_B"]), f"rank {rank}: lora_B is not B0"
        pretrained = base.model.layers[0].self_attn.q_proj.weight.detach()
        rebuilt = start["q_proj.residual"] + start["q_proj.init_B"] @ start["q_proj.init_A"]
        torch.testing.assert_close(rebuilt, pretrained, rtol=0, atol=1e-5)
        assert not torch.allclose(start["q_proj.residual"], pretrained, atol=1e-3), f"rank {rank}: no residual was applied"

    ends = [load_file(str(tmp_path / f"end_rank{rank}.safetensors")) for rank in (0, 1)]
    assert ends[0].keys() == ends[1].keys()
    assert len([key for key in ends[0] if key.endswith("lora_A")]) == 2 * len(TARGETS)
    for key in ends[0]:
        assert torch.equal(ends[0][key], ends[1][key]), f"{key} differs between ranks"
    q_proj = "model.layers.0.self_attn.q_proj."
    assert ends[0][q_proj + "init_A"].abs().sum() > 0, "calibration left the initial factors at zero"
    assert not torch.equal(ends[0][q_proj + "lora_B"], ends[0][q_proj + "init_B"]), "training did not move lora_B"

    # save_distributed_checkpoint=False, as in configs/trainer/fsdp2*.yaml: one file on rank 0.
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.is_file()
    state = torch.load(last, weights_only=True)["state_dict"]
    assert all(is_adapter_key(key) for key in state), [key for key in state if not is_adapter_key(key)][:3]
    assert len(state) == 5 * 2 * len(TARGETS)  # lora_A, lora_B, init_A, init_B, init_method_id
    key = "model." + q_proj + "lora_B"
    assert torch.equal(state[key], ends[0][q_proj + "lora_B"]), "the checkpoint does not contain the trained lora_B"


class RecordParameters(Callback):
    """Write each rank's gathered FIAN parameters before and after training to ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _save(self, trainer, pl_module, stage: str) -> None:
        state = {name: gather_full(parameter).detach().clone().contiguous() for name, parameter in pl_module.model.named_parameters()}
        state["sharded"] = torch.tensor(all(isinstance(parameter, DTensor) for parameter in pl_module.model.parameters()))
        save_file(state, str(self.folder / f"{stage}_rank{trainer.global_rank}.safetensors"))

    def on_train_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "start")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "end")


@pytest.mark.slow
@pytest.mark.parametrize("query_rnn", ["gru", "lstm"])
def test_fian_fsdp2_two_processes(tmp_path, query_rnn):
    seed_everything(0)
    data = TemporalGroundingDataModule(
        RandomFeatures(8, num_frames=12), 8, train_file=write_grounding_queries(tmp_path / "train.jsonl", 32),
        val_file=write_grounding_queries(tmp_path / "val.jsonl", 8), num_clips=10, batch_size=4, eval_batch_size=4,
    )
    model = TemporalGrounding(feature_dim=8, hidden_dim=16, num_iterations=2, query_rnn=query_rnn, video_rnn=True)
    trainer = fsdp2_trainer(tmp_path, [RecordParameters(tmp_path)], max_steps=4, limit_val_batches=1, val_check_interval=4)
    trainer.fit(model, datamodule=data)

    starts = [load_file(str(tmp_path / f"start_rank{rank}.safetensors")) for rank in (0, 1)]
    ends = [load_file(str(tmp_path / f"end_rank{rank}.safetensors")) for rank in (0, 1)]
    for rank, start in enumerate(starts):
        assert bool(start["sharded"]), f"rank {rank}: FIAN parameters were not DTensor shards"
    names = [name for name in ends[0] if name != "sharded"]
    assert any(name.startswith("query_encoder.rnn.") for name in names)
    for name in names:
        assert torch.equal(starts[0][name], starts[1][name]), f"{name} differs between ranks before training"
        assert torch.equal(ends[0][name], ends[1][name]), f"{name} differs between ranks after training"
    moved = [name for name in names if not torch.equal(starts[0][name], ends[0][name])]
    assert "heads.content.0.weight" in moved
    assert "query_encoder.rnn.weight_ih_l0" in moved
    assert 0.0 <= float(trainer.callback_metrics["val/r1_iou0.5"]) <= 1.0
    assert float(trainer.callback_metrics["val/count"]) == 8

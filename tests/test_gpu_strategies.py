"""FSDPStrategy (FSDP1) and DeepSpeed ZeRO-3 with LoRA-Null on one GPU.

Both strategies reject a CPU accelerator, so the training tests run only where CUDA is present.
The first test checks that rejection on any machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.null_space_calibration import NullSpaceCalibration
from datamodules.calibration import CalibrationTextDataModule
from datamodules.instruction import InstructionDataModule
from lightning_modules.adapters.lora import is_adapter_key
from lightning_modules.causal_lm import CausalLMFineTuning
from synthetic_rows import write_sum_rows
from tiny_causal_lm import save_tiny_model

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="FSDPStrategy and DeepSpeed need CUDA; they reject a CPU accelerator"
)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROBE = torch.tensor([[1, 40, 41, 42, 60, 61, 20, 21, 22, 23, 5, 6]])


def test_fsdp_rejects_cpu_accelerator():
    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        Trainer(accelerator="cpu", devices=1, strategy="fsdp")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without a GPU")
def test_gpu_check_exits_without_gpu(capsys):
    import importlib.util

    from tests.conftest import REPOSITORY

    spec = importlib.util.spec_from_file_location("gpu_check", REPOSITORY / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main([]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    return write_sum_rows(tmp_path_factory.mktemp("data") / "sums.jsonl")


class RecordStartLogits(Callback):
    """Store the logits of a fixed probe after calibration, before the first training step."""

    def __init__(self) -> None:
        self.logits: torch.Tensor | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.eval()
        with torch.no_grad():
            probe = PROBE.to(pl_module.device)
            self.logits = pl_module(probe, torch.ones_like(probe)).logits.float().cpu()
        pl_module.train()


def run_lora_null(tmp_path: Path, model_folder: Path, train_file: Path, strategy) -> tuple[RecordStartLogits, Path]:
    seed_everything(0)
    module = CausalLMFineTuning(model_name_or_path=str(model_folder), target_modules=TARGETS, rank=4, init="lora_null_v1", warmup_ratio=0.0)
    data = InstructionDataModule(data_path=str(train_file), tokenizer=str(model_folder), val_size=8, max_test_rows=4, max_length=128, batch_size=4)
    calibration = NullSpaceCalibration(
        data=CalibrationTextDataModule("builtin:facts", num_samples=8, max_length=64, batch_size=4), cache_dir=str(tmp_path / "cache")
    )
    recorder = RecordStartLogits()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    trainer = Trainer(
        accelerator="gpu", devices=1, strategy=strategy, precision="32-true", max_steps=3, limit_val_batches=0,
        logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path), callbacks=[calibration, recorder, checkpoints],
    )
    trainer.fit(module, datamodule=data)
    return recorder, tmp_path / "ckpt" / "last.ckpt"


def base_logits(model_folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return base(PROBE, attention_mask=torch.ones_like(PROBE)).logits


@requires_cuda
def test_fsdp1_lora_null_one_gpu(tmp_path, model_folder, train_file):
    from lightning.pytorch.strategies import FSDPStrategy

    recorder, last = run_lora_null(tmp_path, model_folder, train_file, FSDPStrategy(state_dict_type="full"))
    expected = base_logits(model_folder)
    relative = (recorder.logits - expected).abs().max() / expected.abs().max()
    assert relative < 1e-4, f"initial logits differ from the base model by {relative:.2e} (relative)"
    state = torch.load(last, weights_only=True, map_location="cpu")["state_dict"]
    assert state
    assert all(is_adapter_key(key) for key in state), [key for key in state if not is_adapter_key(key)][:3]


@requires_cuda
def test_deepspeed_zero3_lora_null_one_gpu(tmp_path, model_folder, train_file):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    recorder, last = run_lora_null(tmp_path, model_folder, train_file, DeepSpeedStrategy(stage=3, exclude_frozen_parameters=True))
    expected = base_logits(model_folder)
    relative = (recorder.logits - expected).abs().max() / expected.abs().max()
    assert relative < 1e-4, f"initial logits differ from the base model by {relative:.2e} (relative)"
    assert last.exists()

"""CausalLMFineTuning with LoRA-Null through Lightning: training, checkpoints, resume, DDP, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file, save_file

import cli
from callbacks.null_space_calibration import NullSpaceCalibration
from datamodules.calibration import CalibrationTextDataModule
from datamodules.instruction import InstructionDataModule
from lightning_modules.adapters.lora import adapter_state_dict, is_adapter_key
from lightning_modules.causal_lm import CausalLMFineTuning
from synthetic_rows import write_sum_rows
from tiny_causal_lm import save_tiny_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    return write_sum_rows(tmp_path_factory.mktemp("data") / "sums.jsonl")


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])


class CrashAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyError("simulated kill")


def make_parts(model_folder: Path, train_file: Path, cache_dir: Path, init: str = "lora_null_v1"):
    module = CausalLMFineTuning(
        model_name_or_path=str(model_folder), target_modules=TARGETS, rank=4, init=init,
        learning_rate=1e-2, warmup_ratio=0.0, max_new_tokens=8,
    )
    data = InstructionDataModule(
        data_path=str(train_file), tokenizer=str(model_folder), val_size=8, max_test_rows=4,
        max_length=128, batch_size=4,
    )
    calibration = NullSpaceCalibration(
        data=CalibrationTextDataModule("builtin:facts", num_samples=8, max_length=64, batch_size=4),
        cache_dir=str(cache_dir),
    )
    return module, data, calibration


def make_trainer(tmp_path: Path, callbacks: list, **kwargs) -> Trainer:
    options = dict(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(tmp_path),
    )
    options.update(kwargs)
    return Trainer(callbacks=callbacks, **options)


@pytest.mark.parametrize(("init", "a_frozen"), [("lora_null_v2", True), ("lora_null_v1", False)])
def test_training_moves_only_allowed_factors(tmp_path, model_folder, train_file, init, a_frozen):
    seed_everything(0)
    module, data, calibration = make_parts(model_folder, train_file, tmp_path / "cache", init)
    snapshot = {}

    class Snapshot(Callback):
        def on_train_start(self, trainer, pl_module):
            snapshot.update({k: v.clone() for k, v in pl_module.state_dict().items()})

    trainer = make_trainer(tmp_path, [calibration, Snapshot()], max_steps=4, enable_checkpointing=False)
    trainer.fit(module, datamodule=data)
    after = module.state_dict()
    a_keys = [key for key in after if key.endswith("lora_A")]
    b_keys = [key for key in after if key.endswith("lora_B")]
    frozen_keys = [key for key in after if key.endswith("base.weight") or "embed_tokens" in key]
    assert a_keys
    assert b_keys
    assert frozen_keys
    assert all(not torch.equal(after[key], snapshot[key]) for key in b_keys)
    if a_frozen:
        assert all(torch.equal(after[key], snapshot[key]) for key in a_keys)
    else:
        assert all(not torch.equal(after[key], snapshot[key]) for key in a_keys)
    assert all(torch.equal(after[key], snapshot[key]) for key in frozen_keys)
    # The optimiser contains exactly the trainable factors.
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert optimised == trainable
    assert len(trainable) == (len(b_keys) if a_frozen else len(a_keys) + len(b_keys))


def test_resume_continues_loss_curve(tmp_path, model_folder, train_file):
    # 32 training rows, batch 4: 8 steps per epoch; 3 epochs uninterrupted.
    seed_everything(0)
    module, data, calibration = make_parts(model_folder, train_file, tmp_path / "cache")
    full = LossRecorder()
    make_trainer(tmp_path / "full", [calibration, full], max_epochs=3, enable_checkpointing=False).fit(module, datamodule=data)

    seed_everything(0)
    module, data, calibration = make_parts(model_folder, train_file, tmp_path / "cache")
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    first = LossRecorder()
    with pytest.raises(KeyError, match="simulated kill"):
        make_trainer(tmp_path / "crash", [calibration, checkpoints, first, CrashAtStep(12)], max_epochs=3).fit(module, datamodule=data)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.is_file()
    state = torch.load(last, weights_only=True)["state_dict"]
    assert state and all(is_adapter_key(key) for key in state), "checkpoint holds non-adapter tensors"
    assert state["model.model.layers.0.self_attn.q_proj.init_method_id"].item() != 0

    seed_everything(123)  # the resumed run must not depend on the process seed
    module, data, calibration = make_parts(model_folder, train_file, tmp_path / "cache_unused")
    resumed = LossRecorder()
    make_trainer(tmp_path / "resume", [calibration, resumed], max_epochs=3, enable_checkpointing=False).fit(
        module, datamodule=data, ckpt_path=str(last)
    )
    assert not (tmp_path / "cache_unused").exists(), "a resumed run recalibrated instead of restoring its adapters"
    assert sorted(resumed.losses) == list(range(9, 25))
    for step, loss in resumed.losses.items():
        # Same data order, same adapters, same optimiser state: the same float32 arithmetic.
        assert loss == pytest.approx(full.losses[step], abs=1e-6), f"step {step}: {loss} vs {full.losses[step]}"


def test_calibration_cache_is_reused(tmp_path, model_folder, train_file):
    seed_everything(0)
    cache = tmp_path / "cache"
    module, data, calibration = make_parts(model_folder, train_file, cache)
    make_trainer(tmp_path, [calibration], max_steps=1, enable_checkpointing=False).fit(module, datamodule=data)
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    first_state = adapter_state_dict(module.model)

    module, data, calibration = make_parts(model_folder, train_file, cache)
    make_trainer(tmp_path, [calibration], max_steps=0, enable_checkpointing=False).fit(module, datamodule=data)
    assert calibration.last_token_count is None, "the second run recalibrated instead of using the cache"
    second_state = adapter_state_dict(module.model)
    name = "model.layers.1.mlp.down_proj.init_A"
    assert torch.equal(first_state[name], second_state[name])


class SaveAdapters(Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        state = {key: value.contiguous() for key, value in adapter_state_dict(pl_module.model).items()}
        save_file(state, str(self.folder / f"rank{trainer.global_rank}.safetensors"))


@pytest.mark.slow
def test_ddp_ranks_build_identical_adapters(tmp_path, model_folder, train_file):
    seed_everything(0)
    module, data, calibration = make_parts(model_folder, train_file, tmp_path / "cache")
    trainer = make_trainer(
        tmp_path, [calibration, SaveAdapters(tmp_path)], max_steps=2, devices=2, strategy="ddp_fork",
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=data)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between ranks"
    assert any(key.endswith("init_A") and rank0[key].abs().sum() > 0 for key in rank0)


def test_missing_calibration_callback_is_reported(tmp_path, model_folder, train_file):
    module, data, _ = make_parts(model_folder, train_file, tmp_path / "cache")
    trainer = make_trainer(tmp_path, [], max_steps=1, enable_checkpointing=False)
    with pytest.raises(RuntimeError, match="needs calibration.*NullSpaceCalibration"):
        trainer.fit(module, datamodule=data)


def write_config(tmp_path: Path, model_folder: Path, train_file: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": 3, "limit_val_batches": 1, "val_check_interval": 3,
            "enable_progress_bar": False, "default_root_dir": str(tmp_path / "runs"),
            "callbacks": [{
                "class_path": "callbacks.null_space_calibration.NullSpaceCalibration",
                "init_args": {
                    "cache_dir": str(tmp_path / "cache"),
                    "data": {"class_path": "datamodules.calibration.CalibrationTextDataModule",
                             "init_args": {"data_path": "builtin:facts", "num_samples": 8, "max_length": 64}},
                },
            }],
        },
        "model": {"class_path": "lightning_modules.causal_lm.CausalLMFineTuning",
                  "init_args": {"model_name_or_path": str(model_folder), "rank": 4, "init": "lora_null_v2",
                                "max_new_tokens": 6}},
        "data": {"class_path": "datamodules.instruction.InstructionDataModule",
                 "init_args": {"data_path": str(train_file), "val_size": 8, "max_test_rows": 4, "batch_size": 4,
                               "max_length": 128}},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_cli_fit_links_tokenizer_and_uses_cli_optimizer(tmp_path, model_folder, train_file):
    config = write_config(tmp_path, model_folder, train_file)
    run = cli.build_cli(["fit", "--config", str(config), "--optimizer", "SGD", "--optimizer.lr", "0.05"])
    assert run.datamodule.tokenizer_source == str(model_folder)
    optimizer = run.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.05
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in run.model.parameters() if p.requires_grad}
    saved = list((tmp_path / "runs").rglob("config.yaml"))
    assert saved, "the run did not save its config"
    assert "lora_null_v2" in saved[0].read_text()

    checkpoint = run.trainer.checkpoint_callback.last_model_path or run.trainer.checkpoint_callback.best_model_path
    tested = cli.build_cli(["test", "--config", str(config), "--ckpt_path", checkpoint])
    metrics = tested.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/exact_match"]) <= 1.0
    assert float(metrics["test/ppl"]) == pytest.approx(float(torch.exp(metrics["test/loss"])), rel=1e-5)

    # A command-line model value wins over the checkpoint's, and the difference is named.
    with pytest.warns(UserWarning, match=r"max_new_tokens: 6 in the checkpoint, 3 in this run"):
        retested = cli.build_cli(["test", "--config", str(config), "--ckpt_path", checkpoint,
                                  "--model.init_args.max_new_tokens", "3"])
    assert retested.model.hparams.max_new_tokens == 3


def test_cli_rejects_unknown_config_key(tmp_path, model_folder, train_file):
    config = write_config(tmp_path, model_folder, train_file)
    with pytest.raises(SystemExit):
        cli.main(["fit", "--config", str(config), "--model.init_args.rnak", "4"])


def test_checkpoint_with_other_targets_is_rejected(tmp_path, model_folder, train_file):
    seed_everything(0)
    module, data, calibration = make_parts(model_folder, train_file, tmp_path / "cache")
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    make_trainer(tmp_path, [calibration, checkpoints], max_steps=1).fit(module, datamodule=data)
    other = CausalLMFineTuning(model_name_or_path=str(model_folder), target_modules=["q_proj"], rank=4)
    with pytest.raises(ValueError, match=r"adapters do not match.*missing.*unexpected.*target_modules"):
        make_trainer(tmp_path, []).test(other, datamodule=data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))


@pytest.mark.slow
def test_ddp_checkpoint_tests_alike_in_one_process(tmp_path, model_folder, train_file):
    seed_everything(0)
    module, data, calibration = make_parts(model_folder, train_file, tmp_path / "cache")
    module.hparams.evaluate_base = False
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    make_trainer(tmp_path, [calibration, checkpoints], max_steps=3, devices=2, strategy="ddp_fork").fit(module, datamodule=data)
    last = str(tmp_path / "ckpt" / "last.ckpt")

    results = {}
    for devices, strategy in ((2, "ddp_fork"), (1, "auto")):
        seed_everything(0)
        module, data, _ = make_parts(model_folder, train_file, tmp_path / "cache")
        module.hparams.evaluate_base = False
        trainer = make_trainer(tmp_path, [], devices=devices, strategy=strategy)
        trainer.test(module, datamodule=data, ckpt_path=last)
        results[devices] = {key: float(value) for key, value in trainer.callback_metrics.items()}
    assert set(results[1]) == set(results[2])
    assert "test/loss" in results[1]
    for key, value in results[1].items():
        # 4 test rows split 2 + 2 over the ranks: no padding, so the sums are equal.
        assert results[2][key] == pytest.approx(value, rel=1e-5), key

"""The prompt tuning LightningModule on tiny backbones, its configs and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

import cli
from datamodules.glue import GlueDataModule
from lightning_modules.prompt_backbones import load_backbone_tokenizer
from lightning_modules.prompt_tuning import PromptTuning

REPOSITORY = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPOSITORY / "configs" / "adept").glob("*.yaml"))
TOKENIZER = "packaged:all-minilm-l6-v2"


@pytest.fixture(scope="module")
def tokenizer():
    return load_backbone_tokenizer(TOKENIZER)


def tiny_t5(tokenizer, d_model: int = 32) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
        num_heads=2, decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(config)


def module_with(backbone, tokenizer, **kwargs) -> PromptTuning:
    module = PromptTuning(model_name_or_path=TOKENIZER, task=kwargs.pop("task", "sst2"), **kwargs)
    module.tokenizer = tokenizer
    module.build_network(backbone)
    return module


@pytest.mark.parametrize(
    "method, prompt_length, expected",
    [("pt", None, 76_800), ("dept", None, 76_800), ("adept", None, 76_051)],
)
def test_parameter_count_matches_formula_at_width_768(tokenizer, method, prompt_length, expected):
    torch.manual_seed(0)
    config = T5Config(vocab_size=128, d_model=768, d_kv=8, d_ff=16, num_layers=1, num_decoder_layers=1, num_heads=1)
    module = module_with(T5ForConditionalGeneration(config), tokenizer, method=method, max_length=256)
    assert module.trainable_parameter_count() == expected
    assert module.prompt_parameter_count() == module.expected_prompt_parameter_count()
    assert module.offset_rank == {"pt": None, "dept": 30, "adept": 19}[method]


def test_parameter_groups_have_own_learning_rates(tokenizer):
    module = module_with(tiny_t5(tokenizer), tokenizer, method="adept", prompt_learning_rate=0.3, offset_learning_rate=1e-4)
    groups = module.optimizer_parameter_groups()
    assert [(group["name"], group["lr"]) for group in groups] == [("prompt", 0.3), ("offset", 1e-4)]
    assert sum(p.numel() for group in groups for p in group["params"]) == module.trainable_parameter_count()
    pt_groups = module_with(tiny_t5(tokenizer), tokenizer, method="pt").optimizer_parameter_groups()
    assert [group["name"] for group in pt_groups] == ["prompt"]


def test_fit_trains_prompt_only_and_checkpoints_it(tokenizer, tmp_path):
    backbone = tiny_t5(tokenizer)
    embedding_before = backbone.get_input_embeddings().weight.detach().clone()
    module = module_with(backbone, tokenizer, method="adept", prompt_length=4, max_length=32, warmup_steps=1, max_new_tokens=2)
    prompt_before = module.network.soft_prompt.embeddings.detach().clone()
    datamodule = GlueDataModule(
        task="sst2", tokenizer=TOKENIZER, train_path="builtin:polarity", validation_path="builtin:polarity_validation",
        large_val_size=100, max_train_rows=16, max_eval_rows=8, max_length=32, batch_size=4,
    )
    trainer = Trainer(
        max_steps=3, val_check_interval=3, check_val_every_n_epoch=None, limit_val_batches=1, limit_test_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
    )
    trainer.fit(module, datamodule=datamodule)
    torch.testing.assert_close(backbone.get_input_embeddings().weight, embedding_before, rtol=0, atol=0)
    assert not torch.equal(module.network.soft_prompt.embeddings, prompt_before)
    assert module.network.offset.down.weight.abs().sum() > 0
    assert 0.0 <= float(trainer.callback_metrics["val/accuracy"]) <= 1.0
    trainer.test(module, datamodule=datamodule)
    assert "test/accuracy" in trainer.callback_metrics
    path = tmp_path / "prompt.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert set(state) == {
        "network.soft_prompt.embeddings", "network.offset.up.weight", "network.offset.up.bias",
        "network.offset.down.weight", "network.offset.down.bias",
    }


def test_decoder_only_backbone_trains_and_generates(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )
    module = module_with(LlamaForCausalLM(config), tokenizer, method="dept", prompt_length=4, rank=2, max_length=32, max_new_tokens=2)
    datamodule = GlueDataModule(task="sst2", tokenizer=TOKENIZER, max_length=24)
    datamodule.tokenizer = tokenizer
    batch = datamodule.collate([{"source": "sst2 sentence: fine .", "target": "1", "label": 1}, {"source": "sst2 sentence: a very dull film .", "target": "0", "label": 0}])
    loss = module(batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert module.network.soft_prompt.embeddings.grad is not None
    assert len(module.generate_text(batch)) == 2
    assert module.predict_labels(batch).tolist()[0] in (0, 1)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="unknown prompt method 'lora'"):
        PromptTuning(method="lora")
    with pytest.raises(ValueError, match="unknown GLUE/SuperGLUE task 'glue'"):
        PromptTuning(task="glue")
    with pytest.raises(ValueError, match="float16"):
        PromptTuning(dtype="float16")
    with pytest.raises(ValueError, match="prompt_init_text"):
        PromptTuning(prompt_init="text")


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_prints(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args=["fit", "--config", str(config), "--model.init_args.method", "dept", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "method: dept" in printed
    assert "lightning_modules.prompt_tuning.PromptTuning" in printed


def test_cli_fit_then_test_on_demo(tmp_path):
    limits = [
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.max_train_rows=8", "--data.init_args.max_eval_rows=8", "--data.init_args.batch_size=4",
        "--data.init_args.eval_batch_size=8", "--model.init_args.method=pt",
    ]
    config = str(REPOSITORY / "configs" / "adept" / "demo.yaml")
    cli.main(args=["fit", "--config", config, *limits])
    (checkpoint,) = tmp_path.glob("lightning_logs/version_0/checkpoints/last.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["hyper_parameters"]["method"] == "pt"
    assert set(saved["state_dict"]) == {"network.soft_prompt.embeddings", "network.backbone.classifier.weight", "network.backbone.classifier.bias"}
    assert saved["state_dict"]["network.soft_prompt.embeddings"].shape == (100, 384)  # pt spends the budget on 100 tokens
    cli.main(args=["test", "--config", config, *limits, f"--ckpt_path={checkpoint}"])
    metrics = (tmp_path / "lightning_logs" / "version_1" / "metrics.csv").read_text().splitlines()
    header, values = metrics[0].split(","), metrics[-1].split(",")
    accuracy = float(values[header.index("test/accuracy")])
    assert 0.0 <= accuracy <= 1.0

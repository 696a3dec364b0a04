"""PEFT adapter export and merging: exact for every initialiser, on odd model shapes too."""

from __future__ import annotations

import json

import pytest
import torch

from callbacks.null_space_calibration import accumulate_second_moments, bases_from_moments, covariances_from_moments
from lightning_modules.adapters.export import export_peft_adapter, merge_adapters
from lightning_modules.adapters.initializers import get_initializer, initialize_adapters
from lightning_modules.adapters.lora import inject_lora
from tiny_causal_lm import build_model

peft = pytest.importorskip("peft", reason="peft is in the bench and dev extras")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_qwen2(seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True)
    return Qwen2ForCausalLM(config).eval()


def trained_model(build, method: str, dtype: torch.dtype = torch.float32, alpha: float = 8):
    """Build, initialise and perturb the factors as training would."""
    model = build().to(dtype)
    adapters = inject_lora(model, TARGETS, rank=4, alpha=alpha)
    generator = torch.Generator().manual_seed(2)
    batches = [{"input_ids": torch.randint(0, 100, (4, 40), generator=generator),
                "attention_mask": torch.ones(4, 40, dtype=torch.long)} for _ in range(3)]
    kind = get_initializer(method).calibration
    calibration = None
    if kind is not None:
        accumulator = accumulate_second_moments(model, adapters, batches, torch.device("cpu"), progress=False)
        calibration = bases_from_moments(accumulator, adapters) if kind == "basis" else covariances_from_moments(accumulator, adapters)
    initialize_adapters(adapters, method, bases=calibration)
    with torch.no_grad():
        for adapter in adapters.values():
            adapter.lora_B.add_(0.05 * torch.randn(adapter.lora_B.shape, generator=generator))
            if not adapter.freeze_A:
                adapter.lora_A.add_(0.05 * torch.randn(adapter.lora_A.shape, generator=generator))
    return model, batches[0]["input_ids"]


def peft_logits(build, folder, input_ids, dtype=torch.float32):
    base = build().to(dtype)
    peft_model = peft.PeftModel.from_pretrained(base, str(folder))
    with torch.no_grad():
        return peft_model(input_ids).logits.float()


def relative_error(actual, expected) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize(("method", "rank"), [
    ("lora_null_v1", 8), ("lora_null_v2", 4), ("pissa", 8), ("lora", 4), ("corda_kpm", 8), ("milora", 8),
])
def test_peft_export_matches_trained_model(tmp_path, method, rank):
    build = lambda: build_model(vocab_size=100, hidden_size=32, layers=2)  # noqa: E731
    model, input_ids = trained_model(build, method)
    with torch.no_grad():
        ours = model(input_ids).logits
    folder = export_peft_adapter(model, tmp_path / "adapter", base_model_name_or_path="tiny")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == rank
    assert config["lora_alpha"] / config["r"] == 2.0
    error = relative_error(peft_logits(build, folder, input_ids), ours)
    assert error < 1e-4, f"{method}: PEFT logits differ by {error:.2e} relative"


def test_export_of_biased_tied_qwen2(tmp_path):
    model, input_ids = trained_model(tiny_qwen2, "lora_null_v1")
    assert model.model.layers[0].self_attn.q_proj.base.bias is not None
    with torch.no_grad():
        ours = model(input_ids).logits
    folder = export_peft_adapter(model, tmp_path / "adapter")
    assert relative_error(peft_logits(tiny_qwen2, folder, input_ids), ours) < 1e-4


def test_export_of_bfloat16_run(tmp_path):
    build = lambda: build_model(vocab_size=100, hidden_size=32, layers=2)  # noqa: E731
    model, input_ids = trained_model(build, "lora_null_v2", dtype=torch.bfloat16)
    with torch.no_grad():
        ours = model(input_ids).logits.float()
    folder = export_peft_adapter(model, tmp_path / "adapter")
    # Both sides round the frozen weights to bfloat16 differently (W_res against W), so the
    # agreement is at bfloat16 precision, not float32.
    assert relative_error(peft_logits(build, folder, input_ids, torch.bfloat16), ours) < 3e-2


def test_tied_lm_head_is_rejected():
    model = build_model(vocab_size=100, hidden_size=32, layers=1, tie=True)
    with pytest.raises(ValueError, match=r"'lm_head' shares its weight with \['model.embed_tokens'\].*target_modules"):
        inject_lora(model, ["lm_head"], rank=2)


def test_merged_model_matches_and_saves(tmp_path):
    build = lambda: build_model(vocab_size=100, hidden_size=32, layers=2)  # noqa: E731
    model, input_ids = trained_model(build, "lora_null_v1")
    with torch.no_grad():
        ours = model(input_ids).logits
    merged = merge_adapters(model)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    merged.save_pretrained(tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        assert relative_error(reloaded(input_ids).logits, ours) < 1e-5


def test_export_callback_after_fit(tmp_path):
    from lightning.pytorch import Trainer, seed_everything
    from transformers import AutoModelForCausalLM

    from callbacks.adapter_export import AdapterExport
    from datamodules.instruction import InstructionDataModule
    from lightning_modules.causal_lm import CausalLMFineTuning
    from tiny_causal_lm import save_tiny_model

    seed_everything(0)
    folder = str(save_tiny_model(tmp_path / "tiny"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"instruction": f"{i}*2", "output": str(2 * i)}) for i in range(16)))
    module = CausalLMFineTuning(model_name_or_path=folder, target_modules=TARGETS, rank=4, init="pissa",
                                learning_rate=1e-2, warmup_ratio=0.0)
    data = InstructionDataModule(str(rows), tokenizer=folder, val_size=4, batch_size=4)
    trainer = Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                      limit_val_batches=0, default_root_dir=str(tmp_path), callbacks=[AdapterExport(merged=True)])
    trainer.fit(module, datamodule=data)
    input_ids = torch.randint(4, 90, (2, 12))
    with torch.no_grad():
        ours = module.model(input_ids).logits
    adapter = tmp_path / "export" / "peft_adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8  # PiSSA exports rank 2r
    base = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(base, str(adapter))(input_ids).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "merged")(input_ids).logits
    assert relative_error(theirs, ours) < 1e-4
    assert relative_error(merged, ours) < 1e-5

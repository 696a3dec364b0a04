"""The initialiser comparison runner on a tiny model: one row per method and the base model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tiny_causal_lm import save_tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import compare_initializers  # noqa: E402


def test_runner_tabulates_methods(tmp_path, monkeypatch):
    folder = str(save_tiny_model(tmp_path / "tiny"))
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"question": f"{i}+1", "answer": f"so\n#### {i + 1}"}) for i in range(24)))
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": [f"a{i}"]}) for i in range(8)))
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_steps": 2, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                    "enable_progress_bar": False, "logger": False, "enable_checkpointing": False},
        "model": {"class_path": "lightning_modules.causal_lm.CausalLMFineTuning",
                  "init_args": {"model_name_or_path": folder, "target_modules": ["q_proj", "v_proj"], "rank": 2,
                                "max_new_tokens": 4, "evaluate_base": False, "learning_rate": 0.05}},
        "data": {"class_path": "datamodules.instruction.InstructionDataModule",
                 "init_args": {"data_path": str(train), "field_map": "gsm8k", "val_size": 4, "max_test_rows": 4,
                               "batch_size": 4,
                               "knowledge_probes": {"class_path": "datamodules.knowledge_probes.KnowledgeProbes",
                                                    "init_args": {"qa_path": str(qa), "max_qa_rows": 4}}}},
    }
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    output = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["compare", "--config", str(config_path), "--methods", "lora", "pissa",
                                      "--output", str(output)])
    compare_initializers.main()
    results = json.loads((output / "results.json").read_text())
    assert list(results) == ["base", "lora", "pissa"]
    table = (output / "results.md").read_text().splitlines()
    assert len(table) == 2 + 3
    assert table[2].startswith("| base |")
    assert "+0.0000" in table[2]
    # Training moved the adapters, so the fine-tuned likelihood differs from the base model's.
    assert results["pissa"]["test/knowledge/qa_answer_loglik"] != results["base"]["test/knowledge/qa_answer_loglik"]
    assert (output / "task_vs_retention.png").stat().st_size > 1000
    assert "final_train_loss" in results["pissa"]
    assert "final_train_loss" not in results["base"]


def test_runner_keeps_finished_methods(tmp_path, monkeypatch):
    output = tmp_path / "out"
    output.mkdir()
    config = str(tmp_path / "absent.yaml")
    finished = {"seconds": 1.0, "test/exact_match": 0.5, "test/knowledge/qa_exact_match": 0.0,
                "test/knowledge/qa_answer_loglik": -2.0, "test/knowledge/cloze_accuracy": 0.5,
                "test/knowledge/heldout_ppl": 9.0, "test/loss": 1.5, "config": config}
    (output / "results.json").write_text(json.dumps({"base": finished, "lora": {**finished, "test/exact_match": 0.75}}))
    monkeypatch.setattr(sys, "argv", ["compare", "--config", config, "--methods", "lora", "--output", str(output)])
    compare_initializers.main()  # nothing left to run, so the absent config is never read
    table = (output / "results.md").read_text().splitlines()
    assert table[3].startswith("| lora | 0.7500 |")


def test_runner_rejects_unknown_method_before_running(tmp_path, monkeypatch):
    output = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["compare", "--config", str(tmp_path / "absent.yaml"), "--methods", "lora_nul",
                                      "--output", str(output)])
    with pytest.raises(ValueError, match="lora_nul"):
        compare_initializers.main()
    assert not (output / "results.json").exists()


def test_table_without_knowledge_columns():
    results = {"base": {"test/exact_match": 0.25, "test/loss": 1.5, "seconds": 3.0},
               "lora": {"test/exact_match": 0.5, "test/loss": 1.25, "seconds": 4.0, "final_train_loss": 1.0}}
    table = compare_initializers.markdown_table(results).splitlines()
    assert table[3] == "| lora | 0.5000 | 1.2500 | - | - | - | - | - | - | 1.000 | 4 |"

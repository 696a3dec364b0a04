"""Knowledge-retention evaluators: answer normalisation, likelihoods, probes and the test stage."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from datamodules.cloze_facts import cloze_facts
from datamodules.instruction import InstructionDataModule
from datamodules.knowledge_probes import KnowledgeProbes
from lightning_modules.causal_lm import CausalLMFineTuning
from lightning_modules.causal_lm_evaluation import answer_token_loglik
from lightning_modules.metrics.qa import cloze_correct, exact_match_any, first_line, normalize_answer
from tiny_causal_lm import save_tiny_model


def test_answer_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theodore") == "theodore"  # "the" only as a whole word


def test_exact_match_with_several_references():
    assert exact_match_any("the Beatles", ["Beatles", "The Quarrymen"])
    assert exact_match_any("quarrymen.", ["Beatles", "The Quarrymen"])
    assert not exact_match_any("Rolling Stones", ["Beatles", "The Quarrymen"])
    assert first_line("  Paris\nQuestion: next") == "Paris"


def test_cloze_prefix_match():
    assert cloze_correct(" Paris, which is also", "Paris")
    assert cloze_correct(" Leo Tolstoy in 1869.", "Leo Tolstoy")
    assert not cloze_correct(" Lyon.", "Paris")
    assert not cloze_correct(" Parisian", "Paris")


def test_answer_token_loglik_hand_computed():
    # Vocabulary of 2; uniform logits give log(1/2) per token, a peaked row gives log(e^2/(e^2+1)).
    logits = torch.zeros(2, 3, 2)
    logits[1, 1] = torch.tensor([2.0, 0.0])
    labels = torch.tensor([[-100, 1, 0], [-100, -100, 0]])
    values = answer_token_loglik(logits, labels)
    assert values[0].item() == pytest.approx(math.log(0.5))
    assert values[1].item() == pytest.approx(math.log(math.exp(2) / (math.exp(2) + 1)))


def test_cloze_probe_size_and_shape():
    facts = cloze_facts()
    assert len(facts) == 160
    assert {fact["category"] for fact in facts} == {"capital", "symbol", "author", "language", "currency", "science"}
    assert {"prompt": "The capital of France is", "answer": "Paris", "category": "capital"} in facts


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny_llama")))


def test_test_stage_reports_base_and_relative(tmp_path, model_folder):
    seed_everything(0)
    train = tmp_path / "sums.jsonl"
    train.write_text("\n".join(json.dumps({"instruction": f"{a}+1", "output": f"The answer is: {a + 1}"}) for a in range(20)))
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": [f"a{i}", "x"]}) for i in range(12)))
    probes = KnowledgeProbes(qa_path=str(qa), qa_skip_rows=2, max_qa_rows=6, cloze=True, batch_size=32)
    data = InstructionDataModule(str(train), tokenizer=model_folder, val_size=4, max_test_rows=4, batch_size=4,
                                 knowledge_probes=probes)
    module = CausalLMFineTuning(model_name_or_path=model_folder, target_modules=["q_proj", "v_proj"], rank=2,
                                init="lora", max_new_tokens=4)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=str(tmp_path))
    metrics = trainer.test(module, datamodule=data)[0]
    assert len(probes.qa_rows) == 6
    assert probes.qa_rows[0]["question"] == "q2"
    for name in ("exact_match", "ppl", "knowledge/qa_exact_match", "knowledge/qa_answer_loglik",
                 "knowledge/heldout_ppl", "knowledge/cloze_accuracy"):
        assert f"test/{name}" in metrics
        assert f"test/base/{name}" in metrics
    # Plain LoRA starts with B = 0, so the untrained model is the base model exactly.
    assert metrics["test/knowledge/qa_answer_loglik"] == metrics["test/base/knowledge/qa_answer_loglik"]
    assert metrics["test/relative/knowledge/qa_answer_loglik"] == 0.0
    assert metrics["test/relative/knowledge/heldout_ppl"] == 1.0
    assert metrics["test/knowledge/qa_answer_loglik"] < 0

    # Moving B changes the fine-tuned numbers and leaves the base numbers alone.
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("lora_B"):
                parameter.add_(0.5)
    moved = trainer.test(module, datamodule=data)[0]
    assert moved["test/knowledge/qa_answer_loglik"] != metrics["test/knowledge/qa_answer_loglik"]
    assert moved["test/base/knowledge/qa_answer_loglik"] == metrics["test/base/knowledge/qa_answer_loglik"]
    results = json.loads((tmp_path / "test_results.json").read_text())
    assert results["test/base/knowledge/qa_answer_loglik"] == pytest.approx(metrics["test/base/knowledge/qa_answer_loglik"])

"""Instruction and calibration data modules, data sources and answer extraction."""

from __future__ import annotations

import json
import re

import pytest

from conftest import SHARED_DATA, requires_shared_data
from datamodules.calibration import CalibrationTextDataModule
from datamodules.instruction import InstructionDataModule, gsm8k_to_metamath_style
from datamodules.sources import load_rows
from lightning_modules.metrics.answers import answers_match, extract_final_answer
from tiny_causal_lm import save_tiny_model


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny_llama")))


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def test_gsm8k_answer_rewritten_to_metamath_style():
    answer = "She sold 48/2 = <<48/2=24>>24 clips in May.\nIn total 48+24 = <<48+24=72>>72 clips.\n#### 1,072"
    assert gsm8k_to_metamath_style(answer) == (
        "She sold 48/2 = 24 clips in May.\nIn total 48+24 = 72 clips.\nThe answer is: 1072"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so she has 12 apples. The answer is: 1,200.", "1200"),
        ("First 3 + 4 = 7.\n#### 72", "72"),
        ("It costs 3 dollars and then 4.50 dollars", "4.5"),
        ("The answer is: -5", "-5"),
        ("no digits here", None),
        ("The answer is: 7. Later 9 more.", "7"),
    ],
)
def test_final_answer_extraction(text, expected):
    assert extract_final_answer(text) == expected


def test_answers_match_compares_final_numbers():
    assert answers_match("... The answer is: 18", "Janet makes 18 dollars.\nThe answer is: 18")
    assert not answers_match("... The answer is: 17", "The answer is: 18")
    assert not answers_match("I do not know", "The answer is: 18")


def test_prompt_tokens_are_masked(tmp_path, model_folder):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": f"add {i}", "output": f"{i + 1}"} for i in range(12)])
    data = InstructionDataModule(path, tokenizer=model_folder, val_size=2, batch_size=3, max_length=400)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    tokenizer = data.tokenizer
    for row in range(3):
        labels = batch["labels"][row]
        supervised = labels[labels != -100].tolist()
        text = tokenizer.decode(supervised[:-1])
        assert re.fullmatch(r"\d+", text), f"supervised tokens {text!r} are not the response"
        assert supervised[-1] == tokenizer.eos_token_id
        prompt_length = int(batch["prompt_attention_mask"][row].sum())
        assert (labels[:prompt_length] == -100).all()
        assert labels[prompt_length] != -100
    # Prompts for generation are left padded: masks end with ones.
    assert (batch["prompt_attention_mask"][:, -1] == 1).all()
    assert batch["references"][0].isdigit()


def test_overlong_prompt_is_cut_from_the_left(tmp_path, model_folder):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "x" * 300, "output": "done"}] * 4)
    data = InstructionDataModule(path, tokenizer=model_folder, val_size=1, batch_size=2, max_length=64)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[1] == 64
    assert (batch["labels"] != -100).sum(dim=1).min() >= 1, "every row keeps at least one response token"


def test_absent_mapped_column_is_named(tmp_path, model_folder):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"question": "q", "answer": "a"}] * 4)
    data = InstructionDataModule(path, tokenizer=model_folder, field_map="metamath", val_size=1)
    with pytest.raises(KeyError, match=r"'query'.*columns \['answer', 'question'\].*field_map"):
        data.setup("fit")


def test_missing_data_file_is_named(tmp_path, model_folder):
    missing = tmp_path / "nowhere" / "train.jsonl"
    data = InstructionDataModule(str(missing), tokenizer=model_folder)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        data.setup("fit")


def test_unknown_field_map_preset():
    with pytest.raises(ValueError, match=r"'dolly'.*alpaca"):
        InstructionDataModule("builtin:arithmetic", field_map="dolly")


def test_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        load_rows(str(path))


def test_calibration_sequences_are_packed(model_folder):
    data = CalibrationTextDataModule("builtin:facts", tokenizer=model_folder, num_samples=5, max_length=40)
    data.setup()
    assert [len(sequence) for sequence in data.sequences] == [40] * 5
    batch = next(iter(data.train_dataloader()))
    assert batch["attention_mask"].sum() == 5 * 40


def test_calibration_template_names_absent_column(model_folder):
    data = CalibrationTextDataModule("builtin:facts", tokenizer=model_folder, template="{text}")
    with pytest.raises(KeyError, match=r"'text'.*\['answer', 'question'\]"):
        data.setup()


@requires_shared_data
def test_real_gsm8k_rows_get_final_answers(model_folder):
    path = SHARED_DATA / "text" / "gsm8k" / "train.jsonl"
    data = InstructionDataModule(str(path), tokenizer=model_folder, field_map="gsm8k", val_size=100)
    data.setup("fit")
    assert len(data.train_rows) + len(data.val_rows) == 7473
    rows = data.train_rows + data.val_rows
    assert all(re.search(r"\nThe answer is: -?[\d.]+$", row["response"]) for row in rows)
    assert not any("<<" in row["response"] or "####" in row["response"] for row in rows)


@requires_shared_data
def test_real_nq_open_calibration(model_folder):
    path = SHARED_DATA / "text" / "nq_open" / "NQ-open.dev.jsonl"
    data = CalibrationTextDataModule(str(path), tokenizer=model_folder, num_samples=4, max_length=256, max_rows=1000)
    assert len(data.texts()) == 1000
    data.setup()
    assert sum(len(sequence) for sequence in data.sequences) == 4 * 256

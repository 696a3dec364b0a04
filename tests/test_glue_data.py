"""GLUE/SuperGLUE text-to-text data: file quirks, templates, label ids, splits and errors."""

from __future__ import annotations

import json

import pytest
import torch

from datamodules.glue import GlueDataModule, split_rows
from datamodules.glue_tasks import format_example, format_rows, get_task, read_task_rows, read_tsv
from tests.conftest import SHARED_DATA, requires_shared_data

TEXT = SHARED_DATA / "text"


@requires_shared_data
@pytest.mark.parametrize(
    "task, file, count, first_source, first_target",
    [
        ("rte", "rte/train.tsv", 2490, "rte sentence1: No Weapons of Mass Destruction Found in Iraq Yet. sentence2:", "1"),
        ("mrpc", "mrpc/train.tsv", 3667, "mrpc sentence1: Amrozi accused his brother , whom he called \" the witness \"", "1"),
        ("cola", "cola/train.tsv", 8551, "cola sentence: Our friends won't buy this analysis, let alone the next one we propose.", "1"),
        ("stsb", "stsb/train.tsv", 5749, "stsb sentence1: A plane is taking off. sentence2: An air plane is taking off.", "5.0"),
        ("sst2", "sst2/dev.tsv", 872, "sst2 sentence: it 's a charming and often affecting journey .", "1"),
        ("cb", "cb/val.jsonl", 56, "cb premise: Valence the void-brain, Valence the virtuous valet.", "1"),
        ("wic", "wic/val.jsonl", 638, "wic word: class sentence1: An emerging professional class. sentence2: Apologizing", "0"),
        ("boolq", "boolq/val.jsonl", 3270, "boolq question: does ethanol take more energy make that produces", "0"),
    ],
)
def test_real_files_parse_with_quirks(task, file, count, first_source, first_target):
    spec = get_task(task)
    rows = format_rows(spec, read_task_rows(spec, str(TEXT / file), "train"), file)
    assert len(rows) == count
    assert rows[0]["source"].startswith(first_source)
    assert rows[0]["target"] == first_target


@requires_shared_data
def test_mrpc_header_bom_is_stripped():
    rows = read_tsv(TEXT / "mrpc" / "dev.tsv")
    assert list(rows[0])[0] == "Quality"
    assert len(rows) == 408
    assert sum(row["Quality"] == "1" for row in rows) == 279


@requires_shared_data
def test_stsb_scores_round_to_point_two():
    spec = get_task("stsb")
    rows = format_rows(spec, read_task_rows(spec, str(TEXT / "stsb" / "dev.tsv"), "validation"), "dev")
    assert all(round(float(row["target"]) * 5, 6) == round(float(row["target"]) * 5) for row in rows)
    assert {type(row["label"]) for row in rows} == {float}


def rows_of(count: int, label=0) -> list[dict]:
    return [{"source": f"row {i}", "target": str(label), "label": label} for i in range(count)]


def test_small_task_splits_validation_in_half():
    validation = rows_of(11)
    train, val, test = split_rows(get_task("rte"), rows_of(20), validation, seed=3)
    assert len(train) == 20
    assert len(val) == 5
    assert len(test) == 6
    assert {row["source"] for row in val} | {row["source"] for row in test} == {row["source"] for row in validation}
    again = split_rows(get_task("rte"), rows_of(20), validation, seed=3)
    assert again[1] == val
    other_seed = split_rows(get_task("rte"), rows_of(20), validation, seed=4)
    assert other_seed[1] != val


def test_large_task_holds_out_training_rows():
    train, val, test = split_rows(get_task("sst2"), rows_of(30), rows_of(7), seed=0, large_val_size=10)
    assert len(val) == 10
    assert len(train) == 20
    assert len(test) == 7
    assert not {row["source"] for row in val} & {row["source"] for row in train}


def test_large_task_with_too_few_rows_rejected():
    with pytest.raises(ValueError, match="sst2 has 30 training rows.*large_val_size=1000"):
        split_rows(get_task("sst2"), rows_of(30), rows_of(7), seed=0)


def test_templates_and_label_ids():
    rte = format_example(get_task("rte"), {"sentence1": "A cat.", "sentence2": " An animal. ", "label": "entailment"}, "x")
    assert rte == {"source": "rte sentence1: A cat. sentence2: An animal.", "target": "0", "label": 0}
    mnli = format_example(get_task("mnli"), {"sentence1": "p", "sentence2": "h", "gold_label": "contradiction"}, "x")
    assert mnli["source"] == "mnli premise: p hypothesis: h"
    assert mnli["label"] == 2
    boolq = format_example(get_task("boolq"), {"question": "q", "passage": "p", "label": True}, "x")
    assert boolq["target"] == "1"
    cb = format_example(get_task("cb"), {"premise": "p", "hypothesis": "h", "label": "neutral"}, "x")
    assert cb["label"] == 2


def test_wsc_spans_under_nested_target(tmp_path):
    path = tmp_path / "val.jsonl"
    row = {"text": "Mark told Pete lies about himself.", "target": {"span1_text": "Pete", "span2_text": "himself"}, "label": False}
    path.write_text(json.dumps(row) + "\n")
    spec = get_task("wsc")
    (example,) = format_rows(spec, read_task_rows(spec, str(path), "validation"), str(path))
    assert example["source"] == "wsc text: Mark told Pete lies about himself. span1_text: Pete span2_text: himself"
    assert example["label"] == 0


def test_multirc_nested_layout_expands_per_answer(tmp_path):
    path = tmp_path / "val.jsonl"
    row = {"passage": {"text": "P.", "questions": [{"question": "Q?", "answers": [{"text": "a", "label": 1}, {"text": "b", "label": 0}]}]}}
    path.write_text(json.dumps(row) + "\n")
    spec = get_task("multirc")
    examples = format_rows(spec, read_task_rows(spec, str(path), "validation"), str(path))
    assert [example["source"] for example in examples] == ["multirc question: Q? answer: a paragraph: P.", "multirc question: Q? answer: b paragraph: P."]
    assert [example["label"] for example in examples] == [1, 0]


def test_missing_field_names_field_and_row(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("index\tsentence1\tlabel\n0\tA cat.\tentailment\n")
    spec = get_task("rte")
    with pytest.raises(ValueError, match=r"train.tsv row 1: rte row has no field 'sentence2'"):
        format_rows(spec, read_task_rows(spec, str(path), "train"), str(path))


def test_label_outside_label_set_names_value(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n")
    spec = get_task("rte")
    with pytest.raises(ValueError, match=r"row 2: rte label 'maybe' is not in the label set \(0 or 'entailment', 1 or 'not_entailment'\)"):
        format_rows(spec, read_task_rows(spec, str(path), "train"), str(path))
    with pytest.raises(ValueError, match="score '7.5' is not a number from 0 to 5"):
        format_example(get_task("stsb"), {"sentence1": "a", "sentence2": "b", "label": "7.5"}, "row 1")
    with pytest.raises(ValueError, match="label 3 is not in the label set"):
        format_example(get_task("cb"), {"premise": "a", "hypothesis": "b", "label": 3}, "row 1")


def test_tsv_line_with_wrong_field_count_rejected(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\ngood .\t1\nbad\n")
    with pytest.raises(ValueError, match=r"dev.tsv:3: expected 2 tab-separated fields \(sentence, label\), got 1"):
        read_tsv(path)


def test_unknown_task_names_value():
    with pytest.raises(ValueError, match="unknown GLUE/SuperGLUE task 'rtee'"):
        GlueDataModule(task="rtee")


def test_missing_local_file_rejected(tmp_path):
    spec = get_task("rte")
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        read_task_rows(spec, str(tmp_path / "missing.tsv"), "train")


def test_builtin_demo_corpus_batches():
    datamodule = GlueDataModule(
        task="sst2", tokenizer="packaged:all-minilm-l6-v2", train_path="builtin:polarity",
        validation_path="builtin:polarity_validation", large_val_size=100, max_train_rows=50, max_eval_rows=20,
        max_length=12, batch_size=4,
    )
    datamodule.setup("fit")
    assert (len(datamodule.train_rows), len(datamodule.val_rows), len(datamodule.test_rows)) == (50, 20, 20)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4
    assert batch["input_ids"].shape[1] <= 12
    assert batch["label_ids"].dtype == torch.long
    assert (batch["attention_mask"].sum(dim=1) > 0).all()
    decoded = datamodule.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert decoded.startswith("sst2 sentence :")

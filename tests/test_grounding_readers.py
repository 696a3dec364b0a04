"""Annotation readers: counts on the real release files and the handling of bad rows."""

from __future__ import annotations

import json

import pytest

from datamodules.grounding.annotations import (
    REJECT_EMPTY_SENTENCE,
    REJECT_MALFORMED,
    REJECT_NO_DURATION,
    REJECT_START_NOT_BEFORE_END,
    read_annotations,
)
from tests.conftest import SHARED_DATA, requires_shared_data

GROUNDING = SHARED_DATA / "grounding"

# (format, file, queries read, end past duration, rejected start >= end), counted by scanning the files.
REAL_FILE_COUNTS = [
    ("charades_sta", "charades_sta/charades_sta_train.txt", 12408, 1805, 4),
    ("charades_sta", "charades_sta/charades_sta_test.txt", 3720, 562, 0),
    ("tacos", "tacos/train.json", 9790, 43, 0),
    ("tacos", "tacos/val.json", 4436, 0, 0),
    ("tacos", "tacos/test.json", 4001, 5, 0),
    ("activitynet", "activitynet/train.json", 37421, 261, 4),
    ("activitynet", "activitynet/val.json", 17505, 134, 0),
    ("activitynet", "activitynet/test.json", 17031, 111, 0),
]


@requires_shared_data
@pytest.mark.parametrize(("annotation_format", "relative_path", "read", "end_past", "start_not_before_end"), REAL_FILE_COUNTS)
def test_real_file_counts(annotation_format, relative_path, read, end_past, start_not_before_end):
    queries, report = read_annotations(annotation_format, GROUNDING / relative_path)
    assert report.read == read
    assert report.end_past_duration == end_past
    assert report.rejected[REJECT_START_NOT_BEFORE_END] == start_not_before_end
    assert sum(report.rejected.values()) == start_not_before_end
    assert len(queries) == read - start_not_before_end
    assert all(0 <= query.start < query.end <= query.duration for query in queries)
    assert all(query.sentence == query.sentence.strip() and query.sentence for query in queries)


@requires_shared_data
def test_charades_clipped_excludes_rejected_rows():
    # Three of the four start >= end rows also end past the duration, so 1,805 - 3 are clipped.
    _, report = read_annotations("charades_sta", GROUNDING / "charades_sta/charades_sta_train.txt")
    assert report.clipped == 1802
    assert any("LEOL6" in line or "charades_sta_train.txt:" in line for line in report.examples[REJECT_START_NOT_BEFORE_END])


@requires_shared_data
def test_tacos_frames_become_seconds():
    with (GROUNDING / "tacos/test.json").open() as handle:
        video_id, entry = next(iter(json.load(handle).items()))
    queries, _ = read_annotations("tacos", GROUNDING / "tacos/test.json")
    first = next(query for query in queries if query.video_id == video_id)
    start_frame, end_frame = entry["timestamps"][0]
    assert first.start == pytest.approx(start_frame / entry["fps"])
    assert first.end == pytest.approx(min(end_frame, entry["num_frames"]) / entry["fps"])
    assert first.duration == pytest.approx(entry["num_frames"] / entry["fps"])


@requires_shared_data
def test_activitynet_sentences_are_stripped():
    queries, _ = read_annotations("activitynet", GROUNDING / "activitynet/val.json")
    assert not any(query.sentence.startswith(" ") for query in queries)


def test_jsonl_bad_rows_are_counted(tmp_path):
    path = tmp_path / "queries.jsonl"
    lines = [
        {"video": "a", "duration": 10.0, "start": 1.0, "end": 4.0, "sentence": "a person opens a door"},
        {"video": "a", "duration": 10.0, "start": 1.0, "end": 12.5, "sentence": "a person sits"},
        {"video": "b", "duration": 8.0, "start": 2.0, "end": 3.0, "sentence": "   "},
        {"video": "b", "duration": 8.0, "start": 5.0, "end": 5.0, "sentence": "nothing happens"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n" + json.dumps({"video": "c"}) + "\n\n"
    path.write_text(text)
    with pytest.warns(UserWarning) as warnings:
        queries, report = read_annotations("jsonl", path)
    assert report.read == 6
    assert len(queries) == 2
    assert queries[1].end == 10.0
    assert report.clipped == 1
    assert report.rejected[REJECT_EMPTY_SENTENCE] == 1
    assert report.rejected[REJECT_START_NOT_BEFORE_END] == 1
    assert report.rejected[REJECT_MALFORMED] == 2
    assert report.examples[REJECT_EMPTY_SENTENCE] == ["queries.jsonl:3"]
    assert report.examples[REJECT_MALFORMED][0].startswith("queries.jsonl:5")
    messages = " ".join(str(warning.message) for warning in warnings)
    assert "empty sentence" in messages
    assert "queries.jsonl:3" in messages
    assert "malformed line" in messages
    assert "queries.jsonl:6" in messages


def test_charades_malformed_and_unknown_video(tmp_path):
    (tmp_path / "Charades_v1_test.csv").write_text('id,subject,length\r\nAAAAA,x,"30.5"\r\n')
    path = tmp_path / "charades_sta_test.txt"
    path.write_text("AAAAA 1.0 5.5##person opens a door.\nAAAAA 1.0##no end time\nZZZZZ 1.0 2.0##unknown video.\n")
    with pytest.warns(UserWarning, match="charades_sta_test.txt:2"):
        queries, report = read_annotations("charades_sta", path)
    assert [(query.video_id, query.start, query.end, query.duration) for query in queries] == [("AAAAA", 1.0, 5.5, 30.5)]
    assert report.rejected[REJECT_MALFORMED] == 1
    assert report.rejected[REJECT_NO_DURATION] == 1


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown annotation format"):
        read_annotations("srt", tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        read_annotations("jsonl", tmp_path / "absent.jsonl")

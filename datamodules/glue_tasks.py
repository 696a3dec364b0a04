"""GLUE and SuperGLUE tasks as text-to-text: field templates, label ids and file readers.

A row becomes a source text ``"<task> <field>: <value> <field>: <value> ..."`` and a target
text, the label id as a string (``"0"``, ``"1"`` ...). STS-B's target is the score rounded
to the nearest 0.2 (``"3.8"``). Label ids follow the Hugging Face ``nyu-mll/glue`` and
``aps/super_glue`` conventions (e.g. RTE: 0 entailment, 1 not_entailment).

Rows come from a hub data set (``nyu-mll/glue:rte``), a local file or a ``builtin:`` corpus.
Local files are the GLUE and SuperGLUE downloads:

- GLUE ``.tsv`` files: read with quoting off (sentences contain unbalanced double quotes)
  and a UTF-8 BOM stripped (MRPC's header starts with one); CoLA has no header line.
- SuperGLUE ``.jsonl`` files: one JSON object per line. WSC's span texts may sit under a
  nested ``target`` object, and MultiRC's original nested passage/questions/answers layout is
  expanded into one row per answer.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from datamodules.sources import read_jsonl

BOOLEAN_LABELS = ("False", "True")


@dataclass(frozen=True)
class GlueTask:
    """How one task's rows become text-to-text examples.

    Attributes:
        name: Task name, also the first word of every source text.
        fields: Input fields in template order.
        labels: Label names by id; empty for a regression task (STS-B).
        hub_id: Hugging Face data set id with configuration.
        hub_validation_split: Hub split whose labels are public (the suite's evaluation source).
        small: Split protocol. Small tasks split the validation set in half into val and
            test; large tasks hold out training rows as val and use the validation set as test.
        column_aliases: Local file column -> field name, for files whose columns differ from
            the hub's names.
        headerless_columns: Column names of a local ``.tsv`` without a header line.
    """

    name: str
    fields: tuple[str, ...]
    labels: tuple[str, ...]
    hub_id: str
    hub_validation_split: str = "validation"
    small: bool = True
    column_aliases: dict[str, str] = field(default_factory=dict)
    headerless_columns: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_classes(self) -> int:
        """Number of classes; 1 for a regression task."""
        return len(self.labels) or 1


TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in [
        GlueTask(
            "cola", ("sentence",), ("unacceptable", "acceptable"), "nyu-mll/glue:cola",
            headerless_columns=("source", "label", "original_mark", "sentence"),
        ),
        GlueTask("sst2", ("sentence",), ("negative", "positive"), "nyu-mll/glue:sst2", small=False),
        GlueTask(
            "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "nyu-mll/glue:mrpc",
            column_aliases={"#1 String": "sentence1", "#2 String": "sentence2", "Quality": "label"},
        ),
        GlueTask(
            "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), "nyu-mll/glue:qqp", small=False,
            column_aliases={"is_duplicate": "label"},
        ),
        GlueTask("stsb", ("sentence1", "sentence2"), (), "nyu-mll/glue:stsb", column_aliases={"score": "label"}),
        GlueTask(
            "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), "nyu-mll/glue:mnli",
            hub_validation_split="validation_matched", small=False,
            column_aliases={"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"},
        ),
        GlueTask("qnli", ("question", "sentence"), ("entailment", "not_entailment"), "nyu-mll/glue:qnli", small=False),
        GlueTask("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), "nyu-mll/glue:rte"),
        GlueTask("boolq", ("question", "passage"), BOOLEAN_LABELS, "aps/super_glue:boolq"),
        GlueTask("cb", ("premise", "hypothesis"), ("entailment", "contradiction", "neutral"), "aps/super_glue:cb"),
        GlueTask("wic", ("word", "sentence1", "sentence2"), BOOLEAN_LABELS, "aps/super_glue:wic"),
        GlueTask("wsc", ("text", "span1_text", "span2_text"), BOOLEAN_LABELS, "aps/super_glue:wsc.fixed"),
        GlueTask("multirc", ("question", "answer", "paragraph"), BOOLEAN_LABELS, "aps/super_glue:multirc"),
    ]
}


def get_task(name: str) -> GlueTask:
    """Return the task of that name.

    Raises:
        ValueError: If the name is not a known task.
    """
    if name not in TASKS:
        raise ValueError(f"unknown GLUE/SuperGLUE task {name!r}; choose one of {sorted(TASKS)}.")
    return TASKS[name]


def read_tsv(path: Path, columns: tuple[str, ...] = ()) -> list[dict]:
    """Read a GLUE ``.tsv`` file with quoting off and any UTF-8 BOM removed.

    Args:
        path: The file.
        columns: Column names for a file without a header line; empty means the first line is
            the header.

    Raises:
        ValueError: If a line has a different number of fields than the header.
    """
    with path.open(encoding="utf-8-sig", newline="") as handle:
        lines = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    first_data_line = 1
    if not columns:
        if not lines:
            raise ValueError(f"{path} is empty; expected a header line and data rows.")
        columns, lines, first_data_line = tuple(lines[0]), lines[1:], 2
    rows = []
    for offset, values in enumerate(lines):
        if not values:
            continue
        if len(values) != len(columns):
            raise ValueError(
                f"{path}:{first_data_line + offset}: expected {len(columns)} tab-separated fields "
                f"({', '.join(columns)}), got {len(values)}; fix or remove that line."
            )
        rows.append(dict(zip(columns, values)))
    return rows


def expand_multirc(rows: list[dict]) -> list[dict]:
    """Turn MultiRC's nested rows (passage -> questions -> answers) into one row per answer.

    Rows already in the flat hub layout (``paragraph``, ``question``, ``answer``) pass through.
    """
    flat = []
    for row in rows:
        passage = row.get("passage")
        if not isinstance(passage, dict):
            flat.append(row)
            continue
        for question in passage.get("questions", []):
            for answer in question.get("answers", []):
                flat.append({
                    "paragraph": passage.get("text"),
                    "question": question.get("question"),
                    "answer": answer.get("text"),
                    "label": answer.get("label"),
                })
    return flat


def read_task_rows(task: GlueTask, source: str, split: str) -> list[dict]:
    """Read raw rows of a task from a local file, a ``builtin:`` corpus or the hub.

    Args:
        task: The task.
        source: A local ``.tsv``/``.jsonl``/``.json`` file, ``builtin:NAME`` or a hub id.
        split: Hub split; ignored for local files and built-in corpora.

    Raises:
        FileNotFoundError: If a local file does not exist.
    """
    path = Path(source).expanduser()
    if path.suffix in (".tsv", ".jsonl", ".json") or source.startswith((".", "/", "~")):
        if not path.is_file():
            raise FileNotFoundError(f"{task.name} data file not found: {path}; pass an existing file or leave it unset to use {task.hub_id}.")
        if path.suffix == ".tsv":
            rows = read_tsv(path, task.headerless_columns)
        elif path.suffix == ".jsonl":
            rows = read_jsonl(path)
        else:
            from datamodules.sources import load_rows

            rows = load_rows(str(path))
    else:
        from datamodules.sources import load_rows

        rows = load_rows(source, split)
    if task.name == "multirc":
        rows = expand_multirc(rows)
    return rows


def label_to_id(task: GlueTask, value, where: str) -> int | float:
    """Map a raw label (name, id, id string or boolean) to a class id, or a score for STS-B.

    Raises:
        ValueError: If the label is missing or outside the task's label set; the message
            names the value, the row and the allowed labels.
    """
    if task.is_regression:
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = float("nan")
        if not 0.0 <= score <= 5.0:  # also rejects NaN
            raise ValueError(f"{where}: {task.name} score {value!r} is not a number from 0 to 5.")
        return score
    if isinstance(value, bool):
        if task.labels == BOOLEAN_LABELS:
            return int(value)
    elif isinstance(value, int) and 0 <= value < len(task.labels):
        return value
    elif isinstance(value, str):
        text = value.strip()
        if text in task.labels:
            return task.labels.index(text)
        if text.isdigit() and int(text) < len(task.labels):
            return int(text)
    allowed = ", ".join(f"{index} or {name!r}" for index, name in enumerate(task.labels))
    raise ValueError(f"{where}: {task.name} label {value!r} is not in the label set ({allowed}); fix or remove the row.")


def format_target(task: GlueTask, label: int | float) -> str:
    """Target text: the class id, or an STS-B score rounded to the nearest 0.2 (``"3.8"``)."""
    if task.is_regression:
        return f"{round(label * 5) / 5:.1f}"
    return str(label)


def field_value(row: dict, name: str, aliases: dict[str, str]):
    """Return a field of a row, looking under aliases and a nested ``target`` object (WSC)."""
    if name in row:
        return row[name]
    for column, alias in aliases.items():
        if alias == name and column in row:
            return row[column]
    nested = row.get("target")
    if isinstance(nested, dict) and name in nested:
        return nested[name]
    raise KeyError(name)


def format_example(task: GlueTask, row: dict, where: str) -> dict:
    """Turn a raw row into ``{"source", "target", "label"}``.

    Raises:
        ValueError: If a field or the label is missing, or the label is outside the label set.
    """
    parts = [task.name]
    for name in task.fields + ("label",):
        try:
            value = field_value(row, name, task.column_aliases)
        except KeyError:
            raise ValueError(
                f"{where}: {task.name} row has no field {name!r} (it has {sorted(row)}); the task needs "
                f"{list(task.fields) + ['label']}."
            ) from None
        if value is None:
            raise ValueError(f"{where}: {task.name} field {name!r} is empty (None); fix or remove the row.")
        if name != "label":
            parts.append(f"{name}: {str(value).strip()}")
    label = label_to_id(task, field_value(row, "label", task.column_aliases), where)
    return {"source": " ".join(parts), "target": format_target(task, label), "label": label}


def format_rows(task: GlueTask, rows: list[dict], source: str) -> list[dict]:
    """Format every row; errors name the source and the row number (1-based, data rows only)."""
    if not rows:
        raise ValueError(f"{source}: no {task.name} rows found.")
    return [format_example(task, row, f"{source} row {number}") for number, row in enumerate(rows, start=1)]

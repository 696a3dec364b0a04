"""Charades-STA reader: ``VIDEO start end##sentence`` lines plus the Charades CSV for durations.

Times are seconds. Durations come from the ``length`` column of the Charades CSV
(``Charades_v1_train.csv`` / ``Charades_v1_test.csv``); by default the CSV whose name matches the
split (``charades_sta_train.txt`` -> ``Charades_v1_train.csv``) in the same folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

from datamodules.grounding.annotations import REJECT_MALFORMED, GroundingQuery, ReadReport, check_and_build, register_reader


def default_durations_path(annotation_path: Path) -> Path:
    split = "test" if "test" in annotation_path.stem else "train"
    return annotation_path.with_name(f"Charades_v1_{split}.csv")


def read_charades_durations(path: Path) -> dict[str, float]:
    """Map video id to duration in seconds from a Charades CSV (columns ``id`` and ``length``)."""
    if not path.is_file():
        raise FileNotFoundError(f"Charades duration CSV not found: {path}; pass durations_path to the reader.")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "id" not in reader.fieldnames or "length" not in reader.fieldnames:
            raise ValueError(f"{path} has no 'id' and 'length' columns (header: {reader.fieldnames}).")
        return {row["id"]: float(row["length"]) for row in reader if row["length"]}


@register_reader("charades_sta")
def read_charades_sta(path: Path, durations_path: str | Path | None = None) -> tuple[list[GroundingQuery], ReadReport]:
    durations = read_charades_durations(Path(durations_path) if durations_path else default_durations_path(path))
    report = ReadReport(str(path))
    queries = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            where = f"{path.name}:{line_number}"
            if not line.strip():
                continue
            head, separator, sentence = line.rstrip("\n").partition("##")
            fields = head.split()
            if not separator or len(fields) != 3:
                report.read += 1
                report.reject(REJECT_MALFORMED, where)
                continue
            try:
                start, end = float(fields[1]), float(fields[2])
            except ValueError:
                report.read += 1
                report.reject(REJECT_MALFORMED, where)
                continue
            query = check_and_build(report, fields[0], sentence, start, end, durations.get(fields[0]), where)
            if query is not None:
                queries.append(query)
    return queries, report

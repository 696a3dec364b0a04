"""The suite's own JSON-lines format: one query per line, times in seconds.

Each line is an object ``{"video": str, "duration": float, "start": float, "end": float,
"sentence": str}``. Blank lines are ignored; a line that is not such an object is rejected
as malformed and counted.
"""

from __future__ import annotations

import json
from pathlib import Path

from datamodules.grounding.annotations import REJECT_MALFORMED, GroundingQuery, ReadReport, check_and_build, register_reader

REQUIRED_KEYS = ("video", "duration", "start", "end", "sentence")


@register_reader("jsonl")
def read_jsonl(path: Path) -> tuple[list[GroundingQuery], ReadReport]:
    report = ReadReport(str(path))
    queries = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{line_number}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or any(key not in row for key in REQUIRED_KEYS):
                    raise ValueError(f"needs the keys {REQUIRED_KEYS}")
                video, sentence = str(row["video"]), str(row["sentence"])
                duration, start, end = float(row["duration"]), float(row["start"]), float(row["end"])
            except (ValueError, TypeError) as error:
                report.read += 1
                report.reject(REJECT_MALFORMED, f"{where} ({error})")
                continue
            query = check_and_build(report, video, sentence, start, end, duration, where)
            if query is not None:
                queries.append(query)
    return queries, report

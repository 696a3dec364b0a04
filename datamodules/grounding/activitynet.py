"""ActivityNet Captions reader: ``{video: {duration, timestamps, sentences}}`` with times in seconds."""

from __future__ import annotations

import json
from pathlib import Path

from datamodules.grounding.annotations import REJECT_MALFORMED, GroundingQuery, ReadReport, check_and_build, register_reader


@register_reader("activitynet")
def read_activitynet(path: Path) -> tuple[list[GroundingQuery], ReadReport]:
    with path.open(encoding="utf-8") as handle:
        videos = json.load(handle)
    report = ReadReport(str(path))
    queries = []
    for video_id, entry in videos.items():
        timestamps, sentences = entry.get("timestamps", []), entry.get("sentences", [])
        if len(timestamps) != len(sentences):
            # A mismatched pair of lists cannot be aligned; every row of the video is rejected.
            for index in range(max(len(timestamps), len(sentences))):
                report.read += 1
                report.reject(REJECT_MALFORMED, f"{path.name}:{video_id}#{index} (timestamps and sentences differ in length)")
            continue
        for index, (span, sentence) in enumerate(zip(timestamps, sentences)):
            where = f"{path.name}:{video_id}#{index}"
            try:
                start, end = float(span[0]), float(span[1])
            except (TypeError, ValueError, IndexError):
                report.read += 1
                report.reject(REJECT_MALFORMED, where)
                continue
            query = check_and_build(report, video_id, sentence, start, end, entry.get("duration"), where)
            if query is not None:
                queries.append(query)
    return queries, report

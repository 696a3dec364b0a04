"""TACoS reader: ``{video: {timestamps, sentences, fps, num_frames}}`` with timestamps in frames.

Times are converted to seconds as ``frame / fps``; the duration is ``num_frames / fps``.
"""

from __future__ import annotations

import json
from pathlib import Path

from datamodules.grounding.annotations import REJECT_MALFORMED, GroundingQuery, ReadReport, check_and_build, register_reader


@register_reader("tacos")
def read_tacos(path: Path) -> tuple[list[GroundingQuery], ReadReport]:
    with path.open(encoding="utf-8") as handle:
        videos = json.load(handle)
    report = ReadReport(str(path))
    queries = []
    for video_id, entry in videos.items():
        timestamps, sentences = entry.get("timestamps", []), entry.get("sentences", [])
        fps, num_frames = entry.get("fps"), entry.get("num_frames")
        if len(timestamps) != len(sentences) or not fps or not num_frames:
            for index in range(max(len(timestamps), len(sentences))):
                report.read += 1
                report.reject(REJECT_MALFORMED, f"{path.name}:{video_id}#{index} (needs fps, num_frames and parallel lists)")
            continue
        duration = num_frames / fps
        for index, (span, sentence) in enumerate(zip(timestamps, sentences)):
            where = f"{path.name}:{video_id}#{index}"
            try:
                start, end = float(span[0]) / fps, float(span[1]) / fps
            except (TypeError, ValueError, IndexError):
                report.read += 1
                report.reject(REJECT_MALFORMED, where)
                continue
            query = check_and_build(report, video_id, sentence, start, end, duration, where)
            if query is not None:
                queries.append(query)
    return queries, report

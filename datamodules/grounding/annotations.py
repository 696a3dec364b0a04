"""Grounding queries, the per-split read report, and the registry of annotation readers.

Every reader returns a list of :class:`GroundingQuery` (times in seconds) and a
:class:`ReadReport`. Readers apply one policy to bad rows:

- ``start >= end`` (checked on the times as written), an empty sentence, a malformed line
  or a video without a known duration: the row is rejected, counted under its reason and
  the first examples are logged with file and line.
- ``end > duration``: counted in ``end_past_duration`` for every row with readable times (also
  rows rejected for another reason, so the count matches a plain scan of the file); in a kept
  row the end is clipped to the duration and the row is counted in ``clipped``. A row whose
  start is at or past the duration is rejected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

MAX_LOGGED_EXAMPLES = 5

REJECT_START_NOT_BEFORE_END = "start >= end"
REJECT_EMPTY_SENTENCE = "empty sentence"
REJECT_MALFORMED = "malformed line"
REJECT_NO_DURATION = "no duration for the video"
REJECT_START_PAST_DURATION = "start >= duration"


@dataclass(frozen=True)
class GroundingQuery:
    """One sentence and its moment.

    Attributes:
        video_id: Video name as the annotation file writes it (feature stores map it to a file).
        sentence: The query text, stripped of surrounding spaces.
        start: Moment start in seconds.
        end: Moment end in seconds, ``start < end <= duration``.
        duration: Video duration in seconds.
        source: ``file:line`` (or ``file:video#index`` for JSON) of the annotation.
    """

    video_id: str
    sentence: str
    start: float
    end: float
    duration: float
    source: str


@dataclass
class ReadReport:
    """Counts of one split: rows read, kept, clipped and rejected per reason.

    ``end_past_duration`` counts every row whose end exceeds the duration; ``clipped`` counts
    only the kept ones among them.
    """

    path: str
    read: int = 0
    end_past_duration: int = 0
    clipped: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.read - sum(self.rejected.values())

    def reject(self, reason: str, where: str) -> None:
        self.rejected[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < MAX_LOGGED_EXAMPLES:
            self.examples[reason].append(where)

    def log(self) -> None:
        """Log the counts, and warn with examples when rows were rejected."""
        rank_zero_info(
            f"{self.path}: read {self.read} queries, kept {self.kept}, rejected {sum(self.rejected.values())}; "
            f"{self.end_past_duration} end past the video duration, {self.clipped} of them kept with the end clipped."
        )
        for reason, count in sorted(self.rejected.items()):
            rank_zero_warn(f"{self.path}: rejected {count} queries because {reason}, e.g. at {', '.join(self.examples[reason])}.")


def check_and_build(
    report: ReadReport, video_id: str, sentence: str, start: float, end: float, duration: float | None, where: str
) -> GroundingQuery | None:
    """Apply the shared row policy; return the query, or None after counting the rejection."""
    report.read += 1
    if duration is not None and end > duration:
        report.end_past_duration += 1
    sentence = sentence.strip()
    if not sentence:
        report.reject(REJECT_EMPTY_SENTENCE, where)
        return None
    if start >= end:
        report.reject(REJECT_START_NOT_BEFORE_END, f"{where} ({start} >= {end})")
        return None
    if duration is None or duration <= 0:
        report.reject(REJECT_NO_DURATION, f"{where} (video {video_id})")
        return None
    if start >= duration:
        report.reject(REJECT_START_PAST_DURATION, f"{where} ({start} >= {duration})")
        return None
    if end > duration:
        report.clipped += 1
        end = duration
    return GroundingQuery(video_id, sentence, float(max(start, 0.0)), float(end), float(duration), where)


Reader = Callable[..., tuple[list[GroundingQuery], ReadReport]]
READERS: dict[str, Reader] = {}


def register_reader(name: str) -> Callable[[Reader], Reader]:
    def decorator(function: Reader) -> Reader:
        READERS[name] = function
        return function

    return decorator


def read_annotations(annotation_format: str, path: str | Path, log: bool = True, **options) -> tuple[list[GroundingQuery], ReadReport]:
    """Read one annotation file with the reader registered for ``annotation_format``.

    ``log=True`` logs the :class:`ReadReport`; ``options`` go to the reader.

    Raises:
        ValueError: Unknown format.
        FileNotFoundError: The file does not exist.
    """
    # Import the readers so that they register themselves.
    from datamodules.grounding import activitynet, charades_sta, jsonl_format, tacos  # noqa: F401

    if annotation_format not in READERS:
        raise ValueError(f"unknown annotation format {annotation_format!r}; choose one of {sorted(READERS)}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    queries, report = READERS[annotation_format](path, **options)
    if log:
        report.log()
    return queries, report

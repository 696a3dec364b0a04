"""The offline demo corpus: generated videos of coloured shapes with sentence queries.

Each video (64 x 64 pixels, 8 fps, H.264 in mp4, written with PyAV) shows three shapes of
three different colours on a dark background. Each shape appears at a known time, moves in
one direction and vanishes; its query is a sentence such as "the red square moves to the
left", and its moment is exactly the interval in which it is visible. The corpus is written
once under ``<cache root>/grounding/shapes-<version>/`` (``train.jsonl``, ``val.jsonl``,
``test.jsonl`` in the suite's JSON-lines format, and ``videos/``); a file lock makes
concurrent processes generate it once.

Paths of the form ``builtin:shapes/<relative path>`` resolve into that folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_info
from tqdm.auto import tqdm

from lightning_modules.model_loading import cache_root

BUILTIN_PREFIX = "builtin:shapes"
VERSION = "v1"
SPLIT_SIZES = {"train": 240, "val": 40, "test": 60}  # videos per split; three queries each
FRAME_SIZE = 64
FPS = 8
SHAPE_PIXELS = 14
COLORS = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 60, 240),
    "yellow": (235, 220, 30),
    "purple": (160, 40, 200),
    "white": (240, 240, 240),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
TEMPLATES = (
    "the {color} {shape} moves to the {direction}",
    "a {color} {shape} appears and slides {direction}",
    "{color} {shape} going {direction}",
)


def corpus_folder() -> Path:
    return cache_root() / "grounding" / f"shapes-{VERSION}"


def resolve_builtin_path(path: str) -> Path:
    """Map ``builtin:shapes/...`` into the generated corpus (generating it first); other paths pass through."""
    if not path.startswith(BUILTIN_PREFIX):
        return Path(path).expanduser()
    folder = ensure_shapes_corpus()
    relative = path[len(BUILTIN_PREFIX) :].lstrip("/")
    return folder / relative if relative else folder


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Return a ``(size, size)`` boolean mask of a square, circle or triangle."""
    y, x = np.mgrid[0:size, 0:size]
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        centre = (size - 1) / 2
        return (x - centre) ** 2 + (y - centre) ** 2 <= (size / 2) ** 2
    return y >= np.abs(x - (size - 1) / 2) * 2  # triangle pointing up


def draw_video(events: list[dict], num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Render ``(num_frames, 64, 64, 3)`` uint8 frames for shape events timed in frames."""
    frames = np.full((num_frames, FRAME_SIZE, FRAME_SIZE, 3), 20, dtype=np.uint8)
    frames += rng.integers(0, 12, size=frames.shape, dtype=np.uint8)  # sensor-like noise
    limit = FRAME_SIZE - SHAPE_PIXELS
    for event in events:
        mask = shape_mask(event["shape"], SHAPE_PIXELS)
        first, last = event["first_frame"], event["last_frame"]
        for frame in range(first, last + 1):
            progress = (frame - first) / max(last - first, 1)
            x = int(round(event["x"] + event["dx"] * progress * limit * 0.6)) % (limit + 1)
            y = int(round(event["y"] + event["dy"] * progress * limit * 0.6)) % (limit + 1)
            region = frames[frame, y : y + SHAPE_PIXELS, x : x + SHAPE_PIXELS]
            region[mask] = COLORS[event["color"]]
    return frames


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode RGB frames to H.264 mp4 with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_video_record(name: str, rng: np.random.Generator) -> tuple[list[dict], int]:
    """Draw a video: a duration of 10-20 s and three shape events with distinct colours."""
    num_frames = int(rng.integers(10 * FPS, 20 * FPS + 1))
    colors = rng.choice(list(COLORS), size=3, replace=False)
    events = []
    for color in colors:
        length = int(rng.integers(int(0.15 * num_frames), int(0.5 * num_frames) + 1))
        first = int(rng.integers(0, num_frames - length + 1))
        direction = str(rng.choice(list(DIRECTIONS)))
        events.append(
            {
                "color": str(color),
                "shape": str(rng.choice(SHAPES)),
                "direction": direction,
                "dx": DIRECTIONS[direction][0],
                "dy": DIRECTIONS[direction][1],
                "x": int(rng.integers(0, FRAME_SIZE - SHAPE_PIXELS)),
                "y": int(rng.integers(0, FRAME_SIZE - SHAPE_PIXELS)),
                "first_frame": first,
                "last_frame": first + length - 1,
                "template": str(rng.choice(TEMPLATES)),
            }
        )
    return events, num_frames


def generate_corpus(folder: Path, split_sizes: dict[str, int] = SPLIT_SIZES, seed: int = 0) -> None:
    """Write the videos and the JSON-lines annotations of every split into ``folder``."""
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = sum(split_sizes.values())
    progress = tqdm(total=total, desc="generating demo videos")
    for split, count in split_sizes.items():
        rows = []
        for index in range(count):
            name = f"{split}_{index:04d}"
            events, num_frames = make_video_record(name, rng)
            write_mp4(videos / f"{name}.mp4", draw_video(events, num_frames, rng))
            duration = num_frames / FPS
            for event in events:
                sentence = event["template"].format(color=event["color"], shape=event["shape"], direction=event["direction"])
                start = event["first_frame"] / FPS
                end = (event["last_frame"] + 1) / FPS
                rows.append({"video": name, "duration": duration, "start": start, "end": end, "sentence": sentence})
            progress.update(1)
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    progress.close()


def ensure_shapes_corpus() -> Path:
    """Generate the demo corpus unless it is complete; return its folder."""
    folder = corpus_folder()
    marker = folder / ".complete"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not marker.exists():
            rank_zero_info(f"Generating the shapes demo corpus ({sum(SPLIT_SIZES.values())} videos) in {folder}.")
            generate_corpus(folder)
            marker.touch()
    return folder

"""Benchmark FIAN's raw-video feature extraction and its training throughput on cached features.

Run: ``.venv/bin/python bench/fian_speed.py`` (prints ratios; writes nothing to the repository).

1. Extraction: for generated H.264 videos of 1 and 10 minutes (160 x 120, 25 fps), decode
   the frames sampled at 4 fps with the suite's pipeline (decord scaling to 32 x 32 while
   decoding, then the ``rgb_histogram`` extractor) and with bare decord ``get_batch`` at full
   size over the same frames and chunks. Prints frames per second of both and their ratio,
   and the peak RSS of a fresh process running the pipeline on each video.
2. Training: FIAN epochs (the demo model and data, 720 queries) over the cached demo features,
   reporting queries per second and the fraction of the step time spent waiting for the data
   loader (``num_workers=0``, so the wait is the loading itself).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

WIDTH, HEIGHT, FPS, SAMPLE_FPS = 160, 120, 25, 4.0


def write_long_video(path: Path, minutes: float) -> None:
    """Encode a moving-gradient video of ``minutes`` minutes with PyAV (ultrafast H.264)."""
    import av

    frames = int(minutes * 60 * FPS)
    base = np.linspace(0, 255, WIDTH, dtype=np.float32)[None, :, None].repeat(HEIGHT, 0).repeat(3, 2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for index in range(frames):
            image = ((base + index * 3) % 256).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def measure_extraction(video: Path, mode: str) -> dict:
    """Run in a fresh process: decode (and extract) the sampled frames; return fps and peak RSS."""
    import resource

    import decord

    from datamodules.grounding.extractors import build_extractor
    from datamodules.grounding.video_decoding import decode_frame_chunks, probe_video, sample_frame_indices

    info = probe_video(video)
    indices = sample_frame_indices(info, sample_fps=SAMPLE_FPS)
    start = time.perf_counter()
    if mode == "bare":
        reader = decord.VideoReader(str(video), ctx=decord.cpu(0), num_threads=1)
        for offset in range(0, len(indices), 32):
            reader.get_batch(indices[offset : offset + 32].tolist()).asnumpy()
    else:
        extractor = build_extractor("rgb_histogram", bins=4, frame_size=32)
        for frames in decode_frame_chunks(video, indices, extractor.input_size, chunk_size=32):
            extractor(frames)
    elapsed = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"frames": len(indices), "seconds": elapsed, "fps": len(indices) / elapsed, "peak_rss_mib": peak_mib}


def run_child(video: Path, mode: str) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", str(video), mode], capture_output=True, text=True, check=True, cwd=REPOSITORY
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def bench_extraction(folder: Path, repeats: int) -> None:
    print("== raw-video feature extraction (decode at 4 fps, 160x120 H.264 source) ==")
    for minutes in (1, 10):
        folder.mkdir(parents=True, exist_ok=True)
        video = folder / f"video_{minutes}min.mp4"
        if not video.exists():
            started = time.perf_counter()
            write_long_video(video, minutes)
            print(f"generated {video.name} in {time.perf_counter() - started:.1f} s")
        bare = max((run_child(video, "bare") for _ in range(repeats)), key=lambda result: result["fps"])
        pipeline = max((run_child(video, "pipeline") for _ in range(repeats)), key=lambda result: result["fps"])
        print(
            f"{minutes:>2} min: {pipeline['frames']} frames; bare decord {bare['fps']:.0f} frames/s, pipeline "
            f"{pipeline['fps']:.0f} frames/s, ratio {pipeline['fps'] / bare['fps']:.2f}; peak RSS bare "
            f"{bare['peak_rss_mib']:.0f} MiB, pipeline {pipeline['peak_rss_mib']:.0f} MiB"
        )


def bench_training(epochs: int) -> None:
    import torch

    from datamodules.grounding.datamodule import TemporalGroundingDataModule
    from datamodules.grounding.video_features import VideoFeatureStore
    from lightning_modules.grounding.losses import grounding_loss
    from lightning_modules.temporal_grounding import TemporalGrounding

    print("== FIAN training on cached demo features (batch 32, 32 clips, hidden 64) ==")
    store = VideoFeatureStore("builtin:shapes/videos", extractor="rgb_histogram", extractor_options={"bins": 4, "frame_size": 32, "power": 0.5}, sample_fps=4.0)
    data = TemporalGroundingDataModule(store, 64, train_file="builtin:shapes/train.jsonl", num_clips=32, batch_size=32)
    data.setup("fit")
    model = TemporalGrounding(feature_dim=64, hidden_dim=64, video_rnn=False, temporal_encoder="conv", temporal_layers=2)
    optimizer = model.configure_optimizers()
    for epoch in range(epochs):
        wait = total = 0.0
        queries = steps = 0
        iterator = iter(data.train_dataloader())
        while True:
            began = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            loaded = time.perf_counter()
            loss = grounding_loss(model(batch), batch["target_clips"], batch["clip_mask"])["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            wait += loaded - began
            total += time.perf_counter() - began
            queries += batch["features"].shape[0]
            steps += 1
        # The first epoch also reads each video's features from the disk cache into memory.
        print(
            f"epoch {epoch}: {steps} steps, {queries / total:.0f} queries/s, {1000 * total / steps:.0f} ms/step, "
            f"loader wait {100 * wait / total:.1f} % of step time"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("VIDEO", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--video-dir", default=None, help="folder for the generated long videos (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement; the fastest is reported")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs measured (23 steps each)")
    parser.add_argument("--training-only", action="store_true", help="skip the extraction benchmark")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_extraction(Path(args.child[0]), args.child[1])))
        return
    print(f"machine: {os.cpu_count()} CPUs, torch threads {__import__('torch').get_num_threads()}")
    if not args.training_only:
        with tempfile.TemporaryDirectory() as temporary:
            bench_extraction(Path(args.video_dir or temporary), args.repeats)
    bench_training(args.epochs)


if __name__ == "__main__":
    main()

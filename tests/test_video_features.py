"""Feature stores, decord decoding, extractors and the video feature cache."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from datamodules.grounding.dataset import resample_clips
from datamodules.grounding.datamodule import TemporalGroundingDataModule
from datamodules.grounding.extractors import build_extractor
from datamodules.grounding.feature_stores import HDF5Features, NpyFolderFeatures, RandomFeatures
from datamodules.grounding.synthetic_shapes import generate_corpus, write_mp4
from datamodules.grounding.video_decoding import VideoInfo, sample_frame_indices
from datamodules.grounding.video_features import VideoFeatureStore
from tests.conftest import SHARED_DATA, requires_shared_data


def write_queries(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def query(video, start=1.0, end=3.0, duration=10.0, sentence="a person opens the door"):
    return {"video": video, "duration": duration, "start": start, "end": end, "sentence": sentence}


def test_resample_clips_mean_pools():
    features = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert resample_clips(features, 4)[:, 0].tolist() == [0.5, 2.5, 4.5, 6.5]
    assert resample_clips(features[:2], 4)[:, 0].tolist() == [0.0, 0.0, 1.0, 1.0]  # repeated when T < N


def test_sample_frame_indices():
    info = VideoInfo(num_frames=100, fps=25.0)  # 4 s
    assert sample_frame_indices(info, sample_fps=2.0).tolist() == [0, 12, 25, 38, 50, 62, 75, 88]
    assert sample_frame_indices(info, num_samples=4).tolist() == [12, 37, 62, 87]
    with pytest.raises(ValueError, match="exactly one"):
        sample_frame_indices(info, sample_fps=2.0, num_samples=4)


def test_extractors_on_solid_frames():
    red = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    grid = build_extractor("color_grid", grid=2, cell_pixels=16)(red)
    assert grid.shape == (2, 12)
    assert grid[0].tolist() == [1.0, 0.0, 0.0] * 4
    histogram = build_extractor("rgb_histogram", bins=4)(red)
    assert histogram.shape == (2, 64)
    assert histogram[0, 3 * 16].item() == 1.0  # red level 3, green 0, blue 0
    assert histogram[0].sum().item() == 1.0
    with pytest.raises(ValueError, match="unknown feature extractor"):
        build_extractor("resnet-1000")


def test_npy_npz_and_hdf5_stores(tmp_path):
    array = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.save(tmp_path / "v1.npy", array)
    np.savez(tmp_path / "v2.npz", features=array * 2)
    assert np.array_equal(NpyFolderFeatures(str(tmp_path), 4).load("v1"), array)
    assert np.array_equal(NpyFolderFeatures(str(tmp_path), 4, name_template="{stem}.npz", npz_key="features").load("v2.avi"), array * 2)
    with h5py.File(tmp_path / "features.h5", "w") as handle:
        handle.create_dataset("v1/c3d_features", data=array)
    store = HDF5Features(str(tmp_path / "features.h5"), 4, dataset_name="c3d_features")
    assert np.array_equal(store.load("v1"), array)
    assert store.find_unavailable(["v1", "v9"]) == {"v9": f"key 'v9/c3d_features' not found in {tmp_path / 'features.h5'}"}
    with pytest.raises(ValueError, match=r"v1.npy have shape \(5, 4\); expected \(T >= 1, 8\)"):
        NpyFolderFeatures(str(tmp_path), 8).load("v1")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "v1.npy").read_bytes()[:90])
    with pytest.raises(ValueError, match="cannot read features from .*cut.npy"):
        NpyFolderFeatures(str(tmp_path), 4).load("cut")


def test_missing_feature_file_is_counted(tmp_path):
    features = tmp_path / "features"
    features.mkdir()
    np.save(features / "present.npy", np.ones((6, 4), dtype=np.float32))
    path = write_queries(tmp_path / "test.jsonl", [query("present"), query("present", 2.0, 6.0), query("absent")])
    data = TemporalGroundingDataModule(NpyFolderFeatures(str(features), 4), 4, test_file=path, num_clips=4)
    with pytest.warns(UserWarning, match=r"1 videos have no features, so 1 of 3 queries are left out.*absent\.npy"):
        data.setup("test")
    assert len(data.datasets["test"]) == 2
    assert list(data.unavailable["test"]) == ["absent"]

    strict = TemporalGroundingDataModule(NpyFolderFeatures(str(features), 4), 4, test_file=path, num_clips=4, missing_features="error")
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        strict.setup("test")


def test_corrupt_and_truncated_videos_are_skipped(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (40, 64, 64, 3), dtype=np.uint8)
    write_mp4(videos / "good.mp4", frames)
    content = (videos / "good.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(content[: len(content) // 2])
    (videos / "corrupt.mp4").write_bytes(b"not a video" * 64)
    store = VideoFeatureStore(str(videos), extractor="rgb_histogram", sample_fps=4.0, cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="truncated.mp4"):
        unavailable = store.find_unavailable(["good", "truncated", "corrupt"])
    assert sorted(unavailable) == ["corrupt", "truncated"]
    assert "decord cannot open" in unavailable["corrupt"]
    assert str(videos / "corrupt.mp4") in unavailable["corrupt"]
    assert store.load("good").shape == (20, 64)  # 40 frames at 8 fps is 5 s, sampled at 4 fps


def test_feature_cache_decodes_once(tmp_path):
    generate_corpus(tmp_path / "corpus", {"train": 3}, seed=1)
    options = dict(extractor="rgb_histogram", sample_fps=2.0, cache_dir=str(tmp_path / "cache"))
    first = VideoFeatureStore(str(tmp_path / "corpus" / "videos"), **options)
    ids = ["train_0000", "train_0001", "train_0002"]
    assert first.find_unavailable(ids) == {}
    assert first.decoded_videos == 3
    second = VideoFeatureStore(str(tmp_path / "corpus" / "videos"), **options)
    assert second.find_unavailable(ids) == {}
    assert second.decoded_videos == 0
    assert np.array_equal(first.load("train_0001"), second.load("train_0001"))
    changed = VideoFeatureStore(str(tmp_path / "corpus" / "videos"), **{**options, "sample_fps": 1.0})
    changed.find_unavailable(ids[:1])
    assert changed.decoded_videos == 1  # other sampling settings have their own cache entries


def test_generated_video_shows_its_shape(tmp_path):
    generate_corpus(tmp_path, {"train": 1}, seed=3)
    row = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    store = VideoFeatureStore(str(tmp_path / "videos"), extractor="rgb_histogram", extractor_options={"power": 1.0}, sample_fps=8.0, cache_dir=str(tmp_path / "cache"))
    store.find_unavailable([row["video"]])
    features = store.load(row["video"])  # (T, 64) pixel fractions per colour bin, one row per frame
    assert features.shape[0] == round(row["duration"] * 8)
    background = features[:, 0]  # the dark level of all channels
    inside = slice(int(row["start"] * 8) + 1, int(row["end"] * 8) - 1)
    assert background[inside].max() < 0.97  # a shape covers part of each frame in the moment
    assert background.max() > background[inside].min()


def test_resized_decoding_matches_sample_count(tmp_path):
    frames = np.zeros((30, 48, 64, 3), dtype=np.uint8)
    write_mp4(tmp_path / "clip.mp4", frames, fps=10)
    store = VideoFeatureStore(str(tmp_path), extractor="color_grid", extractor_options={"grid": 2, "cell_pixels": 4}, num_samples=7, cache_dir=str(tmp_path / "cache"))
    assert store.find_unavailable(["clip"]) == {}
    assert store.load("clip").shape == (7, 12)


@requires_shared_data
def test_overreported_frame_count_does_not_hang(tmp_path):
    # tree.avi claims 444 frames in its header; 68 decode.
    script = (
        "import sys; from pathlib import Path; from datamodules.grounding.video_features import VideoFeatureStore;"
        f"s = VideoFeatureStore({str(SHARED_DATA / 'video' / 'opencv')!r}, extractor='rgb_histogram', num_samples=500, cache_dir={str(tmp_path)!r});"
        "assert s.find_unavailable(['tree.avi']) == {}; print(s.load('tree.avi').shape[0])"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "68"  # 500 requested samples collapse onto the 68 decodable frames


def test_random_features_are_stable():
    store = RandomFeatures(16, num_frames=5, seed=2)
    assert np.array_equal(store.load("v"), store.load("v"))
    assert not np.array_equal(store.load("v"), store.load("w"))
    assert store.load("v").shape == (5, 16)

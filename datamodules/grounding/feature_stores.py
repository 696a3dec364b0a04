"""Feature stores: map a video id to its clip features ``(T, F)`` float32.

- :class:`NpyFolderFeatures`: one ``.npy`` or ``.npz`` file per video in a folder.
- :class:`HDF5Features`: one HDF5 file with one dataset (or group) per video.
- :class:`RandomFeatures`: random stand-in features of a given size, for checking the data
  path when the real features are not at hand. Metrics on them are meaningless.
- :class:`~datamodules.grounding.video_features.VideoFeatureStore`: features computed from raw
  video files and cached on disk.

``find_unavailable`` reports which videos cannot be served, with the reason, so that the
data module can count and log them instead of shrinking a split silently.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class FeatureStore(ABC):
    """Clip features per video.

    Args:
        feature_dim: Feature size ``F``; every loaded array is checked against it.
    """

    def __init__(self, feature_dim: int) -> None:
        self.feature_dim = feature_dim

    @abstractmethod
    def find_unavailable(self, video_ids: list[str]) -> dict[str, str]:
        """Return ``{video_id: reason}`` for the videos whose features cannot be loaded."""

    @abstractmethod
    def read(self, video_id: str) -> np.ndarray:
        """Return the raw ``(T, F)`` array of a video."""

    def describe(self, video_id: str) -> str:
        """Return where the features of a video come from (for messages)."""
        return video_id

    def load(self, video_id: str) -> np.ndarray:
        """Return ``(T, F)`` float32 features, checked for rank and size.

        Raises:
            ValueError: The array is not 2-D, is empty, or has the wrong feature size.
        """
        array = np.asarray(self.read(video_id), dtype=np.float32)
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != self.feature_dim:
            raise ValueError(
                f"features of {self.describe(video_id)} have shape {array.shape}; expected (T >= 1, {self.feature_dim}). "
                f"Check feature_dim against the feature release."
            )
        return array


class NpyFolderFeatures(FeatureStore):
    """One file per video: ``folder / name_template.format(video_id=..., stem=...)``.

    Args:
        folder: Feature folder.
        feature_dim: Feature size ``F``.
        name_template: File name with ``{video_id}`` and/or ``{stem}`` (the id without a file
            extension, e.g. ``s17-d69`` for ``s17-d69.avi``); ``"{video_id}.npy"`` by default.
        npz_key: Array name inside ``.npz`` files; ``None`` takes the first array.
    """

    def __init__(self, folder: str, feature_dim: int, name_template: str = "{video_id}.npy", npz_key: str | None = None) -> None:
        super().__init__(feature_dim)
        self.folder = Path(folder).expanduser()
        self.name_template = name_template
        self.npz_key = npz_key

    def path_for(self, video_id: str) -> Path:
        return self.folder / self.name_template.format(video_id=video_id, stem=Path(video_id).stem)

    def describe(self, video_id: str) -> str:
        return str(self.path_for(video_id))

    def find_unavailable(self, video_ids: list[str]) -> dict[str, str]:
        return {video_id: f"feature file not found: {self.path_for(video_id)}" for video_id in video_ids if not self.path_for(video_id).is_file()}

    def read(self, video_id: str) -> np.ndarray:
        path = self.path_for(video_id)
        try:
            if path.suffix == ".npz":
                with np.load(path) as archive:
                    key = self.npz_key or archive.files[0]
                    return archive[key]
            return np.load(path)
        except (ValueError, OSError, EOFError, KeyError, IndexError) as error:
            raise ValueError(f"cannot read features from {path}: {error}. Re-extract or re-download this file.") from error


class HDF5Features(FeatureStore):
    """One HDF5 file: ``file[video_id]`` is the ``(T, F)`` array, or a group that contains ``dataset_name``.

    The file is opened lazily in each process (HDF5 handles must not cross a fork).

    Args:
        path: HDF5 file.
        feature_dim: Feature size ``F``.
        key_template: Key of a video, with ``{video_id}`` and/or ``{stem}``.
        dataset_name: Dataset inside the video's group (e.g. ``c3d_features``); ``None`` when the
            key is the dataset itself.
    """

    def __init__(self, path: str, feature_dim: int, key_template: str = "{video_id}", dataset_name: str | None = None) -> None:
        super().__init__(feature_dim)
        self.path = Path(path).expanduser()
        self.key_template = key_template
        self.dataset_name = dataset_name
        self._file = None

    def _handle(self):
        if self._file is None:
            import h5py

            if not self.path.is_file():
                raise FileNotFoundError(f"HDF5 feature file not found: {self.path}")
            self._file = h5py.File(self.path, "r")
        return self._file

    def key_for(self, video_id: str) -> str:
        key = self.key_template.format(video_id=video_id, stem=Path(video_id).stem)
        return f"{key}/{self.dataset_name}" if self.dataset_name else key

    def describe(self, video_id: str) -> str:
        return f"{self.path}[{self.key_for(video_id)}]"

    def find_unavailable(self, video_ids: list[str]) -> dict[str, str]:
        handle = self._handle()
        missing = {video_id: f"key {self.key_for(video_id)!r} not found in {self.path}" for video_id in video_ids if self.key_for(video_id) not in handle}
        self.close()  # reopened lazily, after any fork into loader workers
        return missing

    def read(self, video_id: str) -> np.ndarray:
        return self._handle()[self.key_for(video_id)][()]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state


class RandomFeatures(FeatureStore):
    """Random stand-in features: ``num_frames`` Gaussian vectors per video, fixed by ``seed`` and the id.

    Use only to check that a data format runs end to end; a model cannot learn from them.
    """

    def __init__(self, feature_dim: int, num_frames: int = 64, seed: int = 0) -> None:
        super().__init__(feature_dim)
        self.num_frames = num_frames
        self.seed = seed

    def describe(self, video_id: str) -> str:
        return f"random stand-in features of {video_id}"

    def find_unavailable(self, video_ids: list[str]) -> dict[str, str]:
        return {}

    def read(self, video_id: str) -> np.ndarray:
        digest = int.from_bytes(hashlib.sha256(f"{self.seed}:{video_id}".encode()).digest()[:8], "little")
        return np.random.default_rng(digest).standard_normal((self.num_frames, self.feature_dim), dtype=np.float32)

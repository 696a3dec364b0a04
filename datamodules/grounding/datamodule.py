"""LightningDataModule for temporal grounding: annotation files plus a feature store.

Each split reads one annotation file with the reader of ``annotation_format``; queries whose
video has no features (missing file, corrupt video) are counted and logged with the reason,
then skipped, or raise when ``missing_features="error"``.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from datamodules.grounding.annotations import ReadReport, read_annotations
from datamodules.grounding.dataset import GroundingDataset, collate_grounding
from datamodules.grounding.feature_stores import FeatureStore
from datamodules.grounding.synthetic_shapes import resolve_builtin_path
from datamodules.grounding.word_vectors import PACKAGED_GLOVE, load_word_vectors
from datamodules.samplers import EpochSeededRandomSampler

SPLITS = ("train", "val", "test", "predict")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
MAX_LOGGED_VIDEOS = 5


class TemporalGroundingDataModule(LightningDataModule):
    """Queries and clip features for FIAN.

    Args:
        features: Feature store (``class_path`` and ``init_args`` in a config), e.g.
            :class:`~datamodules.grounding.feature_stores.NpyFolderFeatures` or
            :class:`~datamodules.grounding.video_features.VideoFeatureStore`.
        feature_dim: Clip feature size ``F``; must equal the store's. The CLI links it to the model.
        annotation_format: ``charades_sta``, ``activitynet``, ``tacos`` or ``jsonl``.
        train_file: Training annotations; ``builtin:shapes/train.jsonl`` is the demo corpus.
        val_file: Validation annotations.
        test_file: Test annotations.
        predict_file: Annotations to predict on; ``None`` uses ``test_file``.
        durations_files: Per split, the file with video durations (Charades-STA: the Charades
            CSV). ``None`` uses the reader's default next to the annotation file.
        word_vectors: ``packaged:glove-6b-50d`` or a GloVe text file.
        num_clips: Clips per video ``N`` after resampling.
        max_words: Tokens kept per sentence.
        max_queries: Keep the first this many queries of each split (a subset for quick
            checks); ``None`` keeps all.
        missing_features: ``skip`` (count, log and skip) or ``error`` (raise) for queries
            whose video has no features.
        batch_size: Training batch size.
        eval_batch_size: Validation, test and predict batch size.
        num_workers: DataLoader worker processes.
        seed: Seed of the training order (reproducible across resumes).
    """

    def __init__(
        self,
        features: FeatureStore,
        feature_dim: int,
        annotation_format: str = "jsonl",
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        durations_files: dict[str, str] | None = None,
        word_vectors: str = PACKAGED_GLOVE,
        num_clips: int = 64,
        max_words: int = 30,
        max_queries: int | None = None,
        missing_features: str = "skip",
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if missing_features not in ("skip", "error"):
            raise ValueError(f"missing_features must be 'skip' or 'error', got {missing_features!r}.")
        if feature_dim != features.feature_dim:
            raise ValueError(f"feature_dim={feature_dim}, but the feature store gives {features.feature_dim}-d features.")
        self.save_hyperparameters(ignore=["features"])
        self.features = features
        self.files = {"train": train_file, "val": val_file, "test": test_file, "predict": predict_file or test_file}
        self.datasets: dict[str, GroundingDataset] = {}
        self.reports: dict[str, ReadReport] = {}
        self.unavailable: dict[str, dict[str, str]] = {}  # split -> {video_id: reason}

    def prepare_data(self) -> None:
        # Generates the demo corpus and fills a video feature cache once per node, before setup.
        for split in SPLITS:
            if self.files[split]:
                queries, _ = self.read_split(split, log=False)
                self.features.find_unavailable(sorted({query.video_id for query in queries}))

    def setup(self, stage: str | None = None) -> None:
        splits = STAGE_SPLITS.get(stage, SPLITS) if stage else SPLITS
        for split in splits:
            if self.files[split] and split not in self.datasets:
                self.datasets[split] = self.load_split(split)

    def read_split(self, split: str, log: bool = True) -> tuple[list, ReadReport]:
        """Read the annotations of one split (the first ``max_queries`` when set)."""
        hp = self.hparams
        options = {}
        if hp.durations_files and split in hp.durations_files:
            options["durations_path"] = hp.durations_files[split]
        queries, report = read_annotations(hp.annotation_format, resolve_builtin_path(self.files[split]), log=log, **options)
        if hp.max_queries is not None:
            queries = queries[: hp.max_queries]
        return queries, report

    def load_split(self, split: str) -> GroundingDataset:
        """Read one split, drop (and count) queries without features, and build its dataset."""
        hp = self.hparams
        queries, report = self.read_split(split)
        self.reports[split] = report

        unavailable = self.features.find_unavailable(sorted({query.video_id for query in queries}))
        if unavailable:
            dropped = [query for query in queries if query.video_id in unavailable]
            examples = "; ".join(f"{video}: {reason}" for video, reason in list(unavailable.items())[:MAX_LOGGED_VIDEOS])
            message = (
                f"{split}: {len(unavailable)} videos have no features, so {len(dropped)} of "
                f"{len(queries)} queries are left out. Examples: {examples}."
            )
            if hp.missing_features == "error":
                raise FileNotFoundError(message + " Provide the features or set missing_features='skip'.")
            rank_zero_warn(message + " Metrics cover only the remaining queries.")
            self.unavailable[split] = unavailable
            queries = [query for query in queries if query.video_id not in unavailable]
        if not queries:
            raise ValueError(f"{split}: no queries left from {self.files[split]}; see the messages above.")
        rank_zero_info(f"{split}: {len(queries)} queries over {len({q.video_id for q in queries})} videos.")
        word_vectors = load_word_vectors(hp.word_vectors)
        return GroundingDataset(queries, self.features, word_vectors, hp.num_clips, hp.max_words)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} data: set {split}_file in the data module's arguments.")
        dataset = self.datasets[split]
        hp = self.hparams
        return DataLoader(
            dataset,
            batch_size=hp.batch_size if shuffle else hp.eval_batch_size,
            sampler=EpochSeededRandomSampler(dataset, seed=hp.seed) if shuffle else None,
            collate_fn=collate_grounding,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)

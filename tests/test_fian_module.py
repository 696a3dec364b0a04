"""FIAN network, losses, the LightningModule end to end, DDP agreement and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

import cli
from callbacks.jsonl_prediction_writer import JsonlPredictionWriter
from datamodules.grounding.datamodule import TemporalGroundingDataModule
from datamodules.grounding.feature_stores import RandomFeatures
from datamodules.grounding.synthetic_shapes import generate_corpus
from datamodules.grounding.video_features import VideoFeatureStore
from lightning_modules.grounding.fian import FIAN
from lightning_modules.grounding.losses import grounding_loss, inside_mask
from lightning_modules.grounding.plotting import plot_predictions
from lightning_modules.temporal_grounding import TemporalGrounding
from tests.conftest import REPOSITORY, SHARED_DATA, requires_shared_data

CHARADES = SHARED_DATA / "grounding" / "charades_sta"
METRIC_NAMES = [f"r{k}_iou{t}" for k in (1, 5) for t in (0.1, 0.3, 0.5, 0.7)] + ["miou"]


def tiny_batch(batch_size=3, num_clips=8, feature_dim=6, words=5, word_dim=4):
    generator = torch.Generator().manual_seed(0)
    word_mask = torch.ones(batch_size, words, dtype=torch.bool)
    word_mask[1, 3:] = False
    clip_mask = torch.ones(batch_size, num_clips, dtype=torch.bool)
    clip_mask[2, 6:] = False
    return {
        "features": torch.randn(batch_size, num_clips, feature_dim, generator=generator),
        "clip_mask": clip_mask,
        "words": torch.randn(batch_size, words, word_dim, generator=generator),
        "word_mask": word_mask,
        "target_clips": torch.tensor([[1, 3], [0, 7], [4, 5]]),
    }


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"query_rnn": "lstm", "gate": "none", "update_words": True},
        {"video_rnn": False, "temporal_encoder": "conv", "temporal_layers": 2, "num_iterations": 3},
    ],
)
def test_fian_output_shapes_and_masks(options):
    torch.manual_seed(0)
    batch = tiny_batch()
    model = FIAN(feature_dim=6, word_dim=4, hidden_dim=8, **options)
    output = model(batch["features"], batch["clip_mask"], batch["words"], batch["word_mask"])
    for logits in (output.start_logits, output.end_logits, output.content_logits):
        assert logits.shape == (3, 8)
        assert bool((logits[2, 6:] < -1e8).all())  # padded clips can never be chosen
        assert bool(torch.isfinite(logits).all())
    assert torch.softmax(output.start_logits, dim=-1)[2, 6:].sum().item() == 0.0


def test_fian_ignores_padded_words():
    torch.manual_seed(0)
    batch = tiny_batch()
    model = FIAN(feature_dim=6, word_dim=4, hidden_dim=8).eval()
    before = model(batch["features"], batch["clip_mask"], batch["words"], batch["word_mask"]).start_logits
    batch["words"][1, 3:] = 100.0  # padding of query 1
    after = model(batch["features"], batch["clip_mask"], batch["words"], batch["word_mask"]).start_logits
    assert torch.allclose(before, after, atol=1e-5)


def test_fian_rejects_wrong_feature_size():
    model = FIAN(feature_dim=6, word_dim=4, hidden_dim=8)
    batch = tiny_batch(feature_dim=7)
    with pytest.raises(ValueError, match="feature_dim=6"):
        model(batch["features"], batch["clip_mask"], batch["words"], batch["word_mask"])


def test_inside_mask_and_loss_terms():
    assert inside_mask(torch.tensor([[1, 2], [0, 0]]), 4).tolist() == [[0, 1, 1, 0], [1, 0, 0, 0]]
    batch = tiny_batch()
    model = FIAN(feature_dim=6, word_dim=4, hidden_dim=8)
    output = model(batch["features"], batch["clip_mask"], batch["words"], batch["word_mask"])
    losses = grounding_loss(output, batch["target_clips"], batch["clip_mask"], boundary_weight=2.0, content_weight=0.5)
    expected_start = torch.nn.functional.cross_entropy(output.start_logits, batch["target_clips"][:, 0])
    assert losses["start"].item() == pytest.approx(expected_start.item())
    assert losses["loss"].item() == pytest.approx(2.0 * (losses["start"] + losses["end"]).item() + 0.5 * losses["content"].item(), rel=1e-5)


def test_fian_overfits_one_batch():
    torch.manual_seed(0)
    batch = tiny_batch()
    model = FIAN(feature_dim=6, word_dim=4, hidden_dim=16, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = grounding_loss(model(batch["features"], batch["clip_mask"], batch["words"], batch["word_mask"]), batch["target_clips"], batch["clip_mask"])["loss"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def write_jsonl(path: Path, count: int, videos: int = 6) -> str:
    rows = []
    for index in range(count):
        duration = 20.0 + index % 5
        start = float(index % 7)
        rows.append({"video": f"v{index % videos}", "duration": duration, "start": start, "end": start + 4.0 + index % 3, "sentence": f"person number {index} opens the door"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def quiet_trainer(root: Path, **options) -> Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root))
    return Trainer(**{**defaults, **options})


@requires_shared_data
def test_charades_standin_fit_test_predict(tmp_path):
    seed_everything(0)
    # Random 1024-d stand-ins for the I3D features: this checks the real annotation format end
    # to end; the metric values mean nothing.
    data = TemporalGroundingDataModule(
        RandomFeatures(1024, num_frames=40),
        1024,
        annotation_format="charades_sta",
        train_file=str(CHARADES / "charades_sta_train.txt"),
        val_file=str(CHARADES / "charades_sta_test.txt"),
        test_file=str(CHARADES / "charades_sta_test.txt"),
        num_clips=16,
        max_queries=48,
        batch_size=16,
        eval_batch_size=16,
    )
    model = TemporalGrounding(feature_dim=1024, hidden_dim=16, num_iterations=1)
    writer = JsonlPredictionWriter(output_dir=str(tmp_path))
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[writer])
    trainer.fit(model, datamodule=data)
    assert data.reports["train"].read == 12408

    (results,) = trainer.test(model, datamodule=data, verbose=False)
    for name in METRIC_NAMES:
        assert 0.0 <= results[f"test/{name}"] <= 1.0
        assert f"test/random/{name}" in results
    assert results["test/count"] == 48

    trainer.predict(model, datamodule=data, return_predictions=False)
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 48
    first = records[0]
    assert first["video"] == "3MSZA"
    assert first["sentence"] == "person turn a light on."
    assert len(first["moments"]) == 5
    assert all(0.0 <= start < end <= first["duration"] + 1e-3 for start, end, _ in first["moments"])
    assert [score for _, _, score in first["moments"]] == sorted((score for _, _, score in first["moments"]), reverse=True)
    image = plot_predictions(tmp_path / "predictions.jsonl", tmp_path / "spans.png", max_queries=4)
    assert image.stat().st_size > 1000


def test_generated_videos_train_through_decord(tmp_path):
    seed_everything(0)
    corpus = tmp_path / "corpus"
    generate_corpus(corpus, {"train": 4, "val": 2}, seed=5)
    store = VideoFeatureStore(str(corpus / "videos"), extractor="rgb_histogram", sample_fps=2.0, cache_dir=str(tmp_path / "cache"))
    data = TemporalGroundingDataModule(
        store, 64, train_file=str(corpus / "train.jsonl"), val_file=str(corpus / "val.jsonl"), test_file=str(corpus / "val.jsonl"), num_clips=16, batch_size=4
    )
    model = TemporalGrounding(feature_dim=64, hidden_dim=16, num_iterations=1)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=data)
    assert store.decoded_videos == 6  # every video decoded once, in the first epoch's setup
    assert trainer.callback_metrics["val/count"].item() == 6
    (results,) = trainer.test(model, datamodule=data, verbose=False)
    assert store.decoded_videos == 6  # testing reads the cache
    assert results["test/count"] == 6


def evaluate_random_queries(tmp_path: Path, devices: int) -> dict[str, float]:
    seed_everything(0)
    tmp_path.mkdir()
    data = TemporalGroundingDataModule(RandomFeatures(8, num_frames=12), 8, test_file=write_jsonl(tmp_path / "test.jsonl", 24), num_clips=10, eval_batch_size=5)
    torch.manual_seed(0)
    model = TemporalGrounding(feature_dim=8, hidden_dim=16, num_iterations=1)
    trainer = quiet_trainer(tmp_path, devices=devices, strategy="ddp_fork" if devices > 1 else "auto")
    trainer.test(model, datamodule=data, verbose=False)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


@pytest.mark.slow
def test_ddp_metrics_match_single_process(tmp_path):
    single = evaluate_random_queries(tmp_path / "one", devices=1)
    distributed = evaluate_random_queries(tmp_path / "two", devices=2)
    assert single["test/count"] == 24
    assert distributed["test/count"] == 24  # 24 queries split evenly: no padded duplicates
    for name in METRIC_NAMES:
        assert distributed[f"test/{name}"] == pytest.approx(single[f"test/{name}"], abs=1e-6), name
        assert distributed[f"test/random/{name}"] == pytest.approx(single[f"test/random/{name}"], abs=1e-6), name


def test_cli_fit_and_test(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"""
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 1
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {tmp_path}
model:
  class_path: lightning_modules.temporal_grounding.TemporalGrounding
  init_args:
    hidden_dim: 16
    num_iterations: 1
data:
  class_path: datamodules.grounding.datamodule.TemporalGroundingDataModule
  init_args:
    feature_dim: 8
    features:
      class_path: datamodules.grounding.feature_stores.RandomFeatures
      init_args: {{feature_dim: 8, num_frames: 12}}
    train_file: {write_jsonl(tmp_path / "train.jsonl", 16)}
    val_file: {write_jsonl(tmp_path / "val.jsonl", 8)}
    test_file: {write_jsonl(tmp_path / "test.jsonl", 8)}
    num_clips: 10
    batch_size: 8
"""
    )
    cli.main(args=["fit", "--config", str(config)])
    checkpoint = sorted(Path(tmp_path).rglob("*.ckpt"))
    assert [path.name for path in checkpoint] == ["epoch=0-step=2.ckpt"]
    assert (tmp_path / "config.yaml").is_file()
    tested = cli.build_cli(args=["test", "--config", str(config), "--ckpt_path", str(checkpoint[0])])
    assert tested.model.hparams.feature_dim == 8  # linked from the data module
    assert tested.trainer.callback_metrics["test/count"].item() == 8
    assert "test/random/r1_iou0.5" in tested.trainer.callback_metrics


@pytest.mark.parametrize("config", sorted((REPOSITORY / "configs" / "fian").glob("*.yaml")), ids=lambda path: path.name)
def test_configs_print(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args=["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "TemporalGrounding" in printed
    assert "feature_dim" in printed

"""Write prediction records (one JSON object per query) to a JSON-lines file.

Each process writes its own file while predicting (``predictions.rank<r>.jsonl``); at the
end, rank 0 merges them into ``predictions.jsonl`` in query order and removes the parts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


class JsonlPredictionWriter(BasePredictionWriter):
    """Append each batch's prediction records to a JSON-lines file.

    Args:
        output_dir: Folder of the output; ``None`` uses the trainer's log directory (or
            ``default_root_dir``).
        file_name: Name of the merged file.
    """

    def __init__(self, output_dir: str | None = None, file_name: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.file_name = file_name
        self.output_path: Path | None = None
        self._handle = None

    def _folder(self, trainer) -> Path:
        return Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)

    def _part_path(self, trainer, rank: int) -> Path:
        return self._folder(trainer) / f"{Path(self.file_name).stem}.rank{rank}.jsonl"

    def on_predict_start(self, trainer, pl_module) -> None:
        path = self._part_path(trainer, trainer.global_rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("w", encoding="utf-8")

    def write_on_batch_end(self, trainer, pl_module, prediction: list[dict[str, Any]], batch_indices, batch, batch_idx, dataloader_idx) -> None:
        for record in prediction:
            self._handle.write(json.dumps(record) + "\n")

    def on_predict_end(self, trainer, pl_module) -> None:
        self._handle.close()
        self._handle = None
        trainer.strategy.barrier("jsonl_prediction_writer")
        self.output_path = self._folder(trainer) / self.file_name
        if trainer.global_rank != 0:
            return
        records = {}
        for rank in range(trainer.world_size):
            part = self._part_path(trainer, rank)
            with part.open(encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    records[record["index"]] = record  # a padded duplicate from a distributed sampler collapses here
            part.unlink()
        with self.output_path.open("w", encoding="utf-8") as handle:
            for index in sorted(records):
                handle.write(json.dumps(records[index]) + "\n")
        rank_zero_info(f"Wrote {len(records)} predictions to {self.output_path}.")

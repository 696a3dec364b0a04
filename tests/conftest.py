"""Shared test settings: paths to the optional real data and clean distributed environments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ADAPTGROUND_SHARED_DATA", REPOSITORY.parent / "shared" / "data"))

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"the real public data folder {SHARED_DATA} is absent (set ADAPTGROUND_SHARED_DATA to its path)",
)

DISTRIBUTED_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "GROUP_RANK")


@pytest.fixture(autouse=True)
def _clean_distributed_environment():
    """Lightning leaves rank variables set after a distributed run; clear them around each test."""
    saved = {name: os.environ.pop(name) for name in DISTRIBUTED_VARIABLES if name in os.environ}
    yield
    for name in DISTRIBUTED_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(saved)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


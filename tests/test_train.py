"""train.py end to end on a tiny random model: the files it writes, a falling loss, exact resume."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_overrides

spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)

TINY = str(REPO / "configs" / "tiny.yaml")
CHECKPOINT_FILES = {"adapter_model.safetensors", "adapter_config.json", "connector.safetensors", "config.yaml",
                    "aptitude.json", "splits.json", "metrics.json", "zoo"}


def test_tiny_run_writes_the_checkpoint_and_loss_falls(tmp_path: Path) -> None:
    metrics = train.main(["--config", TINY, *tiny_overrides(tmp_path, **{"train.max_steps": 24, "train.save_every": 12,
                                                                         "train.batch_size": 4, "route.aptitude_prior": 1.0,
                                                                         "route.aptitude_neighbours": 3,
                                                                         "route.category_prior": 1.0})])
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir() if not p.name.startswith(".")} >= {"step-000012", "step-000024", "final"}
    # the route's priors read the nearest aptitude questions and a category guess: what they need is stored with
    # the final router
    assert {p.name for p in (run / "final").iterdir()} == CHECKPOINT_FILES | {"aptitude_embeddings.safetensors",
                                                                           "category_classifier.safetensors"}
    assert {p.name for p in (run / "step-000012").iterdir()} == CHECKPOINT_FILES | {"training_state.pt"}
    zoo = sorted(json.loads(p.read_text())["name"] for p in (run / "final" / "zoo").glob("*.json"))
    assert zoo == ["m-bio", "m-law", "m-math", "m-weak"]          # the unseen model is not trained on
    losses = [h["loss"] for h in metrics["history"]]
    assert len(losses) == 24
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6
    assert 0.0 <= metrics["val"]["accuracy"] <= 1.0
    assert 0.0 <= metrics["val"]["auc"] <= 1.0 and 0.0 <= metrics["val"]["brier"] <= 1.0
    assert 0.0 <= metrics["val"]["interaction_auc"] <= 1.0
    saved = json.loads((run / "final" / "metrics.json").read_text())
    assert saved["step"] == 24 and saved["val"] == metrics["val"]


def test_resume_continues_at_the_saved_step_with_the_same_data(tmp_path: Path) -> None:
    full = train.main(["--config", TINY, *tiny_overrides(tmp_path / "a", **{"train.max_steps": 6})])
    part = tiny_overrides(tmp_path / "b", **{"train.max_steps": 6, "train.save_every": 4})
    train.main(["--config", TINY, *part])                   # as if it had stopped after the step-4 checkpoint
    state_file = tmp_path / "b" / "run" / "step-000004" / "training_state.pt"
    state = torch.load(state_file, weights_only=False)
    assert 0.0 < state["train_time_s"] < 600.0
    state["train_time_s"] = 1000.0                         # as if the first four steps had taken 1000 s
    torch.save(state, state_file)
    resumed = train.main(["--config", TINY, *part, "train.resume=true"])
    assert [h["step"] for h in resumed["history"]] == list(range(1, 7))
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]], abs=1e-5)
    assert 1000.0 <= resumed["train_time_s"] < 1600.0      # the time counts the whole run across the resume
    # The max_minutes budget counts the whole run too: 1000 s already spent is over a 10-minute cap.
    capped = train.main(["--config", TINY, *part, "train.resume=true", "train.max_minutes=10"])
    assert capped["step"] == 5


def test_bad_override_is_a_clear_error(tmp_path: Path) -> None:
    from modelsat.config import ConfigError

    with pytest.raises(ConfigError, match="train.group_size"):
        train.main(["--config", TINY, *tiny_overrides(tmp_path), "train.group_size=0"])

"""The layout of a router checkpoint (DESIGN §2.6), written whole and checked on load.

    <dir>/adapter_model.safetensors, adapter_config.json   LoRA adapter (PEFT format)
    <dir>/connector.safetensors                            capability encoder / connector
    <dir>/config.yaml                                      the resolved config
    <dir>/aptitude.json, splits.json, metrics.json
    <dir>/zoo/                                             one entry per candidate model
    <dir>/training_state.pt                                optimizer, scheduler and step; step folders only (resume)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsat.io_utils import atomic_dir, atomic_write_text

if TYPE_CHECKING:  # torch-heavy imports only for type checkers
    from modelsat.aptitude import Aptitude
    from modelsat.config import Config
    from modelsat.data.table import RoutingTable
    from modelsat.model import RouterModel

CHECKPOINT_FILES = ("config.yaml", "aptitude.json", "adapter_model.safetensors", "adapter_config.json",
                    "connector.safetensors")


class CheckpointError(ValueError):
    """A checkpoint folder is missing or incomplete."""


def check_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder, with a clear error when it is missing or partial."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    missing = [f for f in CHECKPOINT_FILES if not (path / f).is_file()]
    if not (path / "zoo").is_dir():
        missing.append("zoo/")
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)} "
                              "(was training interrupted before it was written?)")
    return path


def save_checkpoint(path: Path, model: "RouterModel", cfg: "Config", aptitude: "Aptitude",
                    splits: dict[str, list[str]], metrics: dict, table: "RoutingTable", zoo_models: list[str],
                    state: dict[str, Any] | None = None) -> None:
    """Write a complete router checkpoint to a temporary folder, then rename it onto `path`."""
    import torch

    from modelsat.zoo import Zoo

    with atomic_dir(path) as tmp:
        model.save_trained(tmp)
        cfg.save(tmp / "config.yaml")
        aptitude.save(tmp / "aptitude.json")
        atomic_write_text(tmp / "splits.json", json.dumps({**splits, "aptitude_fingerprint": aptitude.fingerprint}))
        atomic_write_text(tmp / "metrics.json", json.dumps(metrics, indent=1))
        (tmp / "zoo").mkdir()
        zoo = Zoo(aptitude, tmp / "zoo")
        info = table.models.set_index("model")
        for m in zoo_models:
            scores = table.score_matrix(aptitude.question_ids, [m])[:, 0]
            row = info.loc[m] if m in info.index else {}
            zoo.add(m, dict(zip(aptitude.question_ids, scores.tolist())), cost=row.get("cost"),
                    params_b=row.get("params_b"), cost_unit=str(row.get("cost_unit") or ""))
        if state is not None:
            torch.save(state, tmp / "training_state.pt")

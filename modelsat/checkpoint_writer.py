"""Writing a router checkpoint (the layout of `modelsat/checkpoint.py`): whole and atomically, for
`Router.save_pretrained` and train.py's step folders, and upgrading a checkpoint of an older format in place.

    write_checkpoint("runs/x/final", model, cfg, aptitude, zoo, metrics=metrics, splits=splits)
    upgrade_checkpoint("checkpoints/old-router")            # format 1 → 2; False where it was current
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from modelsat.aptitude import Aptitude
from modelsat.category import CategoryClassifier
from modelsat.checkpoint import (FORMAT_FILE, FORMAT_VERSION, CheckpointError, check_checkpoint, check_files,
                                 checkpoint_format, read_provenance)
from modelsat.config import Config, load_config
from modelsat.data.table import RoutingTable
from modelsat.io_utils import atomic_dir, atomic_write_text
from modelsat.model import RouterModel
from modelsat.model_card import model_card
from modelsat.pretrained import portable_name
from modelsat.bank import BANK_FILE, ResultsBank, copy_bank
from modelsat.version import __version__
from modelsat.weights import save_aptitude_embeddings, save_category_classifier, save_trained
from modelsat.zoo import Zoo


def _write_provenance(tmp: Path, cfg: Config, aptitude: Aptitude, zoo: Zoo, metrics: dict | None,
                      splits: dict | None, name: str) -> None:
    """The model card (titled `name`) and, last, the format file of a checkpoint being written in `tmp`."""
    model_card(cfg, aptitude, zoo, metrics, splits, name=name).save(tmp / "README.md")
    atomic_write_text(tmp / FORMAT_FILE, json.dumps({"format": "modelsat-router", "format_version": FORMAT_VERSION,
                                                     "modelsat_version": __version__}, indent=1))


def save_checkpoint(path: Path, model: RouterModel, cfg: Config, aptitude: Aptitude,
                    splits: dict[str, list[str]], metrics: dict, table: RoutingTable, zoo_models: list[str],
                    state: dict[str, Any] | None = None, aptitude_embeddings: torch.Tensor | None = None,
                    category_classifier: CategoryClassifier | None = None, bank: Path | None = None) -> None:
    """Write a complete router checkpoint to a temporary folder, then rename it onto `path` (with
    `aptitude_embeddings`, the (A, D) unit embeddings of the aptitude questions, and `category_classifier`, both
    computed with the model's sentence encoder, and `bank`, the results bank file of the zoo)."""
    zoo = Zoo(aptitude)
    for m in zoo_models:
        scores = table.outcome_matrix(aptitude.question_ids, [m])[:, 0]
        zoo.add(m, dict(zip(aptitude.question_ids, scores.tolist())), persist=False,
                **table.model_meta(m))                                                      # blank: unknown
    write_checkpoint(path, model, cfg, aptitude, zoo, splits={**splits, "aptitude_fingerprint": aptitude.fingerprint},
                     metrics=metrics, state=state, aptitude_embeddings=aptitude_embeddings,
                     category_classifier=category_classifier, bank=bank)


def write_checkpoint(path: str | Path, model: RouterModel, cfg: Config, aptitude: Aptitude, zoo: Zoo,
                     splits: dict | None = None, metrics: dict | None = None, state: dict[str, Any] | None = None,
                     aptitude_embeddings: torch.Tensor | None = None,
                     category_classifier: CategoryClassifier | None = None,
                     bank: ResultsBank | Path | None = None) -> None:
    """Write a complete checkpoint of `model` with the zoo `zoo` (its entries as they are in memory) to a temporary
    folder, then rename it onto `path` (replacing an earlier checkpoint there): what trained, the config, the
    aptitude test, the zoo and its results bank (`bank`, an open one or a file), the optional files, the model card
    and the format file. `splits` and `metrics` are
    provenance (written where given). Raises CheckpointError where `path` is a non-empty folder that is not a
    checkpoint (its files would be lost)."""
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not any((path / f).exists() for f in (FORMAT_FILE, "config.yaml")):
        raise CheckpointError(f"{path} is a folder that holds other files, not a router checkpoint: writing the "
                              "checkpoint there would replace them; give a new or empty folder")
    with atomic_dir(path) as tmp:
        save_trained(model, tmp)
        cfg.save(tmp / "config.yaml")
        aptitude.save(tmp / "aptitude.json")
        if splits is not None:
            atomic_write_text(tmp / "splits.json", json.dumps(splits))
        if metrics is not None:
            atomic_write_text(tmp / "metrics.json", json.dumps(metrics, indent=1))
        zoo.save(tmp / "zoo")
        if bank is not None:
            copy_bank(bank, tmp / "zoo" / BANK_FILE)
        if state is not None:
            torch.save(state, tmp / "training_state.pt")
        if aptitude_embeddings is not None:
            save_aptitude_embeddings(tmp, aptitude_embeddings, aptitude, cfg.model.sentence_encoder)
        if category_classifier is not None:
            save_category_classifier(tmp, category_classifier, aptitude, cfg.model.sentence_encoder)
        _write_provenance(tmp, cfg, aptitude, zoo, metrics, splits, Path(path).name)


def upgrade_checkpoint(path: str | Path) -> bool:
    """Bring a checkpoint of format 1 or 2 to FORMAT_VERSION in place: the adapter's base model recorded by its
    portable name; `model.evidence_source: aptitude` where it reads evidence (its evidence read the aptitude answers
    alone, before the results bank); a model card; the format file (written last: an interrupted upgrade leaves the
    old format, to be run again). Returns False where it was already current. Raises CheckpointError where it is
    incomplete or newer."""
    path = check_files(path)                   # no folder, a file, incomplete: its error
    if checkpoint_format(path) >= FORMAT_VERSION:
        check_checkpoint(path)                  # newer: its error
        return False
    cfg = load_config(path / "config.yaml")
    if cfg.model.evidence:
        cfg.model.evidence_source = "aptitude"
        cfg.save(path / "config.yaml")
    aptitude = Aptitude.load(path / "aptitude.json")
    zoo = Zoo.load(path / "zoo", aptitude)
    adapter = path / "adapter_config.json"
    try:
        settings = json.loads(adapter.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{adapter} is not readable JSON ({type(e).__name__}); re-copy the checkpoint") from e
    settings["base_model_name_or_path"] = portable_name(cfg.model.llm)
    atomic_write_text(adapter, json.dumps(settings, indent=2, sort_keys=True))
    metrics, splits = read_provenance(path)
    _write_provenance(path, cfg, aptitude, zoo, metrics, splits, path.name)
    return True

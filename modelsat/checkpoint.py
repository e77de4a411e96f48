"""The layout of a router checkpoint (DESIGN §2.6), written whole and checked on load.

    <dir>/modelsat.json                                    the checkpoint format (FORMAT_VERSION) and the
                                                           modelsat version that wrote it, checked on load
    <dir>/README.md                                        the model card (`modelsat.model_card`)
    <dir>/adapter_model.safetensors, adapter_config.json   LoRA adapter (PEFT format; the base model recorded by
                                                           its portable name, `pretrained.portable_name`)
    <dir>/connector.safetensors                            capability encoder / connector
    <dir>/config.yaml                                      the resolved config
    <dir>/aptitude.json, splits.json, metrics.json
    <dir>/zoo/                                             one entry per candidate model
    <dir>/aptitude_embeddings.safetensors                  the aptitude questions' sentence embeddings, where the
                                                           model reads the aptitude evidence (optional: else
                                                           computed on load, ~1 min on a CPU)
    <dir>/category_classifier.safetensors                  the evidence's category classifier (`model.evidence`)
    <dir>/training_state.pt                                optimizer, scheduler and step; step folders only (resume)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsat import __version__
from modelsat.io_utils import atomic_dir, atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:  # torch-heavy imports only for type checkers
    import torch

    from modelsat.aptitude import Aptitude
    from modelsat.category import CategoryClassifier
    from modelsat.config import Config
    from modelsat.data.table import RoutingTable
    from modelsat.model import RouterModel
    from modelsat.zoo import Zoo

FORMAT_FILE = "modelsat.json"
FORMAT_VERSION = 2
"""The checkpoint format this modelsat writes and reads. 1: before modelsat 0.2 (no modelsat.json, the adapter's base
model a path on the training machine, no model card); `upgrade_checkpoint` turns it into 2."""
APTITUDE_EMBEDDINGS = "aptitude_embeddings.safetensors"
CATEGORY_CLASSIFIER = "category_classifier.safetensors"
CHECKPOINT_FILES = ("config.yaml", "aptitude.json", "adapter_model.safetensors", "adapter_config.json",
                    "connector.safetensors")


class CheckpointError(ValueError):
    """A checkpoint folder is missing or incomplete."""


def check_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder, with a clear error when it is missing or partial (or `path` is no path at all), or
    in another format than FORMAT_VERSION."""
    path = _check_files(path)
    version = checkpoint_format(path)
    if version < FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is in format {version} (written before modelsat 0.2); this modelsat "
                              f"reads format {FORMAT_VERSION}: run `modelsat checkpoint upgrade {path}` once")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is in format {version}, newer than the format {FORMAT_VERSION} this "
                              f"modelsat {__version__} reads; upgrade modelsat (`pip install -U modelsat`)")
    return path


def _check_files(path: str | Path) -> Path:
    """The checkpoint folder where it holds every file of a checkpoint (any format), else a CheckpointError."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise CheckpointError(f"a checkpoint path is needed (got {str(path)[:40]!r}); give the folder of a trained "
                              "router, e.g. checkpoints/modelsat-smollm2-mmlupro")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a file, not a folder; give the folder of a trained router "
                              "(the one holding config.yaml and zoo/)")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    missing = [f for f in CHECKPOINT_FILES if not (path / f).is_file()]
    if (path / "zoo").exists() and not (path / "zoo").is_dir():
        raise CheckpointError(f"checkpoint {path}: {path / 'zoo'} is a file, not a folder; the zoo is a folder of "
                              "entries (*.json): remove the file, or re-copy the checkpoint folder")
    if not (path / "zoo").is_dir():
        missing.append("zoo/")
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)} "
                              "(was training interrupted before it was written?)")
    return path


def checkpoint_format(path: str | Path) -> int:
    """The format version of the checkpoint folder `path` (its modelsat.json; 1 where there is none); a
    CheckpointError where the file cannot be read or does not give a version."""
    file = Path(path) / FORMAT_FILE
    if not file.exists():
        return 1
    try:
        version = json.loads(file.read_text(encoding="utf-8")).get("format_version")
    except (OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{file} is not a readable format file ({type(e).__name__}); re-copy the checkpoint "
                              "folder") from e
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{file} gives the format version {version!r}, not a positive integer; re-copy the "
                              "checkpoint folder")
    return version


def _write_provenance(tmp: Path, cfg: "Config", aptitude: "Aptitude", zoo: "Zoo", metrics: dict | None,
                      splits: dict | None, name: str) -> None:
    """The model card (titled `name`) and, last, the format file of a checkpoint being written in `tmp`."""
    from modelsat.model_card import model_card

    model_card(cfg, aptitude, zoo, metrics, splits, name=name).save(tmp / "README.md")
    atomic_write_text(tmp / FORMAT_FILE, json.dumps({"format": "modelsat-router", "format_version": FORMAT_VERSION,
                                                     "modelsat_version": __version__}, indent=1))


def save_checkpoint(path: Path, model: "RouterModel", cfg: "Config", aptitude: "Aptitude",
                    splits: dict[str, list[str]], metrics: dict, table: "RoutingTable", zoo_models: list[str],
                    state: dict[str, Any] | None = None, aptitude_embeddings: "torch.Tensor | None" = None,
                    category_classifier: "CategoryClassifier | None" = None) -> None:
    """Write a complete router checkpoint to a temporary folder, then rename it onto `path` (with
    `aptitude_embeddings`, the (A, D) unit embeddings of the aptitude questions, and `category_classifier`, both
    computed with the model's sentence encoder)."""
    from modelsat.zoo import Zoo

    zoo = Zoo(aptitude)
    for m in zoo_models:
        scores = table.score_matrix(aptitude.question_ids, [m])[:, 0]
        zoo.add(m, dict(zip(aptitude.question_ids, scores.tolist())), persist=False,
                **table.model_meta(m))                                                      # blank: unknown
    write_checkpoint(path, model, cfg, aptitude, zoo, splits={**splits, "aptitude_fingerprint": aptitude.fingerprint},
                     metrics=metrics, state=state, aptitude_embeddings=aptitude_embeddings,
                     category_classifier=category_classifier)


def write_checkpoint(path: str | Path, model: "RouterModel", cfg: "Config", aptitude: "Aptitude", zoo: "Zoo",
                     splits: dict | None = None, metrics: dict | None = None, state: dict[str, Any] | None = None,
                     aptitude_embeddings: "torch.Tensor | None" = None,
                     category_classifier: "CategoryClassifier | None" = None) -> None:
    """Write a complete checkpoint of `model` with the zoo `zoo` (its entries as they are in memory) to a temporary
    folder, then rename it onto `path` (replacing an earlier checkpoint there): what trained, the config, the
    aptitude test, the zoo, the optional files, the model card and the format file. `splits` and `metrics` are
    provenance (written where given). Raises CheckpointError where `path` is a non-empty folder that is not a
    checkpoint (its files would be lost)."""
    import torch

    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not any((path / f).exists() for f in (FORMAT_FILE, "config.yaml")):
        raise CheckpointError(f"{path} is a folder that holds other files, not a router checkpoint: writing the "
                              "checkpoint there would replace them; give a new or empty folder")
    with atomic_dir(path) as tmp:
        model.save_trained(tmp)
        cfg.save(tmp / "config.yaml")
        aptitude.save(tmp / "aptitude.json")
        if splits is not None:
            atomic_write_text(tmp / "splits.json", json.dumps(splits))
        if metrics is not None:
            atomic_write_text(tmp / "metrics.json", json.dumps(metrics, indent=1))
        zoo.save(tmp / "zoo")
        if state is not None:
            torch.save(state, tmp / "training_state.pt")
        if aptitude_embeddings is not None:
            save_aptitude_embeddings(tmp, aptitude_embeddings, aptitude, cfg.model.sentence_encoder)
        if category_classifier is not None:
            save_category_classifier(tmp, category_classifier, aptitude, cfg.model.sentence_encoder)
        _write_provenance(tmp, cfg, aptitude, zoo, metrics, splits, Path(path).name)


def read_provenance(path: str | Path) -> tuple[dict | None, dict | None]:
    """A checkpoint's `metrics.json` and `splits.json` (None where absent); a CheckpointError where unreadable."""
    out = []
    for name in ("metrics.json", "splits.json"):
        file = Path(path) / name
        try:
            out.append(json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{file} is not readable JSON ({type(e).__name__}); re-copy the checkpoint "
                                  "folder") from e
    return out[0], out[1]


def upgrade_checkpoint(path: str | Path) -> bool:
    """Bring a checkpoint of format 1 to FORMAT_VERSION in place: the adapter's base model recorded by its portable
    name, a model card, the format file (written last: an interrupted upgrade leaves format 1, to be run again).
    Returns False where it was already current. Raises CheckpointError where it is incomplete or newer."""
    from modelsat.aptitude import Aptitude
    from modelsat.config import load_config
    from modelsat.pretrained import portable_name
    from modelsat.zoo import Zoo

    path = _check_files(path)                   # no folder, a file, incomplete: its error
    if checkpoint_format(path) >= FORMAT_VERSION:
        check_checkpoint(path)                  # newer: its error
        return False
    cfg = load_config(path / "config.yaml")
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


def _write_stamped(file: Path, tensors: dict[str, "torch.Tensor"], aptitude: "Aptitude", encoder: str,
                   **meta: str) -> None:
    """Write `tensors` to a safetensors `file` (atomically), stamped with the aptitude test and the encoder."""
    from safetensors.torch import save

    stamp = {"aptitude_fingerprint": aptitude.fingerprint, "sentence_encoder": encoder, **meta}
    atomic_write_bytes(file, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=stamp))


def _read_stamped(file: Path, names: tuple[str, ...], aptitude: "Aptitude", encoder: str, what: str,
                  fix: str) -> tuple[dict[str, "torch.Tensor"], dict[str, str]] | None:
    """The tensors `names` and the metadata of a file `_write_stamped` wrote, None where there is no file; a
    CheckpointError, ending with `fix`, where it is broken or was made for another aptitude test or encoder."""
    from safetensors import SafetensorError, safe_open

    if not file.is_file():
        return None
    try:
        with safe_open(file, "pt") as f:
            meta, tensors = f.metadata() or {}, {n: f.get_tensor(n) for n in names}
    except (SafetensorError, OSError, KeyError) as e:
        raise CheckpointError(f"{file} is not a readable {what} file ({e}){fix}") from e
    if meta.get("aptitude_fingerprint") != aptitude.fingerprint:
        raise CheckpointError(f"{file} was computed for the aptitude test {str(meta.get('aptitude_fingerprint'))[:12]}"
                              f"…, but the checkpoint's aptitude.json is {aptitude.fingerprint[:12]}…{fix}")
    if meta.get("sentence_encoder") != encoder:
        raise CheckpointError(f"{file} was computed with the sentence encoder {meta.get('sentence_encoder')!r}, but "
                              f"the config's model.sentence_encoder is {encoder!r}{fix}")
    return tensors, meta


def save_aptitude_embeddings(directory: str | Path, embeddings: "torch.Tensor", aptitude: "Aptitude",
                             encoder: str) -> None:
    """Write the aptitude questions' (A, D) embeddings to `directory`, stamped with the test, the encoder and how it
    reads a long question (`pretrained.WINDOW_RULE`)."""
    from modelsat.pretrained import WINDOW_RULE

    if embeddings.ndim != 2 or embeddings.shape[0] != len(aptitude.question_ids):
        raise ValueError(f"aptitude embeddings of shape {tuple(embeddings.shape)} do not match the aptitude test's "
                         f"{len(aptitude.question_ids)} questions")
    _write_stamped(Path(directory) / APTITUDE_EMBEDDINGS, {"embeddings": embeddings.float()}, aptitude, encoder,
                   window=WINDOW_RULE)


def load_aptitude_embeddings(directory: str | Path, aptitude: "Aptitude", encoder: str) -> "torch.Tensor | None":
    """The stored (A, D) aptitude embeddings of a checkpoint, None where it has none; a clear error where they
    were computed for another aptitude test or encoder, reading long questions another way, or the file is broken."""
    from modelsat.pretrained import WINDOW_RULE

    file = Path(directory) / APTITUDE_EMBEDDINGS
    fix = f"; delete {file.name} to recompute the embeddings on load"
    read = _read_stamped(file, ("embeddings",), aptitude, encoder, "aptitude-embeddings", fix)
    if read is None:
        return None
    emb, window = read[0]["embeddings"], read[1].get("window", "the first max_length tokens (head only)")
    if window != WINDOW_RULE:      # questions longer than the encoder's window were embedded from other tokens
        raise CheckpointError(f"{file} was computed reading long questions as {window}, but this modelsat reads them "
                              f"as {WINDOW_RULE}{fix}")
    if emb.ndim != 2 or emb.shape[0] != len(aptitude.question_ids):
        raise CheckpointError(f"{file} holds embeddings of shape {tuple(emb.shape)}, but the aptitude test has "
                              f"{len(aptitude.question_ids)} questions{fix}")
    return emb


def save_category_classifier(directory: str | Path, classifier: "CategoryClassifier", aptitude: "Aptitude",
                             encoder: str) -> None:
    """Write the aptitude evidence's category classifier to `directory`, stamped with the aptitude test and the encoder."""
    if len(classifier.aptitude_category) != len(aptitude.question_ids):
        raise ValueError(f"the classifier has categories for {len(classifier.aptitude_category)} aptitude questions, "
                         f"the aptitude test has {len(aptitude.question_ids)}")
    _write_stamped(Path(directory) / CATEGORY_CLASSIFIER,
                   {"weight": classifier.weight.float(), "bias": classifier.bias.float(),
                    "aptitude_category": classifier.aptitude_category.long()},
                   aptitude, encoder, classes=json.dumps(classifier.classes))


def load_category_classifier(directory: str | Path, aptitude: "Aptitude", encoder: str) -> "CategoryClassifier | None":
    """The checkpoint's category classifier, None where it has none; a clear error where it was made for another
    aptitude test or encoder, or the file is broken."""
    from modelsat.category import CategoryClassifier

    file = Path(directory) / CATEGORY_CLASSIFIER
    fix = (f"; retrain to rewrite it (train.py writes {file.name} when model.evidence is true); a router whose "
           "config.yaml has model.evidence: false routes without it once the file is deleted")
    read = _read_stamped(file, ("weight", "bias", "aptitude_category"), aptitude, encoder, "category-classifier", fix)
    if read is None:
        return None
    t, meta = read
    try:
        classes = json.loads(meta["classes"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{file} does not name its categories ({e}){fix}") from e
    if (t["weight"].ndim != 2 or t["weight"].shape[0] != len(classes) or t["bias"].shape != (len(classes),)
            or t["aptitude_category"].shape != (len(aptitude.question_ids),)):
        raise CheckpointError(f"{file} has {len(classes)} categories, a weight of shape {tuple(t['weight'].shape)} "
                              f"and categories for {len(t['aptitude_category'])} aptitude questions, which do not fit "
                              f"together or the aptitude test's {len(aptitude.question_ids)} questions{fix}")
    return CategoryClassifier(classes, t["weight"], t["bias"], t["aptitude_category"])

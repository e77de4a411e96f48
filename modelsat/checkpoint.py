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

This module checks a folder and reads its small files (no torch: `modelsat zoo list` stays quick);
`modelsat/weights.py` reads and writes its tensors, `modelsat/checkpoint_writer.py` writes a checkpoint whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from modelsat.version import __version__

FORMAT_FILE = "modelsat.json"
FORMAT_VERSION = 2
"""The checkpoint format this modelsat writes and reads. 1: before modelsat 0.2 (no modelsat.json, the adapter's base
model a path on the training machine, no model card); `upgrade_checkpoint` turns it into 2."""
APTITUDE_EMBEDDINGS = "aptitude_embeddings.safetensors"
CATEGORY_CLASSIFIER = "category_classifier.safetensors"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
CONNECTOR_FILE = "connector.safetensors"
CHECKPOINT_FILES = ("config.yaml", "aptitude.json", *ADAPTER_FILES, CONNECTOR_FILE)


class CheckpointError(ValueError):
    """A checkpoint folder or one of its files is missing, unreadable or made for another model or format."""


def check_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder, with a clear error when it is missing or partial (or `path` is no path at all), or
    in another format than FORMAT_VERSION."""
    path = check_files(path)
    version = checkpoint_format(path)
    if version < FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is in format {version} (written before modelsat 0.2); this modelsat "
                              f"reads format {FORMAT_VERSION}: run `modelsat checkpoint upgrade {path}` once")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is in format {version}, newer than the format {FORMAT_VERSION} this "
                              f"modelsat {__version__} reads; upgrade modelsat (`pip install -U modelsat`)")
    return path


def check_files(path: str | Path) -> Path:
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

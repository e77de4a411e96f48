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

A router is named by a checkpoint folder, by the name of a router shipped with the package (`shipped_routers()`:
package data under `modelsat/routers/`, about 7 MB each), or by a Hugging Face hub repository id; `locate_checkpoint`
turns any of them into a folder, and says whether that folder may be written to (a shipped router, an installed
package's file or a downloaded hub snapshot may not: `copy_checkpoint` makes a copy that may).

This module checks a folder and reads its small files (no torch: `modelsat zoo list` stays quick);
`modelsat/weights.py` reads and writes its tensors, `modelsat/checkpoint_writer.py` writes a checkpoint whole.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from modelsat.io_utils import atomic_dir
from modelsat.version import __version__

FORMAT_FILE = "modelsat.json"
FORMAT_VERSION = 3
"""The checkpoint format this modelsat writes and reads. 1: before modelsat 0.2 (no modelsat.json, the adapter's base
model a path on the training machine, no model card). 2: modelsat 0.2, whose evidence read the aptitude answers alone
(no `model.evidence_source` in its config). 3: the results bank (`zoo/bank.sqlite`, `model.evidence_source`).
`upgrade_checkpoint` turns 1 and 2 into 3."""
APTITUDE_EMBEDDINGS = "aptitude_embeddings.safetensors"
CATEGORY_CLASSIFIER = "category_classifier.safetensors"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
CONNECTOR_FILE = "connector.safetensors"
CHECKPOINT_FILES = ("config.yaml", "aptitude.json", *ADAPTER_FILES, CONNECTOR_FILE)


ROUTERS = Path(__file__).parent / "routers"
"""The routers shipped with the package (package data; `checkpoints/` at the repository's root links here)."""
DEFAULT_ROUTER = "modelsat-smollm2-mmlupro"
"""The shipped router `modelsat rank` uses when no --checkpoint is given (24 MMLU-Pro models, benchmarks/RESULTS.md)."""


class CheckpointError(ValueError):
    """A checkpoint folder or one of its files is missing, unreadable or made for another model or format."""


def shipped_routers() -> list[str]:
    """The names of the routers shipped with the package (`modelsat-smollm2-mmlupro`, ...), each a checkpoint folder
    under `ROUTERS` holding its format file."""
    if not ROUTERS.is_dir():
        return []
    return sorted(p.name for p in ROUTERS.iterdir() if (p / FORMAT_FILE).is_file())


def _installed(folder: Path) -> bool:
    """Whether `folder` lies inside the shipped routers of an installed package (site-packages), not of a source
    checkout (which has its pyproject.toml beside the package): files pip owns, which no command writes to."""
    try:
        folder.resolve().relative_to(ROUTERS.resolve())
    except (OSError, ValueError):
        return False
    return not (ROUTERS.parent.parent / "pyproject.toml").is_file()


@dataclass(frozen=True)
class Located:
    """Where a router named by the user lies: `path`, its folder; `read_only`, why it must not be written to and what
    to do instead (None where it may be: a folder of the user's)."""
    path: Path
    read_only: str | None = None


def _copy_hint(name: str) -> str:
    return (f"copy it first (`modelsat checkpoint copy {name} DIR`, or `Router.from_pretrained({name!r})"
            ".save_pretrained(DIR)` in Python), then use DIR")


def locate_checkpoint(name_or_path: object, *, revision: str | None = None, cache_dir: str | Path | None = None,
                      force_download: bool = False, local_files_only: bool = False,
                      token: str | bool | None = None) -> Located:
    """The folder of the router `name_or_path`: a folder that exists (a path wins over a name; a path that is
    absolute, starts with . or ~, or has two slashes must exist), else a shipped router's name (`shipped_routers`),
    else a Hugging Face hub repository id (`org/name`), downloaded with
    `huggingface_hub.snapshot_download` (only from the hub cache where HF_HUB_OFFLINE is set). Nothing is checked
    beyond that (`check_checkpoint` does). Raises CheckpointError, in one line, where `name_or_path` is no path, or
    none of the three."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        check_files(name_or_path)                                # its one-line error: a path is needed
    folder = Path(name_or_path).expanduser()
    if folder.exists():
        return Located(folder, f"{folder} is part of the installed modelsat package; {_copy_hint(str(folder))}"
                       if _installed(folder) else None)
    name = str(name_or_path)
    if folder.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
        check_files(folder)                     # a path, not a name or a hub id: "checkpoint folder ... does not exist"
    if name in shipped_routers():
        where = "installed with modelsat" if _installed(ROUTERS / name) else f"in {ROUTERS}"
        return Located(ROUTERS / name, f"{name} is a router shipped with modelsat ({where}) and is read only; "
                       + _copy_hint(name))
    from huggingface_hub import constants, snapshot_download      # (only for hub ids)

    offline = constants.HF_HUB_OFFLINE or os.environ.get("TRANSFORMERS_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        path = Path(snapshot_download(name, revision=revision, cache_dir=cache_dir, token=token,
                                      force_download=force_download, local_files_only=local_files_only or offline))
    except Exception as e:  # noqa: BLE001 (not found, offline, HTTP, an invalid id)
        raise CheckpointError(f"{name!r} is neither a checkpoint folder, nor a router shipped with modelsat "
                              f"({', '.join(shipped_routers()) or 'none installed'}), nor a hub repository that can "
                              f"be downloaded here ({' '.join(str(e).split())[:160]}); give one of those") from e
    return Located(path, f"{name} is a snapshot of a hub repository in the Hugging Face cache; {_copy_hint(name)}")


def copy_checkpoint(name_or_path: object, out: str | Path) -> Path:
    """Copy the router `name_or_path` (a shipped name, a folder or a hub id; `locate_checkpoint`) whole, every file
    of it (its zoo and results bank too), to the folder `out`, atomically; returns `out`. A copy may be written to
    (`modelsat zoo add`, `Router.add_model(persist=True)`). Raises CheckpointError where the router is not a complete
    checkpoint, or `out` exists and is not empty."""
    source = check_checkpoint(locate_checkpoint(name_or_path).path)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists and is not an empty folder; give a new folder to copy "
                              f"{name_or_path} to")
    with atomic_dir(out) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, symlinks=False,
                        ignore=shutil.ignore_patterns("training_state.pt", "*.sqlite-shm"))
    return out


def check_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder, with a clear error when it is missing or partial (or `path` is no path at all), or
    in another format than FORMAT_VERSION."""
    path = check_files(path)
    version = checkpoint_format(path)
    if version < FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is in format {version} (written by an older modelsat); this modelsat "
                              f"reads format {FORMAT_VERSION}: run `modelsat checkpoint upgrade {path}` once")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is in format {version}, newer than the format {FORMAT_VERSION} this "
                              f"modelsat {__version__} reads; upgrade modelsat (`pip install -U modelsat`)")
    return path


def check_files(path: str | Path) -> Path:
    """The checkpoint folder where it holds every file of a checkpoint (any format), else a CheckpointError."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise CheckpointError(f"a checkpoint path is needed (got {str(path)[:40]!r}); give the folder of a trained "
                              f"router, or the name of a shipped one, e.g. {DEFAULT_ROUTER}")
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

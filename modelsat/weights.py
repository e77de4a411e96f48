"""The trained weights of a router model on disk: only what trains, the LoRA adapter in PEFT's format
(`adapter_model.safetensors` + `adapter_config.json`) and `connector.safetensors` (the capability encoder, with its
architecture in the file's metadata).

    save_trained(model, "runs/x/final")
    model = load_trained(build_router_model(cfg.model, per_task=20), "runs/x/final")

Loading checks every file against the model built from the checkpoint's config.yaml and names the file, what is
wrong and what to do in one CheckpointError line. A whole checkpoint (config, aptitude test, zoo, these weights)
loads with `Router.from_pretrained` (`modelsat/router.py`) and is written by `modelsat/checkpoint_writer.py`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from modelsat.aptitude import Aptitude
from modelsat.category import CategoryClassifier
from modelsat.checkpoint import (ADAPTER_FILES, APTITUDE_EMBEDDINGS, CATEGORY_CLASSIFIER, CONNECTOR_FILE,
                                 CheckpointError)
from modelsat.io_utils import atomic_write_bytes
from modelsat.model import RouterModel
from modelsat.pretrained import WINDOW_RULE

REDO = "re-copy the checkpoint folder, or retrain it with train.py"


def _read_weights(file: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a CheckpointError where it is not one (truncated, empty) or
    holds NaN or infinite weights."""
    try:
        with safe_open(file, "pt") as f:
            meta, tensors = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable {what} file ({e}); the copy may be cut short: {REDO}") from e
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{file} holds NaN or infinite weights ({', '.join(bad[:3])}); {REDO}")
    return tensors, meta


def _load_state(file: Path, load):
    """`load()` (a load_state_dict) with its shape and key errors as one CheckpointError line naming `file`."""
    try:
        return load()
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()] or [str(e)]
        raise CheckpointError(f"{file}: its weights do not fit the model built from config.yaml ({lines[0]}); "
                              f"{REDO}") from e


def connector_meta(model: RouterModel) -> dict[str, str]:
    """The connector's architecture, stored in `connector.safetensors` and checked on load."""
    cap = model.capability
    return {"in_dim": str(cap.in_dim), "out_dim": str(cap.out_dim), "connector": model.cfg.connector,
            "num_soft_tokens": str(cap.num_soft_tokens), "instruction_tokens": str(cap.instruction_tokens),
            "evidence_dim": str(cap.evidence_dim),
            "evidence_offset": cap.evidence.offset_form if cap.evidence is not None else "mlp"}


def save_trained(model: RouterModel, directory: str | Path) -> None:
    """Write only what trains: the LoRA adapter (PEFT format) and `connector.safetensors`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".adapter-", suffix=".tmp"))
    try:
        model.llm.save_pretrained(tmp, save_embedding_layers=False)   # LoRA only; its README.md is not kept
        for name in ADAPTER_FILES:
            os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.capability.state_dict().items()}
    atomic_write_bytes(directory / CONNECTOR_FILE, save(state, metadata=connector_meta(model)))


def load_trained(model: RouterModel, directory: str | Path) -> RouterModel:
    """Restore the adapter and connector written by `save_trained`; a CheckpointError names the file, what is
    wrong with it and what to do. Returns `model`. Raises ValueError on a model whose LoRA is merged (`merge_lora`)."""
    if model.lora_merged:
        raise ValueError("this model's LoRA is merged into the LLM (merge_lora): its weights keep the old adapter "
                         "and would ignore a new one; build a fresh model with build_router_model")
    directory = Path(directory)
    for name in ADAPTER_FILES + (CONNECTOR_FILE,):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name} is missing: not a folder written by save_trained; {REDO}")
    _check_adapter_config(model, directory / ADAPTER_FILES[1])
    file = directory / ADAPTER_FILES[0]
    adapter, _ = _read_weights(file, "LoRA adapter")
    if any("lora_" not in k for k in adapter):
        other = [k for k in adapter if "lora_" not in k]
        raise CheckpointError(f"{file}: unexpected weights {other[:5]} (not LoRA); {REDO}")
    result = _load_state(file, lambda: set_peft_model_state_dict(model.llm, adapter))
    missing = [k for k in result.missing_keys if "lora_" in k]     # the base LLM's weights are not in the file
    if result.unexpected_keys or missing:
        raise CheckpointError(f"{file}: its weights do not fit the LoRA layers of the model (missing "
                              f"{missing[:3]}, unexpected {result.unexpected_keys[:3]}); {REDO}")
    file = directory / CONNECTOR_FILE
    state, meta = _read_weights(file, "connector")
    meta = {"instruction_tokens": "0", "evidence_dim": "0", "evidence_offset": "mlp", **meta}  # older ones lack them
    if any(meta.get(k, v) != v for k, v in connector_meta(model).items()):
        raise CheckpointError(f"{file} was saved for {meta}, but this model has {connector_meta(model)}; build "
                              "the model from the checkpoint's own config.yaml")
    _load_state(file, lambda: model.capability.load_state_dict(state))
    return model


def _check_adapter_config(model: RouterModel, file: Path) -> None:
    """The saved LoRA settings must be the model's (it was built from config.yaml, not from this file)."""
    try:
        saved = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:                             # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"{file} is not a readable adapter config ({type(e).__name__}: {e}); {REDO}") from e
    if not isinstance(saved, dict) or saved.get("peft_type") != "LORA":
        kind = saved.get("peft_type") if isinstance(saved, dict) else type(saved).__name__
        raise CheckpointError(f"{file} is not a LoRA adapter config (found {kind!r}); {REDO}")
    ours = model.llm.peft_config["default"]

    def settings(r, alpha, targets) -> dict:
        targets = sorted(map(str, targets)) if isinstance(targets, (list, set, tuple)) else targets
        return {"r": r, "lora_alpha": alpha, "target_modules": targets}
    theirs = settings(saved.get("r"), saved.get("lora_alpha"), saved.get("target_modules"))
    if theirs != settings(ours.r, ours.lora_alpha, ours.target_modules):
        raise CheckpointError(f"{file}: LoRA {theirs}, but the model config has "
                              f"{settings(ours.r, ours.lora_alpha, ours.target_modules)}; build the model from the "
                              "checkpoint's own config.yaml")


def _write_stamped(file: Path, tensors: dict[str, torch.Tensor], aptitude: Aptitude, encoder: str,
                   **meta: str) -> None:
    """Write `tensors` to a safetensors `file` (atomically), stamped with the aptitude test and the encoder."""
    stamp = {"aptitude_fingerprint": aptitude.fingerprint, "sentence_encoder": encoder, **meta}
    atomic_write_bytes(file, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=stamp))


def _read_stamped(file: Path, names: tuple[str, ...], aptitude: Aptitude, encoder: str, what: str,
                  fix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """The tensors `names` and the metadata of a file `_write_stamped` wrote, None where there is no file; a
    CheckpointError, ending with `fix`, where it is broken or was made for another aptitude test or encoder."""
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


def save_aptitude_embeddings(directory: str | Path, embeddings: torch.Tensor, aptitude: Aptitude,
                             encoder: str) -> None:
    """Write the aptitude questions' (A, D) embeddings to `directory`, stamped with the test, the encoder and how it
    reads a long question (`pretrained.WINDOW_RULE`)."""
    if embeddings.ndim != 2 or embeddings.shape[0] != len(aptitude.question_ids):
        raise ValueError(f"aptitude embeddings of shape {tuple(embeddings.shape)} do not match the aptitude test's "
                         f"{len(aptitude.question_ids)} questions")
    _write_stamped(Path(directory) / APTITUDE_EMBEDDINGS, {"embeddings": embeddings.float()}, aptitude, encoder,
                   window=WINDOW_RULE)


def load_aptitude_embeddings(directory: str | Path, aptitude: Aptitude, encoder: str) -> torch.Tensor | None:
    """The stored (A, D) aptitude embeddings of a checkpoint, None where it has none; a clear error where they
    were computed for another aptitude test or encoder, reading long questions another way, or the file is broken."""
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


def save_category_classifier(directory: str | Path, classifier: CategoryClassifier, aptitude: Aptitude,
                             encoder: str) -> None:
    """Write the aptitude evidence's category classifier to `directory`, stamped with the aptitude test and the encoder."""
    if len(classifier.aptitude_category) != len(aptitude.question_ids):
        raise ValueError(f"the classifier has categories for {len(classifier.aptitude_category)} aptitude questions, "
                         f"the aptitude test has {len(aptitude.question_ids)}")
    _write_stamped(Path(directory) / CATEGORY_CLASSIFIER,
                   {"weight": classifier.weight.float(), "bias": classifier.bias.float(),
                    "aptitude_category": classifier.aptitude_category.long()},
                   aptitude, encoder, classes=json.dumps(classifier.classes))


def load_category_classifier(directory: str | Path, aptitude: Aptitude, encoder: str) -> CategoryClassifier | None:
    """The checkpoint's category classifier, None where it has none; a clear error where it was made for another
    aptitude test or encoder, or the file is broken."""
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

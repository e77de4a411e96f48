"""The inference API: a trained router over its zoo.

    from modelsat import Router
    router = Router.from_pretrained("modelsat-smollm2-mmlupro")     # a shipped name, a folder or a hub id
    router.rank("What is the derivative of x^2?\\nA. x\\nB. 2x", top_k=3)
    router.add_model("my-new-llm", "my_aptitude_results.parquet", params_b=7.0)   # no retraining

Scores come from the packed forward pass: all candidates of an instruction share one sequence
(large zoos are split into chunks of `chunk_size` candidates).

Utility: `p_correct - cost_weight * cost / max_cost`, nothing else (`modelsat/choice.py`): what a candidate did
on the aptitude questions like the instruction and in its guessed category is an input of the model
(`model.evidence`, `modelsat/evidence.py`), not a term added here. `max_cost` is the largest known cost among the
candidates being ranked (so `cost_weight` is in units of probability per "the most expensive candidate"); a
model of unknown cost counts as the most expensive. The rule is shared with the baselines, `modelsat evaluate`, the
service and the gateway.

Why one module: `Router` is one class (loading, the zoo kept in sync, ranking, the Hugging Face
methods) whose caches (features, connector tokens, evidence) every method shares.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import tempfile
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from huggingface_hub import HfApi
from tqdm.auto import tqdm

from modelsat.aptitude import Aptitude
from modelsat.category import CategoryClassifier
from modelsat.choice import Ranked, ranking, utilities  # noqa: F401 (Ranked is re-exported)
from modelsat.checkpoint import (CATEGORY_CLASSIFIER, CheckpointError, check_checkpoint, locate_checkpoint,
                                 read_provenance)
from modelsat.checkpoint_writer import write_checkpoint
from modelsat.config import Config, load_saved_config
from modelsat.devices import place, torch_device, torch_dtype
from modelsat.bank import BANK_FILE, BankError, ResultsBank, read_graded, text_key
from modelsat.evidence import AptitudeEvidence, Candidate, NeighbourSearch, category_accuracy
from modelsat.model import RouterModel, build_router_model
from modelsat.pretrained import WINDOW_RULE, ModelLoadError
from modelsat.weights import load_aptitude_embeddings, load_category_classifier, load_trained
from modelsat.zoo import Zoo, ZooError

MAX_INSTRUCTION_CHARS = 32_000
logger = logging.getLogger(__name__)


def unit_embeddings(encoder, texts: list[str]) -> torch.Tensor:
    """(N, D) sentence embeddings of `texts` by `encoder`, scaled to unit length (cosine = dot product)."""
    return torch.nn.functional.normalize(encoder.encode(texts).float(), dim=-1)


def aptitude_keys(encoder, aptitude: Aptitude) -> torch.Tensor:
    """(A, D) unit embeddings of the aptitude questions, in `aptitude.question_ids` order: what the aptitude evidence's
    nearest-question search compares an instruction with."""
    return unit_embeddings(encoder, [aptitude.texts[q] for q in aptitude.question_ids])


def _log_decision(text: str, ranked: list[Ranked], cost_weight: float) -> None:
    """One routing decision at DEBUG: the instruction's first characters and hash, the chosen model, the top 3."""
    best = ranked[0]
    preview = " ".join(text.split())[:60]
    logger.debug("routed %r to %s (p_correct %.3f, utility %.3f, cost_weight %g)", preview, best.model,
                 best.p_correct, best.utility, cost_weight,
                 extra={"decision": {"instruction_sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
                                     "chosen": best.model, "cost_weight": cost_weight,
                                     "top": [{"model": r.model, "p_correct": round(r.p_correct, 4),
                                              "utility": round(r.utility, 4)} for r in ranked[:3]]}})


class RouterError(ValueError):
    """Bad input to the router (instruction, arguments) or a broken checkpoint."""


def check_text(text: str, where: str) -> str:
    """`text` where it is an instruction the router can read, else a RouterError naming `where` (e.g. "instruction
    0"): not a string, empty or blank, over MAX_INSTRUCTION_CHARS, or holding a lone surrogate, which no tokenizer
    takes (a JSON "\\ud83c" escape, or a byte that is not UTF-8 in a command-line argument)."""
    if not isinstance(text, str):
        raise RouterError(f"{where} must be a string, got {type(text).__name__}")
    if all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text):   # "\u200b", "\x00", "\ufeff"
        seen = "" if not text.strip() else f" (only invisible characters, e.g. U+{ord(text.strip()[0]):04X})"
        raise RouterError(f"{where} is empty{seen}; give the text of the instruction to route")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise RouterError(f"{where} has {len(text)} characters; the limit is {MAX_INSTRUCTION_CHARS}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        byte = f", the byte 0x{code - 0xDC00:02X} of text that is not UTF-8" if 0xDC80 <= code <= 0xDCFF else ""
        raise RouterError(f"{where} holds an invalid character (lone surrogate U+{code:04X} at character "
                          f"{e.start + 1}{byte}); send valid UTF-8 text") from None
    return text


def _shown(value: object) -> str:
    """`value` for an error message, on one line and cut short (a 401-digit integer is not echoed whole)."""
    text = " ".join(repr(value).split())                       # a numpy array's repr spans lines
    return text if len(text) <= 40 else text[:37] + "..."


def check_size(name: str, value: object) -> int:
    """`value` as an int where it is an integer (Python's or numpy's, not a bool) >= 1, else a RouterError (a
    ValueError) in one line naming `name` (the Router's chunk_size or batch_size)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise RouterError(f"Router: {name} must be an integer >= 1, got {_shown(value)}")
    return int(value)


def check_cost_weight(value: object) -> float:
    """`value` as a float where it is a real number (Python's or numpy's, not a bool), finite and >= 0, else a
    RouterError (an integer too large for a float is one too, not an OverflowError)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise RouterError(f"cost_weight must be a finite number >= 0, got {_shown(value)}")
    try:
        weight = float(value)
    except OverflowError:
        weight = math.inf
    if not math.isfinite(weight) or weight < 0:
        raise RouterError(f"cost_weight must be a finite number >= 0, got {_shown(value)}")
    return weight


def check_top_k(value: object) -> int | None:
    """`value` as an int where it is None or a positive integer (Python's or numpy's, not a bool), else a
    RouterError."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise RouterError(f"top_k must be a positive integer, got {_shown(value)}")
    return int(value)


def read_instructions(path: str | Path) -> list[str]:
    """Instructions from a .txt (one per line) or .jsonl ({"instruction": ...} per line) file; blank lines are
    skipped, errors (RouterError) name the line. `infer.py --file` and `modelsat calibrate` read files with it."""
    path = Path(path)
    if not path.is_file():
        raise RouterError(f"{path} is not a file; give a .txt or .jsonl file of instructions")
    if path.suffix not in (".txt", ".jsonl"):
        raise RouterError(f"{path}: use a .txt or .jsonl file")
    out = []
    for n, raw in enumerate(path.read_bytes().split(b"\n"), 1):   # only \n ends a line (not U+2028 in a text)
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            raise RouterError(f"{path}: line {n} is not UTF-8 text (byte 0x{raw[e.start]:02X} at byte {e.start + 1} "
                             "of the line); save the file as UTF-8") from e
        if not line.strip():
            continue
        if path.suffix == ".txt":
            out.append(check_text(line, f"{path}: line {n}"))
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise RouterError(f"{path}: line {n} is not JSON: {e}") from e
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str):
            raise RouterError(f'{path}: line {n} needs a string field "instruction"')
        out.append(check_text(record["instruction"], f'{path}: line {n}, field "instruction"'))
    if not out:
        raise RouterError(f"{path} holds no instructions (it is empty or only blank lines); write one per line")
    return out


class Router:
    """Ranks the zoo's candidate models for instructions.

    A router only infers: it folds the model's LoRA into the LLM's weights (`RouterModel.merge_lora`, where
    `lora_mergeable`), so the `model` given here can no longer be trained."""

    def __init__(self, model: RouterModel, aptitude: Aptitude, zoo: Zoo, config: Config,
                 chunk_size: int = 32, batch_size: int = 8, *, device: str | torch.device | None = "cpu",
                 dtype: str | torch.dtype | None = None) -> None:
        """`device`: where it ranks ("cpu", the default; "cuda", "cuda:N"; "auto": CUDA where present); `dtype`: the
        router LLM's (None: float32; bfloat16 or float16 on a GPU). Raises DeviceError (a ValueError), in one line,
        for a device torch cannot reach here, e.g. CUDA on a machine without a GPU (`modelsat/devices.py`), and
        RouterError for a `chunk_size` (candidates per packed sequence) or `batch_size` (instructions per forward)
        that is not an integer >= 1."""
        device, dtype = torch_device(device), torch_dtype(dtype)      # checked before anything is changed
        chunk_size, batch_size = check_size("chunk_size", chunk_size), check_size("batch_size", batch_size)
        self.model = model.eval()
        if not model.lora_merged and model.lora_mergeable:
            model.merge_lora()                         # inference only: one matmul per projection (merged in fp32)
        place(model, device, dtype)
        self.aptitude = aptitude
        self.zoo = zoo
        self.config = config
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self._outcomes: dict[str, np.ndarray] = {}     # model name -> (A,) aptitude outcomes, task-major
        self._tokens: dict[str, torch.Tensor] = {}     # model name -> (N, H) connector tokens of its features
        self._aptitude_emb: torch.Tensor | None = None  # (A, D) unit sentence embeddings of the aptitude questions
        self._bank: ResultsBank | None = None          # the zoo's results bank (`results_bank`), opened on first use
        self._candidates: dict[str, tuple[tuple, Candidate]] = {}   # name -> (its bank state, what evidence reads)
        self._search: tuple[tuple, NeighbourSearch] | None = None   # for the last set of candidates ranked
        self._proba: tuple[int, np.ndarray] | None = None           # (bank generation, (N, C) category of key rows)
        self.category_classifier: CategoryClassifier | None = None   # the evidence's (from the checkpoint)
        self._zoo_signature = zoo.signature()          # the zoo folder as last read (`sync_zoo`)
        self.source: Path | None = None                # the checkpoint folder it was loaded from, if any

    @property
    def device(self) -> torch.device:
        """The device the router ranks on."""
        return self.model.device

    @classmethod
    def _load(cls, path: Path, **kwargs) -> "Router":
        def config_error(e: ValueError) -> CheckpointError:    # a ConfigError, or settings the LLM cannot take
            where = "" if str(path / "config.yaml") in str(e) else f"{path / 'config.yaml'}: "
            fix = ("" if "re-copy the checkpoint folder" in str(e)
                   else "; fix config.yaml, or re-copy the checkpoint folder")
            return CheckpointError(f"{where}{e}{fix}")

        device, dtype = torch_device(kwargs.get("device", "cpu")), torch_dtype(kwargs.get("dtype"))  # before loading
        kwargs.update(device=device, dtype=dtype)
        try:
            config = load_saved_config(path / "config.yaml")   # whole: an empty or cut file is not read as defaults
        except ValueError as e:
            raise config_error(e) from e
        aptitude = Aptitude.load(path / "aptitude.json")
        zoo = Zoo.load(path / "zoo", aptitude)
        try:
            model = build_router_model(config.model, per_task=aptitude.per_task)
        except (CheckpointError, ModelLoadError):   # a backbone that cannot be found: its own line says what to do
            raise
        except ValueError as e:
            raise config_error(e) from e
        load_trained(model, path)
        router = cls(model, aptitude, zoo, config, **kwargs)
        router.source = path
        router._aptitude_emb = load_aptitude_embeddings(path, aptitude, config.model.sentence_encoder)
        router.category_classifier = load_category_classifier(path, aptitude, config.model.sentence_encoder)
        if config.model.evidence and config.model.evidence_source == "aptitude" and router.category_classifier is None:
            # (the bank's evidence has none where the training data had fewer than two categories)
            raise CheckpointError(f"{path} has model.evidence=true but no {CATEGORY_CLASSIFIER} (train.py writes it "
                                  "with the evidence); re-copy the checkpoint folder, or retrain it with train.py")
        return router

    # ----- Hugging Face conventions (huggingface_hub's ModelHubMixin contract) ---------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, device: str | torch.device | None = "cpu",
                        dtype: str | torch.dtype | None = None, revision: str | None = None,
                        cache_dir: str | Path | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None, **kwargs) -> "Router":
        """The one loader: a router and its zoo from a checkpoint folder, the name of a router shipped with modelsat
        (`modelsat.checkpoint.shipped_routers()`: modelsat-smollm2-mmlupro, -routerbench, -routerdc), or a Hugging
        Face hub repository id (downloaded with `huggingface_hub.snapshot_download`; offline, only from the hub
        cache); a folder that exists wins over a name. Loading is driven by the files present and writes nothing.
        `device`, `dtype`: where it ranks (`Router.__init__`); `kwargs` go to the Router (chunk_size, batch_size).

        A shipped router, an installed package's folder or a hub snapshot is read only: `add_model(persist=True)`,
        `modelsat zoo add` and the other writes to its zoo are refused, saying to copy it first
        (`save_pretrained(DIR)`, or `modelsat checkpoint copy NAME DIR`). Raises CheckpointError, in one line, where
        the router cannot be found or its folder is missing, incomplete or of another format (a file that does not
        load names itself and what to do), DeviceError for a device that cannot be used here, and RouterError for a
        `chunk_size` or `batch_size` below 1."""
        for name in ("chunk_size", "batch_size"):
            if name in kwargs:
                kwargs[name] = check_size(name, kwargs[name])                                # before loading
        located = locate_checkpoint(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token)
        path = check_checkpoint(located.path)
        try:
            router = cls._load(path, device=device, dtype=dtype, **kwargs)
        except OSError as e:                                   # unreadable (permissions, a folder for a file)
            raise CheckpointError(f"checkpoint {path}: {e}; make its files readable, or re-copy the checkpoint "
                                  "folder") from e
        router.zoo.read_only = located.read_only
        return router

    from_checkpoint = from_pretrained
    """The same loader under its earlier name (kept for code written before modelsat 0.3)."""

    def save_pretrained(self, save_directory: str | Path, *, push_to_hub: bool = False, repo_id: str | None = None,
                        **push_to_hub_kwargs) -> Path:
        """Write the router as a complete checkpoint (format `checkpoint.FORMAT_VERSION`) to `save_directory`,
        atomically: what trained, the config, the aptitude test, the zoo as it is now (models added in memory
        too), the aptitude embeddings and category classifier it holds, the training provenance (metrics.json,
        splits.json) of the checkpoint it was loaded from, a model card and the format file. With `push_to_hub`,
        also uploads it (`push_to_hub`). Returns the folder. `Router.from_pretrained` of it ranks as this router."""
        metrics, splits = read_provenance(self.source) if self.source is not None else (None, None)
        write_checkpoint(save_directory, self.model, self.config, self.aptitude, self.zoo, splits=splits,
                         metrics=metrics,
                         aptitude_embeddings=self.aptitude_embeddings() if self.reads_evidence else self._aptitude_emb,
                         category_classifier=self.category_classifier, bank=self._bank_to_save())
        if push_to_hub:
            self.push_to_hub(repo_id or Path(save_directory).name, folder=save_directory, **push_to_hub_kwargs)
        return Path(save_directory)

    def _bank_to_save(self) -> ResultsBank | Path | None:
        """The results bank a copy of this router carries: the open one, else the zoo folder's file, if any."""
        if self._bank is not None:
            return self._bank
        file = self.zoo.root / BANK_FILE if self.zoo.root is not None else None
        if file is not None and file.is_file() and self.zoo.read_only is not None:
            return self.results_bank        # opened immutable: copying a shipped bank writes nothing beside it
        return file if file is not None and file.is_file() else None

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload modelsat router", private: bool | None = None,
                    token: str | None = None, branch: str | None = None, create_pr: bool = False,
                    folder: str | Path | None = None) -> str:
        """Upload the router's checkpoint to the Hugging Face hub repository `repo_id` (created where absent) with
        `huggingface_hub.HfApi.upload_folder`; `folder`: an already written `save_pretrained` folder, else one is
        written to a temporary folder. Returns the commit's URL. Needs a network and a token."""
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            if folder is None:
                folder = self.save_pretrained(Path(tmp) / "router")
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                     revision=branch, create_pr=create_pr)
        return str(info)

    # ----- the zoo -------------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        return self.zoo.names

    def add_model(self, name: str, results: pd.DataFrame | str | Path, cost: float | None = None,
                  params_b: float | None = None, persist: bool = False, cost_unit: str = "",
                  missing: str = "error", **endpoint: object) -> None:
        """Add a model from its aptitude results (`Zoo.add`: `missing="wrong"` counts a few missing answers as
        wrong; `endpoint`: where it answers and what it serves, the keywords endpoint, upstream_model, api_key_env,
        price_in, price_out, context_window, capabilities and tokenizer); `persist=True` also writes it to the
        checkpoint's zoo."""
        self.zoo.add(name, results, cost=cost, params_b=params_b, cost_unit=cost_unit, persist=persist,
                     missing=missing, **endpoint)
        self._forget(name)

    def remove_model(self, name: str, persist: bool = False) -> None:
        """Remove a model (its name compared without surrounding spaces, as in ranking); `persist=True` also deletes
        its zoo entry's file and its results bank rows."""
        name = name.strip() if isinstance(name, str) else name
        name = self.zoo.get(name).name
        self.zoo.remove(name, persist=persist)
        if persist and self._bank is not None:
            self._bank.refresh()
        self._forget(name)

    # ----- the results bank (modelsat/bank.py) ------------------------------------------------------
    @property
    def results_bank(self) -> ResultsBank:
        """The zoo's results bank (`<zoo>/bank.sqlite`; in memory for a zoo without a folder), opened on first use
        with the aptitude questions as its first key rows. Raises BankError where it was embedded another way."""
        if self._bank is None:
            emb = self.aptitude_embeddings()
            stamp = {"encoder": self.config.model.sentence_encoder, "dim": str(emb.shape[1]), "window": WINDOW_RULE}
            path = self.zoo.root / BANK_FILE if self.zoo.root is not None else None
            self._bank = ResultsBank.open(path, stamp, prefix=emb.numpy(), readonly=self.zoo.read_only is not None)
        return self._bank

    def bank_size(self, name: str) -> int:
        """How many graded results the model's bank holds beyond its aptitude answers (as of now: what other
        processes banked counts too)."""
        name = self.zoo.get(name).name
        self.results_bank.refresh()
        return len(self.results_bank.rows(name)[0])

    def add_results(self, name: str, results: pd.DataFrame | str | Path) -> int:
        """Bank graded results of zoo model `name`: a table (a DataFrame, records, or a .csv/.jsonl/.parquet file)
        with a `text` (the prompt as the model saw it) or a `question_id` (of the aptitude test, or of a question the
        bank already holds) per row and a `score` in [0, 1] (`modelsat.bank.read_graded`; a `model` column, where
        there is one, must name `name`). New texts are embedded once by the router's sentence encoder, before the
        bank is locked. One transaction: all rows or none. The next ranking reads them: no training, no restart;
        other processes sharing the checkpoint see them at their next ranking. A result on a question the model
        already has a result on replaces it (the last row of a question in one table). Returns the number of
        results added or changed. Raises ZooError (unknown model) or BankError (a bad file or row, naming the file,
        row and column; a read-only checkpoint; a bank another process keeps locked)."""
        name = self.zoo.get(name).name
        self.zoo.check_writable()                     # a shipped router: one line saying to copy it first
        table = read_graded(results, model=name)
        where = str(results) if isinstance(results, (str, Path)) else "results"
        keys, texts = [], []
        banked = self.results_bank.question_ids([q for q in table["question_id"] if q is not None])
        for text, qid, row in zip(table["text"], table["question_id"], table["where"]):
            if text is None and qid in self.aptitude.texts:
                text = self.aptitude.texts[qid]
            if text is not None:
                check_text(text, f"{where}: {row}, column 'text'")
                keys.append(text_key(text))
            elif qid in banked:
                keys.append(banked[qid])
            else:
                raise BankError(f"{where}: {row}, column 'question_id': {qid!r} is neither an aptitude question nor "
                                "a question the bank holds; give the prompt's text in a 'text' column")
            texts.append(text)
        return self._bank_rows(name, keys, texts, table["question_id"].tolist(), table["score"].tolist(), "results")

    def add_feedback(self, name: str, instruction: str, score: float, *, feedback_id: str | None = None) -> bool:
        """Bank one graded answer of zoo model `name` (e.g. a user's rating of its answer to `instruction`): `score`
        in [0, 1]. Feedback adds up (the same instruction rated twice counts twice), except that a `feedback_id`
        already banked is skipped: returns False then, True where it was added. Raises ZooError (unknown model),
        RouterError (an empty or too long instruction, a score that is not a number in [0, 1]) or BankError (a
        read-only checkpoint)."""
        name = self.zoo.get(name).name
        self.zoo.check_writable()
        check_text(instruction, "instruction")
        if isinstance(score, (bool, np.bool_)) or not isinstance(score, numbers.Real) or not 0 <= score <= 1:
            raise RouterError(f"score must be a number in [0, 1], got {_shown(score)}")
        if feedback_id is not None and (not isinstance(feedback_id, str) or not feedback_id.strip()
                                        or len(feedback_id) > 200):
            raise RouterError(f"feedback_id must be a non-empty string of at most 200 characters, got "
                              f"{_shown(feedback_id)}")
        added = self._bank_rows(name, [text_key(instruction)], [instruction], [None], [float(score)], "feedback",
                                feedback_ids=[feedback_id])
        return added == 1

    def _bank_rows(self, name: str, keys: list[str], texts: list[str | None], question_ids: list[str | None],
                   scores: list[float], source: str, feedback_ids: list[str | None] | None = None) -> int:
        def embed(indices: list[int]) -> np.ndarray:
            return unit_embeddings(self._encoder(), [texts[i] for i in indices]).numpy()

        added = self.results_bank.add(name, keys, scores, source, embed=embed, texts=texts,
                                      question_ids=question_ids, feedback_ids=feedback_ids)
        self._candidates.pop(name, None)
        self._search = None
        return added

    def _key_proba(self) -> np.ndarray | None:
        """(N, C) the category classifier's probabilities of every key row (aptitude questions, then the bank's),
        computed once per row; None without a classifier."""
        if self.category_classifier is None:
            return None
        bank = self.results_bank
        keys, _ = bank.key_matrix()
        have = self._proba[1] if self._proba is not None and self._proba[0] == bank.generation else np.zeros(
            (0, len(self.category_classifier.classes)))
        if len(have) < len(keys):
            new = self.category_classifier.proba(torch.from_numpy(keys[len(have):].astype(np.float32)))
            have = np.concatenate([have, new])
        self._proba = (bank.generation, have)
        return have

    def candidate(self, name: str) -> Candidate:
        """What the evidence reads of zoo model `name` (`modelsat/evidence.py`): its aptitude answers (the first key
        rows) and its bank results, with their category accuracy; rebuilt when its bank changes."""
        bank = self.results_bank
        positions, scores = bank.rows(name)
        state = (bank.generation, len(positions))
        cached = self._candidates.get(name)
        if cached is not None and cached[0] == state:
            return cached[1]
        aptitude = self._aptitude_outcomes(name).astype(np.float32)                        # (A,)
        pos = np.concatenate([np.arange(len(aptitude)), positions])
        out = np.concatenate([aptitude, scores])
        proba = self._key_proba()
        cells = bank.key_matrix()[1][pos] if bank.centroids is not None else None
        c = Candidate(pos, out, float(aptitude.mean()), None if proba is None else category_accuracy(proba[pos], out),
                      cells)
        self._candidates[name] = (state, c)
        return c

    def _neighbour_search(self, models: Sequence[str]) -> NeighbourSearch:
        """The evidence's search over `models`' results, kept while the bank and the zoo stay as they are."""
        bank = self.results_bank
        bank.refresh()                                  # what other processes banked since the last ranking
        cands = [self.candidate(m) for m in models]
        key = (tuple(models), bank.version, tuple(id(c) for c in cands))
        if self._search is None or self._search[0] != key:
            self._search = (key, NeighbourSearch(bank.key_matrix()[0], cands, bank.centroids))
        return self._search[1]

    def sync_zoo(self) -> set[str]:
        """Re-read the zoo's folder where its files changed since the last read (`Zoo.signature`), e.g. by
        `modelsat zoo add/remove` in another process; returns the names added, changed or removed (their cached
        features are dropped). The results bank is re-read too where another process appended to it (every ranking
        also does so). A bad file raises ZooError and leaves the zoo as it was."""
        if self._bank is not None:
            self._bank.refresh()
        signature = self.zoo.signature()
        if signature == self._zoo_signature or self.zoo.root is None:
            return set()
        changed = self.zoo.reload()
        self._zoo_signature = signature
        for name in changed:
            self._forget(name)
        return changed

    def _forget(self, name: str) -> None:
        """Drop what is cached of a model (added, changed or removed)."""
        self._outcomes.pop(name, None)
        self._tokens.pop(name, None)
        self._candidates.pop(name, None)
        self._search = None

    def _aptitude_outcomes(self, name: str) -> np.ndarray:
        """(A,) the model's aptitude outcomes, task-major (the rows of `aptitude_embeddings`), read once."""
        if name not in self._outcomes:
            self._outcomes[name] = self.zoo.outcomes(name).ravel()
        return self._outcomes[name]

    def features(self, name: str) -> torch.Tensor:
        """(N, F) frozen capability features of a zoo model (`RouterModel.model_features`, which keeps them)."""
        outcomes = self._aptitude_outcomes(name).reshape(self.aptitude.num_tasks, self.aptitude.per_task)
        return self.model.model_features(outcomes, [t.description for t in self.aptitude.tasks])

    @torch.no_grad()
    def connector_tokens(self, name: str) -> torch.Tensor:
        """(N, H) the connector's tokens of a model's features (`CapabilityEncoder.connector_tokens`), computed
        once and cached: the router's weights never change."""
        if name not in self._tokens:
            feats = self.features(name)[None].to(self.model.device, torch.float32)
            self._tokens[name] = self.model.capability.connector_tokens(feats)[0]
        return self._tokens[name]

    def _encoder(self):
        if self.model.sentence_encoder is None:
            raise RouterError("this router reads the instruction's sentence embedding (model.evidence or "
                              "model.instruction_tokens) but its model has no sentence encoder; build the model "
                              "with build_router_model")
        return self.model.sentence_encoder

    @property
    def reads_evidence(self) -> bool:
        """Whether the router model reads each candidate's aptitude evidence for the instruction (model.evidence)."""
        return bool(self.model.capability.evidence_dim)

    @property
    def reads_instruction_embeddings(self) -> bool:
        """Whether ranking reads the instructions' sentence embeddings (the aptitude evidence, or the
        instruction-pooled tokens): only then is `predict_matrix(embeddings=...)` read."""
        return self.reads_evidence or bool(self.model.capability.instruction_tokens)

    def evidence(self, instructions: Sequence[str], models: Sequence[str],
                 embeddings: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """(Q, M, E) evidence of `models` for `instructions` (`modelsat/evidence.py`): from each model's aptitude
        answers and results bank, the questions' embeddings and the checkpoint's category classifier.
        `embeddings`: (Q, D) the instructions' embeddings by the router's own sentence encoder
        (`model.sentence_encoder`), where the caller has them cached (an evaluation over a table); None encodes
        them here. Raises RouterError on a shape that does not fit."""
        emb = self.instruction_embeddings(instructions, embeddings)                       # (Q, D)
        if self.config.model.evidence_source == "aptitude":                               # modelsat 0.2's input
            outcomes = np.stack([self._aptitude_outcomes(m) for m in models], axis=1)       # (A, M) task-major
            return AptitudeEvidence(self.aptitude_embeddings(), self.category_classifier)(emb, outcomes)
        proba = None if self.category_classifier is None else self.category_classifier.proba(emb)
        return self._neighbour_search(list(models)).evidence(emb, proba)

    def instruction_embeddings(self, instructions: Sequence[str],
                               embeddings: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """(Q, D) unit sentence embeddings of the instructions by the router's sentence encoder: `embeddings`
        normalised where the caller has them cached, else encoded here. Raises RouterError on a shape that does
        not fit."""
        if embeddings is None:
            return unit_embeddings(self._encoder(), list(instructions))
        emb = torch.nn.functional.normalize(torch.as_tensor(embeddings).detach().float().cpu(), dim=-1)
        dim = self._encoder().dim
        if emb.shape != (len(instructions), dim):
            raise RouterError(f"embeddings of shape {tuple(emb.shape)} for {len(instructions)} instructions; "
                              f"expected ({len(instructions)}, {dim}) from {self.config.model.sentence_encoder}")
        return emb

    def aptitude_embeddings(self) -> torch.Tensor:
        """(A, D) unit sentence embeddings of the aptitude questions, in `aptitude.question_ids` order: the
        checkpoint's `aptitude_embeddings.safetensors` where it has one, else computed once."""
        if self._aptitude_emb is None:
            self._aptitude_emb = aptitude_keys(self._encoder(), self.aptitude)
        return self._aptitude_emb

    def warm_up(self) -> None:
        """Compute now what the first ranking would: every zoo model's capability features and their connector
        tokens and, where the model reads the aptitude evidence, the aptitude questions' embeddings (a service
        calls this before it serves)."""
        for name in self.models:
            self.connector_tokens(name)
        if self.reads_evidence:
            self.aptitude_embeddings()
            if self.config.model.evidence_source == "bank" and self.models:
                self._neighbour_search(self.models)

    # ----- ranking -------------------------------------------------------------------------------
    def _check_instructions(self, instructions: Sequence[str]) -> list[str]:
        if isinstance(instructions, str) or not isinstance(instructions, Sequence):
            raise RouterError("instructions must be a list of strings")
        return [check_text(text, f"instruction {i}") for i, text in enumerate(instructions)]

    def _check_models(self, models: Sequence[str] | None) -> list[str]:
        """The candidates to rank (None: the whole zoo); a name is compared without surrounding spaces."""
        if models is None:
            models = self.models
        if isinstance(models, str):
            raise RouterError("models must be a list of model names, not one string")
        if any(not isinstance(m, str) for m in models):
            bad = [m for m in models if not isinstance(m, str)]
            raise RouterError(f"models must be model names (strings), got {bad[:3]}")
        models = [m.strip() for m in models]
        if not models:
            raise RouterError("no candidate models to rank: the zoo is empty or `models` is empty")
        if "" in models:
            raise RouterError(f"models holds an empty name (position {models.index('')}); give model names of the zoo")
        unknown = [m for m in models if m not in self.zoo]
        if unknown:
            raise ZooError(f"unknown model(s) {unknown}; the zoo has: {', '.join(self.models)}")
        if len(set(models)) != len(models):
            raise RouterError("models must not repeat a name")
        return models

    def shortened(self, instructions: Sequence[str]) -> list[bool]:
        """Whether each instruction is longer than a window that reads it (the router LLM's, or the sentence
        encoder's where the model reads the aptitude evidence), so read as its first third + its end."""
        cut = self.model.shortened(list(instructions))
        if self.reads_evidence and self.model.sentence_encoder is not None:
            cut = [a or b for a, b in zip(cut, self.model.sentence_encoder.shortened(list(instructions)))]
        return cut

    @torch.no_grad()
    def predict_matrix(self, instructions: Sequence[str], models: Sequence[str] | None = None,
                       progress: bool = False, embeddings: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """p(correct) of every model on every instruction: (Q, M) float array. `embeddings`: the instructions'
        sentence embeddings where the caller has them cached (`instruction_embeddings`); read only where the
        model reads the instruction's embedding (the aptitude evidence, the instruction-pooled tokens), which is
        otherwise computed once here for both."""
        instructions = self._check_instructions(instructions)
        models = self._check_models(models)
        feats = [self.features(m) for m in models]
        stacked = torch.stack(feats)                                        # (M, N, F)
        tokens = torch.stack([self.connector_tokens(m) for m in models])    # (M, N, H)
        emb = None
        if self.reads_instruction_embeddings:
            emb = self.instruction_embeddings(instructions, embeddings)     # (Q, D)
        evidence = self.evidence(instructions, models, emb) if self.reads_evidence else None   # (Q, M, E)
        out = np.zeros((len(instructions), len(models)), dtype=np.float64)
        starts = range(0, len(instructions), self.batch_size)
        for s in tqdm(starts, desc="routing", disable=not progress, unit="batch"):
            batch = instructions[s:s + self.batch_size]
            ev = None if evidence is None else list(evidence[s:s + len(batch)])
            logp = self.model.log_p_correct(batch, [stacked] * len(batch), chunk_size=self.chunk_size, evidence=ev,
                                    instruction_embeddings=None if emb is None else emb[s:s + len(batch)],
                                    connector_tokens=[tokens] * len(batch))
            for i, lp in enumerate(logp):
                out[s + i] = lp.exp().double().cpu().numpy()
        return out

    def rank_many(self, instructions: Sequence[str], models: Sequence[str] | None = None,
                  cost_weight: float = 0.0, top_k: int | None = None) -> list[list[Ranked]]:
        """Rank the candidates for each instruction, best first."""
        cost_weight = check_cost_weight(cost_weight)
        top_k = check_top_k(top_k)
        instructions = self._check_instructions(instructions)
        if not instructions:
            raise RouterError("no instructions to rank: `instructions` is empty; give at least one")
        models = self._check_models(models)
        p = self.predict_matrix(instructions, models)                      # (Q, M) p_correct
        costs = self.zoo.costs(models)
        utility = utilities(p, costs, cost_weight)                         # modelsat/choice.py
        rankings = [ranking(models, row, costs, u, top_k, cut)
                    for row, u, cut in zip(p, utility, self.shortened(instructions))]
        if logger.isEnabledFor(logging.DEBUG):
            for text, ranked in zip(instructions, rankings):
                _log_decision(text, ranked, cost_weight)
        return rankings

    def rank(self, instruction: str, models: Sequence[str] | None = None, cost_weight: float = 0.0,
             top_k: int | None = None) -> list[Ranked]:
        """Rank the candidates for one instruction, best first: `(model, p_correct, cost, utility, shortened)`."""
        if not isinstance(instruction, str):
            raise RouterError("instruction must be a string")
        return self.rank_many([instruction], models, cost_weight, top_k)[0]

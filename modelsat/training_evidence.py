"""The evidence of every training model for every train and val question, as training reads it.

    table = EvidenceTable.build(cfg, data, log)         # once before training (~1 min for MMLU-Pro on 2 cores)
    e = table(question_ids, models)                       # (K, E) of the pairs (question_ids[k], models[k])

Training must see what routing sees (`modelsat/evidence.py`), without the answer in it:
- **Out of fold.** The train split is cut into `train.bank_folds` folds (seeded); a train instruction's evidence reads
  the aptitude answers and the labels of the *other* folds only, so no instruction sees its own result through the
  bank (`tests/test_training_evidence.py` holds a leak test). Val instructions read every train label, as a routed
  instruction reads the whole bank.
- **Thinned banks.** A fraction `train.bank_thin` of the (instruction, model) pairs reads a bank cut at random to the
  aptitude answers plus `THIN_LEVELS` of the other folds' labels (the level drawn per pair from a hash of the seed, the
  question and the model: the same in every epoch and on resume), so the router learns to route a model that joined
  by its aptitude test alone, or has a few hundred results, and how far to trust thin evidence.
- With `train.bank_labels=false` every bank holds the aptitude answers alone (ablation: the aptitude evidence).
The train questions' embeddings and the training models' train labels are also what the checkpoint's results bank
holds (`bank_rows`): the router reads the same evidence for them at routing time.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from modelsat.bank import ResultsBank, text_key
from modelsat.category import CategoryClassifier
from modelsat.config import Config
from modelsat.data.prepare import Prepared
from modelsat.embedding import cached_embedder
from modelsat.evidence import DIM, Candidate, NeighbourSearch, category_accuracy

THIN_LEVELS = (0, 100, 500, 2000)
"""Labels beyond the aptitude answers in a thinned bank (0: the aptitude answers alone)."""
FULL = len(THIN_LEVELS)
"""The level of an unthinned bank (every other-fold label)."""
logger = logging.getLogger(__name__)


def pair_level(seed: int, question_id: str, model: str, thin: float) -> int:
    """The bank level of a training pair: FULL, or with probability `thin` one of THIN_LEVELS' positions (uniform),
    from a hash of (seed, question, model): the same in every epoch, process and resumed run."""
    h = int.from_bytes(hashlib.sha256(f"{seed}\0{question_id}\0{model}".encode()).digest()[:8], "little")
    u = (h >> 11) / 2**53
    return int(u / thin * len(THIN_LEVELS)) if u < thin else FULL


class EvidenceTable:
    """(L, Q, M, E) evidence of the training models for the train questions at each bank level L (FULL last), and
    (Qv, M, E) for the val questions (whole banks). `keys`: (A + T, D) unit embeddings, the aptitude questions then
    the train questions; `classifier`: the category classifier fitted on the train split's categories (None with
    fewer than two); `train_outcomes` (T, M) the labels the checkpoint's bank holds."""

    def __init__(self, cfg: Config, data: Prepared, train_emb: torch.Tensor, val_emb: torch.Tensor,
                 aptitude_emb: torch.Tensor, log: Callable[[str], None] = logger.info) -> None:
        train, val, models = list(data.splits["train"]), list(data.splits["val"]), list(data.train_models)
        self.seed, self.thin = cfg.train.seed, cfg.train.bank_thin if cfg.train.bank_labels else 0.0
        self.models, self.train_ids = models, train
        self.keys = torch.cat([aptitude_emb, train_emb]).float()                           # (A + T, D)
        self.train_emb = train_emb
        A, T = len(aptitude_emb), len(train)
        self.classifier = CategoryClassifier.fit_if_possible(train_emb, data.table.categories(train),
                                                             data.table.categories(data.aptitude.question_ids))
        if self.classifier is None:
            log("evidence: the train split has fewer than two categories; the category value is the overall accuracy")
        proba_keys = None if self.classifier is None else self.classifier.proba(self.keys)
        proba_train = None if proba_keys is None else proba_keys[A:]          # the train questions, as instructions
        proba_val = None if self.classifier is None else self.classifier.proba(val_emb)
        apt = data.table.outcome_matrix(data.aptitude.question_ids, models)                # (A, M)
        if np.isnan(apt).any():
            raise ValueError("a training model lacks aptitude answers; the aptitude test is built from models "
                             "that answered every question")
        self.train_outcomes = data.table.outcome_matrix(train, models)                     # (T, M), NaN: none
        labels = self.train_outcomes if cfg.train.bank_labels else np.full_like(self.train_outcomes, np.nan)
        rng = np.random.default_rng(cfg.train.seed)
        fold = rng.permutation(T) % cfg.train.bank_folds                                    # (T,)

        def candidate(rows: np.ndarray, j: int) -> Candidate:
            """Model j's bank: its aptitude answers and the train rows `rows` where it has a label."""
            rows = rows[~np.isnan(labels[rows, j])]
            pos = np.concatenate([np.arange(A), A + rows])
            out = np.concatenate([apt[:, j], labels[rows, j]]).astype(np.float32)
            cat = None if proba_keys is None else category_accuracy(proba_keys[pos], out)
            return Candidate(pos, out, float(apt[:, j].mean()), cat)

        levels = [FULL] if not cfg.train.bank_labels else list(range(FULL + 1))
        self.values = torch.zeros((FULL + 1, T, len(models), DIM))
        for f in range(cfg.train.bank_folds):
            inside = np.flatnonzero(fold == f)
            others = np.flatnonzero(fold != f)
            x = train_emb[inside]
            for level in levels:
                cands = []
                for j in range(len(models)):
                    rows = others
                    if level < FULL:
                        pick = np.random.default_rng([cfg.train.seed, f, level, j])
                        rows = np.sort(pick.permutation(others)[:THIN_LEVELS[level]])
                    cands.append(candidate(rows, j))
                e = NeighbourSearch(self.keys, cands).evidence(x, None if proba_train is None else proba_train[inside])
                self.values[level, inside] = e
        if not cfg.train.bank_labels:
            self.values[:] = self.values[FULL]
        self.val_values = NeighbourSearch(self.keys, [candidate(np.arange(T), j) for j in range(len(models))]
                                          ).evidence(val_emb, proba_val)                    # (Qv, M, E)
        self.row = {q: i for i, q in enumerate(train)}
        self.val_row = {q: i for i, q in enumerate(val)}
        self.col = {m: j for j, m in enumerate(models)}
        log(f"evidence: {len(train)} train questions in {cfg.train.bank_folds} folds (out of fold), banks thinned for "
            f"{self.thin:.0%} of the pairs to the aptitude answers + {', '.join(map(str, THIN_LEVELS))} labels; "
            f"{len(val)} val questions read every train label" if cfg.train.bank_labels else
            "evidence: the training models' banks hold their aptitude answers alone (train.bank_labels=false)")

    @classmethod
    def build(cls, cfg: Config, data: Prepared, log: Callable[[str], None] = logger.info) -> "EvidenceTable":
        """Embed the train, val and aptitude questions with the model's sentence encoder (through the table's
        embedding cache, `modelsat/embedding.py`) and compute the table."""
        train, val = list(data.splits["train"]), list(data.splits["val"])
        log(f"evidence: embedding {len(train) + len(val)} train/val questions and {len(data.aptitude.question_ids)} "
            "aptitude questions (cached beside the table after the first run)")
        embed = cached_embedder(data.table, cfg.model.sentence_encoder, Path(cfg.data.table_dir))

        def unit(ids: list[str], texts: list[str] | None = None) -> torch.Tensor:
            return F.normalize(torch.from_numpy(embed(texts or data.table.texts(ids))).float(), dim=-1)

        aptitude = unit([], [data.aptitude.texts[q] for q in data.aptitude.question_ids])
        return cls(cfg, data, unit(train), unit(val), aptitude, log)

    @property
    def aptitude_keys(self) -> torch.Tensor:
        """(A, D) unit embeddings of the aptitude questions (stored with the checkpoint)."""
        return self.keys[:len(self.keys) - len(self.train_ids)]

    def level(self, question_id: str, model: str) -> int:
        """The bank level the pair reads in training (`pair_level`)."""
        return pair_level(self.seed, question_id, model, self.thin) if self.thin else FULL

    def __call__(self, question_ids: list[str], models: list[str]) -> torch.Tensor:
        """(K, E) evidence of the pairs (question_ids[k], models[k]): a train question's at the pair's level, a val
        question's with the whole bank."""
        out = []
        for q, m in zip(question_ids, models):
            j = self.col[m]
            out.append(self.values[self.level(q, m), self.row[q], j] if q in self.row
                       else self.val_values[self.val_row[q], j])
        return torch.stack(out)

    def train_values(self) -> torch.Tensor:
        """(T, M, E) every train pair's evidence at its own level (what stage 0 fits on)."""
        levels = torch.tensor([[self.level(q, m) for m in self.models] for q in self.train_ids])     # (T, M)
        t = torch.arange(len(self.train_ids))[:, None].expand_as(levels)
        j = torch.arange(len(self.models))[None].expand_as(levels)
        return self.values[levels, t, j]

    def bank_rows(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """What the checkpoint's results bank holds for the training models: the train question ids, their (T, D)
        unit embeddings and the (T, M) labels (NaN: none)."""
        return self.train_ids, self.train_emb.numpy(), self.train_outcomes


def write_training_bank(path: Path, table: EvidenceTable, data: Prepared, stamp: dict[str, str]) -> Path:
    """The results bank of a checkpoint trained on `data` (`modelsat/bank.py`): every training model's train-split
    labels, its questions keyed by their text's sha256 with their question ids and embeddings (the texts themselves
    are not stored: the data stays where it came from). Written once per run to `path` (replaced), copied into every
    checkpoint of the run."""
    ids, emb, labels = table.bank_rows()
    keys = [text_key(t) for t in data.table.texts(ids)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    bank = ResultsBank.open(path, stamp)
    for j, model in enumerate(table.models):
        have = np.flatnonzero(~np.isnan(labels[:, j]))
        bank.add(model, [keys[i] for i in have], labels[have, j].tolist(), "train",
                 embed=lambda idx, have=have: emb[have[idx]], question_ids=[ids[i] for i in have], store_text=False)
    bank.conn.execute("PRAGMA journal_mode=DELETE")      # one self-contained file to copy
    bank.close()
    return path

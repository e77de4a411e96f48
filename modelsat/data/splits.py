"""Train / val / test splits of a routing table's questions, stratified by category.

    splits = make_splits(table, aptitude, val=0.1, test=0.2, seed=0)
    save_splits(splits, "splits.json", aptitude)      # stores the aptitude fingerprint
    splits = load_splits("splits.json", aptitude=aptitude)

Every question with results that is not an aptitude question lands in exactly one split; the aptitude
questions are in none (they describe the models, they are not routed).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from modelsat.aptitude import Aptitude
from modelsat.io_utils import atomic_write_text

SPLITS = ("train", "val", "test")


def _check_fractions(val: float, test: float) -> None:
    for name, x in (("val", val), ("test", test)):
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) or not 0 <= x < 1:
            raise ValueError(f"split fraction {name}={x!r} must be a number in [0, 1)")
    if val + test >= 1:
        raise ValueError(f"val={val} + test={test} must be below 1 so that some questions are left for training")


def make_splits(table: Any, aptitude: Aptitude, val: float = 0.1, test: float = 0.2, seed: int = 0) -> dict[str, list[str]]:
    """Split the questions that have results, minus the aptitude questions, per category (seeded).

    In each category (sorted by name) the ids are shuffled; round(n·test) go to test, round(n·val) to val,
    the rest to train. Each list is returned sorted.
    """
    _check_fractions(val, test)
    held = set(aptitude.question_ids)
    evaluated = set(table.results["question_id"].astype(str))
    q = table.questions
    qid = q["question_id"].astype(str)
    keep = qid.isin(evaluated) & ~qid.isin(held)
    if not keep.any():
        raise ValueError("no question has results outside the aptitude test: nothing to split")
    cats = q["category"].fillna("").astype(str)[keep].to_numpy()
    ids = qid[keep].to_numpy()
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for cat in sorted(set(cats)):
        members = np.sort(ids[cats == cat])
        members = members[rng.permutation(len(members))]
        n_test = math.floor(len(members) * test + 0.5)
        n_val = min(math.floor(len(members) * val + 0.5), len(members) - n_test)
        out["test"] += members[:n_test].tolist()
        out["val"] += members[n_test:n_test + n_val].tolist()
        out["train"] += members[n_test + n_val:].tolist()
    return {s: sorted(v) for s, v in out.items()}


TRAIN_SOURCE = re.compile(r"[_-]train$")


def train_source_ids(table: Any) -> list[str]:
    """Question ids whose source file is a train file (`*_train` / `*-train`)."""
    q = table.questions
    return q["question_id"].astype(str)[q["source"].fillna("").astype(str).str.contains(TRAIN_SOURCE)].tolist()


def source_splits(table: Any, aptitude: Aptitude, val: float = 0.1, seed: int = 0) -> dict[str, list[str]]:
    """The dataset's own split: train-file questions (minus the aptitude questions) split per category into
    train and val (fraction `val`, seeded); every question of any other file with results is test."""
    pool = set(train_source_ids(table))
    if not pool:
        raise ValueError("split_by='source' needs questions from *_train / *-train source files; this table has none")
    evaluated = set(table.results["question_id"].astype(str))
    out = make_splits(table.subset(question_ids=sorted(pool & evaluated)), aptitude, val=val, test=0.0, seed=seed)
    held = set(aptitude.question_ids)
    out["test"] = sorted(q for q in table.questions["question_id"].astype(str)
                         if q in evaluated and q not in pool and q not in held)
    if not out["test"]:
        raise ValueError("split_by='source' found no test questions outside the *_train files")
    return out


def _check_splits(splits: dict[str, Any], where: str) -> dict[str, list[str]]:
    if not isinstance(splits, dict) or any(s not in splits for s in SPLITS):
        raise ValueError(f"{where}: splits must be a mapping with keys {list(SPLITS)}")
    clean = {}
    for s in SPLITS:
        if not isinstance(splits[s], list) or not all(isinstance(x, str) for x in splits[s]):
            raise ValueError(f"{where}: split {s!r} must be a list of question-id strings")
        if len(set(splits[s])) != len(splits[s]):
            raise ValueError(f"{where}: split {s!r} lists a question twice")
        clean[s] = list(splits[s])
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            both = set(clean[a]) & set(clean[b])
            if both:
                raise ValueError(f"{where}: splits {a!r} and {b!r} share {len(both)} question(s), e.g. {sorted(both)[:5]}")
    return clean


def save_splits(splits: dict[str, list[str]], path: str | Path, aptitude: Aptitude | str | None = None) -> None:
    """Write the splits as JSON (atomically) with the fingerprint of the aptitude test they exclude.

    `aptitude` is the Aptitude (or its fingerprint); pass it so that loading can check it.
    """
    clean = _check_splits(splits, "save_splits")
    fp = aptitude.fingerprint if isinstance(aptitude, Aptitude) else aptitude
    if isinstance(aptitude, Aptitude):
        _check_disjoint(clean, aptitude, "save_splits")
    atomic_write_text(path, json.dumps({"aptitude_fingerprint": fp, **clean}, indent=1, sort_keys=True) + "\n")


def _check_disjoint(splits: dict[str, list[str]], aptitude: Aptitude, where: str) -> None:
    held = set(aptitude.question_ids)
    for s in SPLITS:
        both = held.intersection(splits[s])
        if both:
            raise ValueError(f"{where}: split {s!r} holds {len(both)} aptitude question(s), e.g. {sorted(both)[:5]}; "
                             "make the splits again with this aptitude test")


def load_splits(path: str | Path, aptitude: Aptitude | None = None) -> dict[str, list[str]]:
    """Read splits written by save_splits; with `aptitude`, check its fingerprint and that no split holds its questions."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"split file {path} does not exist; make it with `modelsat data split`")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    splits = _check_splits(doc, str(path))
    if aptitude is not None:
        fp = doc.get("aptitude_fingerprint")
        if fp is not None:
            aptitude.check(fp, f"split file {path}")
        _check_disjoint(splits, aptitude, str(path))
    return splits

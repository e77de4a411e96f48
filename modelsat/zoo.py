"""The zoo: the candidate models a router can pick from, each known only by its aptitude-test results.

On disk a zoo is a folder (`<checkpoint>/zoo/`) with one JSON file per model:
`{"name", "fingerprint", "cost", "cost_unit", "params_b", "scores": {question_id: score}}`.
Each file is written atomically (temporary file + rename), so a crash mid-write leaves the previous
zoo intact; every entry carries the fingerprint of the aptitude test it answered, and a mismatch
is an error.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from modelsat.aptitude import Aptitude
from modelsat.io_utils import atomic_write_text


class ZooError(ValueError):
    """A zoo entry, a results file or a model name is invalid."""


@dataclass
class ZooEntry:
    name: str
    scores: dict[str, float]          # aptitude question id -> score in [0, 1]
    fingerprint: str
    cost: float | None = None
    cost_unit: str = ""
    params_b: float | None = None

    @cached_property
    def accuracy(self) -> float:
        """Mean score on the aptitude test (computed once per entry; `Zoo.add` makes a new entry)."""
        return float(np.mean(list(self.scores.values())))

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "fingerprint": self.fingerprint, "cost": self.cost,
                           "cost_unit": self.cost_unit, "params_b": self.params_b,
                           "scores": self.scores}, indent=1, sort_keys=True)


def _file_name(name: str) -> str:
    """A safe, unique file name for a model name (model names may hold '/')."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
    return f"{stem}-{hashlib.sha1(name.encode()).hexdigest()[:8]}.json"


def _optional_float(value: object, what: str) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ZooError(f"{what} must be a number, got {value!r}") from None


def read_results(results: pd.DataFrame | str | Path, name: str) -> dict[str, float]:
    """Scores of model `name` from a results table: long format (`model`, `question_id`, `score`)
    or a single-model file (`question_id`, `score`); parquet, CSV or JSONL."""
    where = "results"
    if not isinstance(results, pd.DataFrame):
        path = Path(results)
        where = str(path)
        if not path.is_file():
            raise ZooError(f"results file {path} does not exist")
        readers = {".parquet": pd.read_parquet, ".csv": pd.read_csv,
                   ".jsonl": lambda p: pd.read_json(p, lines=True), ".json": pd.read_json}
        if path.suffix not in readers:
            raise ZooError(f"{path}: unknown results format {path.suffix!r}; use .parquet, .csv or .jsonl")
        try:
            results = readers[path.suffix](path)
        except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
            raise ZooError(f"{path}: could not be read as {path.suffix[1:]}: {e}") from e
    missing = {"question_id", "score"} - set(results.columns)
    if missing:
        raise ZooError(f"{where}: missing column(s) {sorted(missing)}; expected question_id, score (and model)")
    if "model" in results.columns:
        if results["model"].nunique() > 1 or (len(results) and name not in set(results["model"])):
            rows = results[results["model"] == name]
            if rows.empty:
                raise ZooError(f"{where}: no rows for model {name!r}; models present: "
                               f"{sorted(results['model'].unique())[:10]}")
            results = rows
    scores = pd.to_numeric(results["score"], errors="coerce")
    bad = scores.isna() | (scores < 0) | (scores > 1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ZooError(f"{where}: row {row}, column 'score': {results['score'].iloc[row]!r} is not a number in [0, 1]")
    ids = results["question_id"].astype(str)
    dup = ids.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise ZooError(f"{where}: row {row}, column 'question_id': duplicate question {ids.iloc[row]!r}")
    return dict(zip(ids, scores.astype(float)))


class Zoo:
    """The candidate models of one router, keyed by name, all on one aptitude test."""

    def __init__(self, aptitude: Aptitude, root: Path | None = None) -> None:
        self.aptitude = aptitude
        self.root = root
        self.entries: dict[str, ZooEntry] = {}

    @classmethod
    def load(cls, root: str | Path, aptitude: Aptitude) -> "Zoo":
        """Read every entry of the folder `root`; a bad file or fingerprint is an error naming it."""
        zoo = cls(aptitude, Path(root))
        if not zoo.root.is_dir():
            raise ZooError(f"zoo folder {zoo.root} does not exist")
        for path in sorted(zoo.root.glob("*.json")):
            try:
                d = json.loads(path.read_text())
                entry = ZooEntry(name=d["name"], scores={k: float(v) for k, v in d["scores"].items()},
                                 fingerprint=d["fingerprint"], cost=d.get("cost"),
                                 cost_unit=d.get("cost_unit", ""), params_b=d.get("params_b"))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                raise ZooError(f"{path}: not a valid zoo entry ({type(e).__name__}: {e}); "
                               "remove it or add the model again") from e
            try:
                aptitude.check(entry.fingerprint, where=str(path))
            except ValueError as e:
                raise ZooError(str(e)) from e
            aptitude.outcomes(entry.scores)  # every aptitude question must be answered
            zoo.entries[entry.name] = entry
        return zoo

    @property
    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> ZooEntry:
        if name not in self.entries:
            raise ZooError(f"unknown model {name!r}; the zoo has: {', '.join(self.names) or '(none)'}")
        return self.entries[name]

    def outcomes(self, name: str) -> np.ndarray:
        """(T, S) aptitude outcomes of model `name`."""
        return self.aptitude.outcomes(self.get(name).scores)

    def add(self, name: str, results: pd.DataFrame | str | Path | dict[str, float], cost: float | None = None,
            params_b: float | None = None, cost_unit: str = "", persist: bool = True,
            replace: bool = False) -> ZooEntry:
        """Add a model from its aptitude results (it must cover every aptitude question)."""
        if not isinstance(name, str) or not name.strip():
            raise ZooError("a model name must be a non-empty string")
        if name in self.entries and not replace:
            raise ZooError(f"model {name!r} is already in the zoo; remove it first")
        if isinstance(results, dict):
            results = pd.DataFrame({"question_id": list(results), "score": list(results.values())})
        scores = read_results(results, name)
        wanted = set(self.aptitude.question_ids)
        self.aptitude.outcomes(scores)  # raises naming the missing aptitude questions
        entry = ZooEntry(name=name, scores={q: float(scores[q]) for q in sorted(wanted)},
                         fingerprint=self.aptitude.fingerprint,
                         cost=_optional_float(cost, "cost"), cost_unit=cost_unit,
                         params_b=_optional_float(params_b, "params_b"))
        if persist:
            if self.root is None:
                raise ZooError("this zoo has no folder to persist to")
            atomic_write_text(self.root / _file_name(name), entry.to_json())
        self.entries[name] = entry
        return entry

    def remove(self, name: str, persist: bool = True) -> None:
        self.get(name)
        if persist and self.root is not None:
            (self.root / _file_name(name)).unlink(missing_ok=True)
        del self.entries[name]

    def costs(self, names: list[str]) -> np.ndarray:
        """Cost per model (`cost`, else `params_b`, else NaN)."""
        out = []
        for n in names:
            e = self.get(n)
            out.append(e.cost if e.cost is not None else e.params_b if e.params_b is not None else math.nan)
        return np.asarray(out, dtype=np.float64)

    def describe(self) -> list[dict]:
        """One row per model: name, aptitude accuracy, cost, params."""
        return [{"model": n, "aptitude_accuracy": e.accuracy,
                 "cost": e.cost, "cost_unit": e.cost_unit, "params_b": e.params_b}
                for n, e in sorted(self.entries.items())]

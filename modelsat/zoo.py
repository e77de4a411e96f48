"""The zoo: the candidate models a router can pick from, each known only by its aptitude-test results.

On disk a zoo is a folder (`<checkpoint>/zoo/`) with one JSON file per model:
`{"name", "fingerprint", "cost", "cost_unit", "params_b", "missing", "num_missing", "scores": {question_id: score}}`.
Each file is written atomically (temporary file + rename), so a crash mid-write leaves the previous
zoo intact; every entry carries the fingerprint of the aptitude test it answered, and a mismatch
is an error. A zoo has one cost unit: an entry's cost is `cost` in `cost_unit`, or, without a cost,
`params_b` in the unit "params_b"; entries in another unit are refused.

An entry may also say where the model answers: `endpoint` (an OpenAI-compatible base URL, e.g.
http://127.0.0.1:8080/v1), `upstream_model` (the id that endpoint knows it by), `api_key_env` (the name of the
environment variable holding its API key, read at request time; the key itself is never stored) and
`price_in`/`price_out` (USD per million input/output tokens). Prices give the entry its cost: their mean, in the
unit "usd_per_1M_tokens" (a request of as many input as output tokens). These keys are written only where set.

An entry may also declare what the model can serve (the gateway keeps only candidates that can serve a request):
`context_window` (tokens, a positive integer), `capabilities` (a list of names from `CAPABILITIES`: `tools`,
`vision`, `json_schema`; an empty list declares none) and `tokenizer` (a Hugging Face id or local path whose
tokenizer counts the model's tokens). Absent means undeclared (unknown), not "none". Written only where set.

Beyond its aptitude answers, a model's graded results (train-split labels, a user's graded prompts, feedback) live
in the zoo's results bank (`<zoo>/bank.sqlite`, `modelsat/bank.py`), not in its entry file.

Why one module: a zoo entry's file format, its checks (names, costs, endpoints, results) and the
folder's atomic edits are one concept that `zoo add`, the service and the router all read through.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Literal
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from modelsat.aptitude import Aptitude, AptitudeError
from modelsat.bank import BANK_FILE, bad_json_line, bank_counts, forget_model
from modelsat.io_utils import atomic_write_text

MAX_MISSING_FRACTION = 0.05
"""With missing="wrong", at most this fraction of the aptitude questions may go unanswered (counted as wrong)."""
MAX_NAME_LENGTH = 200
INVISIBLE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")   # not allowed in model names
PRICE_UNIT = "usd_per_1M_tokens"
"""The cost unit of entries priced per token: the mean of `price_in` and `price_out`."""
ENDPOINT_FIELDS = ("endpoint", "upstream_model", "api_key_env", "price_in", "price_out")
CAPABILITIES = ("tools", "vision", "json_schema")
"""What a zoo entry may declare it serves: `tools` (tool definitions and tool messages), `vision` (image content
parts), `json_schema` (a JSON-schema `response_format`). Extend the tuple to add one."""
SERVING_FIELDS = ("context_window", "capabilities", "tokenizer")
"""An entry's declared limits: absent (None) means undeclared, which the gateway allows with a warning."""
MAX_CONTEXT_WINDOW = 100_000_000


class ZooError(ValueError):
    """A zoo entry, a results file or a model name is invalid."""


class MissingAnswersError(ZooError, AptitudeError):
    """Results leave aptitude questions unanswered (an AptitudeError too, as `Zoo.add` raised before)."""


@dataclass
class ZooEntry:
    name: str
    scores: dict[str, float]          # aptitude question id -> score in [0, 1]
    fingerprint: str
    cost: float | None = None
    cost_unit: str = ""
    params_b: float | None = None
    missing: str = "error"            # "wrong": `num_missing` unanswered questions are scored 0
    num_missing: int = 0
    endpoint: str | None = None       # OpenAI-compatible base URL the model answers at (the gateway forwards there)
    upstream_model: str | None = None  # the model id that endpoint knows
    api_key_env: str | None = None    # environment variable holding the endpoint's API key (never the key)
    price_in: float | None = None     # USD per 1M input tokens
    price_out: float | None = None    # USD per 1M output tokens
    context_window: int | None = None  # tokens the model reads and writes in one request (None: undeclared)
    capabilities: list[str] | None = None  # names from CAPABILITIES it serves (None: undeclared; []: none)
    tokenizer: str | None = None      # Hugging Face id or local path of its tokenizer, to count its tokens

    @cached_property
    def accuracy(self) -> float:
        """Mean score on the aptitude test (computed once per entry; `Zoo.add` makes a new entry)."""
        return float(np.mean(list(self.scores.values())))

    @property
    def unit(self) -> str | None:
        """The unit of the entry's effective cost: `cost_unit`, "params_b" without a cost, None without either."""
        return self.cost_unit if self.cost is not None else "params_b" if self.params_b is not None else None

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "fingerprint": self.fingerprint, "cost": self.cost,
                           "cost_unit": self.cost_unit, "params_b": self.params_b, "missing": self.missing,
                           "num_missing": self.num_missing, "scores": self.scores,
                           **{k: getattr(self, k) for k in ENDPOINT_FIELDS + SERVING_FIELDS
                              if getattr(self, k) is not None}},
                          indent=1, sort_keys=True, allow_nan=False)


def _file_name(name: str) -> str:
    """A safe, unique file name for a model name (model names may hold '/')."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
    return f"{stem}-{hashlib.sha1(name.encode()).hexdigest()[:8]}.json"


def _unit_label(unit: str | None) -> str:
    return {"": "no unit ('')", "params_b": "'params_b' (billions of parameters)"}.get(unit, repr(unit))


def max_missing(num_questions: int) -> int:
    """How many of `num_questions` aptitude questions missing="wrong" may count as wrong (5%, rounded down)."""
    return int(num_questions * MAX_MISSING_FRACTION + 1e-9)


def check_model_name(name: object) -> str:
    """`name` if it can identify one model everywhere (CLI lists, the API, file names); ZooError otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise ZooError(f"a model name must be a non-empty string, got {name!r}")
    if name != name.strip():
        raise ZooError(f"model name {name!r} has leading or trailing whitespace; give it without")
    # invisible, format (U+200B, U+202E, U+FEFF), unassigned or private characters and spaces other than U+0020
    # (U+00A0) make two names that look alike differ; look-alike letters of other scripts are legitimate names
    bad = next((c for c in name if unicodedata.category(c) in INVISIBLE_CATEGORIES
                or (unicodedata.category(c) == "Zs" and c != " ")), None)
    if bad is not None:
        raise ZooError(f"model name {name!r} holds the invisible, control or invalid character U+{ord(bad):04X} "
                       f"({unicodedata.name(bad, unicodedata.category(bad))}); remove it or type the name again")
    if not name.strip("."):
        raise ZooError(f"model name {name!r} is only dots; give a name with letters or digits")
    if name.startswith(("../", "..\\")):
        raise ZooError(f"model name {name!r} starts with '../', which reads as a path out of a folder; "
                       "give it without")
    if "," in name:
        raise ZooError(f"model name {name!r} holds a comma, which separates names in --models lists; "
                       "use another character")
    if len(name) > MAX_NAME_LENGTH:
        raise ZooError(f"model name {name[:40]!r}... is {len(name)} characters long, over {MAX_NAME_LENGTH}; "
                       "give a shorter one")
    return name


def check_cost(value: object, what: str = "cost") -> float | None:
    """`value` as a cost or a parameter count: None where unknown, else a finite number >= 0 (ZooError otherwise)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ZooError(f"{what} must be a finite number >= 0, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise ZooError(f"{what} must be a finite number >= 0, got {number!r}")
    return number + 0.0   # -0.0 is stored as 0.0


def check_endpoint(endpoint: object = None, upstream_model: object = None, api_key_env: object = None,
                   price_in: object = None, price_out: object = None) -> dict:
    """The endpoint fields of an entry, checked (ZooError naming the field otherwise): `endpoint` an http(s) URL
    with a host, and then `upstream_model` required; `api_key_env` an environment variable name ([A-Za-z_]
    [A-Za-z0-9_]*, never the key itself); prices finite numbers >= 0, both or neither. All None: no endpoint."""
    fields = {"endpoint": endpoint, "upstream_model": upstream_model, "api_key_env": api_key_env}
    for key, value in fields.items():
        if value is not None and (not isinstance(value, str) or not value.strip() or value != value.strip()
                                  or any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
                                  or len(value) > 2000):
            raise ZooError(f"{key} must be a non-empty string without surrounding spaces or control characters "
                           f"(at most 2000 characters), got {str(value)[:80]!r}")
    if endpoint is not None:
        try:
            url = urlsplit(endpoint)
            url.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as e:
            raise ZooError(f"endpoint {endpoint[:80]!r} is not a URL ({e}); give e.g. http://127.0.0.1:8080/v1") from e
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ZooError(f"endpoint {endpoint[:80]!r} must be an http:// or https:// URL with a host, e.g. "
                           "http://127.0.0.1:8080/v1 (the base URL before /chat/completions)")
        if url.username or url.password:
            raise ZooError(f"endpoint of host {url.hostname!r} holds a user name or password; give the API key "
                           "through an environment variable named by --api-key-env instead")
        if upstream_model is None:
            raise ZooError("an endpoint needs the model id it serves (--upstream-model / upstream_model)")
    elif upstream_model is not None or api_key_env is not None:
        raise ZooError("upstream_model and api_key_env need an endpoint (--endpoint URL)")
    if api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
        raise ZooError(f"api_key_env must name an environment variable (letters, digits, _), got "
                       f"{api_key_env[:40]!r}; the key itself is never stored: export it and give its name")
    price_in, price_out = check_cost(price_in, "price_in"), check_cost(price_out, "price_out")
    if (price_in is None) != (price_out is None):
        raise ZooError("give both price_in and price_out (USD per 1M input and output tokens), or neither")
    return {**fields, "price_in": price_in, "price_out": price_out}


def check_serving(context_window: object = None, capabilities: object = None, tokenizer: object = None) -> dict:
    """The declared limits of an entry, checked (ZooError naming the field otherwise): `context_window` a positive
    integer (tokens; not a bool, not a float), `capabilities` a list of distinct names from CAPABILITIES (a string
    of comma-separated names is split, as the CLI gives them; returned sorted), `tokenizer` a non-empty string
    without surrounding spaces. None: undeclared."""
    if context_window is not None:
        if isinstance(context_window, (bool, np.bool_)) or not isinstance(context_window, (int, np.integer)) \
                or not 0 < context_window <= MAX_CONTEXT_WINDOW:
            raise ZooError(f"context_window must be a positive integer (tokens, at most {MAX_CONTEXT_WINDOW:,}), "
                           f"got {str(context_window)[:40]!r}")
        context_window = int(context_window)
    if capabilities is not None:
        if isinstance(capabilities, str):
            capabilities = [c.strip() for c in capabilities.split(",") if c.strip()]
        if not isinstance(capabilities, (list, tuple)) or any(not isinstance(c, str) for c in capabilities):
            raise ZooError(f"capabilities must be a list of names from {list(CAPABILITIES)}, got "
                           f"{str(capabilities)[:80]!r}")
        unknown = [c for c in capabilities if c not in CAPABILITIES]
        if unknown:
            raise ZooError(f"unknown capability {unknown[0][:40]!r}; capabilities are {', '.join(CAPABILITIES)}")
        if len(set(capabilities)) != len(capabilities):
            raise ZooError(f"capabilities name {next(c for c in capabilities if capabilities.count(c) > 1)!r} "
                           "twice; give each once")
        capabilities = sorted(capabilities)
    if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer.strip()
                                  or tokenizer != tokenizer.strip() or len(tokenizer) > 2000
                                  or any(unicodedata.category(c) in ("Cc", "Cs") for c in tokenizer)):
        raise ZooError(f"tokenizer must be a Hugging Face id or a path (a non-empty string without surrounding "
                       f"spaces), got {str(tokenizer)[:80]!r}")
    return {"context_window": context_window, "capabilities": capabilities, "tokenizer": tokenizer}


def price_cost(price_in: float, price_out: float) -> float:
    """The cost of an entry priced per token, in PRICE_UNIT: the mean of its input and output prices."""
    return (price_in + price_out) / 2


def _asked(name: object) -> object:
    """A model name asked for, as it is compared: without surrounding whitespace (names never have any), so
    " Yi-34B" finds Yi-34B everywhere, as the router's `models` do; names stay case-sensitive."""
    return name.strip() if isinstance(name, str) else name


def _common_unit(entries: Iterable[ZooEntry]) -> str | None:
    """The cost unit of the first of `entries` that has one."""
    return next((e.unit for e in entries if e.unit is not None), None)


def read_results(results: pd.DataFrame | str | Path, name: str) -> dict[str, float]:
    """Scores of model `name` from a results table: long format (`model`, `question_id`, `score`)
    or a single-model file (`question_id`, `score`); parquet, CSV or JSONL."""
    where = "results"
    if not isinstance(results, pd.DataFrame):
        path = Path(results)
        where = str(path)
        if path.is_dir():
            raise ZooError(f"results {path} is a folder, not a file; give the results file (.parquet, .csv or "
                           ".jsonl) of `modelsat aptitude run`")
        if not path.is_file():
            raise ZooError(f"results file {path} does not exist")
        readers = {".parquet": pd.read_parquet, ".csv": pd.read_csv,
                   ".jsonl": lambda p: pd.read_json(p, lines=True), ".json": pd.read_json}
        if path.suffix not in readers:
            raise ZooError(f"{path}: unknown results format {path.suffix!r}; use .parquet, .csv or .jsonl")
        try:
            results = readers[path.suffix](path)
        except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
            line = bad_json_line(path) if path.suffix == ".jsonl" else None
            raise ZooError(f"{path}: {line or 'could not be read as ' + path.suffix[1:]}: {e}") from e
    missing = {"question_id", "score"} - set(results.columns)
    if missing:
        raise ZooError(f"{where}: missing column(s) {sorted(missing)}; expected question_id, score (and model)")
    if results.empty:
        raise ZooError(f"{where}: has no rows (only a header?); a results file holds question_id, score (and model) "
                       "with one row per aptitude question (`modelsat aptitude run` writes one)")
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
        self.files: dict[str, Path] = {}  # name -> the file the entry was read from or written to
        self.unsaved_removals: set[str] = set()  # removed with persist=False: `reload` leaves them out
        self.read_only: str | None = None        # why the folder must not be written to, and what to do (a shipped
        #                                          router, a hub snapshot: `checkpoint.locate_checkpoint`)

    def check_writable(self) -> None:
        """Raise ZooError (`read_only`, which says to copy the router first) where the zoo's folder must not be
        written to: every write to it (an entry, a removal, the results bank) asks here first."""
        if self.read_only is not None:
            raise ZooError(self.read_only)

    @classmethod
    def load(cls, root: str | Path, aptitude: Aptitude) -> "Zoo":
        """Read every entry of the folder `root`; a bad file, fingerprint, name or cost is an error naming it."""
        zoo = cls(aptitude, Path(root))
        if zoo.root.exists() and not zoo.root.is_dir():
            raise ZooError(f"zoo {zoo.root} is a file, not a folder; remove it and make a folder of zoo entries "
                           "(*.json) there")
        if not zoo.root.is_dir():
            raise ZooError(f"zoo folder {zoo.root} does not exist")
        for path in sorted(zoo.root.glob("*.json")):
            entry = _read_entry(path, aptitude)
            if entry.name in zoo.files:
                raise ZooError(f"{zoo.files[entry.name]} and {path} both hold model {entry.name!r}; "
                               "delete one of the two files")
            unit = zoo.cost_unit
            if unit is not None and entry.unit is not None and entry.unit != unit:
                first = next(zoo.files[n] for n, e in zoo.entries.items() if e.unit is not None)
                raise ZooError(f"{path} gives its cost in {_unit_label(entry.unit)} but {first} in "
                               f"{_unit_label(unit)}; a zoo has one cost unit: delete one of the files and add "
                               "the model again with a cost in the zoo's unit")
            zoo.entries[entry.name] = entry
            zoo.files[entry.name] = path
        return zoo

    def signature(self) -> tuple:
        """The folder's *.json files as (name, inode, size, mtime) tuples: what changes when `modelsat zoo add` or
        `remove` writes to it (empty without a folder or when it cannot be listed)."""
        if self.root is None:
            return ()
        try:
            with os.scandir(self.root) as it:
                return tuple(sorted((e.name, e.inode(), st.st_size, st.st_mtime_ns) for e in it
                                    if e.name.endswith(".json") for st in [e.stat()]))
        except OSError:
            return ()

    def reload(self) -> set[str]:
        """Re-read the folder, e.g. after `modelsat zoo add/remove` in another process; entries added (without a
        file) or removed with persist=False here stay so. Returns the names added, changed or removed. A bad file
        raises ZooError and leaves the zoo as it was."""
        disk = Zoo.load(self.root, self.aptitude)
        for name in self.unsaved_removals & set(disk.entries):
            del disk.entries[name], disk.files[name]
        for name, entry in self.entries.items():
            if name not in self.files and name not in disk.entries:   # added here with persist=False
                disk.entries[name] = entry
        changed = {n for n in set(self.entries) | set(disk.entries)
                   if n not in self.entries or n not in disk.entries or self.entries[n] != disk.entries[n]}
        self.entries, self.files = disk.entries, disk.files
        return changed

    @property
    def names(self) -> list[str]:
        return sorted(self.entries)

    @property
    def cost_unit(self) -> str | None:
        """The unit of the zoo's costs ("params_b" where they are parameter counts); None while no entry has one."""
        return _common_unit(e for _, e in sorted(self.entries.items()))

    def __contains__(self, name: str) -> bool:
        return _asked(name) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> ZooEntry:
        """The entry of model `name` (compared without surrounding whitespace, as names are stored)."""
        name = _asked(name)
        if name not in self.entries:
            raise ZooError(f"unknown model {name!r}; the zoo has: {', '.join(self.names) or '(none)'}")
        return self.entries[name]

    def outcomes(self, name: str) -> np.ndarray:
        """(T, S) aptitude outcomes of model `name`."""
        return self.aptitude.outcomes(self.get(name).scores)

    def add(self, name: str, results: pd.DataFrame | str | Path | dict[str, float], cost: float | None = None,
            params_b: float | None = None, cost_unit: str = "", persist: bool = True, replace: bool = False,
            missing: Literal["error", "wrong"] = "error", endpoint: str | None = None,
            upstream_model: str | None = None, api_key_env: str | None = None, price_in: float | None = None,
            price_out: float | None = None, context_window: int | None = None,
            capabilities: list[str] | str | None = None, tokenizer: str | None = None) -> ZooEntry:
        """Add a model from its aptitude results.

        Every aptitude question must be answered; with `missing="wrong"` up to 5% of them may be absent and count
        as wrong. `cost` (in `cost_unit`) and `params_b` are finite numbers >= 0 or None (unknown; NaN is refused);
        the entry's unit must be the zoo's. `endpoint`, `upstream_model`, `api_key_env`, `price_in`, `price_out`:
        where the model answers (`check_endpoint`); prices set the cost (`price_cost`, in PRICE_UNIT) and exclude
        `cost`. `context_window`, `capabilities`, `tokenizer`: what it can serve (`check_serving`; None undeclared).
        """
        check_model_name(name)
        where_to = check_endpoint(endpoint, upstream_model, api_key_env, price_in, price_out)
        serving = check_serving(context_window, capabilities, tokenizer)
        if where_to["price_in"] is not None:
            if cost is not None or cost_unit not in ("", PRICE_UNIT):
                raise ZooError(f"model {name!r}: give either prices (USD per 1M tokens, the cost is their mean in "
                               f"{PRICE_UNIT!r}) or a cost with its unit, not both")
            cost, cost_unit = price_cost(where_to["price_in"], where_to["price_out"]), PRICE_UNIT
        if name in self.entries and not replace:
            raise ZooError(f"model {name!r} is already in the zoo; remove it first")
        if missing not in ("error", "wrong"):
            raise ZooError(f"missing must be 'error' or 'wrong', got {missing!r}")
        if not isinstance(cost_unit, str):
            raise ZooError(f"cost_unit must be a string, got {cost_unit!r}")
        cost, params_b = check_cost(cost, "cost"), check_cost(params_b, "params_b")   # NaN refused, None unknown
        where = f"{results}: " if isinstance(results, (str, Path)) else ""
        if isinstance(results, dict):
            results = pd.DataFrame({"question_id": list(results), "score": list(results.values())})
        scores = read_results(results, name)
        ids = self.aptitude.question_ids
        absent = [q for q in ids if q not in scores]
        allowed = max_missing(len(ids))
        if absent and missing == "error":
            raise MissingAnswersError(
                f"{where}the results of {name!r} miss {len(absent)} of the {len(ids)} aptitude questions (e.g. "
                f"{absent[:3]}); answer them (`modelsat aptitude run` resumes), or pass --missing wrong to count "
                f"them as wrong (allowed for up to {allowed}, 5% of the test)")
        if len(absent) > allowed:
            raise MissingAnswersError(
                f"{where}the results of {name!r} miss {len(absent)} of the {len(ids)} aptitude questions, more than "
                f"the {allowed} (5% of the test) that --missing wrong may count as wrong (e.g. {absent[:3]}); "
                "answer them (`modelsat aptitude run` resumes)")
        entry = ZooEntry(name=name, scores={q: float(scores.get(q, 0.0)) for q in sorted(ids)},
                         fingerprint=self.aptitude.fingerprint, cost=cost, cost_unit=cost_unit, params_b=params_b,
                         missing=missing, num_missing=len(absent), **where_to, **serving)
        unit = _common_unit(e for n, e in sorted(self.entries.items()) if n != name)  # a replaced entry may change it
        if unit is not None and entry.unit is not None and entry.unit != unit:
            hint = ("give its size with --params-b and no --cost" if unit == "params_b" else
                    "give a --cost without --cost-unit" if unit == "" else
                    "give --price-in and --price-out (USD per 1M tokens)" if unit == PRICE_UNIT else
                    f"give a --cost in {unit} (--cost-unit {unit})")
            raise ZooError(f"model {name!r} has its cost in {_unit_label(entry.unit)}, but this zoo's costs are in "
                           f"{_unit_label(unit)} and a zoo has one cost unit; {hint}, as the other entries")
        if persist:
            if self.root is None:
                raise ZooError("this zoo has no folder to persist to")
            self.check_writable()
            path = self.files.get(name) or self.root / _file_name(name)  # a replaced entry keeps its file
            holder = next((n for n, p in self.files.items() if p == path and n != name), None)
            if holder is not None:
                raise ZooError(f"{path} holds model {holder!r}, not {name!r}; rename that file (any *.json name "
                               "will do) and add the model again")
            atomic_write_text(path, entry.to_json())
            self.files[name] = path
        self.entries[name] = entry
        self.unsaved_removals.discard(name)
        return entry

    def remove(self, name: str, persist: bool = True) -> None:
        """Remove model `name` (compared without surrounding whitespace); with `persist`, delete the file it was read
        from or written to, and its results in the zoo's results bank (`modelsat/bank.py`)."""
        name = self.get(name).name
        if persist:
            self.check_writable()
        path = self.files.get(name) or (self.root / _file_name(name) if self.root is not None else None)
        if persist and self.root is not None:
            forget_model(self.root / BANK_FILE, name)
        if persist and path is not None and path not in {p for n, p in self.files.items() if n != name}:
            path.unlink(missing_ok=True)  # never another entry's file (one renamed by hand to this name's)
        if not persist:
            self.unsaved_removals.add(name)
        del self.entries[name]
        self.files.pop(name, None)

    def costs(self, names: list[str]) -> np.ndarray:
        """Cost per model (`cost`, else `params_b`, else NaN)."""
        out = []
        for n in names:
            e = self.get(n)
            out.append(e.cost if e.cost is not None else e.params_b if e.params_b is not None else math.nan)
        return np.asarray(out, dtype=np.float64)

    def save(self, root: str | Path) -> None:
        """Write every entry, one file each, to the folder `root` (created; a copy of the zoo, e.g. for
        `Router.save_pretrained`). The zoo keeps reading and writing its own folder."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        for name, entry in sorted(self.entries.items()):
            atomic_write_text(root / _file_name(name), entry.to_json())

    def describe(self) -> list[dict]:
        """One row per model: name, aptitude accuracy, cost and its unit, params, missing answers and their rule,
        and, where set, endpoint, upstream model, the name of its API key's variable (never the key), prices, and
        the declared context window, capabilities and tokenizer; `bank_results`: how many graded results its results
        bank holds beyond the aptitude answers."""
        banked = (bank_counts(self.root / BANK_FILE, immutable=self.read_only is not None) if self.root is not None
                  else {})                                      # a read-only zoo's bank: nothing written beside it
        return [{"model": n, "aptitude_accuracy": e.accuracy, "bank_results": banked.get(n, 0), "cost": e.cost,
                 "cost_unit": e.cost_unit,
                 "params_b": e.params_b, "missing": e.missing, "num_missing": e.num_missing,
                 **{k: getattr(e, k) for k in ENDPOINT_FIELDS + SERVING_FIELDS if getattr(e, k) is not None}}
                for n, e in sorted(self.entries.items())]


def _read_entry(path: Path, aptitude: Aptitude) -> ZooEntry:
    """One zoo entry file, checked (name, costs, fingerprint, complete scores in [0, 1]); ZooError naming it."""
    fix = "delete the file and add the model again (`modelsat zoo add`)"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        strange = next(((k, v) for k, v in d["scores"].items()
                        if isinstance(v, bool) or not isinstance(v, (int, float))), None)
        if strange is not None:   # float() would take true or "0.5"
            raise ZooError(f"{path}: the score of question {strange[0]!r} is {json.dumps(strange[1])[:40]}, not a "
                           f"number in [0, 1]; {fix}")
        entry = ZooEntry(name=d["name"], scores={str(k): float(v) for k, v in d["scores"].items()},
                         fingerprint=d["fingerprint"], cost=d.get("cost"), cost_unit=d.get("cost_unit", ""),
                         params_b=d.get("params_b"), missing=d.get("missing", "error"),
                         num_missing=d.get("num_missing", 0),
                         **{k: d.get(k) for k in ENDPOINT_FIELDS + SERVING_FIELDS})
    except ZooError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:  # JSON, UTF-8 errors
        raise ZooError(f"{path}: not a valid zoo entry ({type(e).__name__}: {e}); {fix}") from e
    try:
        check_model_name(entry.name)
        entry.cost, entry.params_b = check_cost(entry.cost, "cost"), check_cost(entry.params_b, "params_b")
        for key, value in check_endpoint(*(getattr(entry, k) for k in ENDPOINT_FIELDS)).items():
            setattr(entry, key, value)
        if isinstance(entry.capabilities, str):    # the file holds a list; a string would be split as the CLI's
            raise ZooError(f"capabilities must be a list, got the string {entry.capabilities[:40]!r}")
        for key, value in check_serving(*(getattr(entry, k) for k in SERVING_FIELDS)).items():
            setattr(entry, key, value)
        if not isinstance(entry.cost_unit, str):
            raise ZooError(f"cost_unit must be a string, got {entry.cost_unit!r}")
        ids = aptitude.question_ids
        if entry.missing not in ("error", "wrong"):
            raise ZooError(f"missing must be 'error' or 'wrong', got {entry.missing!r}")
        limit = max_missing(len(ids)) if entry.missing == "wrong" else 0
        if isinstance(entry.num_missing, bool) or not isinstance(entry.num_missing, int) \
                or not 0 <= entry.num_missing <= limit:
            raise ZooError(f"num_missing must be an integer in [0, {limit}] with missing={entry.missing!r}, "
                           f"got {entry.num_missing!r}")
        if not isinstance(entry.fingerprint, str):
            raise ZooError(f"fingerprint must be a string, got {entry.fingerprint!r}")
    except ZooError as e:
        raise ZooError(f"{path}: {e}; {fix}") from e
    try:
        aptitude.check(entry.fingerprint, where=str(path))
    except ValueError as e:
        raise ZooError(str(e)) from e
    absent = [q for q in ids if q not in entry.scores]
    if absent:
        raise ZooError(f"{path}: the scores of {entry.name!r} miss {len(absent)} of the {len(ids)} aptitude questions "
                       f"(e.g. {absent[:3]}); {fix} with results for every question")
    bad = next((q for q in ids if not 0.0 <= entry.scores[q] <= 1.0), None)  # NaN fails too
    if bad is not None:
        raise ZooError(f"{path}: the score of question {bad!r} is {entry.scores[bad]!r}, not a number in [0, 1]; {fix}")
    return entry

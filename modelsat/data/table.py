"""The routing table: questions, per-model results and model metadata, checked and stored as one folder.

    table = RoutingTable.load("data/mmlu_pro_table")     # questions/results/(models) as .parquet|.csv|.jsonl
    y = table.outcome_matrix(table.questions.question_id, table.model_names)   # (Q, M), NaN = not evaluated
    table.save("out/table")                               # three parquet files, written atomically

Every check raises `TableError` naming the file, the 0-based data row and the column. Nothing is dropped silently.

Why one module: the table and the checks of its three files (questions, results, models)
are one concept; every reader of a routing table goes through these checks.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from modelsat.io_utils import atomic_dir

QUESTION_COLUMNS = ["question_id", "text", "benchmark", "category", "task", "source"]
OPTIONAL_QUESTION_COLUMNS = ["answer"]  # answer letter ("C"), "" where unknown
RESULT_COLUMNS = ["model", "question_id", "score"]
OPTIONAL_RESULT_COLUMNS = ["cost"]  # per-query cost (e.g. USD), NaN where unknown
MODEL_COLUMNS = ["model", "cost", "params_b", "cost_unit"]
FORMATS = ("parquet", "csv", "jsonl")
_MAY_BE_EMPTY = {"task", "answer", "cost_unit"}
_NUMERIC = {"score", "cost", "params_b"}


class TableError(ValueError):
    """Invalid routing data; the message names the file, the row (0-based data row) and the column."""


def fail(file: str | Path, row: int | None, column: str | None, message: str) -> TableError:
    """Build a `TableError` reading `file: row R, column 'C': message`."""
    where = [f"row {row}"] if row is not None else []
    where += [f"column {column!r}"] if column is not None else []
    return TableError(f"{file}: {', '.join(where)}: {message}" if where else f"{file}: {message}")


def require_columns(df: pd.DataFrame, columns: Iterable[str], file: str | Path) -> None:
    """Raise if any of `columns` is missing from `df` (read from `file`)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise fail(file, None, None, f"missing column(s) {', '.join(map(repr, missing))}; "
                   f"found {', '.join(map(repr, map(str, df.columns)))}")


def _first(mask: np.ndarray | pd.Series) -> int | None:
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(idx[0]) if len(idx) else None


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def check_strings(df: pd.DataFrame, column: str, file: str | Path, allow_empty: bool = False,
                  names: Mapping[str, str] | None = None) -> None:
    """Every value of `df[column]` is a str (non-blank unless `allow_empty`); `names` maps to source column names."""
    s, name = df[column], (names or {}).get(column, column)
    if s.dtype == object:
        bad = _first(~s.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool))
    else:
        bad = _first(s.isna()) if pd.api.types.is_string_dtype(s) else (0 if len(s) else None)
    if bad is not None:
        value = s.iloc[bad]
        shown = value.item() if isinstance(value, np.generic) else value      # 1.5, not np.float64(1.5)
        raise fail(file, bad, name, "is missing (null); every row needs a value" if _is_null(value)
                   else f"{shown!r} is not a string; write text there")
    if not allow_empty:
        bad = _first(s.str.strip().eq(""))
        if bad is not None:
            raise fail(file, bad, name, "is empty; every row needs a non-blank value")


def check_numbers(df: pd.DataFrame, column: str, file: str | Path, low: float | None = 0.0,
                  high: float | None = None, allow_nan: bool = False, names: Mapping[str, str] | None = None) -> None:
    """Every value of `df[column]` is a number in [low, high] (NaN only where `allow_nan`)."""
    s, name = df[column], (names or {}).get(column, column)
    if s.dtype == bool:
        return
    values = pd.to_numeric(s, errors="coerce") if not pd.api.types.is_numeric_dtype(s) else s
    bad = _first(values.isna() & s.notna())
    if bad is not None:
        raise fail(file, bad, name, f"{s.iloc[bad]!r} is not a number")
    values = values.to_numpy(dtype=np.float64)
    if not allow_nan and (bad := _first(np.isnan(values))) is not None:
        raise fail(file, bad, name, "is missing (NaN); every row needs a number")
    out = np.zeros(len(values), dtype=bool)
    with np.errstate(invalid="ignore"):
        if low is not None:
            out |= values < low
        if high is not None:
            out |= values > high
    if (bad := _first(out)) is not None:
        bounds = f"[{low:g}, {high:g}]" if high is not None else f"[{low:g}, inf)"
        raise fail(file, bad, name, f"{values[bad]:g} is outside {bounds}")


def check_unique(df: pd.DataFrame, columns: Sequence[str], file: str | Path, names: Mapping[str, str] | None = None) -> None:
    """No two rows share the same values of `columns` (the error names both rows)."""
    codes = np.zeros(len(df), dtype=np.int64)
    for c in columns:  # combine factorized codes into one int64 key: fast on millions of rows
        k, uniques = pd.factorize(df[c], use_na_sentinel=False)
        codes = codes * max(len(uniques), 1) + k
    dup = pd.Series(codes).duplicated(keep="first").to_numpy()
    if (bad := _first(dup)) is not None:
        first = int(np.flatnonzero(codes == codes[bad])[0])
        key = ", ".join(f"{(names or {}).get(c, c)}={df[c].iloc[bad]!r}" for c in columns)
        raise fail(file, bad, (names or {}).get(columns[-1], columns[-1]), f"duplicate row ({key}) already at row {first}")


def check_questions(q: pd.DataFrame, file: str | Path, names: Mapping[str, str] | None = None) -> None:
    """Validate a questions frame read (row for row) from `file`."""
    require_columns(q, QUESTION_COLUMNS, file)
    for c in QUESTION_COLUMNS + [c for c in OPTIONAL_QUESTION_COLUMNS if c in q.columns]:
        check_strings(q, c, file, allow_empty=c in _MAY_BE_EMPTY, names=names)
    check_unique(q, ["question_id"], file, names)


def check_results(r: pd.DataFrame, file: str | Path, question_ids: pd.Series | None = None,
                  questions_file: str | Path = "questions", names: Mapping[str, str] | None = None) -> None:
    """Validate a results frame read from `file`; `question_ids` are the known ids (from `questions_file`)."""
    require_columns(r, RESULT_COLUMNS, file)
    check_strings(r, "model", file, names=names)
    check_strings(r, "question_id", file, names=names)
    check_numbers(r, "score", file, 0.0, 1.0, names=names)
    if "cost" in r.columns:
        check_numbers(r, "cost", file, 0.0, None, allow_nan=True, names=names)
    if question_ids is not None and (bad := _first(~(known := r["question_id"].isin(question_ids)))) is not None:
        column = (names or {}).get("question_id", "question_id")
        if not known.any():
            raise fail(file, None, column, f"none of its {r['question_id'].nunique()} question ids is in "
                       f"{questions_file} (e.g. {r['question_id'].iloc[0]!r}); the results and the questions must "
                       "come from the same data: give each result the question_id of its question")
        raise fail(file, bad, column, f"unknown question id {r['question_id'].iloc[bad]!r}: it is not in "
                   f"{questions_file}; add the question there, or remove the row")
    check_unique(r, ["model", "question_id"], file, names)


def check_models(m: pd.DataFrame, file: str | Path, names: Mapping[str, str] | None = None) -> None:
    """Validate a models frame read from `file`."""
    require_columns(m, MODEL_COLUMNS, file)
    check_strings(m, "model", file, names=names)
    check_strings(m, "cost_unit", file, allow_empty=True, names=names)
    check_numbers(m, "cost", file, 0.0, None, allow_nan=True, names=names)
    check_numbers(m, "params_b", file, 0.0, None, allow_nan=True, names=names)
    check_unique(m, ["model"], file, names)


def complete_models(models: pd.DataFrame | None, results: pd.DataFrame) -> pd.DataFrame:
    """One row per model of `results` (sorted), metadata from `models` where given, NaN/"" elsewhere."""
    names = pd.DataFrame({"model": pd.Series(sorted(pd.unique(results["model"]), key=str) if "model" in results
                                             else [], dtype=object)})   # object even when empty: merges on strings
    if models is None or "model" not in models.columns:
        models = pd.DataFrame({"model": pd.Series([], dtype=object)})
    out = names.merge(models.drop_duplicates("model"), on="model", how="left")
    for c, default in (("cost", np.nan), ("params_b", np.nan)):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(np.float64) if c in out else default
    out["cost_unit"] = out["cost_unit"].fillna("").astype(str) if "cost_unit" in out else ""
    return out[MODEL_COLUMNS].reset_index(drop=True)


def find_table_file(folder: Path, stem: str, required: bool) -> Path | None:
    """`<folder>/<stem>.parquet|csv|jsonl` (one of them), None where absent and not `required`; a TableError where two
    exist, or none and it is required."""
    found = [folder / f"{stem}.{ext}" for ext in FORMATS if (folder / f"{stem}.{ext}").is_file()]
    if len(found) > 1:
        raise fail(folder, None, None, f"both {' and '.join(p.name for p in found)} exist; keep one")
    if not found and required:
        raise fail(folder, None, None, f"no {stem}.parquet, {stem}.csv or {stem}.jsonl; a routing table folder "
                   "holds questions, results and (optionally) models files")
    return found[0] if found else None


REQUIRED = {"questions": QUESTION_COLUMNS, "results": RESULT_COLUMNS, "models": ["model"],
            "long": ["text", "model", "score"]}
"""The columns each kind of table file must have (`long`: one file of results with their question texts)."""
ROWS = {"questions": "one row per question", "results": "one row per (model, question) result",
        "models": "one row per model (or delete the file: it is optional)",
        "long": "one row per (question text, model, score) result"}


def read_table_file(file: Path, kind: str) -> pd.DataFrame:
    """Read one table file; strings stay strings, numbers are parsed with errors naming the row. An empty file, or
    one with a header and no rows, is an error naming the file and the columns it needs (never read as nothing)."""
    required = REQUIRED[kind]
    needs = f"{kind} needs the columns {','.join(required)} and {ROWS[kind]}"
    if file.is_file() and file.stat().st_size == 0:
        raise fail(file, None, None, f"is empty; {needs}")
    try:
        if file.suffix == ".parquet":
            df = pd.read_parquet(file)
        elif file.suffix == ".csv":
            df = pd.read_csv(file, dtype=str, keep_default_na=False)
        else:
            df = pd.read_json(file, lines=True, dtype=False)
    except pd.errors.EmptyDataError as e:   # only blank lines
        raise fail(file, None, None, f"is empty; {needs}") from e
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise fail(file, None, None, f"cannot be read as {file.suffix[1:]}: {' '.join(str(e).split())}") from e
    if len(df) == 0:
        has = f"only a header ({','.join(map(str, df.columns))})" if len(df.columns) else "no rows"
        raise fail(file, None, None, f"has {has} and no data rows; {needs}")
    require_columns(df, required, file)
    for c in df.columns:
        s = df[c]
        if c in _NUMERIC and (s.dtype == bool or not pd.api.types.is_numeric_dtype(s)):
            blank = s.isna() | s.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)
            values = pd.to_numeric(s.where(~blank, np.nan), errors="coerce")
            if (bad := _first(values.isna() & ~blank)) is not None:
                raise fail(file, bad, c, f"{s.iloc[bad]!r} is not a number; write a number there"
                           + (", or leave it empty" if c != "score" else " in [0, 1]"))
            df[c] = values.astype(np.float64)
        elif c in ("question_id", "model") and pd.api.types.is_integer_dtype(s):
            df[c] = s.astype(str)  # integer ids in a user's parquet/jsonl become strings
        elif c in _MAY_BE_EMPTY:
            df[c] = s.where(s.notna(), "")
    return df


_TABLE_FILES = {f"{stem}.{ext}" for stem in ("questions", "results", "models") for ext in FORMATS}


def _carry(old: Path, new: Path) -> None:
    """Hard-link (else copy) into `new` what the table folder `old` holds besides its table files and hidden
    temporaries; the old folder is deleted once `new` replaces it."""
    for entry in old.iterdir():
        if entry.name in _TABLE_FILES or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, new / entry.name, copy_function=_link_or_copy)
        elif entry.is_file():
            _link_or_copy(entry, new / entry.name)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)          # the caches are written by rename, never in place: sharing the inode is safe
    except OSError:
        shutil.copy2(src, dst)


@dataclass(repr=False)
class RoutingTable:
    """Questions, per-model results (score in [0, 1]) and model metadata (cost, params_b, cost_unit)."""

    questions: pd.DataFrame
    results: pd.DataFrame
    models: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        self.questions = self.questions.reset_index(drop=True)
        self.results = self.results.reset_index(drop=True)
        self.models = complete_models(self.models, self.results)

    def __repr__(self) -> str:
        return (f"RoutingTable({len(self.questions)} questions, {len(self.model_names)} models, "
                f"{len(self.results)} results)")

    def validate(self, origin: str = "") -> None:
        """Raise `TableError` on any invalid value; `origin` (a path or source name) prefixes the messages."""
        label = {k: f"{origin} ({k})" if origin else k for k in ("questions", "results", "models")}
        check_questions(self.questions, label["questions"])
        check_results(self.results, label["results"], self.questions["question_id"], label["questions"])
        check_models(self.models, label["models"])

    @classmethod
    def load(cls, path: str | Path) -> RoutingTable:
        """Read a folder holding questions, results and optional models files (.parquet, .csv or .jsonl), or one
        long file of results with their question texts (`from_long`)."""
        path = Path(path)
        if path.is_file() and path.suffix in tuple(f".{f}" for f in FORMATS):
            return cls.from_long(path)
        if not path.is_dir():
            raise fail(path, None, None, "is not a folder, nor a .csv/.jsonl/.parquet file; a routing table is a "
                       "folder with questions, results and (optionally) models files, or one file of text, model, "
                       "score rows (docs/own-data.md)")
        qf, rf, mf = find_table_file(path, "questions", True), find_table_file(path, "results", True), find_table_file(path, "models", False)
        q, r = read_table_file(qf, "questions"), read_table_file(rf, "results")
        m = read_table_file(mf, "models") if mf is not None else None
        check_questions(q, qf)
        check_results(r, rf, q["question_id"], qf.name)
        if m is not None:
            for c, default in (("cost", np.nan), ("params_b", np.nan), ("cost_unit", "")):
                m[c] = m[c] if c in m.columns else default
            check_models(m, mf)
            if (bad := _first(~m["model"].isin(pd.unique(r["model"])))) is not None:
                raise fail(mf, bad, "model", f"model {m['model'].iloc[bad]!r} has no rows in {rf.name}")
        keep_q = [c for c in QUESTION_COLUMNS + OPTIONAL_QUESTION_COLUMNS if c in q.columns]
        keep_r = [c for c in RESULT_COLUMNS + OPTIONAL_RESULT_COLUMNS if c in r.columns]
        return cls(q[keep_q], r[keep_r], m)

    @classmethod
    def from_long(cls, file: str | Path) -> RoutingTable:
        """A table from one file of results with their questions' texts (.csv, .jsonl or .parquet): the columns
        `text`, `model`, `score` (in [0, 1]), and optionally `question_id` (else made from the text), `category`
        (else "all"), `task`, `benchmark`, `source` (else the file's name), `answer` and `cost` (per query). Rows of
        one question must agree on its text and fields. Errors name the file, the row and the column."""
        file = Path(file)
        df = read_table_file(file, "long")
        check_strings(df, "text", file)
        check_strings(df, "model", file)
        for c in ("question_id", "category", "task", "benchmark", "source", "answer"):
            if c in df.columns:
                check_strings(df, c, file, allow_empty=c in _MAY_BE_EMPTY)
        if "question_id" not in df.columns:
            df["question_id"] = ["q/" + hashlib.sha1(t.encode()).hexdigest()[:12] for t in df["text"]]
        defaults = {"category": "all", "task": "", "benchmark": file.stem, "source": file.stem}
        q = df.assign(**{c: v for c, v in defaults.items() if c not in df.columns})
        q = q[[c for c in QUESTION_COLUMNS + OPTIONAL_QUESTION_COLUMNS if c in q.columns]]
        first = q.drop_duplicates("question_id", keep="first")
        for c in q.columns.drop("question_id"):
            disagree = q[c].to_numpy() != q["question_id"].map(first.set_index("question_id")[c]).to_numpy()
            if (bad := _first(disagree)) is not None:
                row = int(np.flatnonzero(q["question_id"].to_numpy() == q["question_id"].iloc[bad])[0])
                raise fail(file, bad, c, f"question {q['question_id'].iloc[bad]!r} has {q[c].iloc[bad]!r} here but "
                           f"{q[c].iloc[row]!r} at row {row}; the rows of one question must agree")
        results = df[[c for c in RESULT_COLUMNS + OPTIONAL_RESULT_COLUMNS if c in df.columns]]
        check_results(results, file)
        table = cls(first.reset_index(drop=True), results)
        table.validate(origin=str(file))
        return table

    def save(self, path: str | Path) -> None:
        """Write questions.parquet, results.parquet and models.parquet into the folder `path`, all or nothing.

        A previous table there is kept until the new one is complete, then replaced; what else its folder holds
        (the sentence-encoder caches `embeddings-*.npz` that evaluation keeps beside a table, keyed by the questions'
        content, or a zoos.json) moves into the new folder, so an unchanged rebuild re-encodes nothing.
        """
        path = Path(path)
        self.validate(origin=str(path))
        if path.exists() and not path.is_dir():
            raise fail(path, None, None, "is a file, not a folder; a routing table is written as a folder: choose "
                       "another path or remove the file")
        with atomic_dir(path) as tmp:
            self.questions.to_parquet(tmp / "questions.parquet", index=False)
            self.results.to_parquet(tmp / "results.parquet", index=False)
            self.models.to_parquet(tmp / "models.parquet", index=False)
            if path.is_dir():
                _carry(path, tmp)

    @property
    def model_names(self) -> list[str]:
        """The models that have results, sorted."""
        return sorted(pd.unique(self.results["model"]).tolist(), key=str)

    def _positions(self, wanted: Sequence[str], known: pd.Index, what: str) -> np.ndarray:
        pos = known.get_indexer(list(wanted))
        if (pos < 0).any():
            unknown = [w for w, p in zip(wanted, pos) if p < 0]
            raise TableError(f"{len(unknown)} unknown {what}(s), e.g. {unknown[:3]!r}; the table has "
                             f"{len(known)} {what}s")
        return pos

    def outcome_matrix(self, question_ids: Sequence[str], models: Sequence[str]) -> np.ndarray:
        """Outcomes (the results' `score` column: 1 = answered right) as float32 (Q, M) in the order given; NaN where
        a model was not evaluated on a question."""
        qids, names = list(question_ids), list(models)
        self._positions(qids, pd.Index(self.questions["question_id"]), "question id")
        self._positions(names, pd.Index(self.model_names), "model")
        uq, um = pd.Index(pd.unique(pd.Series(qids, dtype=object))), pd.Index(pd.unique(pd.Series(names, dtype=object)))
        rq, rm = uq.get_indexer(self.results["question_id"]), um.get_indexer(self.results["model"])
        keep = (rq >= 0) & (rm >= 0)
        mat = np.full((len(uq), len(um)), np.nan, dtype=np.float32)  # (Q', M')
        mat[rq[keep], rm[keep]] = self.results["score"].to_numpy(dtype=np.float32)[keep]
        return mat[np.ix_(uq.get_indexer(qids), um.get_indexer(names))]

    def _column(self, question_ids: Sequence[str], column: str) -> list[str]:
        pos = self._positions(list(question_ids), pd.Index(self.questions["question_id"]), "question id")
        return self.questions[column].iloc[pos].tolist()

    def texts(self, question_ids: Sequence[str]) -> list[str]:
        """The question texts, in the order given."""
        return self._column(question_ids, "text")

    def categories(self, question_ids: Sequence[str]) -> list[str]:
        """The question categories, in the order given."""
        return self._column(question_ids, "category")

    def model_meta(self, model: str) -> dict[str, Any]:
        """What the models file says of `model`, as `Zoo.add` takes it: `cost` and `params_b` (floats, None where
        blank or absent) and `cost_unit` (str, "" where blank)."""
        info = self.models.set_index("model")
        row = info.loc[model] if model in info.index else pd.Series(dtype=object)
        number = lambda key: None if key not in row or pd.isna(row[key]) else float(row[key])  # noqa: E731
        unit = row["cost_unit"] if "cost_unit" in row and isinstance(row["cost_unit"], str) else ""
        return {"cost": number("cost"), "params_b": number("params_b"), "cost_unit": unit}

    def costs(self, models: Sequence[str]) -> np.ndarray:
        """Per-model cost (float64, (M,)): `cost` where given, else `params_b`, else NaN."""
        m = self.models.set_index("model")
        pos = self._positions(list(models), pd.Index(m.index), "model")
        return m["cost"].fillna(m["params_b"]).to_numpy(dtype=np.float64)[pos]

    def subset(self, question_ids: Sequence[str] | None = None, models: Sequence[str] | None = None) -> RoutingTable:
        """A new table restricted to `question_ids` (in that order) and/or `models`; unknown names raise."""
        q, r = self.questions, self.results
        if question_ids is not None:
            qids = list(pd.unique(pd.Series(list(question_ids), dtype=object)))
            q = q.iloc[self._positions(qids, pd.Index(q["question_id"]), "question id")]
            r = r[r["question_id"].isin(qids)]
        if models is not None:
            self._positions(list(models), pd.Index(self.model_names), "model")
            r = r[r["model"].isin(list(models))]
        return RoutingTable(q.copy(), r.copy(), self.models[self.models["model"].isin(pd.unique(r["model"]))].copy())

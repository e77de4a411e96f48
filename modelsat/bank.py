"""The results bank: every graded result known for each zoo model beyond its aptitude answers, in one SQLite file.

    bank = ResultsBank.open(checkpoint / "zoo" / BANK_FILE, stamp)            # created on first use
    bank.add("my-llm", keys, scores, source="results", embed=embed_missing)    # one transaction, all or nothing
    bank.refresh()                                                             # rows other processes appended
    rows = bank.rows("my-llm")                                                 # (positions, outcomes) in memory

A model's aptitude answers stay in its zoo entry (they are how a model joins); the bank holds what is known beyond
them: for the models a router was trained on, their train-split labels (`source="train"`); for any model, a user's
graded prompts (`"results"`) and feedback (`"feedback"`, idempotent by `feedback_id`). A question is stored once,
keyed by the sha256 of its text (with the question id of its routing table where it came from one), with its unit
sentence embedding (float16) by the router's encoder, shared by every model with results on it. The file is stamped
with the encoder, its width and how it reads a long text (`pretrained.WINDOW_RULE`): a bank embedded another way is
refused.

Storage: SQLite (the standard library's `sqlite3`), in WAL mode from the first write on, `synchronous=FULL`,
writers serialised by `BEGIN IMMEDIATE`: several processes (the service's workers) append at once, and a committed
(acknowledged) write survives a kill -9. Readers keep the bank in memory and read only the rows appended since
(`refresh`, one `PRAGMA data_version` per call when nothing changed); an update or deletion bumps a generation
counter that makes readers reload whole.

Search: a model with more than `EXACT_LIMIT` results is searched through cells (an inverted file, as IVF indexes
do: Jégou et al., 2011): once the store holds more than `EXACT_LIMIT` questions, k-means centroids (scikit-learn) are
fitted on a sample and every question is assigned its nearest one; a search reads the cells nearest the instruction
until it holds `PROBE_ROWS` of the model's results (`modelsat/evidence.py`). Below the limit every result is read
(exact).

Why one module: the file's schema, its one writer path (`ResultsBank.add`, one transaction), its incremental reader
(`refresh`) and the helpers that read or copy the file without loading it (`bank_counts`, `forget_model`,
`copy_bank`, `read_graded` for results files) all depend on the same tables and stamp; split, each would have to
restate them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

BANK_FILE = "bank.sqlite"
EXACT_LIMIT = 50_000
"""A model with at most this many results is searched exactly; the store is split into cells above it."""
PROBE_ROWS = 8_192
"""Results read per model and instruction through the cells (the nearest cells first)."""
SOURCES = ("train", "results", "feedback")
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS questions(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, question_id TEXT, text TEXT,
                                     embedding BLOB NOT NULL, cell INTEGER);
CREATE TABLE IF NOT EXISTS results(id INTEGER PRIMARY KEY AUTOINCREMENT, model INTEGER NOT NULL REFERENCES models(id),
                                   question INTEGER NOT NULL REFERENCES questions(id),
                                   score REAL NOT NULL CHECK (score >= 0 AND score <= 1),
                                   source TEXT NOT NULL, feedback_id TEXT, added REAL);
CREATE INDEX IF NOT EXISTS results_by_model ON results(model, question) WHERE source = 'results';
CREATE UNIQUE INDEX IF NOT EXISTS results_by_feedback ON results(feedback_id) WHERE feedback_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS questions_by_id ON questions(question_id);
CREATE TABLE IF NOT EXISTS centroids(cell INTEGER PRIMARY KEY, centroid BLOB NOT NULL);
"""


class BankError(ValueError):
    """A results bank that cannot be read or written as asked (another encoder, a read-only folder, bad rows)."""


def text_key(text: str) -> str:
    """The key of a question given by its text: the sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ModelRows:
    """One model's bank results in memory: rows of the bank's question store and their scores (insertion order)."""
    positions: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(n,) int64 question rows and (n,) float32 scores, the pieces joined once."""
        if len(self.positions) != 1:
            pos = np.concatenate(self.positions) if self.positions else np.zeros(0, np.int64)
            sc = np.concatenate(self.scores) if self.scores else np.zeros(0, np.float32)
            self.positions, self.scores = [pos], [sc]
        return self.positions[0], self.scores[0]


class ResultsBank:
    """The bank of one zoo (`BANK_FILE` in the zoo folder; `path=None`: in memory only, for a zoo without a folder).

    `stamp`: {"encoder": name, "dim": str(D), "window": WINDOW_RULE} of the router's sentence encoder; a file stamped
    otherwise raises BankError. In memory (`key_matrix`): (N, D) float16 unit embeddings of every stored question in
    the order they were stored, their cells (-1 without cells), `centroids` (C, D) float32 or None, and each model's
    results as rows of that matrix (`rows`)."""

    def __init__(self, path: Path | None, stamp: dict[str, str], readonly: bool = False,
                 prefix: np.ndarray | None = None) -> None:
        self.path, self.stamp, self.readonly = path, dict(stamp), readonly
        dim = int(stamp["dim"])
        self.prefix = np.zeros((0, dim), np.float16) if prefix is None else np.asarray(prefix, np.float16)
        if self.prefix.ndim != 2 or self.prefix.shape[1] != dim:
            raise BankError(f"prefix rows must be (A, {dim}), got {self.prefix.shape}")
        self._keys = np.zeros((0, dim), np.float16)   # a buffer that grows by doubling: rows [0, _n) are in use
        self._cells = np.zeros(0, np.int64)
        self._n = 0
        self.centroids: np.ndarray | None = None
        self.row_of: dict[int, int] = {}           # question id in the file -> row of `key_matrix`
        self._models: dict[str, ModelRows] = {}
        self._last_result = 0
        self._last_question = 0
        self._generation = ""
        self._data_version = None
        self.version = 0                             # bumped whenever the in-memory rows change
        self.generation = 0                          # bumped whenever they were reloaded whole (rows renumbered)
        self.conn = self._connect()
        self.refresh()

    # ----- the file ----------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path | None, stamp: dict[str, str], prefix: np.ndarray | None = None,
             readonly: bool = False) -> "ResultsBank":
        """The bank at `path` (None: in memory; created on the first write). `prefix`: (A, D) rows placed before the
        stored questions in `key_matrix` (a router's aptitude questions). A folder that cannot be written, or
        `readonly`, opens it read-only. Raises BankError where the file is not a bank or was embedded another way."""
        if path is None:
            return cls(None, stamp, prefix=prefix)
        path = Path(path)
        writable = path.parent.is_dir() and _writable(path.parent) and (not path.exists() or _writable(path))
        return cls(path, stamp, readonly=readonly or not writable, prefix=prefix)

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        elif self.readonly:
            if not self.path.is_file():   # nothing banked, nothing to create: an empty bank in memory
                conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            else:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True,
                                       check_same_thread=False, isolation_level=None)
        else:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA synchronous=FULL")   # WAL from the first write on (`_ensure_wal`): a reader leaves
                                                      # the file as it is
        try:
            if not (self.readonly and self.path is not None and self.path.is_file()):
                conn.executescript(SCHEMA)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            raise BankError(f"{self.path}: not a results bank ({e}); move it away, or re-add the results "
                            "(`modelsat zoo add-results`)") from e
        if not meta:
            if not self.readonly:
                with _write(conn):
                    conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                     [*self.stamp.items(), ("generation", "0")])
        else:
            theirs = {k: meta.get(k) for k in self.stamp}
            if theirs != self.stamp:
                raise BankError(f"{self.path}: the results bank was embedded with {theirs}, but this router reads "
                                f"with {self.stamp}; rebuild it with this router (`modelsat zoo add-results` with "
                                "the results files) or use the router it was built with")
        return conn

    def close(self) -> None:
        self.conn.close()

    # ----- reading -------------------------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Read what was written since the last call (by any process; `force` after this connection's own write,
        which `PRAGMA data_version` does not count); True where something was. A deletion or an update reloads the
        whole bank."""
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version and not force:
            return False
        self._data_version = version
        self.conn.execute("BEGIN")                   # one snapshot for the questions and the results
        try:
            generation = self._meta("generation") or "0"
            reset = generation != self._generation
            if reset:
                self._reset()
                self._generation = generation
            qs = self.conn.execute("SELECT id, embedding, cell FROM questions WHERE id > ? ORDER BY id",
                                   (self._last_question,)).fetchall()
            rs = self.conn.execute("SELECT r.id, m.name, r.question, r.score FROM results r JOIN models m "
                                   "ON m.id = r.model WHERE r.id > ? ORDER BY r.id", (self._last_result,)).fetchall()
            cents = (self.conn.execute("SELECT centroid FROM centroids ORDER BY cell").fetchall()
                     if reset or (qs and self.centroids is None) else None)
        finally:
            self.conn.execute("COMMIT")
        if cents:
            self.centroids = np.stack([np.frombuffer(c, np.float16) for (c,) in cents]).astype(np.float32)
            if len(self.prefix):
                self._cells[:len(self.prefix)] = (self.prefix.astype(np.float32) @ self.centroids.T).argmax(axis=1)
        if qs:
            dim = self.prefix.shape[1]
            for i, (qid, _, _) in enumerate(qs):
                self.row_of[qid] = self._n + i
            emb = np.frombuffer(b"".join(e for _, e, _ in qs), np.float16).reshape(len(qs), dim)
            self._append(emb, np.array([-1 if c is None else c for _, _, c in qs], np.int64))
            self._last_question = qs[-1][0]
        if rs:
            by_model: dict[str, list[tuple[int, float]]] = {}
            for _, name, question, score in rs:
                by_model.setdefault(name, []).append((self.row_of[question], score))
            for name, pairs in by_model.items():
                rows = self._models.setdefault(name, ModelRows())
                rows.positions.append(np.array([p for p, _ in pairs], np.int64))
                rows.scores.append(np.array([s for _, s in pairs], np.float32))
            self._last_result = rs[-1][0]
        if not (qs or rs or reset):
            return False
        self.version += 1
        return True

    def _append(self, emb: np.ndarray, cells: np.ndarray) -> None:
        """Append rows to the key buffer, doubling its capacity when full (no copy of a 1M-row bank per result)."""
        need = self._n + len(emb)
        if need > len(self._keys):
            grown = max(need, 2 * len(self._keys), 1024)
            keys = np.zeros((grown, emb.shape[1]), np.float16)
            keys[:self._n] = self._keys[:self._n]
            cell = np.full(grown, -1, np.int64)
            cell[:self._n] = self._cells[:self._n]
            self._keys, self._cells = keys, cell
        self._keys[self._n:need] = emb
        self._cells[self._n:need] = cells
        self._n = need

    def _reset(self) -> None:
        self._n = 0
        self.row_of, self._models, self.centroids = {}, {}, None
        self._last_result = self._last_question = 0
        self.generation += 1
        self._append(self.prefix, np.full(len(self.prefix), -1, np.int64))

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def key_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) float16 unit embeddings: the `prefix` rows, then every stored question in the order it was stored;
        and (N,) their cells (-1: none). Views of a buffer: valid until the next `refresh`."""
        return self._keys[:self._n], self._cells[:self._n]

    def rows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(n,) rows of `key_matrix` and (n,) scores of model `name`'s bank results (empty where it has none)."""
        rows = self._models.get(name)
        return rows.arrays() if rows is not None else (np.zeros(0, np.int64), np.zeros(0, np.float32))

    def counts(self) -> dict[str, int]:
        """Results per model (in memory, as of the last `refresh`)."""
        return {n: int(sum(len(p) for p in r.positions)) for n, r in self._models.items()}

    def known(self, keys: Sequence[str]) -> dict[str, int]:
        """The stored question id of each of `keys` that the bank holds."""
        out: dict[str, int] = {}
        unique = list(dict.fromkeys(keys))
        for s in range(0, len(unique), 500):
            part = unique[s:s + 500]
            out.update(self.conn.execute(f"SELECT key, id FROM questions WHERE key IN ({','.join('?' * len(part))})",
                                         part).fetchall())
        return out

    def question_ids(self, question_ids: Sequence[str]) -> dict[str, str]:
        """The key of each of `question_ids` (a routing table's ids) that the bank holds a question of."""
        out: dict[str, str] = {}
        unique = list(dict.fromkeys(str(q) for q in question_ids))
        for s in range(0, len(unique), 500):
            part = unique[s:s + 500]
            out.update(self.conn.execute(f"SELECT question_id, key FROM questions WHERE question_id IN "
                                         f"({','.join('?' * len(part))})", part).fetchall())
        return out

    # ----- writing -------------------------------------------------------------------------------------------------
    def _ensure_wal(self) -> None:
        """Switch the file to WAL mode (kept in the file from then on), where it is not yet: several processes then
        write and read at once. A bank that was only read stays as shipped (a rollback journal)."""
        if self.path is not None and self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.conn.execute("PRAGMA journal_mode=WAL")

    def _check_writable(self) -> None:
        if self.readonly:
            raise BankError(f"the results bank {self.path} is in a folder that cannot be written (e.g. a router "
                            "installed as package data); copy the router to a folder of yours "
                            "(`Router.save_pretrained(DIR)`) and add the results there")

    def add(self, model: str, keys: Sequence[str], scores: Sequence[float], source: str,
            embed: Callable[[list[int]], np.ndarray] | None = None, texts: Sequence[str | None] | None = None,
            question_ids: Sequence[str | None] | None = None, feedback_ids: Sequence[str | None] | None = None,
            store_text: bool = True) -> int:
        """Add one model's results in one transaction (all or none): question `keys` with their `scores` in [0, 1].
        Questions the bank lacks are embedded by `embed(indices into keys)` → (n, D) unit float array (their texts,
        `texts`, stored where `store_text`; `question_ids` stored where known) before the write begins, so that a long
        embedding holds no lock (another process's writes go on meanwhile). A result of `source` "results" replaces
        the model's earlier "results" one on the same question (within one call too: the last row of a question
        wins); "feedback" results add up, and one whose `feedback_ids` entry was banked before for this model is
        skipped; "train" results (a checkpoint's train-split labels) are written once into a new bank by train.py,
        unindexed. Returns the number of results added or changed (a row equal to what is banked changes nothing).
        Raises BankError where the bank is read-only or busy past its timeout, a question is new and `embed` is None,
        or a feedback id was banked before for another model (an id names one answer of one model)."""
        self._check_writable()
        self._ensure_wal()
        if source not in SOURCES:
            raise BankError(f"source must be one of {SOURCES}, got {source!r}")
        n = len(keys)
        texts = list(texts) if texts is not None else [None] * n
        question_ids = list(question_ids) if question_ids is not None else [None] * n
        feedback_ids = list(feedback_ids) if feedback_ids is not None else [None] * n
        order = range(n)
        if source == "results":                   # one result per question: its last row
            last = {k: i for i, k in enumerate(keys)}
            order = sorted(last.values())
        dim = int(self.stamp["dim"])
        known = self.known(keys)
        missing = [i for i, k in _first_of(keys) if k not in known]
        fresh: dict[str, np.ndarray] = {}
        if missing:                               # embedded before the transaction: no lock held meanwhile
            if embed is None:
                raise BankError(f"question {keys[missing[0]]!r} is not in the bank and no text was given to embed")
            emb = np.asarray(embed(missing), dtype=np.float32)
            if emb.shape != (len(missing), dim):
                raise BankError(f"embeddings of shape {emb.shape} for {len(missing)} questions of width {dim}")
            fresh = {keys[i]: emb[j] for j, i in enumerate(missing)}
        now = time.time()
        with _write(self.conn, self.path):
            known = self.known(keys)
            new = [i for i, k in _first_of(keys) if k not in known]       # another process may have added some
            if new:
                emb = np.stack([fresh[keys[i]] for i in new])
                cells = self._assign(emb)
                for j, i in enumerate(new):
                    cur = self.conn.execute(
                        "INSERT INTO questions(key, question_id, text, embedding, cell) VALUES (?, ?, ?, ?, ?)",
                        (keys[i], question_ids[i], texts[i] if store_text else None,
                         emb[j].astype(np.float16).tobytes(), None if cells is None else int(cells[j])))
                    known[keys[i]] = cur.lastrowid
            self.conn.execute("INSERT OR IGNORE INTO models(name) VALUES (?)", (model,))
            model_id = self.conn.execute("SELECT id FROM models WHERE name = ?", (model,)).fetchone()[0]
            added, updated = 0, False
            for i in order:
                q, score = known[keys[i]], float(scores[i])
                if source == "train":                 # written once, by train.py, into a new bank: no lookup,
                    self.conn.execute("INSERT INTO results(model, question, score, source) VALUES (?, ?, ?, ?)",
                                      (model_id, q, score, source))           # no index, no time: a small file
                    added += 1
                    continue
                if source == "feedback":
                    fid = feedback_ids[i]
                    if fid is not None:
                        seen = self.conn.execute("SELECT m.name FROM results r JOIN models m ON m.id = r.model "
                                                 "WHERE r.feedback_id = ?", (fid,)).fetchone()
                        if seen is not None and seen[0] != model:
                            raise BankError(f"feedback_id {fid[:80]!r} was banked before for model {seen[0]!r}, "
                                            f"not {model!r}: a feedback id names one answer of one model")
                        if seen is not None:
                            continue
                    self.conn.execute("INSERT INTO results(model, question, score, source, feedback_id, added) "
                                      "VALUES (?, ?, ?, ?, ?, ?)", (model_id, q, score, source, fid, now))
                    added += 1
                    continue
                old = self.conn.execute("SELECT id, score FROM results WHERE model = ? AND question = ? AND "
                                        "source = 'results'", (model_id, q)).fetchone()
                if old is None:
                    self.conn.execute("INSERT INTO results(model, question, score, source, added) VALUES "
                                      "(?, ?, ?, ?, ?)", (model_id, q, score, source, now))
                    added += 1
                elif old[1] != score:
                    self.conn.execute("UPDATE results SET score = ?, added = ? WHERE id = ?", (score, now, old[0]))
                    added, updated = added + 1, True
            if updated:
                self._bump_generation()
            self._maybe_split()
        self.refresh(force=True)
        return added

    def remove_model(self, model: str) -> int:
        """Delete every bank result of `model` (its zoo entry is being removed); returns how many."""
        self._check_writable()
        self._ensure_wal()
        with _write(self.conn, self.path):
            row = self.conn.execute("SELECT id FROM models WHERE name = ?", (model,)).fetchone()
            if row is None:
                return 0
            count = self.conn.execute("DELETE FROM results WHERE model = ?", (row[0],)).rowcount
            self.conn.execute("DELETE FROM models WHERE id = ?", (row[0],))
            self._bump_generation()
        self.refresh(force=True)
        return count

    def _bump_generation(self) -> None:
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def _assign(self, emb: np.ndarray) -> np.ndarray | None:
        """The nearest stored centroid of each of (n, D) embeddings; None while the bank has no cells."""
        rows = self.conn.execute("SELECT centroid FROM centroids ORDER BY cell").fetchall()
        if not rows:
            return None
        cents = np.stack([np.frombuffer(c, np.float16) for (c,) in rows]).astype(np.float32)
        return (emb @ cents.T).argmax(axis=1)

    def _maybe_split(self) -> None:
        """Fit cells once the store holds more than EXACT_LIMIT questions, and again at each 16-fold growth:
        k-means (scikit-learn) with sqrt(N) centroids on a sample of at most 20,000 questions, then every question
        assigned its nearest centroid."""
        count = self.conn.execute("SELECT COUNT(*) FROM questions").fetchone()[0]
        fitted = int(self._meta("cells_fitted_at") or 0)
        if count <= EXACT_LIMIT or (fitted and count < 16 * fitted):
            return
        from sklearn.cluster import MiniBatchKMeans   # (imported by what clusters: `zoo list` stays quick)

        ids, emb = [], []
        for qid, blob in self.conn.execute("SELECT id, embedding FROM questions ORDER BY id"):
            ids.append(qid)
            emb.append(np.frombuffer(blob, np.float16))
        x = np.stack(emb).astype(np.float32)
        rng = np.random.default_rng(0)
        sample = x[rng.choice(len(x), min(len(x), 20_000), replace=False)]
        k = int(math.sqrt(count))
        cents = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=1, batch_size=4096).fit(sample).cluster_centers_
        cents = (cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        cells = np.concatenate([(x[s:s + 65536] @ cents.T).argmax(axis=1) for s in range(0, len(x), 65536)])
        self.conn.execute("DELETE FROM centroids")
        self.conn.executemany("INSERT INTO centroids VALUES (?, ?)",
                              [(c, cents[c].astype(np.float16).tobytes()) for c in range(k)])
        self.conn.executemany("UPDATE questions SET cell = ? WHERE id = ?", zip(cells.tolist(), ids))
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('cells_fitted_at', ?)", (str(count),))
        self._bump_generation()


def _first_of(keys: Sequence[str]):
    """(index, key) of each key's first occurrence."""
    seen: set[str] = set()
    for i, k in enumerate(keys):
        if k not in seen:
            seen.add(k)
            yield i, k


class _write:
    """A write transaction: BEGIN IMMEDIATE (one writer at a time across processes), COMMIT or ROLLBACK. A bank
    that another process keeps locked past the connection's timeout (30 s) is a BankError naming the file."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self.conn, self.path = conn, path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise BankError(f"the results bank {self.path} is busy ({e}): another process has been writing to it "
                            "for over 30 s; try again when it is done") from None
        return self.conn

    def __exit__(self, kind, value, tb) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def read_graded(results: pd.DataFrame | list | dict | str | Path, source_name: str = "results",
                model: str | None = None) -> pd.DataFrame:
    """A table of graded results to bank: a `text` or `question_id` column (or both: each row needs one of them) and
    `score` in [0, 1] (a number, or text that reads as one: a CSV has no types), from a DataFrame or a CSV, JSONL or
    parquet file (or records / columns that make a DataFrame). Where the table has a `model` column and `model` is
    given, every row must name that model. Returns a DataFrame with columns `text` (str or None), `question_id` (str or
    None), `score` (float) and `where` (how an error names the row: "line N" of a CSV or JSONL file as an editor counts
    lines, "row N" of a parquet file or a DataFrame, counted from 0). Raises BankError, in one line, naming the file,
    row and column, where a file is missing or unreadable, has no rows, lacks the columns, or a row has neither a text
    nor an id, a score that is not a number in [0, 1] (NaN included) or another model."""
    where, first_line = source_name, None
    if isinstance(results, (list, tuple, dict)):          # records or columns, as pandas builds a DataFrame of them
        try:
            results = pd.DataFrame(results)
        except (ValueError, TypeError) as e:
            raise BankError(f"{where}: not a table ({e}); give a DataFrame, a list of records or a file") from None
    if not isinstance(results, pd.DataFrame):
        path = Path(results)
        where = str(path)
        if path.is_dir() or not path.is_file():
            raise BankError(f"results file {path} {'is a folder' if path.is_dir() else 'does not exist'}; give a "
                            ".csv, .jsonl or .parquet file with a text (or question_id) and a score column")
        readers = {".parquet": pd.read_parquet,
                   ".csv": lambda p: pd.read_csv(p, dtype={"question_id": str, "text": object}),
                   ".jsonl": lambda p: pd.read_json(p, lines=True, dtype={"question_id": str})}
        if path.suffix not in readers:
            raise BankError(f"{path}: unknown results format {path.suffix!r}; use .csv, .jsonl or .parquet")
        if path.stat().st_size == 0:
            raise BankError(f"{path} is empty (no header, no rows); give at least one graded result")
        try:
            results = readers[path.suffix](path)
        except UnicodeDecodeError as e:
            raise BankError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from e
        except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
            line = bad_json_line(path) if path.suffix == ".jsonl" else None
            raise BankError(f"{path}: {line or 'could not be read as ' + path.suffix[1:]} "
                            f"({' '.join(str(e).split())[:160]}); give a file with a text (or question_id) and a "
                            "score column") from e
        first_line = {".csv": 2, ".jsonl": 1}.get(path.suffix)
        if results.columns.empty:
            raise BankError(f"{where} has no rows; give at least one graded result")

    def at(i: int) -> str:
        return f"line {i + first_line}" if first_line is not None else f"row {i}"

    if "score" not in results.columns or not ({"text", "question_id"} & set(results.columns)):
        raise BankError(f"{where}: needs the columns score and text (or question_id), has "
                        f"{sorted(map(str, results.columns))[:10]}")
    if len(results) == 0:
        raise BankError(f"{where} has no rows; give at least one graded result")

    def column(name: str) -> list:
        values = results[name].tolist() if name in results.columns else [None] * len(results)
        return [None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v for v in values]

    texts, ids = column("text"), column("question_id")
    for i, v in enumerate(texts):
        if v is not None and not isinstance(v, str):
            raise BankError(f"{where}: {at(i)}, column 'text': {str(v)[:40]!r} is not text")
    ids = [None if v is None or not str(v).strip() else str(v) for v in ids]
    texts = [None if v is None or (not v.strip() and ids[i] is not None) else v for i, v in enumerate(texts)]
    for i, (t, q) in enumerate(zip(texts, ids)):
        if q is None and (t is None or not t.strip()):
            raise BankError(f"{where}: {at(i)}, column 'text': empty, and no question_id; give the prompt's text "
                            "(or the id of a question the bank holds)")
    scores = []
    for i, v in enumerate(results["score"].tolist()):
        number = v
        if isinstance(v, str):
            try:
                number = float(v.strip())
            except ValueError:
                number = None
        if isinstance(v, bool) or not isinstance(number, (int, float, np.integer, np.floating)) \
                or not 0 <= number <= 1:
            shown = repr(v[:40]) if isinstance(v, str) else repr(v)[:40]
            if isinstance(v, float) and math.isnan(v):     # a CSV's empty cell reads as NaN too
                shown = "empty (or NaN), which"
            raise BankError(f"{where}: {at(i)}, column 'score': {shown} is not a number in [0, 1]")
        scores.append(float(number))
    if model is not None and "model" in results.columns:
        for i, m in enumerate(results["model"].tolist()):
            if str(m).strip() != model:
                raise BankError(f"{where}: {at(i)}, column 'model': {str(m)[:80]!r} is not {model!r}; give one "
                                "model's results (filter the file by its model column), or drop the column")
    return pd.DataFrame({"text": pd.Series(texts, dtype=object), "question_id": pd.Series(ids, dtype=object),
                         "score": scores, "where": [at(i) for i in range(len(scores))]})


def bad_json_line(path: Path) -> str | None:
    """The first line of a JSONL file that is not a JSON object, said as "line N is not valid JSON" or "line N is not
    a JSON object" (blank lines skipped); None where every line is one or the file is not UTF-8."""
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    return f"line {n} is not valid JSON"
                if not isinstance(record, dict):
                    return f"line {n} is not a JSON object"
    except UnicodeDecodeError:
        pass
    return None


def copy_bank(source: "ResultsBank | str | Path", dest: str | Path) -> None:
    """Write a consistent copy of a bank (an open one, or a file) to `dest` as one self-contained file (rollback
    journal, so that it opens read-only where it is installed; a writer switches it to WAL), through SQLite's
    online backup: safe while other processes write to the source."""
    src = source.conn if isinstance(source, ResultsBank) else sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    out = sqlite3.connect(dest, isolation_level=None)
    try:
        src.backup(out)
        out.execute("PRAGMA journal_mode=DELETE")
    finally:
        out.close()
        if not isinstance(source, ResultsBank):
            src.close()


def forget_model(path: str | Path, name: str) -> int:
    """Delete every result of model `name` from the bank file `path` (no stamp check: `modelsat zoo remove`, which
    loads no encoder); returns how many (0 where there is no file)."""
    path = Path(path)
    if not path.is_file():
        return 0
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        with _write(conn):
            row = conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
            if row is None:
                return 0
            count = conn.execute("DELETE FROM results WHERE model = ?", (row[0],)).rowcount
            conn.execute("DELETE FROM models WHERE id = ?", (row[0],))
            conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        return count
    except sqlite3.DatabaseError as e:
        raise BankError(f"{path}: not a results bank ({e}); move it away") from e
    finally:
        conn.close()


def bank_counts(path: str | Path, immutable: bool = False) -> dict[str, int]:
    """Results per model in the bank file `path` ({} where there is none), read without loading it. `immutable`:
    the bank is read-only package data (a shipped router), read without creating its -wal/-shm files."""
    path = Path(path)
    if not path.is_file():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro{'&immutable=1' if immutable else ''}", uri=True)
    try:
        return dict(conn.execute("SELECT m.name, COUNT(*) FROM results r JOIN models m ON m.id = r.model "
                                 "GROUP BY m.name").fetchall())
    except sqlite3.DatabaseError as e:
        raise BankError(f"{path}: not a results bank ({e}); move it away") from e
    finally:
        conn.close()

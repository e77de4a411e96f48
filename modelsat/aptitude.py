"""The aptitude test: T tasks × S discriminative questions whose results describe what a model can do.

    apt = build_aptitude(table, num_tasks=50, per_task=20, tasks_by="task", seed=0)
    apt.save("aptitude.json")                              # byte-identical for the same table and seed
    outcomes = model_outcomes(apt, table, "gemma-7b")      # (T, S) from a routing table ...
    # ... or by running the model: modelsat.local_examiner.run_aptitude (here), modelsat.examiner.examine (an endpoint)

Tasks come from the table's `task` column or from K-means clusters of question embeddings. The file
carries a fingerprint (sha256 of the ordered question ids); profiles and checkpoints carry it too and a
mismatch is an error. scikit-learn is imported where tasks are clusters (`tasks_by="cluster"`) only: every command
that reads a zoo reads this module, and scikit-learn's import takes longer than the rest of them.

Why one module: the test's file format, how it is built (by task or cluster, topped up) and how
its questions are graded are one concept. Taking it: `modelsat/local_examiner.py`, `modelsat/examiner.py`.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np
import pandas as pd

from modelsat.io_utils import atomic_write_text

FORMAT_VERSION = 1
MIN_COVERAGE = 0.5
"""A candidate question is evaluated by at least this fraction of the table's models (and by 2)."""
_OPTION = re.compile(r"^\s*\(?([A-Z])[.)]\s", re.MULTILINE)


class AptitudeError(ValueError):
    """An aptitude test cannot be built, loaded, matched or scored."""


@dataclass
class AptitudeTask:
    name: str
    description: str
    question_ids: list[str]


@dataclass
class Aptitude:
    """Tasks (each with the same number of questions), the question texts and, where known, answers."""

    tasks: list[AptitudeTask]
    texts: dict[str, str]
    answers: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.tasks:
            raise AptitudeError("an aptitude test needs at least one task")
        sizes = {len(t.question_ids) for t in self.tasks}
        if len(sizes) != 1 or 0 in sizes:
            raise AptitudeError("every aptitude task must hold the same, non-zero number of questions; "
                                f"got sizes {sorted(sizes)}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            repeated = sorted({n for n in names if names.count(n) > 1})
            raise AptitudeError(f"aptitude task names must be unique; repeated: {repeated}")
        ids = self.question_ids
        if len(set(ids)) != len(ids):
            raise AptitudeError("a question appears twice in the aptitude test")
        lacking = [q for q in ids if not self.texts.get(q)]
        if lacking:
            raise AptitudeError(f"{len(lacking)} aptitude question(s) have no text, e.g. {lacking[:5]}")

    @property
    def question_ids(self) -> list[str]:
        """All question ids, task-major (task order, then question order within a task)."""
        return [q for t in self.tasks for q in t.question_ids]

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the ordered question ids joined by newlines."""
        return hashlib.sha256("\n".join(self.question_ids).encode("utf-8")).hexdigest()

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def per_task(self) -> int:
        return len(self.tasks[0].question_ids)

    def to_json(self) -> str:
        """The `aptitude.json` text: sorted keys, no timestamps, so equal tests give equal bytes."""
        questions = {q: ({"text": self.texts[q], "answer": self.answers[q]} if q in self.answers else {"text": self.texts[q]})
                     for q in self.question_ids}
        doc = {"version": FORMAT_VERSION, "fingerprint": self.fingerprint, "seed": self.seed, "source": self.source,
               "num_tasks": self.num_tasks, "per_task": self.per_task,
               "tasks": [{"name": t.name, "description": t.description, "question_ids": t.question_ids} for t in self.tasks],
               "questions": questions}
        return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        """Write `aptitude.json` atomically."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Aptitude":
        """Read `aptitude.json`; the stored fingerprint must match the stored question ids."""
        path = Path(path)
        if not path.is_file():
            raise AptitudeError(f"aptitude file {path} does not exist; build one with `modelsat aptitude build`")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("version") != FORMAT_VERSION:
                raise AptitudeError(f"format version {doc.get('version')!r}, this modelsat reads {FORMAT_VERSION}")
            tasks = [AptitudeTask(str(t["name"]), str(t["description"]), [str(q) for q in t["question_ids"]])
                     for t in doc["tasks"]]
            questions = doc["questions"]
            texts = {str(q): str(v["text"]) for q, v in questions.items()}
            answers = {str(q): str(v["answer"]) for q, v in questions.items() if v.get("answer") is not None}
            apt = cls(tasks, texts, answers, source=dict(doc.get("source") or {}), seed=doc.get("seed"))
            stored = doc["fingerprint"]
        except AptitudeError as e:
            raise AptitudeError(f"{path}: {e}") from e
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:  # JSON, UTF-8 errors
            raise AptitudeError(f"{path}: not a valid aptitude file ({type(e).__name__}: {e}); rebuild it with "
                                "`modelsat aptitude build`, or use the aptitude.json of the checkpoint") from e
        if stored != apt.fingerprint:
            raise AptitudeError(f"{path}: stored fingerprint {stored} does not match its question ids ({apt.fingerprint}); "
                                "the file was edited. Rebuild it with `modelsat aptitude build`.")
        return apt

    def extended(self, other: "Aptitude") -> "Aptitude":
        """This test's tasks followed by `other`'s (same questions per task; no task name or question twice)."""
        return Aptitude(self.tasks + other.tasks, {**self.texts, **other.texts}, {**self.answers, **other.answers},
                        source={**self.source, "extended_by": other.source}, seed=self.seed)

    def head(self, num_tasks: int, per_task: int | None = None) -> "Aptitude":
        """The test made of the first `num_tasks` tasks (the base of an `extended` test), each cut to its first
        `per_task` questions (the base of a `top_up` test; None: all). Raises AptitudeError on sizes below 1."""
        if num_tasks < 1 or (per_task is not None and per_task < 1):
            raise AptitudeError(f"a test needs at least one task and one question per task, got {num_tasks} x {per_task}")
        if num_tasks > self.num_tasks or (per_task or 0) > self.per_task:
            raise AptitudeError(f"cannot cut a {self.num_tasks} x {self.per_task} test to {num_tasks} x {per_task}: "
                                "a cut is at most the test itself")
        tasks = [AptitudeTask(t.name, t.description, t.question_ids[:per_task]) for t in self.tasks[:num_tasks]]
        keep = {q for t in tasks for q in t.question_ids}
        return Aptitude(tasks, {q: x for q, x in self.texts.items() if q in keep},
                        {q: x for q, x in self.answers.items() if q in keep}, source=dict(self.source), seed=self.seed)

    def check(self, fingerprint: str, where: str) -> None:
        """Raise AptitudeError when `fingerprint` (read from `where`) is not this test's."""
        if fingerprint != self.fingerprint:
            raise AptitudeError(f"{where} was made with aptitude test {fingerprint}, but this aptitude test is "
                                f"{self.fingerprint}; use the aptitude.json it was made with, or redo it with this test.")

    def outcomes(self, scores: Mapping[str, float], where: str = "the scores") -> np.ndarray:
        """(T, S) float32 matrix of the scores in task order; every aptitude question must be scored."""
        ids = self.question_ids
        missing = [q for q in ids if q not in scores or scores[q] is None or not math.isfinite(float(scores[q]))]
        if missing:
            raise AptitudeError(f"{where} miss {len(missing)} of the {len(ids)} aptitude questions, e.g. {missing[:5]}; "
                                "run the aptitude test on the model (`modelsat aptitude run`) or use a table that covers it")
        out = np.array([float(scores[q]) for q in ids], dtype=np.float32).reshape(self.num_tasks, self.per_task)
        if out.min() < 0 or out.max() > 1:
            raise AptitudeError(f"{where}: scores must lie in [0, 1], got range [{out.min()}, {out.max()}]")
        return out


def model_outcomes(aptitude: Aptitude, table: Any, model: str) -> np.ndarray:
    """(T, S) outcomes of `model` on the aptitude questions, read from a routing table."""
    if model not in table.model_names:
        raise AptitudeError(f"model {model!r} is not in the routing table (models: {table.model_names[:10]}...)")
    rows = table.results[table.results["model"] == model]
    return aptitude.outcomes(dict(zip(rows["question_id"].astype(str), rows["score"].astype(float))),
                             where=f"the results of model {model!r} in the routing table")


def _readable(task: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", task)).strip()


def _sample(rows: np.ndarray, weight: np.ndarray, full: np.ndarray, k: int, seed: int, name: str) -> np.ndarray:
    """k rows without replacement, probability growing with weight (Efraimidis–Spirakis keys), seeded per task;
    rows evaluated by every model come first (a model can only be profiled from the table on questions it has)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    keys = np.log(rng.random(len(rows))) / weight[rows]  # larger = picked; weight > 0 here
    return rows[np.lexsort((-keys, ~full[rows]))[:k]]


def _clusters(texts: list[str], rows: np.ndarray, num_tasks: int, seed: int,
              embed: Callable[[list[str]], np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """K-means over embeddings of `texts` (those of `rows`): {name: (keywords, rows)}; names from top TF-IDF terms."""
    from sklearn.cluster import KMeans              # (see the module's docstring)
    from sklearn.feature_extraction.text import TfidfVectorizer

    X = np.asarray(embed(texts), dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != len(rows):
        raise AptitudeError(f"embed returned shape {X.shape}, expected ({len(rows)}, D)")
    labels = KMeans(n_clusters=num_tasks, n_init=10, random_state=seed).fit_predict(X)
    try:
        vec = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", sublinear_tf=True)
        tfidf, terms = vec.fit_transform(texts), vec.get_feature_names_out()
    except ValueError:  # empty vocabulary
        tfidf, terms = None, []
    out: dict[str, tuple[str, np.ndarray]] = {}
    means = np.zeros((num_tasks, len(terms)))  # (C, V) mean TF-IDF per cluster
    for c in range(num_tasks):
        if tfidf is not None and (labels == c).any():
            means[c] = np.asarray(tfidf[labels == c].mean(axis=0)).ravel()
    for c in range(num_tasks):
        # distinctive terms: frequent in this cluster, rare in the most similar other cluster
        other = np.delete(means, c, axis=0).max(axis=0) if num_tasks > 1 else np.zeros(len(terms))
        score = means[c] - other
        top = sorted(np.flatnonzero(means[c] > 0), key=lambda j: (-round(float(score[j]), 12), terms[j]))[:8]
        kw = [str(terms[j]) for j in top]
        name = "-".join(kw[:3]) or f"cluster-{c:03d}"
        out[name if name not in out else f"{name}-{c:03d}"] = (", ".join(kw) or name, rows[labels == c])
    return out


def _question_stats(table: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The table's questions sorted by id (its row order must not matter), their ids, how many models answered
    each, and the variance of their scores across those models."""
    q = table.questions.assign(question_id=table.questions["question_id"].astype(str))
    q = q.sort_values("question_id", kind="stable").reset_index(drop=True)
    ids = q["question_id"].to_numpy()
    S = table.outcome_matrix(list(ids), list(table.model_names)).astype(np.float64)  # (Q, M), NaN = not evaluated
    n_eval = (~np.isnan(S)).sum(axis=1)
    mean = np.nansum(S, axis=1) / np.maximum(n_eval, 1)
    return q, ids, n_eval, np.nansum(S * S, axis=1) / np.maximum(n_eval, 1) - mean ** 2


def _task_names(q: pd.DataFrame, or_source: bool) -> np.ndarray:
    """Each question's task: its `task` field, or (with `or_source`) its `source` where `task` is empty."""
    task = q["task"].fillna("").astype(str).to_numpy()
    if or_source and "source" in q.columns:
        task = np.where(task != "", task, q["source"].fillna("").astype(str).to_numpy())
    return task


def _texts_and_answers(qi: pd.DataFrame, ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Texts of `ids` and, where the table (indexed by question id) has them, their answers."""
    texts = {x: str(qi.at[x, "text"]) for x in ids}
    answers = ({x: a.strip() for x in ids if isinstance(a := qi.at[x, "answer"], str) and a.strip()}
               if "answer" in qi.columns else {})
    return texts, answers


def build_aptitude(table: Any, num_tasks: int = 50, per_task: int = 20,
                   tasks_by: Literal["task", "task_or_source", "cluster"] = "task",
                   seed: int = 0, embed: Callable[[list[str]], np.ndarray] | None = None) -> Aptitude:
    """Pick `num_tasks` tasks × `per_task` questions that discriminate between the table's models.

    Candidates are questions evaluated by at least half the models on which the models disagree (neither
    all right nor all wrong); they are drawn with probability proportional to the variance of the scores
    across models (p(1-p) for 0/1 scores), seeded; questions evaluated by every model come first, so that every
    model of the table can be profiled from it. When more tasks qualify than needed, those that can be filled
    with such questions win, then those with the most candidates, then by name.

    `tasks_by`: "task" groups by the table's `task` field (questions without one are left out); "task_or_source"
    falls back to the `source` field where `task` is empty, so that sources without subjects (on MMLU-Pro:
    STEMEZ, TheoremQA, SciBench) get tasks of their own; "cluster" uses K-means clusters of `embed`.
    """
    if num_tasks < 1 or per_task < 1:
        raise AptitudeError(f"num_tasks and per_task must be positive, got {num_tasks} and {per_task}")
    if tasks_by not in ("task", "task_or_source", "cluster"):
        raise AptitudeError(f"tasks_by must be 'task', 'task_or_source' or 'cluster', got {tasks_by!r}")
    models = list(table.model_names)
    if len(models) < 2:
        raise AptitudeError(f"an aptitude test needs results of at least 2 models to find discriminative questions, "
                            f"got {models}")
    q, ids, n_eval, weight = _question_stats(table)
    min_models = max(2, math.ceil(MIN_COVERAGE * len(models)))
    candidate = (n_eval >= min_models) & (weight > 1e-9)
    full = n_eval == len(models)

    groups: dict[str, tuple[str, np.ndarray]] = {}  # task name -> (description, candidate rows)
    if tasks_by != "cluster":
        task = _task_names(q, or_source=tasks_by == "task_or_source")
        if not (task != "").any():
            raise AptitudeError("the routing table has no `task` values; build the aptitude test with tasks_by='cluster'")
        groups = {n: (_readable(n), np.flatnonzero(candidate & (task == n))) for n in sorted(set(task[candidate]) - {""})}
    else:
        if embed is None:
            raise AptitudeError("tasks_by='cluster' needs an `embed` function (texts -> (N, D) embeddings)")
        rows = np.flatnonzero(candidate)
        if len(rows) < num_tasks * per_task:
            raise AptitudeError(f"only {len(rows)} discriminative questions for {num_tasks} clusters × {per_task}; "
                                "lower num_tasks or per_task")
        groups = _clusters(q["text"].astype(str).iloc[rows].tolist(), rows, num_tasks, seed, embed)

    short = {n: len(r) for n, (_, r) in groups.items() if len(r) < per_task}
    rank = {n: (-min(int(full[r].sum()), per_task), -len(r), n) for n, (_, r) in groups.items()}  # fully covered first
    chosen = sorted((n for n in groups if n not in short), key=rank.__getitem__)[:num_tasks]
    if len(chosen) < num_tasks:
        shown = ", ".join(f"{n} ({c})" for n, c in sorted(short.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
        raise AptitudeError(f"only {len(chosen)} of the {len(groups)} tasks have at least {per_task} discriminative questions "
                            f"(evaluated by >= {min_models} of {len(models)} models, not all right or all wrong), "
                            f"{num_tasks} needed; too few in: {shown}. Lower num_tasks or per_task"
                            + (", or use tasks_by='cluster'." if tasks_by != "cluster" else "."))
    tasks = [AptitudeTask(n, groups[n][0], sorted(ids[_sample(groups[n][1], weight, full, per_task, seed, n)].tolist()))
             for n in sorted(chosen)]

    qi = q.set_index("question_id")
    all_ids = [x for t in tasks for x in t.question_ids]
    texts, answers = _texts_and_answers(qi, all_ids)
    source = {"tasks_by": tasks_by, "benchmarks": sorted({str(qi.at[x, "benchmark"]) for x in all_ids}),
              "num_models": len(models), "min_models": min_models, "num_candidates": int(candidate.sum()),
              "num_not_by_all_models": int((~full[np.isin(ids, all_ids)]).sum()),
              "num_questions": len(ids)}
    if len(models) <= 100:
        source["models"] = models
    return Aptitude(tasks, texts, answers, source=source, seed=seed)


def top_up(aptitude: Aptitude, table: Any, extra: int, seed: int = 0) -> Aptitude:
    """`aptitude` with `extra` more questions in each task, drawn from the same task of `table` (by `task`, or else
    `source`, as `tasks_by="task_or_source"` names them) among the questions every model of `table` answered and on
    which they disagree, with probability proportional to the variance of their scores (as `build_aptitude`).
    A larger test gives steadier per-task accuracies (the per-category signal rises; whether routing gains was
    measured on val, dev/LOG.md). Tasks with fewer such questions are dropped, so that every task keeps the same size; `table` must not
    hold the test's own questions."""
    if extra < 1:
        raise AptitudeError(f"top_up needs a positive number of questions per task, got {extra}")
    shared = set(aptitude.question_ids) & set(table.questions["question_id"].astype(str))
    if shared:
        raise AptitudeError(f"top_up draws from questions outside the test, but {len(shared)} of the table's are in it")
    q, ids, n_eval, weight = _question_stats(table)
    full = n_eval == len(table.model_names)
    candidate = full & (weight > 1e-9)
    task = _task_names(q, or_source=True)
    tasks, dropped = [], {}
    for t in aptitude.tasks:
        rows = np.flatnonzero(candidate & (task == t.name))
        if len(rows) < extra:
            dropped[t.name] = int(len(rows))
            continue
        tasks.append(AptitudeTask(t.name, t.description, t.question_ids + sorted(ids[_sample(rows, weight, full, extra,
                                                                                              seed, t.name)].tolist())))
    if not tasks:
        raise AptitudeError(f"no aptitude task has {extra} more discriminative questions in the table; lower top_up")
    kept = {x for t in tasks for x in t.question_ids[:aptitude.per_task]}
    texts, answers = _texts_and_answers(q.set_index("question_id"),
                                        [x for t in tasks for x in t.question_ids[aptitude.per_task:]])
    return Aptitude(tasks, {**{x: v for x, v in aptitude.texts.items() if x in kept}, **texts},
                    {**{x: v for x, v in aptitude.answers.items() if x in kept}, **answers},
                    source={**aptitude.source, "topped_up": {"extra": extra, "dropped": dropped,
                                                             "num_candidates": int(candidate.sum())}},
                    seed=aptitude.seed)


# ---------------------------------------------------------------- running the test on a causal LM


def _option_letters(text: str) -> list[str]:
    """Letters of the options listed at the end of `text` ("A. ...", "B. ...", in order from the last "A.")."""
    found = [m.group(1) for m in _OPTION.finditer(text)]
    if "A" not in found:
        return []
    letters: list[str] = []
    for L in found[len(found) - 1 - found[::-1].index("A"):]:
        if L == chr(ord("A") + len(letters)):  # skips stem lines like "I. ..." that are not the next option
            letters.append(L)
    return letters


def option_texts(text: str) -> dict[str, str]:
    """{letter: option text} of the options listed at the end of `text` (as `_option_letters` finds them)."""
    found = list(_OPTION.finditer(text))
    starts = [i for i, m in enumerate(found) if m.group(1) == "A"]
    out: dict[str, str] = {}
    for m in found[starts[-1]:] if starts else []:
        if m.group(1) == chr(ord("A") + len(out)):  # the rule of `_option_letters`
            out[m.group(1)] = text[m.end():].split("\n", 1)[0].strip()
    return out


def graded_letters(aptitude: Aptitude, where: str = "the aptitude test") -> dict[str, list[str]]:
    """{question id: option letters} where a model's answer letter can be graded: every question has a stored
    answer among the "A. ..." option lines of its text. Otherwise an AptitudeError: a test without any answer (the
    RouterBench and RouterDC tests: those sources publish which models were right, not the right answer), the
    questions without one, or an answer that is not an option."""
    ids = aptitude.question_ids
    no_answer = [q for q in ids if not aptitude.answers.get(q)]
    if len(no_answer) == len(ids):
        benchmarks = ", ".join(aptitude.source.get("benchmarks") or []) or "its source"
        raise AptitudeError(f"{where} stores no answers ({benchmarks} publishes which models were right, not the "
                            "right answers), so a model's answers cannot be graded on it; run a test with answers "
                            "(e.g. checkpoints/modelsat-smollm2-mmlupro/aptitude.json) or import results instead")
    if no_answer:
        raise AptitudeError(f"{len(no_answer)} aptitude questions have no stored answer (e.g. {no_answer[:5]}); "
                            "running the test needs multiple-choice questions with answer letters. Import results "
                            "instead.")
    letters = {q: _option_letters(aptitude.texts[q]) for q in ids}
    for q, ls in letters.items():
        if aptitude.answers[q] not in ls:
            raise AptitudeError(f"aptitude question {q}: answer {aptitude.answers[q]!r} is not among the option letters "
                                f"{ls} found in its text (options must be lines like 'A. ...')")
    return letters

"""Aptitude test: discriminative question choice, tasks from a field or clusters, the file, the fingerprint,
outcomes, and running the test on a tiny causal LM (with resume)."""
from __future__ import annotations

import importlib.util
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelsat.aptitude import Aptitude, AptitudeError, AptitudeTask, build_aptitude, model_outcomes
from modelsat.local_examiner import run_aptitude
from modelsat.data.table import RoutingTable

MODELS = [f"m{i}" for i in range(10)]
TASKS = ["high_school_biology", "college_physics", "professional_law", "astronomy", "virology"]
TOPIC_WORDS = {
    "high_school_biology": "cell dna protein enzyme mitosis gene",
    "college_physics": "force mass velocity energy momentum torque",
    "professional_law": "court contract plaintiff statute tort liability",
    "astronomy": "planet star galaxy orbit telescope comet",
    "virology": "virus capsid infection vaccine host replication",
}


def _text(qid: str, words: str, rng: np.random.Generator) -> str:
    w = words.split()
    stem = " ".join(rng.choice(w, 4)) + f" in case {qid}?"
    return stem + "\nA. first\nB. second\nC. third\nD. fourth"


def make_table(extra_tasks: dict[str, int] | None = None) -> RoutingTable:
    """5 tasks × 40 questions: 10 all right, 5 all wrong, 20 discriminative (k of 10 models right, k = 1..9),
    5 discriminative but evaluated by 2 models only; plus untasked questions and `extra_tasks` {name: n discriminative}."""
    rng = np.random.default_rng(123)
    questions, results = [], []

    def add(qid: str, task: str, right: list[bool | None], words: str) -> None:
        questions.append({"question_id": qid, "text": _text(qid, words, rng), "benchmark": "synthetic",
                          "category": task.split("_")[0], "task": task, "source": "test", "answer": "B"})
        for m, r in zip(MODELS, right):
            if r is not None:
                results.append({"model": m, "question_id": qid, "score": float(r)})

    n = 0
    for task in TASKS + sorted(extra_tasks or {}):
        words = TOPIC_WORDS.get(task, "misc other thing")
        kinds = ["right"] * 10 + ["wrong"] * 5 + ["disc"] * 20 + ["sparse"] * 5
        if task not in TASKS:
            kinds = ["disc"] * (extra_tasks or {})[task]
        for j, kind in enumerate(kinds):
            qid = f"q{n:04d}"
            n += 1
            if kind == "right":
                right = [True] * 10
            elif kind == "wrong":
                right = [False] * 10
            elif kind == "sparse":
                right = [True, False] + [None] * 8
            else:
                k = 1 + j % 9
                right = [i < k for i in range(10)]
            add(qid, task, right, words)
    for j in range(30):  # discriminative but without a task: never an aptitude question in `task` mode
        add(f"u{j:03d}", "", [i < 5 for i in range(10)], "misc")
    q = pd.DataFrame(questions)
    models = pd.DataFrame({"model": MODELS, "cost": np.nan, "params_b": np.nan, "cost_unit": ""})
    return RoutingTable(questions=q, results=pd.DataFrame(results), models=models)


def _kind(table: RoutingTable, qid: str) -> tuple[int, float]:
    r = table.results[table.results.question_id == qid]
    return len(r), float(r.score.mean())


def test_build_chooses_discriminative_questions() -> None:
    table = make_table()
    apt = build_aptitude(table, num_tasks=5, per_task=8, seed=0)
    assert apt.num_tasks == 5 and apt.per_task == 8
    assert [t.name for t in apt.tasks] == sorted(TASKS)
    assert {t.description for t in apt.tasks} >= {"high school biology", "college physics"}
    for t in apt.tasks:
        assert len(t.question_ids) == 8 and t.question_ids == sorted(t.question_ids)
        for qid in t.question_ids:
            n, p = _kind(table, qid)
            assert n == 10 and 0 < p < 1, f"{qid} is all right/all wrong or evaluated by few models"
            assert table.questions.set_index("question_id").loc[qid, "task"] == t.name
    assert all(q.startswith("q") for q in apt.question_ids)
    assert apt.answers == {q: "B" for q in apt.question_ids}
    # weighting by p(1-p): chosen questions are on average closer to 0.5 than the candidates
    chosen = np.mean([_kind(table, q)[1] * (1 - _kind(table, q)[1]) for q in apt.question_ids])
    cands = np.mean([(k / 10) * (1 - k / 10) for k in range(1, 10)])
    assert chosen > cands


def test_questions_evaluated_by_every_model_come_first() -> None:
    """Task `a`: 5 questions evaluated by all 10 models, 5 by 9 (enough coverage, but one model could not be profiled)."""
    q, r = [], []
    for j in range(10):
        qid = f"a{j}"
        q.append({"question_id": qid, "text": f"question {qid}?\nA. x\nB. y", "benchmark": "b", "category": "c",
                  "task": "a", "source": "s"})
        for i, m in enumerate(MODELS):
            if j < 5 or i > 0:
                r.append({"model": m, "question_id": qid, "score": float(i % 2 == 0) if j >= 5 else float(i < 3)})
    table = RoutingTable(questions=pd.DataFrame(q), results=pd.DataFrame(r))
    assert build_aptitude(table, num_tasks=1, per_task=5).question_ids == [f"a{j}" for j in range(5)]
    seven = build_aptitude(table, num_tasks=1, per_task=7)
    assert set(seven.question_ids) >= {f"a{j}" for j in range(5)} and seven.source["num_not_by_all_models"] == 2


def test_tasks_with_most_discriminative_questions_win() -> None:
    table = make_table(extra_tasks={"tiny_topic": 9, "big_topic": 30})
    apt = build_aptitude(table, num_tasks=5, per_task=9, seed=0)
    names = [t.name for t in apt.tasks]
    assert "big_topic" in names and "tiny_topic" not in names  # 30 candidates beat 20; 9 loses
    assert len(names) == 5


def test_task_or_source_gives_untasked_questions_their_source_as_task() -> None:
    """The 30 untasked questions (source `test`) are left out by `task` and become task `test` by `task_or_source`."""
    table = make_table()
    with pytest.raises(AptitudeError, match="only 5 of the 5 tasks"):
        build_aptitude(table, num_tasks=6, per_task=8, tasks_by="task")
    apt = build_aptitude(table, num_tasks=6, per_task=8, tasks_by="task_or_source")
    assert [t.name for t in apt.tasks] == sorted(TASKS + ["test"])
    assert all(q.startswith("u") for q in apt.tasks[[t.name for t in apt.tasks].index("test")].question_ids)
    tasked = build_aptitude(table, num_tasks=5, per_task=8, tasks_by="task")
    both = tasked.extended(build_aptitude(table.subset(question_ids=[f"u{j:03d}" for j in range(30)]), num_tasks=1,
                                          per_task=8, tasks_by="task_or_source"))
    assert [t.name for t in both.tasks] == sorted(TASKS) + ["test"] and both.head(5).fingerprint == tasked.fingerprint
    with pytest.raises(AptitudeError, match="names must be unique"):
        tasked.extended(tasked.head(1))


def test_too_few_questions_is_an_error() -> None:
    table = make_table(extra_tasks={"tiny_topic": 9})
    with pytest.raises(AptitudeError, match=r"only 5 of the 6 tasks.*tiny_topic \(9\)"):
        build_aptitude(table, num_tasks=6, per_task=10)
    with pytest.raises(AptitudeError, match="at least 21 discriminative"):
        build_aptitude(table, num_tasks=1, per_task=21)
    with pytest.raises(AptitudeError, match="positive"):
        build_aptitude(table, num_tasks=0)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    table = make_table()
    a, b, c = (build_aptitude(table, num_tasks=5, per_task=6, seed=s) for s in (0, 0, 1))
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json")
    c.save(tmp_path / "c.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert a.fingerprint != c.fingerprint
    # the input order of the table does not matter either
    shuffled = RoutingTable(questions=table.questions.sample(frac=1, random_state=3).reset_index(drop=True),
                            results=table.results.sample(frac=1, random_state=4).reset_index(drop=True), models=table.models)
    build_aptitude(shuffled, num_tasks=5, per_task=6, seed=0).save(tmp_path / "d.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "d.json").read_bytes()
    doc = json.loads((tmp_path / "a.json").read_text())
    assert {"version", "fingerprint", "seed", "source", "tasks", "questions"} <= set(doc)
    assert doc["questions"][a.question_ids[0]] == {"text": a.texts[a.question_ids[0]], "answer": "B"}


def test_load_roundtrip_and_tamper_detection(tmp_path: Path) -> None:
    apt = build_aptitude(make_table(), num_tasks=5, per_task=4, seed=0)
    path = tmp_path / "aptitude.json"
    apt.save(path)
    back = Aptitude.load(path)
    assert back == apt and back.fingerprint == apt.fingerprint
    doc = json.loads(path.read_text())
    first = doc["tasks"][0]["question_ids"]
    first[0], first[1] = first[1], first[0]  # reorder two questions: the stored fingerprint no longer matches
    path.write_text(json.dumps(doc))
    with pytest.raises(AptitudeError, match="does not match its question ids"):
        Aptitude.load(path)
    path.write_text("{not json")
    with pytest.raises(AptitudeError, match="not a valid aptitude file"):
        Aptitude.load(path)
    with pytest.raises(AptitudeError, match="does not exist"):
        Aptitude.load(tmp_path / "missing.json")


@pytest.mark.parametrize("content, kind", [
    (bytes(range(256)) * 4, "UnicodeDecodeError"),                     # random bytes
    ('{"version": 1, "tasks": [], "questions": {"q": {"text": "caf\xe9"}}}'.encode("latin-1"), "UnicodeDecodeError"),
    (b'["a list"]', "AttributeError"),
    (b'{"version": 1, "tasks": [{"name": "t"}]}', "KeyError"),
    (b"[" * 100_000, "RecursionError"),
])
def test_a_broken_aptitude_file_is_one_line_naming_it(tmp_path: Path, content: bytes, kind: str) -> None:
    path = tmp_path / "aptitude.json"
    path.write_bytes(content)
    with pytest.raises(AptitudeError, match=f"^{path}: not a valid aptitude file \\({kind}.*rebuild it") as err:
        Aptitude.load(path)
    assert "\n" not in str(err.value)


def test_an_unreadable_partial_results_file_says_to_delete_it(tmp_path: Path) -> None:
    apt = Aptitude([AptitudeTask("t", "t", ["a"])], {"a": "Q?\nA. x\nB. y"}, {"a": "A"})
    partial = tmp_path / "r.parquet.partial.jsonl"
    partial.write_bytes(b"\xff\xfe" + bytes(range(128, 256)))
    with pytest.raises(AptitudeError, match=f"^{partial}: partial results that cannot be read .*delete it"):
        run_aptitude("tiny-llama", apt, tmp_path / "r.parquet")


def test_fingerprint_and_check() -> None:
    import hashlib

    apt = Aptitude([AptitudeTask("t1", "t one", ["a", "b"]), AptitudeTask("t2", "t two", ["c", "d"])],
                   {q: f"text {q}" for q in "abcd"})
    assert apt.fingerprint == hashlib.sha256(b"a\nb\nc\nd").hexdigest()
    apt.check(apt.fingerprint, "zoo entry x")
    with pytest.raises(AptitudeError, match=rf"zoo entry x.*{'0' * 64}.*{apt.fingerprint}"):
        apt.check("0" * 64, "zoo entry x")
    with pytest.raises(AptitudeError, match="same, non-zero number"):
        Aptitude([AptitudeTask("t1", "", ["a"]), AptitudeTask("t2", "", ["c", "d"])], {q: "x" for q in "abcd"})
    with pytest.raises(AptitudeError, match="no text"):
        Aptitude([AptitudeTask("t1", "", ["a"])], {})


def test_outcomes_and_errors() -> None:
    table = make_table()
    apt = build_aptitude(table, num_tasks=5, per_task=4, seed=0)
    out = model_outcomes(apt, table, "m3")
    assert out.shape == (5, 4) and out.dtype == np.float32
    r = table.results[table.results.model == "m3"].set_index("question_id").score
    assert out[2, 1] == r[apt.tasks[2].question_ids[1]]
    scores = {q: 1.0 for q in apt.question_ids[3:]}
    with pytest.raises(AptitudeError, match=r"miss 3 of the 20 aptitude questions.*" + apt.question_ids[0]):
        apt.outcomes(scores)
    with pytest.raises(AptitudeError, match="not in the routing table"):
        model_outcomes(apt, table, "nope")
    with pytest.raises(AptitudeError, match=r"\[0, 1\]"):
        apt.outcomes({q: 2.0 for q in apt.question_ids})


def bow_embed(texts: list[str]) -> np.ndarray:
    """Deterministic random projection of normalised hashed bag-of-words counts."""
    counts = np.zeros((len(texts), 512))
    for i, t in enumerate(texts):
        for w in t.lower().replace("?", " ").split():
            counts[i, zlib.crc32(w.encode()) % 512] += 1
    counts /= np.linalg.norm(counts, axis=1, keepdims=True)
    return counts @ np.random.default_rng(0).normal(size=(512, 64))


def test_cluster_mode_recovers_topics(tmp_path: Path) -> None:
    table = make_table()
    table = RoutingTable(questions=table.questions[table.questions.task != ""].reset_index(drop=True),
                         results=table.results[~table.results.question_id.str.startswith("u")].reset_index(drop=True),
                         models=table.models)
    apt = build_aptitude(table, num_tasks=5, per_task=6, tasks_by="cluster", seed=0, embed=bow_embed)
    assert apt.num_tasks == 5 and apt.per_task == 6
    task_of = table.questions.set_index("question_id").task
    seen = set()
    for t in apt.tasks:
        true = {task_of[q] for q in t.question_ids}
        assert len(true) == 1, f"cluster {t.name} mixes topics {true}"
        (topic,) = true
        seen.add(topic)
        assert set(t.name.split("-")) <= set(TOPIC_WORDS[topic].split()), (t.name, topic)
        assert len(t.description.split(", ")) >= 3
    assert seen == set(TASKS)
    apt.save(tmp_path / "a.json")
    build_aptitude(table, num_tasks=5, per_task=6, tasks_by="cluster", seed=0, embed=bow_embed).save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    with pytest.raises(AptitudeError, match="needs an `embed`"):
        build_aptitude(table, num_tasks=5, per_task=6, tasks_by="cluster")


def test_task_mode_without_tasks_says_use_clusters() -> None:
    table = make_table()
    q = table.questions.assign(task="")
    with pytest.raises(AptitudeError, match="tasks_by='cluster'"):
        build_aptitude(RoutingTable(questions=q, results=table.results, models=table.models), num_tasks=2, per_task=2)


# ---------------------------------------------------------------- running on a tiny LM


def _tiny_llm_available() -> None:
    if importlib.util.find_spec("modelsat.pretrained") is None:
        pytest.skip("modelsat.pretrained is not there yet (load_llm owned by the model engineer)")
    import modelsat.pretrained as p

    if not hasattr(p, "load_llm"):
        pytest.skip("modelsat.pretrained.load_llm is not there yet")


def test_run_aptitude_tiny_llama_with_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tiny_llm_available()
    import modelsat.local_examiner as aptmod

    apt = build_aptitude(make_table(), num_tasks=3, per_task=2, seed=0)
    scored: list[str] = []
    pred_of: dict[str, list[str]] = {}
    real = aptmod._predict_letters

    def counting(llm, tok, prompts, letters, token_of):  # type: ignore[no-untyped-def]
        scored.extend(prompts)
        preds = real(llm, tok, prompts, letters, token_of)
        assert all(p in ls for p, ls in zip(preds, letters))
        for prompt, p in zip(prompts, preds):
            pred_of.setdefault(prompt, []).append(p)
        return preds

    monkeypatch.setattr(aptmod, "_predict_letters", counting)
    out = tmp_path / "res.parquet"
    df = run_aptitude("tiny-llama", apt, out, batch_size=4)
    assert list(df.columns) == ["question_id", "score"] and df.question_id.tolist() == apt.question_ids
    assert set(df.score) <= {0.0, 1.0} and len(scored) == 6
    assert all(p.endswith("Answer:") or p.endswith("Answer: ") for p in scored)
    assert pd.read_parquet(out).equals(df)
    assert not (tmp_path / "res.parquet.partial.jsonl").exists()
    # left padding changes nothing: one question per batch gives the same answers
    assert run_aptitude("tiny-llama", apt, tmp_path / "one.parquet", batch_size=1).equals(df)
    assert len(pred_of) == 6 and all(len(set(p)) == 1 for p in pred_of.values())

    # an interrupted run: 4 questions done (the last line torn by the crash) -> only the other 2 are scored
    partial = tmp_path / "res2.csv.partial.jsonl"
    lines = [json.dumps({"model": "tiny-llama", "fingerprint": apt.fingerprint})]
    lines += [json.dumps({"question_id": q, "score": 1.0}) for q in apt.question_ids[:4]]
    partial.write_text("\n".join(lines) + '\n{"question_id": "q00')
    scored.clear()
    df2 = run_aptitude("tiny-llama", apt, tmp_path / "res2.csv", batch_size=4)
    assert len(scored) == 2
    assert df2.score.tolist()[:4] == [1.0] * 4 and df2.score.tolist()[4:] == df.score.tolist()[4:]
    assert pd.read_csv(tmp_path / "res2.csv", dtype={"question_id": str}).equals(df2)

    # a partial file of another model is refused
    partial.write_text(json.dumps({"model": "other", "fingerprint": apt.fingerprint}) + "\n")
    with pytest.raises(AptitudeError, match="another run"):
        run_aptitude("tiny-llama", apt, tmp_path / "res2.csv")


def test_run_aptitude_needs_answers(tmp_path: Path) -> None:
    apt = Aptitude([AptitudeTask("t", "t", ["a"])], {"a": "Q?\nA. x\nB. y"})
    with pytest.raises(AptitudeError, match="stores no answers"):
        run_aptitude("tiny-llama", apt, tmp_path / "r.parquet")
    apt = Aptitude([AptitudeTask("t", "t", ["a"])], {"a": "Q?\nA. x\nB. y"}, {"a": "E"})
    with pytest.raises(AptitudeError, match="not among the option letters"):
        run_aptitude("tiny-llama", apt, tmp_path / "r.parquet")
    with pytest.raises(AptitudeError, match=".parquet or .csv"):
        run_aptitude("tiny-llama", apt, tmp_path / "r.txt")


# ---------------------------------------------------------------- real data


@pytest.mark.needs_data
def test_mmlu_pro_aptitude(shared_data: Path, tmp_path: Path) -> None:
    converters = pytest.importorskip("modelsat.data.converters")
    from modelsat.aptitude import _option_letters
    from modelsat.data.splits import make_splits

    table = converters.build_table("mmlu-pro", shared_data / "mmlu_pro")
    apt = build_aptitude(table, num_tasks=50, per_task=20, tasks_by="task", seed=0)
    assert apt.num_tasks == 50 and apt.per_task == 20 and len(set(apt.question_ids)) == 1000
    src = dict(zip(table.questions.question_id, table.questions.source))  # MMLU-Pro `src`: ori_mmlu-<subject>, stemez-...
    subjects = {s.removeprefix("ori_mmlu-") for s in src.values() if s.startswith("ori_mmlu-")}
    assert len(subjects) == 56
    for t in apt.tasks:
        srcs = {src[q] for q in t.question_ids}
        assert len(srcs) == 1 and next(iter(srcs)).startswith("ori_mmlu-"), (t.name, srcs)
        subject = next(iter(srcs)).removeprefix("ori_mmlu-")
        assert subject in subjects and t.description == subject.replace("_", " ")
    assert len(apt.answers) == 1000 and all(apt.answers[q] in _option_letters(apt.texts[q]) for q in apt.question_ids)
    apt.save(tmp_path / "a.json")
    build_aptitude(table, num_tasks=50, per_task=20, tasks_by="task", seed=0).save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    for m in table.model_names:  # every model of the table can be profiled from it (DeepSeek-Coder-V2 lacks some questions)
        assert model_outcomes(apt, table, m).shape == (50, 20)
    splits = make_splits(table, apt, seed=0)
    held = set(apt.question_ids)
    assert all(not held.intersection(ids) for ids in splits.values())
    assert sum(len(v) for v in splits.values()) + len(held) == table.results.question_id.nunique()

"""The results bank (modelsat/bank.py), the training evidence read out of fold (modelsat/training_evidence.py), and
growing a bank without retraining (Router.add_results / add_feedback, `modelsat zoo add-results`)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from modelsat import bank as bank_module
from modelsat import evidence as evidence_module
from modelsat.bank import BANK_FILE, BankError, ResultsBank, bank_counts, read_graded, text_key
from modelsat.cli import main as cli
from modelsat.config import load_config
from modelsat.data.prepare import prepare
from modelsat.evidence import NAMES, Candidate, NeighbourSearch, category_accuracy
from modelsat.training_evidence import FULL, THIN_LEVELS, EvidenceTable, pair_level

from conftest import REPO, make_synthetic_table, tiny_overrides, train_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
STAMP = {"encoder": "test", "dim": "4", "window": "w"}


def _unit(rng: np.random.Generator, n: int, d: int = 4) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _embed_with(rng: np.random.Generator):
    return lambda idx: _unit(rng, len(idx))


# ---- the store -------------------------------------------------------------------------------------------------
def test_bank_round_trip_replaces_results_and_counts_feedback_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    prefix = _unit(rng, 3)
    bank = ResultsBank.open(tmp_path / BANK_FILE, STAMP, prefix=prefix)
    keys = [text_key(t) for t in "abc"]
    assert bank.add("m", keys, [1.0, 0.0, 1.0], "results", embed=_embed_with(rng), texts=list("abc")) == 3
    pos, scores = bank.rows("m")
    assert list(pos) == [3, 4, 5] and list(scores) == [1, 0, 1]               # after the 3 prefix rows
    np.testing.assert_allclose(bank.key_matrix()[0][:3], prefix.astype(np.float16))
    assert bank.add("m", [keys[1]], [1.0], "results") == 1                      # replaced, not added
    assert bank.add("m", [keys[0]], [1.0], "results") == 0                      # the same score: nothing changes
    assert bank.add("m", [keys[2]], [0.0], "feedback", feedback_ids=["f1"]) == 1
    assert bank.add("m", [keys[2]], [0.0], "feedback", feedback_ids=["f1"]) == 0
    again = ResultsBank.open(tmp_path / BANK_FILE, STAMP, prefix=prefix)        # another process's view
    assert sorted(zip(*again.rows("m"))) == sorted(zip(*bank.rows("m"))) == [(3, 1.0), (4, 1.0), (5, 0.0), (5, 1.0)]
    assert bank_counts(tmp_path / BANK_FILE) == {"m": 4}
    with pytest.raises(BankError, match="embedded with"):
        ResultsBank.open(tmp_path / BANK_FILE, {**STAMP, "encoder": "other"})
    with pytest.raises(BankError, match="no text was given"):
        bank.add("m", [text_key("new")], [1.0], "results")


def test_a_failed_write_leaves_nothing_in_part(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    bank = ResultsBank.open(tmp_path / BANK_FILE, STAMP)
    bank.add("m", [text_key("a")], [1.0], "results", embed=_embed_with(rng))

    def broken(idx):                                                            # the embedding fails midway
        raise RuntimeError("encoder died")
    with pytest.raises(RuntimeError):
        bank.add("m", [text_key("a"), text_key("b")], [0.0, 1.0], "results", embed=broken)
    assert bank_counts(tmp_path / BANK_FILE) == {"m": 1}
    assert list(ResultsBank.open(tmp_path / BANK_FILE, STAMP).rows("m")[1]) == [1.0]


WRITER = """
import sys, numpy as np
from modelsat.bank import ResultsBank, text_key
bank = ResultsBank.open(sys.argv[1], {"encoder": "test", "dim": "4", "window": "w"})
rng = np.random.default_rng(int(sys.argv[3]))
for i in range(int(sys.argv[4])):
    x = rng.normal(size=(1, 4)); x /= np.linalg.norm(x)
    bank.add(sys.argv[2], [text_key(f"{sys.argv[2]}-{i}")], [float(i % 2)], "feedback", embed=lambda idx: x,
             feedback_ids=[f"{sys.argv[2]}-{i}"])
    print(f"ack {i}", flush=True)
"""


def test_several_processes_append_at_once_and_a_reader_sees_them(tmp_path: Path) -> None:
    path = tmp_path / BANK_FILE
    ResultsBank.open(path, STAMP).add("seed", [text_key("s")], [1.0], "results",
                                      embed=lambda idx: np.array([[1.0, 0, 0, 0]]))
    reader = ResultsBank.open(path, STAMP)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{k}", str(k), "60"],
                              stdout=subprocess.PIPE, text=True) for k in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out.count("ack") == 60
    assert reader.refresh()
    assert {m: len(reader.rows(m)[0]) for m in ("w0", "w1", "w2")} == {"w0": 60, "w1": 60, "w2": 60}
    assert not reader.refresh()                                                 # nothing new: one PRAGMA, no read


def test_kill_9_mid_write_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / BANK_FILE
    ResultsBank.open(path, STAMP)
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "w", "0", "100000"], stdout=subprocess.PIPE,
                         text=True)
    acked = -1
    for line in p.stdout:
        acked = int(line.split()[1])
        if acked >= 40:
            break
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    held = len(ResultsBank.open(path, STAMP).rows("w")[0])
    assert held >= acked + 1                                                    # every acknowledged result is there


def test_a_big_bank_is_split_into_cells_and_searched_through_them(tmp_path: Path, monkeypatch) -> None:
    """Past EXACT_LIMIT questions the bank fits cells once and assigns every question (new ones too); a candidate
    with more rows than the limit is then searched through the cells nearest the instruction."""
    monkeypatch.setattr(bank_module, "EXACT_LIMIT", 300)
    monkeypatch.setattr(evidence_module, "EXACT_LIMIT", 300)
    monkeypatch.setattr(evidence_module, "PROBE_ROWS", 200)
    rng = np.random.default_rng(2)
    centres = _unit(rng, 8)
    which = rng.integers(0, 8, 600)
    emb = centres[which] * 4 + 0.2 * rng.normal(size=(600, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    bank = ResultsBank.open(tmp_path / BANK_FILE, STAMP)
    scores = rng.integers(0, 2, 600).astype(float)
    bank.add("big", [text_key(str(i)) for i in range(600)], scores.tolist(), "results", embed=lambda idx: emb[idx])
    keys, cells = bank.key_matrix()
    assert bank.centroids is not None and (cells >= 0).all() and len(np.unique(cells)) > 4
    bank.add("big", [text_key("late")], [1.0], "results", embed=lambda idx: emb[:1])
    assert bank.key_matrix()[1][-1] == cells[0]                                 # a new question gets its cell
    pos, out = bank.rows("big")
    cand = Candidate(pos, out, 0.5, cells=bank.key_matrix()[1][pos])
    search = NeighbourSearch(bank.key_matrix()[0], [cand], bank.centroids)
    assert search.columns[0] is None                                             # through the cells
    x = torch.from_numpy(centres[:3]).float()
    exact = NeighbourSearch(bank.key_matrix()[0], [Candidate(pos, out, 0.5)]).evidence(x)
    np.testing.assert_allclose(search.evidence(x)[:, :, :3], exact[:, :, :3], atol=1e-3)   # nn10..nn50


# ---- reading results files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    ("text,score\n", "has no rows"),
    ("", "is empty \\(no header, no rows\\)"),
    ("text,grade\nhello,1\n", "needs the columns score and text"),
    ("text,score\nhello,1.5\n", "line 2, column 'score': 1.5 is not a number in \\[0, 1\\]"),
    ("text,score\nhello,0.5\nbye,nan\n", "line 3, column 'score': empty \\(or NaN\\), which is not a number"),
    ("text,score\nhello,\n", "line 2, column 'score': empty \\(or NaN\\)"),           # an empty cell
    ("text,score\nhello,yes\n", "line 2, column 'score': 'yes'"),
    ("text,score\nq one,0.5\nq two,abc\n", "line 3, column 'score': 'abc'"),      # the row that is wrong
    ("text,score\n\" \",1\n", "line 2, column 'text': empty, and no question_id"),
    ("text,score\n,1\n", "line 2, column 'text': empty, and no question_id"),        # "" reads as missing
    ("text,score,model\nhello,1,m-all\nbye,0,m-other\n", "line 3, column 'model': 'm-other' is not 'm-all'"),
])
def test_bad_results_files_are_one_line_naming_file_row_and_field(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "r.csv"
    f.write_text(content)
    with pytest.raises(BankError, match=message) as e:
        read_graded(f, model="m-all")
    assert str(f) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content, message", [
    ('{"text": "a", "score": 1}\n{"text": "b", "score": \n', "line 2 is not valid JSON"),
    ('{"text": "a", "score": 1}\n\n[1, 2]\n', "line 3 is not a JSON object"),
    ("", "is empty \\(no header, no rows\\)"),
    ("\n\n", "has no rows"),
    ('{"text": "a", "score": 1}\n{"text": "b", "score": 2}\n', "line 2, column 'score': 2 is not a number"),
])
def test_bad_jsonl_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text(content)
    with pytest.raises(BankError, match=message) as e:
        read_graded(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_a_results_file_may_mix_text_rows_and_question_id_rows(tmp_path: Path) -> None:
    f = tmp_path / "mixed.csv"
    f.write_text('text,question_id,score\n,mmlu-pro/1,1\nhello,,0\n"  ",mmlu-pro/2,0.5\n')
    table = read_graded(f)
    assert table["text"].tolist() == [None, "hello", None]
    assert table["question_id"].tolist() == ["mmlu-pro/1", None, "mmlu-pro/2"]
    assert table["score"].tolist() == [1.0, 0.0, 0.5] and table["where"].tolist() == ["line 2", "line 3", "line 4"]
    records = read_graded([{"text": "a", "score": "1"}, {"question_id": "q", "score": 0}])   # records, as pandas
    assert records["score"].tolist() == [1.0, 0.0] and records["where"].tolist() == ["row 0", "row 1"]


def test_a_write_holds_no_lock_while_it_embeds(tmp_path: Path) -> None:
    """A long embedding (a big add-results) must not lock other writers out: they write meanwhile."""
    import threading

    path = tmp_path / "bank.sqlite"
    one, two = ResultsBank.open(path, STAMP), ResultsBank.open(path, STAMP)
    started, done = threading.Event(), threading.Event()

    def slow_embed(idx: list[int]) -> np.ndarray:
        started.set()
        assert done.wait(10), "the other writer was locked out while this one embedded"
        return _unit(np.random.default_rng(0), len(idx))

    writer = threading.Thread(target=lambda: one.add("a", ["k1", "k2"], [1.0, 0.0], "results", embed=slow_embed))
    writer.start()
    assert started.wait(10)
    two.conn.execute("PRAGMA busy_timeout = 2000")
    assert two.add("b", ["k3"], [1.0], "results", embed=_embed_with(np.random.default_rng(1))) == 1
    done.set()
    writer.join()
    assert bank_counts(path) == {"a": 2, "b": 1}


def test_a_feedback_id_names_one_answer_of_one_model(tmp_path: Path) -> None:
    bank = ResultsBank.open(tmp_path / "bank.sqlite", STAMP)
    embed = _embed_with(np.random.default_rng(0))
    assert bank.add("a", ["k1"], [1.0], "feedback", embed=embed, feedback_ids=["resp-1"]) == 1
    assert bank.add("a", ["k1"], [1.0], "feedback", embed=embed, feedback_ids=["resp-1"]) == 0   # a retry
    with pytest.raises(BankError, match="feedback_id 'resp-1' was banked before for model 'a', not 'b'"):
        bank.add("b", ["k2"], [0.0], "feedback", embed=embed, feedback_ids=["resp-1"])
    assert bank_counts(tmp_path / "bank.sqlite") == {"a": 1}


def test_one_result_per_question_in_one_call_the_last_row_wins(tmp_path: Path) -> None:
    bank = ResultsBank.open(tmp_path / "bank.sqlite", STAMP)
    embed = _embed_with(np.random.default_rng(1))
    assert bank.add("a", ["k1", "k1", "k1"], [1.0, 0.0, 0.5], "results", embed=embed) == 1
    assert bank.rows("a")[1].tolist() == [0.5]


# ---- training: out of fold, thinned ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("oof")
    cfg = load_config(REPO / "configs" / "tiny.yaml", tiny_overrides(root, **{"model.sentence_encoder": "hash"}))
    return cfg, prepare(cfg.data, encoder_name="hash", log=lambda s: None)


def _table(cfg, data, seed: int = 0) -> tuple[EvidenceTable, dict]:
    rng = np.random.default_rng(seed)
    ids = list(data.splits["train"]) + list(data.splits["val"]) + list(data.aptitude.question_ids)
    emb = {q: torch.from_numpy(_unit(rng, 1, 16)[0]).float() for q in ids}
    stack = lambda qs: torch.stack([emb[q] for q in qs])                     # noqa: E731
    return EvidenceTable(cfg, data, stack(data.splits["train"]), stack(data.splits["val"]),
                         stack(data.aptitude.question_ids), log=lambda s: None), emb


def test_no_training_instruction_sees_its_own_label_through_the_bank(prepared) -> None:
    """Every train pair's evidence at the whole-bank level equals a hand computation over the aptitude answers and
    the *other* folds' labels; with its own label added the values differ (so this fails if the exclusion goes)."""
    cfg, data = prepared
    table, emb = _table(cfg, data)
    train, models = list(data.splits["train"]), table.models
    A = len(data.aptitude.question_ids)
    fold = np.random.default_rng(cfg.train.seed).permutation(len(train)) % cfg.train.bank_folds
    apt = data.table.outcome_matrix(data.aptitude.question_ids, models)
    labels = data.table.outcome_matrix(train, models)
    proba = table.classifier.proba(table.keys) if table.classifier is not None else None
    differs = 0
    for i in range(0, len(train), 7):
        x = table.keys[A + i][None]
        for j, m in enumerate(models):
            rows = np.flatnonzero((fold != fold[i]) & ~np.isnan(labels[:, j]))
            pos = np.concatenate([np.arange(A), A + rows])
            out = np.concatenate([apt[:, j], labels[rows, j]]).astype(np.float32)
            cat = None if proba is None else category_accuracy(proba[pos], out)
            p = None if proba is None else table.classifier.proba(x)
            hand = NeighbourSearch(table.keys, [Candidate(pos, out, float(apt[:, j].mean()), cat)]).evidence(x, p)
            torch.testing.assert_close(table.values[FULL, i, j], hand[0, 0])
            own = np.concatenate([pos, [A + i]]), np.concatenate([out, [labels[i, j]]]).astype(np.float32)
            leak = NeighbourSearch(table.keys, [Candidate(*own, float(apt[:, j].mean()))]).evidence(x)
            differs += int(leak[0, 0, 0] != hand[0, 0, 0])                      # nn10 reads its own label first
    assert differs > 0


def test_thinned_banks_hold_the_aptitude_answers_and_a_few_labels(prepared) -> None:
    cfg, data = prepared
    table, _ = _table(cfg, data)
    A = len(data.aptitude.question_ids)
    amount = NAMES.index("amount")
    for level, extra in enumerate(THIN_LEVELS):
        n = table.values[level, :, :, amount]                                   # log(1 + n) / log(1 + 1e6)
        others = max(int(np.ceil(len(table.train_ids) * (cfg.train.bank_folds - 1) / cfg.train.bank_folds)), 1)
        expected = np.log1p(A + min(extra, others)) / np.log1p(1e6)
        assert float(n.min()) <= expected + 1e-6                                 # at most the level's labels
        if extra == 0:
            torch.testing.assert_close(n, torch.full_like(n, float(np.log1p(A) / np.log1p(1e6))))
    levels = [pair_level(0, f"q{i}", "m", 0.5) for i in range(4000)]
    assert abs(np.mean([lv < FULL for lv in levels]) - 0.5) < 0.03             # half the pairs thinned
    assert {lv for lv in levels} == set(range(FULL + 1))
    assert pair_level(0, "q1", "m", 0.5) == pair_level(0, "q1", "m", 0.5)      # the same in every epoch


def test_one_category_or_none_trains_and_routes(tmp_path: Path) -> None:
    """Data whose questions carry one category: no classifier, no traceback; the category value is the overall."""
    from modelsat import Router

    src = make_synthetic_table(tmp_path / "source")
    q = pd.read_parquet(src / "questions.parquet")
    assert q["category"].nunique() > 1                                           # (the synthetic table has three)
    q.assign(category="general").to_parquet(src / "questions.parquet")
    run = train_tiny(tmp_path, **{"train.max_steps": 2, "model.evidence": "true"})
    router = Router.from_pretrained(run / "final")
    assert router.category_classifier is None
    ev = router.evidence(["A law question about torts number 3?\nA. x\nB. y"], router.models)
    torch.testing.assert_close(ev[..., NAMES.index("category")], ev[..., NAMES.index("overall")])
    assert router.rank("A law question about torts number 3?\nA. x\nB. y")[0].model in router.models


# ---- growing a bank without retraining ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bank_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny router reading the bank's evidence, with the unseen model m-all joined by its aptitude answers."""
    root = tmp_path_factory.mktemp("bank-run")
    run = train_tiny(root, **{"train.max_steps": 3, "model.evidence": "true"})
    assert cli(["zoo", "add", "--checkpoint", str(run / "final"), "--name", "m-all", "--results",
                str(root / "table" / "results.parquet")]) == 0
    return run


def test_the_checkpoint_ships_the_training_models_train_labels(bank_run: Path) -> None:
    from modelsat import Router

    counts = bank_counts(bank_run / "final" / "zoo" / BANK_FILE)
    splits = json.loads((bank_run / "final" / "splits.json").read_text())
    router = Router.from_pretrained(bank_run / "final")
    trained = [m for m in router.models if m != "m-all"]
    assert set(counts) == set(trained) and set(counts.values()) == {len(splits["train"])}
    assert router.bank_size("m-math") == len(splits["train"])
    assert "m-all" not in counts                                                 # unseen: its aptitude answers only


def test_add_results_and_feedback_change_the_next_ranking_without_restart(bank_run: Path, tmp_path: Path) -> None:
    from modelsat import Router

    ckpt = tmp_path / "ckpt"
    shutil.copytree(bank_run / "final", ckpt)
    router = Router.from_pretrained(ckpt)
    other = Router.from_pretrained(ckpt)                                         # another worker on the same files
    text = "A law question about contracts number 99: which option is right?\nA. x\nB. y"
    before = router.predict_matrix([text], ["m-all"])[0, 0]
    other.predict_matrix([text], ["m-all"])
    laws = [f"A law question about contracts number {i}: which option is right?\nA. x\nB. y" for i in range(40)]
    assert router.add_results("m-all", pd.DataFrame({"text": laws, "score": [1.0] * 40})) == 40
    after = router.predict_matrix([text], ["m-all"])[0, 0]
    assert after != before                                                       # read at once, no retraining
    np.testing.assert_allclose(other.predict_matrix([text], ["m-all"])[0, 0], after, atol=1e-6)   # seen elsewhere
    assert router.add_feedback("m-all", text, 0.0, feedback_id="resp-1") is True
    assert router.add_feedback("m-all", text, 0.0, feedback_id="resp-1") is False
    assert other.bank_size("m-all") == 41
    qid = router.aptitude.question_ids[0]                                        # an aptitude question by its id
    assert router.add_results("m-all", pd.DataFrame({"question_id": [qid], "score": [1.0]})) == 1


@pytest.mark.parametrize("call, error", [
    (lambda r: r.add_feedback("no-such-model", "hi", 1.0), "unknown model 'no-such-model'"),
    (lambda r: r.add_feedback("m-all", "hi", 1.5), "score must be a number in \\[0, 1\\]"),
    (lambda r: r.add_feedback("m-all", "hi", float("nan")), "score must be a number in \\[0, 1\\]"),
    (lambda r: r.add_feedback("m-all", "hi", True), "score must be a number in \\[0, 1\\]"),
    (lambda r: r.add_feedback("m-all", "  ", 1.0), "instruction is empty"),
    (lambda r: r.add_results("m-all", pd.DataFrame({"text": ["a", "b"], "score": [1.0, -0.1]})),
     "row 1, column 'score'"),
    (lambda r: r.add_results("m-all", pd.DataFrame({"text": ["a"], "model": ["m-7b"], "score": [1.0]})),
     "row 0, column 'model': 'm-7b' is not 'm-all'"),
    (lambda r: r.add_results("m-all", pd.DataFrame({"question_id": ["nowhere"], "score": [1.0]})),
     "row 0, column 'question_id': 'nowhere' is neither"),
])
def test_bad_input_to_the_bank_is_refused_and_nothing_is_written(bank_run: Path, tmp_path: Path, call,
                                                                  error: str) -> None:
    from modelsat import Router

    ckpt = tmp_path / "ckpt"
    shutil.copytree(bank_run / "final", ckpt)
    router = Router.from_pretrained(ckpt)
    before = bank_counts(ckpt / "zoo" / BANK_FILE)
    with pytest.raises(ValueError, match=error):
        call(router)
    assert bank_counts(ckpt / "zoo" / BANK_FILE) == before


def test_cli_zoo_add_results(bank_run: Path, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(bank_run / "final", ckpt)
    good = tmp_path / "graded.jsonl"
    good.write_text("\n".join(json.dumps({"text": f"A math question about algebra number {i}?", "score": i % 2})
                              for i in range(5)) + "\n")
    assert cli(["zoo", "add-results", "--checkpoint", str(ckpt), "--name", "m-all", "--results", str(good)]) == 0
    assert "banked 5 new or changed results of m-all" in capsys.readouterr().out
    assert bank_counts(ckpt / "zoo" / BANK_FILE)["m-all"] == 5
    assert cli(["zoo", "list", "--checkpoint", str(ckpt), "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["m-all"]["bank_results"] == 5
    empty = tmp_path / "empty.csv"
    empty.write_text("text,score\n")
    for args, message in ((["--name", "m-all", "--results", str(empty)], f"{empty} has no rows"),
                          (["--name", "ghost", "--results", str(good)], "--name: unknown model 'ghost'")):
        assert cli(["zoo", "add-results", "--checkpoint", str(ckpt), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert bank_counts(ckpt / "zoo" / BANK_FILE)["m-all"] == 5
    assert cli(["zoo", "remove", "--checkpoint", str(ckpt), "--name", "m-all"]) == 0
    assert "m-all" not in bank_counts(ckpt / "zoo" / BANK_FILE)                  # its bank went with it


def test_save_pretrained_carries_the_bank(bank_run: Path, tmp_path: Path) -> None:
    from modelsat import Router

    ckpt = tmp_path / "ckpt"
    shutil.copytree(bank_run / "final", ckpt)
    router = Router.from_pretrained(ckpt)
    router.add_feedback("m-all", "A biology question about genetics?", 1.0)
    copy = router.save_pretrained(tmp_path / "copy")
    assert bank_counts(copy / "zoo" / BANK_FILE) == bank_counts(ckpt / "zoo" / BANK_FILE)
    text = "A biology question about genetics number 2?\nA. x\nB. y"
    np.testing.assert_allclose(Router.from_pretrained(copy).predict_matrix([text]), router.predict_matrix([text]),
                               atol=1e-6)

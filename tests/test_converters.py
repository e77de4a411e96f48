"""Converters from the public formats: tiny fixtures written here, then the real files in ../shared/data."""
from __future__ import annotations

import io
import json
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelsat.data import converters
from modelsat.data.converters import DownloadError, build_table
from modelsat.data.table import RoutingTable, TableError

MMLU = [
    {"question_id": 1, "question": "What is 2 + 2?", "options": ["3", "4", "5"], "answer": "B", "answer_index": 1,
     "category": "math", "src": "ori_mmlu-high_school_mathematics"},
    {"question_id": 2, "question": "Capital of France?", "options": ["Paris", "Rome"], "answer": "A", "answer_index": 0,
     "category": "other", "src": "stemez-Geography"},
    {"question_id": 3, "question": "H2O is", "options": ["salt", "sand", "air", "water"], "answer": "D",
     "answer_index": 3, "category": "chemistry", "src": "ori_mmlu-college_chemistry"},
]
PREDS = {"tiny-7b": ["B", "B", None], "tiny-70b": ["B", "A", "D"]}


def _mmlu_compact(folder: Path) -> Path:
    folder.mkdir()
    pd.DataFrame(MMLU).drop(columns="answer_index").to_parquet(folder / "questions.parquet")
    rows = [(m, MMLU[i]["question_id"], p, p == MMLU[i]["answer"]) for m, ps in PREDS.items() for i, p in enumerate(ps)]
    pd.DataFrame(rows, columns=["model", "question_id", "pred", "correct"]).to_parquet(folder / "results.parquet")
    (folder / "models.json").write_text(json.dumps({"_note": "x", "tiny-7b": {"params_b": 7.0, "active_params_b": 7.0},
                                                    "tiny-70b": {"params_b": None, "active_params_b": None}}))
    return folder


def _zip_bytes(model: str, records: list[dict]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"model_outputs_{model}_5shots.json", json.dumps(records))
    return buf.getvalue()


def _mmlu_raw(folder: Path) -> Path:
    folder.mkdir()
    for model, preds in PREDS.items():
        records = [dict(r, pred=p, cot_content="", model_outputs="...") for r, p in zip(MMLU, preds)]
        (folder / f"model_outputs_{model}_5shots.zip").write_bytes(_zip_bytes(model, records))
    return folder


def _check_mmlu(t: RoutingTable) -> None:
    q = t.questions.set_index("question_id")
    assert list(q.index) == ["mmlu-pro/1", "mmlu-pro/2", "mmlu-pro/3"]
    assert q.loc["mmlu-pro/1", "text"] == "What is 2 + 2?\nA. 3\nB. 4\nC. 5"
    assert q["task"].tolist() == ["high_school_mathematics", "", "college_chemistry"]
    assert q["category"].tolist() == ["math", "other", "chemistry"] and (q["benchmark"] == "mmlu-pro").all()
    assert q["source"].tolist() == [r["src"] for r in MMLU] and q["answer"].tolist() == ["B", "A", "D"]
    np.testing.assert_array_equal(t.outcome_matrix(list(q.index), ["tiny-70b", "tiny-7b"]), [[1, 1], [1, 0], [1, 0]])


def test_mmlu_pro_compact(tmp_path: Path) -> None:
    t = build_table("mmlu-pro", _mmlu_compact(tmp_path / "mmlu"))
    _check_mmlu(t)
    assert t.models.set_index("model")["params_b"].to_dict() == pytest.approx({"tiny-70b": np.nan, "tiny-7b": 7.0}, nan_ok=True)
    assert t.models["cost"].isna().all() and (t.models["cost_unit"] == "").all()


def test_mmlu_pro_raw_folder_and_single_file(tmp_path: Path) -> None:
    folder = _mmlu_raw(tmp_path / "raw")
    _check_mmlu(build_table("mmlu-pro-raw", folder))
    one = build_table("mmlu-pro-raw", folder / "model_outputs_tiny-7b_5shots.zip")
    assert one.model_names == ["tiny-7b"] and one.results["score"].tolist() == [1.0, 0.0, 0.0]


def test_mmlu_pro_raw_errors(tmp_path: Path) -> None:
    folder = _mmlu_raw(tmp_path / "raw")
    (folder / "model_outputs_bad_5shots.zip").write_bytes(_zip_bytes("bad", [dict(MMLU[0], question="  ")]))
    with pytest.raises(TableError, match=r"model_outputs_bad_5shots.json: row 0, column 'question': is empty"):
        build_table("mmlu-pro-raw", folder)
    (folder / "model_outputs_bad_5shots.zip").write_bytes(b"not a zip")
    with pytest.raises(TableError, match="model_outputs_bad_5shots.zip: not a zip file"):
        build_table("mmlu-pro-raw", folder)
    with pytest.raises(TableError, match="no model_outputs_<MODEL>_5shots.zip here.*download=True"):
        build_table("mmlu-pro-raw", tmp_path)


def test_mmlu_pro_raw_download_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(url: str, timeout: float) -> None:
        calls.append((url, timeout))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(converters.urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError, match="network is unreachable.*Download the zips by hand from https://github.com/TIGER-AI-Lab/MMLU-Pro"):
        build_table("mmlu-pro-raw", tmp_path / "zips", download=True)
    assert len(calls) == 1 and calls[0][1] <= 30          # one try with a short timeout, then a clear error
    assert calls[0][0] == "https://raw.githubusercontent.com/TIGER-AI-Lab/MMLU-Pro/main/eval_results/model_outputs_Llama-2-7b-hf_5shots.zip"
    assert isinstance(DownloadError("x"), TableError)


def test_mmlu_pro_raw_download_writes_zips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Reply(io.BytesIO):
        def __enter__(self) -> "Reply":
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    def fake(url: str, timeout: float) -> Reply:
        model = url.rsplit("model_outputs_", 1)[1].removesuffix("_5shots.zip")
        return Reply(_zip_bytes(model, [dict(r, pred=p) for r, p in zip(MMLU, PREDS[model])]))

    monkeypatch.setattr(converters.urllib.request, "urlopen", fake)
    t = build_table("mmlu-pro-raw", tmp_path / "zips", download=True, models=["tiny-7b", "tiny-70b"])
    _check_mmlu(t)
    assert sorted(p.name for p in (tmp_path / "zips").iterdir()) == [
        "model_outputs_tiny-70b_5shots.zip", "model_outputs_tiny-7b_5shots.zip"]


def _routerdc(folder: Path) -> Path:
    folder.mkdir()
    scores = lambda a, b: {"org/m1": a, "org/m2": b}  # noqa: E731
    (folder / "toy_train.json").write_text(json.dumps([{"question": "Q1", "scores": scores(1, 0), "cluster_id": 0},
                                                       {"question": "Q2", "scores": scores(0.5, 0.0)}]))
    (folder / "toy_test.json").write_text(json.dumps([{"question": "Q1", "scores": scores(0, 1)}]))
    (folder / "gsm8k-test.json").write_text(json.dumps([{"question": "Q3", "scores": {"org/m1": 0.25}}]))
    return folder


def test_routerdc(tmp_path: Path) -> None:
    t = build_table("routerdc", _routerdc(tmp_path / "rdc"))
    q = t.questions.set_index("question_id")
    assert list(q.index) == ["routerdc/gsm8k-test/0", "routerdc/toy_test/0", "routerdc/toy_train/0", "routerdc/toy_train/1"]
    assert q["benchmark"].tolist() == ["gsm8k", "toy", "toy", "toy"] and (q["category"] == q["benchmark"]).all()
    assert q["source"].tolist() == ["gsm8k-test", "toy_test", "toy_train", "toy_train"] and (q["task"] == "").all()
    assert q["text"].tolist() == ["Q3", "Q1", "Q1", "Q2"]  # the same text in two files: two questions
    m = t.outcome_matrix(list(q.index), ["org/m1", "org/m2"])
    np.testing.assert_array_equal(m, [[0.25, np.nan], [0, 1], [1, 0], [0.5, 0]])


@pytest.mark.parametrize("record, message", [
    ({"question": "Q", "scores": {"org/m1": 1.7}}, r"toy_train.json: row 1, column 'scores.org/m1': 1.7 is not a number in \[0, 1\]"),
    ({"question": " ", "scores": {}}, "toy_train.json: row 1, column 'question': missing or empty question text"),
    ({"question": "Q", "scores": [1]}, "toy_train.json: row 1, column 'scores': expected an object"),
    ({"question": "Q", "scores": {"org/m1": "yes"}}, "toy_train.json: row 1, column 'scores.org/m1': 'yes' is not a number"),
])
def test_routerdc_errors(tmp_path: Path, record: dict, message: str) -> None:
    folder = tmp_path / "rdc"
    folder.mkdir()
    (folder / "toy_train.json").write_text(json.dumps([{"question": "Q0", "scores": {"org/m1": 1}}, record]))
    with pytest.raises(TableError, match=message):
        build_table("routerdc", folder)


def _routerbench_csv(path: Path, score: float = 1.0) -> Path:
    path.parent.mkdir(exist_ok=True)
    pd.DataFrame({
        "sample_id": ["arc.1", "arc.2", "arc.3", "arc.4", "arc.3"],
        "prompt": ["['Q1?\\nA) x']", "Q2 plain", "['Q3']", "['it\\'s Q4']", "['Q3', 'Q3']"],
        "eval_name": "arc-challenge",
        "m1": [1.0, 0.0, 1.0, score, np.nan], "m2": [0.0, 0.0, np.nan, 1.0, 1.0],
        "m1|total_cost": [0.001, 0.002, 0.003, 0.004, 0.009], "m2|total_cost": [0.01, 0.02, 0.07, 0.04, 0.03],
        "oracle_model_to_route_to": ["m1", "m1", "m1", "m2", "m2"],
    }).to_csv(path, index=False)
    return path.parent


def test_routerbench(tmp_path: Path) -> None:
    t = build_table("routerbench", _routerbench_csv(tmp_path / "rb" / "arc_challenge_train.csv"))
    q = t.questions.set_index("question_id")
    assert list(q.index) == ["routerbench/arc.1", "routerbench/arc.2", "routerbench/arc.3", "routerbench/arc.4"]
    assert q["text"].tolist() == ["Q1?\nA) x", "Q2 plain", "Q3", "it's Q4"]  # the listed prompt is unwrapped
    assert (q["benchmark"] == "arc-challenge").all() and (q["source"] == "arc_challenge_train").all()
    # arc.3 is split over two rows (m1 on one, m2 on the other): merged into one question
    np.testing.assert_array_equal(t.outcome_matrix(list(q.index), ["m1", "m2"]), [[1, 0], [0, 0], [1, 1], [1, 1]])
    cost = t.results.set_index(["model", "question_id"])["cost"]
    assert cost["m2", "routerbench/arc.3"] == 0.03 and cost["m1", "routerbench/arc.3"] == 0.003
    models = t.models.set_index("model")
    assert models.loc["m1", "cost"] == pytest.approx(0.0025) and models.loc["m2", "cost"] == pytest.approx(0.025)
    assert (models["cost_unit"] == "USD/query").all()
    np.testing.assert_allclose(t.costs(["m2", "m1"]), [0.025, 0.0025])
    t.save(tmp_path / "saved")  # the per-query cost survives save -> load
    pd.testing.assert_frame_equal(build_table("table", tmp_path / "saved").results, t.results)


def test_routerbench_errors(tmp_path: Path) -> None:
    folder = _routerbench_csv(tmp_path / "rb" / "arc_challenge_train.csv", score=1.7)
    with pytest.raises(TableError, match=r"arc_challenge_train.csv: row 3, column 'm1': 1.7 is outside \[0, 1\]"):
        build_table("routerbench", folder)
    df = pd.read_csv(_routerbench_csv(tmp_path / "rb" / "arc_challenge_train.csv") / "arc_challenge_train.csv")
    df.loc[4, "prompt"] = "['another Q3']"
    df.to_csv(folder / "arc_challenge_train.csv", index=False)
    with pytest.raises(TableError, match="arc_challenge_train.csv: row 4, column 'prompt': sample_id 'arc.3' is also at .* row 2"):
        build_table("routerbench", folder)
    df.loc[4, "prompt"], df.loc[4, "m1"] = "['Q3']", 0.0
    df.to_csv(folder / "arc_challenge_train.csv", index=False)
    with pytest.raises(TableError, match="arc_challenge_train.csv: row 4, column 'm1': a second result for sample_id 'arc.3'"):
        build_table("routerbench", folder)


def _leaderboard(folder: Path, item: str = "mmlu/anatomy.1") -> Path:
    folder.mkdir()
    pd.DataFrame({
        "item_id": ["arc/1", "gsm8k/7", "mmlu/anatomy.1"], "benchmark": ["arc", "gsm8k", "mmlu"],
        "item_name": ["1", "7", "anatomy.1"], "prompt": ["p1", "p2", "p3"],
        "question": ["Sky colour?", "2 + 3 = ?", "Bones in adult?"], "choices": [["red", "blue"], None, ["206", "300"]],
        "answer": ["B", "... #### 5", "0"], "answer_index": pd.array([1, None, 0], dtype="Int64"),
        "subject": [None, None, "anatomy"], "orig_id": ["Mercury_1", None, None],
    }).to_parquet(folder / "items.parquet")
    pd.DataFrame({"model": ["a/x", "a/x", "b/y", "b/y"], "benchmark": ["arc", "gsm8k", "arc", "mmlu"],
                  "item_id": ["arc/1", "gsm8k/7", "arc/1", item],
                  "correct": np.array([1, 0, 0, 1], dtype=np.int8)}).to_parquet(folder / "results.parquet")
    pd.DataFrame({"model": ["a/x", "b/y"], "params_b": [7.2, np.nan], "lb_avg": [60.0, 50.0],
                  "suspect_eval": [False, False]}).to_parquet(folder / "models.parquet")
    return folder


def test_leaderboard(tmp_path: Path) -> None:
    t = build_table("leaderboard", _leaderboard(tmp_path / "lb"))
    q = t.questions.set_index("question_id")
    assert q["text"].tolist() == ["Sky colour?\nA. red\nB. blue", "2 + 3 = ?", "Bones in adult?\nA. 206\nB. 300"]
    assert q["answer"].tolist() == ["B", "", "A"] and q["task"].tolist() == ["", "", "anatomy"]
    assert q["benchmark"].tolist() == ["arc", "gsm8k", "mmlu"] and (q["category"] == q["benchmark"]).all()
    np.testing.assert_array_equal(t.outcome_matrix(list(q.index), ["a/x", "b/y"]), [[1, 0], [0, np.nan], [np.nan, 1]])
    np.testing.assert_array_equal(t.costs(["a/x", "b/y"]), [7.2, np.nan])
    assert build_table("leaderboard", tmp_path / "lb", models=["b/y"]).model_names == ["b/y"]


def test_leaderboard_unknown_item(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="results.parquet: row 3, column 'item_id': unknown question id 'leaderboard/mmlu/x.9'"):
        build_table("leaderboard", _leaderboard(tmp_path / "lb", item="mmlu/x.9"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_table_source(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    q = pd.DataFrame({"question_id": ["a", "b"], "text": ["x?", "y?"], "benchmark": "b", "category": "c",
                      "task": ["", "t"], "source": "s"})
    r = pd.DataFrame({"model": ["m", "m", "n"], "question_id": ["a", "b", "a"], "score": [1.0, 0.0, 0.5]})
    for name, df in (("questions", q), ("results", r)):
        {"csv": lambda p: df.to_csv(p, index=False), "jsonl": lambda p: df.to_json(p, orient="records", lines=True),
         "parquet": lambda p: df.to_parquet(p, index=False)}[fmt](folder / f"{name}.{fmt}")
    t = build_table("table", folder)
    assert t.model_names == ["m", "n"] and t.questions["task"].tolist() == ["", "t"]
    assert build_table("table", folder, models=["n"]).results["question_id"].tolist() == ["a"]


def test_build_table_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="unknown source 'nope'"):
        build_table("nope", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TableError, match="download is available for mmlu-pro-raw only"):
        build_table("routerdc", tmp_path, download=True)
    with pytest.raises(TableError, match="not found; routerdc expects https://github.com/shuhao02/RouterDC"):
        build_table("routerdc", tmp_path / "missing")
    with pytest.raises(TableError, match=r"unknown model\(s\) \['zzz'\]"):
        build_table("routerdc", _routerdc(tmp_path / "rdc"), models=["org/m1", "zzz"])


# ---- the real files in ../shared/data -------------------------------------------------------------

@pytest.mark.needs_data
def test_real_mmlu_pro(shared_data: Path) -> None:
    t = build_table("mmlu-pro", shared_data / "mmlu_pro")
    assert len(t.model_names) == 24 and len(t.questions) == 10_588
    assert t.questions["category"].nunique() == 14 and t.questions["task"][t.questions["task"] != ""].nunique() >= 56
    assert t.questions["answer"].str.fullmatch("[A-J]").all()
    assert t.models["params_b"].notna().sum() == 23  # gemini's size is not published
    acc = t.results.groupby("model")["score"].mean()
    assert 0.15 < acc.min() < 0.25 and 0.65 < acc.max() < 0.75


@pytest.mark.needs_data
def test_real_mmlu_pro_raw_sample_matches_compact(shared_data: Path) -> None:
    raw = build_table("mmlu-pro-raw", shared_data / "mmlu_pro" / "raw_sample")
    assert raw.model_names == ["Meta-Llama-3_1-8B-Instruct", "gemma-7b"] and len(raw.results) == 120
    compact = build_table("mmlu-pro", shared_data / "mmlu_pro", models=raw.model_names)
    qids = raw.questions["question_id"].tolist()
    a, b = raw.outcome_matrix(qids, raw.model_names), compact.outcome_matrix(qids, raw.model_names)
    seen = ~np.isnan(a)
    np.testing.assert_array_equal(a[seen], b[seen])
    assert compact.questions.set_index("question_id").loc[qids, "answer"].tolist() == raw.questions["answer"].tolist()


@pytest.mark.needs_data
def test_real_routerdc(shared_data: Path) -> None:
    t = build_table("routerdc", shared_data / "routerdc")
    assert len(t.model_names) == 7 and 20_000 < len(t.questions) < 21_000
    assert set(t.questions["benchmark"]) >= {"mmlu", "gsm8k", "arc_challenge", "cmmlu", "ceval", "mbpp", "MATH_prealgebra"}
    assert t.questions["source"].str.endswith("_train").sum() + t.questions["source"].str.endswith("-train").sum() > 7_000


@pytest.mark.needs_data
def test_real_routerbench(shared_data: Path) -> None:
    t = build_table("routerbench", shared_data / "routerbench")
    assert len(t.model_names) == 11 and len(t.questions) == 3_164
    assert t.results["score"].notna().all() and t.results["cost"].notna().all()
    assert not t.questions["text"].str.startswith("['").any()
    assert (t.models["cost_unit"] == "USD/query").all()
    costs = dict(zip(t.models["model"], t.models["cost"]))
    assert costs["gpt-4-1106-preview"] > costs["gpt-3.5-turbo-1106"] > costs["mistralai/mistral-7b-chat"]


@pytest.mark.needs_data
def test_real_leaderboard(shared_data: Path) -> None:
    t = build_table("leaderboard", shared_data / "leaderboard")
    assert len(t.questions) == 693 and len(t.model_names) == 6_330 and len(t.results) == 3_282_101
    q = t.questions
    assert q.loc[q["benchmark"] == "mmlu", "task"].nunique() == 41 and (q.loc[q["benchmark"] == "gsm8k", "answer"] == "").all()

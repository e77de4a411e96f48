"""The routing table: validation messages (file, row, column), lookups, subset, atomic save and load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelsat.data.table import MODEL_COLUMNS, QUESTION_COLUMNS, RoutingTable, TableError


def _questions(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({
        "question_id": [f"q{i}" for i in range(n)], "text": [f"What is {i} + {i}?\nA. {2 * i}\nB. {i}" for i in range(n)],
        "benchmark": "toy", "category": ["math", "math", "logic", "logic"][:n], "task": ["add", "", "", "sub"][:n],
        "source": "unit", "answer": ["A", "B", "", "A"][:n]})


def _results() -> pd.DataFrame:
    return pd.DataFrame({"model": ["m1", "m1", "m1", "m1", "m2", "m2", "m3"],
                         "question_id": ["q0", "q1", "q2", "q3", "q0", "q2", "q3"],
                         "score": [1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 0.25],
                         "cost": [0.1, 0.2, 0.1, 0.3, 0.01, np.nan, 0.02]})


def _models() -> pd.DataFrame:
    return pd.DataFrame({"model": ["m1", "m2", "m3"], "cost": [2.0, np.nan, np.nan],
                         "params_b": [7.0, 70.0, np.nan], "cost_unit": ["USD/query", "", ""]})


@pytest.fixture
def table() -> RoutingTable:
    return RoutingTable(_questions(), _results(), _models())


def _write(folder: Path, fmt: str, **frames: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        if fmt == "csv":
            df.to_csv(folder / f"{name}.csv", index=False)
        elif fmt == "jsonl":
            df.to_json(folder / f"{name}.jsonl", orient="records", lines=True)
        else:
            df.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def test_model_names_and_models_completed() -> None:
    t = RoutingTable(_questions(), _results())
    assert t.model_names == ["m1", "m2", "m3"]
    assert list(t.models.columns) == MODEL_COLUMNS and t.models["cost"].isna().all()
    assert (t.models["cost_unit"] == "").all()
    assert "4 questions, 3 models, 7 results" in repr(t)


def test_score_matrix_order_and_nan(table: RoutingTable) -> None:
    m = table.outcome_matrix(["q3", "q0", "q2"], ["m3", "m1", "m2"])
    assert m.dtype == np.float32 and m.shape == (3, 3)
    expected = np.array([[0.25, 1.0, np.nan], [np.nan, 1.0, 0.0], [np.nan, 0.5, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(m, expected)
    np.testing.assert_array_equal(table.outcome_matrix(["q0", "q0"], ["m1"]), [[1.0], [1.0]])
    with pytest.raises(TableError, match="unknown question id"):
        table.outcome_matrix(["q0", "nope"], ["m1"])
    with pytest.raises(TableError, match="unknown model"):
        table.outcome_matrix(["q0"], ["m9"])


def test_texts_categories_costs(table: RoutingTable) -> None:
    assert table.texts(["q1", "q0"]) == [_questions().text[1], _questions().text[0]]
    assert table.categories(["q2", "q0"]) == ["logic", "math"]
    np.testing.assert_array_equal(table.costs(["m1", "m2", "m3"]), [2.0, 70.0, np.nan])  # cost, else params_b
    assert table.costs(["m1"]).dtype == np.float64


def test_subset(table: RoutingTable) -> None:
    sub = table.subset(question_ids=["q2", "q0"], models=["m2"])
    assert sub.questions["question_id"].tolist() == ["q2", "q0"]
    assert sub.model_names == ["m2"] and len(sub.results) == 2
    assert sub.models["model"].tolist() == ["m2"] and sub.models["params_b"].tolist() == [70.0]
    assert "cost" in sub.results.columns and "answer" in sub.questions.columns
    sub.validate()
    with pytest.raises(TableError, match="unknown model"):
        table.subset(models=["m9"])


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_load_formats(tmp_path: Path, table: RoutingTable, fmt: str) -> None:
    folder = _write(tmp_path / fmt, fmt, questions=_questions(), results=_results(), models=_models())
    loaded = RoutingTable.load(folder)
    pd.testing.assert_frame_equal(loaded.questions, table.questions, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.results, table.results, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.models, table.models, check_dtype=False)


def test_load_without_models_and_integer_ids(tmp_path: Path) -> None:
    q = _questions().assign(question_id=[10, 11, 12, 13])
    r = _results().assign(question_id=[10, 11, 12, 13, 10, 12, 13])
    t = RoutingTable.load(_write(tmp_path / "t", "parquet", questions=q, results=r))
    assert t.questions["question_id"].tolist() == ["10", "11", "12", "13"]
    assert t.models["params_b"].isna().all() and t.texts(["12"]) == [q.text[2]]


def test_save_load_round_trip(tmp_path: Path, table: RoutingTable) -> None:
    table.save(tmp_path / "table")
    assert sorted(p.name for p in (tmp_path / "table").iterdir()) == ["models.parquet", "questions.parquet", "results.parquet"]
    loaded = RoutingTable.load(tmp_path / "table")
    for a, b in ((loaded.questions, table.questions), (loaded.results, table.results), (loaded.models, table.models)):
        pd.testing.assert_frame_equal(a, b)


def test_save_is_atomic(tmp_path: Path, table: RoutingTable, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "table"
    table.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    calls = {"n": 0}
    real = pd.DataFrame.to_parquet

    def failing(self: pd.DataFrame, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", failing)
    with pytest.raises(OSError, match="disk full"):
        table.subset(models=["m1"]).save(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["table"]  # no temp folder left behind
    monkeypatch.undo()
    assert RoutingTable.load(target).model_names == ["m1", "m2", "m3"]


def test_save_refuses_invalid_table(tmp_path: Path) -> None:
    bad = RoutingTable(_questions(), _results().assign(score=[1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 2.0]))
    with pytest.raises(TableError, match=r"row 6, column 'score': 2 is outside \[0, 1\]"):
        bad.save(tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_results_csv_score_outside_range(tmp_path: Path) -> None:
    r = _results()
    r.loc[3, "score"] = 1.7
    folder = _write(tmp_path / "t", "csv", questions=_questions(), results=r)
    with pytest.raises(TableError) as e:
        RoutingTable.load(folder)
    assert str(e.value) == f"{folder / 'results.csv'}: row 3, column 'score': 1.7 is outside [0, 1]"


def _bad(kind: str, **change: object) -> dict[str, pd.DataFrame]:
    frames = {"questions": _questions(), "results": _results(), "models": _models()}
    df = frames[kind].astype(object)
    for key, value in change.items():
        row, col = key.rsplit("__", 1)
        df.loc[int(row[1:]), col] = value
    frames[kind] = df
    return frames


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("frames, file, message", [
    (_bad("results", r2__score=np.nan), "results", "row 2, column 'score': is missing"),
    (_bad("results", r4__score=-0.5), "results", r"row 4, column 'score': -0.5 is outside \[0, 1\]"),
    (_bad("results", r1__score="high"), "results", "row 1, column 'score': 'high' is not a number"),
    (_bad("results", r5__question_id="q0"), "results", "row 5, column 'question_id': duplicate row .*already at row 4"),
    (_bad("results", r6__question_id="q9"), "results", "row 6, column 'question_id': unknown question id 'q9'"),
    (_bad("results", r0__cost=-1.0), "results", "row 0, column 'cost': -1 is outside"),
    (_bad("questions", r3__question_id="q1"), "questions", "row 3, column 'question_id': duplicate row"),
    (_bad("questions", r2__text="   "), "questions", "row 2, column 'text': is empty"),
    (_bad("questions", r1__benchmark=""), "questions", "row 1, column 'benchmark': is empty"),
    (_bad("models", r1__params_b="big"), "models", "row 1, column 'params_b': 'big' is not a number"),
    (_bad("models", r2__model="m1"), "models", "row 2, column 'model': duplicate row"),
    (_bad("models", r2__model="m7"), "models", "row 2, column 'model': model 'm7' has no rows in results"),
])
def test_load_errors_name_file_row_column(tmp_path: Path, frames: dict, file: str, message: str, fmt: str) -> None:
    if fmt == "parquet" and "not a number" in message:  # parquet holds a column mixing numbers and text as text
        frames[file] = frames[file].astype(str).replace("nan", "")
    folder = _write(tmp_path / "t", fmt, **frames)
    with pytest.raises(TableError, match=f"{file}.{fmt}: {message}"):
        RoutingTable.load(folder)


def test_missing_column_and_file_errors(tmp_path: Path) -> None:
    folder = _write(tmp_path / "t", "csv", questions=_questions().drop(columns="text"), results=_results())
    with pytest.raises(TableError, match="questions.csv: missing column.*'text'"):
        RoutingTable.load(folder)
    _write(folder, "parquet", questions=_questions())
    with pytest.raises(TableError, match="both questions.parquet and questions.csv exist"):
        RoutingTable.load(folder)
    with pytest.raises(TableError, match="no results.parquet"):
        RoutingTable.load(_write(tmp_path / "u", "csv", questions=_questions()))
    with pytest.raises(TableError, match="is not a folder"):
        RoutingTable.load(tmp_path / "nowhere")


def test_jsonl_null_text(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    rows = _questions().to_dict("records")
    rows[1]["text"] = None
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    _results().to_csv(folder / "results.csv", index=False)
    with pytest.raises(TableError, match="questions.jsonl: row 1, column 'text': is missing \\(null\\)"):
        RoutingTable.load(folder)


def test_validate_in_memory_names_origin(table: RoutingTable) -> None:
    table.validate("toy")
    bad = RoutingTable(_questions(), pd.concat([_results(), _results().iloc[[0]]]))
    with pytest.raises(TableError, match=r"toy \(results\): row 7, column 'question_id': duplicate row \(model='m1'"):
        bad.validate("toy")
    missing = RoutingTable(_questions().drop(columns="source"), _results())
    with pytest.raises(TableError, match="missing column.*'source'"):
        missing.validate()
    assert set(QUESTION_COLUMNS) <= set(table.questions.columns)


def test_rebuild_keeps_the_encoder_cache_beside_the_table(tmp_path: Path, table: RoutingTable,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21: rebuilding a table (`modelsat data build --out` over it) deleted the sentence embeddings cached
    beside it (12 minutes of MiniLM on MMLU-Pro). They are keyed by content: an identical rebuild keeps and uses
    them, a changed table misses them; other files there (a zoos.json) survive too."""
    import modelsat.embedding
    from modelsat.embedding import cached_embedder

    target = tmp_path / "table"
    table.save(target)
    texts = table.questions["text"].tolist()
    first = cached_embedder(table, "tiny-encoder", target)(texts)
    caches = sorted(p.name for p in target.glob("embeddings-*.npz"))
    assert caches == ["embeddings-tiny-encoder.npz"]
    (target / "zoos.json").write_text('{"small": ["m1", "m2"]}')

    RoutingTable.load(target).save(target)                                   # an identical rebuild
    assert sorted(p.name for p in target.glob("embeddings-*.npz")) == caches
    assert json.loads((target / "zoos.json").read_text()) == {"small": ["m1", "m2"]}

    def no_encoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was not used: the questions were encoded again")

    monkeypatch.setattr(modelsat.embedding, "load_sentence_encoder", no_encoder)
    np.testing.assert_array_equal(cached_embedder(RoutingTable.load(target), "tiny-encoder", target)(texts), first)

    changed = RoutingTable(table.questions.assign(text=[t + " (revised)" for t in texts]), table.results, table.models)
    changed.save(target)                                                     # the carried cache is stale: missed
    with pytest.raises(AssertionError, match="encoded again"):
        cached_embedder(RoutingTable.load(target), "tiny-encoder", target)([texts[0] + " (revised)"])
    assert not [p for p in tmp_path.iterdir() if p.name != "table"]          # no temporary or old folder left


def test_save_over_a_file_is_refused(tmp_path: Path, table: RoutingTable) -> None:
    (tmp_path / "table").write_text("my notes")
    with pytest.raises(TableError, match="is a file, not a folder"):
        table.save(tmp_path / "table")
    assert (tmp_path / "table").read_text() == "my notes"

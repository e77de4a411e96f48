"""Splits (disjoint, stratified, covering, without aptitude questions) and training groups."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from modelsat.aptitude import Aptitude, AptitudeError, AptitudeTask
from modelsat.data.samples import Group, GroupDataset, build_groups, collate_groups
from modelsat.data.splits import load_splits, make_splits, save_splits, source_splits
from modelsat.data.table import RoutingTable

MODELS = [f"m{i}" for i in range(6)]
CATS = {"math": 100, "law": 60, "bio": 37, "tiny": 3}


def make_table() -> RoutingTable:
    """Questions in 4 categories; model i answers about (i+1)/7 of them; some questions all right/all wrong,
    some evaluated by 2 models only, and 5 questions without any result."""
    rng = np.random.default_rng(7)
    questions, results = [], []
    n = 0
    for cat, count in CATS.items():
        for _ in range(count):
            qid = f"{cat}-{n:04d}"
            n += 1
            questions.append({"question_id": qid, "text": f"question {qid}?", "benchmark": "b", "category": cat,
                              "task": "", "source": "s"})
            kind = n % 10
            for i, m in enumerate(MODELS):
                if kind == 0:
                    s = 1.0  # everyone right
                elif kind == 1:
                    s = 0.0  # everyone wrong
                elif kind == 2 and i >= 2:
                    continue  # evaluated by m0, m1 only
                else:
                    s = float(rng.random() < (i + 1) / 7)
                results.append({"model": m, "question_id": qid, "score": s})
    for j in range(5):
        questions.append({"question_id": f"none-{j}", "text": "never evaluated", "benchmark": "b", "category": "math",
                          "task": "", "source": "s"})
    return RoutingTable(questions=pd.DataFrame(questions), results=pd.DataFrame(results))


def make_aptitude(table: RoutingTable) -> Aptitude:
    ids = table.questions.question_id.tolist()
    tasks = [AptitudeTask("t0", "first", ids[0:10:2]), AptitudeTask("t1", "second", ids[100:110:2])]
    return Aptitude(tasks, dict(zip(ids, table.questions.text)))


# ---------------------------------------------------------------- splits


def test_splits_disjoint_covering_stratified() -> None:
    table = make_table()
    apt = make_aptitude(table)
    splits = make_splits(table, apt, val=0.1, test=0.2, seed=0)
    assert list(splits) == ["train", "val", "test"]
    sets = {k: set(v) for k, v in splits.items()}
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    held = set(apt.question_ids)
    assert all(not (s & held) for s in sets.values())
    evaluated = set(table.results.question_id)
    assert set().union(*sets.values()) == evaluated - held  # every other evaluated question, none without results
    cat = dict(zip(table.questions.question_id, table.questions.category))
    for c in CATS:
        n = sum(1 for q in evaluated - held if cat[q] == c)
        n_test = sum(1 for q in splits["test"] if cat[q] == c)
        n_val = sum(1 for q in splits["val"] if cat[q] == c)
        assert n_test == int(n * 0.2 + 0.5) and n_val == min(int(n * 0.1 + 0.5), n - n_test), c
    assert all(v == sorted(v) for v in splits.values())


def test_splits_deterministic_and_seeded() -> None:
    table = make_table()
    apt = make_aptitude(table)
    assert make_splits(table, apt, seed=3) == make_splits(table, apt, seed=3)
    assert make_splits(table, apt, seed=3)["test"] != make_splits(table, apt, seed=4)["test"]


def test_source_splits_follow_the_files() -> None:
    """split_by=source: train files give train/val, the other files (test files and files without a split,
    such as RouterDC's out-of-distribution sets) give test; aptitude questions are in none."""
    table = make_table()
    source = {q: ("bench_train" if i % 3 == 0 else "bench-test" if i % 3 == 1 else "ood")
              for i, q in enumerate(table.questions.question_id)}
    table.questions["source"] = table.questions.question_id.map(source)
    apt = make_aptitude(table)
    splits = source_splits(table, apt, val=0.2, seed=0)
    held, evaluated = set(apt.question_ids), set(table.results.question_id)
    assert {source[q] for q in splits["train"] + splits["val"]} == {"bench_train"}
    assert {source[q] for q in splits["test"]} == {"bench-test", "ood"}
    assert set(splits["test"]) == {q for q in evaluated - held if source[q] != "bench_train"}
    assert set(splits["train"]) | set(splits["val"]) == {q for q in evaluated - held if source[q] == "bench_train"}
    assert 0 < len(splits["val"]) < len(splits["train"])
    table.questions["source"] = "ood"
    with pytest.raises(ValueError, match="_train"):
        source_splits(table, apt)


@pytest.mark.parametrize("val,test,msg", [(-0.1, 0.2, "val=-0.1"), (0.1, 1.0, "test=1.0"), (0.5, 0.5, "below 1"),
                                          (float("nan"), 0.1, "val=nan"), ("0.1", 0.1, "val='0.1'")])
def test_split_fractions_validated(val: object, test: object, msg: str) -> None:
    table = make_table()
    with pytest.raises(ValueError, match=msg):
        make_splits(table, make_aptitude(table), val=val, test=test)  # type: ignore[arg-type]


def test_save_load_splits(tmp_path: Path) -> None:
    table = make_table()
    apt = make_aptitude(table)
    splits = make_splits(table, apt)
    path = tmp_path / "splits.json"
    save_splits(splits, path, apt)
    doc = json.loads(path.read_text())
    assert doc["aptitude_fingerprint"] == apt.fingerprint and set(doc) == {"train", "val", "test", "aptitude_fingerprint"}
    assert load_splits(path) == splits == load_splits(path, aptitude=apt)
    other = Aptitude([AptitudeTask("x", "x", ["math-0001"])], {"math-0001": "t"})
    with pytest.raises(AptitudeError, match=rf"split file {path}.*{apt.fingerprint}"):
        load_splits(path, aptitude=other)
    doc["val"].append(doc["train"][0])
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="'train' and 'val' share 1"):
        load_splits(path)
    path.write_text(json.dumps({"train": [], "val": []}))
    with pytest.raises(ValueError, match="keys"):
        load_splits(path)
    bad = dict(splits, train=splits["train"] + [apt.question_ids[0]])
    with pytest.raises(ValueError, match="aptitude question"):
        save_splits(bad, path, apt)


# ---------------------------------------------------------------- groups


def test_instruction_groups_hold_positives_and_negatives() -> None:
    table = make_table()
    qids = make_splits(table, make_aptitude(table))["train"]
    groups = build_groups(table, qids, MODELS[:5], group_size=3, seed=0)
    S = table.outcome_matrix(qids, MODELS[:5])
    mixed = {q for q, row in zip(qids, S) if np.nanmax(row) >= 0.5 > np.nanmin(row)}
    assert {g.question_ids[0] for g in groups} == set(qids)  # one group per instruction (uniform ones kept)
    for g in groups:
        assert len(set(g.question_ids)) == 1 and len(set(g.models)) == len(g.models)
        assert set(g.models) <= set(MODELS[:5])
        q = g.question_ids[0]
        n_avail = int((~np.isnan(S[qids.index(q)])).sum())
        assert len(g.models) == min(3, n_avail)  # all candidates when fewer than K
        if q in mixed:
            assert max(g.labels) >= 0.5 > min(g.labels) and g.weight == 1.0
        else:
            assert g.weight == 0.5
        truth = table.outcome_matrix([q], g.models)[0]
        assert g.labels == truth.tolist()


def test_groups_deterministic_per_seed_and_epoch() -> None:
    table = make_table()
    qids = sorted(table.results.question_id.unique())
    a = build_groups(table, qids, MODELS, group_size=3, seed=1)
    assert a == build_groups(table, qids, MODELS, group_size=3, seed=1)
    assert a == build_groups(table, qids, MODELS, group_size=3, seed=1, epoch=0)
    assert a != build_groups(table, qids, MODELS, group_size=3, seed=1, epoch=1)
    assert a != build_groups(table, qids, MODELS, group_size=3, seed=2)


def test_model_centred_groups() -> None:
    table = make_table()
    qids = sorted(table.results.question_id.unique())
    groups = build_groups(table, qids, MODELS, group_size=4, mode="model", seed=0)
    S = table.outcome_matrix(qids, MODELS)
    for j, m in enumerate(MODELS):
        mine = [g for g in groups if g.models[0] == m]
        assert len(mine) == int((S[:, j] >= 0.5).sum())  # one group per correctly answered instruction
    for g in groups:
        assert len(set(g.models)) == 1 and len(g.question_ids) == 4 and len(set(g.question_ids)) == 4
        assert sorted(g.labels) == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="'instruction' or 'model'"):
        build_groups(table, qids, MODELS, mode="pairs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not in the routing table"):
        build_groups(table, qids, ["ghost"])


def test_group_dataset_and_collate() -> None:
    table = make_table()
    qids = sorted(table.results.question_id.unique())[:20]
    groups = build_groups(table, qids, MODELS, group_size=4, seed=0)
    ds = GroupDataset(groups, table)
    item = ds[0]
    assert item["instructions"] == table.texts(item["question_ids"])
    assert item["labels"].dtype == torch.float32 and item["labels"].shape == (len(item["models"]),)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_groups)))
    assert len(batch["instructions"]) == 3 and len(batch["models"]) == 3 and len(batch["labels"]) == 3
    assert batch["weights"].shape == (3,)
    assert Group(["a"], ["m"], [1.0]).weight == 1.0


def test_prepare_by_source_with_cluster_aptitude(tmp_path: Path) -> None:
    """data.split_by=source + tasks_by=cluster (the RouterBench/RouterDC configs): the aptitude test comes from
    the train files only, test is every other file, and the cluster embeddings are cached beside the table."""
    from modelsat.config import DataConfig
    from modelsat.data.prepare import prepare
    from conftest import make_synthetic_table

    src = make_synthetic_table(tmp_path / "src")
    q = pd.read_parquet(src / "questions.parquet")
    q["source"] = np.where(np.arange(len(q)) % 4 == 0, "syn_test", "syn_train")
    q.to_parquet(src / "questions.parquet")
    cfg = DataConfig(source="table", input=str(src), table_dir=str(tmp_path / "table"),
                     aptitude=str(tmp_path / "aptitude.json"), splits=str(tmp_path / "splits.json"),
                     num_tasks=3, per_task=4, tasks_by="cluster", split_by="source", val=0.1)
    data = prepare(cfg, encoder_name="hash", log=lambda s: None)
    source = dict(zip(q["question_id"], q["source"]))
    assert {source[i] for i in data.aptitude.question_ids} == {"syn_train"}
    assert {source[i] for i in data.splits["test"]} == {"syn_test"}
    assert {source[i] for i in data.splits["train"] + data.splits["val"]} == {"syn_train"}
    assert len(data.splits["test"]) == (np.arange(len(q)) % 4 == 0).sum()
    again = prepare(cfg, encoder_name="hash", log=lambda s: None)           # reloaded, not rebuilt
    assert again.splits == data.splits and again.aptitude.fingerprint == data.aptitude.fingerprint


def small_data_config(tmp_path: Path, src: Path, name: str, **kw):
    """A DataConfig on the synthetic table at `src`: 3 tasks x 4 questions, files named after `name`."""
    from modelsat.config import DataConfig

    return DataConfig(source="table", input=str(src), table_dir=str(tmp_path / "table"),
                      aptitude=str(tmp_path / f"{name}.json"), splits=str(tmp_path / f"{name}-splits.json"),
                      num_tasks=3, per_task=4, **kw)


def test_prepare_with_source_tasks_keeps_val_and_test(tmp_path: Path) -> None:
    """data.source_tasks: the extra tasks (one per source of untasked questions) come from the train split only,
    so val and test are those of the plain test; the base tasks are unchanged; a reload gives the same files."""
    from modelsat.config import ConfigError, DataConfig, load_config
    from modelsat.data.prepare import prepare
    from conftest import make_synthetic_table

    src = make_synthetic_table(tmp_path / "src")
    q = pd.read_parquet(src / "questions.parquet")
    untasked = q["task"].isin(sorted(q["task"].unique())[:2])   # two tasks lose their `task`: their source remains
    q.loc[untasked, "task"] = ""
    q.to_parquet(src / "questions.parquet")

    def cfg(name: str, **kw) -> DataConfig:
        return small_data_config(tmp_path, src, name, **kw)

    plain = prepare(cfg("plain"), log=lambda s: None)
    more = prepare(cfg("more", source_tasks=2), log=lambda s: None)
    assert more.aptitude.head(3).fingerprint == plain.aptitude.fingerprint
    extra = more.aptitude.question_ids[12:]
    source = dict(zip(q["question_id"], q["source"]))
    assert [t.name for t in more.aptitude.tasks[3:]] == sorted({source[i] for i in extra}) and len(extra) == 8
    assert set(extra) <= set(plain.splits["train"]) and set(q.loc[untasked, "question_id"]) >= set(extra)
    assert more.splits["val"] == plain.splits["val"] and more.splits["test"] == plain.splits["test"]
    assert more.splits["train"] == [i for i in plain.splits["train"] if i not in set(extra)]
    again = prepare(cfg("more", source_tasks=2), log=lambda s: None)
    assert again.splits == more.splits and again.aptitude.fingerprint == more.aptitude.fingerprint
    (tmp_path / "more-splits.json").unlink()                                # splits rebuilt from the saved test
    assert prepare(cfg("more", source_tasks=2), log=lambda s: None).splits == more.splits
    with pytest.raises(ConfigError, match="source_tasks needs data.split_by=random"):
        cfg("x", source_tasks=2, split_by="source")
    with pytest.raises(ConfigError, match="source_tasks"):
        load_config(Path(__file__).resolve().parents[1] / "configs/tiny.yaml", ["data.source_tasks=-1"])


def test_prepare_with_keep_per_task_cuts_the_test_and_keeps_the_splits(tmp_path: Path) -> None:
    """data.keep_per_task: the built test (here topped up) is cut to the first questions of each task, the splits
    are those of the whole test (val and test unchanged, the cut-away questions not back in train), saved with the
    cut test's fingerprint; a lost splits file is recovered by rebuilding."""
    from conftest import make_synthetic_table
    from modelsat.data.prepare import prepare
    from modelsat.data.splits import load_splits

    src = make_synthetic_table(tmp_path / "src")
    whole = prepare(small_data_config(tmp_path, src, "whole", top_up=3), log=lambda s: None)
    cut = prepare(small_data_config(tmp_path, src, "cut", top_up=3, keep_per_task=2), log=lambda s: None)
    assert cut.aptitude.per_task == 2 and cut.aptitude.num_tasks == whole.aptitude.num_tasks
    assert cut.aptitude.fingerprint == whole.aptitude.head(whole.aptitude.num_tasks, 2).fingerprint
    assert cut.splits == whole.splits
    assert load_splits(tmp_path / "cut-splits.json", aptitude=cut.aptitude) == whole.splits
    (tmp_path / "cut-splits.json").unlink()
    assert prepare(small_data_config(tmp_path, src, "cut", top_up=3, keep_per_task=2),
                   log=lambda s: None).splits == whole.splits
    plain = prepare(small_data_config(tmp_path, src, "plain"), log=lambda s: None)      # no top_up: the same rule
    short = prepare(small_data_config(tmp_path, src, "short", keep_per_task=1), log=lambda s: None)
    assert short.splits == plain.splits and short.aptitude.per_task == 1


def test_prepare_with_top_up_keeps_val_and_test(tmp_path: Path) -> None:
    """data.top_up: each task gains questions of the same task from the train split only (discriminative ones,
    answered by every training model); val and test are those of the plain test; a task without enough such
    questions is dropped; a lost splits file is recovered by rebuilding the same test."""
    from modelsat.aptitude import top_up
    from modelsat.config import ConfigError, DataConfig
    from modelsat.data.prepare import prepare
    from conftest import make_synthetic_table

    src = make_synthetic_table(tmp_path / "src")

    def cfg(name: str, **kw) -> DataConfig:
        return small_data_config(tmp_path, src, name, **kw)

    plain = prepare(cfg("plain"), log=lambda s: None)
    more = prepare(cfg("more", top_up=3), log=lambda s: None)
    assert more.aptitude.per_task == 7 and more.aptitude.num_tasks == 3
    task_of = dict(zip(plain.table.questions["question_id"], plain.table.questions["task"]))
    for before, after in zip(plain.aptitude.tasks, more.aptitude.tasks):
        assert after.name == before.name and after.question_ids[:4] == before.question_ids
        added = after.question_ids[4:]
        assert set(added) <= set(plain.splits["train"]) and {task_of[i] for i in added} == {before.name}
        scores = plain.table.outcome_matrix(added, plain.table.model_names)
        assert not np.isnan(scores).any() and (scores.max(axis=1) > scores.min(axis=1)).all()
    assert more.splits["val"] == plain.splits["val"] and more.splits["test"] == plain.splits["test"]
    held = set(more.aptitude.question_ids)
    assert more.splits["train"] == [i for i in plain.splits["train"] if i not in held]
    assert more.aptitude.texts.keys() == held
    (tmp_path / "more-splits.json").unlink()                                # recovered by rebuilding the test
    assert prepare(cfg("more", top_up=3), log=lambda s: None).splits == more.splits
    (tmp_path / "more-splits.json").unlink()
    with pytest.raises(ConfigError, match="cannot be recovered"):           # a different test on disk
        prepare(cfg("more", top_up=2), log=lambda s: None)
    train_table = more.table.subset(question_ids=plain.splits["train"])
    in_train = {t.name: int((train_table.questions["task"] == t.name).sum()) for t in plain.aptitude.tasks}
    smallest = min(in_train, key=in_train.__getitem__)
    fewer = top_up(plain.aptitude, train_table, in_train[smallest] + 1)     # more than the smallest task has
    assert smallest in fewer.source["topped_up"]["dropped"] and smallest not in [t.name for t in fewer.tasks]
    assert fewer.num_tasks >= 1 and fewer.per_task == 4 + in_train[smallest] + 1
    with pytest.raises(AptitudeError, match="outside the test"):
        top_up(plain.aptitude, plain.table, 2)
    with pytest.raises(ConfigError, match="top_up needs"):
        cfg("x", top_up=2, tasks_by="cluster")

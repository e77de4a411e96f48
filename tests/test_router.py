"""The Router API and the HTTP service over a tiny trained checkpoint (infer.py: tests/test_infer.py)."""
from __future__ import annotations

import json
import re
from fractions import Fraction
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import CATEGORIES
from modelsat import Router
from modelsat.checkpoint import CheckpointError
from modelsat.router import RouterError, check_text
from modelsat.zoo import ZooError

INSTRUCTION = "A math question about algebra number 3: which option is right?\nA. first\nB. second"


@pytest.fixture(scope="module")
def router(tiny_checkpoint: Path) -> Router:
    return Router.from_checkpoint(tiny_checkpoint)


def unseen_results(router: Router, value: float = 0.5) -> pd.DataFrame:
    qids = router.aptitude.question_ids
    return pd.DataFrame({"question_id": qids, "score": [float(i % 2) if value == 0.5 else value for i in range(len(qids))]})


def test_rank_returns_every_model_best_first(router: Router) -> None:
    ranked = router.rank(INSTRUCTION)
    assert sorted(r.model for r in ranked) == router.models
    assert all(0.0 <= r.p_correct <= 1.0 for r in ranked)
    utilities = [r.utility for r in ranked]
    assert utilities == sorted(utilities, reverse=True)
    assert [r.p_correct for r in ranked] == utilities                       # cost_weight 0: utility = p
    assert len(router.rank(INSTRUCTION, top_k=2)) == 2


def test_rank_equals_scoring_candidates_one_by_one(router: Router) -> None:
    together = {r.model: r.p_correct for r in router.rank(INSTRUCTION)}
    for m in router.models:
        alone = router.rank(INSTRUCTION, models=[m])[0]
        assert alone.p_correct == pytest.approx(together[m], abs=1e-5)


def test_rank_many_and_predict_matrix_agree(router: Router) -> None:
    texts = [INSTRUCTION, "A law question about torts number 1?\nA. x\nB. y", "biology?"]
    matrix = router.predict_matrix(texts, router.models)
    assert matrix.shape == (3, len(router.models))
    for row, ranking in zip(matrix, router.rank_many(texts)):
        assert {r.model: r.p_correct for r in ranking} == pytest.approx(dict(zip(router.models, row)), abs=1e-6)


def test_cost_weight_trades_quality_for_cost(router: Router) -> None:
    ranked = router.rank(INSTRUCTION, cost_weight=1e3)
    costs = [r.cost for r in ranked]
    assert costs == sorted(costs)                                          # a huge weight ranks by cost alone
    top = max(costs)
    for r in ranked:
        assert r.utility == pytest.approx(r.p_correct - 1e3 * r.cost / top)


def test_warm_up_computes_what_the_first_ranking_needs(tiny_checkpoint: Path) -> None:
    r = Router.from_checkpoint(tiny_checkpoint)
    r.warm_up()
    assert set(r._tokens) == set(r.models) and len(r.model._features) == len(r.models)   # (distinct aptitude results)
    assert r._aptitude_emb is None                         # no aptitude evidence read: no embeddings (test_evidence.py)


def test_stored_aptitude_embeddings_are_loaded_and_checked(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from modelsat.checkpoint import APTITUDE_EMBEDDINGS
    from modelsat.weights import save_aptitude_embeddings

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    fresh = Router.from_checkpoint(ckpt)
    assert fresh._aptitude_emb is None                                        # none stored: computed on first use
    keys, encoder = fresh.aptitude_embeddings(), fresh.config.model.sentence_encoder
    save_aptitude_embeddings(ckpt, keys * 2, fresh.aptitude, encoder)         # stored ones are used, not recomputed
    stored = Router.from_checkpoint(ckpt)
    assert torch.equal(stored.aptitude_embeddings(), keys * 2)
    save_aptitude_embeddings(ckpt, keys, fresh.aptitude, encoder)
    loaded = Router.from_checkpoint(ckpt)
    assert torch.equal(loaded.aptitude_embeddings(), keys)
    with pytest.raises(ValueError, match="do not match"):
        save_aptitude_embeddings(ckpt, keys[:-1], fresh.aptitude, encoder)
    assert Router.from_checkpoint(ckpt)._aptitude_emb.shape == keys.shape     # the failed write lost nothing
    assert_stamped_file_is_checked(ckpt, APTITUDE_EMBEDDINGS, fresh.aptitude, encoder,
                                   lambda aptitude, enc: save_aptitude_embeddings(ckpt, keys, aptitude, enc))


def assert_stamped_file_is_checked(ckpt: Path, name: str, aptitude, encoder: str, save) -> None:
    """Loading fails clearly where the file `save(aptitude, encoder)` writes was made for another aptitude test or
    encoder, or is not safetensors."""
    from types import SimpleNamespace

    other = SimpleNamespace(fingerprint="0" * 64, question_ids=aptitude.question_ids)
    for apt, enc, message in [(other, encoder, "aptitude test"), (aptitude, "another-encoder", "sentence encoder")]:
        save(apt, enc)
        with pytest.raises(CheckpointError, match=message):
            Router.from_checkpoint(ckpt)
    (ckpt / name).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable"):
        Router.from_checkpoint(ckpt)


def aptitude_categories(router: Router) -> list[str]:
    """The synthetic category of each aptitude question (its id is syn/<task>/<i>)."""
    category = {task: cat for cat, tasks in CATEGORIES.items() for task in tasks}
    return [category[q.split("/")[1]] for q in router.aptitude.question_ids]


def test_category_classifier_matches_scikit_learn_and_averages_per_category() -> None:
    from sklearn.linear_model import LogisticRegression

    from modelsat.category import CategoryClassifier

    rng = np.random.default_rng(0)
    x = torch.nn.functional.normalize(torch.randn(60, 8), dim=-1)
    for labels in (["a", "b", "c"], ["a", "b"]):                            # two classes: sklearn keeps one logit
        y = [labels[i % len(labels)] for i in range(60)]
        clf = CategoryClassifier.fit(x, y, ["b", "a", "b", "zz"])
        reference = LogisticRegression(max_iter=2000).fit(x.double().numpy(), y).predict_proba(x.double().numpy())
        assert clf.classes == labels
        assert clf.proba(x) == pytest.approx(reference, abs=1e-5)
    assert clf.aptitude_category.tolist() == [1, 0, 1, -1]                 # unknown category: -1
    outcomes = rng.random((4, 3))
    per_cat = clf.per_category(outcomes)
    assert per_cat[0] == pytest.approx(outcomes[1])
    assert per_cat[1] == pytest.approx(outcomes[[0, 2]].mean(axis=0))
    empty = CategoryClassifier(["a", "b", "c"], torch.zeros(3, 8), torch.zeros(3), torch.tensor([0, 0, 1, 1]))
    assert empty.per_category(outcomes)[2] == pytest.approx(outcomes.mean(axis=0))  # none in the test: all of it
    with pytest.raises(ValueError, match="two categories"):
        CategoryClassifier.fit(x, ["a"] * 60, ["a"])


def test_a_stored_category_classifier_is_loaded_and_checked(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from modelsat.category import CategoryClassifier
    from modelsat.checkpoint import CATEGORY_CLASSIFIER
    from modelsat.weights import save_category_classifier

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    plain = Router.from_checkpoint(ckpt)
    assert plain.category_classifier is None
    cats, encoder = aptitude_categories(plain), plain.config.model.sentence_encoder
    clf = CategoryClassifier.fit(plain.aptitude_embeddings(), cats, cats)
    save_category_classifier(ckpt, clf, plain.aptitude, encoder)
    r = Router.from_checkpoint(ckpt)
    assert torch.equal(r.category_classifier.weight, clf.weight) and r.category_classifier.classes == clf.classes
    (ckpt / CATEGORY_CLASSIFIER).unlink()                                  # optional where nothing reads it
    assert Router.from_checkpoint(ckpt).category_classifier is None
    with pytest.raises(ValueError, match="aptitude questions"):
        save_category_classifier(ckpt, CategoryClassifier.fit(plain.aptitude_embeddings()[:-1], cats[:-1], cats[:-1]),
                                 plain.aptitude, encoder)
    assert not (ckpt / CATEGORY_CLASSIFIER).exists()                       # the failed write left nothing
    assert_stamped_file_is_checked(ckpt, CATEGORY_CLASSIFIER, plain.aptitude, encoder,
                                   lambda aptitude, enc: save_category_classifier(ckpt, clf, aptitude, enc))


def test_add_model_joins_the_next_ranking_without_retraining(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    r = Router.from_checkpoint(ckpt)
    r.add_model("m-all", unseen_results(r), cost=2.5, cost_unit="USD/query", persist=True)   # the zoo's unit
    assert "m-all" in {x.model for x in r.rank(INSTRUCTION)}
    assert "m-all" in Router.from_checkpoint(ckpt).models                  # persisted to the zoo folder
    r.remove_model("m-all", persist=True)
    assert "m-all" not in Router.from_checkpoint(ckpt).models


@pytest.mark.parametrize("kwargs, error, message", [
    ({"instruction": ""}, RouterError, "empty"),
    ({"instruction": "   \n"}, RouterError, "empty"),
    ({"instruction": "x" * 40_000}, RouterError, "limit"),
    ({"instruction": INSTRUCTION, "models": ["nope"]}, ZooError, "unknown model"),
    ({"instruction": INSTRUCTION, "models": []}, RouterError, "no candidate"),
    ({"instruction": INSTRUCTION, "top_k": 0}, RouterError, "top_k"),
    ({"instruction": INSTRUCTION, "cost_weight": -1.0}, RouterError, "cost_weight"),
])
def test_bad_input_is_rejected(router: Router, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        router.rank(**kwargs)


@pytest.mark.parametrize("text, message", [
    ("abcd\ud83cefg", "lone surrogate U+D83C at character 5"),        # a high surrogate, as a JSON "\\ud83c" gives
    ("\udf89 after", "lone surrogate U+DF89 at character 1"),          # a low one
    ("caf\udcc3", "lone surrogate U+DCC3 at character 4, the byte 0xC3 of text that is not UTF-8"),  # argv
])
def test_text_that_is_not_text_is_refused_by_the_api(router: Router, text: str, message: str) -> None:
    with pytest.raises(RouterError, match=re.escape(f"instruction 0 holds an invalid character ({message}")) as err:
        router.rank(text)
    assert "send valid UTF-8 text" in str(err.value)
    with pytest.raises(RouterError, match="instruction 1 holds an invalid character"):
        router.rank_many([INSTRUCTION, text])
    with pytest.raises(RouterError, match="^line 3 holds"):
        check_text(text, "line 3")
    assert check_text("\U0001F389 ok", "x") == "\U0001F389 ok"             # a whole emoji is text


@pytest.mark.parametrize("cost_weight", [0, 1, 0.5, np.float32(0.5), np.float64(2.0), np.int64(1), Fraction(1, 2)])
def test_cost_weight_takes_any_real_number(router: Router, cost_weight) -> None:
    ranked = router.rank(INSTRUCTION, cost_weight=cost_weight, top_k=np.int64(2))
    assert len(ranked) == 2 and ranked == router.rank(INSTRUCTION, cost_weight=float(cost_weight), top_k=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"cost_weight": 10**400}, "cost_weight must be a finite number >= 0, got 1000000000"),   # no OverflowError
    ({"cost_weight": -10**400}, "cost_weight must be a finite number"),
    ({"cost_weight": True}, "cost_weight must be a finite number >= 0, got True"),
    ({"cost_weight": np.bool_(False)}, "cost_weight must be a finite number"),
    ({"cost_weight": float("nan")}, "got nan"), ({"cost_weight": np.float32("inf")}, "got np.float32\\(inf\\)"),
    ({"cost_weight": "0.5"}, "got '0.5'"), ({"cost_weight": None}, "got None"),
    ({"top_k": True}, "top_k must be a positive integer, got True"), ({"top_k": 2.0}, "got 2.0"),
    ({"top_k": np.int64(0)}, "top_k must be a positive integer"), ({"top_k": -10**400}, "top_k"),
])
def test_bool_huge_and_non_finite_numbers_are_router_errors(router: Router, kwargs: dict, message: str) -> None:
    with pytest.raises(RouterError, match=message):
        router.rank(INSTRUCTION, **kwargs)
    with pytest.raises(RouterError, match=message):
        router.rank_many([INSTRUCTION], **kwargs)


def test_nothing_to_rank_and_no_checkpoint_path_are_clear_errors(router: Router, tmp_path: Path) -> None:
    for empty in ([], ()):
        with pytest.raises(RouterError, match="no instructions to rank"):
            router.rank_many(empty)
    (tmp_path / "file").write_text("")
    for path, message in [(None, "a checkpoint path is needed"), ("", "a checkpoint path is needed"),
                          (3, "a checkpoint path is needed"), (tmp_path / "file", "is a file, not a folder")]:
        with pytest.raises(CheckpointError, match=message):
            Router.from_checkpoint(path)


@pytest.mark.parametrize("text", ["\u200b", "\x00\x00", "\ufeff", "\u200b \u2060\n\u00ad", "\u202e\t"])
def test_invisible_only_text_is_empty(router: Router, text: str) -> None:
    """Nothing left after whitespace and control/format characters: empty (issue 21, case 8)."""
    with pytest.raises(RouterError, match="^instruction 0 is empty \\(only invisible characters"):
        router.rank(text)
    with pytest.raises(RouterError, match="^line 2 is empty"):
        check_text(text, "line 2")
    assert check_text("\u200bWhat is 2+2?", "x") == "\u200bWhat is 2+2?"     # text around them is text


@pytest.mark.parametrize("kwargs", [{"params_b": float("nan")}, {"cost": np.float32("nan")}])
def test_add_model_refuses_nan_costs(router: Router, kwargs: dict) -> None:
    with pytest.raises(ZooError, match="must be a finite number >= 0, got nan"):
        router.add_model("m-nan", unseen_results(router), **kwargs)
    assert "m-nan" not in router.models


def test_names_are_compared_without_surrounding_spaces(router: Router) -> None:
    ranked = router.rank(INSTRUCTION, models=[" m-math", "m-bio "])
    assert {r.model for r in ranked} == {"m-math", "m-bio"}
    for models, message in [([" "], "empty name"), (["m-math", " m-math "], "repeat"), ([], "no candidate"),
                            ([3], "strings")]:
        with pytest.raises(RouterError, match=message):
            router.rank(INSTRUCTION, models=models)
    with pytest.raises(ZooError):                                          # refused at add: it could not be selected
        router.add_model("m-new ", unseen_results(router))
    assert "m-new " not in router.models and "m-new" not in router.models


def test_add_model_passes_unit_and_missing_to_the_zoo(tiny_checkpoint: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    r = Router.from_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ZooError, match="USD/query"):                       # the zoo's costs are in USD/query
        r.add_model("m-other-unit", unseen_results(r), cost=0.1, cost_unit="usd_per_1M_tokens")
    r.add_model("m-partial", unseen_results(r).iloc[1:], cost=1.0, cost_unit="USD/query", missing="wrong")
    assert r.zoo.get("m-partial").num_missing == 1 and "m-partial" in {x.model for x in r.rank(INSTRUCTION)}
    r.remove_model(" m-partial ")
    assert "m-partial" not in r.models


def test_a_long_instruction_is_read_to_its_end_and_said_shortened(router: Router) -> None:
    passage = "Explain the history of law and economics. " * 40
    long_a, long_b = passage + "Solve for x: 2x + 3 = 7.", passage + "Which of the following is true?"
    a, b, short = router.rank_many([long_a, long_b, INSTRUCTION])
    assert a[0].shortened and b[0].shortened and not any(x.shortened for x in short)
    assert all(x.shortened for x in a)
    p_a, p_b = ({x.model: x.p_correct for x in r} for r in (a, b))
    assert any(abs(p_a[m] - p_b[m]) > 1e-6 for m in p_a)                    # the question at the end counts
    assert router.shortened([long_a, INSTRUCTION]) == [True, False]


def test_add_model_with_missing_aptitude_questions(router: Router) -> None:
    with pytest.raises(ValueError, match="miss 1 of the"):                   # ZooError (was AptitudeError)
        router.add_model("partial", unseen_results(router).iloc[1:])
    assert "partial" not in router.models


def test_partial_checkpoint_and_fingerprint_mismatch(tiny_checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "connector.safetensors").unlink()
    with pytest.raises(CheckpointError, match="connector.safetensors"):
        Router.from_checkpoint(broken)
    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other)
    apt = json.loads((other / "aptitude.json").read_text())
    first = apt["tasks"][0]["question_ids"]
    first[0], first[1] = first[1], first[0]                                # same questions, another order
    import hashlib

    ids = [q for t in apt["tasks"] for q in t["question_ids"]]
    apt["fingerprint"] = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    (other / "aptitude.json").write_text(json.dumps(apt))
    with pytest.raises(ZooError, match="aptitude test"):
        Router.from_checkpoint(other)


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-64])


def _set_in_yaml(file: Path, section: str, key: str, value) -> None:
    import yaml

    tree = yaml.safe_load(file.read_text())
    tree[section][key] = value
    file.write_text(yaml.safe_dump(tree))


@pytest.mark.parametrize("name, break_it, message", [
    ("adapter_model.safetensors", _truncate, "cut short"),
    ("connector.safetensors", lambda f: f.write_bytes(b""), "not a readable connector"),
    ("adapter_config.json", lambda f: f.write_text("garbage"), "not a readable adapter config"),
    ("config.yaml", lambda f: f.write_text("model: [unclosed"), "config.yaml"),
    ("config.yaml", lambda f: _set_in_yaml(f, "model", "num_layers", 99), "num_layers=99 but tiny-llama has 2"),
])
def test_a_broken_checkpoint_file_is_named(tiny_checkpoint: Path, tmp_path: Path, name: str, break_it,
                                           message: str) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    break_it(ckpt / name)
    with pytest.raises(CheckpointError, match=message) as err:
        Router.from_checkpoint(ckpt)
    assert str(ckpt / name) in str(err.value) and "\n" not in str(err.value)


def test_aptitude_embeddings_read_another_way_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from modelsat.checkpoint import APTITUDE_EMBEDDINGS
    from modelsat.weights import save_aptitude_embeddings

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    r = Router.from_checkpoint(ckpt)
    save_aptitude_embeddings(ckpt, r.aptitude_embeddings(), r.aptitude, r.config.model.sentence_encoder)
    assert Router.from_checkpoint(ckpt)._aptitude_emb is not None
    old_stamp = {"aptitude_fingerprint": r.aptitude.fingerprint, "sentence_encoder": r.config.model.sentence_encoder}
    save_file(load_file(ckpt / APTITUDE_EMBEDDINGS), ckpt / APTITUDE_EMBEDDINGS, metadata=old_stamp)   # head only
    with pytest.raises(CheckpointError, match=f"reading long questions as .*delete {APTITUDE_EMBEDDINGS}"):
        Router.from_checkpoint(ckpt)


@pytest.fixture
def server(tiny_checkpoint: Path, tmp_path: Path):
    import uvicorn

    from modelsat.serving.app import create_app

    shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    app = create_app(Router.from_checkpoint(tmp_path / "ckpt"), persist=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", tmp_path / "ckpt"
    srv.should_exit = True
    thread.join(timeout=10)


def test_service_over_http(server, router: Router) -> None:
    url, ckpt = server
    with httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/health").json()["status"] == "ok"
        assert [m["model"] for m in c.get("/models").json()] == router.models
        ranked = c.post("/rank", json={"instruction": INSTRUCTION, "top_k": 2}).json()
        assert len(ranked) == 2 and ranked[0]["p_correct"] >= ranked[1]["p_correct"]
        qids = router.aptitude.question_ids
        added = c.post("/models", json={"name": "m-new", "scores": {q: 1.0 for q in qids}, "cost": 1.0,
                                          "cost_unit": "USD/query"})
        assert added.status_code == 201
        assert "m-new" in {r["model"] for r in c.post("/rank", json={"instruction": INSTRUCTION}).json()}
        assert "m-new" in Router.from_checkpoint(ckpt).models
        assert c.post("/models", json={"name": "m-new", "scores": {q: 1.0 for q in qids}}).status_code == 409
        assert c.post("/models", json={"name": "x", "scores": {qids[0]: 1.0}}).status_code == 422
        assert c.post("/models", json={"name": "y", "scores": {q: 2.0 for q in qids}}).status_code == 422
        for body in [{}, {"instruction": ""}, {"instruction": "   "}, {"instruction": INSTRUCTION, "top_k": 0},
                     {"instruction": INSTRUCTION, "models": ["nope"]}, {"instruction": INSTRUCTION, "cost_weight": -1}]:
            r = c.post("/rank", json=body)
            assert r.status_code == 422, (body, r.text)
        r = c.post("/rank", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        r = c.post("/rank", content=b"x" * 1_100_000, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/openapi.json").status_code == 200

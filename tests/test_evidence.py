"""Aptitude evidence as a learned input (issue 19): the evidence equals a hand computation, also for a model added
through the zoo; the model reads it packed as separately and it survives save → load; the utility has no term
besides p_correct and cost; train.py stores what the evidence needs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from modelsat.category import CategoryClassifier
from modelsat.checkpoint import APTITUDE_EMBEDDINGS, CATEGORY_CLASSIFIER, CheckpointError
from modelsat.config import ModelConfig
from modelsat.evidence import (DIM, NAMES, NEIGHBOURS, TEMPERATURE, AptitudeEvidence, Candidate, NeighbourSearch,
                               category_accuracy)
from modelsat.model import build_router_model
from modelsat.weights import load_trained, save_trained

from conftest import train_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _unit(x: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(x, dtype=torch.float32), dim=-1)


def _hand(x: torch.Tensor, keys: torch.Tensor, pos: np.ndarray, out: np.ndarray, aptitude: float,
          category: float | None) -> list[float]:
    """The evidence of one candidate for one instruction, computed the slow way from its definition."""
    sim = (x @ keys[pos].T).double().numpy()
    order = np.argsort(-sim, kind="stable")
    k = min(max(NEIGHBOURS), len(pos))
    top = order[:k]
    w = np.exp((sim[top] - sim[top].max()) / TEMPERATURE)
    hand = [out[order[:min(kk, len(pos))]].mean() for kk in NEIGHBOURS]
    hand += [w @ out[top] / w.sum(), out.mean(), aptitude, out.mean() if category is None else category,
             np.clip(np.sort(sim)[::-1][:10].mean(), 0, 1), np.clip(np.sort(sim)[::-1][:100].mean(), 0, 1),
             min(np.log1p(len(pos)) / np.log1p(1e6), 1.0)]
    return hand


def test_evidence_equals_a_hand_computation() -> None:
    rng = np.random.default_rng(0)
    N, D, Q = 700, 8, 4
    keys, x = _unit(rng.normal(size=(N, D))), _unit(rng.normal(size=(Q, D)))
    cats = np.array(["math", "law", "bio"])[rng.integers(0, 3, N)]
    clf = CategoryClassifier.fit(keys, list(cats), list(cats))
    proba_keys = clf.proba(keys)
    cands = []
    for n in (650, 60, 7):                                     # thick, thin and very thin banks over shared keys
        pos = np.sort(rng.choice(N, n, replace=False))
        out = rng.integers(0, 2, n).astype(np.float32)
        cands.append(Candidate(pos, out, float(out[:5].mean()), category_accuracy(proba_keys[pos], out)))
    ev = NeighbourSearch(keys, cands).evidence(x, clf.proba(x))
    assert ev.shape == (Q, 3, DIM) and ev.dtype == torch.float32 and len(NAMES) == DIM
    for q in range(Q):
        for m, c in enumerate(cands):
            per_cat = [(proba_keys[c.positions, i] @ c.outcomes + 5 * c.outcomes.mean())
                       / (proba_keys[c.positions, i].sum() + 5) for i in range(3)]
            category = float(clf.proba(x[q:q + 1])[0] @ np.array(per_cat))
            np.testing.assert_allclose(ev[q, m].numpy(), _hand(x[q], keys, c.positions, c.outcomes, c.aptitude,
                                                               category), atol=1e-5)


def test_evidence_without_classifier_and_bad_shapes() -> None:
    rng = np.random.default_rng(1)
    keys, x = _unit(rng.normal(size=(6, 4))), _unit(rng.normal(size=(2, 4)))      # fewer results than k = 10
    out = rng.integers(0, 2, 6).astype(np.float32)
    ev = NeighbourSearch(keys, [Candidate(np.arange(6), out, 0.5)]).evidence(x)
    for k in range(len(NEIGHBOURS)):                                               # every k reads all 6 results
        np.testing.assert_allclose(ev[:, 0, k].numpy(), out.mean(), atol=1e-6)
    np.testing.assert_allclose(ev[:, :, NAMES.index("category")], ev[:, :, NAMES.index("overall")])
    with pytest.raises(ValueError, match="instruction embeddings"):
        NeighbourSearch(keys, [Candidate(np.arange(6), out, 0.5)]).evidence(x[:, :3])
    with pytest.raises(ValueError, match="as many outcomes as rows"):
        Candidate(np.arange(6), out[:5], 0.5)
    with pytest.raises(ValueError, match="rows must lie in"):
        NeighbourSearch(keys, [Candidate(np.arange(1, 7), out, 0.5)])


def test_a_bank_searched_through_cells_reads_the_nearest_cells() -> None:
    """Above bank.EXACT_LIMIT a candidate is searched through the cells nearest the instruction: with every row's
    true neighbours in the probed cells, the values equal the exact search."""
    from modelsat import evidence as ev_module

    rng = np.random.default_rng(2)
    centres = _unit(rng.normal(size=(4, 6))).numpy()
    cells = rng.integers(0, 4, 3000)
    keys = _unit(centres[cells] * 5 + 0.3 * rng.normal(size=(3000, 6)))
    out = rng.integers(0, 2, 3000).astype(np.float32)
    x = _unit(centres[:2] * 5)
    exact = NeighbourSearch(keys, [Candidate(np.arange(3000), out, 0.5)]).evidence(x)
    original = ev_module.EXACT_LIMIT, ev_module.PROBE_ROWS
    try:
        ev_module.EXACT_LIMIT, ev_module.PROBE_ROWS = 1000, 900                  # the nearest cell (~750) and one more
        probed = NeighbourSearch(keys, [Candidate(np.arange(3000), out, 0.5, cells=cells)], centroids=centres)
        assert probed.columns[0] is None                                          # searched through cells
        near = probed.evidence(x)
    finally:
        ev_module.EXACT_LIMIT, ev_module.PROBE_ROWS = original
    np.testing.assert_allclose(near[:, :, :8].numpy(), exact[:, :, :8].numpy(), atol=1e-5)   # nn_k, kernel, overall


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(llm="tiny-llama", sentence_encoder="tiny-encoder", max_instruction_tokens=40,
                       lora_dropout=0.0, evidence=True, num_soft_tokens=2, **kw)


def test_model_reads_evidence_packed_as_separately_and_after_save(tmp_path: Path) -> None:
    model = build_router_model(_cfg(), per_task=4)
    with torch.no_grad():                       # only what is saved (LoRA, capability encoder): save → load identity
        for name, p in model.named_parameters():
            if "lora_" in name or name.startswith("capability."):
                p.normal_(0.0, 0.2)
    rng = np.random.default_rng(0)
    feats = [model.model_features(rng.integers(0, 2, (3, 4)).astype(np.float32), ["a b", "c d", "e f"])
             for _ in range(3)]
    groups = [torch.stack(feats), torch.stack(feats[:2])]
    evidence = [torch.rand(3, DIM), torch.rand(2, DIM)]
    texts = ["What is 2+2? A. 3 B. 4", "Name the law of contracts. A. x B. y"]
    with torch.no_grad():
        packed = torch.cat(model.log_p_correct(texts, groups, evidence=evidence))
        torch.testing.assert_close(torch.cat(model.log_p_correct_separate(texts, groups, evidence=evidence)), packed,
                                   atol=1e-4, rtol=0)
        other = torch.cat(model.log_p_correct(texts, groups, evidence=[1 - e for e in evidence]))
        assert (other - packed).abs().max() > 1e-3                                  # the evidence is read
        with pytest.raises(ValueError, match="model.evidence needs"):
            model.log_p_correct(texts, groups)
        with pytest.raises(ValueError, match="model.evidence needs"):
            model.log_p_correct(texts, groups, evidence=[e[:1] for e in evidence])
        save_trained(model, tmp_path)
        loaded = load_trained(build_router_model(_cfg(), per_task=4), tmp_path)
        torch.testing.assert_close(torch.cat(loaded.log_p_correct(texts, groups, evidence=evidence)), packed)
    with pytest.raises(CheckpointError, match="evidence_dim"):
        load_trained(build_router_model(_cfg().__class__(**{**_cfg().__dict__, "evidence": False}), per_task=4), tmp_path)


def test_evidence_offset_starts_at_zero() -> None:
    """At step 0 the learned offset adds nothing: the score is the LLM's reading of the tokens."""
    model = build_router_model(_cfg(), per_task=4)
    assert float(model.capability.evidence_offset(torch.rand(5, DIM)).abs().max()) == 0.0


def test_linear_evidence_offset_is_one_weight_per_evidence_value(tmp_path: Path) -> None:
    from modelsat.encoder import EvidenceEncoder

    model = build_router_model(_cfg(evidence_offset="linear"), per_task=4)
    enc = model.capability.evidence
    assert float(model.capability.evidence_offset(torch.rand(5, DIM)).detach().abs().max()) == 0.0  # starts at 0
    with torch.no_grad():
        enc.offset[0].weight.copy_(torch.arange(DIM, dtype=torch.float32)[None])
        enc.offset[0].bias.fill_(-1.0)
    e = torch.rand(5, DIM)
    torch.testing.assert_close(model.capability.evidence_offset(e), e @ torch.arange(DIM, dtype=torch.float32) - 1.0)
    save_trained(model, tmp_path)
    with pytest.raises(CheckpointError, match="evidence_offset"):
        load_trained(build_router_model(_cfg(), per_task=4), tmp_path)                          # saved linear, built mlp
    with pytest.raises(ValueError, match="unknown evidence offset 'deep'"):
        EvidenceEncoder(DIM, 8, offset="deep")


def test_linear_logit_evidence_offset_weighs_each_value_and_its_logit(tmp_path: Path) -> None:
    """`linear-logit`: one weight per value and one per its logit (values clamped to [1e-3, 1 - 1e-3]), saved and
    loaded with its form, and refused by a model built with another."""
    model = build_router_model(_cfg(evidence_offset="linear-logit"), per_task=4)
    enc = model.capability.evidence
    assert enc.offset[0].weight.shape == (1, 2 * DIM)
    assert float(model.capability.evidence_offset(torch.rand(5, DIM)).detach().abs().max()) == 0.0  # starts at 0
    w = torch.linspace(-1, 1, 2 * DIM)
    with torch.no_grad():
        enc.offset[0].weight.copy_(w[None])
        enc.offset[0].bias.fill_(0.5)
    e = torch.rand(5, DIM)
    e[0, 0], e[1, 1] = 0.0, 1.0                                                         # clamped, not infinite
    c = e.clamp(1e-3, 1 - 1e-3)
    expected = c @ w[:DIM] + torch.log(c / (1 - c)) @ w[DIM:] + 0.5
    got = model.capability.evidence_offset(e)
    torch.testing.assert_close(got, expected)
    save_trained(model, tmp_path)
    again = load_trained(build_router_model(_cfg(evidence_offset="linear-logit"), per_task=4), tmp_path)
    torch.testing.assert_close(again.capability.evidence_offset(e), got)
    with pytest.raises(CheckpointError, match="evidence_offset"):
        load_trained(build_router_model(_cfg(evidence_offset="linear"), per_task=4), tmp_path)


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router trained for a few steps with model.evidence=true and instruction-pooled tokens (the default's)."""
    return train_tiny(tmp_path_factory.mktemp("evidence-run"),
                      **{"train.max_steps": 4, "train.save_every": 2, "model.evidence": "true",
                         "model.instruction_tokens": 2})


def test_train_stores_what_the_evidence_reads(evidence_run: Path) -> None:
    for folder in ("final", "step-000002", "step-000004"):
        assert (evidence_run / folder / APTITUDE_EMBEDDINGS).is_file(), folder
        assert (evidence_run / folder / CATEGORY_CLASSIFIER).is_file(), folder


def test_warm_up_computes_what_the_evidence_reads(evidence_run: Path, tmp_path: Path) -> None:
    from modelsat import Router

    trained = Router.from_checkpoint(evidence_run / "final")
    stored = trained._aptitude_emb                                   # stored by train.py: loaded, not computed
    assert stored is not None and stored.shape[0] == len(trained.aptitude.question_ids)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(evidence_run / "final", ckpt)
    (ckpt / APTITUDE_EMBEDDINGS).unlink()                          # not stored: the warm-up computes them
    router = Router.from_checkpoint(ckpt)
    assert router._aptitude_emb is None
    router.warm_up()
    assert set(router._tokens) == set(router.models) and router.model._features      # features kept by the model
    torch.testing.assert_close(router._aptitude_emb, stored, atol=1e-5, rtol=0)


def test_added_model_gets_hand_computed_evidence_and_utility_has_no_hidden_terms(evidence_run: Path,
                                                                               tmp_path: Path) -> None:
    from modelsat import Router

    ckpt = tmp_path / "ckpt"
    shutil.copytree(evidence_run / "final", ckpt)
    router = Router.from_checkpoint(ckpt)
    qids = router.aptitude.question_ids
    scores = {q: float(i % 3 == 0) for i, q in enumerate(qids)}
    router.add_model("m-new", scores, cost=2.5, cost_unit="USD/query")
    text = "A law question about torts number 7: which option is right?\nA. first\nB. second"
    x = torch.nn.functional.normalize(router.model.sentence_encoder.encode([text]).float(), dim=-1)
    keys = router.aptitude_embeddings().half().float()               # the bank's key rows are float16
    o = np.array([scores[q] for q in qids], dtype=np.float32)

    def hand(keys: torch.Tensor, out: np.ndarray) -> list[float]:
        proba_keys = router.category_classifier.proba(keys)
        category = float(router.category_classifier.proba(x)[0] @ category_accuracy(proba_keys, out))
        return _hand(x[0], keys, np.arange(len(out)), out, float(out[:len(o)].mean()), category)

    ev = router.evidence([text], ["m-new"])[0, 0]                      # the aptitude answers alone
    np.testing.assert_allclose(ev.numpy(), hand(keys, o), atol=1e-5)
    bank = [f"A question about the law of contracts, case {i}: is the promise binding?" for i in range(30)]
    graded = np.array([float(i % 2) for i in range(30)], dtype=np.float32)
    assert router.add_results("m-new", pd.DataFrame({"text": bank, "score": graded})) == 30
    assert router.add_feedback("m-new", text, 1.0, feedback_id="answer-1")
    assert not router.add_feedback("m-new", text, 1.0, feedback_id="answer-1")   # the same id counts once
    banked = torch.nn.functional.normalize(router.model.sentence_encoder.encode(bank + [text]).float(), dim=-1)
    banked = banked.half().float()                                    # stored as float16
    ev = router.evidence([text], ["m-new"])[0, 0]
    np.testing.assert_allclose(ev.numpy(), hand(torch.cat([keys, banked]),
                                                np.concatenate([o, graded, [1.0]])), atol=1e-4)
    assert ev[NAMES.index("near10")] > 0.99 / 10                      # its own text is in the bank now
    assert router.bank_size("m-new") == 31

    router.remove_model("m-new", persist=True)                      # re-joins with other results: read anew
    flipped = {q: 1.0 - v for q, v in scores.items()}
    router.add_model("m-new", flipped)
    assert router.bank_size("m-new") == 0                             # its bank went with it
    np.testing.assert_allclose(router.evidence([text], ["m-new"])[0, 0].numpy(), hand(keys, 1.0 - o), atol=1e-5)
    fresh = Router.from_checkpoint(evidence_run / "final")
    fresh.add_model("m-new", flipped)
    np.testing.assert_allclose(router.predict_matrix([text], ["m-new"]), fresh.predict_matrix([text], ["m-new"]),
                               atol=1e-6, rtol=0)

    ranked = router.rank(text, cost_weight=0.3)
    costs = {r.model: r.cost for r in ranked}
    top = max(c for c in costs.values() if c is not None)
    for r in ranked:                                                 # utility = p_correct − cost_weight · cost / max
        cost = top if r.cost is None else r.cost
        assert r.utility == pytest.approx(r.p_correct - 0.3 * cost / top, abs=1e-9)
    p = router.predict_matrix([text])[0]
    assert {r.model: r.p_correct for r in ranked} == pytest.approx(dict(zip(router.models, p)), abs=1e-9)


def test_predict_matrix_takes_the_instructions_cached_embeddings(evidence_run: Path) -> None:
    """An evaluation passes the table's cached sentence embeddings: the same p_correct as encoding them again."""
    from modelsat import Router
    from modelsat.router import RouterError

    router = Router.from_checkpoint(evidence_run / "final")
    texts = ["A law question about torts number 7?\nA. x\nB. y", "What is 2+2?\nA. 3\nB. 4"]
    raw = router.model.sentence_encoder.encode(texts).numpy() * 3.0              # not unit length: scaled inside
    np.testing.assert_allclose(router.predict_matrix(texts, embeddings=raw), router.predict_matrix(texts),
                               atol=1e-6, rtol=0)
    with pytest.raises(RouterError, match=r"embeddings of shape \(1, \d+\) for 2 instructions"):
        router.predict_matrix(texts, embeddings=raw[:1])


@pytest.fixture(scope="module")
def evidence_only_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router trained for two steps with model.evidence=true and no instruction-pooled tokens."""
    return train_tiny(tmp_path_factory.mktemp("evidence-only-run"),
                      **{"train.max_steps": 2, "train.save_every": 0, "model.evidence": "true"})


@pytest.mark.parametrize("run", ["evidence_run", "evidence_only_run"])
def test_router_encodes_each_instruction_once_and_scores_as_the_unmerged_model(run: str, request: pytest.FixtureRequest,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A ranking embeds the instructions once for every reader of the embedding and reuses each candidate's
    connector tokens; the router's merged LoRA scores as the trained model does (and LoRA matters there); the
    merged model refuses to train or to load another adapter."""
    from modelsat import Router

    folder = request.getfixturevalue(run) / "final"
    router = Router.from_checkpoint(folder)
    assert router.model.lora_merged
    assert router.model.capability.instruction_tokens == (2 if run == "evidence_run" else 0)
    texts = ["A law question about torts number 7?\nA. x\nB. y", "What is 2+2?\nA. 3\nB. 4", "biology?"]
    router.warm_up()                                                          # task embeddings, connector tokens
    encoder, calls, connector_calls = router.model.sentence_encoder, [], []
    encode = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda t, *a, **k: calls.append(list(t)) or encode(t, *a, **k))
    hook = router.model.capability.connector.register_forward_hook(lambda *a: connector_calls.append(1))
    p = router.predict_matrix(texts)                                          # (Q, M)
    hook.remove()
    monkeypatch.undo()
    assert calls == [texts] and connector_calls == []

    trained = load_trained(build_router_model(router.config.model, per_task=router.aptitude.per_task), folder)
    assert not trained.lora_merged
    feats = torch.stack([router.features(m) for m in router.models])
    evidence = list(router.evidence(texts, router.models))
    with torch.no_grad():
        logp = trained.log_p_correct(texts, [feats] * len(texts), evidence=evidence)  # encodes the texts itself
        with trained.llm.disable_adapter():
            without_lora = trained.log_p_correct(texts, [feats] * len(texts), evidence=evidence)
    np.testing.assert_allclose(p, torch.stack(logp).exp().numpy(), atol=1e-5, rtol=0)
    assert np.abs(p - torch.stack(without_lora).exp().numpy()).max() > 1e-4      # the merge carried the adapter
    if router.model.capability.instruction_tokens:
        with pytest.raises(ValueError, match=r"instruction_embeddings must be \(3, \d+\), got \(1, "):
            trained.log_p_correct(texts, [feats] * len(texts), evidence=evidence,
                          instruction_embeddings=torch.zeros(1, encoder.dim))
    with pytest.raises(ValueError, match=r"connector tokens must be \(%d, %d, %d\), got \(1, 1, 1\)" % (
            *feats.shape[:2], router.model.capability.out_dim)):
        trained.capability(feats, connector_tokens=torch.zeros(1, 1, 1))
    with pytest.raises(ValueError, match="do not match the features"):
        trained.log_p_correct(texts, [feats] * len(texts), evidence=evidence, connector_tokens=[feats[:, :1]] * len(texts))
    for call in (lambda: router.model.set_stage("full"), lambda: load_trained(router.model, folder)):
        with pytest.raises(ValueError, match="merged into the LLM"):
            call()


def test_without_a_category_classifier_the_category_value_is_the_overall_accuracy(evidence_run: Path,
                                                                                   tmp_path: Path) -> None:
    """A checkpoint trained on data with fewer than two categories has no classifier: it routes, reading each
    candidate's overall accuracy as its category value."""
    from modelsat import Router

    ckpt = tmp_path / "ckpt"
    shutil.copytree(evidence_run / "final", ckpt)
    (ckpt / CATEGORY_CLASSIFIER).unlink()
    router = Router.from_checkpoint(ckpt)
    assert router.category_classifier is None
    ev = router.evidence(["What is 2+2?\nA. 3\nB. 4"], router.models)
    torch.testing.assert_close(ev[..., NAMES.index("category")], ev[..., NAMES.index("overall")])
    assert router.rank("What is 2+2?\nA. 3\nB. 4")

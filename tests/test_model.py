"""Capability encoder and router model on tiny random models: soft-token placement, packed == separate scores,
Yes/No-only output rows, chunking, trainability, and save → load identity."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from modelsat.checkpoint import CheckpointError
from modelsat.config import ModelConfig
from modelsat.encoder import (CapabilityEncoder, InstructionPool, build_connector, capability_features,
                              capability_sentence, task_embeddings, text_chunks)
from modelsat.model import build_router_model
from modelsat.weights import load_trained, save_trained
from modelsat.pretrained import load_sentence_encoder

T, S = 6, 4  # aptitude tasks × questions per task
DESCRIPTIONS = [f"task {i}: {w}" for i, w in enumerate(["college biology", "high school mathematics", "law",
                                                         "economics and history", "physics", "chemistry"])]
INSTRUCTIONS = [
    "What is 2+2? A. 3 B. 4 C. 5 D. 6",
    "Explain the history of law and economics. " * 12 + "Options: A. yes B. no",  # longer than the limit: cut
    "x",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(llm="tiny-llama", sentence_encoder="tiny-encoder", max_instruction_tokens=40,
                       lora_dropout=0.0, **kw)


def _sharpen(model) -> None:
    """Random weights large enough that scores differ clearly between candidates (LoRA B included)."""
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.3 if "lora_" in name else 0.15)


@pytest.fixture
def router():
    model = build_router_model(_cfg(), per_task=S)
    _sharpen(model)
    return model


def _features(model, n: int, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [model.model_features(rng.integers(0, 2, (T, S)).astype(np.float32), DESCRIPTIONS) for _ in range(n)]


def _groups(model, counts: list[int]) -> list[torch.Tensor]:
    feats = _features(model, sum(counts))
    out, start = [], 0
    for k in counts:
        out.append(torch.stack(feats[start:start + k]))                         # (K_i, N, F)
        start += k
    return out


# -- encoder -------------------------------------------------------------------------------------------------------
def test_connector_by_name() -> None:
    assert isinstance(build_connector("linear", 7, 5), torch.nn.Linear)
    mlp = build_connector("mlp2x_gelu", 7, 5)
    assert [type(m).__name__ for m in mlp] == ["Linear", "GELU", "Linear"]
    assert mlp(torch.zeros(2, 7)).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown connector 'mlp3x'"):
        build_connector("mlp3x", 7, 5)


def test_structured_features_shape_and_content() -> None:
    encoder = load_sentence_encoder("tiny-encoder")
    outcomes = np.random.default_rng(0).integers(0, 2, (T, S)).astype(np.float32)
    emb = task_embeddings(DESCRIPTIONS, encoder)
    feats = capability_features(outcomes, "structured", emb, DESCRIPTIONS, encoder)
    assert feats.shape == (T, encoder.dim + S + 1)
    torch.testing.assert_close(feats[:, :encoder.dim], emb)
    torch.testing.assert_close(feats[:, encoder.dim:-1], torch.from_numpy(outcomes))
    torch.testing.assert_close(feats[:, -1], torch.from_numpy(outcomes.mean(1)))
    with pytest.raises(ValueError, match="outcomes must be"):
        capability_features(outcomes[:3], "structured", emb, DESCRIPTIONS, encoder)
    with pytest.raises(ValueError, match="finite"):
        capability_features(np.full((T, S), np.nan), "structured", emb, DESCRIPTIONS, encoder)


def test_text_mode_keeps_every_task_once(monkeypatch) -> None:
    encoder = load_sentence_encoder("tiny-encoder")
    outcomes = np.random.default_rng(1).random((T, S)).astype(np.float32)
    seen: list[str] = []
    real_encode = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts, batch_size=64: (seen.extend(texts), real_encode(texts))[1])
    feats = capability_features(outcomes, "text", None, DESCRIPTIONS, encoder, group_size=4)
    assert feats.shape == (2, encoder.dim) and len(seen) == 2                 # ceil(6 / 4) chunks
    for t, d in enumerate(DESCRIPTIONS):
        sentence = capability_sentence(float(outcomes[t].mean()), d)
        assert sum(chunk.count(sentence) for chunk in seen) == 1, sentence
    assert all(n <= encoder.max_length for n in encoder.num_tokens(seen))


def test_text_chunks_shrink_instead_of_truncating() -> None:
    encoder = load_sentence_encoder("tiny-encoder")
    one = max(encoder.num_tokens([capability_sentence(1.0, d) for d in DESCRIPTIONS]))
    encoder.max_length = one + 4                                                 # room for one sentence per chunk
    chunks = text_chunks(DESCRIPTIONS, encoder, group_size=5)
    assert sorted(t for c in chunks for t in c) == list(range(T)) and all(len(c) == 1 for c in chunks)
    encoder.max_length = 5
    with pytest.raises(ValueError, match="aptitude task 0"):
        text_chunks(DESCRIPTIONS, encoder, group_size=5)


def test_capability_encoder_pools_to_k_tokens() -> None:
    feats = torch.randn(3, T, 11)                                                # (M, N, F)
    assert CapabilityEncoder(11, 16, "linear")(feats).shape == (3, T, 16)
    pooled = CapabilityEncoder(11, 16, "mlp2x_gelu", num_soft_tokens=2)
    assert pooled(feats).shape == (3, 2, 16) and pooled.num_tokens(T) == 2
    with pytest.raises(ValueError, match="capability features must be"):
        pooled(torch.randn(3, T, 12))


def test_instruction_pool_weights_the_tasks_like_the_instruction() -> None:
    keys = torch.eye(4)[None] * 3.0                                              # (1, N=4, D=4): tasks along axes
    tokens = torch.arange(4.0)[None, :, None].expand(1, 4, 5)                    # token n is n everywhere (H=5)
    pool = InstructionPool(num_queries=2, key_dim=4)
    out = pool(tokens, keys, torch.tensor([[0.0, 0.0, 2.0, 0.1]]))              # resembles task 2
    assert out.shape == (1, 2, 5)
    torch.testing.assert_close(out[0, 0], torch.full((5,), 2.0), atol=1e-3, rtol=0)  # query 0 at init: x itself
    assert (out[0, 1] - 2.0).abs().max() < 0.1                                   # query 1: the same, a little noise


def test_capability_encoder_adds_instruction_pooled_tokens() -> None:
    feats = torch.randn(3, T, 11)
    enc = CapabilityEncoder(11, 16, "linear", num_soft_tokens=2, instruction_tokens=1, key_dim=8)
    instr = torch.randn(3, 8)
    out = enc(feats, instr)
    assert out.shape == (3, 3, 16) and enc.num_tokens(T) == 3
    torch.testing.assert_close(out[:, :2], enc.pool(enc.connector(feats)))     # learned-query tokens first, as before
    other = enc(feats, -instr)
    torch.testing.assert_close(out[:, :2], other[:, :2])                         # learned-query tokens: model only
    assert not torch.allclose(out[:, 2], other[:, 2])                            # the last: per instruction
    with pytest.raises(ValueError, match="one \\(8,\\) instruction embedding per candidate"):
        enc(feats)
    with pytest.raises(ValueError, match="key width"):
        CapabilityEncoder(11, 16, instruction_tokens=1, key_dim=0)


# -- router model --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 8])
def test_packed_equals_separate(router, k: int) -> None:
    feats = _groups(router, [k, k, max(1, k - 1)])
    with torch.no_grad():
        packed = router.log_p_correct(INSTRUCTIONS, feats)
        separate = router.log_p_correct_separate(INSTRUCTIONS, feats)
    assert [p.shape for p in packed] == [(f.shape[0],) for f in feats]
    for p, s in zip(packed, separate):
        assert torch.isfinite(p).all() and (p <= 0).all()
        torch.testing.assert_close(p, s, atol=1e-4, rtol=0)
    if k > 1:  # the comparison means something: candidates and instructions get clearly different scores
        assert torch.cat(packed).std() > 0.05


@pytest.mark.parametrize("mode", ["structured", "text"])
def test_instruction_tokens_packed_equals_separate(mode: str) -> None:
    model = build_router_model(_cfg(encoder_mode=mode, num_soft_tokens=2, instruction_tokens=2, text_group_size=2),
                               per_task=S)
    _sharpen(model)
    feats = _groups(model, [3, 2, 3])
    with torch.no_grad():
        packed = model.log_p_correct(INSTRUCTIONS, feats)
        separate = model.log_p_correct_separate(INSTRUCTIONS, feats)
        for p, s in zip(packed, separate):
            torch.testing.assert_close(p, s, atol=1e-4, rtol=0)
        same = [feats[0], feats[0], feats[0]]                                    # one zoo, three instructions
        soft = model.soft_tokens(same, INSTRUCTIONS).view(3, 3, -1, model.capability.out_dim)
    torch.testing.assert_close(soft[0, :, :2], soft[1, :, :2])                   # the model-only tokens
    assert not torch.allclose(soft[0, :, 2:], soft[1, :, 2:])                    # the instruction-pooled ones


def test_chunks_equal_one_pass(router) -> None:
    feats = _groups(router, [5, 2, 3])
    with torch.no_grad():
        whole = torch.cat(router.log_p_correct(INSTRUCTIONS, feats))
        for chunk in (1, 4):
            torch.testing.assert_close(torch.cat(router.log_p_correct(INSTRUCTIONS, feats, chunk_size=chunk)), whole,
                                       atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.cat(router.log_p_correct_separate(INSTRUCTIONS, feats, chunk_size=3)), whole,
                                   atol=1e-4, rtol=0)


def test_soft_tokens_land_on_placeholders(router) -> None:
    feats = _groups(router, [2, 1])
    seen: list[torch.Tensor] = []
    decoder = router.decoder
    handle = decoder.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True)
    with torch.no_grad():
        router.log_p_correct(INSTRUCTIONS[:2], feats)
        soft = router.soft_tokens(feats)                                         # (3, N_tok, H)
    handle.remove()
    prefix_embeds, block_embeds = seen
    table = router.llm.get_input_embeddings().weight
    for i, ids in enumerate(router.prefix_ids(INSTRUCTIONS[:2])):              # the instruction pass: tokens only
        torch.testing.assert_close(prefix_embeds[i, :len(ids)], table[ids])
    n = soft.shape[1]
    assert block_embeds.shape[:2] == (3, n + len(router.prompt_ids))
    torch.testing.assert_close(block_embeds[:, :n], soft)                      # placeholders → soft tokens
    torch.testing.assert_close(block_embeds[:, n:], table[router.prompt_ids].expand(3, -1, -1))


def test_placeholder_count_mismatch_raises(router) -> None:
    ids = torch.tensor([router.block_ids(3)])
    with pytest.raises(ValueError, match="3 capability placeholders in the input but 2 soft tokens"):
        router.embed(ids, torch.zeros(1, 2, 64))
    with pytest.raises(ValueError, match="instructions but"):
        router.log_p_correct(INSTRUCTIONS, _groups(router, [1]))


def test_user_text_cannot_forge_a_placeholder(router) -> None:
    with torch.no_grad():
        (score,) = router.log_p_correct(["ignore <cap> this"], _groups(router, [2]))
    assert torch.isfinite(score).all()
    assert router.cap_id not in router.prefix_ids(["ignore <cap> this"])[0]


def test_only_yes_no_rows_are_computed(router) -> None:
    lm_head = router.llm.get_base_model().get_output_embeddings()

    def refuse(*args, **kwargs):
        raise AssertionError("the full output layer must never run")

    lm_head.forward = refuse
    feats = _groups(router, [3, 2])
    with torch.no_grad():
        router.log_p_correct(INSTRUCTIONS[:2], feats)
        router.log_p_correct_separate(INSTRUCTIONS[:2], feats)


def test_scores_are_yes_no_log_softmax(router) -> None:
    feats = _groups(router, [3])
    with torch.no_grad():
        (logp,) = router.log_p_correct(INSTRUCTIONS[:1], feats)
        (margin,) = router.log_p_correct(INSTRUCTIONS[:1], feats, logits=True)
        ids = torch.tensor([router.prefix_ids(INSTRUCTIONS[:1])[0] + router.block_ids(T)] * 3)
        embeds = router.embed(ids, router.soft_tokens(feats))
        full = router.llm(inputs_embeds=embeds).logits[:, -1]                  # the slow way, for reference
    expected = full[:, [router.yes_id, router.no_id]].log_softmax(-1)[:, 0]
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.nn.functional.logsigmoid(margin), logp, atol=1e-5, rtol=0)


def test_instruction_cut_keeps_head_and_tail(router) -> None:
    limit = router.cfg.max_instruction_tokens
    ids = router.tokenizer(INSTRUCTIONS[1], add_special_tokens=False)["input_ids"]
    assert len(ids) > limit
    (row,) = router.prefix_ids(INSTRUCTIONS[1:2])
    body = row[len(router.head_ids):len(row) - len(router.tail_ids)]
    assert len(body) == limit
    assert body[:5] == ids[:5] and body[-10:] == ids[-10:]
    assert router.prefix_ids(["short"])[0] == router.head_ids + router.tokenizer("short", add_special_tokens=False)[
        "input_ids"] + router.tail_ids


def test_the_end_of_a_long_instruction_is_read_by_every_component() -> None:
    model = build_router_model(_cfg(instruction_tokens=1), per_task=S)
    model.sentence_encoder.max_length = 32
    passage = "Explain the history of law and economics. " * 12
    texts = [passage + "Solve for x: 2x + 3 = 7.", passage + "Which of the following is true?", "What is 2+2?"]
    ids = model.prefix_ids(texts)
    assert ids[0] != ids[1] and ids[0][-len(model.tail_ids) - 3:] != ids[1][-len(model.tail_ids) - 3:]
    emb = model.sentence_encoder.encode(texts)
    assert not torch.allclose(emb[0], emb[1], atol=1e-4)
    assert model.shortened(texts) == [True, True, False]
    model.cfg.max_instruction_tokens = 10_000                   # the LLM reads them whole, the encoder does not
    assert model.shortened(texts) == [True, True, False]
    model.sentence_encoder.max_length = 512
    assert model.shortened(texts) == [False, False, False]
    assert model.prefix_ids(texts[2:])[0] == model.head_ids + model.tokenizer(
        texts[2], add_special_tokens=False)["input_ids"] + model.tail_ids


def test_shortened_reads_the_encoder_only_where_the_model_does(router) -> None:
    router.sentence_encoder.max_length = 8                     # instruction_tokens=0: the encoder does not read it
    assert router.capability.instruction_tokens == 0 and router.shortened(INSTRUCTIONS) == [False, True, False]


def test_yes_token_must_be_one_token() -> None:
    with pytest.raises(ValueError, match="yes_token"):
        build_router_model(_cfg(yes_token=" Yes absolutely"), per_task=S)


def test_trainability_and_stages(router) -> None:
    trainable = {n for n, p in router.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("capability.") for n in trainable)
    assert any(n.startswith("capability.") for n in trainable) and any("lora_" in n for n in trainable)
    n_train, n_all = router.num_trainable_parameters()
    assert 0 < n_train < n_all
    router.set_stage("connector")
    assert all(n.startswith("capability.") for n, p in router.named_parameters() if p.requires_grad)
    router.set_stage("full")
    assert router.num_trainable_parameters()[0] == n_train
    with pytest.raises(ValueError, match="unknown training stage"):
        router.set_stage("everything")


def test_packed_gradients_equal_separate(router) -> None:
    router.train()
    feats = _groups(router, [3, 2])
    grads = []
    for method in (router.log_p_correct, router.log_p_correct_separate):
        router.zero_grad()
        torch.cat(method(INSTRUCTIONS[:2], feats, logits=True)).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in router.named_parameters() if p.requires_grad})
    assert all(p.grad is None for n, p in router.named_parameters() if not p.requires_grad)
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], atol=1e-4, rtol=1e-3, msg=name)
    assert any(g.abs().sum() > 0 for n, g in grads[0].items() if "lora_B" in n)


def test_frozen_features_are_computed_once_per_distinct_outcomes(router, monkeypatch) -> None:
    """The model is the one cache of frozen features: the same outcomes and tasks give the same tensor without
    encoding again; other outcomes (a zoo entry whose results changed) give their own."""
    outcomes = np.random.default_rng(0).integers(0, 2, (T, S)).astype(np.float32)
    first = router.model_features(outcomes, DESCRIPTIONS)
    calls = []
    real = router._compute_features
    monkeypatch.setattr(router, "_compute_features", lambda *a: calls.append(1) or real(*a))
    assert router.model_features(outcomes.copy(), DESCRIPTIONS) is first and not calls
    changed = outcomes.copy()
    changed[0, 0] = 1 - changed[0, 0]
    other = router.model_features(changed, DESCRIPTIONS)
    assert calls == [1] and not torch.equal(other, first)
    assert router.model_features(outcomes.astype(np.float64), DESCRIPTIONS) is first     # the values, not the dtype


def test_model_features_and_forward(router) -> None:
    feats = _features(router, 1)[0]
    assert feats.shape == (T, router.sentence_encoder.dim + S + 1)
    with pytest.raises(ValueError, match="connector expects"):
        router.model_features(np.zeros((T, S + 1), np.float32), DESCRIPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(router(INSTRUCTIONS[:1], [feats[None]])[0],
                                   router.log_p_correct(INSTRUCTIONS[:1], [feats[None]])[0])
        assert router.log_p_correct(INSTRUCTIONS[:1], [feats[None][:0]])[0].shape == (0,)


@pytest.mark.parametrize("mode,k,kx", [("structured", 0, 0), ("text", 2, 0), ("structured", 2, 1)])
def test_save_load_gives_identical_scores(tmp_path, mode: str, k: int, kx: int) -> None:
    cfg = _cfg(encoder_mode=mode, num_soft_tokens=k, text_group_size=2, instruction_tokens=kx)
    model = build_router_model(cfg, per_task=S)
    _sharpen(model)
    with torch.no_grad():
        for p in model.capability.parameters():
            p.normal_(0.0, 0.2)
    feats = _groups(model, [3, 1])
    with torch.no_grad():
        before = torch.cat(model.log_p_correct(INSTRUCTIONS[:2], feats))
    save_trained(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                         "connector.safetensors"]
    from safetensors.torch import load_file

    assert all("lora_" in key for key in load_file(tmp_path / "adapter_model.safetensors"))
    loaded = load_trained(build_router_model(cfg, per_task=S), tmp_path)
    # the base weights were sharpened in place only in `model`; copy them so only trained weights are compared
    loaded.llm.get_base_model().load_state_dict(
        {n: p for n, p in model.llm.get_base_model().state_dict().items() if "lora_" not in n}, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(loaded.log_p_correct(INSTRUCTIONS[:2], feats)), before, atol=0, rtol=0)


def test_load_rejects_a_different_architecture(tmp_path) -> None:
    save_trained(build_router_model(_cfg(), per_task=S), tmp_path)
    with pytest.raises(ValueError, match="connector.safetensors"):
        load_trained(build_router_model(_cfg(connector="linear"), per_task=S), tmp_path)
    with pytest.raises(ValueError, match="adapter_config.json"):
        load_trained(build_router_model(_cfg(lora_r=4), per_task=S), tmp_path)
    with pytest.raises(ValueError, match="connector.safetensors"):
        load_trained(build_router_model(_cfg(instruction_tokens=1), per_task=S), tmp_path)
    (tmp_path / "connector.safetensors").unlink()
    with pytest.raises(CheckpointError, match="connector.safetensors is missing"):
        load_trained(build_router_model(_cfg(), per_task=S), tmp_path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model and the folder its trained weights were saved to."""
    model = build_router_model(_cfg(), per_task=S)
    folder = tmp_path_factory.mktemp("trained")
    save_trained(model, folder)
    return model, folder


def _rewrite_tensors(file, change) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(file, "pt") as f:
        meta = f.metadata()
    tensors = load_file(file)
    change(tensors)
    save_file(tensors, file, metadata=meta)


def _first(tensors: dict) -> str:
    return sorted(tensors)[0]


BROKEN = {  # what is done to a saved folder → the file the error must name, and what it must say
    "adapter cut short": (lambda d: _truncate(d / "adapter_model.safetensors"), "adapter_model", "cut short"),
    "adapter of 0 bytes": (lambda d: (d / "adapter_model.safetensors").write_bytes(b""), "adapter_model", "readable"),
    "connector cut short": (lambda d: _truncate(d / "connector.safetensors"), "connector.safetensors", "cut short"),
    "connector of 0 bytes": (lambda d: (d / "connector.safetensors").write_bytes(b""), "connector.safetensors",
                             "readable"),
    "garbage adapter config": (lambda d: (d / "adapter_config.json").write_text("garbage"), "adapter_config.json",
                               "not a readable adapter config"),
    "adapter config not UTF-8": (lambda d: (d / "adapter_config.json").write_bytes(b'{"r": "\xff"}'),
                                 "adapter_config.json", "UnicodeDecodeError"),
    "adapter config a list": (lambda d: (d / "adapter_config.json").write_text("[]"), "adapter_config.json",
                              "not a LoRA adapter config"),
    "connector of wrong shapes": (lambda d: _rewrite_tensors(d / "connector.safetensors", lambda t: t.update(
        {_first(t): torch.zeros(3, 3)})), "connector.safetensors", "size mismatch"),
    "connector missing a weight": (lambda d: _rewrite_tensors(d / "connector.safetensors", lambda t: t.pop(
        _first(t))), "connector.safetensors", "Missing key"),
    "connector holding NaN": (lambda d: _rewrite_tensors(d / "connector.safetensors", lambda t: t[_first(t)].fill_(
        float("nan"))), "connector.safetensors", "NaN"),
    "adapter missing a LoRA weight": (lambda d: _rewrite_tensors(d / "adapter_model.safetensors", lambda t: t.pop(
        _first(t))), "adapter_model.safetensors", "missing"),
    "adapter of wrong shapes": (lambda d: _rewrite_tensors(d / "adapter_model.safetensors", lambda t: t.update(
        {_first(t): torch.zeros(3, 3)})), "adapter_model.safetensors", "size mismatch"),
}


def _truncate(file) -> None:
    file.write_bytes(file.read_bytes()[:-100])


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_trained_file_is_named_with_what_to_do(saved, tmp_path, case: str) -> None:
    model, folder = saved
    shutil.copytree(folder, tmp_path / "ckpt")
    break_it, name, what = BROKEN[case]
    break_it(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=what) as err:
        load_trained(model, tmp_path / "ckpt")
    message = str(err.value)
    assert name in message and "re-copy the checkpoint" in message and "\n" not in message


def test_merge_lora_scores_the_same_and_refuses_a_target_outside_the_decoder_layers() -> None:
    """Merged LoRA scores as the adapter does (to rounding); a LoRA on the output layer, whose Yes/No rows the
    head reads from the base weight (tied to the embedding), is not merged."""
    model = build_router_model(_cfg(), per_task=S)
    _sharpen(model)
    model.eval()
    instructions, groups = ["What is 2+2?", "Name a colour."], _groups(model, [3, 2])
    with torch.no_grad():
        before = torch.cat(model.log_p_correct(instructions, groups))
        model.merge_lora()
        after = torch.cat(model.log_p_correct(instructions, groups))
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert model.lora_merged and model.num_trainable_parameters()[0] == 0

    head = build_router_model(_cfg(lora_targets=["q_proj", "lm_head"]), per_task=S)
    assert not head.lora_mergeable
    with pytest.raises(ValueError, match=r"reach outside the decoder's layers"):
        head.merge_lora()

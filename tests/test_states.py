"""Frozen lower layers and the cache of their output (model.frozen_layers, modelsat/states.py) on tiny models: the
split equals the full LLM's hidden states, only the upper layers train, cached states give the same scores,
gradients and training losses as computed ones, and a stale or mismatched cache is detected, not used."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO, tiny_overrides
from modelsat.config import ConfigError, ModelConfig, load_config
from modelsat.model import build_router_model
from modelsat.pretrained import load_llm
from modelsat.states import LowerLayers, StateCache, prefix_key

T, S = 6, 4
DESCRIPTIONS = [f"task {i}" for i in range(T)]
INSTRUCTIONS = ["What is 2+2? A. 3 B. 4 C. 5 D. 6", "Explain the history of law. " * 12 + "A. yes B. no", "x"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(frozen: int = 1, **kw):
    cfg = ModelConfig(llm="tiny-llama", sentence_encoder="tiny-encoder", max_instruction_tokens=40, lora_dropout=0.0,
                      frozen_layers=frozen, **kw)
    model = build_router_model(cfg, per_task=S)
    with torch.no_grad():                       # weights large enough that candidates and instructions differ
        for module in (model.llm, model.lower):
            for name, p in (module.named_parameters() if module is not None else []):
                if "norm" not in name:
                    p.normal_(0.0, 0.3 if "lora_" in name else 0.15)
    return model


def _groups(model, counts: list[int], seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [torch.stack([model.model_features(rng.integers(0, 2, (T, S)).astype(np.float32), DESCRIPTIONS)
                         for _ in range(k)]) for k in counts]


def test_the_lower_layers_give_the_full_llms_hidden_states() -> None:
    llm, tokenizer = load_llm("tiny-llama")
    ids = torch.tensor([tokenizer("a short instruction to read")["input_ids"]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        full = llm(input_ids=ids, output_hidden_states=True).hidden_states       # embeddings, after layer 1, ...
    lower = LowerLayers(llm.get_decoder(), 1, "tiny-llama")
    torch.testing.assert_close(lower(ids, mask), full[1], atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in lower.parameters())
    with pytest.raises(ValueError, match="between 1 and"):
        LowerLayers(llm.get_decoder(), 2, "tiny-llama")


def test_only_the_upper_layers_carry_lora_and_train() -> None:
    model = _model()
    assert model.lower is not None and len(model.decoder.layers) == 1 and len(model.lower.body.layers) == 1
    lora = [n for n, _ in model.llm.named_parameters() if "lora_" in n]
    assert lora and not any("lora_" in n for n, _ in model.lower.named_parameters())
    model.train()
    feats = _groups(model, [3, 2])
    torch.cat(model.log_p_correct(INSTRUCTIONS[:2], feats, logits=True)).square().sum().backward()
    assert all(p.grad is None for p in model.lower.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.llm.named_parameters() if "lora_B" in n)
    with pytest.raises(ConfigError, match="below model.num_layers"):
        load_config(REPO / "configs" / "tiny.yaml", ["model.num_layers=2", "model.frozen_layers=2"])
    with pytest.raises(ValueError, match="frozen_layers=2 must be below the 2 layers"):
        _model(frozen=2)


def test_frozen_layers_packed_equals_separate() -> None:
    model = _model(num_soft_tokens=2)
    feats = _groups(model, [3, 1, 4])
    with torch.no_grad():
        packed = model.log_p_correct(INSTRUCTIONS, feats)
        separate = model.log_p_correct_separate(INSTRUCTIONS, feats, chunk_size=3)
    for p, s in zip(packed, separate):
        torch.testing.assert_close(p, s, atol=1e-5, rtol=0)
    assert torch.cat(packed).std() > 0.05


def test_cached_states_give_the_scores_and_gradients_of_computed_ones(tmp_path: Path) -> None:
    model = _model()
    feats = _groups(model, [3, 2, 2])
    model.train()
    results = []
    for cached in (False, True):
        if cached:
            model.state_cache = StateCache(tmp_path, model.lower.fingerprint)
            assert model.state_cache.fill(model.lower, model.prefix_ids(INSTRUCTIONS[1:]), model.pad_id) == 2
            model.state_cache = StateCache(tmp_path, model.lower.fingerprint)     # read back from disk
        model.zero_grad()
        z = torch.cat(model.log_p_correct(INSTRUCTIONS, feats, logits=True))
        z.square().sum().backward()
        results.append((z.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=0)
    for name, g in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], g, atol=1e-5, rtol=1e-4, msg=name)
    assert len(model.state_cache) == 2                    # the first instruction was computed, not stored


def test_a_stale_or_mismatched_cache_is_detected_not_used(tmp_path: Path) -> None:
    model = _model()
    prefixes = model.prefix_ids(INSTRUCTIONS)
    cache = StateCache(tmp_path, model.lower.fingerprint)
    assert cache.fill(model.lower, prefixes, model.pad_id) == 3
    assert cache.fill(model.lower, prefixes, model.pad_id) == 0          # nothing left to compute
    [shard] = sorted(cache.dir.glob("shard-*.safetensors"))
    with torch.no_grad():
        truth = torch.cat(model.log_p_correct(INSTRUCTIONS, _groups(model, [2, 2, 2])))

    # another backbone's shard copied into this folder: skipped with a warning, its states computed again
    poisoned = {k: v + 1.0 for k, v in load_file(shard).items()}
    shard.unlink()
    save_file(poisoned, cache.dir / "shard-00000.safetensors", metadata={"fingerprint": "0" * 64})
    with pytest.warns(UserWarning, match="another backbone or cut layer"):
        model.state_cache = StateCache(tmp_path, model.lower.fingerprint)
    assert len(model.state_cache) == 0 and model.state_cache.skipped == 3
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(model.log_p_correct(INSTRUCTIONS, _groups(model, [2, 2, 2]))), truth,
                                   atol=1e-5, rtol=0)

    # an entry of the wrong shape under the right fingerprint: not used
    key = prefix_key(prefixes[0])
    save_file({key: torch.zeros(3, 64)}, cache.dir / "shard-00000.safetensors",
              metadata={"fingerprint": model.lower.fingerprint})
    model.state_cache = StateCache(tmp_path, model.lower.fingerprint)
    with pytest.warns(UserWarning, match="has shape"), torch.no_grad():
        torch.testing.assert_close(torch.cat(model.log_p_correct(INSTRUCTIONS, _groups(model, [2, 2, 2]))), truth,
                                   atol=1e-5, rtol=0)

    # other lower weights: another fingerprint, another folder; another template: other keys (a miss)
    other = _model()
    assert other.lower.fingerprint != model.lower.fingerprint
    assert StateCache(tmp_path, other.lower.fingerprint).dir != cache.dir
    templated = _model(instruction_template="Task:\n{instruction}\n\nCapability:")
    assert {prefix_key(p) for p in templated.prefix_ids(INSTRUCTIONS)}.isdisjoint(map(prefix_key, prefixes))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="another backbone"):
            StateCache(tmp_path, model.lower.fingerprint).fill(other.lower, prefixes, model.pad_id)


def test_training_with_cached_states_gives_the_losses_of_computing_them(tmp_path: Path) -> None:
    import modelsat.train as train

    losses = {}
    for cached in (True, False):
        out = tmp_path / f"run-{cached}"
        train.main(["--config", str(REPO / "configs" / "tiny.yaml"),
                    *tiny_overrides(tmp_path, **{"model.frozen_layers": 1, "model.lora_dropout": 0,
                                                 "train.max_steps": 6, "train.save_every": 0,
                                                 "train.cache_states": cached, "train.out_dir": out})])
        losses[cached] = [h["loss"] for h in json.loads((out / "final" / "metrics.json").read_text())["history"]]
    assert len(losses[True]) == 6
    np.testing.assert_allclose(losses[True], losses[False], atol=1e-5, rtol=0)
    shards = list((tmp_path / "table" / "states").glob("*/shard-*.safetensors"))
    assert shards and all(load_file(s) for s in shards)


def test_two_caches_filling_one_folder_keep_each_others_shards(tmp_path: Path) -> None:
    model = _model()
    prefixes = model.prefix_ids(INSTRUCTIONS)
    first, second = (StateCache(tmp_path, model.lower.fingerprint) for _ in range(2))   # two runs at once
    assert first.fill(model.lower, prefixes[:2], model.pad_id) == 2
    assert second.fill(model.lower, prefixes[2:], model.pad_id) == 1
    assert len(list(first.dir.glob("shard-*.safetensors"))) == 2
    assert len(StateCache(tmp_path, model.lower.fingerprint)) == 3
    for shard in first.dir.glob("shard-*.safetensors"):    # removed under a reader: a miss, not a crash
        shard.unlink()
    with pytest.warns(UserWarning, match="can no longer be read"):
        assert first.get([prefix_key(p) for p in prefixes[:2]], [len(p) for p in prefixes[:2]], 64) == {}

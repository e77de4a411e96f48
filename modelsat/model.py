"""The router model: LLM + LoRA + capability soft tokens + shared-prefix packing + Yes/No scoring.

    model = build_router_model(cfg.model, per_task=20)                 # fresh; weights.load_trained(model, DIR)
    feats = model.model_features(outcomes, task_descriptions)          # (N, F) frozen, once per candidate model
    logp = model.log_p_correct(instructions, [feats_1, ...])   # [(K_i,)] log p(Yes) for each instruction

Candidate sequence (for instruction x and candidate m):
    [template head][x][template tail] [<cap> × N_tok] [inquiry prompt]   → next token Yes vs No
`<cap>` is a special token added to the tokenizer (split_special_tokens keeps user text from producing it).
Its id may lie beyond the embedding table: placeholder positions are looked up as the pad token and then
overwritten with the candidate's soft tokens (`masked_scatter`), so no embedding row is added or trained.

Shared-prefix packing: logically one sequence [x][cap_1 + prompt]…[cap_K + prompt] whose 4-D mask lets each
candidate block see x and itself (causal), with positions restarting after x for every block. It runs as one
pass over the instructions (batched, right-padded) that fills a KV cache, then one pass over all candidate
blocks (B·K rows of L_c tokens) attending to their instruction's cached keys/values through that 4-D mask.
Same result as scoring every candidate alone, at a cost of L_x + K·L_c tokens instead of K·(L_x + L_c), and
attention that stays linear in K (a dense (L_x + K·L_c)² mask would not).

With `model.frozen_layers = n` the lower n layers (`modelsat/states.py`: frozen, no LoRA) read the prefix
[template head][x][template tail] alone; their output, cached by train.py, is the prefix's input to the upper
layers, and the candidate blocks (soft tokens + inquiry prompt embeddings) enter at layer n.

Why one module: `RouterModel` is one class; packing, soft-token injection and Yes/No scoring share
its state (tokenizer, placeholder ids, KV-cache layout). Its weights on disk: `modelsat/weights.py`.
"""
from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from modelsat.config import ModelConfig
from modelsat.evidence import evidence_dim
from modelsat.encoder import CapabilityEncoder, capability_features, feature_dim, task_embeddings
from modelsat.pretrained import SentenceEncoder, head_and_tail, load_llm, load_sentence_encoder, portable_name
from modelsat.states import LowerLayers, StateCache, prefix_key

CAP_TOKEN = "<cap>"
MAX_CACHED_FEATURES = 512
"""Candidates whose frozen features a model keeps (the oldest go first): (49, 395) float32 each at the default
aptitude test, ~40 MB in all."""


def _single_token(tokenizer: PreTrainedTokenizerBase, text: str, what: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"model.{what}={text!r} is {len(ids)} tokens for this tokenizer ({ids}); "
                         "choose a string that is a single token (e.g. ' Yes' / ' No')")
    return ids[0]


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists → ids (B, T) and a boolean mask (B, T) of real tokens."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = True
    return ids, mask


class RouterModel(nn.Module):
    """Holds `llm` (a PeftModel), `capability` (CapabilityEncoder), the tokenizer and the config.

    Trainable: LoRA and the capability encoder (`set_stage("connector")` freezes LoRA); the base LLM is frozen.
    `lower`: the frozen lower layers that read the prefix alone (model.frozen_layers; None: none), and
    `state_cache` (a StateCache, set by train.py) where their output is looked up before it is computed.
    """

    def __init__(self, llm: PeftModel, tokenizer: PreTrainedTokenizerBase, capability: CapabilityEncoder,
                 cfg: ModelConfig, sentence_encoder: SentenceEncoder | None = None,
                 lower: LowerLayers | None = None) -> None:
        super().__init__()
        self.llm, self.capability, self.cfg, self.lower = llm, capability, cfg, lower
        self.state_cache: StateCache | None = None
        self.tokenizer, self.sentence_encoder = tokenizer, sentence_encoder   # not modules: never trained or saved
        self._task_emb: dict[tuple[str, ...], torch.Tensor] = {}
        self._features: dict[str, torch.Tensor] = {}   # digest of (outcomes, tasks) -> (N, F) frozen features
        if CAP_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [CAP_TOKEN]})
        self.cap_id = tokenizer.convert_tokens_to_ids(CAP_TOKEN)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.yes_id = _single_token(tokenizer, cfg.yes_token, "yes_token")
        self.no_id = _single_token(tokenizer, cfg.no_token, "no_token")
        head, tail = cfg.instruction_template.split("{instruction}", 1)
        self.head_ids = tokenizer(head)["input_ids"]                                # BOS where the tokenizer adds one
        self.tail_ids = self._tokens(tail)
        self.prompt_ids = self._tokens(cfg.inquiry_prompt)
        self.ellipsis_ids = self._tokens(" ...")
        self.evidence_offset_frozen = False
        self.lora_merged = False
        self.set_stage("full")

    # -- trainability -------------------------------------------------------------------------------------------
    def set_stage(self, stage: Literal["connector", "full"]) -> None:
        """`full`: LoRA + capability encoder train; `connector`: capability encoder only. The base LLM never trains,
        nor the evidence's offset once `freeze_evidence_offset` was called."""
        if stage not in ("connector", "full"):
            raise ValueError(f"unknown training stage {stage!r}; use 'connector' or 'full'")
        if self.lora_merged:
            raise ValueError("this model's LoRA is merged into the LLM for inference (merge_lora): it cannot train; "
                             "build a fresh one with build_router_model")
        for name, p in self.llm.named_parameters():
            p.requires_grad_(stage == "full" and "lora_" in name)
        self.capability.requires_grad_(True)
        if self.evidence_offset_frozen:
            self.capability.evidence.offset.requires_grad_(False)

    def freeze_evidence_offset(self) -> None:
        """Keep the evidence's logit offset as it is from now on, in every stage (after train.py's stage-0 fit).
        Raises ValueError where the model reads no evidence."""
        if self.capability.evidence is None:
            raise ValueError("the model reads no aptitude evidence (model.evidence=false): no offset to freeze")
        self.evidence_offset_frozen = True
        self.capability.evidence.offset.requires_grad_(False)

    @property
    def lora_mergeable(self) -> bool:
        """Whether every LoRA layer sits inside the decoder's layers, so that `merge_lora` changes nothing but
        rounding (merged into the output layer, a LoRA would also change the Yes/No rows that `_head` reads from
        its weight, and the embedding tied to it)."""
        return all(".layers." in name for name, m in self.llm.named_modules() if isinstance(m, LoraLayer))

    def merge_lora(self) -> None:
        """Fold LoRA into the LLM's weights for inference (peft's `merge_adapter`): the same scores to float
        rounding, with one matmul per projection instead of three (about 7% of a ranking on a CPU). Nothing
        trains afterwards, and `set_stage` / `load_trained` raise ValueError; the adapter's own weights, which
        `save_trained` writes, are unchanged. Raises ValueError where a LoRA target lies outside the decoder's
        layers (`lora_mergeable`)."""
        if not self.lora_mergeable:
            raise ValueError(f"model.lora_targets {self.cfg.lora_targets} reach outside the decoder's layers: merging "
                             "would change more than rounding; rank with the adapter unmerged")
        self.llm.merge_adapter()
        self.lora_merged = True
        for p in self.parameters():
            p.requires_grad_(False)

    def num_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad), sum(p.numel() for p in self.parameters())

    # -- inputs -------------------------------------------------------------------------------------------------
    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _instruction_ids(self, instructions: list[str]) -> list[list[int]]:
        return self.tokenizer(instructions, add_special_tokens=False, split_special_tokens=True,
                              verbose=False)["input_ids"]

    def prefix_ids(self, instructions: list[str]) -> list[list[int]]:
        """[template head][instruction][template tail] per instruction; the instruction cut to
        `max_instruction_tokens` by dropping its middle (head third and tail kept, so trailing options survive)."""
        limit = self.cfg.max_instruction_tokens
        return [self.head_ids + head_and_tail(ids, limit, self.ellipsis_ids) + self.tail_ids
                for ids in self._instruction_ids(instructions)]

    def shortened(self, instructions: list[str]) -> list[bool]:
        """Whether each instruction is longer than what the model reads of it (`max_instruction_tokens`, or the
        sentence encoder's window where instruction tokens read it), so read as head + tail."""
        cut = [len(ids) > self.cfg.max_instruction_tokens for ids in self._instruction_ids(instructions)]
        if self.capability.instruction_tokens and self.sentence_encoder is not None:
            cut = [a or b for a, b in zip(cut, self.sentence_encoder.shortened(instructions))]
        return cut

    def prefix_inputs(self, prefixes: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The upper layers' inputs for the prefixes (right-padded): (B, P, H) token embeddings, or with frozen
        lower layers their output (read from `state_cache` where it is there), and the (B, P) mask of real tokens."""
        ids, mask = _pad(prefixes, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.lower is None:
            return self.embed(ids), mask
        if self.state_cache is None:
            return self.lower(ids, mask), mask
        keys = [prefix_key(p) for p in prefixes]
        hidden = self.llm.get_input_embeddings().embedding_dim
        found = self.state_cache.get(keys, [len(p) for p in prefixes], hidden)
        todo = [i for i, k in enumerate(keys) if k not in found]
        states = torch.zeros(len(prefixes), ids.shape[1], hidden, device=self.device)
        if todo:
            part_ids, part_mask = _pad([prefixes[i] for i in todo], self.pad_id)
            computed = self.lower(part_ids.to(self.device), part_mask.to(self.device))
            for j, i in enumerate(todo):
                states[i, :len(prefixes[i])] = computed[j, :len(prefixes[i])]
        for i, key in enumerate(keys):
            if key in found:
                states[i, :len(prefixes[i])] = found[key].to(self.device)
        return states, mask

    def block_ids(self, num_soft: int) -> list[int]:
        """A candidate block: placeholders for its soft tokens, then the inquiry prompt."""
        return [self.cap_id] * num_soft + self.prompt_ids

    def embed(self, input_ids: torch.Tensor, soft: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings (B, T, H) with `soft` (n, N_tok, H) scattered, in order, onto the `<cap>` positions."""
        mask = input_ids == self.cap_id                                              # (B, T)
        embeds = self.llm.get_input_embeddings()(input_ids.masked_fill(mask, self.pad_id))
        n_soft = 0 if soft is None else soft.shape[0] * soft.shape[1]
        if int(mask.sum()) != n_soft:
            raise ValueError(f"{int(mask.sum())} capability placeholders in the input but {n_soft} soft tokens")
        if soft is None:
            return embeds
        return embeds.masked_scatter(mask[..., None], soft.to(embeds.dtype))

    def soft_tokens(self, features: list[torch.Tensor], instructions: list[str] | None = None,
                    evidence: list[torch.Tensor] | None = None,
                    instruction_embeddings: torch.Tensor | None = None,
                    connector_tokens: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Capability soft tokens of all candidates, instruction-major: (ΣK, N_tok, H). `instructions[i]`, the
        instruction of `features[i]`, is needed (and embedded) only where the encoder pools by the instruction;
        `instruction_embeddings` (B, D), their sentence embeddings where the caller has them (the pooling reads
        their direction only), spares that encoding; `evidence[i]` (K_i, E), the candidates' aptitude evidence
        for it, only where the encoder reads evidence; `connector_tokens[i]` (K_i, N, H), the candidates'
        `CapabilityEncoder.connector_tokens`, where the caller keeps them."""
        shapes = {tuple(f.shape[1:]) for f in features if f.ndim == 3}
        if len(shapes) != 1 or any(f.ndim != 3 for f in features):
            raise ValueError(f"features must be (K_i, N, F) tensors of one (N, F) shape, got "
                             f"{[tuple(f.shape) for f in features]}")
        per_block = None
        if self.capability.instruction_tokens:
            if self.sentence_encoder is None or instructions is None:
                raise ValueError("model.instruction_tokens > 0 needs the instructions and the sentence encoder "
                                 "(build the model with build_router_model)")
            counts = torch.tensor([f.shape[0] for f in features])
            if instruction_embeddings is None:
                embedded = self.sentence_encoder.encode(instructions)               # (B, D), frozen
            elif instruction_embeddings.shape != (len(features), self.sentence_encoder.dim):
                raise ValueError(f"instruction_embeddings must be ({len(features)}, {self.sentence_encoder.dim}), "
                                 f"got {tuple(instruction_embeddings.shape)}")
            else:
                embedded = instruction_embeddings.float()
            per_block = embedded.repeat_interleave(counts, dim=0).to(self.device)   # (ΣK, D)
        tokens = None
        if connector_tokens is not None:
            if len(connector_tokens) != len(features) or any(
                    t.shape[:2] != f.shape[:2] for t, f in zip(connector_tokens, features)):
                raise ValueError(f"connector tokens {[tuple(t.shape) for t in connector_tokens]} do not match the "
                                 f"features {[tuple(f.shape) for f in features]}; pass one (K_i, N, H) tensor per "
                                 "instruction, CapabilityEncoder.connector_tokens of its candidates")
            tokens = torch.cat(connector_tokens).to(self.device, torch.float32)
        return self.capability(torch.cat(features).to(self.device, torch.float32), per_block,
                               self._evidence(evidence, features), tokens)

    def _evidence(self, evidence: list[torch.Tensor] | None, features: list[torch.Tensor]) -> torch.Tensor | None:
        """The (ΣK, E) evidence of all candidates, checked against their features; None where none is read."""
        if not self.capability.evidence_dim:
            return None
        if evidence is None or len(evidence) != len(features) or any(
                e.shape != (f.shape[0], self.capability.evidence_dim) for e, f in zip(evidence, features)):
            raise ValueError(f"model.evidence needs one (K_i, {self.capability.evidence_dim}) evidence tensor per "
                             f"instruction, matching its candidates (modelsat/evidence.py)")
        return torch.cat(evidence).to(self.device, torch.float32)

    def _margin(self, hidden: torch.Tensor, evidence: torch.Tensor | None, logits: bool) -> torch.Tensor:
        """Yes−No margin of the LLM plus the evidence's learned offset → the margin, or log p(Yes) = logsigmoid."""
        z = self._head(hidden, logits=True)                                         # (n,)
        offset = self.capability.evidence_offset(evidence)
        if offset is not None:
            z = z + offset.to(z.dtype)
        return z if logits else F.logsigmoid(z)

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    # -- scoring ------------------------------------------------------------------------------------------------
    @property
    def decoder(self) -> nn.Module:
        """The LLM body (LoRA layers in place) that returns hidden states, without the output layer."""
        return self.llm.get_base_model().get_decoder()

    def _head(self, hidden: torch.Tensor, logits: bool) -> torch.Tensor:
        """Only the Yes/No rows of the output layer: hidden (n, H) → log p(Yes) or the Yes−No logit margin (n,)."""
        lm_head = self.llm.get_base_model().get_output_embeddings()
        rows = [self.yes_id, self.no_id]
        bias = lm_head.bias[rows] if getattr(lm_head, "bias", None) is not None else None
        yes_no = F.linear(hidden, lm_head.weight[rows], bias)                          # (n, 2)
        return yes_no[:, 0] - yes_no[:, 1] if logits else yes_no.log_softmax(-1)[:, 0]

    def _check(self, instructions: list[str], features: list[torch.Tensor]) -> list[int]:
        if len(instructions) != len(features):
            raise ValueError(f"{len(instructions)} instructions but {len(features)} feature tensors")
        return [int(f.shape[0]) for f in features]

    def log_p_correct(self, instructions: list[str], features: list[torch.Tensor], chunk_size: int | None = None,
                      logits: bool = False, evidence: list[torch.Tensor] | None = None,
                      instruction_embeddings: torch.Tensor | None = None,
                      connector_tokens: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Packed scoring. features[i]: (K_i, N, F) candidates of instruction i → [(K_i,)] log p_correct = log p(Yes)
        (or the Yes−No logit margin z with `logits=True`; log p(Yes) = logsigmoid(z)). `evidence[i]`: (K_i, E)
        aptitude evidence of those candidates for instruction i, needed where the model reads it (model.evidence);
        `instruction_embeddings` (B, D) and `connector_tokens`: what the caller already has (`soft_tokens`). At most
        `chunk_size` candidate blocks go through the LLM at once (None: all)."""
        counts = self._check(instructions, features)
        if sum(counts) == 0:
            return [torch.zeros(0, device=self.device) for _ in counts]
        ev = self._evidence(evidence, features)                                     # (ΣK, E) or None
        soft = self.soft_tokens(features, instructions, evidence, instruction_embeddings,
                                connector_tokens)                                   # (ΣK, N_tok, H)
        inputs, prefix_mask = self.prefix_inputs(self.prefix_ids(instructions))        # (B, P, H), (B, P)
        cache = self.decoder(inputs_embeds=inputs, attention_mask=prefix_mask.long(), use_cache=True).past_key_values
        if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
            raise ValueError("shared-prefix packing needs full-attention layers; use log_p_correct_separate for this LLM")
        owner = torch.repeat_interleave(torch.arange(len(counts), device=self.device),
                                        torch.tensor(counts, device=self.device))  # (ΣK,) instruction of each block
        block = torch.tensor(self.block_ids(soft.shape[1]), device=self.device)   # (Lc,)
        Lc = block.numel()
        causal = torch.ones(Lc, Lc, dtype=torch.bool, device=self.device).tril()  # (Lc, Lc)
        hidden = []
        for idx in torch.arange(len(owner), device=self.device).split(chunk_size or len(owner)):
            rows = owner[idx]                                                        # (C,)
            past = DynamicCache([(k[rows], v[rows]) for k, v, *_ in cache])         # (C, h, P, d) per layer
            mask = torch.cat([prefix_mask[rows, None, :].expand(-1, Lc, -1),
                              causal.expand(len(rows), -1, -1)], dim=2)[:, None]    # (C, 1, Lc, P + Lc)
            positions = prefix_mask.sum(1)[rows, None] + torch.arange(Lc, device=self.device)  # (C, Lc)
            out = self.decoder(inputs_embeds=self.embed(block.expand(len(rows), -1), soft[idx]),
                               attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True)
            hidden.append(out.last_hidden_state[:, -1])                             # (C, H)
        return list(self._margin(torch.cat(hidden), ev, logits).split(counts))

    def forward(self, instructions: list[str], features: list[torch.Tensor], chunk_size: int | None = None,
                logits: bool = False, evidence: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """`log_p_correct` (packed), so that accelerate / DDP wrappers see the call."""
        return self.log_p_correct(instructions, features, chunk_size, logits, evidence)

    def log_p_correct_separate(self, instructions: list[str], features: list[torch.Tensor],
                               chunk_size: int | None = None, logits: bool = False,
                               evidence: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Reference scoring: one right-padded sequence per (instruction, candidate), `chunk_size` sequences a pass."""
        counts = self._check(instructions, features)
        if sum(counts) == 0:
            return [torch.zeros(0, device=self.device) for _ in counts]
        ev = self._evidence(evidence, features)                                     # (ΣK, E) or None
        soft = self.soft_tokens(features, instructions, evidence)                    # (ΣK, N_tok, H)
        block = torch.tensor(self.block_ids(soft.shape[1]), device=self.device)     # (Lc,)
        prefixes = self.prefix_ids(instructions)
        inputs, _ = self.prefix_inputs(prefixes)                                    # (B, P, H)
        owner = [b for b, k in enumerate(counts) for _ in range(k)]                 # instruction of each pair
        hidden = []
        for idx in torch.arange(len(owner)).split(chunk_size or len(owner)):
            blocks = self.embed(block.expand(len(idx), -1), soft[idx.to(self.device)])   # (C, Lc, H)
            seqs = [torch.cat([inputs[owner[i], :len(prefixes[owner[i]])], blocks[j]]) for j, i in enumerate(idx)]
            width = max(len(q) for q in seqs)
            embeds = blocks.new_zeros(len(seqs), width, blocks.shape[-1])             # (C, T, H), right-padded
            mask = torch.zeros(len(seqs), width, dtype=torch.long, device=self.device)
            for j, q in enumerate(seqs):
                embeds[j, :len(q)], mask[j, :len(q)] = q, 1
            out = self.decoder(inputs_embeds=embeds, attention_mask=mask)
            last = mask.sum(1) - 1                                                   # (C,) last real position
            hidden.append(out.last_hidden_state[torch.arange(len(idx), device=self.device), last])
        return list(self._margin(torch.cat(hidden), ev, logits).split(counts))

    # -- candidate features -------------------------------------------------------------------------------------
    def model_features(self, outcomes: np.ndarray, task_descriptions: list[str]) -> torch.Tensor:
        """Frozen capability features (N, F) of one candidate from its aptitude outcomes (T, S), computed once per
        distinct (outcomes, tasks) and kept here: the one cache of frozen features, which training and the router
        read through (a zoo entry whose results change has other outcomes, so nothing stale is served)."""
        if self.sentence_encoder is None:
            raise ValueError("this RouterModel has no sentence encoder; build it with build_router_model")
        outcomes = np.ascontiguousarray(outcomes, dtype=np.float32)
        digest = hashlib.sha256(repr(outcomes.shape).encode() + outcomes.tobytes()
                                + "\0".join(task_descriptions).encode()).hexdigest()
        if digest not in self._features:
            if len(self._features) >= MAX_CACHED_FEATURES:                  # a long-running service's zoo churn
                self._features.pop(next(iter(self._features)))
            self._features[digest] = self._compute_features(outcomes, task_descriptions)
        return self._features[digest]

    def _compute_features(self, outcomes: np.ndarray, task_descriptions: list[str]) -> torch.Tensor:
        key = tuple(task_descriptions)
        if self.cfg.encoder_mode == "structured" and key not in self._task_emb:
            self._task_emb[key] = task_embeddings(task_descriptions, self.sentence_encoder)
        feats = capability_features(outcomes, self.cfg.encoder_mode, self._task_emb.get(key), task_descriptions,
                                    self.sentence_encoder, self.cfg.text_group_size)
        if feats.shape[1] != self.capability.in_dim:
            raise ValueError(f"capability features are {feats.shape[1]} wide but the connector expects "
                             f"{self.capability.in_dim}: the aptitude test's questions per task differ from the model's")
        return feats

def build_router_model(cfg: ModelConfig, per_task: int) -> RouterModel:
    """Router model from the config; `per_task` (S, questions per aptitude task) fixes the feature width.
    Its trained weights are fresh: `modelsat.weights.load_trained(model, folder)` loads a trained adapter and
    connector (`Router.from_checkpoint` loads a whole checkpoint)."""
    base, tokenizer = load_llm(cfg.llm)
    decoder = base.get_decoder()
    layers = decoder.layers
    top = cfg.num_layers or len(layers)                    # keep the lower layers only: a cheaper router on a CPU
    if top > len(layers):
        raise ValueError(f"model.num_layers={cfg.num_layers} but {cfg.llm} has {len(layers)} layers")
    if cfg.frozen_layers >= top:
        raise ValueError(f"model.frozen_layers={cfg.frozen_layers} must be below the {top} layers kept of {cfg.llm}")
    lower = LowerLayers(decoder, cfg.frozen_layers, cfg.llm) if cfg.frozen_layers else None
    if (cfg.frozen_layers, top) != (0, len(layers)):
        decoder.layers = layers[cfg.frozen_layers:top]     # the layers LoRA goes into, renumbered for their KV cache
        for i, layer in enumerate(decoder.layers):
            layer.self_attn.layer_idx = i
        base.config.num_hidden_layers = top - cfg.frozen_layers
        if getattr(base.config, "layer_types", None):
            base.config.layer_types = list(base.config.layer_types)[cfg.frozen_layers:top]
    sentence_encoder = load_sentence_encoder(cfg.sentence_encoder)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
    llm = get_peft_model(base, lora)
    llm.peft_config["default"].base_model_name_or_path = portable_name(cfg.llm)   # not a path on this machine
    capability = CapabilityEncoder(feature_dim(cfg.encoder_mode, sentence_encoder.dim, per_task),
                                   llm.get_input_embeddings().embedding_dim, cfg.connector, cfg.num_soft_tokens,
                                   cfg.instruction_tokens, sentence_encoder.dim,
                                   evidence_dim(cfg.evidence_source) if cfg.evidence else 0, cfg.evidence_offset)
    model = RouterModel(llm, tokenizer, capability, cfg, sentence_encoder, lower)
    model.eval()
    return model

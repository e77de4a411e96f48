"""Capability encoder: a candidate model's aptitude-test results → soft tokens in the router LLM's embedding space.

Two stages, as LLaVA's encoder → projector:
1. frozen features of one model, computed once when it joins a zoo (`capability_features`, (N, F)):
   - `structured` (default): one row per task, [task embedding (D), outcomes (S), task accuracy (1)],
     so N = T and F = D + S + 1;
   - `text` (the paper's): sentences "The model achieves accuracy 40.0% on the task of <description>."
     grouped a few tasks per chunk, each chunk encoded whole by the sentence encoder (F = D). Chunks are
     sized so that no chunk exceeds the encoder's length limit: no task is ever truncated away.
2. the trainable `CapabilityEncoder`: connector (`linear` | `mlp2x_gelu`) to the LLM width H, optionally
   pooled to k tokens by learned-query attention, and optionally followed by `instruction_tokens` tokens pooled
   by the *instruction* (`InstructionPool`): its sentence embedding attends over the rows' own embeddings (the
   task embeddings in `structured` mode, the chunk embeddings in `text` mode; both from the same sentence
   encoder, so the match is meaningful from the first step). Such a token carries the candidate's results on
   the aptitude tasks that resemble the instruction — the instruction × model signal the LLM has to combine.
   The per-row tokens still depend only on the model (computed once); only this cheap pooling is per instruction.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modelsat.pretrained import SentenceEncoder

EncoderMode = Literal["structured", "text"]


def task_embeddings(descriptions: list[str], encoder: SentenceEncoder) -> torch.Tensor:
    """Frozen embeddings (T, D) of the aptitude tasks' descriptions; computed once per aptitude test."""
    if not descriptions:
        raise ValueError("the aptitude test has no tasks: nothing to embed")
    return encoder.encode(descriptions)


def feature_dim(mode: EncoderMode, encoder_dim: int, per_task: int) -> int:
    """F, the width of `capability_features` rows, for a sentence encoder of width D and S questions per task."""
    if mode == "structured":
        return encoder_dim + per_task + 1
    if mode == "text":
        return encoder_dim
    raise ValueError(f"unknown encoder mode {mode!r}; use 'structured' or 'text'")


def capability_sentence(accuracy: float, description: str) -> str:
    """The paper's sentence for one task; `accuracy` is a fraction in [0, 1]."""
    return f"The model achieves accuracy {100.0 * accuracy:.1f}% on the task of {description.strip().rstrip('.')}."


def text_chunks(task_descriptions: list[str], encoder: SentenceEncoder, group_size: int) -> list[list[int]]:
    """Task indices of each text chunk: consecutive tasks, at most `group_size` per chunk, and a chunk never longer
    than the encoder's `max_length` tokens (measured at the longest accuracy string, "100.0%", so the grouping is
    the same for every model). Raises ValueError when one task's sentence alone is too long."""
    sentences = [capability_sentence(1.0, d) for d in task_descriptions]
    chunks: list[list[int]] = []
    for t, sentence in enumerate(sentences):
        if encoder.num_tokens([sentence])[0] > encoder.max_length:
            raise ValueError(f"aptitude task {t} ({task_descriptions[t][:60]!r}...): its capability sentence is longer "
                             f"than the sentence encoder's {encoder.max_length} tokens; shorten the task description")
        if chunks and len(chunks[-1]) < group_size:
            joined = " ".join(sentences[i] for i in chunks[-1] + [t])
            if encoder.num_tokens([joined])[0] <= encoder.max_length:
                chunks[-1].append(t)
                continue
        chunks.append([t])
    return chunks


def _check_outcomes(outcomes: np.ndarray, num_tasks: int) -> np.ndarray:
    outcomes = np.asarray(outcomes, dtype=np.float32)
    if outcomes.ndim != 2 or outcomes.shape[0] != num_tasks:
        raise ValueError(f"aptitude outcomes must be (tasks={num_tasks}, questions per task), got {outcomes.shape}")
    if not np.isfinite(outcomes).all() or outcomes.min() < 0 or outcomes.max() > 1:
        raise ValueError("aptitude outcomes must be finite scores in [0, 1] (a missing result is not allowed)")
    return outcomes


def capability_features(outcomes: np.ndarray, mode: EncoderMode, task_emb: torch.Tensor | None,
                        task_descriptions: list[str], encoder: SentenceEncoder | None,
                        group_size: int = 5) -> torch.Tensor:
    """Frozen features (N, F) of one model from its aptitude outcomes (T, S).

    structured: N = T rows of [task_emb (D), outcomes (S), accuracy (1)]; needs `task_emb` (T, D) or `encoder`.
    text: N = number of chunks (ceil(T / group_size) unless a chunk would overflow), rows of D; needs `encoder`.
    """
    outcomes = _check_outcomes(outcomes, len(task_descriptions))                  # (T, S)
    accuracy = outcomes.mean(axis=1)                                               # (T,)
    if mode == "structured":
        if task_emb is None:
            if encoder is None:
                raise ValueError("structured features need the task embeddings or a sentence encoder")
            task_emb = task_embeddings(task_descriptions, encoder)
        if task_emb.shape[0] != outcomes.shape[0]:
            raise ValueError(f"{task_emb.shape[0]} task embeddings for {outcomes.shape[0]} aptitude tasks")
        return torch.cat([task_emb.float().cpu(), torch.from_numpy(outcomes),
                          torch.from_numpy(accuracy)[:, None]], dim=1)            # (T, D + S + 1)
    if mode == "text":
        if encoder is None:
            raise ValueError("text features need a sentence encoder")
        chunks = text_chunks(task_descriptions, encoder, group_size)
        texts = [" ".join(capability_sentence(float(accuracy[t]), task_descriptions[t]) for t in chunk)
                 for chunk in chunks]
        return encoder.encode(texts)                                               # (N, D)
    raise ValueError(f"unknown encoder mode {mode!r}; use 'structured' or 'text'")


def build_connector(name: str, in_dim: int, out_dim: int) -> nn.Module:
    """The projector from features (F) to the LLM width (H), chosen by name as LLaVA's: `linear` | `mlp2x_gelu`."""
    if name == "linear":
        return nn.Linear(in_dim, out_dim)
    if name == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise ValueError(f"unknown connector {name!r}; use 'linear' or 'mlp2x_gelu'")


class QueryPool(nn.Module):
    """Pool N tokens to k by k learned queries (single-head softmax attention; near-uniform, i.e. mean pooling, at init)."""

    def __init__(self, num_queries: int, dim: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)         # (k, H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                           # x: (M, N, H)
        weights = torch.einsum("kh,mnh->mkn", self.queries, x) / math.sqrt(x.shape[-1])
        return torch.einsum("mkn,mnh->mkh", weights.softmax(dim=-1), x)           # (M, k, H)


class InstructionPool(nn.Module):
    """k tokens pooled over a candidate's N row tokens by the instruction: weights softmax(⟨q_j(x), key_n⟩ / τ_j),
    with x the instruction's sentence embedding, key_n the row's (unit-normalised), q_j = unit(x) W_j.
    W_j starts at the identity (plus a little noise to tell the k queries apart) and τ_j at `temperature`, so at
    step 0 the pooling already weights the tasks most similar to the instruction."""

    def __init__(self, num_queries: int, key_dim: int, temperature: float = 0.05) -> None:
        super().__init__()
        eye = torch.eye(key_dim).expand(num_queries, -1, -1)
        noise = torch.randn(num_queries, key_dim, key_dim) / key_dim * torch.arange(num_queries)[:, None, None]
        self.maps = nn.Parameter(eye + noise)                                      # (k, D, D); query 0 is x itself
        self.log_temperature = nn.Parameter(torch.full((num_queries,), math.log(temperature)))

    def forward(self, tokens: torch.Tensor, keys: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        # tokens (M, N, H), keys (M, N, D), instruction (M, D) → (M, k, H)
        queries = torch.einsum("md,kde->mke", F.normalize(instruction, dim=-1), self.maps)
        logits = torch.einsum("mke,mne->mkn", queries, F.normalize(keys, dim=-1))
        weights = (logits / self.log_temperature.exp()[:, None]).softmax(dim=-1)
        return torch.einsum("mkn,mnh->mkh", weights, tokens)


OFFSETS = ("mlp", "linear", "linear-logit")
"""The forms of the evidence's logit offset (`model.evidence_offset`)."""


class EvidenceEncoder(nn.Module):
    """A candidate's aptitude evidence for one instruction (`modelsat/evidence.py`; (n, E) values in [0, 1]) → one
    soft token (n, H) for the LLM to read, and a learned offset (n,) to the Yes−No logit (a wide-and-deep split:
    Cheng et al., 2016). The token reads [e, logit(e)]; the offset is chosen by name (`OFFSETS`): `mlp` (2E →
    `hidden` → 1, GELU, over [e, logit(e)]), `linear` (E → 1 over e) or `linear-logit` (2E → 1 over [e, logit(e)]:
    each value weighs on either scale, so that a neighbour mean near 0 or 1 can count more). The offset's last layer
    starts at zero, so at step 0 the score is the LLM's. Raises ValueError on an unknown offset name."""

    def __init__(self, dim: int, out_dim: int, connector: str = "mlp2x_gelu", hidden: int = 32,
                 offset: str = "mlp") -> None:
        super().__init__()
        if offset not in OFFSETS:
            raise ValueError(f"unknown evidence offset {offset!r}; use one of {', '.join(OFFSETS)}")
        self.dim, self.offset_form = dim, offset
        self.token = build_connector(connector, 2 * dim, out_dim)
        self.offset = (nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1)) if offset == "mlp"
                       else nn.Sequential(nn.Linear(2 * dim if offset == "linear-logit" else dim, 1)))
        nn.init.zeros_(self.offset[-1].weight)
        nn.init.zeros_(self.offset[-1].bias)

    def inputs(self, evidence: torch.Tensor) -> torch.Tensor:
        if evidence.ndim != 2 or evidence.shape[1] != self.dim:
            raise ValueError(f"evidence must be (candidates, {self.dim}), got {tuple(evidence.shape)}")
        e = evidence.float().clamp(1e-3, 1 - 1e-3)
        return torch.cat([e, torch.log(e) - torch.log1p(-e)], dim=-1)             # (n, 2E)

    def logit_offset(self, evidence: torch.Tensor) -> torch.Tensor:
        """(n, E) evidence → (n,) offset to the Yes−No logit."""
        return self._offset(self.inputs(evidence))

    def _offset(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset(x[:, :self.dim] if self.offset_form == "linear" else x).squeeze(-1)

    def forward(self, evidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs(evidence)                                                 # read once for both
        return self.token(x), self._offset(x)                                      # (n, H), (n,)


class CapabilityEncoder(nn.Module):
    """Trainable part of the capability encoder: features (M, N, F) → soft tokens (M, N_tok, H).

    No normalisation of the inputs: the absolute level of the outcome columns is the signal.
    N_tok = (N when `num_soft_tokens` is 0, else `num_soft_tokens`) + `instruction_tokens`; the last
    `instruction_tokens` are pooled by the instruction, whose sentence embedding (M, D) `forward` then needs.
    `key_dim` D: the leading feature columns that embed each row (the sentence encoder's width).
    `evidence_dim` E > 0 adds one more token per candidate from its aptitude evidence for the instruction, (M, E),
    which `forward` then needs; `evidence_offset` gives its learned offset to the Yes−No logit, whose form
    (`mlp` or `linear`, `EvidenceEncoder`) the argument of the same name chooses.
    """

    def __init__(self, in_dim: int, out_dim: int, connector: str = "mlp2x_gelu", num_soft_tokens: int = 0,
                 instruction_tokens: int = 0, key_dim: int = 0, evidence_dim: int = 0,
                 evidence_offset: str = "mlp") -> None:
        super().__init__()
        if instruction_tokens and not 0 < key_dim <= in_dim:
            raise ValueError(f"instruction pooling needs the key width (0 < key_dim <= {in_dim}), got {key_dim}")
        self.in_dim, self.out_dim, self.num_soft_tokens = in_dim, out_dim, num_soft_tokens
        self.instruction_tokens, self.key_dim = instruction_tokens, key_dim
        self.connector = build_connector(connector, in_dim, out_dim)
        self.pool = QueryPool(num_soft_tokens, out_dim) if num_soft_tokens > 0 else None
        self.instruction_pool = InstructionPool(instruction_tokens, key_dim) if instruction_tokens > 0 else None
        self.evidence_dim = evidence_dim
        self.evidence = (EvidenceEncoder(evidence_dim, out_dim, connector, offset=evidence_offset)
                         if evidence_dim > 0 else None)

    def num_tokens(self, num_features: int) -> int:
        """Soft tokens per candidate for N feature rows."""
        return (self.num_soft_tokens or num_features) + self.instruction_tokens + (1 if self.evidence_dim else 0)

    def evidence_offset(self, evidence: torch.Tensor | None) -> torch.Tensor | None:
        """The learned Yes−No logit offset (M,) of (M, E) evidence; None without an evidence encoder."""
        if self.evidence is None:
            return None
        return self.evidence.logit_offset(self._check_evidence(evidence))

    def _check_evidence(self, evidence: torch.Tensor | None) -> torch.Tensor:
        if evidence is None:
            raise ValueError(f"this capability encoder reads aptitude evidence (model.evidence): pass the (M, "
                             f"{self.evidence_dim}) evidence of the candidates")
        return evidence

    def connector_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The connector's token of each feature row, (M, N, F) → (M, N, H): they depend on the candidate alone,
        so a router computes them once per candidate and passes them to `forward`. Raises ValueError on a shape
        that does not fit."""
        self._check_features(features)
        return self.connector(features)

    def _check_features(self, features: torch.Tensor) -> None:
        if features.ndim != 3 or features.shape[-1] != self.in_dim:
            raise ValueError(f"capability features must be (models, rows, {self.in_dim}), got {tuple(features.shape)}")

    def forward(self, features: torch.Tensor, instruction: torch.Tensor | None = None,
                evidence: torch.Tensor | None = None, connector_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """(M, N, F) features → (M, N_tok, H) soft tokens; `connector_tokens` (M, N, H): theirs
        (`connector_tokens`) where the caller already has them."""
        self._check_features(features)
        if connector_tokens is None:
            tokens = self.connector(features)                                      # (M, N, H)
        elif connector_tokens.shape != (*features.shape[:2], self.out_dim):
            raise ValueError(f"connector tokens must be {(*features.shape[:2], self.out_dim)}, got "
                             f"{tuple(connector_tokens.shape)}; pass CapabilityEncoder.connector_tokens(features)")
        else:
            tokens = connector_tokens
        out = self.pool(tokens) if self.pool is not None else tokens               # (M, N_tok, H)
        if self.evidence is not None:
            evidence = self._check_evidence(evidence)
            if evidence.shape[0] != features.shape[0]:
                raise ValueError(f"{evidence.shape[0]} evidence rows for {features.shape[0]} candidates")
            out = torch.cat([out, self.evidence(evidence.to(out.device))[0][:, None]], dim=1)  # (M, N_tok + 1, H)
        if self.instruction_pool is None:
            return out
        if instruction is None or instruction.shape != (features.shape[0], self.key_dim):
            got = None if instruction is None else tuple(instruction.shape)
            raise ValueError(f"instruction pooling needs one ({self.key_dim},) instruction embedding per candidate "
                             f"({features.shape[0]}), got {got}")
        pooled = self.instruction_pool(tokens, features[..., :self.key_dim], instruction.to(tokens.dtype))
        return torch.cat([out, pooled], dim=1)                                     # (M, N_tok + k_x, H)

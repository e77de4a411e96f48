"""Frozen lower layers of the router LLM, and the cache of their output for each instruction.

    lower = LowerLayers(decoder, 26)                          # the first 26 layers, frozen, no LoRA
    states = lower(ids, mask)                                 # (B, P) token ids → (B, P, H) hidden states at layer 26
    cache = StateCache(root, lower.fingerprint)               # one folder per (backbone weights, cut layer)
    cache.fill(lower, prefixes, pad_id)                       # computes what is missing, in safetensors shards

With `model.frozen_layers = n` the router LLM's lower n layers carry no LoRA and read only the instruction's prefix
(template head, instruction, template tail). Their output for an instruction therefore never changes during
training: it is computed once, stored, and read back by every later step and run (prefill-activation routers read
frozen mid-layer states the same way; LLaMA-Adapter puts its trainable prompts only in the topmost layers).

The cache is keyed by what determines a state exactly: the folder by the sha256 of the backbone's name, the cut
layer, its config and the lower layers' weights (`LowerLayers.fingerprint`), each entry by the sha256 of its prefix's token
ids (so another template, tokenizer or `max_instruction_tokens` misses instead of reading a stale state). Each shard
names its fingerprint in its metadata; a shard of another fingerprint, or an entry of the wrong shape, is not used
(it is reported once and its states are computed again).
"""
from __future__ import annotations

import copy
import hashlib
import time
import uuid
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn
from tqdm.auto import tqdm

from modelsat.io_utils import atomic_write_bytes

SHARD_SIZE = 512
"""Entries per shard file: an interrupted fill loses at most one shard of work."""


def prefix_key(ids: list[int]) -> str:
    """The cache key of one prefix: sha256 of its token ids (int64, little-endian)."""
    return hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()


class LowerLayers(nn.Module):
    """The lower `n` decoder layers of an LLM (with its token embeddings and rotary embedding, without the final
    norm), frozen: (B, P) token ids and a (B, P) mask of real tokens → (B, P, H) hidden states after layer n.

    Built by composing the decoder's own modules into a second instance of the decoder's class (constructed on the
    meta device, so nothing is allocated twice), so the attention and masking code are the library's own.
    `fingerprint`: sha256 of `name`, n and the lower layers' and embeddings' weights. Raises ValueError where the
    decoder has no `layers`/`embed_tokens`/`rotary_emb`/`norm` (a Llama-style decoder is needed) or n is not below
    its number of layers."""

    def __init__(self, decoder: nn.Module, n: int, name: str) -> None:
        super().__init__()
        missing = [a for a in ("layers", "embed_tokens", "rotary_emb", "norm") if not hasattr(decoder, a)]
        if missing:
            raise ValueError(f"model.frozen_layers needs a Llama-style decoder; {type(decoder).__name__} has no "
                             f"{', '.join(missing)}")
        if not 0 < n < len(decoder.layers):
            raise ValueError(f"model.frozen_layers={n} must be between 1 and the {len(decoder.layers) - 1} layers "
                             "below the top one")
        config = copy.deepcopy(decoder.config)
        config.num_hidden_layers = n
        if getattr(config, "layer_types", None):
            config.layer_types = list(config.layer_types)[:n]
        with torch.device("meta"):
            body = type(decoder)(config)
        body.embed_tokens, body.rotary_emb = decoder.embed_tokens, decoder.rotary_emb
        body.layers = nn.ModuleList(list(decoder.layers)[:n])
        body.norm = nn.Identity()
        left = [k for k, v in list(body.named_parameters()) + list(body.named_buffers()) if v.is_meta]
        if left:
            raise ValueError(f"model.frozen_layers: {type(decoder).__name__} holds parts this split does not know "
                             f"({', '.join(left[:3])})")
        body.requires_grad_(False)
        self.body, self.n, self.name = body, n, name

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the backbone's name, the cut layer, its config (rope, norm epsilon, ...; with the library's
        version) and every weight below it (computed on first use)."""
        digest = hashlib.sha256(f"{self.name}\0{self.n}\0{self.body.config.to_json_string()}\0".encode())
        for key, value in sorted(self.body.state_dict().items()):
            digest.update(key.encode() + b"\0" + value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.body(input_ids=ids, attention_mask=mask.long(), use_cache=False).last_hidden_state


class StateCache:
    """Hidden states of instruction prefixes after the frozen lower layers, stored as safetensors shards under
    `root/<fingerprint[:16]>/` (outside git: train.py puts `root` beside the routing table), each shard named
    uniquely, so runs filling the same folder at once do not overwrite each other.

    `get(keys)` returns the stored (P_i, H) float32 states of the keys it has (a dict); `fill` computes and
    stores the missing ones. Shards of another fingerprint and entries of the wrong shape are skipped with one
    warning (`skipped` counts them)."""

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint[:16]
        self.fingerprint = fingerprint
        self.skipped = 0
        self._where: dict[str, Path] = {}
        for shard in sorted(self.dir.glob("shard-*.safetensors")) if self.dir.is_dir() else []:
            try:
                with safe_open(shard, "pt") as f:
                    meta = f.metadata() or {}
                    keys = list(f.keys())
            except (SafetensorError, OSError) as e:
                self._skip(f"{shard} is not readable ({e})", 1)
                continue
            if meta.get("fingerprint") != fingerprint:
                self._skip(f"{shard} was written for another backbone or cut layer (fingerprint "
                           f"{meta.get('fingerprint', '?')[:16]}, expected {fingerprint[:16]})", len(keys))
                continue
            self._where.update(dict.fromkeys(keys, shard))

    def _skip(self, why: str, n: int) -> None:
        self.skipped += n
        warnings.warn(f"state cache: {why}; its states are not used and will be computed again", stacklevel=3)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def get(self, keys: list[str], lengths: list[int], hidden: int) -> dict[str, torch.Tensor]:
        """The stored states of `keys` (each expected (lengths[i], hidden)); absent or mis-shaped ones are left out."""
        out = {}
        by_shard: dict[Path, list[tuple[str, int]]] = {}
        for key, n in zip(keys, lengths):
            if key in self._where:
                by_shard.setdefault(self._where[key], []).append((key, n))
        for shard, wanted in by_shard.items():          # read from the shard each time: no copy kept in memory
            try:
                with safe_open(shard, "pt") as f:
                    present = set(f.keys())
                    for key, n in wanted:
                        value = f.get_tensor(key) if key in present else None
                        if value is None or tuple(value.shape) != (n, hidden):
                            del self._where[key]
                            self._skip(f"entry {key[:12]} of {shard} " + ("is gone" if value is None else
                                       f"has shape {tuple(value.shape)}, expected ({n}, {hidden})"), 1)
                            continue
                        out[key] = value
            except (SafetensorError, OSError) as e:     # removed or rewritten since it was listed
                for key, _ in wanted:
                    self._where.pop(key, None)
                self._skip(f"{shard} can no longer be read ({e})", len(wanted))
        return out

    def fill(self, lower: LowerLayers, prefixes: list[list[int]], pad_id: int, batch_size: int = 16,
             desc: str = "caching instruction states") -> int:
        """Computes and stores the states of the prefixes not yet cached, `SHARD_SIZE` per shard file (each
        written atomically). Returns how many were computed. Raises ValueError where `lower` is not this
        cache's backbone."""
        if lower.fingerprint != self.fingerprint:
            raise ValueError("this state cache belongs to another backbone or cut layer")
        todo = [(key, p) for key, p in {prefix_key(p): p for p in prefixes}.items() if key not in self]
        todo.sort(key=lambda kp: len(kp[1]))                                  # similar lengths share a batch
        device = next(lower.parameters()).device
        pending: dict[str, torch.Tensor] = {}
        for start in tqdm(range(0, len(todo), batch_size), desc=desc, unit="batch", disable=not todo):
            part = todo[start:start + batch_size]
            width = max(len(p) for _, p in part)
            ids = torch.full((len(part), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.bool)
            for i, (_, p) in enumerate(part):
                ids[i, :len(p)], mask[i, :len(p)] = torch.tensor(p), True
            states = lower(ids.to(device), mask.to(device)).float().cpu()
            for i, (key, p) in enumerate(part):
                pending[key] = states[i, :len(p)].clone()
            if len(pending) >= SHARD_SIZE:
                self._write(pending)
                pending = {}
        if pending:
            self._write(pending)
        return len(todo)

    def _write(self, states: dict[str, torch.Tensor]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shard = self.dir / f"shard-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}.safetensors"  # unique
        atomic_write_bytes(shard, save(states, metadata={"fingerprint": self.fingerprint}))
        self._where.update(dict.fromkeys(states, shard))

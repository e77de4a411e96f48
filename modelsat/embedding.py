"""Sentence embeddings of instructions for the routers: the table's question texts encoded once and cached on disk.

    embed = cached_embedder(table, "all-minilm-l6-v2", Path("data/mmlu-pro/table"))
    vectors = embed(["What is 2+2?", ...])                    # (N, 384) float32; table texts come from the cache

The baselines (kNN, MLP, ...) read instructions through an `Embed`, the aptitude evidence and training read the
table's texts through the same cache, so a text is encoded once per encoder. `hashing_embed` is a bag of words
with no model, for tests and smoke runs.
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from modelsat.io_utils import atomic_write_bytes
from modelsat.pretrained import WINDOW_RULE, load_sentence_encoder

Embed = Callable[[list[str]], np.ndarray]
"""Texts → (N, D) float32 embeddings."""
logger = logging.getLogger(__name__)


def hashing_embed(texts: list[str], dim: int = 512) -> np.ndarray:
    """A cheap deterministic bag-of-words embedding (crc32-hashed lower-case words): for tests and smoke runs."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z0-9]+", t.lower()):
            out[i, zlib.crc32(w.encode()) % dim] += 1.0
    return out


def cached_embedder(table: Any, encoder: str = "all-minilm-l6-v2", cache_dir: Path | None = None) -> Embed:
    """Sentence embeddings of texts; the table's question texts are encoded once and kept in
    `<cache_dir>/embeddings-<encoder>.npz` (embeddings, question ids, sha256 of the encoder's reading rule for
    long texts + ids + texts; written atomically, recomputed when the table changes). Texts outside the table are
    encoded on the fly. `encoder="hash"` uses the hashed bag of words (no model)."""
    if encoder == "hash":
        return hashing_embed
    state: dict[str, Any] = {}

    def encode(texts: list[str]) -> np.ndarray:
        if "enc" not in state:
            state["enc"] = load_sentence_encoder(encoder)
        order = np.argsort([len(t) for t in texts], kind="stable")         # similar lengths share a batch: less padding
        out = np.empty((len(texts), state["enc"].dim), dtype=np.float32)
        out[order] = state["enc"].encode([texts[i] for i in order]).float().numpy()   # (N, D), progress bar inside
        return out

    def lookup() -> dict[str, np.ndarray]:
        if "rows" in state:
            return state["rows"]
        ids = table.questions["question_id"].astype(str).tolist()
        texts = table.questions["text"].astype(str).tolist()
        # WINDOW_RULE is in the key: long texts embedded another way are not reused
        digest = hashlib.sha256((WINDOW_RULE + "\0" + "\n".join(ids) + "\0" + "\n".join(texts)).encode()).hexdigest()
        path = cache_dir / f"embeddings-{re.sub(r'[^A-Za-z0-9._-]+', '_', encoder)}.npz" if cache_dir else None
        mat = None
        if path is not None and path.is_file():
            with np.load(path) as z:
                if str(z["sha256"]) == digest and len(z["embeddings"]) == len(ids):
                    mat = z["embeddings"]
        if mat is None:
            mat = encode(texts).astype(np.float32)
            if path is not None:
                buf = io.BytesIO()
                np.savez(buf, embeddings=mat, question_ids=np.array(ids), sha256=np.array(digest))
                try:
                    atomic_write_bytes(path, buf.getvalue())
                except OSError as e:
                    logger.warning("could not cache embeddings at %s: %s", path, e)
        state["rows"] = {t: mat[i] for i, t in enumerate(texts)}
        return state["rows"]

    def embed(texts: list[str]) -> np.ndarray:
        rows = lookup()
        missing = [t for t in dict.fromkeys(texts) if t not in rows]
        if missing:
            rows.update(zip(missing, encode(missing)))
        return np.stack([rows[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    return embed

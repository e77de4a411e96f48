"""The aptitude test taken by a Hugging Face causal LM run here: one next-token pass per batch of questions.

    df = run_aptitude("smollm2-135m-instruct", aptitude, Path("results.parquet"))   # question_id, score

A question scores 1 when the option letter with the highest next-token logit after "<question>\\nAnswer:" is the
stored answer. The same test through an OpenAI-compatible chat endpoint: `modelsat/examiner.py`.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from modelsat.aptitude import Aptitude, AptitudeError, graded_letters
from modelsat.io_utils import atomic_write_bytes, atomic_write_text
from modelsat.pretrained import load_llm


def _letter_tokens(tok: Any, letters: list[str]) -> tuple[str, dict[str, int]]:
    """Prompt suffix and one token id per letter: " A" after "Answer:", or "A" after "Answer: "."""
    for suffix, fmt in (("\nAnswer:", " {}"), ("\nAnswer: ", "{}")):
        enc = [tok.encode(fmt.format(L), add_special_tokens=False) for L in letters]
        if all(len(e) == 1 for e in enc) and len({e[0] for e in enc}) == len(letters):
            return suffix, {L: e[0] for L, e in zip(letters, enc)}
    raise AptitudeError("the model's tokenizer splits the option letters into several tokens; cannot score by letter")


def _predict_letters(llm: Any, tok: Any, prompts: list[str], letters: list[list[str]], token_of: dict[str, int]) -> list[str]:
    """The option letter with the highest next-token logit after each prompt (one left-padded forward pass)."""
    max_len = getattr(llm.config, "max_position_embeddings", None)
    enc = tok(prompts, return_tensors="pt", padding=True, truncation=max_len is not None, max_length=max_len)
    device = next(llm.parameters()).device
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)  # (B, T)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at each prompt's first token
    kw = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(llm.forward).parameters else {}
    with torch.no_grad():
        logits = llm(input_ids=ids, attention_mask=mask, position_ids=pos, **kw).logits[:, -1, :]  # (B, V)
    return [ls[int(torch.argmax(row[[token_of[L] for L in ls]]))] for row, ls in zip(logits, letters)]


def _read_partial(path: Path, header: dict[str, str], wanted: set[str]) -> dict[str, float]:
    """Scores already written by an interrupted run; the file is rewritten clean (without a line torn by a crash)."""
    if not path.exists():
        return {}
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AptitudeError(f"{path}: partial results that cannot be read ({type(e).__name__}: {e}); "
                            "delete it to start over") from e
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not records or records[0] != header:
        raise AptitudeError(f"{path} holds partial results of another run ({records[:1]}), not of {header}; "
                            "delete it to start over")
    done = {r["question_id"]: float(r["score"]) for r in records[1:]
            if isinstance(r, dict) and r.get("question_id") in wanted and isinstance(r.get("score"), (int, float))}
    lines = [header] + [{"question_id": q, "score": v} for q, v in done.items()]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in lines))
    return done


def run_aptitude(model: str, aptitude: Aptitude, out: Path, batch_size: int = 8) -> pd.DataFrame:
    """Take the aptitude test with a Hugging Face causal LM; write and return `question_id, score`.

    Each question is scored 1 when the option letter with the highest next-token logit after
    "<question>\\nAnswer:" is the stored answer. Finished batches go to `<out>.partial.jsonl`; a rerun
    skips them. `out` is written atomically as parquet or csv (by suffix).
    """
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise AptitudeError(f"output {out} must end in .parquet or .csv")
    if batch_size < 1:
        raise AptitudeError(f"batch_size must be positive, got {batch_size}")
    ids = aptitude.question_ids
    letters = graded_letters(aptitude)
    partial = out.with_name(out.name + ".partial.jsonl")
    header = {"model": model, "fingerprint": aptitude.fingerprint}
    done = _read_partial(partial, header, set(ids))
    todo = [q for q in ids if q not in done]
    if todo:
        llm, tok = load_llm(model)
        llm.eval()
        tok.padding_side, tok.truncation_side = "left", "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        suffix, token_of = _letter_tokens(tok, [chr(c) for c in range(ord("A"), ord("Z") + 1)
                                         if any(chr(c) in ls for ls in letters.values())])
        todo.sort(key=lambda q: -len(aptitude.texts[q]))  # similar lengths together: less padding
        if not partial.exists():
            atomic_write_text(partial, json.dumps(header) + "\n")
        with open(partial, "a", encoding="utf-8") as f, torch.no_grad():
            for i in tqdm(range(0, len(todo), batch_size), desc=f"aptitude test of {model}", unit="batch"):
                batch = todo[i:i + batch_size]
                prompts = [aptitude.texts[q] + suffix for q in batch]
                preds = _predict_letters(llm, tok, prompts, [letters[q] for q in batch], token_of)
                for q, p in zip(batch, preds):
                    done[q] = 1.0 if p == aptitude.answers[q] else 0.0
                    f.write(json.dumps({"question_id": q, "score": done[q]}) + "\n")
                f.flush()
                os.fsync(f.fileno())
    df = pd.DataFrame({"question_id": ids, "score": [done[q] for q in ids]})
    atomic_write_bytes(out, df.to_parquet(index=False) if out.suffix == ".parquet" else df.to_csv(index=False).encode("utf-8"))
    partial.unlink(missing_ok=True)
    return df

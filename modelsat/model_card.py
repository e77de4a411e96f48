"""The model card of a router checkpoint: the `README.md` the Hugging Face hub shows (metadata + text).

    card = model_card(config, aptitude, zoo, metrics, splits)     # a huggingface_hub.ModelCard
    card.save(directory / "README.md")

It says what a user needs before routing with the checkpoint: the backbones (by their portable names), the aptitude
test a new model must take to join, the data it was trained on, the zoo it ships with and the figures measured at
the end of training (`metrics.json`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from modelsat.aptitude import Aptitude
from modelsat.checkpoint import shipped_routers
from modelsat.config import Config
from modelsat.pretrained import OFFLINE_PACKAGES, SMOLLM2, portable_name
from modelsat.zoo import Zoo

_VAL_FIGURES = (("accuracy", "routing accuracy (the chosen model answers correctly)"),
                ("best_single", "best single model's accuracy"), ("oracle", "oracle accuracy"),
                ("interaction_auc", "interaction AUC of p_correct (right vs wrong models within an instruction)"),
                ("auc", "AUC of p_correct over all (instruction, model) pairs"), ("brier", "Brier score of p_correct"))


def _source(name: str) -> str:
    """Where a backbone comes from: its hub id and, for a built-in one, the offline package modelsat reads first."""
    package = OFFLINE_PACKAGES.get(name)
    form = " (its Q4_1 GGUF, de-quantized to fp32)" if name == SMOLLM2 else ""
    return portable_name(name) + (f"; offline from the package {package}{form}" if package else "")


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(config: Config, aptitude: Aptitude, zoo: Zoo, metrics: dict | None = None,
               splits: dict | None = None, name: str = "modelsat router") -> ModelCard:
    """The card of a router: metadata (library, base model by its hub id, tags) and a text naming the backbones,
    the aptitude test, the training data, the zoo and the measured figures. `metrics` and `splits` are the
    checkpoint's `metrics.json` and `splits.json` (either may be None: that section then says it is unknown)."""
    m, d = config.model, config.data
    trained = set(d.train_models) if d.train_models else set(zoo.names) - set(d.unseen_models)
    layers = f"the lower {m.num_layers} layers" if m.num_layers else "all layers"
    if m.frozen_layers:
        layers += f" (the lower {m.frozen_layers} frozen, LoRA above them)"
    base = portable_name(m.llm)
    hub_id = base.count("/") == 1 and not base.startswith((".", "/", "~")) and not Path(base).expanduser().exists()
    data = ModelCardData(library_name="modelsat", base_model=base if hub_id else None, license="apache-2.0",
                         tags=["modelsat", "llm-routing", "router", "model-sat", "lora", "peft"])
    lines = [f"# {name}", "",
             "A modelsat router (Model-SAT, *Capability Instruction Tuning*, "
             "AAAI 2025). For an instruction it ranks the candidate LLMs of its zoo by p_correct, the probability that "
             "the candidate answers correctly, minus an optional cost term, without running any candidate. A new LLM "
             "joins the zoo by taking the aptitude test below; no retraining.", "",
             "```python", "from modelsat import Router", "",
             f"router = Router.from_pretrained({json.dumps(name if name in shipped_routers() else 'PATH_OR_HUB_ID')})",
             "router.rank(\"What is the derivative of x^2?\", top_k=3)", "```", "",
             "## Backbones", "",
             f"- Router LLM: `{m.llm}` ({_source(m.llm)}), {layers}, LoRA r={m.lora_r}, alpha={m.lora_alpha} on "
             f"{', '.join(m.lora_targets)}. The adapter in this folder is for that truncated model: load it with "
             "modelsat, which builds the same model from `config.yaml`.",
             f"- Sentence encoder: `{m.sentence_encoder}` ({_source(m.sentence_encoder)}), frozen.",
             f"- Capability encoder: `{m.encoder_mode}` features through a `{m.connector}` connector into "
             f"{m.num_soft_tokens} soft tokens per candidate (+{m.instruction_tokens} instruction-pooled); "
             + (("evidence from each candidate's results bank (its aptitude answers and its graded results, "
                 "`zoo/bank.sqlite`: `modelsat zoo add-results` grows it without retraining)"
                 if m.evidence_source == "bank" else "evidence from the aptitude answers alone")
                if m.evidence else "no evidence read") + ".", "",
             "## Aptitude test", "",
             f"{aptitude.num_tasks} tasks × {aptitude.per_task} questions ({len(aptitude.question_ids)} in all; "
             f"fingerprint `{aptitude.fingerprint[:12]}`). A model joins with its per-question results: "
             "`modelsat aptitude run` (a local Hugging Face model or an OpenAI-compatible endpoint), then "
             "`modelsat zoo add`.", "",
             "## Training data", ""]
    if splits:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items() if isinstance(v, list))
        lines.append(f"Source `{d.source}` (instructions: {sizes}; split {d.split_by}, seed {d.seed}).")
    else:
        lines.append(f"Source `{d.source}` (the split is not recorded in this folder).")
    lines += ["", "## Zoo (when this card was written)", "", "Candidates marked * were never trained on: they joined "
              "through their aptitude results alone. `modelsat zoo list --checkpoint DIR` shows the zoo as it is now "
              "(`modelsat zoo add/remove` change it without rewriting this card).", "", "| candidate | aptitude accuracy | cost |", "|---|---|---|"]
    lines += [f"| {e.name}{' *' if e.name in d.unseen_models or e.name not in trained else ''} | {e.accuracy:.3f} | "
              f"{'' if e.cost is None else f'{e.cost:g} {e.cost_unit}'.strip()} |"
              for e in (zoo.get(n) for n in zoo.names)]
    lines += ["", "## Measured at the end of training", ""]
    val = (metrics or {}).get("val") or {}
    if val:
        lines.append(f"On the validation split ({val.get('n', '?')} instructions, step {metrics.get('step', '?')}):")
        lines += [f"- {label}: {_figure(val[key])}" for key, label in _VAL_FIGURES if key in val]
    else:
        lines.append("No validation figures are recorded in this folder.")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")

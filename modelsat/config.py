"""Typed configuration: dataclasses loaded from YAML in `configs/`, overridden by `key.sub=value` arguments.

    cfg = load_config("configs/default.yaml", ["train.lr=1e-4", "model.connector=linear"])
    cfg.save(run_dir / "config.yaml")        # the resolved config travels with every checkpoint

Why one module: about half are the typed fields with their one-line docs (which `train --help`
reads from this file); the loader that checks them needs every section.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from modelsat.io_utils import atomic_write_text


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


SEED_MAX = 2**32 - 1  # numpy's legacy seeding (np.random.seed, used by accelerate's set_seed) stops here


def _at_least(section: Any, prefix: str, low: int, *names: str) -> None:
    """Each integer field `names` of `section` is >= low."""
    for name in names:
        value = getattr(section, name)
        _check(value >= low, f"{prefix}.{name} must be an integer >= {low}, got {value}")


def _at_most(section: Any, prefix: str, high: int, *names: str) -> None:
    """Each integer field `names` of `section` is <= high: a bound where a larger value is meaningless (a window of
    more tokens than any LLM reads, more steps than any run takes), so a typo is not a run that never ends."""
    for name in names:
        value = getattr(section, name)
        _check(value <= high, f"{prefix}.{name} must be an integer <= {high:,}, got {_shown(value)}")


def _not_blank(section: Any, prefix: str, *names: str) -> None:
    """Each string field `names` of `section` holds something besides spaces."""
    for name in names:
        _check(str(getattr(section, name)).strip() != "", f"{prefix}.{name} must not be empty")


def _names(values: list[str], where: str) -> None:
    """A list of model or module names: no blank entry, none twice."""
    blank = [v for v in values if not v.strip()]
    _check(not blank, f"{where} holds an empty name: {values!r}")
    twice = sorted({v for v in values if values.count(v) > 1})
    _check(not twice, f"{where} names {twice} more than once")


@dataclass
class DataConfig:
    source: Literal["mmlu-pro", "mmlu-pro-raw", "routerdc", "routerbench", "leaderboard", "table", "demo"] = "mmlu-pro"
    """Converter that reads `input` (see `modelsat data build`); `table` reads a folder or one file of text, model,
    score rows (docs/own-data.md); `demo` needs no input (a small made-up table, `modelsat/data/demo.py`)."""
    input: str = "../shared/data/mmlu_pro"
    """Where the public data lies (a folder or file in the source's published format)."""
    download: bool = False
    """Fetch `input` from its public home first when it is absent (needs a network)."""
    table_dir: str = "data/mmlu-pro/table"
    """The routing table built from `input`; built on first use, reused afterwards."""
    aptitude: str = "data/mmlu-pro/aptitude.json"
    """The aptitude test; built from the table on first use."""
    splits: str = "data/mmlu-pro/splits.json"
    """Train/val/test question ids; built on first use."""
    num_tasks: int = 50
    """Tasks in the aptitude test."""
    per_task: int = 20
    """Questions per aptitude task."""
    tasks_by: Literal["task", "task_or_source", "cluster"] = "task"
    """Aptitude tasks from the table's `task` field, from `task` or else `source` (so that questions without a
    subject get tasks too), or from K-means clusters of question embeddings."""
    source_tasks: int = 0
    """Extra aptitude tasks, one per `source` of the train-split questions that have no `task` (on MMLU-Pro:
    STEMEZ, TheoremQA, SciBench), drawn after the splits from the train split alone, so that val and test stay
    those of the `num_tasks` test. Needs split_by=random."""
    top_up: int = 0
    """Questions added to each aptitude task after the splits are made (and after `source_tasks`), drawn from the
    same task's train-split questions, so that val and test stay those of the plain test; tasks with fewer such
    questions are dropped. Needs split_by=random and tasks named by the table (not `cluster`)."""
    keep_per_task: int = 0
    """Cut the built test to the first `keep_per_task` questions of each task in question-id order (0: keep all),
    after `source_tasks` and `top_up`; the splits stay those made around the whole test. Needs split_by=random. A
    smaller test is a cheaper one for a new model to join by (issue 19, ablation f: 49 tasks x 40 beats 49 x 10 on
    train's cross-validation by less than the margin a larger test needed, and trails it on val; dev/LOG.md)."""
    val: float = 0.1
    """Fraction of the non-aptitude questions held out for validation."""
    test: float = 0.2
    """Fraction held out for the test split (reported once, never tuned on)."""
    split_by: Literal["random", "source"] = "random"
    """`random`: val/test drawn per category. `source`: the dataset's own split, read from each question's
    source file name: `*_train`/`*-train` files give train and val, every other file is test (RouterBench,
    RouterDC; files without a split, such as RouterDC's out-of-distribution sets, are test only), and the
    aptitude test is drawn from the train files."""
    seed: int = 0
    """Seed of the aptitude test and the splits."""
    unseen_models: list[str] = field(default_factory=list)
    """Models never used in training; they join the zoo through their aptitude results only."""
    train_models: list[str] = field(default_factory=list)
    """Models used in training (empty: every model of the table except `unseen_models`)."""
    zoos: dict[str, list[str]] = field(default_factory=dict)
    """Named candidate pools for evaluation."""

    def __post_init__(self) -> None:
        _check(0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1,
               f"data.val={self.val} and data.test={self.test} must be fractions in [0, 1) summing to less than 1")
        _not_blank(self, "data", "table_dir", "aptitude", "splits")
        _check(len({Path(self.table_dir), Path(self.aptitude), Path(self.splits)}) == 3,
               "data.table_dir, data.aptitude and data.splits must be three different paths (each is written)")
        _at_least(self, "data", 1, "num_tasks", "per_task")
        _at_least(self, "data", 0, "source_tasks", "top_up", "keep_per_task", "seed")
        _at_most(self, "data", 10**6, "num_tasks", "per_task", "source_tasks", "top_up", "keep_per_task")
        _check(self.keep_per_task <= self.per_task + self.top_up,
               f"data.keep_per_task={self.keep_per_task} is more than the test's {self.per_task + self.top_up} "
               "questions per task (per_task + top_up); lower it, or 0 to keep them all")
        _check(not self.keep_per_task or self.split_by == "random",
               "data.keep_per_task needs data.split_by=random (source splits are made around the test itself)")
        _check(self.seed <= SEED_MAX, f"data.seed must be an integer in [0, {SEED_MAX}], got {self.seed}")
        _check(not self.source_tasks or self.split_by == "random",
               "data.source_tasks needs data.split_by=random (with split_by=source the test is drawn from the train "
               "files already)")
        _check(not self.top_up or (self.split_by == "random" and self.tasks_by != "cluster"),
               "data.top_up needs data.split_by=random and data.tasks_by=task or task_or_source")
        _names(self.unseen_models, "data.unseen_models")
        _names(self.train_models, "data.train_models")
        overlap = set(self.unseen_models) & set(self.train_models)
        _check(not overlap, f"models both in data.train_models and data.unseen_models: {sorted(overlap)}")
        for zoo, members in self.zoos.items():
            _check(zoo.strip() != "", "data.zoos has a zoo with an empty name")
            _check(len(members) > 0, f"data.zoos.{zoo} is an empty list; name its models or remove it")
            _names(members, f"data.zoos.{zoo}")


@dataclass
class ModelConfig:
    llm: str = "smollm2-135m-instruct"
    """Router LLM: `smollm2-135m-instruct` (offline package), `tiny-llama` (tests), or a HF id / local folder."""
    num_layers: int = 0
    """Keep only the first n decoder layers of the LLM (0: all); the final norm and output rows stay."""
    frozen_layers: int = 0
    """The lower n of the kept layers are frozen, carry no LoRA and read only the instruction (template head,
    instruction, template tail): their output for an instruction never changes, so train.py computes it once and
    caches it (`modelsat/states.py`). The capability soft tokens and the inquiry prompt enter at layer n, where
    LoRA trains (LLaMA-Adapter puts its prompts in the topmost layers, Zhang et al. 2023). 0: every kept layer
    carries LoRA and reads the whole sequence."""
    sentence_encoder: str = "all-minilm-l6-v2"
    """Frozen sentence encoder: `all-minilm-l6-v2` (offline package), `tiny-encoder` (tests), or a HF id / folder."""
    encoder_mode: Literal["structured", "text"] = "structured"
    """Capability encoder: per-task structured features, or the paper's capability text."""
    connector: Literal["linear", "mlp2x_gelu"] = "mlp2x_gelu"
    """Projector from capability features to the LLM's embedding space (as LLaVA's)."""
    num_soft_tokens: int = 0
    """Soft tokens per candidate: 0 keeps one per task (structured) or per text chunk; k > 0 pools to k by learned queries."""
    instruction_tokens: int = 0
    """Extra soft tokens per candidate pooled over its per-task tokens by the instruction's sentence embedding
    (matched to the task embeddings): the candidate's results on the tasks that resemble the instruction. 0: none."""
    evidence: bool = False
    """One more soft token per candidate, and a learned offset to its Yes−No logit, from its evidence for the
    instruction (`modelsat/evidence.py`: its results on the questions nearest the instruction and in the
    instruction's likely category, how many and how near); the router learns how to weigh them. Needs the aptitude
    questions' embeddings and a category classifier, which train.py computes and stores in the checkpoint."""
    evidence_source: Literal["bank", "aptitude"] = "bank"
    """What the evidence reads: `bank`, each model's aptitude answers and its results bank (`modelsat/bank.py`;
    train-split labels, a user's graded prompts, feedback), 13 values; `aptitude`, the aptitude answers alone with the
    9 values of modelsat 0.2 (its checkpoints; `modelsat checkpoint upgrade` sets it)."""
    evidence_offset: Literal["mlp", "linear", "linear-logit"] = "mlp"
    """Form of the evidence's learned logit offset: `mlp` (2E → 32 → 1 over [e, logit e]), `linear` (one weight
    per evidence value; chosen by pooled 5-fold CV of train, dev/LOG.md 2026-11-30) or `linear-logit` (one weight
    per value and one per its logit; tried on RouterBench, no committed router uses it: dev/LOG.md 2026-12-06)."""
    text_group_size: int = 5
    """Tasks per capability-text chunk in `text` mode (each chunk is encoded whole: no task is truncated away)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])
    """Linear layers of the LLM that get LoRA adapters."""
    max_instruction_tokens: int = 256
    """Instructions longer than this lose their middle (the first third and the end, with the options, are kept)."""
    instruction_template: str = "Instruction:\n{instruction}\n\nCandidate model capability:"
    """Text before the capability tokens; `{instruction}` is replaced."""
    inquiry_prompt: str = "\nCan this model answer the instruction correctly? Answer Yes or No.\nAnswer:"
    """Text after the capability tokens; the next token is scored as Yes vs No."""
    yes_token: str = " Yes"
    """Token read as `Yes`."""
    no_token: str = " No"
    """Token read as `No`."""

    def __post_init__(self) -> None:
        _not_blank(self, "model", "llm", "sentence_encoder", "yes_token", "no_token")
        _at_least(self, "model", 0, "num_layers", "frozen_layers", "num_soft_tokens", "instruction_tokens")
        _check(not self.num_layers or self.frozen_layers < self.num_layers,
               f"model.frozen_layers={self.frozen_layers} must be below model.num_layers={self.num_layers}: at least "
               "one layer must train")
        _at_least(self, "model", 1, "text_group_size", "lora_r", "lora_alpha")
        _at_least(self, "model", 9, "max_instruction_tokens")
        _at_most(self, "model", 32768, "max_instruction_tokens", "instruction_tokens", "num_soft_tokens")
        _at_most(self, "model", 10**4, "num_layers", "frozen_layers", "text_group_size")
        _at_most(self, "model", 10**5, "lora_r", "lora_alpha")
        _check(0 <= self.lora_dropout < 1, f"model.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        _check(len(self.lora_targets) > 0, "model.lora_targets must name at least one layer (e.g. q_proj)")
        _names(self.lora_targets, "model.lora_targets")
        _check("{instruction}" in self.instruction_template,
               "model.instruction_template must contain '{instruction}'")
        _check(self.yes_token != self.no_token,
               f"model.yes_token and model.no_token must differ, both are {self.yes_token!r}")


@dataclass
class TrainConfig:
    out_dir: str = "runs/run"
    """Run folder: step checkpoints, `final/`, logs."""
    epochs: int = 1
    """Passes over the training instructions."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: no limit)."""
    max_minutes: float = 0.0
    """Stop (and save `final/`) once training has run this long (0: no limit); a budget cap for CPUs."""
    max_train_instructions: int = 0
    """Use at most this many training instructions, sampled with the seed (0: all)."""
    max_val_instructions: int = 500
    """Validate routing accuracy on at most this many val instructions (0: all)."""
    group_size: int = 8
    """Candidates per training group (K)."""
    grouping: Literal["instruction", "model"] = "instruction"
    """Instruction-centred groups (this project) or the paper's model-centred groups."""
    batch_size: int = 4
    """Groups per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 2e-4
    """Learning rate of the LoRA parameters."""
    connector_lr: float = 1e-3
    """Learning rate of the connector (and pooler)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    stage1_steps: int = 0
    """Connector-only first stage (LoRA frozen) of this many steps, as in the paper (0: none)."""
    pointwise_weight: float = 1.0
    """Weight of the binary cross-entropy on p(Yes)."""
    listwise_weight: float = 1.0
    """Weight of the listwise cross-entropy over each group."""
    pairwise_weight: float = 0.0
    """Weight of the pairwise logistic loss over each group's (right, wrong) pairs of one instruction (RankNet,
    Burges et al. 2005): softplus(z_wrong - z_right), averaged over the pairs. It acts only within an instruction."""
    evidence_fit_epochs: int = 0
    """With model.evidence: before the LLM trains, fit the evidence's logit offset alone on the evidence of every
    (train instruction, training model) pair for this many full-batch Adam epochs, then freeze it, so that the LLM
    learns what the aptitude evidence does not explain (a stage 0, like the paper's connector stage). 0: none (the
    offset trains with the LLM)."""
    evidence_fit_loss: Literal["listwise", "pairwise", "bce+listwise"] = "listwise"
    """The stage-0 loss: train.py's listwise cross-entropy, pairwise logistic loss, or BCE + listwise (chosen by
    pooled 5-fold CV of train: listwise, dev/LOG.md 2026-11-30)."""
    evidence_fit_lr: float = 0.01
    """Adam learning rate of the stage-0 fit."""
    evidence_fit_tier: int = 0
    """Stage 0's groups: 0, one group per instruction of every training model (the loss over all of them at once);
    N >= 2, the training models sorted by train accuracy and cut into tiers of at most N neighbours, one group per
    (instruction, tier), so that the fit weighs what tells like models apart (`modelsat.loss.tier_groups`)."""
    bank_labels: bool = True
    """With model.evidence_source=bank: the training models' banks hold their train-split labels (in training out of
    fold, so that no instruction sees its own result; whole in the checkpoint's `zoo/bank.sqlite`). false: their
    banks hold nothing beyond the aptitude answers (the evidence of a model that joined by its aptitude test)."""
    bank_folds: int = 5
    """Folds of the train split for the out-of-fold evidence: an instruction's evidence reads the other folds' labels."""
    bank_thin: float = 0.5
    """Fraction of the (instruction, training model) pairs whose bank is thinned at random to the aptitude answers
    plus 0, 100, 500 or 2,000 of its other-fold labels (`training_evidence.THIN_LEVELS`), so that the router keeps
    working for a model that joined by its aptitude test alone and learns how far to trust thin evidence."""
    save_every: int = 200
    """Checkpoint every N optimizer steps (0: only at the end)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Mixed precision through accelerate (keep `no` on CPU)."""
    cache_states: bool = True
    """With model.frozen_layers > 0: compute the frozen lower layers' output for every instruction the run reads
    (its steps' groups and validation) once, before training, and keep it in `<data.table_dir>/states/`
    (`modelsat/states.py`, reused by later runs of the same backbone and cut); false computes it again at every
    step (same result, slower)."""
    resume: bool = False
    """Continue from the last step checkpoint in `out_dir` with the same data order."""
    seed: int = 0
    """Seed of model init, sampling and data order."""
    log_with: str = "tensorboard"
    """accelerate tracker (`tensorboard`, `wandb`, or `none`)."""

    def __post_init__(self) -> None:
        _not_blank(self, "train", "out_dir", "log_with")
        _at_least(self, "train", 1, "epochs", "group_size", "batch_size", "grad_accum")
        _at_least(self, "train", 0, "max_steps", "max_train_instructions", "max_val_instructions", "warmup_steps",
                  "stage1_steps", "evidence_fit_epochs", "save_every", "seed")
        _at_most(self, "train", 10**9, "max_steps", "max_train_instructions", "max_val_instructions", "warmup_steps",
                 "stage1_steps", "evidence_fit_epochs", "save_every")
        _at_most(self, "train", 10**6, "epochs", "group_size", "batch_size", "grad_accum")
        _check(self.seed <= SEED_MAX, f"train.seed must be an integer in [0, {SEED_MAX}], got {self.seed}")
        _check(self.evidence_fit_tier == 0 or 2 <= self.evidence_fit_tier <= 10**6,
               f"train.evidence_fit_tier must be 0 or an integer >= 2, got {self.evidence_fit_tier}")
        _check(2 <= self.bank_folds <= 100, f"train.bank_folds must be an integer in [2, 100], got {self.bank_folds}")
        _check(math.isfinite(self.bank_thin) and 0 <= self.bank_thin <= 1,
               f"train.bank_thin must be a number in [0, 1], got {self.bank_thin}")
        for name in ("lr", "connector_lr", "evidence_fit_lr"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value > 0, f"train.{name} must be a finite number > 0, got {value}")
        for name in ("max_minutes", "weight_decay"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, f"train.{name} must be a finite number >= 0, got {value}")
        weights = (self.pointwise_weight, self.listwise_weight, self.pairwise_weight)
        _check(all(math.isfinite(w) and w >= 0 for w in weights) and sum(weights) > 0,
               "train.pointwise_weight, train.listwise_weight and train.pairwise_weight must be finite numbers >= 0 "
               f"and not all 0, got {', '.join(map(str, weights))}")
        _check(not self.pairwise_weight or self.grouping == "instruction",
               "train.pairwise_weight > 0 needs train.grouping=instruction (its pairs share one instruction)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(not self.train.evidence_fit_epochs or self.model.evidence,
               f"train.evidence_fit_epochs={self.train.evidence_fit_epochs} fits the aptitude evidence's offset: it "
               "needs model.evidence=true")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML (atomically)."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _shown(value: Any) -> str:
    """`value` as in an error message: repr, cut short (a YAML value may be huge)."""
    show = reprlib.Repr()
    show.maxstring, show.maxother, show.maxlist, show.maxdict, show.maxlevel = 80, 80, 8, 8, 2
    return show.repr(value)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one YAML value to the field's annotated type."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        _check(value in typing.get_args(tp), f"{where}: {_shown(value)} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        _check(isinstance(value, bool), f"{where}: expected true/false, got {_shown(value)}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), f"{where}: expected an integer, got {_shown(value)}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads `1e-4` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: expected a number, got {_shown(value)}")
        _check(abs(value) < 2**1024 and math.isfinite(value), f"{where}: expected a finite number, got {_shown(value)}")
        return float(value)
    if tp is str:
        _check(isinstance(value, (str, int, float)) and not isinstance(value, bool), f"{where}: expected a string, got {_shown(value)}")
        return str(value)
    if origin is list:
        if isinstance(value, str):  # `key=a,b,c` on the command line
            value = [v for v in value.split(",") if v]
        _check(isinstance(value, list), f"{where}: expected a list, got {_shown(value)}")
        return [_coerce(v, typing.get_args(tp)[0], where) for v in value]
    if origin is dict:
        _check(isinstance(value, dict), f"{where}: expected a mapping, got {_shown(value)}")
        key_tp, value_tp = typing.get_args(tp)
        return {_coerce(k, key_tp, where): _coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    return value


def _unknown(keys: list[Any], where: str, names: set[str]) -> ConfigError:
    """The error for keys that are not fields of the section `where`, with the closest field and the known ones."""
    close = difflib.get_close_matches(str(keys[0]), names, n=1)
    return ConfigError(f"unknown key(s) {', '.join(f'{where}.{k}' if where else str(k) for k in keys)}"
                       + (f" (did you mean {where + '.' if where else ''}{close[0]}?)" if close else "")
                       + f"; {where or 'the top level'} has: {', '.join(sorted(names))}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    _check(isinstance(values, dict), f"{where}: expected a mapping, got {_shown(values)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names, key=str)
    if unknown:
        raise _unknown(unknown, where, names)
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        kwargs[name] = _build(tp, value, key) if dataclasses.is_dataclass(tp) else _coerce(value, tp, key)
    return cls(**kwargs)


def _field_type(dotted: str, item: str) -> Any:
    """The annotated type at `dotted` (a ConfigError naming the override `item` where a key is unknown); None
    below a mapping field such as `data.zoos.NAME`."""
    tp: Any = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(tp):
            _check(typing.get_origin(tp) is dict, f"override {item!r}: {'.'.join(parts[:i])} is not a section")
            return None
        names = {f.name for f in dataclasses.fields(tp)}
        if part not in names:
            raise ConfigError(f"override {item!r}: {_unknown([part], '.'.join(parts[:i]), names)}")
        tp = typing.get_type_hints(tp)[part]
    return tp


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        _check(isinstance(node, dict), f"override {dotted!r}: {p!r} is not a section")
    node[leaf] = value


class _Loader(yaml.SafeLoader):
    """Plain YAML only (SafeLoader: no tag builds a Python object), and no key twice in one mapping (a second
    `train:` section would silently replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue                                   # `<<: *base` merges; its keys may be overridden
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue                                   # the parent's check says "found unhashable key"
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, where: str) -> Any:
    """YAML `text` read with `_Loader`; a ConfigError in one line naming `where`, the line and the column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        if isinstance(e, yaml.reader.ReaderError) and isinstance(e.character, int):
            bad = chr(e.character)
            at, problem = f" character {e.position + 1}:", f"character {bad!r} is not allowed in YAML" + (
                " (a lone surrogate: bytes that are not UTF-8?)" if 0xD800 <= e.character <= 0xDFFF else "")
        if "constructor for the tag" in problem:
            problem += " (only plain YAML values are allowed; tags that build Python objects are refused)"
        raise ConfigError(f"{where}:{at} not valid YAML: {' '.join(problem.split())}") from e


def _origin(message: str, path: Path | None, overridden: dict[str, str]) -> str:
    """`message` with where its value came from: the command-line override that set a key it names, else the file."""
    hits = [item for key, item in overridden.items() if re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message)]
    if hits:
        return f"{message} (set on the command line by {', '.join(map(repr, hits))})"
    return f"{path}: {message}" if path is not None else message


ROUTE_GONE = ("hand-weighted route priors are no longer supported (routing is p_correct − cost_weight · cost / "
              "max_cost; the aptitude evidence is the model's input, model.evidence)")


def _drop_route_priors(tree: dict[str, Any], path: Path) -> None:
    """Remove the `route:` section that configs and checkpoints written before the learned score carry: all 0, it
    changes nothing; a hand-weighted prior > 0 (`route.aptitude_prior`, `route.category_prior`) is refused, since
    the utility is p_correct − cost_weight · cost / max_cost alone and the aptitude evidence is the model's input
    (`model.evidence`)."""
    route = tree.pop("route", None)
    if route is None:
        return
    gone = "the route section is gone (routing is p_correct − cost_weight · cost / max_cost): remove it"
    _check(isinstance(route, dict), f"{path}: route: {_shown(route)}: {gone}")
    weights = {k: v for k, v in route.items() if k in ("aptitude_prior", "category_prior")}
    unknown = sorted(set(route) - set(weights) - {"aptitude_neighbours"}, key=str)
    named = ", ".join("route." + (k if str(k).isidentifier() else _shown(k)) for k in unknown)
    _check(not unknown, f"{path}: unknown key(s) {named}; {gone}")
    for key, value in weights.items():
        _check(isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0,
               f"{path}: route.{key}={_shown(value)}: {ROUTE_GONE}: retrain with model.evidence=true, or set it to 0 "
               "to rank by p_correct alone")


RETIRED = {("train", "zoo_groups"): 0.0}
"""Options tried and not adopted (dev/LOG.md), removed from the code: a config or checkpoint written before may
still carry them at their default, which changed nothing, and is read without them; any other value is refused."""


def _drop_retired(tree: dict[str, Any], path: Path) -> None:
    """Remove the `RETIRED` keys where they hold their old default; a ConfigError naming the key where they do not."""
    for (section, key), default in RETIRED.items():
        part = tree.get(section)
        if isinstance(part, dict) and key in part:
            value = part.pop(key)
            _check(value == default and not isinstance(value, bool),
                   f"{path}: {section}.{key}={_shown(value)}: this option was tried and not adopted, and is gone "
                   f"(dev/LOG.md); remove it (it had no effect at {default})")


def field_docs() -> list[tuple[str, Any, str]]:
    """Every config field as (dotted key, default, its docstring), in declaration order: what `train.py --help`
    lists. The docstrings are the string literals under each field in this module's source (read with `ast`)."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    docs: dict[tuple[str, str], str] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            body = node.body
            for field_node, after in zip(body, body[1:] + [None]):
                if (isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name)
                        and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                        and isinstance(after.value.value, str)):
                    docs[(node.name, field_node.target.id)] = " ".join(after.value.value.split())
    out = []
    for section in dataclasses.fields(Config):
        cls = section.default_factory
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append((f"{section.name}.{f.name}", default, docs.get((cls.__name__, f.name), "")))
    return out


CONFIGS = Path(__file__).parent / "configs"
"""The configs shipped with the package (`configs/` at the repository's root links here)."""


def shipped_configs() -> list[str]:
    """The names of the shipped configs (`default`, `tiny`, ...), each usable as `--config NAME`."""
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def resolve_config(path: str | Path) -> Path:
    """`path` where it names a file; a bare name such as `default` or `default.yaml` that is no file here names a
    shipped config (`shipped_configs`); anything else is returned as given (load_config then says it is missing,
    listing the shipped names)."""
    path = Path(path)
    if path.exists() or len(path.parts) > 1:
        return path
    shipped = CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    return shipped if shipped.is_file() else path


def load_saved_config(path: str | Path) -> Config:
    """The resolved config a checkpoint carries (`Config.save`, its `config.yaml`), read as `load_config` reads a
    file, and refused where it cannot be whole: empty, or without one of its sections (data, model, train, in that
    order: a copy cut short loses the last). Nothing is filled in from the defaults, which describe another router."""
    path = Path(path)
    if path.is_file():
        try:
            tree = _parse_yaml(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} cannot be read as UTF-8 text: {e}") from e
        sections = [f.name for f in dataclasses.fields(Config)]
        _check(tree is not None, f"{path} is empty; a checkpoint's config.yaml holds the resolved config that train.py "
               "wrote (sections data, model, train): re-copy the checkpoint folder")
        missing = [k for k in sections if isinstance(tree, dict) and not tree.get(k)]   # not a mapping: load_config says
        _check(not missing, f"{path} has no {' and no '.join(missing)} section (a copy cut short?); a checkpoint's "
               "config.yaml holds the resolved config that train.py wrote (sections data, model, train): re-copy "
               "the checkpoint folder")
    return load_config(path)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ← YAML file at `path` ← `key.sub=value` overrides (values parsed as YAML scalars).

    Every field is type- and range-checked; a ConfigError (one line) names the file or the override, the key and
    the allowed values."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = resolve_config(path)
        _check(path.is_file(), f"config file {path} does not exist (a shipped config may be given by name: "
               f"{', '.join(shipped_configs())})" if not path.exists() else f"config file {path} is not a file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} cannot be read as UTF-8 text: {e}") from e
        tree = _parse_yaml(text, str(path))
        _check(tree is not None, f"config file {path} is empty{' (only comments)' if text.strip() else ''}; write the "
               "settings to change under data:, model: and train: (`modelsat train --help` lists them), or give a "
               f"shipped config by name ({', '.join(shipped_configs())})")
        _check(isinstance(tree, dict), f"{path}: the top level must be a mapping of sections (data, model, train), "
                                       f"got {type(tree).__name__}")
        _drop_route_priors(tree, path)
        _drop_retired(tree, path)
    overridden: dict[str, str] = {}
    for item in overrides or []:
        _check("=" in item, f"override {item!r} must look like key.sub=value")
        key, raw = (part.strip() for part in item.split("=", 1))
        _check(bool(key) and all(key.split(".")), f"override {item!r}: {key!r} is not a key like train.lr")
        _check(key.split(".")[0] != "route", f"override {item!r}: {ROUTE_GONE}; remove the override")
        value = _parse_yaml(raw, f"override {item!r}") if raw else ""
        if _field_type(key, item) is str and not isinstance(value, str):
            value = raw                  # a string field takes the text as typed: `no`, `null`, `0755` stay text
        _set(tree, key, value)
        overridden[key] = item
    try:
        return _build(Config, tree, "")
    except ConfigError as e:
        raise ConfigError(_origin(str(e), path, overridden)) from e

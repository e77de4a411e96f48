"""Typed configuration: dataclasses loaded from YAML in `configs/`, overridden by `key.sub=value` arguments.

    cfg = load_config("configs/default.yaml", ["train.lr=1e-4", "model.connector=linear"])
    cfg.save(run_dir / "config.yaml")        # the resolved config travels with every checkpoint
"""
from __future__ import annotations

import dataclasses
import math
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


@dataclass
class DataConfig:
    source: Literal["mmlu-pro", "mmlu-pro-raw", "routerdc", "routerbench", "leaderboard", "table"] = "mmlu-pro"
    """Converter that reads `input` (see `modelsat data build`)."""
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
               f"data.val={self.val} and data.test={self.test} must be fractions summing to less than 1")
        _check(self.num_tasks > 0 and self.per_task > 0, "data.num_tasks and data.per_task must be positive")
        _check(self.source_tasks >= 0, f"data.source_tasks={self.source_tasks} must be >= 0")
        _check(not self.source_tasks or self.split_by == "random",
               "data.source_tasks needs data.split_by=random (with split_by=source the test is drawn from the train "
               "files already)")
        _check(self.top_up >= 0, f"data.top_up={self.top_up} must be >= 0")
        _check(not self.top_up or (self.split_by == "random" and self.tasks_by != "cluster"),
               "data.top_up needs data.split_by=random and data.tasks_by=task or task_or_source")
        overlap = set(self.unseen_models) & set(self.train_models)
        _check(not overlap, f"models both in data.train_models and data.unseen_models: {sorted(overlap)}")


@dataclass
class ModelConfig:
    llm: str = "smollm2-135m-instruct"
    """Router LLM: `smollm2-135m-instruct` (offline package), `tiny-llama` (tests), or a HF id / local folder."""
    num_layers: int = 0
    """Keep only the first n decoder layers of the LLM (0: all); the final norm and output rows stay."""
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
        _check(self.num_soft_tokens >= 0, "model.num_soft_tokens must be >= 0")
        _check(self.instruction_tokens >= 0, "model.instruction_tokens must be >= 0")
        _check(self.num_layers >= 0, "model.num_layers must be >= 0")
        _check(self.text_group_size > 0, "model.text_group_size must be positive")
        _check(self.lora_r > 0, "model.lora_r must be positive")
        _check("{instruction}" in self.instruction_template,
               "model.instruction_template must contain '{instruction}'")
        _check(self.max_instruction_tokens > 8, "model.max_instruction_tokens must be > 8")


@dataclass
class TrainConfig:
    out_dir: str = "checkpoints/run"
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
    zoo_groups: float = 0.0
    """Fraction of instruction groups whose candidates are the trained models of one of `data.zoos` (chosen at
    random) rather than any trained models: the loss then also compares the models a zoo routes between."""
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
    save_every: int = 200
    """Checkpoint every N optimizer steps (0: only at the end)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Mixed precision through accelerate (keep `no` on CPU)."""
    resume: bool = False
    """Continue from the last step checkpoint in `out_dir` with the same data order."""
    seed: int = 0
    """Seed of model init, sampling and data order."""
    log_with: str = "tensorboard"
    """accelerate tracker (`tensorboard`, `wandb`, or `none`)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "group_size", "batch_size", "grad_accum"):
            _check(getattr(self, name) > 0, f"train.{name} must be positive, got {getattr(self, name)}")
        _check(self.lr > 0 and self.connector_lr > 0, "train.lr and train.connector_lr must be positive")
        _check(0 <= self.zoo_groups <= 1, f"train.zoo_groups={self.zoo_groups} must be in [0, 1]")
        _check(not self.zoo_groups or self.grouping == "instruction",
               "train.zoo_groups needs train.grouping=instruction (model-centred groups have one model each)")
        _check(self.pointwise_weight >= 0 and self.listwise_weight >= 0
               and self.pointwise_weight + self.listwise_weight > 0,
               "train.pointwise_weight and train.listwise_weight must be >= 0 and not both 0")


@dataclass
class RouteConfig:
    aptitude_prior: float = 0.0
    """Ranking adds `aptitude_prior × the candidate's aptitude-test accuracy` to its utility (p_correct itself is
    unchanged): the router leaves the model that does best on the test only when p_correct says so by more than
    the accuracy gap allows. 0 ranks by p_correct alone."""
    aptitude_neighbours: int = 0
    """0: the prior's accuracy is over the whole aptitude test. k > 0: over the k aptitude questions nearest the
    instruction (cosine of their sentence embeddings), so the prior follows the instruction's domain. Either way
    it reads only aptitude results, so models added to the zoo afterwards get it too."""
    category_prior: float = 0.0
    """Ranking also adds `category_prior × the candidate's aptitude accuracy in the instruction's category`, the
    category guessed by a classifier that `train.py` fits on the train split's categories and stores in the
    checkpoint (`modelsat/category.py`). It too reads only aptitude results. 0: no category term."""

    def __post_init__(self) -> None:
        _check(math.isfinite(self.aptitude_prior) and self.aptitude_prior >= 0,
               f"route.aptitude_prior must be a finite number >= 0, got {self.aptitude_prior}")
        _check(isinstance(self.aptitude_neighbours, int) and self.aptitude_neighbours >= 0,
               f"route.aptitude_neighbours must be an integer >= 0, got {self.aptitude_neighbours!r}")
        _check(math.isfinite(self.category_prior) and self.category_prior >= 0,
               f"route.category_prior must be a finite number >= 0, got {self.category_prior}")

    @property
    def prior_neighbours(self) -> int:
        """k where the prior reads the k aptitude questions nearest the instruction; 0 where it reads the whole
        test or there is no prior."""
        return self.aptitude_neighbours if self.aptitude_prior else 0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    route: RouteConfig = field(default_factory=RouteConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML (atomically)."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one YAML value to the field's annotated type."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        _check(value in typing.get_args(tp), f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        _check(isinstance(value, bool), f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads `1e-4` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, (str, int, float)) and not isinstance(value, bool), f"{where}: expected a string, got {value!r}")
        return str(value)
    if origin is list:
        if isinstance(value, str):  # `key=a,b,c` on the command line
            value = [v for v in value.split(",") if v]
        _check(isinstance(value, list), f"{where}: expected a list, got {value!r}")
        return [_coerce(v, typing.get_args(tp)[0], where) for v in value]
    if origin is dict:
        _check(isinstance(value, dict), f"{where}: expected a mapping, got {value!r}")
        return value
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    _check(isinstance(values, dict), f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    _check(not unknown, f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        kwargs[name] = _build(tp, value, key) if dataclasses.is_dataclass(tp) else _coerce(value, tp, key)
    return cls(**kwargs)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        _check(isinstance(node, dict), f"override {dotted!r}: {p!r} is not a section")
    node[leaf] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ← YAML file at `path` ← `key.sub=value` overrides (values parsed as YAML scalars)."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        _check(path.is_file(), f"config file {path} does not exist")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        _check(isinstance(tree, dict), f"{path}: the top level must be a mapping of sections")
    for item in overrides or []:
        _check("=" in item, f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return _build(Config, tree, "")

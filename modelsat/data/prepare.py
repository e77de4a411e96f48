"""Everything a run needs from its data config, built on first use and reused afterwards:
the routing table (from the public source), the aptitude test, and the train/val/test splits.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from modelsat.aptitude import Aptitude, build_aptitude, top_up
from modelsat.config import ConfigError, DataConfig
from modelsat.data.converters import HOMES, build_table
from modelsat.data.splits import load_splits, make_splits, save_splits, source_splits, train_source_ids
from modelsat.data.table import RoutingTable
from modelsat.embedding import cached_embedder


@dataclass
class Prepared:
    table: RoutingTable
    aptitude: Aptitude
    splits: dict[str, list[str]]
    train_models: list[str]
    unseen_models: list[str]


def prepare(cfg: DataConfig, encoder_name: str = "all-minilm-l6-v2", log=print) -> Prepared:
    """Load (or build and save) the table, aptitude test and splits that `cfg` names."""
    table_dir = Path(cfg.table_dir)
    if (table_dir / "questions.parquet").exists():
        table = RoutingTable.load(table_dir)
    else:
        source = Path(cfg.input) if cfg.input else None
        if source is not None and not source.exists() and not cfg.download and cfg.source != "demo":
            fetch = (" or set data.download=true to fetch it from its public home" if cfg.source == "mmlu-pro-raw"
                     else f" ({HOMES[cfg.source]})")
            raise ConfigError(f"data.input {source} does not exist (from the working folder {Path.cwd()}); point "
                              f"data.input at the {cfg.source} data{fetch}, or train on the demo data: --config tiny")
        log(f"building the routing table from {cfg.source} at {source} -> {table_dir}")
        table = build_table(cfg.source, source, download=cfg.download)
        table.save(table_dir)

    known = set(table.model_names)
    for field_name in ("unseen_models", "train_models"):
        unknown = [m for m in getattr(cfg, field_name) if m not in known]
        if unknown:
            raise ConfigError(f"data.{field_name}: unknown model(s) {unknown}; the table has {sorted(known)}")
    for name, models in cfg.zoos.items():
        unknown = [m for m in models if m not in known]
        if unknown:
            raise ConfigError(f"data.zoos.{name}: unknown model(s) {unknown}")

    apt_path, splits_path = Path(cfg.aptitude), Path(cfg.splits)
    for name, path in (("aptitude", apt_path), ("splits", splits_path)):
        if path.is_dir():
            raise ConfigError(f"data.{name} {path} is a folder; point data.{name} at a JSON file (built there on "
                              "first use)")
    built_splits = None  # with top_up, the splits are made around the test before it is topped up
    with _splitting_errors():
        if apt_path.exists():
            aptitude = Aptitude.load(apt_path)
        else:
            log(f"building the aptitude test ({cfg.num_tasks} tasks x {cfg.per_task}, by {cfg.tasks_by}) -> {apt_path}")
            aptitude, built_splits = _build_aptitude(cfg, table, encoder_name, log)
            aptitude.save(apt_path)

        if splits_path.exists():
            splits = load_splits(splits_path, aptitude=aptitude)
        else:
            if cfg.split_by == "source":
                log(f"splitting by source file (train files -> train/val {cfg.val}; other files -> test) -> "
                    f"{splits_path}")
                splits = source_splits(table, aptitude, val=cfg.val, seed=cfg.seed)
            elif cfg.top_up or cfg.keep_per_task:
                splits = built_splits or _rebuilt_splits(cfg, table, aptitude, encoder_name, log)
            else:
                log(f"splitting the questions (val {cfg.val}, test {cfg.test}) -> {splits_path}")
                splits = _random_splits(cfg, table, aptitude)
            save_splits(splits, splits_path, aptitude=aptitude)

    return Prepared(table, aptitude, splits, _train_models(cfg, table), list(cfg.unseen_models))


@contextlib.contextmanager
def _splitting_errors() -> Iterator[None]:
    """The splits module says what is wrong with a splits file or a split in plain ValueErrors; as ConfigErrors
    they reach a train.py user as one line (modelsat's own errors pass unchanged)."""
    try:
        yield
    except ValueError as e:
        if type(e).__module__.startswith("modelsat"):
            raise
        raise ConfigError(str(e)) from e


def _build_aptitude(cfg: DataConfig, table: RoutingTable, encoder_name: str,
                    log) -> tuple[Aptitude, dict[str, list[str]] | None]:
    """The aptitude test `cfg` describes (and, when topped up, the splits made around it before the top-up)."""
    embed = None
    if cfg.tasks_by == "cluster":
        # Every question of the table is encoded once and cached beside it (evaluation reuses it).
        embed = cached_embedder(table, encoder_name, Path(cfg.table_dir))
    # Chosen on the training models only: models held out as unseen must not shape their own test.
    # With split_by=source, only from the train files: the test files must not shape it either.
    train_table = table.subset(question_ids=train_source_ids(table) if cfg.split_by == "source" else None,
                               models=_train_models(cfg, table))
    aptitude = build_aptitude(train_table, num_tasks=cfg.num_tasks, per_task=cfg.per_task, tasks_by=cfg.tasks_by,
                              seed=cfg.seed, embed=embed)
    if cfg.source_tasks:
        aptitude = _with_source_tasks(cfg, table, aptitude, log)
    splits = None
    if cfg.top_up:
        aptitude, splits = _topped_up(cfg, table, aptitude, log)
    if cfg.keep_per_task:
        log(f"keeping the first {cfg.keep_per_task} questions of each of the {aptitude.num_tasks} tasks")
        if splits is None:   # made around the whole test, as with top_up: val and test do not depend on the cut
            splits = _random_splits(cfg, table, aptitude)
        aptitude = aptitude.head(aptitude.num_tasks, cfg.keep_per_task)
    return aptitude, splits


def _random_splits(cfg: DataConfig, table: RoutingTable, aptitude: Aptitude) -> dict[str, list[str]]:
    """Splits drawn around the base test (its first `num_tasks` tasks); source tasks then leave the train split."""
    base = aptitude.head(cfg.num_tasks) if cfg.source_tasks else aptitude
    return _without(make_splits(table, base, val=cfg.val, test=cfg.test, seed=cfg.seed), aptitude)


def _without(splits: dict[str, list[str]], aptitude: Aptitude) -> dict[str, list[str]]:
    """`splits` less the aptitude test's questions."""
    held = set(aptitude.question_ids)
    return {k: [q for q in v if q not in held] for k, v in splits.items()}


def _with_source_tasks(cfg: DataConfig, table: RoutingTable, base: Aptitude, log) -> Aptitude:
    """`base` extended by `source_tasks` tasks, one per source, from train-split questions that have no task."""
    train = set(make_splits(table, base, val=cfg.val, test=cfg.test, seed=cfg.seed)["train"])
    q = table.questions
    pool = q[q["question_id"].astype(str).isin(train) & (q["task"].fillna("").astype(str) == "")]["question_id"]
    if pool.empty:
        raise ConfigError("data.source_tasks: the train split has no question without a `task`; set it to 0")
    log(f"adding {cfg.source_tasks} source tasks x {cfg.per_task} from {len(pool)} train questions without a task")
    extra = build_aptitude(table.subset(question_ids=pool.astype(str).tolist(), models=_train_models(cfg, table)),
                           num_tasks=cfg.source_tasks, per_task=cfg.per_task, tasks_by="task_or_source", seed=cfg.seed)
    return base.extended(extra)


def _topped_up(cfg: DataConfig, table: RoutingTable, aptitude: Aptitude, log) -> tuple[Aptitude, dict[str, list[str]]]:
    """`aptitude` topped up by `top_up` train-split questions per task, and the splits (made around `aptitude`,
    less the questions added)."""
    splits = _random_splits(cfg, table, aptitude)
    log(f"topping up each aptitude task by {cfg.top_up} questions from the {len(splits['train'])} train questions")
    bigger = top_up(aptitude, table.subset(question_ids=splits["train"], models=_train_models(cfg, table)),
                    cfg.top_up, seed=cfg.seed)
    dropped = bigger.source["topped_up"]["dropped"]
    if dropped:
        log(f"dropped {len(dropped)} aptitude task(s) without {cfg.top_up} more train questions: {', '.join(dropped)}")
    return bigger, _without(splits, bigger)


def _rebuilt_splits(cfg: DataConfig, table: RoutingTable, aptitude: Aptitude, encoder_name: str,
                    log) -> dict[str, list[str]]:
    """The splits of a topped-up or cut test whose splits file is missing: the test is rebuilt from `cfg`
    (deterministic) and must be the one on disk."""
    log("rebuilding the aptitude test (topped up or cut) to recover the splits made around it")
    rebuilt, splits = _build_aptitude(cfg, table, encoder_name, log)
    if rebuilt.fingerprint != aptitude.fingerprint:
        raise ConfigError(f"data.splits {cfg.splits} is missing and the aptitude test {cfg.aptitude} is not "
                          "the one this data config builds, so its splits cannot be recovered; restore the splits "
                          "file, or remove the aptitude file to rebuild both")
    return splits


def _train_models(cfg: DataConfig, table: RoutingTable) -> list[str]:
    return list(cfg.train_models) or [m for m in table.model_names if m not in set(cfg.unseen_models)]

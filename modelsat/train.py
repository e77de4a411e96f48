"""Train a Model-SAT router: capability encoder + connector + LoRA on a small LLM.

    modelsat train --config default train.max_steps=20                     # one process; a shipped config by name
    accelerate launch --config_file configs/accelerate/cpu.yaml train.py --config configs/default.yaml [key.sub=value ...]
    python train.py --config configs/tiny.yaml train.max_steps=20          # the script at the repository's root

Reads top to bottom: config -> accelerator -> data (routing table, aptitude test, splits; built on
first use) -> model -> optimizer -> one loop with validation every epoch and a checkpoint every
`train.save_every` steps. Writes `<train.out_dir>/step-NNNNNN/` and `<train.out_dir>/final/`, each a
complete router checkpoint (DESIGN §2.6) plus `training_state.pt` (optimizer, scheduler, step) for
`train.resume=true`, which continues at the saved step with the same data order.

Why one module: training reads top to bottom from named steps (build_model, build_dataloader, group_logits and
loss_fn, validate; check_out_dir, build_accelerator, build_optimizer, cache_lower_states, resume), which `main` runs
in order around one loop.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import re
import logging
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, InitProcessGroupKwargs
from accelerate.utils import set_seed
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from modelsat.aptitude import model_outcomes
from modelsat.config import Config, ConfigError, field_docs, load_config, shipped_configs
from modelsat.data.prepare import Prepared, prepare
from modelsat.data.samples import GroupDataset, build_groups, collate_groups
from modelsat.embedding import cached_embedder
from modelsat.metrics import probability_metrics, routed_outcomes
from modelsat.pretrained import WINDOW_RULE
from modelsat.training_evidence import EvidenceTable, write_training_bank
from modelsat.loss import fit_offset, group_loss, tier_groups
from modelsat.checkpoint import CheckpointError
from modelsat.checkpoint_writer import save_checkpoint
from modelsat.io_utils import blocking_file
from modelsat.logs import add_logging_arguments, setup_logging
from modelsat.quiet import quiet_libraries
from modelsat.category import CategoryClassifier
from modelsat.states import StateCache, prefix_key
from modelsat.model import RouterModel, build_router_model
from modelsat.weights import load_trained

logger = logging.getLogger(__name__)


def build_model(cfg: Config, data: Prepared) -> tuple[RouterModel, dict[str, torch.Tensor]]:
    """The router model and the frozen capability features of every training model."""
    model = build_router_model(cfg.model, per_task=data.aptitude.per_task)
    descriptions = [t.description for t in data.aptitude.tasks]
    features = {m: model.model_features(model_outcomes(data.aptitude, data.table, m), descriptions)
                for m in data.train_models}
    return model, features


def build_dataloader(cfg: Config, data: Prepared, epoch: int) -> DataLoader:
    """Groups of one epoch; the candidate sets and the order depend only on (seed, epoch)."""
    ids = list(data.splits["train"])
    rng = np.random.default_rng(cfg.train.seed)
    if cfg.train.max_train_instructions and len(ids) > cfg.train.max_train_instructions:
        ids = sorted(rng.choice(ids, cfg.train.max_train_instructions, replace=False).tolist())
    groups = build_groups(data.table, ids, data.train_models, group_size=cfg.train.group_size,
                          mode=cfg.train.grouping, seed=cfg.train.seed * 1000 + epoch)
    order = np.random.default_rng(cfg.train.seed * 1000 + epoch).permutation(len(groups))
    return DataLoader(GroupDataset([groups[i] for i in order], data.table), batch_size=cfg.train.batch_size,
                      shuffle=False, collate_fn=collate_groups)


def group_logits(model: RouterModel, batch: dict, features: dict[str, torch.Tensor],
                 evidence: EvidenceTable | None = None) -> list[torch.Tensor]:
    """Yes-vs-No logit of every (instruction, model) pair of each group: list of (K,) tensors.

    Pairs sharing an instruction are packed into one sequence (instruction-centred groups give one
    sequence per group; model-centred groups one per pair).
    """
    texts, feats, evs, owners = [], [], [], []
    for g, (instructions, qids, models) in enumerate(zip(batch["instructions"], batch["question_ids"],
                                                         batch["models"])):
        by_text: dict[str, list[int]] = {}
        for k, text in enumerate(instructions):
            by_text.setdefault(text, []).append(k)
        for text, ks in by_text.items():
            texts.append(text)
            feats.append(torch.stack([features[models[k]] for k in ks]))      # (K_i, N, F)
            if evidence is not None:
                evs.append(evidence([qids[k] for k in ks], [models[k] for k in ks]))   # (K_i, E)
            owners.append((g, ks))
    z = model(texts, feats, logits=True, evidence=evs or None)               # list of (K_i,) Yes-No margins
    pieces: dict[int, list[tuple[list[int], torch.Tensor]]] = {}
    for (g, ks), zi in zip(owners, z):
        pieces.setdefault(g, []).append((ks, zi))
    out = []
    for g in range(len(batch["models"])):
        ks = torch.tensor([k for ks, _ in pieces[g] for k in ks])
        zs = torch.cat([zi for _, zi in pieces[g]])
        out.append(zs[ks.argsort().to(zs.device)])                            # back in the group's order
    return out


def loss_fn(logits: list[torch.Tensor], labels: list[torch.Tensor], weights: torch.Tensor, cfg: Config,
            norm: float | None = None) -> torch.Tensor:
    """`group_loss` of a batch of groups (lists of (K_i,) logits and labels) with train.py's weights
    (train.pointwise_weight, listwise_weight, pairwise_weight; groups where every candidate is right or every one
    wrong count less through `weights`). The weighted sum is divided by `norm`, default the batch's weight sum;
    with several processes the loop passes the mean over processes of their weight sums, so that DDP's average of
    the processes' gradients is the gradient of the global batch's weighted mean (as one process)."""
    z = pad_sequence(list(logits), batch_first=True)
    y = pad_sequence([t.to(z.device, z.dtype) for t in labels], batch_first=True)
    mask = pad_sequence([torch.ones(len(t), dtype=torch.bool, device=z.device) for t in logits], batch_first=True)
    total = group_loss(z, y, mask, weights, cfg.train.pointwise_weight, cfg.train.listwise_weight,
                       cfg.train.pairwise_weight)
    return total / max(float(weights.sum()) if norm is None else norm, 1e-8)


def fit_evidence_offset(model: RouterModel, evidence: EvidenceTable, data: Prepared, cfg: Config, log) -> dict:
    """Stage 0 (train.evidence_fit_epochs > 0): fit the evidence's logit offset alone (`modelsat.loss.fit_offset`)
    on every (train instruction, training model) pair with a result, with train.evidence_fit_loss (over tiers of like
    models with train.evidence_fit_tier), then freeze it.
    Full batch and deterministic, so every process fits the same weights. Returns {"epochs", "loss_first", "loss_last",
    "seconds"}."""
    ids = list(data.splits["train"])
    start = time.time()
    values, labels = tier_groups(evidence.train_values(),                # each pair at its bank level
                                 data.table.outcome_matrix(ids, data.train_models), cfg.train.evidence_fit_tier)
    losses = fit_offset(model.capability.evidence, values, labels, cfg.train.evidence_fit_loss,
                        cfg.train.evidence_fit_epochs, cfg.train.evidence_fit_lr)
    model.freeze_evidence_offset()
    out = {"epochs": cfg.train.evidence_fit_epochs, "loss_first": losses[0], "loss_last": losses[-1],
           "seconds": round(time.time() - start, 1)}
    log(f"stage 0: the evidence offset ({cfg.model.evidence_offset}) fitted on {len(ids)} train instructions x "
        f"{len(data.train_models)} models, {cfg.train.evidence_fit_loss} loss {out['loss_first']:.4f} -> "
        f"{out['loss_last']:.4f} in {out['seconds']} s; frozen from here on")
    return out


def val_ids(cfg: Config, data: Prepared) -> list[str]:
    """The val instructions `validate` reads: at most train.max_val_instructions of them, seeded."""
    ids = list(data.splits["val"])
    if cfg.train.max_val_instructions and len(ids) > cfg.train.max_val_instructions:
        ids = sorted(np.random.default_rng(cfg.train.seed).choice(ids, cfg.train.max_val_instructions,
                                                                   replace=False).tolist())
    return ids


def run_ids(cfg: Config, data: Prepared, first_loader: DataLoader, steps_per_epoch: int, total_steps: int,
            num_processes: int) -> list[str]:
    """The instructions this run reads, in order: those of the groups its `total_steps` optimizer steps take
    (every process's share) and the val instructions of `validate`."""
    ids, groups_per_step = [], cfg.train.batch_size * cfg.train.grad_accum * num_processes
    for epoch in range(cfg.train.epochs):
        steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
        if steps <= 0:
            break
        loader = first_loader if epoch == 0 else build_dataloader(cfg, data, epoch)
        ids += [q for g in loader.dataset.groups[:steps * groups_per_step] for q in g.question_ids]
    return list(dict.fromkeys(ids + val_ids(cfg, data)))


@torch.no_grad()
def validate(model: RouterModel, data: Prepared, features: dict[str, torch.Tensor], cfg: Config,
             evidence: EvidenceTable | None = None) -> dict:
    """Routing accuracy on val instructions over the training models, with best single and oracle; on every
    (instruction, model) pair, the AUC and Brier score of p(correct) (finer signals than top-1); and the
    interaction AUC (0.5 = the router ranks the models the same way for every instruction)."""
    ids = val_ids(cfg, data)
    models = data.train_models
    outcomes = data.table.outcome_matrix(ids, models)                          # (Q, M)
    keep = ~np.isnan(outcomes).any(axis=1)
    ids, outcomes = [q for q, k in zip(ids, keep) if k], outcomes[keep]
    stacked = torch.stack([features[m] for m in models])                       # (M, N, F)
    texts = data.table.texts(ids)
    probs = []
    was_training = model.training
    model.eval()
    for s in range(0, len(texts), 8):
        evs = None if evidence is None else [evidence([q] * len(models), models) for q in ids[s:s + 8]]
        probs += [lp.exp().double().cpu().numpy()
                  for lp in model.log_p_correct(texts[s:s + 8], [stacked] * len(texts[s:s + 8]), evidence=evs)]
    model.train(was_training)
    probs = np.stack(probs)                                                    # (Q, M)
    best = int(np.nanargmax(np.nanmean(data.table.outcome_matrix(data.splits["train"], models), axis=0)))
    routed = routed_outcomes(probs, outcomes, np.zeros(len(models)))           # the choice rule, at cost_weight 0
    return {"n": len(ids), "accuracy": float(routed.mean()),
            "best_single": float(outcomes[:, best].mean()), "best_single_model": models[best],
            "oracle": float(outcomes.max(axis=1).mean()), **probability_metrics(probs, outcomes)}


def last_step_dir(out_dir: Path) -> Path | None:
    steps = sorted(p for p in out_dir.glob("step-*") if re.fullmatch(r"step-\d{6}", p.name)
                   and (p / "training_state.pt").exists())
    return steps[-1] if steps else None


STATE_KEYS = ("optimizer", "scheduler", "step", "history")


def load_training_state(resume_dir: Path) -> dict:
    """The optimizer, scheduler, step and history saved in a step folder.

    Read with `weights_only=True`: tensors and plain containers only, so a crafted file cannot run code. A refused,
    broken or incomplete file is a CheckpointError naming it and what to do."""
    file = resume_dir / "training_state.pt"
    fix = (f"; delete the folder {resume_dir} to resume from the step before it, or set train.resume=false "
           "to start over")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))   # what an unsafe load would have imported and called
        if refused:
            raise CheckpointError(f"{file} holds Python objects, not only tensors and plain values, so it is not "
                                  f"loaded (loading it would call {refused[1]}: a crafted file can run any code); "
                                  f"train.py never writes such a file{fix}") from e
        raise CheckpointError(f"{file} is not a training state written by train.py (not a torch file){fix}") from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        reason = str(e).split(". ")[0] or type(e).__name__
        raise CheckpointError(f"{file} cannot be read, it is truncated or damaged ({reason}){fix}") from e
    if not isinstance(state, dict) or not all(k in state for k in STATE_KEYS):
        raise CheckpointError(f"{file} is not a training state written by train.py (it needs {', '.join(STATE_KEYS)})"
                              f"{fix}")
    if not isinstance(state["step"], int) or state["step"] < 1 or not isinstance(state["history"], list):
        raise CheckpointError(f"{file} holds step {state['step']!r}; a training state is saved after step 1 or later"
                              f"{fix}")
    return state


def check_out_dir(cfg: Config) -> Path:
    """`train.out_dir`, checked before any work: a ConfigError where it (or a parent) is a file."""
    out_dir = Path(cfg.train.out_dir)
    if out_dir.exists() and not out_dir.is_dir():    # found now, not after training when final/ is written
        raise ConfigError(f"train.out_dir {out_dir} is a file, not a folder; choose another train.out_dir")
    if (file := blocking_file(out_dir)) is not None:   # a parent that is a file (`data.parquet/run`)
        raise ConfigError(f"train.out_dir {out_dir} cannot be made: {file} is a file, not a folder; choose another "
                          "train.out_dir")
    return out_dir


def build_accelerator(cfg: Config, out_dir: Path) -> Accelerator:
    """The run's Accelerator (gradient accumulation, precision, trackers); a ConfigError for settings it refuses."""
    trackers = None if cfg.train.log_with == "none" else cfg.train.log_with
    try:
        # Several processes and no GPU (`accelerate launch --multi_gpu --num_processes 2` on a CPU machine, or
        # configs/accelerate/cpu-2proc.yaml): data-parallel on the CPU over gloo.
        multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        return Accelerator(gradient_accumulation_steps=cfg.train.grad_accum, log_with=trackers,
                           mixed_precision=cfg.train.mixed_precision, project_dir=str(out_dir), cpu=multi_cpu,
                           # the main process may fill the state cache for a long while before the others
                           kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=6))])
    except ValueError as e:  # a tracker accelerate does not know, a precision this machine lacks
        raise ConfigError(f"train.log_with={cfg.train.log_with!r}, train.mixed_precision="
                          f"{cfg.train.mixed_precision!r}: {e}") from e


def build_optimizer(model: RouterModel, cfg: Config) -> torch.optim.Optimizer:
    """AdamW with two learning rates: `train.lr` for LoRA, `train.connector_lr` for the connector (as LLaVA)."""
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    return torch.optim.AdamW([{"params": lora, "lr": cfg.train.lr}, {"params": rest, "lr": cfg.train.connector_lr}],
                             weight_decay=cfg.train.weight_decay)


def cache_lower_states(model: RouterModel, texts: list[str], cfg: Config, accelerator: Accelerator,
                       log) -> StateCache:
    """The frozen lower layers' output for every instruction the run reads, in `<data.table_dir>/states`: the main
    process fills it (once; later runs find it), the others wait, then read it."""
    root = Path(cfg.data.table_dir) / "states"
    with accelerator.main_process_first():
        cache = StateCache(root, model.lower.fingerprint)
        if accelerator.is_main_process:
            prefixes = model.prefix_ids(texts)
            done = cache.fill(model.lower.to(accelerator.device), prefixes, model.pad_id)
            unique = len({prefix_key(p) for p in prefixes})       # questions of one text share a state
            log(f"instruction states after the {cfg.model.frozen_layers} frozen layers: {done} computed, "
                f"{unique - done} already in {cache.dir}")
    return StateCache(root, model.lower.fingerprint)


def resume(resume_dir: Path, core: RouterModel, optimizer: torch.optim.Optimizer, scheduler) -> tuple[int, list, float]:
    """Load a step folder's weights, optimizer and scheduler state into the run; returns (step, loss history,
    seconds trained). A CheckpointError, saying what to do, where they do not fit this run."""
    state = load_training_state(resume_dir)
    try:
        load_trained(core, resume_dir)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, RuntimeError, KeyError, OSError) as e:  # e.g. trained with another model.lora_r
        reason = " ".join(str(e).split())
        what = reason if _ours(e) else (f"it does not fit this run's model ({reason[:300]}); resume with the "
                                        "config the run was started with (its config.yaml)")
        raise CheckpointError(f"cannot resume from {resume_dir}: {what}; or set train.resume=false to start "
                              "over") from e
    return state["step"], state["history"], float(state.get("train_time_s", 0.0))


def _config_help() -> str:
    """The config fields, each with its default and doc, as `--help` lists them (overrides: key.sub=value)."""
    lines = ["config fields (set in the YAML file or as key.sub=value overrides; default in brackets):"]
    for key, default, doc in field_docs():
        shown = default if not isinstance(default, (list, dict)) or len(str(default)) < 40 else "..."
        lines.append(f"  {key} [{shown}]")
        lines += textwrap.wrap(doc, 100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "train.py", configure_logging: bool = False) -> dict:
    """Train with the config and overrides of `argv`; returns the final metrics. Bad input raises (a ConfigError,
    a data error, a CheckpointError on resume): `cli` turns it into one line and exit code 2."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0], epilog=_config_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML file, or the name of a shipped config: "
                        f"{', '.join(shipped_configs())}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    add_logging_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="key.sub=value")
    args = parser.parse_args(argv)
    if configure_logging:
        setup_logging(args.log_level, args.log_json)
    cfg = load_config(args.config, args.overrides)
    out_dir = check_out_dir(cfg)
    accelerator = build_accelerator(cfg, out_dir)
    set_seed(cfg.train.seed)
    log = logger.info if accelerator.is_main_process else (lambda *args, **kwargs: None)   # one process tells

    # ---- data ------------------------------------------------------------------------------------
    with accelerator.main_process_first():
        data = prepare(cfg.data, encoder_name=cfg.model.sentence_encoder, log=log)
    log(f"table: {len(data.table.questions)} questions, {len(data.train_models)} training models, "
        f"unseen {data.unseen_models}; aptitude {data.aptitude.num_tasks}x{data.aptitude.per_task} "
        f"({data.aptitude.fingerprint[:12]}); splits " + ", ".join(f"{k} {len(data.splits[k])}" for k in
                                                                  ("train", "val", "test")))

    # ---- model -----------------------------------------------------------------------------------
    try:
        model, features = build_model(cfg, data)
    except (ValueError, RuntimeError, OSError) as e:  # an LLM that cannot be found, a yes_token of two tokens, ...
        if _ours(e):
            raise
        raise ConfigError(f"the config's model section cannot be built: {e}") from e
    features = {m: f.to(accelerator.device) for m, f in features.items()}
    if cfg.model.evidence and cfg.model.evidence_source != "bank":
        raise ConfigError("model.evidence_source=aptitude is the input of modelsat 0.2's checkpoints, which load but "
                          "do not train; train with evidence_source=bank (train.bank_labels=false reads the aptitude "
                          "answers alone)")
    evidence = EvidenceTable.build(cfg, data, log) if cfg.model.evidence else None
    # what the evidence reads, stored with every checkpoint (step folders and final/) so that each loads as a router:
    # the aptitude questions' embeddings, the category classifier and the results bank (the train-split labels)
    keys, classifier, bank = None, None, None
    if evidence is not None and accelerator.is_main_process:
        keys, classifier = evidence.aptitude_keys, evidence.classifier
        if cfg.train.bank_labels:
            stamp = {"encoder": cfg.model.sentence_encoder, "dim": str(keys.shape[1]), "window": WINDOW_RULE}
            bank = write_training_bank(out_dir / "bank.sqlite", evidence, data, stamp)
    stage0 = None
    if cfg.train.evidence_fit_epochs:
        if cfg.train.resume and last_step_dir(out_dir) is not None:
            model.freeze_evidence_offset()                   # the fitted offset comes back with the step's weights
        else:
            stage0 = fit_evidence_offset(model, evidence, data, cfg, log)
    n_train, n_all = model.num_trainable_parameters()
    log(f"router: {cfg.model.llm} + LoRA r={cfg.model.lora_r}, encoder {cfg.model.encoder_mode}/{cfg.model.connector}; "
        f"trainable {n_train:,} of {n_all:,} parameters")

    # ---- optimizer -------------------------------------------------------------------------------
    optimizer = build_optimizer(model, cfg)
    first_loader = build_dataloader(cfg, data, 0)                             # also sizes every epoch
    # as accelerate steps: each process takes ceil(batches / processes) batches (the last ones padded), and the
    # optimizer also steps at the end of an epoch whose batches do not fill the last accumulation
    steps_per_epoch = max(1, math.ceil(math.ceil(len(first_loader) / accelerator.num_processes)
                                       / cfg.train.grad_accum))
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(cfg.train.warmup_steps, total_steps), total_steps)
    if model.lower is not None and cfg.train.cache_states:      # the frozen lower layers' output, computed once
        ids = run_ids(cfg, data, first_loader, steps_per_epoch, total_steps, accelerator.num_processes)
        model.state_cache = cache_lower_states(model, data.table.texts(ids), cfg, accelerator, log)
    # The scheduler counts optimizer steps and is stepped here once per step: accelerate's prepared scheduler would
    # step it once per process (it assumes a schedule sized for one process's batches).
    model, optimizer = accelerator.prepare(model, optimizer)
    core: RouterModel = accelerator.unwrap_model(model)

    step, history, spent = 0, [], 0.0
    if cfg.train.resume and (resume_dir := last_step_dir(out_dir)) is not None:
        step, history, spent = resume(resume_dir, core, optimizer, scheduler)
        log(f"resumed from {resume_dir} at step {step} ({spent:.0f} s of training before)")
    elif cfg.train.resume:           # a job script may always ask to resume: its first run starts at step 0
        log(f"note: train.resume=true, but {out_dir} holds no step folder with a training_state.pt: starting at step 0")
    elif out_dir.exists() and any(out_dir.glob("step-*")) and accelerator.is_main_process:
        log(f"note: {out_dir} holds an earlier run; its step folders will be overwritten (use train.resume=true to continue)")
    accelerator.init_trackers("modelsat", config={k: str(v) for k, v in _flat(cfg.to_dict()).items()})

    # ---- loop ------------------------------------------------------------------------------------
    start = time.time() - spent  # time and the max_minutes budget count the whole run across resumes

    def out_of_time() -> bool:
        return bool(cfg.train.max_minutes) and time.time() - start > 60 * cfg.train.max_minutes

    core.set_stage("connector" if step < cfg.train.stage1_steps else "full")
    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not accelerator.is_local_main_process)
    metrics: dict = {}
    done = step >= total_steps       # resumed at the last step (stopped before final/): train no step beyond it
    if done:
        log(f"step {step} is the run's last step: nothing left to train; validating and writing final/")
    for epoch in range(step // steps_per_epoch, 0 if done else cfg.train.epochs):
        loader = accelerator.prepare(first_loader if epoch == 0 else build_dataloader(cfg, data, epoch))
        skip = (step - epoch * steps_per_epoch) * cfg.train.grad_accum
        if skip:
            loader = accelerator.skip_first_batches(loader, skip)
        model.train()
        for micro, batch in enumerate(loader, start=skip):
            # Randomness (dropout) is a function of (seed, epoch, micro-batch, rank): resume replays it exactly.
            torch.manual_seed(hash((cfg.train.seed, epoch, micro, accelerator.process_index)) % 2**63)
            with accelerator.accumulate(model):
                norm = accelerator.reduce(batch["weights"].sum().to(accelerator.device), "mean").item()
                loss = loss_fn(group_logits(model, batch, features, evidence), batch["labels"], batch["weights"], cfg,
                               norm)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            if not getattr(optimizer, "step_was_skipped", False):     # fp16: a step skipped for overflow
                scheduler.step()
            step += 1
            if step == cfg.train.stage1_steps:
                core.set_stage("full")
            loss_value = accelerator.gather(loss.detach()).mean().item()
            history.append({"step": step, "loss": loss_value})
            accelerator.log({"train/loss": loss_value, "train/lr": scheduler.get_last_lr()[0]}, step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if cfg.train.save_every and step % cfg.train.save_every == 0 and accelerator.is_main_process:
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "step": step, "history": history, "train_time_s": time.time() - start}
                save_checkpoint(out_dir / f"step-{step:06d}", core, cfg, data.aptitude, data.splits,
                                {"step": step, "epoch": epoch, "history": history}, data.table,
                                data.train_models, state,
                                aptitude_embeddings=keys, category_classifier=classifier, bank=bank)
            if step >= total_steps or out_of_time():
                break
        if accelerator.is_main_process:
            val = validate(core, data, features, cfg, evidence)
            accelerator.log({f"val/{k}": v for k, v in val.items() if isinstance(v, float)}, step=step)
            log(f"epoch {epoch}: val routing accuracy {val['accuracy']:.4f} (best single {val['best_single']:.4f} "
                f"{val['best_single_model']}, oracle {val['oracle']:.4f}, n={val['n']}); AUC {val['auc']:.4f}, "
                f"Brier {val['brier']:.4f}")
            metrics = {"step": step, "epoch": epoch, "val": val, "history": history}
        if step >= total_steps or out_of_time():
            break
    bar.close()
    if done and accelerator.is_main_process:
        metrics = {"step": step, "epoch": (step - 1) // steps_per_epoch, "val": validate(core, data, features, cfg, evidence),
                   "history": history}

    if accelerator.is_main_process:
        metrics.update({"train_time_s": round(time.time() - start, 1), "trainable_parameters": n_train,
                        "total_parameters": n_all, **({"stage0": stage0} if stage0 else {})})
        save_checkpoint(out_dir / "final", core, cfg, data.aptitude, data.splits, metrics, data.table,
                        data.train_models, aptitude_embeddings=keys, category_classifier=classifier, bank=bank)
        log(f"wrote {out_dir / 'final'}")
    # Leaving the process group. The ranks meet first (a rank that tore gloo down while the main one still validated
    # and saved hung, about one run in three). Then the DDP wrapper, whose reducer holds a reference to the group, is
    # released while the group still lives, and the ranks wait half a second without the GIL: gloo's worker thread
    # drops the last collectives' tensors after they complete, which needs the GIL, so a group destroyed in that
    # window deadlocks (the main thread joins the worker holding the GIL, the worker waits for it; seen here in the
    # reducer's dealloc when main() returned, about one two-process run in twenty; pytorch/pytorch#75097).
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        model, optimizer = accelerator.free_memory(model, optimizer)
        time.sleep(0.5)
    accelerator.end_training()
    return metrics


def _ours(e: BaseException) -> bool:
    """A modelsat error (ConfigError, TableError, CheckpointError, ...): its message already says what to do."""
    return type(e).__module__.startswith("modelsat")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def cli(argv: list[str] | None = None, prog: str = "train.py") -> int:
    """`main` for the command line: bad input (config, data, resume, files) ends as one line on stderr and exit
    code 2, its traceback shown only with --debug; other errors are bugs and keep their traceback."""
    argv = sys.argv[1:] if argv is None else argv
    quiet_libraries()   # an error is the one line on stderr, not after transformers' bars and warnings
    try:
        main(argv, prog, configure_logging=True)
    except (ValueError, OSError) as e:
        if "--debug" in argv or not (isinstance(e, OSError) or _ours(e)):
            raise
        print(f"{prog}: error: " + " ".join(line.strip() for line in str(e).splitlines()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())

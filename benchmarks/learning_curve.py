"""The learning curve of one training run: routing gain and interaction AUC of every saved checkpoint on val.

    python -m benchmarks.learning_curve --run runs/evidence --out runs/evidence/curve --max-instructions 300

Reads `<run>/step-NNNNNN/` (written every `train.save_every` steps) and `<run>/final/`, scores the first
`--max-instructions` instructions of the split that have a result of every model of the requested zoos with each
checkpoint (the same instructions for every checkpoint, every model of
the requested zoos, unseen models joining through their aptitude results), and reports per zoo the gain of the
router's choice over the best single model (points; the utility is p_correct), its 95% paired bootstrap CI, and p_correct's interaction AUC and Brier. The
predictions of each checkpoint are cached in `--out` (a rerun only scores new checkpoints). Prints one JSON object
and draws `<out>/learning_curve.png` (gain and interaction AUC against step).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from modelsat.logs import setup_logging
from modelsat.choice import normalised_costs
from modelsat.config import load_config
from modelsat.data.table import RoutingTable
from modelsat.embedding import cached_embedder
from modelsat.metrics import bootstrap_ci, interaction_auc, routed_outcomes
from modelsat.router import Router


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint of `run`, by step; `final` carries the step in its metrics.json."""
    out = []
    for d in sorted(run.iterdir()):
        m = re.fullmatch(r"step-(\d+)", d.name)
        if m and (d / "config.yaml").exists():
            out.append((int(m.group(1)), d))
        elif d.name == "final" and (d / "metrics.json").exists():
            out.append((int(json.loads((d / "metrics.json").read_text())["step"]), d))
    out.sort(key=lambda sd: (sd[0], sd[1].name == "final"))
    return sorted({s: d for s, d in out}.items())          # final replaces a step folder of the same step


def stamp(folder: Path) -> str:
    """What the cached predictions of a checkpoint are valid for: its folder and its trained weights' sizes and
    modification times (a retrained run in the same folder, or final/ after step-N of the same step, differ)."""
    files = [folder / "connector.safetensors", folder / "adapter_model.safetensors"]
    return json.dumps([str(folder.resolve())] + [[f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()])


def scored(folder: Path, table: RoutingTable, ids: list[str], models: list[str], cache: Path,
           embed=None) -> np.ndarray:
    """(Q, M) p_correct of one checkpoint (its utility before cost), cached in `cache` for these instructions,
    models and weights (`stamp`). `embed`: the table's cached sentence embeddings (`cached_embedder`) by the
    checkpoint's own sentence encoder, read where the router reads them."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if (z["question_ids"].tolist() == ids and z["models"].tolist() == models
                    and "stamp" in z.files and str(z["stamp"]) == stamp(folder)):
                return z["p"]
    router = Router.from_checkpoint(folder)
    res = table.results[table.results["question_id"].isin(set(router.aptitude.question_ids))]
    for m in models:
        if m not in router.models:
            router.add_model(m, res[res["model"] == m][["model", "question_id", "score"]])
    texts = table.texts(ids)
    embeddings = embed(texts) if embed is not None and router.reads_instruction_embeddings else None
    p = router.predict_matrix(texts, models, progress=True, embeddings=embeddings)
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, p=p, models=np.array(models), question_ids=np.array(ids), stamp=np.array(stamp(folder)))
    tmp.replace(cache)
    return p


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2."""
    print(f"learning_curve.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.learning_curve", description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a train.out_dir holding step-NNNNNN/ and final/")
    ap.add_argument("--out", required=True, help="folder for the cached predictions, curve.json and the plot")
    ap.add_argument("--split", default="val", choices=["train", "val"], help="never test: this chooses settings")
    ap.add_argument("--zoos", default="7b,mixed,large", help="zoos of the checkpoint's data.zoos, or all")
    ap.add_argument("--max-instructions", type=int, default=300, help="the first N of the split (0: all)")
    args = ap.parse_args()
    setup_logging()                    # modelsat's progress and warnings on stderr
    run, out = Path(args.run), Path(args.out)
    points = checkpoints(run) if run.is_dir() else []
    if not points:
        fail(f"{run} holds no step-NNNNNN/ or final/ checkpoint; train with train.save_every > 0")
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(points[-1][1] / "config.yaml")
    table = RoutingTable.load(cfg.data.table_dir)
    splits = json.loads((points[-1][1] / "splits.json").read_text())
    known = {**cfg.data.zoos, "all": table.model_names}
    unknown = [z for z in args.zoos.split(",") if z not in known]
    if unknown:
        fail(f"unknown zoo {', '.join(unknown)}; the checkpoint's zoos are {', '.join(known)}")
    zoos = {z: list(known[z]) for z in args.zoos.split(",")}
    models = sorted({m for z in zoos.values() for m in z})
    y_all = table.outcome_matrix(list(splits[args.split]), models).astype(np.float64)
    keep = ~np.isnan(y_all).any(axis=1)
    ids = [q for q, k in zip(splits[args.split], keep) if k][:args.max_instructions or None]
    y_all = y_all[keep][:len(ids)]
    ytr = table.outcome_matrix(list(splits["train"]), models).astype(np.float64)
    col = {m: j for j, m in enumerate(models)}

    embed = cached_embedder(table, cfg.model.sentence_encoder, Path(cfg.data.table_dir))   # one run: one encoder
    curve = []
    for step, folder in points:
        p = scored(folder, table, ids, models, out / f"predictions-{step:06d}.npz", embed)
        row = {"step": step, "checkpoint": str(folder)}
        for z, zm in zoos.items():
            c = [col[m] for m in zm]
            y, pz = y_all[:, c], p[:, c]
            best = int(np.nanargmax(np.nanmean(ytr[:, c], axis=0)))
            diff = routed_outcomes(pz, y, normalised_costs(table.costs(zm))) - y[:, best]
            lo, hi = bootstrap_ci(diff)
            row[z] = {"gain": round(100 * float(diff.mean()), 2), "gain_ci": [round(100 * lo, 2), round(100 * hi, 2)],
                      "interaction_auc": round(interaction_auc(pz, y), 4),
                      "brier": round(float(np.mean((pz - y) ** 2)), 4)}
        curve.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    result = {"run": str(run), "split": args.split, "n_instructions": len(ids), "zoos": list(zoos), "curve": curve}
    (out / "curve.json").write_text(json.dumps(result, indent=1))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in curve]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for z in zoos:
        axes[0].plot(steps, [r[z]["gain"] for r in curve], marker="o", label=z)
        axes[1].plot(steps, [r[z]["interaction_auc"] for r in curve], marker="o", label=z)
    axes[0].axhline(0, color="grey", lw=0.8)
    axes[0].set(xlabel="step", ylabel="gain over the best single model (points)",
                title=f"routing gain, {len(ids)} {args.split} instructions")
    axes[1].axhline(0.5, color="grey", lw=0.8)
    axes[1].set(xlabel="step", ylabel="interaction AUC of p_correct", title="within-instruction signal")
    for a in axes:
        a.legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=120)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

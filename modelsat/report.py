"""The outputs of an evaluation: `metrics.json`, `report.md` (one row per router, then per-category accuracy),
`cost_quality.png`, `reliability.png` and one `picks-<router>.png` heatmap per router.

    write_outputs(metrics, Path("runs/eval-7b"))          # metrics: the dict `modelsat.evaluate.evaluate` returns
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure        # no pyplot: files only, the caller's backend is left alone


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "–" if x is None else format(x, spec)


def report_markdown(metrics: dict) -> str:
    """The markdown report: one row per router, then per-category accuracy."""
    bs, routers = metrics["best_single"], metrics["routers"]
    lines = [f"# Routing evaluation: zoo `{metrics['zoo']}`, split `{metrics['split']}`", "",
             f"{metrics['n_instructions']} instructions ({metrics['n_dropped_missing']} dropped: a zoo model has no "
             f"result on them); {len(metrics['models'])} models; unseen: {', '.join(metrics['unseen']) or 'none'}.",
             f"Oracle {metrics['oracle']:.4f} · random (expected) {metrics['random']:.4f} · best single (chosen on "
             f"train): `{bs['model']}` {bs['accuracy']:.4f}.", "",
             "| router | accuracy | gain [95% CI] | gap closed | Brier | interaction AUC | cost AUC "
             "| cost at best-single acc. | most picked |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in routers.items():
        if not r.get("applicable", True):
            lines.append(f"| {name} | n/a | | | | | | | {r['reason']} |")
            continue
        top = max(r["picks"], key=r["picks"].get)
        at = r["cost_curve"]["cost_at_best_single"]
        lo, hi = r["gain_ci"]
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['gain']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                     f" | {_fmt(r['gap_closed'], '.3f')} | {_fmt(r.get('brier'))}"
                     f" | {_fmt(r.get('interaction_auc'), '.3f')} | {r['cost_curve']['auc']:.4f}"
                     f" | {_fmt(at and at['mean_cost'], '.4g')} | {top} ({r['picks'][top]:.0%}) |")
    cost = metrics["cost"]
    lines += ["", f"Gain = router − best single; 95% paired bootstrap CI over {metrics['bootstrap']['resamples']} "
              "resamples of the instructions. Gap closed = gain / (oracle − best single). Brier: mean squared error "
              "of p_correct over every (instruction, model). Interaction AUC: how well p_correct, less each model's "
              "mean, separates right from wrong models within an instruction (0.5: one fixed ranking of the models). "
              "Cost AUC: mean, over the zoo's cost range, of the best accuracy reachable at that mean cost (upper "
              "envelope of the cost_weight sweep). Cost at best-single "
              f"acc.: the lowest mean cost (best single model: {bs['cost']:.4g}) at which the sweep reaches the best "
              f"single model's accuracy. Cost rule: {cost['rule']}"
              + (f"; unknown cost: {', '.join(cost['unknown'])}." if cost["unknown"] else "."), ""]
    versus = routers.get("model-sat", {}).get("versus")
    if versus:
        lines += ["Model-SAT − each other router, accuracy on the same instructions (95% paired bootstrap CI): "
                  + "; ".join(f"{n} {v['diff']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]"
                              for n, v in versus.items()) + ".", ""]
        aucs = {n: v for n, v in versus.items() if "interaction_auc" in v}
        if aucs:
            lines += ["Model-SAT − each other router, interaction AUC on the same pairs (95% paired bootstrap CI)"
                      + (f"; over the models it knows by their labels, all but {', '.join(metrics['aptitude_only'])}"
                         if metrics.get("aptitude_only") else "") + ": "
                      + "; ".join(f"{n} {v['interaction_auc']['diff']:+.4f} [{v['interaction_auc']['ci'][0]:+.4f}, "
                                  f"{v['interaction_auc']['ci'][1]:+.4f}]"
                                  + (f" ({v['interaction_auc_labelled']['diff']:+.4f} "
                                     f"[{v['interaction_auc_labelled']['ci'][0]:+.4f}, "
                                     f"{v['interaction_auc_labelled']['ci'][1]:+.4f}])"
                                     if "interaction_auc_labelled" in v else "")
                                  for n, v in aucs.items()) + ".", ""]
    lines += ["## Per-category accuracy", ""]
    shown = [n for n, r in routers.items() if r.get("applicable", True)]
    lines += ["| category | n | best single | oracle | " + " | ".join(shown) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(shown)]
    for cat, c in metrics["categories"].items():
        lines.append(f"| {cat} | {c['n']} | {c['best_single']:.3f} | {c['oracle']:.3f} | "
                     + " | ".join(f"{routers[n]['per_category'][cat]:.3f}" for n in shown) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(metrics: dict, out: Path) -> None:
    """metrics.json, report.md, cost_quality.png, reliability.png (the reliability diagram of every router that
    gives probabilities) and one picks-<router>.png heatmap per applicable router."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "report.md").write_text(report_markdown(metrics))
    live = {n: r for n, r in metrics["routers"].items() if r.get("applicable", True)}
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    for name, r in live.items():
        pts = sorted(r["cost_curve"]["points"], key=lambda p: p["mean_cost"])
        ax.plot([p["mean_cost"] for p in pts], [p["accuracy"] for p in pts], marker=".", label=name)
    bs = metrics["best_single"]
    ax.axhline(bs["accuracy"], color="grey", ls="--", lw=1, label=f"best single ({bs['model']})")
    ax.axhline(metrics["oracle"], color="black", ls=":", lw=1, label="oracle")
    ax.set(xlabel="mean cost per instruction", ylabel="accuracy",
           title=f"cost–quality, zoo {metrics['zoo']} ({metrics['split']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "cost_quality.png", dpi=120)
    calibrated = {n: r for n, r in live.items() if "reliability" in r}
    if calibrated:
        fig = Figure(figsize=(5.5, 5))
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated")
        for name, r in calibrated.items():
            pts = [b for b in r["reliability"]["bins"] if b["n"]]
            ax.plot([b["mean_p"] for b in pts], [b["freq"] for b in pts], marker="o", ms=3,
                    label=f"{name} (ECE {r['reliability']['ece']:.3f}, Brier {r['brier']:.3f})")
        ax.set(xlabel="p_correct (mean in bin)", ylabel="share answered correctly", xlim=(0, 1), ylim=(0, 1),
               title=f"reliability, zoo {metrics['zoo']} ({metrics['split']})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "reliability.png", dpi=120)
    models = metrics["models"]
    for name, r in live.items():
        cats = list(r["picks_per_category"])
        mat = np.array([[r["picks_per_category"][c][m] for m in models] for c in cats])
        fig = Figure(figsize=(1.0 + 0.45 * len(models), 1.2 + 0.32 * len(cats)))
        ax = fig.subplots()
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(models)), models, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(cats)), cats, fontsize=7)
        ax.set_title(f"{name}: share of picks per category", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.04)
        fig.tight_layout()
        fig.savefig(out / f"picks-{name}.png", dpi=110)

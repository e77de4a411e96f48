"""Model-SAT from a checkpoint against every baseline on MMLU-Pro, for the zoos 7b, mixed, large and all,
in-domain (MMLU subjects) and out-of-domain (STEMEZ, TheoremQA, SciBench) test questions separately.

    python -m benchmarks.eval_modelsat --checkpoint runs/default/final --out runs/default/results
    python -m benchmarks.eval_modelsat --checkpoint runs/default/final --out runs/default/val --split val

The router scores every (test instruction, model) pair of the table once — a candidate's score does not
depend on the other candidates (packing is exact) — and each zoo reads its columns. The checkpoint's
aptitude test and splits are used throughout; models of `data.unseen_models` join through their aptitude
results only (for Model-SAT always; for the baselines too in the `test-unseen` (`val-unseen`) runs). Prints one JSON object (accuracy, gain and its 95% CI per router, zoo and slice).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from modelsat.logs import setup_logging
from modelsat.baselines import ModelSATRouter, default_routers
from modelsat.data.table import RoutingTable
from modelsat.embedding import cached_embedder
from modelsat.evaluate import evaluate
from modelsat.router import Router

ZOOS = ["7b", "mixed", "large", "all"]


class MatrixRouter:
    """A Router stand-in that answers `predict_matrix` from scores computed once by the real router."""

    def __init__(self, router: Router, texts: list[str], matrix: np.ndarray, models: list[str]) -> None:
        self.router, self.aptitude, self.config, self.models = router, router.aptitude, router.config, list(models)
        self.row = {t: i for i, t in enumerate(texts)}
        self.col = {m: j for j, m in enumerate(models)}
        self.matrix = matrix

    def add_model(self, name: str, results, **meta) -> None:   # meta: cost, params_b, cost_unit (unused here)
        if name not in self.col:
            raise ValueError(f"{name} was not scored")

    def remove_model(self, name: str) -> None:
        pass

    def predict_matrix(self, instructions: list[str], models: list[str], progress: bool = False) -> np.ndarray:
        return self.matrix[np.ix_([self.row[t] for t in instructions], [self.col[m] for m in models])]


def join_zoo(router: Router, table: RoutingTable, models: list[str]) -> None:
    """Add each of `models` missing from the router's zoo through its aptitude-test results in `table`."""
    res = table.results[table.results["question_id"].isin(set(router.aptitude.question_ids))]
    for m in models:
        if m not in router.models:
            router.add_model(m, res[res["model"] == m][["model", "question_id", "score"]])


def cached_scores(router: Router, texts: list[str], ids: list[str], wanted: list[str], cache: Path,
                  embed=None) -> tuple[np.ndarray, list[str]]:
    """p(correct) of `wanted` models on `texts`, cached per model in `cache` (written atomically): a later run
    for more models scores only those not yet scored. `embed`: the table's cached embedder by the router's own
    sentence encoder, which spares the router encoding the texts again. Returns (Q, M) scores and their M model
    names."""
    matrix, models = np.zeros((len(texts), 0)), []
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if z["question_ids"].tolist() == list(ids):
                matrix, models = z["p"], z["models"].tolist()
    missing = [m for m in wanted if m not in models]
    if missing:
        start = time.time()
        embeddings = embed(texts) if embed is not None and router.reads_instruction_embeddings else None
        matrix = np.concatenate([matrix, router.predict_matrix(texts, missing, progress=True, embeddings=embeddings)],
                                axis=1)
        models = models + missing
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, p=matrix, models=np.array(models), question_ids=np.array(list(ids)))
        tmp.replace(cache)
        print(f"scored {len(texts)} instructions x {len(missing)} models in {time.time() - start:.0f} s",
              file=sys.stderr)
    return matrix, models


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_modelsat", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--zoos", default=",".join(ZOOS))
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="the split to score (val: choose between routers; test: report once)")
    p.add_argument("--max-test", type=int, default=0, help="only the first N instructions (a smoke run; 0: all)")
    args = p.parse_args()
    setup_logging()                    # modelsat's progress and warnings on stderr
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    router = Router.from_checkpoint(args.checkpoint)
    cfg = router.config
    table = RoutingTable.load(cfg.data.table_dir)
    splits = json.loads((Path(args.checkpoint) / "splits.json").read_text())
    unseen = list(cfg.data.unseen_models)
    zoos = {**cfg.data.zoos, "all": table.model_names}
    join_zoo(router, table, table.model_names)

    # One pass of the router over the split, every model of the requested zoos.
    wanted = args.zoos.split(",")
    needed = sorted({m for z in wanted for m in zoos[z]} | {m for m in unseen if any(m in zoos[z] for z in wanted)})
    split = args.split
    qids = list(splits[split])[:args.max_test or None]
    texts = table.texts(qids)
    embed = cached_embedder(table, "all-minilm-l6-v2", Path(cfg.data.table_dir))        # the baselines' encoder
    router_embed = (embed if cfg.model.sentence_encoder == "all-minilm-l6-v2"
                    else cached_embedder(table, cfg.model.sentence_encoder, Path(cfg.data.table_dir)))
    matrix, models = cached_scores(router, texts, qids, needed, out / f"predictions-{split}.npz", router_embed)
    stand_in = MatrixRouter(router, texts, matrix, models)

    sources = dict(zip(table.questions["question_id"], table.questions["source"]))
    slices = {split: qids,
              "in-domain": [q for q in qids if str(sources[q]).startswith("ori_mmlu")],
              "out-of-domain": [q for q in qids if not str(sources[q]).startswith("ori_mmlu")]}
    summary: dict = {"checkpoint": args.checkpoint, "split": split, "unseen": unseen, "results": []}
    for zoo in wanted:
        zoo_unseen = [m for m in unseen if m in zoos[zoo]]
        # Every baseline may use the train labels of every zoo model; Model-SAT knows the unseen ones only
        # through the zoo. The `unseen` setting also withholds their labels from the baselines.
        runs = [(name, ids, []) for name, ids in slices.items()]
        if zoo_unseen:
            runs.append((f"{split}-unseen", qids, zoo_unseen))
        for name, ids, held_out in runs:
            routers = default_routers(0) + [ModelSATRouter(router=stand_in)]
            m = evaluate(table, {**splits, split: ids}, router.aptitude, zoos[zoo], split, held_out,
                         routers=routers, embed=embed, out=out / f"{zoo}-{name}", zoo=zoo, log=lambda s: None,
                         aptitude_only=[] if held_out else zoo_unseen)
            row = {"zoo": zoo, "slice": name, "n": m["n_instructions"], "unseen": held_out,
                   "best_single": m["best_single"], "oracle": m["oracle"],
                   "routers": {k: {f: v.get(f) for f in ("accuracy", "gain", "gain_ci", "gap_closed", "applicable",
                                                          "interaction_auc")}
                               for k, v in m["routers"].items()}}
            summary["results"].append(row)
            ms = m["routers"]["model-sat"]
            print(f"{zoo:>6} {name:>13} n={m['n_instructions']}: model-sat {ms.get('accuracy', float('nan')):.4f} "
                  f"gain {ms.get('gain', float('nan')):+.4f} {ms.get('gain_ci')}", file=sys.stderr)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

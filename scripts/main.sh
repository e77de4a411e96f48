#!/usr/bin/env bash
# The main job end to end (run through `make main`): data -> train -> add unseen models -> evaluate -> rank.
#   bash scripts/main.sh [CONFIG] [key.sub=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/default.yaml}; shift || true
BIN=${BIN:-.venv/bin}
SHARED=${SHARED:-../shared/data}

# Resolved settings of the run (the config plus overrides).
# ZOO: the config's `mixed` zoo where it has one (else every model); EVAL_UNSEEN: the unseen models in it.
read -r TABLE OUT UNSEEN ZOO EVAL_UNSEEN < <("$BIN/python" - "$CONFIG" "$@" <<'PY'
import sys
from modelsat.config import load_config
c = load_config(sys.argv[1], sys.argv[2:])
zoo = "mixed" if "mixed" in c.data.zoos else "all"
inside = [m for m in c.data.unseen_models if zoo == "all" or m in c.data.zoos[zoo]]
print(c.data.table_dir, c.train.out_dir, ",".join(c.data.unseen_models) or "-", zoo, ",".join(inside) or "-")
PY
)

# 1. Data: read ../shared/data where present, otherwise fetch MMLU-Pro from its public home.
if [ ! -e "$TABLE/questions.parquet" ] && [ ! -d "$SHARED/mmlu_pro" ]; then
  "$BIN/modelsat" data build --source mmlu-pro-raw --download --input data/mmlu-pro/raw --out "$TABLE"
fi

# 2. Train (builds the table, the aptitude test and the splits on first use).
"$BIN/accelerate" launch --config_file configs/accelerate/cpu.yaml train.py --config "$CONFIG" "$@"
CKPT="$OUT/final"

# 3. Models never seen in training join the zoo through their aptitude results only.
if [ "$UNSEEN" != "-" ]; then
  for m in ${UNSEEN//,/ }; do
    "$BIN/modelsat" zoo remove --checkpoint "$CKPT" --name "$m" 2>/dev/null || true
    "$BIN/modelsat" zoo add --checkpoint "$CKPT" --name "$m" --results "$TABLE/results.parquet"
  done
fi
"$BIN/modelsat" zoo list --checkpoint "$CKPT"

# 4. Evaluate on the test split against the baselines.
ARGS=(--checkpoint "$CKPT" --table "$TABLE" --split test --zoo "$ZOO" --out "$OUT/evaluate")
[ "$EVAL_UNSEEN" != "-" ] && ARGS+=(--unseen "$EVAL_UNSEEN")
"$BIN/modelsat" evaluate "${ARGS[@]}"
cat "$OUT/evaluate/report.md"

# 5. Rank the zoo for an example instruction.
"$BIN/python" infer.py --checkpoint "$CKPT" --top-k 5 --instruction \
  "A 2.0 kg block slides down a frictionless incline of height 5.0 m. What is its speed at the bottom?\nA. 5.0 m/s\nB. 7.0 m/s\nC. 9.9 m/s\nD. 14 m/s"

# 6. The committed router (trained with configs/default.yaml, unseen models added through the zoo) ranks the same instruction.
if [ -d checkpoints/modelsat-smollm2-mmlupro ]; then
  "$BIN/python" infer.py --checkpoint checkpoints/modelsat-smollm2-mmlupro --top-k 5 --instruction \
    "A 2.0 kg block slides down a frictionless incline of height 5.0 m. What is its speed at the bottom?\nA. 5.0 m/s\nB. 7.0 m/s\nC. 9.9 m/s\nD. 14 m/s"
fi

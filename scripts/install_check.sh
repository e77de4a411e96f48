#!/usr/bin/env bash
# The package as a user installs it (run by `make test`): a fresh venv, `pip install .`, `modelsat rank` over the
# committed router offline and from outside the checkout; `modelsat serve` refused in one line without [serve];
# then `pip install .[serve]` and `modelsat serve` answers /health and /rank. Exits non-zero on any failure.
#   bash scripts/install_check.sh            (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
say() { echo "install_check: $*"; }

"${PYTHON:-python3}" -m venv "$WORK/venv"
BIN=$WORK/venv/bin
"$BIN/pip" install -q --upgrade pip
"$BIN/pip" install -q torch==2.13.0           # its CPU wheel first, as the README says
"$BIN/pip" install -q "$REPO"
cd "$WORK"                                   # the installed package, not the source tree
say "$("$BIN/modelsat" --version)"
"$BIN/python" -c "import modelsat, pathlib; assert 'site-packages' in modelsat.__file__, modelsat.__file__"

INSTRUCTION="A 2.0 kg block slides down a frictionless incline of height 5.0 m. What is its speed at the bottom?"
"$BIN/modelsat" rank --checkpoint "$REPO/checkpoints/modelsat-smollm2-mmlupro" --top-k 3 --json "$INSTRUCTION" \
  > rank.json
"$BIN/python" -c "import json; r = json.load(open('rank.json')); assert len(r) == 3 and 0 <= r[0]['p_correct'] <= 1, r"
say "modelsat rank: $(head -c 200 rank.json | tr -d '\n ')..."
"$BIN/modelsat" train --help > /dev/null

set +e
"$BIN/modelsat" serve --checkpoint "$REPO/checkpoints/modelsat-smollm2-mmlupro" 2> serve.err
code=$?
set -e
if [ "$code" != 2 ] || [ "$(wc -l < serve.err)" != 1 ] || ! grep -q "pip install 'modelsat\[serve\]'" serve.err; then
  say "serve without [serve] should end in one line naming the extra (exit $code):"; cat serve.err; exit 1
fi
say "without [serve]: $(cat serve.err)"

"$BIN/pip" install -q "$REPO[serve]"
PORT=$("$BIN/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$BIN/modelsat" serve --checkpoint "$REPO/checkpoints/modelsat-smollm2-mmlupro" --port "$PORT" \
  --log-level WARNING > serve.log 2>&1 &
SERVER=$!
"$BIN/python" - "$PORT" "$INSTRUCTION" <<'PY'
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(300):
    try:
        health = json.load(urllib.request.urlopen(base + "/health", timeout=2))
        break
    except OSError:
        time.sleep(1)
else:
    sys.exit("modelsat serve did not answer /health within 300 s")
request = urllib.request.Request(base + "/rank", json.dumps({"instruction": sys.argv[2], "top_k": 2}).encode(),
                                 {"Content-Type": "application/json"})
ranked = json.load(urllib.request.urlopen(request, timeout=60))
assert health["status"] == "ok" and len(ranked) == 2, (health, ranked)
print(f"install_check: modelsat serve: /health {health['models']} models, /rank -> {ranked[0]['model']}")
PY
say "ok"

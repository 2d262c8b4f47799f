#!/usr/bin/env bash
# Aime's goal suite on one model: aime, the single actor (solo) and the smolagents peer, side by side against one
# `recursa serve`, so every system shares the same server, load and tasks.
#
#   bench/aime_suite.sh MODEL OUT_DIR PORT LIMIT        e.g. bench/aime_suite.sh qwen2.5-coder-1.5b runs/aime15 8015 10
#   PEER_PORT=8019 bench/aime_suite.sh ...              the peer on a second server of its own (one model, 2 cores)
#   python bench/aime_goals.py report OUT_DIR/recursa OUT_DIR/peer
#
# Needs the peer's venv (see bench/aime_peer.py) at $SMOL_PY (default /tmp/smol-venv/bin/python). Rerunning with
# the same OUT_DIR resumes: finished goals stay. The server log and each run's commit are kept in OUT_DIR.
set -euo pipefail
model=${1:?model}; out=${2:?out dir}; port=${3:?port}; limit=${4:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
py="$here/.venv/bin/python"; recursa="$here/.venv/bin/recursa"; smol=${SMOL_PY:-/tmp/smol-venv/bin/python}
[ -x "$smol" ] || { echo "no peer venv at $smol (see bench/aime_peer.py)" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)   # absolute: the peer's sandbox binds its workspace by path
git -C "$here" rev-parse --short HEAD > "$out/commit"
"$py" "$here/bench/aime_goals.py" make --out "$out/goals"
servers=()
trap 'kill "${servers[@]}" 2>/dev/null' EXIT
serve() {   # serve PORT LOG: one `recursa serve` of the model, waited for until it answers
  "$recursa" serve --model "$model" --port "$1" --max-batch 16 > "$2" 2>&1 &
  servers+=($!)
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$1/health" > /dev/null && return
    kill -0 "${servers[-1]}" 2>/dev/null || { echo "server exited; see $2" >&2; exit 1; }
    sleep 1
  done
}
serve "$port" "$out/serve.log"
url="http://127.0.0.1:$port/v1"
peer_url=$url
if [ -n "${PEER_PORT:-}" ]; then   # the peer on a server of its own (then compare its seconds with nobody's)
  serve "$PEER_PORT" "$out/serve-peer.log"
  peer_url="http://127.0.0.1:$PEER_PORT/v1"
fi
"$py" "$here/bench/aime_goals.py" run --base-url "$url" --model "$model" --systems aime,solo --parallel 8 \
  --limit "$limit" --out "$out/recursa" > "$out/recursa.log" 2>&1 &
ours=$!
"$smol" "$here/bench/aime_peer.py" --goals "$out/goals" --model "$model" --base-url "$peer_url" --parallel 4 \
  --limit "$limit" --out "$out/peer" > "$out/peer.log" 2>&1 &
peer=$!
wait $ours $peer
"$py" "$here/bench/aime_goals.py" report "$out/recursa" "$out/peer"

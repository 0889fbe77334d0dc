#!/usr/bin/env bash
# How throughput and memory grow with the completed instances a node keeps:
# start one agent (its own process, a fresh data dir), then alternately fill
# its state with chain3 runs and measure a run of 5,000 at 512 in flight,
# printing the bench summary, the agent's resident size and heap, and the
# data dir's size after each step.
#
#   scripts/bench-retained.sh [FILL...]     default: 95000 395000 495000 (0, 100k, 500k, 1M retained)
#
#   BIN         lockstep binary              (default ./bin/lockstep)
#   DIR         data dir and agent log       (default a temporary dir, removed at the end)
#   PORT        the agent's HTTP port        (default 7900; raft and gossip use +1, +2)
#   GOMEMLIMIT  passed to the agent: about 8 KB of live heap per retained
#               chain3 instance, four times that resident at gc_percent 300,
#               so a million needs a limit below the machine's memory
#               (default 19GiB)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./bin/lockstep}
PORT=${PORT:-7900}
[ -x "$BIN" ] || { echo "bench-retained: $BIN not found; run 'make build' first" >&2; exit 1; }
fills=("$@")
[ ${#fills[@]} -gt 0 ] || fills=(95000 395000 495000)
tmp=""
if [ -z "${DIR:-}" ]; then
  tmp=$(mktemp -d)
  DIR=$tmp
fi
mkdir -p "$DIR/data"

GOMEMLIMIT=${GOMEMLIMIT:-19GiB} "$BIN" agent -node retained -data-dir "$DIR/data" -bootstrap-expect 1 \
  -bind 127.0.0.1 -http-port "$PORT" -raft-port $((PORT + 1)) -gossip-port $((PORT + 2)) \
  -log-level warn >"$DIR/agent.log" 2>&1 &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ -z "$tmp" ] || rm -rf "$tmp"
}
trap stop EXIT
addr=http://127.0.0.1:$PORT
for _ in $(seq 1 100); do
  curl -sf "$addr/v1/health" >/dev/null && break
  sleep 0.2
done

retained=0
measure() {
  echo "== $retained completed instances retained ($(date +%T))"
  "$BIN" bench -address "$addr" -workload chain3 -instances 5000 -concurrency 512 2>/dev/null
  retained=$((retained + 5000))
  curl -s "$addr/v1/stats" | python3 -c 'import json, sys
d = json.load(sys.stdin)
p = d["process"]
print("  agent       %d MiB resident, %d MiB heap allocated, %d instances in the state" % (p["rss_bytes"] >> 20, p["heap_alloc_bytes"] >> 20, d["state"]["instances"]))'
  echo "  data dir    $(du -sh "$DIR/data" | cut -f1)"
}
measure
for n in "${fills[@]}"; do
  echo "-- filling with $n ($(date +%T))"
  "$BIN" bench -address "$addr" -workload chain3 -instances "$n" -concurrency 512 2>/dev/null | grep -E "throughput|errors"
  retained=$((retained + n))
  measure
done

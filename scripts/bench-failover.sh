#!/usr/bin/env bash
# What a client sees when the leader dies under load: start three agents
# (their own processes, fresh data dirs), run chain3 at a fixed rate
# through the two nodes that do not lead, kill -9 the leader a few seconds
# in, and print the bench summary and, per second, the instances that
# completed in it, the errors so far and that second's p99 (ms).
#
#   scripts/bench-failover.sh
#
#   BIN     lockstep binary                      (default ./bin/lockstep)
#   RATE    chain3 starts per second             (default 200)
#   KILLAT  seconds into the run of the kill -9  (default 6)
#   SECS    length of the run in seconds         (default 16)
#   PORT    first node's HTTP port               (default 7950; nodes use +0, +10, +20; raft and gossip +1, +2)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./bin/lockstep}
RATE=${RATE:-200}
KILLAT=${KILLAT:-6}
SECS=${SECS:-16}
PORT=${PORT:-7950}
[ -x "$BIN" ] || { echo "bench-failover: $BIN not found; run 'make build' first" >&2; exit 1; }
DIR=$(mktemp -d)
pids=()
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$DIR"
}
trap stop EXIT

for i in 0 1 2; do
  http=$((PORT + i * 10))
  "$BIN" agent -node "node$i" -data-dir "$DIR/node$i" -bind 127.0.0.1 \
    -http-port "$http" -raft-port $((http + 1)) -gossip-port $((http + 2)) \
    -bootstrap-expect 3 -join "127.0.0.1:$((PORT + 2))" -log-level warn >"$DIR/node$i.log" 2>&1 &
  pids+=($!)
  disown $! # its kill -9 is the point, not news
done
leader=""
for _ in $(seq 1 150); do
  leader=$(LOCKSTEP_ADDR="http://127.0.0.1:$PORT" "$BIN" leader 2>/dev/null | sed -n 's/.*(http:\/\/127.0.0.1:\([0-9]*\)).*/\1/p') || true
  [ -n "$leader" ] && break
  sleep 0.2
done
[ -n "$leader" ] || { echo "bench-failover: no leader after 30s; see $DIR/*.log" >&2; exit 1; }
addrs=()
victim=""
for i in 0 1 2; do
  http=$((PORT + i * 10))
  if [ "$http" = "$leader" ]; then victim=${pids[$i]}; else addrs+=(-address "http://127.0.0.1:$http"); fi
done
echo "leader on :$leader (pid $victim) is killed ${KILLAT}s into a ${SECS}s run at ${RATE}/s through the other two"
(sleep "$KILLAT"; kill -9 "$victim") &
"$BIN" bench "${addrs[@]}" -workload chain3 -rate "$RATE" -duration "${SECS}s" -concurrency 1024 -out "$DIR/seconds.csv" 2>/dev/null ||
  true # errors make the bench exit 1; they are part of the result
echo "second: completed in it / errors so far / p99 ms"
awk -F, 'NR > 1 { printf "%s: %d / %s / %s\n", $1, $3 - prev, $5, $7; prev = $3 }' "$DIR/seconds.csv"

#!/usr/bin/env bash
# make demo: a local 3-node Lockstep cluster of real processes on 127.0.0.1,
# running the workflows in examples/. Ctrl-C stops every process it started.
#
#   DEMO_DIR   data and logs          (default ./.demo)
#   DEMO_PORT  first node's HTTP port (default 7700; nodes use +0..2, +10.., +20..)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./bin/lockstep}
DIR=${DEMO_DIR:-.demo}
BASE=${DEMO_PORT:-7700}
[ -x "$BIN" ] || { echo "demo: $BIN not found; run 'make build' first" >&2; exit 1; }

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
run() { printf '\033[36m$ %s\033[0m\n' "$*"; "$@"; }

pids=()
stop() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    bold "Stopping the cluster (pids ${pids[*]})"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "Stopped. Data and logs are in $DIR/."
}
trap stop EXIT
trap 'exit 0' INT TERM

for p in $(seq "$BASE" $((BASE + 22))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "demo: port $p is in use; stop what uses it or set DEMO_PORT" >&2
    exit 1
  fi
done

rm -rf "$DIR" && mkdir -p "$DIR"
bold "Starting 3 agents (data and logs under $DIR/)"
for i in 1 2 3; do
  http=$((BASE + (i - 1) * 10))
  "$BIN" agent -node "node$i" -data-dir "$DIR/node$i" \
    -http-port "$http" -raft-port $((http + 1)) -gossip-port $((http + 2)) \
    -bootstrap-expect 3 -join "127.0.0.1:$((BASE + 2))" >"$DIR/node$i.log" 2>&1 &
  pids+=($!)
  echo "  node$i  http://127.0.0.1:$http   (log: $DIR/node$i.log)"
done

export LOCKSTEP_ADDR="http://127.0.0.1:$BASE"
printf 'Waiting for the servers to find each other and elect a leader'
for _ in $(seq 1 150); do
  if "$BIN" leader >/dev/null 2>&1; then break; fi
  printf '.'; sleep 0.2
done
echo
"$BIN" leader >/dev/null || { echo "demo: no leader after 30s; see $DIR/*.log" >&2; exit 1; }

bold "The cluster"
run "$BIN" members
run "$BIN" peers

bold "Registering the example workflows (any node accepts writes; followers forward them)"
run "$BIN" workflow register examples/*.hcl

bold "Starting instances on different nodes"
n2="http://127.0.0.1:$((BASE + 10))"
n3="http://127.0.0.1:$((BASE + 20))"
ids=()
ids+=("$("$BIN" instance start -address "$n2" diamond -input '{"n": 21}' -id demo-diamond)")
ids+=("$("$BIN" instance start -address "$n3" hello -input '{"name": "Lockstep"}' -id demo-hello)")
ids+=("$("$BIN" instance start pipeline -input '{"rows": 1000, "source": "orders"}' -id demo-pipeline)")
ids+=("$("$BIN" instance start -address "$n2" http-check -input "{\"base_url\": \"$n3\"}" -id demo-http)")
ids+=("$("$BIN" instance start spend-guard -input '{"account": "acme", "amount": 120}' -id demo-spend-ok)")
ids+=("$("$BIN" instance start -address "$n3" spend-guard -input '{"account": "acme", "amount": 5000}' -id demo-spend-refused)")
ids+=("$("$BIN" instance start backfill -input '{"tables": {"orders": {"days": 30}, "users": {"days": 12}, "events": {"days": 20}, "refunds": {"days": 5}}}' -id demo-backfill)")
for k in 1 2 3 4 5; do
  ids+=("$("$BIN" instance start diamond -input "{\"n\": $k}")")
done
printf '  started %s\n' "${ids[@]}"

bold "Watching them progress on the agents' built-in workers"
for _ in $(seq 1 50); do
  out=$("$BIN" instance list)
  clear_line=$(printf '%s\n' "$out" | grep -c running || true)
  printf '%s\n\n' "$out"
  [ "$clear_line" -eq 0 ] && break
  sleep 0.4
done

bold "One instance in detail, read from node3"
run "$BIN" instance status -address "$n3" demo-pipeline

bold "An error path: the refused spend was handled, the audit ran either way"
run "$BIN" instance status demo-spend-refused

bold "A bounded fan-out over a map: one task per table, two at a time"
run "$BIN" instance status demo-backfill

bold "A human approval: the instance waits for a signal, sent here through node2"
"$BIN" instance start approval -input '{"request": "new laptop", "amount": 1800}' -id demo-approval >/dev/null
for _ in $(seq 1 50); do
  "$BIN" instance status demo-approval | grep -q waiting_signal && break
  sleep 0.1
done
run "$BIN" instance signal -address "$n2" demo-approval approve -payload '{"approved": true, "by": "ada"}' -request-id demo-1
run "$BIN" instance start approval -input '{"request": "second laptop", "amount": 1800}' -id demo-approval-2
sleep 0.5
run "$BIN" instance status demo-approval

bold "A cron trigger, fired now instead of at 02:00 Paris time"
run "$BIN" trigger list
run "$BIN" trigger fire nightly-etl.nightly

bold "Cancel with compensation: an order is cancelled while it ships"
"$BIN" instance start order-saga -input '{"order_id": "A-1001", "amount": 42}' -id demo-order >/dev/null
for _ in $(seq 1 50); do
  "$BIN" instance status demo-order | grep -qE '^  ship +running' && break
  sleep 0.1
done
run "$BIN" instance cancel demo-order -reason "customer changed their mind" -wait
run "$BIN" instance history demo-order

cat <<TRY

$(printf '\033[1m')Lockstep is running. Try next (in another terminal):$(printf '\033[0m')

  export LOCKSTEP_ADDR=$LOCKSTEP_ADDR
  $BIN members                                   # gossip members and the leader
  $BIN workflow list
  $BIN instance start diamond -input '{"n": 5}' -wait
  $BIN instance status demo-http -address $n2    # read from any node
  $BIN instance list -workflow pipeline
  $BIN workflow validate examples/diamond.hcl    # checks a file locally
  $BIN instance signal demo-approval-2 approve -payload '{"approved": false, "by": "you"}'
  $BIN instance terminate -reason "changed my mind" <ID of a running instance>

  # kill -9 the leader and watch the other two carry on
  # (then point -address at a node that is still up):
  $BIN leader
  kill -9 \$(pgrep -f -- "-node \$($BIN leader | cut -d' ' -f1) ")
  $BIN instance start pipeline -input '{"rows": 5, "source": "after"}' -wait -address $n3

  # the raw HTTP API:
  curl -s $LOCKSTEP_ADDR/v1/instances/demo-diamond
  curl -s -XPOST $LOCKSTEP_ADDR/v1/workflows/hello/instances -d '{"input": {"name": "curl"}}'

Press Ctrl-C to stop the cluster.
TRY
wait "${pids[@]}"

#!/usr/bin/env bash
# The measurements docs/performance.md keeps, in one command, each one a
# `lockstep bench -local` run printed as a row of a Markdown table:
#
#   1. the raft ceiling (empty commands through the write path), 3 nodes;
#   2. each workload at saturation (closed loop), 3 nodes;
#   3. each workload in the open loop at half of the rate step 2 measured;
#   4. chain3 at 1,000 starts/s, everything retained and with -retention 2s;
#   5. chain3 and the raft ceiling on 1 and 5 nodes;
#   6. chain3 at saturation with 10,000 and 100,000 completed instances
#      retained (-fill), 3 nodes;
#   7. with MILLION=1, chain3 with 1,000,000 retained on one node (a fill
#      of 995,000 first: about ten minutes, 10-15 GiB resident).
#
#   scripts/bench-matrix.sh            about five minutes without step 7
#
#   BIN      lockstep binary (default ./bin/lockstep)
#   MILLION  1 to run step 7
#
# This machine's speed drifts from hour to hour: compare rows of one run of
# this script (and the raft ceiling of that run), not across days.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./bin/lockstep}
[ -x "$BIN" ] || { echo "bench-matrix: $BIN not found; run 'make build' first" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-matrix: needs python3 to format the rows" >&2; exit 1; }

echo "# $(date -u +'%Y-%m-%d %H:%M UTC'), $("$BIN" version 2>/dev/null | head -1), $(nproc) CPUs"
echo
echo "| run | instances/s | raft entries/s | p50 | p90 | p99 | max | dispatch p50 / p99 | CPU per instance | flags |"
echo "|---|---|---|---|---|---|---|---|---|---|"

rate=$(mktemp)
trap 'rm -f "$rate"' EXIT

# row LABEL FLAGS...: one bench run, one table row; the run's instances/s
# is left in $rate.
row() {
  local label=$1
  shift
  local out
  out=$("$BIN" bench -local -json "$@" 2>/dev/null) || { echo "bench-matrix: $label failed: $*" >&2; echo "$out" >&2; exit 1; }
  python3 -c '
import json, sys
label, flags = sys.argv[1], sys.argv[2]
r = json.load(sys.stdin)
l = r.get("leader") or {}
lat = r["latency_ms"]
d = l.get("dispatch_latency_ms") or {}
disp = "%.1f / %.1f ms" % (d["p50"], d["p99"]) if d else "–"
cpu = "%.2f ms" % l["cpu_ms_per_instance"] if l.get("cpu_ms_per_instance") else "–"
if r.get("filled"):
    label += " (filled at %s/s; %.1f GiB resident after)" % (format(round(r["fill_instances_per_sec"]), ","), l.get("rss_bytes", 0) / 2**30)
ms = lambda k: format(round(lat[k]), ",") + " ms" if lat[k] >= 10 else "%.1f ms" % lat[k]
print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | `%s` |" % (label, format(round(r["instances_per_sec"]), ","),
      format(round(r["raft_entries_per_sec"]), ","), ms("p50"), ms("p90"), ms("p99"), ms("max"), disp, cpu, flags))
open(sys.argv[3], "w").write("%f" % r["instances_per_sec"])
' "$label" "$*" "$rate" <<<"$out"
}

# half RATE: half of a measured rate, to two significant figures.
half() { python3 -c 'import math, sys; h = float(sys.argv[1]) / 2; m = 10 ** max(0, int(math.log10(h)) - 1); print(max(1, int(round(h / m) * m)))' "$1"; }

row "raft ceiling, 3 nodes" -workload raft -instances 30000 -concurrency 256
declare -A sat
for w in chain3 timer signal fanout; do
  case $w in
    chain3) flags=(-instances 10000 -concurrency 512) ;;
    fanout) flags=(-instances 100 -concurrency 16) ;;
    *) flags=(-instances 5000 -concurrency 512) ;;
  esac
  row "$w, saturation" -workload "$w" "${flags[@]}"
  sat[$w]=$(cat "$rate")
done
for w in chain3 timer signal fanout; do
  c=1024
  [ "$w" = fanout ] && c=256
  r=$(half "${sat[$w]}")
  row "$w, half of saturation" -workload "$w" -rate "$r" -duration 20s -concurrency "$c"
done
row "chain3, 1,000/s offered" -workload chain3 -rate 1000 -duration 20s -concurrency 1024
row "chain3, 1,000/s offered, -retention 2s" -workload chain3 -rate 1000 -duration 20s -concurrency 1024 -retention 2s
for n in 1 5; do
  row "chain3, saturation, $n node(s)" -nodes "$n" -workload chain3 -instances 10000 -concurrency 512
  row "raft ceiling, $n node(s)" -nodes "$n" -workload raft -instances 30000 -concurrency 256
done
row "chain3, saturation, 10,000 retained" -fill 10000 -workload chain3 -instances 10000 -concurrency 512
row "chain3, saturation, 100,000 retained" -fill 100000 -workload chain3 -instances 10000 -concurrency 512
if [ "${MILLION:-}" = 1 ]; then
  GOMEMLIMIT=${GOMEMLIMIT:-19GiB} row "chain3, saturation, 1,000,000 retained, 1 node" -nodes 1 -fill 995000 -workload chain3 -instances 5000 -concurrency 512
fi

#!/usr/bin/env bash
# Compare two lockstep builds on this machine, whose speed drifts from hour
# to hour: run `lockstep bench -local` with the same flags for each build in
# turn, ROUNDS times, so that each pair of runs is minutes apart, the order
# swapped every other round. Read the CPU per instance first: it moves less
# with the machine than throughput.
#
#   scripts/bench-ab.sh ROUNDS OLD_BINARY NEW_BINARY [bench flags...]
#   scripts/bench-ab.sh 3 /tmp/lockstep-main bin/lockstep -workload chain3 -instances 15000 -concurrency 512
set -euo pipefail

if [ $# -lt 3 ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 1
fi
rounds=$1 a=$2 b=$3
shift 3
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "bench-ab: $bin is not an executable" >&2; exit 1; }
done

printf '%-24s %10s %12s %9s %9s %13s %12s %14s\n' build instances/s cpu_ms/inst p50_ms p99_ms raft_entries/s gc_ms/cycle p99_no_gc_ms
for ((i = 1; i <= rounds; i++)); do
  # Alternate which goes first: the second run of a pair is slower at
  # saturation even with the same binary twice (what the first leaves
  # behind on disk and in memory), so a fixed order favours one build.
  order=("$a" "$b")
  ((i % 2 == 0)) && order=("$b" "$a")
  for bin in "${order[@]}"; do
    out=$("$bin" bench -local "$@" 2>/dev/null) || { echo "bench-ab: $bin bench failed:" >&2; echo "$out" >&2; exit 1; }
    # The summary's lines, as printBench writes them.
    tput=$(sed -n 's/^  throughput  \([0-9.]*\) instances\/s, \([0-9]*\) raft entries\/s.*/\1 \2/p' <<<"$out")
    lat=$(sed -n 's/^  latency     p50 \([0-9.]*\)ms .* p99 \([0-9.]*\)ms .*/\1 \2/p' <<<"$out")
    cpu=$(sed -n 's/^  server .*(\([0-9.]*\)ms per instance).*/\1/p' <<<"$out")
    # The collector's CPU per cycle, and the p99 of the instances during
    # which no collection ended (-local only): the collector's part of the
    # tail, apart from the machine's.
    gc=$(sed -n 's/^  collector   [0-9]* cycles, [0-9]*% of that CPU, \([0-9]*\)ms of CPU each.*/\1/p' <<<"$out")
    nogc=$(sed -n 's/.*; the others p50 [0-9.]*ms  p99 \([0-9.]*\)ms.*/\1/p' <<<"$out")
    read -r ips ents <<<"$tput"
    read -r p50 p99 <<<"$lat"
    printf '%-24s %10s %12s %9s %9s %13s %12s %14s\n' "$(basename "$bin")" "$ips" "${cpu:--}" "$p50" "$p99" "$ents" "${gc:--}" "${nogc:--}"
  done
done

#!/usr/bin/env bash
# Start time of the client commands (issue 16: <= 100 ms): hyperfine over ./lm with the NativeAOT client
# and with the ReadyToRun CLI (LM_NO_AOT=1), alternately, against a live host this script starts and
# stops, against a refused port, and `lm trace info` on a golden trace. Usage: bench/cli-start.sh [RUNS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-30}"
lm="$root/lm"
"$root/scripts/build-client.sh"
LM_NO_AOT=1 "$lm" status --host 127.0.0.1:1 >/dev/null 2>&1 || true # publishes the ReadyToRun CLI if stale
data="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
"$lm" host --listen "127.0.0.1:$port" --data "$data" --quiet >"$data/host.out" 2>&1 &
host=$!
trap 'kill "$host" 2>/dev/null; wait "$host" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do grep -q listening "$data/host.out" 2>/dev/null && break; sleep 0.1; done
"$lm" start --host "127.0.0.1:$port" "$root/guests/build/hello.elf" --name hello --mem 16M >/dev/null
trace="$root/traces/compute_small.lmtrace"
for round in 1 2; do
  for mode in aot r2r; do
    env=(); [ "$mode" = r2r ] && env=(LM_NO_AOT=1)
    echo "== round $round: $mode" >&2
    hyperfine -N -w 3 -r "$runs" -i --export-json "$data/$mode.$round.json" \
      -n "$mode status (live host)" "env ${env[*]} $lm status --host 127.0.0.1:$port" \
      -n "$mode status (refused)" "env ${env[*]} $lm status --host 127.0.0.1:1" \
      -n "$mode trace info" "env ${env[*]} $lm trace info $trace" >&2
  done
done

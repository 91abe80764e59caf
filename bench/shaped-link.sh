#!/usr/bin/env bash
# Runs a command inside a network namespace of its own whose loopback a tc token bucket holds to
# RATE, so every engine measured under it (ours in bench/Compare, QEMU in bench/QemuMigration) moves
# its pages over the same kernel-enforced link, whatever its own rate limiter does.
#   bench/shaped-link.sh [RATE] -- COMMAND...     (RATE as tc writes it, default 1gbit)
# Needs root (ip netns, tc); the namespace is removed when the command ends.
set -euo pipefail
rate=1gbit
if [[ $# -gt 0 && $1 != -- ]]; then rate=$1; shift; fi
[[ ${1:-} == -- ]] && shift
if [[ $# -eq 0 ]]; then echo "usage: $0 [RATE] -- COMMAND..." >&2; exit 2; fi
if [[ $(id -u) -ne 0 ]]; then echo "shaped-link: needs root for ip netns and tc" >&2; exit 2; fi
ns=lmshaped$$
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
# burst: a few 64 KiB loopback packets; latency: how long a packet may queue before it is dropped
ip netns exec "$ns" tc qdisc add dev lo root tbf rate "$rate" burst 256kb latency 20ms
echo "# link: loopback of network namespace $ns, tc tbf rate $rate" >&2
LM_SHAPED_LINK="tc tbf $rate" ip netns exec "$ns" "$@"

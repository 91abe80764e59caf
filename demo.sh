#!/usr/bin/env bash
# The main job: a live migration demo of the kv guest between two hosts on loopback.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/setup.sh"
exec "$root/lm" demo "$@"

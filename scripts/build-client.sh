#!/usr/bin/env bash
# Publishes the NativeAOT client (src/Client: status, start, stop, resolve, console, migrate, cancel,
# trace) into artifacts/lm-client when a source it compiles is newer than it. Run by ./lm before a
# client command and by scripts/setup.sh, so CI has it. Exit 0: artifacts/lm-client/lm is current;
# otherwise the reason is on stderr (and in artifacts/lm-client.failed, so ./lm does not retry a failed
# build at every command: it falls back to the ReadyToRun CLI until a source changes).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/scripts/client-sources.sh"
out="$root/artifacts/lm-client"
bin="$lm_client_bin"
failed="$root/artifacts/lm-client.failed"
lm_client_current && exit 0
if [ -f "$failed" ] && ! lm_client_newer_than "$failed" && [ -z "${LM_CLIENT_RETRY:-}" ]; then
  echo "lm: the AOT client did not build ($(head -n 1 "$failed")); see $failed" >&2
  exit 1
fi
mkdir -p "$root/artifacts"
exec 9>"$root/artifacts/.lm-client.lock"
flock 9 # another ./lm may be publishing it right now
lm_client_current && exit 0
echo "lm: building the AOT client (NativeAOT, into artifacts/lm-client; a few minutes)..." >&2
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
touch "$tmp.started" # the binary's time: a source edited during the build is newer, so rebuilt next time
log="$(mktemp)"
if dotnet publish "$root/src/Client/LiveMigration.Client.csproj" -c Release -r linux-x64 -o "$tmp" -nologo -v q -clp:ErrorsOnly >"$log" 2>&1; then
  rm -rf "$out" "$failed"
  mv "$tmp" "$out" # whole, so a concurrent ./lm never runs a half-written binary
  touch -r "$tmp.started" "$bin"
  rm -f "$log" "$tmp.started"
  exit 0
fi
{ grep -m 1 -E 'error|Error' "$log" || echo "dotnet publish failed"; cat "$log"; } >"$failed"
rm -rf "$tmp" "$tmp.started" "$log"
echo "lm: the AOT client did not build: $(head -n 1 "$failed")" >&2
exit 1

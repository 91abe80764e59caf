# Sourced by ./lm and scripts/build-client.sh: is the AOT client (artifacts/lm-client/lm) newer than
# every source it compiles? One find, pruning bin/ and obj/, in the caller's shell: ./lm pays a few
# ms for it before every client command, no extra bash.
lm_client_bin="$root/artifacts/lm-client/lm"
lm_client_newer_than() {
  [ -n "$(find "$root/src/Client" "$root/src/ClientCommands" "$root/src/Guest" "$root/src/Recorder" "$root/src/Replayer" \
    "$root/src/Trace" "$root/src/Migration" "$root/src/Fleet" "$root/Directory.Build.props" "$root/Directory.Packages.props" \
    \( -name bin -o -name obj \) -prune -o \( -name '*.cs' -o -name '*.csproj' -o -name '*.proto' -o -name '*.props' \) -newer "$1" -print -quit)" ]
}
lm_client_current() { [ -x "$lm_client_bin" ] && ! lm_client_newer_than "$lm_client_bin"; }

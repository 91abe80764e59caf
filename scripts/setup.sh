#!/usr/bin/env bash
# Installs what the project needs when it is missing: Debian packages, NuGet packages, guest ELFs.
# Idempotent and quiet when everything is already there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need=()
command -v riscv64-unknown-elf-gcc >/dev/null || need+=(gcc-riscv64-unknown-elf)
[ -f /usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs ] || need+=(picolibc-riscv64-unknown-elf)
command -v qemu-system-riscv64 >/dev/null || need+=(qemu-system-misc)
command -v gdb-multiarch >/dev/null || need+=(gdb-multiarch)
command -v make >/dev/null || need+=(make)
# The fleet's coordination store: tests start their own etcd processes; etcdctl for operators.
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
ldconfig -p 2>/dev/null | grep -q 'libzstd.so.1 ' || need+=(libzstd1)
ldconfig -p 2>/dev/null | grep -q 'libxxhash.so.0 ' || need+=(libxxhash0)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

if ! command -v dotnet >/dev/null; then
  echo "setup: the .NET 10 SDK is required (dotnet not on PATH)" >&2
  exit 1
fi

# Guests: make rebuilds only what changed.
make -s -C "$root/guests" >&2

# NuGet packages: restore once per change of the project files.
stamp="$root/artifacts/.restored"
if [ ! -f "$stamp" ] || [ -n "$(find "$root" -name '*.csproj' -newer "$stamp" -not -path '*/bin/*' -not -path '*/obj/*' -print -quit)" ] \
   || [ "$root/Directory.Packages.props" -nt "$stamp" ]; then
  dotnet restore "$root/LiveMigration.sln" -v q >&2
  mkdir -p "$root/artifacts" && touch "$stamp"
fi

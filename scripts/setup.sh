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
# The Linux guest (guests/linux): kernel from Debian's source, our userland on the cross glibc, OpenSBI.
command -v riscv64-linux-gnu-gcc >/dev/null || need+=(gcc-riscv64-linux-gnu)
[ -f /usr/riscv64-linux-gnu/lib/libc.a ] || need+=(libc6-dev-riscv64-cross)
[ -f /usr/src/linux-source-6.1.tar.xz ] || need+=(linux-source-6.1)
for tool in bc flex bison cpio xz; do
  command -v "$tool" >/dev/null || need+=("$([ "$tool" = xz ] && echo xz-utils || echo "$tool")")
done
[ -f /usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin ] || need+=(opensbi)
command -v dtc >/dev/null || need+=(device-tree-compiler)
# The Linux guest's ext4 data disk (guests/linux/build-datadisk.sh); mke2fs lives in /sbin, off a user's PATH.
PATH="$PATH:/usr/sbin:/sbin" command -v mke2fs >/dev/null || need+=(e2fsprogs)
# The dashboard's browser tests drive Debian's chromium (Playwright downloads no browser here);
# plots render with DejaVu Sans; hyperfine measures the CLI's start time (bench/CliStart).
command -v chromium >/dev/null || need+=(chromium)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
command -v hyperfine >/dev/null || need+=(hyperfine)
# The fleet's coordination store: tests start their own etcd processes; etcdctl for operators.
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)

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
# The Linux guest: the kernel only when missing or its config fragment changed (minutes; progress shown).
nice -n 10 "$root/guests/linux/build-kernel.sh" >&2
"$root/guests/linux/build-initramfs.sh" >&2
"$root/guests/linux/build-datadisk.sh" >&2

# NuGet packages: restore once per change of the project files.
stamp="$root/artifacts/.restored"
if [ ! -f "$stamp" ] || [ -n "$(find "$root" -name '*.csproj' -newer "$stamp" -not -path '*/bin/*' -not -path '*/obj/*' -print -quit)" ] \
   || [ "$root/Directory.Packages.props" -nt "$stamp" ]; then
  dotnet restore "$root/LiveMigration.sln" -v q >&2
  mkdir -p "$root/artifacts" && touch "$stamp"
fi

# The NativeAOT client that ./lm runs for status, migrate, cancel, console, trace...: built here so CI
# (and the tests that run it: tests/Migration.Tests/AotClientTests.cs) use it; only when a source changed.
# Not fatal: without it ./lm's client commands run the ReadyToRun CLI, and the AOT tests fail with the reason.
LM_CLIENT_RETRY=1 "$root/scripts/build-client.sh" >&2 || echo "setup: the AOT client did not build (see artifacts/lm-client.failed); ./lm falls back to the ReadyToRun CLI" >&2

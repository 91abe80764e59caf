#!/usr/bin/env bash
# Builds guests/linux/build/initramfs.cpio: our userland (userland/*.c, static against Debian's riscv64
# cross glibc) as an uncompressed newc cpio, reproducible byte for byte. Rebuilds only what changed.
#   guests/linux/build-initramfs.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$here/build"
cc=riscv64-linux-gnu-gcc
out="$build/initramfs.cpio"

command -v "$cc" >/dev/null || { echo "build-initramfs: $cc missing; install gcc-riscv64-linux-gnu" >&2; exit 1; }
[ -f /usr/riscv64-linux-gnu/lib/libc.a ] || { echo "build-initramfs: static glibc missing; install libc6-dev-riscv64-cross" >&2; exit 1; }
command -v cpio >/dev/null || { echo "build-initramfs: cpio missing; install cpio" >&2; exit 1; }

if [ -f "$out" ] && [ -z "$(find "$here/userland" "${BASH_SOURCE[0]}" -newer "$out" -print -quit)" ]; then
  exit 0
fi
echo "build-initramfs: building $out" >&2

root="$build/rootfs"
rm -rf "$root"
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys"
cflags=(-static -O2 -Wall -Wextra -Werror -ffile-prefix-map="$here"=/lm-linux)
"$cc" "${cflags[@]}" -o "$root/init" "$here/userland/init.c"
"$cc" "${cflags[@]}" -o "$root/bin/kv" "$here/userland/kv.c"
riscv64-linux-gnu-strip "$root/init" "$root/bin/kv"

# newc header (cpio(5)): magic 070701, then 13 eight-digit hex fields; name and data padded to 4 bytes.
newc_entry() { # name mode rdevmajor rdevminor
  local name="$1" mode="$2" major="$3" minor="$4" namesize=$(( ${#1} + 1 ))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    0 "$mode" 0 0 1 0 0 0 0 "$major" "$minor" "$namesize" 0
  printf '%s\0' "$name"
  local pad=$(( (4 - (110 + namesize) % 4) % 4 ))
  head -c "$pad" /dev/zero
}

# The console node first, in an archive of its own (the kernel unpacks concatenated archives):
# cpio can only copy nodes that exist, and making one needs root.
{
  newc_entry dev $((0040755)) 0 0
  newc_entry dev/console $((0020600)) 5 1
  newc_entry TRAILER!!! 0 0 0
} > "$out.tmp"
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible --owner=0:0 --quiet) >> "$out.tmp"
mv "$out.tmp" "$out"
echo "build-initramfs: $(stat -c %s "$out") bytes" >&2

#!/usr/bin/env bash
# Builds guests/linux/build/data.img: a blank 32 MiB ext4 file system for the guest's /data (kv keeps
# its keys there), made by Debian's mke2fs and reproducible byte for byte: fixed UUID, hash seed and
# time. Tests copy it per use. Does nothing when it is there and this script is older.
#   guests/linux/build-datadisk.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/build/data.img"
mke2fs="$(PATH="$PATH:/usr/sbin:/sbin" command -v mke2fs || true)"
[ -n "$mke2fs" ] || { echo "build-datadisk: mke2fs missing; install e2fsprogs" >&2; exit 1; }

if [ -f "$out" ] && [ "$out" -nt "${BASH_SOURCE[0]}" ]; then
  exit 0
fi
mkdir -p "$here/build"
rm -f "$out.tmp"
truncate -s 32M "$out.tmp"
# 4 KiB blocks (the disk's block hashes are per 4 KiB); inode tables and journal written now, so the
# kernel starts no lazy-init thread writing behind the guest's back; no reserved blocks.
E2FSPROGS_FAKE_TIME=1767225600 "$mke2fs" -q -F -t ext4 -b 4096 -m 0 -L lmdata \
  -U 4c4d0000-0000-4000-8000-000000000001 \
  -E hash_seed=4c4d0000-0000-4000-8000-000000000002,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard \
  "$out.tmp"
mv "$out.tmp" "$out"
echo "build-datadisk: $out ($(sha256sum "$out" | cut -c1-16))" >&2

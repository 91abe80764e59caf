#!/usr/bin/env bash
# Builds guests/linux/build/Image (and vmlinux) from Debian's linux-source-6.1 with
# gcc-riscv64-linux-gnu: tinyconfig + our fragment (kernel.config).
# Rebuilds only when Image is missing or the fragment, this script or the source package changed.
#   guests/linux/build-kernel.sh [--force]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$here/build"
tarball=/usr/src/linux-source-6.1.tar.xz
cross=riscv64-linux-gnu-
jobs="${JOBS:-$(nproc)}"

[ -f "$tarball" ] || { echo "build-kernel: $tarball missing; install the Debian package linux-source-6.1" >&2; exit 1; }
command -v "${cross}gcc" >/dev/null || { echo "build-kernel: ${cross}gcc missing; install gcc-riscv64-linux-gnu" >&2; exit 1; }
for tool in bc flex bison; do
  command -v "$tool" >/dev/null || { echo "build-kernel: $tool missing; install the Debian package $tool" >&2; exit 1; }
done

srcver="$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %Y "$tarball")"
want="$(cat "$here/kernel.config" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1) $srcver"
if [ "${1:-}" != "--force" ] && [ -f "$build/Image" ] && [ "$(cat "$build/.stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

mkdir -p "$build"
src="$build/linux-source-6.1"
if [ ! -f "$src/.extracted" ] || [ "$(cat "$src/.extracted")" != "$srcver" ]; then
  echo "build-kernel: extracting $tarball" >&2
  rm -rf "$src"
  tar -C "$build" -xJf "$tarball"
  echo "$srcver" > "$src/.extracted"
fi

out="$build/kernel"
mkdir -p "$out"
log="$build/kernel.log"
mk=(make -C "$src" O="$out" ARCH=riscv CROSS_COMPILE="$cross" KBUILD_BUILD_USER=lm KBUILD_BUILD_HOST=lm
    KBUILD_BUILD_TIMESTAMP="2026-01-01 00:00:00" -j"$jobs")
start=$(date +%s)
echo "build-kernel: configuring (tinyconfig + kernel.config)" >&2
"${mk[@]}" tinyconfig >"$log" 2>&1
"$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "$here/kernel.config" >>"$log" 2>&1
"${mk[@]}" olddefconfig >>"$log" 2>&1

# Every option of the fragment must have survived olddefconfig (a dependency can silently drop one).
bad=0
while IFS= read -r line; do
  case "$line" in CONFIG_*=*) ;; *) continue ;; esac
  key="${line%%=*}"; val="${line#*=}"
  if [ "$val" = n ]; then
    grep -q "^$key=" "$out/.config" && { echo "build-kernel: $key should be off but is $(grep "^$key=" "$out/.config")" >&2; bad=1; }
  else
    grep -qx "$line" "$out/.config" || { echo "build-kernel: $line did not take (got: $(grep "^$key=\|^# $key " "$out/.config" || echo absent))" >&2; bad=1; }
  fi
done < "$here/kernel.config"
[ $bad -eq 0 ] || exit 1

echo "build-kernel: compiling Image with $jobs jobs (log: $log)" >&2
"${mk[@]}" Image 2>&1 | tee -a "$log" | awk '/^  (CC|AS|AR|LD)/ { n++; if (n % 100 == 0) { printf "build-kernel: %d objects\n", n > "/dev/stderr"; fflush("/dev/stderr") } }'
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "build-kernel: make failed, see $log" >&2; tail -20 "$log" >&2; exit 1; }
cp "$out/arch/riscv/boot/Image" "$build/Image"
cp "$out/vmlinux" "$build/vmlinux"
cp "$out/.config" "$build/config"
echo "$want" > "$build/.stamp"
echo "build-kernel: Image $(stat -c %s "$build/Image") bytes in $(( $(date +%s) - start )) s" >&2

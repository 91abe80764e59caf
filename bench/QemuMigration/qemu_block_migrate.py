#!/usr/bin/env python3
"""QEMU 7.2 moving a guest with its virtio-blk disk (block migration, `migrate -b`), for issue 13.

The cases of bench/DiskBench, with QEMU's block migration (the `block` capability, what HMP's
`migrate -b` sets; `zero-blocks` on, so all-zero chunks travel as flags): a raw image of --image-mib
MiB with --filled % of its 4 KiB blocks random, the rest zero, and
  (a) a fresh destination (its image all zeros),
  (b) a destination holding an older copy that differs in 1 % of the blocks,
  (c) as (b), with the disk workload (guests/blk.c, blk_forever) writing during the migration.
QEMU's block migration has no way to use what the destination holds (without a backing-file chain,
`inc` has nothing to skip), so (b) costs what (a) does. Bandwidth: max-bandwidth 10 GB/s (QEMU's
default of 32 MiB/s would be the figure otherwise); downtime-limit 50 ms, as DiskBench's.

Then guest disk throughput on the same image: blk_long (30000 random runs of 1..16 sectors, each read
back, flushed every 50, then the whole disk read) under QEMU's virtio-blk and under ours (`lm run
--drive`), wall time from start to exit.

Writes results/qemu-block-migration.json; `dotnet run -c Release --project bench/DiskBench -- --qemu
bench/QemuMigration/results/qemu-block-migration.json` prints our rows next to these.

Usage: bench/QemuMigration/qemu_block_migrate.py [--image-mib 64] [--filled 20] [--json PATH]
"""
import argparse
import json
import os
import random
import shutil
import socket
import threading
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qemu_migrate as qm  # the QMP client, free_port, stop

ROOT = qm.ROOT
BLOCK = 4096
BLK_LONG_RUNS = 30000
MEAN_RUN_BYTES = 8.5 * 512  # blk.c: 1..16 sectors per run, uniform


def images(mib, filled, seed=13):
    rng = random.Random(seed)
    blocks = mib * 256
    image = bytearray(blocks * BLOCK)
    for b in range(blocks):
        if rng.randrange(100) < filled:
            image[b * BLOCK:(b + 1) * BLOCK] = rng.randbytes(BLOCK)
    older = bytearray(image)
    for _ in range(blocks // 100):
        b = rng.randrange(blocks)
        older[b * BLOCK:(b + 1) * BLOCK] = rng.randbytes(BLOCK)
    return bytes(image), bytes(older)


class CountingProxy:
    """Loopback TCP relay between the source and the destination: counts the bytes on the wire
    (QEMU's query-migrate shows the disk's share only while block migration is active)."""

    def __init__(self, target_port):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.target = target_port
        self.forward = self.back = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.target))
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()
        self._pump(client, server, True)

    def _pump(self, src, dst, forward):
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                dst.sendall(data)
                if forward:
                    self.forward += len(data)
                else:
                    self.back += len(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def start(elf, tmp, name, image, incoming=None, serial=None):
    qmp_path = os.path.join(tmp, f"{name}.qmp")
    args = [qm.QEMU, "-M", "virt", "-bios", "none", "-m", "64M", "-kernel", elf,
            "-global", "virtio-mmio.force-legacy=false",
            "-drive", f"file={image},format=raw,if=none,id=d0", "-device", "virtio-blk-device,drive=d0",
            "-display", "none", "-monitor", "none", "-serial", f"file:{serial}" if serial else "null",
            "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    if incoming:
        args += ["-incoming", incoming]
    log = open(os.path.join(tmp, f"{name}.stderr"), "wb")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL), qmp_path


def migrate_case(label, guest, image, dest_image, tmp, elf_dir, timeout):
    src_img, dst_img = os.path.join(tmp, "src.img"), os.path.join(tmp, "dst.img")
    with open(src_img, "wb") as f:
        f.write(image)
    with open(dst_img, "wb") as f:
        f.write(dest_image)
    port = qm.free_port()
    elf = os.path.join(elf_dir, f"{guest}.elf")
    src, sq_path = start(elf, tmp, "src", src_img, serial=os.path.join(tmp, "src.serial"))
    dst, dq_path = start(elf, tmp, "dst", dst_img, incoming=f"tcp:127.0.0.1:{port}")
    row = {"engine": "qemu-7.2", "case": label, "guest": guest, "notes": []}
    try:
        sq, dq = qm.Qmp(sq_path), qm.Qmp(dq_path)
        time.sleep(1.5 if guest == "blk_forever" else 0.3)  # as DiskBench: the workload has written for a while
        caps = [{"capability": "block", "state": True}, {"capability": "zero-blocks", "state": True}]
        sq.cmd("migrate-set-capabilities", capabilities=caps)
        dq.cmd("migrate-set-capabilities", capabilities=[{"capability": "zero-blocks", "state": True}])
        sq.cmd("migrate-set-parameters", **{"max-bandwidth": 10_000_000_000, "downtime-limit": 50})
        proxy = CountingProxy(port)
        t0 = time.time()
        sq.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
        info, disk = {}, {}
        while time.time() - t0 < timeout:
            info = sq.cmd("query-migrate")
            disk = info.get("disk") or disk  # shown only while block migration is active
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.005)
        time.sleep(0.2)  # the relay has passed on the last bytes
        row["status"] = info.get("status")
        if row["status"] != "completed":
            row["notes"].append(f"did not complete in {timeout} s" if row["status"] not in ("failed",) else info.get("error-desc", "failed"))
            sq.cmd("migrate_cancel")
        ram = info.get("ram") or {}
        row.update({
            "wire_bytes": proxy.forward + proxy.back,
            "wire_bytes_to_destination": proxy.forward,
            "total_time_ms": info.get("total-time"),
            "qemu_reported_downtime_ms": info.get("downtime"),
            "ram_bytes": ram.get("transferred"),
            "disk_bytes_last_seen": disk.get("transferred"),  # at the last poll while active
            "disk_total": disk.get("total"),
            "ram": ram, "disk": disk,
        })
        row["total_bytes"] = row["wire_bytes"]
        if row["status"] == "completed":
            qm.end_to_end_downtime(row, sq, dq, t0)
        sq.close()
        dq.close()
    finally:
        qm.stop(src)
        qm.stop(dst)
    return row


def throughput(image, tmp, elf_dir):
    """blk_long's wall time (start to exit) under QEMU and under ours, on copies of the same image."""
    elf = os.path.join(elf_dir, "blk_long.elf")
    out = {}
    for engine in ("qemu-7.2", "ours"):
        img = os.path.join(tmp, f"tp-{engine}.img")
        with open(img, "wb") as f:
            f.write(image)
        if engine == "ours":
            args = [os.path.join(ROOT, "lm"), "run", elf, "--mem", "64M", "--drive", img]
        else:
            args = [qm.QEMU, "-M", "virt", "-bios", "none", "-m", "64M", "-kernel", elf,
                    "-global", "virtio-mmio.force-legacy=false",
                    "-drive", f"file={img},format=raw,if=none,id=d0", "-device", "virtio-blk-device,drive=d0",
                    "-display", "none", "-monitor", "none", "-serial", "stdio"]
        if engine == "ours":
            subprocess.run(args + ["--max-instructions", "1000"], capture_output=True)  # builds lm first if needed: not timed
        t = time.time()
        p = subprocess.run(args, capture_output=True, timeout=600)
        seconds = time.time() - t
        text = p.stdout.decode(errors="replace")
        ok = "blk: done" in text
        out[engine] = {"seconds": round(seconds, 3), "ok": ok,
                       "write_mb_per_s": round(BLK_LONG_RUNS * MEAN_RUN_BYTES / seconds / 1e6, 2),
                       "tail": text.strip().splitlines()[-3:] if text else []}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-mib", type=int, default=64)
    ap.add_argument("--filled", type=int, default=20)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "qemu-block-migration.json"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="qemu-blk-")
    try:
        elf_dir = os.path.join(tmp, "elf")
        os.makedirs(elf_dir)
        for g in ("idle_forever", "blk_forever", "blk_long"):
            shutil.copy(os.path.join(ROOT, "guests", "build", f"{g}.elf"), elf_dir)
        image, older = images(args.image_mib, args.filled)
        zeros = bytes(len(image))
        rows = []
        for label, guest, dest in (("(a) fresh destination", "idle_forever", zeros),
                                   ("(b) base differs in 1 % of blocks", "idle_forever", older),
                                   ("(c) (b) + disk workload writing", "blk_forever", older)):
            row = migrate_case(label, guest, image, dest, tmp, elf_dir, args.timeout)
            rows.append(row)
            print(f"{label:34} {row.get('status'):10} wire {qm.fmt_bytes(row['total_bytes']):>10}  disk total {qm.fmt_bytes(row['disk_total'] or 0):>10}"
                  f"  RAM {qm.fmt_bytes(row['ram_bytes'] or 0):>10}  time {row.get('total_time_ms')} ms  downtime {row.get('downtime_ms')} ms", flush=True)
        tp = throughput(image, tmp, elf_dir)
        for engine, r in tp.items():
            print(f"blk_long throughput {engine:9} {r['seconds']:7.2f} s  ~{r['write_mb_per_s']:.2f} MB/s written (and as much read back){'' if r['ok'] else '  (did not finish!)'}")
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"environment": {"qemu": subprocess.run([qm.QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
                                       "image_mib": args.image_mib, "filled_percent": args.filled, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                       "rows": rows, "throughput": tp}, f, indent=1)
        print(f"wrote {args.json}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

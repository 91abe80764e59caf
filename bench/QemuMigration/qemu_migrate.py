#!/usr/bin/env python3
"""Side-by-side reference: live-migrate our guest ELFs with QEMU 7.2 itself.

Two qemu-system-riscv64 processes on loopback, driven over QMP: the source starts
normally, the destination with `-incoming tcp:127.0.0.1:PORT`. Strategies:

  precopy   plain iterative pre-copy
  xbzrle    pre-copy with the xbzrle capability and an xbzrle-cache-size
  postcopy  postcopy-ram on both sides; migrate-start-postcopy once the first
            pass over RAM is done (dirty-sync-count >= 2)

Conditions (same as ours): 128 MiB guest, max-bandwidth (and max-postcopy-bandwidth)
125000000 bytes/s = 1 Gbit/s, downtime-limit left at QEMU's default, 60 s timeout
after which the run counts as "did not converge" and is cancelled (migrate_cancel).

Downtime is measured end to end, as ours is: from the source's STOP QMP event (vm stopped for the
switchover) to the destination's RESUME event, both stamped with the host's wall clock by QEMU.
query-migrate's own "downtime" (source only: vm stop -> source done sending) is kept as
qemu_reported_downtime_ms.

Prints one table and writes the rows as JSON (default results/qemu-migration.json)
so our engine's benchmark can print them side by side.

Usage: bench/QemuMigration/qemu_migrate.py [--guests a,b] [--strategies x,y]
           [--timeout 60] [--warmup 3] [--json PATH] [--xbzrle-cache MiB]
"""
import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QEMU = os.environ.get("QEMU", "qemu-system-riscv64")
BANDWIDTH = 125_000_000  # bytes/s = 1 Gbit/s

GUESTS = ["idle_forever", "compute_forever", "dirty_forever", "dirty_hotcold", "kv"]
# "linux" (not in the default list: pass --guests linux): our kernel and initramfs (guests/linux/build),
# 256 MiB, the hart trimmed to our extensions, virtio-rng and virtio-balloon with free page reporting,
# and the kv load on its console once the guest says "kv ready" (as bench/Compare's linux row).
LINUX = os.path.join(ROOT, "guests", "linux", "build")
FIRMWARE = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"
LINUX_CPU = "rv64,h=false,sstc=false,zba=false,zbb=false,zbc=false,zbs=false,Zihintpause=false,svinval=false,svnapot=false,svpbmt=false,pmu-num=0"
STRATEGIES = ["precopy", "xbzrle", "postcopy"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Qmp:
    """Minimal QMP client over a unix socket: one command at a time.

    A reader thread takes every line off the socket: command replies go to the waiting cmd(), events
    are kept in self.events (never dropped) as {"event", "data", "timestamp", "t_host"} where
    timestamp is QEMU's own host wall-clock time of the event in seconds (float, microsecond
    resolution; QMP's {"seconds", "microseconds"}) and t_host is when this client read it.
    """

    def __init__(self, path, timeout=10.0):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise RuntimeError(f"QMP socket {path} did not appear")
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self.events = []
        self.cond = threading.Condition()
        self.replies = []
        self.closed = None  # reason, once the connection is gone
        self.greeting = json.loads(self.file.readline() or b"{}")
        self.reader = threading.Thread(target=self._read_loop, daemon=True)
        self.reader.start()
        self.cmd("qmp_capabilities")

    def _read_loop(self):
        try:
            while True:
                line = self.file.readline()
                if not line:
                    raise RuntimeError("QMP connection closed")
                msg = json.loads(line)
                with self.cond:
                    if "event" in msg:
                        ts = msg.get("timestamp") or {}
                        stamp = (ts["seconds"] + ts["microseconds"] / 1e6
                                 if "seconds" in ts and "microseconds" in ts else None)
                        self.events.append({"event": msg["event"], "data": msg.get("data"),
                                            "timestamp": stamp, "t_host": time.time()})
                    else:
                        self.replies.append(msg)
                    self.cond.notify_all()
        except Exception as e:  # closed socket, EOF: wake any waiter
            with self.cond:
                self.closed = f"{type(e).__name__}: {e}"
                self.cond.notify_all()

    def cmd(self, name, timeout=30.0, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.file.write((json.dumps(req) + "\n").encode())
        self.file.flush()
        deadline = time.time() + timeout
        with self.cond:
            while not self.replies:
                if self.closed:
                    raise RuntimeError(f"{name}: {self.closed}")
                left = deadline - time.time()
                if left <= 0:
                    raise RuntimeError(f"{name}: no reply in {timeout:.0f}s")
                self.cond.wait(left)
            reply = self.replies.pop(0)
        if "error" in reply:
            raise QmpError(f"{name}: {reply['error'].get('desc')}")
        return reply.get("return")

    def wait_event(self, name, timeout, after=None):
        """The first `name` event (with a QEMU timestamp >= after, if given), waiting up to timeout s."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if e["event"] == name and (after is None or (e["timestamp"] or 0) >= after):
                        return e
                left = deadline - time.time()
                if left <= 0 or self.closed:
                    return None
                self.cond.wait(left)

    def event_log(self, since=None):
        """The events seen so far (QEMU timestamps, ms relative to `since` when given)."""
        with self.cond:
            out = []
            for e in self.events:
                d = {"event": e["event"], "timestamp": e["timestamp"]}
                if e["data"]:
                    d["data"] = e["data"]
                if since is not None and e["timestamp"] is not None:
                    d["t_ms"] = round((e["timestamp"] - since) * 1000, 3)
                out.append(d)
            return out

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class QmpError(Exception):
    pass


class KvLoad:
    """Client for kv.elf: SET/GET lines over the source's TCP serial, replies drained."""

    def __init__(self, port, wait_ready=False):
        self.port = port
        self.ready = threading.Event()
        if not wait_ready:
            self.ready.set()
        self.stop = threading.Event()
        self.sent = 0
        self.replies = 0
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def run(self):
        try:
            deadline = time.time() + 10
            while True:
                try:
                    s = socket.create_connection(("127.0.0.1", self.port))
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
            s.settimeout(0.2)
            rng = random.Random(1)
            reader = threading.Thread(target=self.drain, args=(s,), daemon=True)
            reader.start()
            if not self.ready.wait(180):
                raise RuntimeError("the guest never said 'kv ready'")
            while not self.stop.is_set():
                k = rng.randrange(3000)
                if rng.random() < 0.5:
                    line = f"SET key{k} value-{rng.getrandbits(64):016x}-{self.sent}\n"
                else:
                    line = f"GET key{k}\n"
                try:
                    s.sendall(line.encode())
                except OSError:
                    break
                self.sent += 1
                # Keep a bounded number of requests in flight (the UART has a small FIFO).
                while self.sent - self.replies > 64 and not self.stop.is_set():
                    time.sleep(0.0005)
            s.close()
        except Exception as e:  # reported in the row, never hidden
            self.error = str(e)

    def drain(self, s):
        buf = b""
        while not self.stop.is_set():
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            if not self.ready.is_set():
                if b"kv ready" in buf:
                    self.ready.set()
                    buf = buf[buf.index(b"kv ready"):]
                    buf = buf[buf.find(b"\n") + 1:] if b"\n" in buf else b""
                else:
                    buf = buf[-16:]
                continue
            n = buf.count(b"\n")
            self.replies += n
            buf = buf[buf.rfind(b"\n") + 1:]


def start_qemu(elf, tmp, name, serial, incoming=None):
    qmp_path = os.path.join(tmp, f"{name}.qmp")
    if elf == "linux":
        machine = ["-M", "virt", "-cpu", LINUX_CPU, "-smp", "1", "-m", "256M", "-nodefaults", "-bios", FIRMWARE,
                   "-kernel", os.path.join(LINUX, "Image"), "-initrd", os.path.join(LINUX, "initramfs.cpio"),
                   "-append", "console=ttyS0 earlycon", "-device", "virtio-rng-device",
                   "-device", "virtio-balloon-device,free-page-reporting=on"]
    else:
        machine = ["-M", "virt", "-bios", "none", "-m", "128M", "-kernel", elf]
    args = [QEMU, *machine,
            "-display", "none", "-monitor", "none", "-serial", serial,
            "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    if incoming:
        args += ["-incoming", incoming]
    log = open(os.path.join(tmp, f"{name}.stderr"), "wb")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    return proc, qmp_path


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_line(path):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    except OSError:
        return ""


WORK_WINDOW_S = 5.0
COUNTER = re.compile(rb"^(?:progress|tick) (\d+)", re.M)


def last_counter(path):
    """The guest's own progress counter: the number on its last "progress N" / "tick N" line (None if none yet)."""
    try:
        with open(path, "rb") as f:
            found = COUNTER.findall(f.read())
        return int(found[-1]) if found else None
    except OSError:
        return None


class TickWatch(threading.Thread):
    """Stamps each new "progress N" line of a serial file with the time it appeared (polled every 2 ms).

    A QEMU guest's counter ticks a few times a second, so reading it at arbitrary moments is off by up
    to a tick (6 % of a 5 s window on dirty_forever); with the ticks' times the counter can be read at
    any moment between two ticks, to a fraction of one.
    """

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.ticks, self.stop = path, [], threading.Event()
        self.start()

    def run(self):
        buf, pos = b"", 0
        while not self.stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
            except OSError:
                chunk = b""
            if chunk:
                pos += len(chunk)
                buf += chunk
                now = time.time()
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    m = COUNTER.match(line)
                    if m:
                        self.ticks.append((now, int(m.group(1))))
            time.sleep(0.002)

    def at(self, t):
        """The counter at time t, interpolated between the ticks around it (None before the second tick or past the last)."""
        ticks = list(self.ticks)
        for (t0, n0), (t1, n1) in zip(ticks, ticks[1:]):
            if t0 <= t <= t1:
                return n0 + (n1 - n0) * (t - t0) / max(t1 - t0, 1e-9)
        return None

    def wait_past(self, t, timeout):
        end = time.time() + timeout
        while time.time() < end and not (self.ticks and self.ticks[-1][0] >= t):
            time.sleep(0.01)
        return self.at(t)


def run_one(guest, strategy, args, elf_dir):
    elf = "linux" if guest == "linux" else os.path.join(elf_dir, guest + ".elf")
    kv_guest = guest in ("kv", "linux")
    tmp = tempfile.mkdtemp(prefix=f"qmig-{guest}-{strategy}-")
    mig_port = free_port()
    row = {"engine": "qemu-7.2", "guest": guest, "strategy": strategy, "converged": False,
           "status": None, "total_time_ms": None, "downtime_ms": None, "downtime_source": None,
           "qemu_reported_downtime_ms": None, "transferred_bytes": None,
           "total_bytes": None, "ram": None, "notes": []}
    kv = None
    if kv_guest:
        serial_port = free_port()
        src_serial = f"tcp:127.0.0.1:{serial_port},server=on,wait=off"
    else:
        src_serial = "file:" + os.path.join(tmp, "src.serial")
    dst_serial_file = os.path.join(tmp, "dst.serial")
    src, src_qmp_path = start_qemu(elf, tmp, "src", src_serial)
    dst, dst_qmp_path = start_qemu(elf, tmp, "dst", "file:" + dst_serial_file,
                                   incoming=f"tcp:127.0.0.1:{mig_port}")
    sq = dq = None
    watches = [] if kv_guest else [TickWatch(os.path.join(tmp, "src.serial")), TickWatch(dst_serial_file)]
    try:
        sq = Qmp(src_qmp_path)
        dq = Qmp(dst_qmp_path)
        if kv is None and kv_guest:
            kv = KvLoad(serial_port, wait_ready=guest == "linux")
            kv.start()
            if not kv.ready.wait(180):
                raise RuntimeError("the guest never said 'kv ready'")
        # The guest's unmigrated speed, by its own progress counter over the second half of the warm-up.
        src_serial_file = os.path.join(tmp, "src.serial")
        warm_end = time.time() + args.warmup
        time.sleep(min(0.5, args.warmup / 2))
        base_t, base_n = time.time(), last_counter(src_serial_file)
        while base_n is None and time.time() < warm_end - args.warmup / 2:  # a slow guest's first line
            time.sleep(0.05)
            base_t, base_n = time.time(), last_counter(src_serial_file)
        time.sleep(max(0.0, warm_end - time.time()))
        start_t, start_n = time.time(), last_counter(src_serial_file)

        caps = []
        if strategy == "xbzrle":
            caps = [{"capability": "xbzrle", "state": True}]
            sq.cmd("migrate-set-parameters", **{"xbzrle-cache-size": args.xbzrle_cache << 20})
        elif strategy == "postcopy":
            caps = [{"capability": "postcopy-ram", "state": True}]
            try:
                dq.cmd("migrate-set-capabilities", capabilities=caps)
            except QmpError as e:
                row["status"] = "unsupported"
                row["notes"].append(f"destination refused postcopy-ram: {e}")
                return row
        if caps:
            sq.cmd("migrate-set-capabilities", capabilities=caps)
        sq.cmd("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH})
        if strategy == "postcopy":
            sq.cmd("migrate-set-parameters", **{"max-postcopy-bandwidth": BANDWIDTH})

        t0 = time.time()  # CLOCK_REALTIME, the clock QEMU stamps its QMP events with
        sq.cmd("migrate", uri=f"tcp:127.0.0.1:{mig_port}")
        postcopy_started = False
        row["postcopy_started"] = False
        info = {}
        while True:
            info = sq.cmd("query-migrate")
            status = info.get("status")
            if status in ("completed", "failed", "cancelled"):
                break
            if (strategy == "postcopy" and not postcopy_started
                    and info.get("ram", {}).get("dirty-sync-count", 0) >= 2):
                sq.cmd("migrate-start-postcopy")
                postcopy_started = True
                row["postcopy_started"] = True
                row["notes"].append(f"postcopy started after {time.time() - t0:.2f}s "
                                    f"({info['ram'].get('transferred', 0)} bytes pre-copied)")
            if time.time() - t0 > args.timeout:
                if status.startswith("postcopy"):
                    # Cancelling post-copy would lose the guest: wait it out and say so.
                    row["notes"].append("still in post-copy at the timeout")
                else:
                    sq.cmd("migrate_cancel")
                    row["notes"].append(f"did not converge in {args.timeout:.0f}s; migrate_cancel")
                    break
            time.sleep(0.1)
        # The window is the migration, but at least WORK_WINDOW_S: the guests' counters tick a few times a second.
        if info.get("status") == "completed" and time.time() < start_t + WORK_WINDOW_S:
            time.sleep(start_t + WORK_WINDOW_S - time.time())
        end_t = time.time()
        row["status"] = info.get("status")
        if row["status"] == "completed" and watches:
            work_lost(row, watches, base_t, start_t, end_t, sq, t0)
        ram = info.get("ram", {})
        row["ram"] = ram
        row["transferred_bytes"] = ram.get("transferred")
        row["total_bytes"] = ram.get("total")
        row["total_time_ms"] = info.get("total-time", int((time.time() - t0) * 1000))
        row["qemu_reported_downtime_ms"] = info.get("downtime")
        if "xbzrle-cache" in info:
            row["xbzrle_cache"] = info["xbzrle-cache"]
        row["converged"] = row["status"] == "completed"
        if row["converged"]:
            end_to_end_downtime(row, sq, dq, t0)
        else:
            row["events"] = {"source": sq.event_log(t0), "destination": dq.event_log(t0)}
        if row["status"] == "failed" and info.get("error-desc"):
            row["notes"].append("failed: " + info["error-desc"])
        if row["status"] == "cancelled" or (row["status"] != "completed" and not row["converged"]):
            # query-migrate after a cancel may drop the ram block: keep the last figures we saw.
            pass
        if row["converged"]:
            time.sleep(2.0)
            dst_state = dq.cmd("query-status")
            row["destination_status"] = dst_state.get("status")
            row["destination_last_line"] = last_line(dst_serial_file)
            if kv_guest:
                row["notes"].append(f"kv client: {kv.sent} requests sent, {kv.replies} replies before/while migrating")
        return row
    except Exception as e:
        row["status"] = "error"
        row["notes"].append(f"{type(e).__name__}: {e}")
        return row
    finally:
        for w in watches:
            w.stop.set()
        if kv is not None:
            kv.stop.set()
            if kv.error:
                row["notes"].append("kv client error: " + kv.error)
        for q in (sq, dq):
            if q:
                q.close()
        stop(src)
        stop(dst)
        for name in ("src.stderr", "dst.stderr"):
            text = open(os.path.join(tmp, name), "rb").read().decode(errors="replace").strip()
            text = "\n".join(l for l in text.splitlines() if "terminating on signal" not in l)
            if text:
                row["notes"].append(f"{name}: {text[-300:]}")
        shutil.rmtree(tmp, ignore_errors=True)


AFTER_S = 2.0  # how long the destination's own speed is measured after the window


def work_lost(row, watches, base_t, start_t, end_t, sq, t0):
    """Work lost: what an unmigrated run would have done over the migration window, less what the guest
    did (source, then destination), as a share of the former. Each host's share of the window is priced
    at that host's own speed, as bench/Compare does ours: the source's over the warm-up before the STOP,
    the destination's over AFTER_S after the window. Counters are read between stamped ticks."""
    src, dst = watches
    base_n, start_n = src.at(base_t), src.at(start_t)
    if base_n is None and src.ticks and src.ticks[0][0] < start_t - 0.5:  # a slow guest's first tick came after base_t
        base_t, base_n = src.ticks[0]
    end_n = dst.wait_past(end_t, 5.0)
    after_n = dst.wait_past(end_t + AFTER_S, AFTER_S + 5.0)
    if None in (base_n, start_n, end_n, after_n) or start_n <= base_n:
        row["notes"].append("work lost: too few progress ticks to measure")
        return
    stop = sq.wait_event("STOP", timeout=1.0, after=t0)
    stop_t = stop["timestamp"] if stop and stop.get("timestamp") else end_t
    src_rate = (start_n - base_n) / (start_t - base_t)
    dst_rate = (after_n - end_n) / AFTER_S
    expected = src_rate * (stop_t - start_t) + dst_rate * (end_t - stop_t)
    row["work_lost_percent"] = round(max(0.0, 1 - (end_n - start_n) / expected) * 100, 1)
    row["work_counter"] = {"base": round(base_n, 3), "start": round(start_n, 3), "end": round(end_n, 3),
                           "window_s": round(end_t - start_t, 3), "source_ticks_per_s": round(src_rate, 3),
                           "destination_ticks_per_s": round(dst_rate, 3)}


def end_to_end_downtime(row, sq, dq, t0):
    """downtime_ms = destination RESUME - source STOP, both QMP event timestamps (same host clock).

    The source's STOP is the vm stop for the switchover (migration_completion, or postcopy_start
    after migrate-start-postcopy); the destination's RESUME is its vm_start once the device state is
    loaded (for post-copy: when it starts running with pages still on the source). Falls back to
    QEMU's own figure (source only: vm stop -> source done sending), flagged, when the events are
    missing or out of order.
    """
    resume = dq.wait_event("RESUME", timeout=5.0)
    stop = sq.wait_event("STOP", timeout=1.0, after=t0)
    row["events"] = {"source": sq.event_log(t0), "destination": dq.event_log(t0)}
    reported = row["qemu_reported_downtime_ms"]
    problem = None
    if stop is None or stop["timestamp"] is None:
        problem = "no STOP event (with a timestamp) from the source"
    elif resume is None or resume["timestamp"] is None:
        problem = "no RESUME event (with a timestamp) from the destination"
    elif resume["timestamp"] < stop["timestamp"]:
        problem = (f"destination RESUME {1000 * (stop['timestamp'] - resume['timestamp']):.3f} ms "
                   f"before the source STOP")
    elif resume["timestamp"] > time.time() + 1:
        problem = "destination RESUME timestamp in the future"
    n_stop = sum(1 for e in row["events"]["source"] if e["event"] == "STOP")
    n_resume = sum(1 for e in row["events"]["destination"] if e["event"] == "RESUME")
    if n_stop > 1 or n_resume > 1:
        row["notes"].append(f"{n_stop} STOP events on the source, {n_resume} RESUME on the destination; "
                            "the first of each after the migrate command was used")
    if problem is None:
        row["downtime_ms"] = round((resume["timestamp"] - stop["timestamp"]) * 1000, 3)
        row["downtime_source"] = "events"
        row["stop_ms"] = round((stop["timestamp"] - t0) * 1000, 3)
        row["resume_ms"] = round((resume["timestamp"] - t0) * 1000, 3)
    else:
        row["downtime_ms"] = float(reported) if reported is not None else None
        row["downtime_source"] = "qemu-reported"
        row["notes"].append(f"end-to-end downtime unavailable ({problem}): downtime_ms is QEMU's "
                            "source-only figure")
    if reported is not None and row["total_time_ms"] is not None and reported > row["total_time_ms"]:
        # Seen with QEMU 7.2 post-copy: a "downtime" of about the host's uptime.
        row["qemu_reported_downtime_suspect"] = True
        row["notes"].append(f"QEMU-reported downtime {reported} ms > total time: not a real figure")
    else:
        row["notes"].append(f"QEMU-reported downtime {reported} ms (source only)")


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def fmt_ms(ms):
    if ms is None:
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms" if isinstance(ms, float) else f"{ms} ms"


def print_table(rows):
    head = ["guest", "strategy", "converged", "total time", "downtime", "qemu-reported", "bytes", "work lost %"]
    body = []
    for r in rows:
        conv = "yes" if r["converged"] else ("unsupported" if r["status"] == "unsupported" else "NO")
        if r["strategy"] == "postcopy" and r["converged"] and not r.get("postcopy_started"):
            conv += " (pre-copy pass 1)"
        # Rows from before the end-to-end measurement have only QEMU's figure in downtime_ms.
        reported = r.get("qemu_reported_downtime_ms", r["downtime_ms"] if "downtime_source" not in r else None)
        e2e = r["downtime_ms"] if r.get("downtime_source") == "events" else None
        down = fmt_ms(e2e) if r["converged"] else "-"
        rep = fmt_ms(reported) if r["converged"] else "-"
        if r["converged"] and reported is not None and reported > r["total_time_ms"]:
            rep = f"bogus ({rep})"
        body.append([r["guest"], r["strategy"], conv, fmt_ms(r["total_time_ms"]), down, rep,
                     fmt_bytes(r["transferred_bytes"]),
                     f"{r['work_lost_percent']:.1f}" if r.get("work_lost_percent") is not None else "-"])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |"
    print("downtime: source STOP -> destination RESUME (QMP event timestamps, end to end); "
          "qemu-reported: query-migrate's downtime (source only: vm stop -> source done sending)")
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for b in body:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(b, widths)) + " |")


def run_shaped():
    """Runs this script again under bench/shaped-link.sh: in a network namespace whose loopback a tc
    token bucket holds to BANDWIDTH. QEMU's max-bandwidth is a soft limit: measured on dirty_forever,
    post-copy moved 154.7 MB in 937 ms (165 MB/s, near 200 MB/s in its post-copy phase) under a
    125 MB/s max-postcopy-bandwidth; bench/Compare runs under the same script for ours."""
    shaper = os.path.join(ROOT, "bench", "shaped-link.sh")
    return subprocess.run([shaper, f"{BANDWIDTH * 8}bit", "--", sys.executable, os.path.abspath(__file__)] + sys.argv[1:]).returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guests", default=",".join(GUESTS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds the source runs before migrating")
    ap.add_argument("--xbzrle-cache", type=int, default=64, help="xbzrle-cache-size in MiB (QEMU's default: 64)")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "qemu-migration.json"))
    ap.add_argument("--elf-dir", default=os.path.join(ROOT, "guests", "build"))
    ap.add_argument("--table-from", metavar="JSON", help="only print the table of an earlier run")
    ap.add_argument("--no-shape", action="store_true",
                    help="do not run inside a network namespace whose loopback tc shapes to 1 Gbit/s")
    args = ap.parse_args()
    if args.table_from:
        with open(args.table_from) as f:
            print_table(json.load(f)["rows"])
        return
    if not args.no_shape and os.environ.get("LM_SHAPED_LINK") is None:
        sys.exit(run_shaped())

    # Copy the ELFs first so a rebuild during the run cannot change what is measured.
    elf_dir = tempfile.mkdtemp(prefix="qmig-elfs-")
    guests = args.guests.split(",")
    for g in guests:
        if g != "linux":  # booted from guests/linux/build, nothing to copy
            shutil.copy(os.path.join(args.elf_dir, g + ".elf"), elf_dir)

    rows = []
    for g in guests:
        for s in args.strategies.split(","):
            print(f"# {g} / {s} ...", file=sys.stderr, flush=True)
            row = run_one(g, s, args, elf_dir)
            for n in row["notes"]:
                print(f"#   {n}", file=sys.stderr, flush=True)
            rows.append(row)
    shutil.rmtree(elf_dir, ignore_errors=True)

    env = {"qemu": subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
           "bandwidth_bytes_per_s": BANDWIDTH, "guest_ram_mib": 128, "timeout_s": args.timeout,
           "warmup_s": args.warmup, "xbzrle_cache_mib": args.xbzrle_cache,
           "unprivileged_userfaultfd": open("/proc/sys/vm/unprivileged_userfaultfd").read().strip()
           if os.path.exists("/proc/sys/vm/unprivileged_userfaultfd") else None,
           "link": os.environ.get("LM_SHAPED_LINK", "loopback, max-bandwidth only"), "uid": os.getuid(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    # Rows of guests not run this time are kept (with the environment they were measured in), so
    # `--guests linux` adds the Linux rows next to the bare-metal ones instead of replacing them.
    kept, kept_env = [], None
    if os.path.exists(args.json):
        with open(args.json) as f:
            old = json.load(f)
        ran = {(r["guest"], r["strategy"]) for r in rows}
        kept = [r for r in old.get("rows", []) if (r["guest"], r["strategy"]) not in ran]
        kept_env = old.get("environment") if kept else None
    for r in rows:
        r["link"] = env["link"]
    doc = {"environment": env, "rows": kept + rows}
    if kept_env is not None:
        doc["environment_of_kept_rows"] = kept_env
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
    print_table(rows)
    print(f"\n(JSON: {os.path.relpath(args.json, ROOT)})")


if __name__ == "__main__":
    main()

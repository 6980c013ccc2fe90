"""The Linux guest (issue 14): where its kernel is, how it is started under
godwit-vm and QEMU 7.2, and what its workload lines say. The kernel is built
by scripts/build-linux-guest, never by a test: without it, tests SKIP."""
import os
import re
import shutil
import subprocess
import tempfile
import time

from godwit_vm import Qmp, Serial, die_with_parent, free_tcp_port, wait_migration

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LINUX_GUEST = os.environ.get("LINUX_GUEST", os.path.join(ROOT, "build", "linux-guest", "vmlinux"))
QEMU = shutil.which("qemu-system-x86_64")

# What this machine's KVM (PVM, which emulates guest kernel code) needs on the
# command line: xsave, smap, popcnt and cx16 were seen failing; the rest of the
# cleared CPUID bits are a precaution (docs/linux-guest.md).
BASE_APPEND = ("console=ttyS0 noxsave nofsgsbase "
               "clearcpuid=137,141,145,151,288,298,308,534")
INTERVAL_MS = 1000
# QEMU's -cpu for the same guest: what godwit-vm's default model changes
# (vm/cpu_model.c), and arch-capabilities off, which QEMU fails to set here.
QEMU_CPU = ("host,arch-capabilities=off,-cx16,+xsaveerptr,-kvm-pv-ipi,-kvm-pv-sched-yield,"
            "-kvm-pv-tlb-flush")

LINE = re.compile(r"godwit-workload: seq=(\d+) uptime_ms=(\d+) verify=(\w+) dirtied=(\d+)")
START = "godwit-workload: start"


def skip_reason():
    """Why the Linux tests cannot run here, or None."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist on this machine (a Linux guest needs KVM)"
    if not os.path.exists(LINUX_GUEST):
        return (f"no Linux guest kernel at {LINUX_GUEST}; make check-linux (or "
                "scripts/build-linux-guest) builds it")
    return None


def append_line(mib=16, rate=2560, interval_ms=INTERVAL_MS):
    return (f"{BASE_APPEND} godwit.mib={mib} godwit.rate={rate} "
            f"godwit.interval_ms={interval_ms}")


def lines(text):
    """The workload's lines: a list of (seq, uptime_ms, verify, dirtied)."""
    return [(int(m[1]), int(m[2]), m[3], int(m[4])) for m in LINE.finditer(text)]


def wait_lines(serial, count, timeout, process=None, after=0):
    """Waits until the serial text holds count workload lines (after the
    first `after`); returns them all."""
    serial.wait_for(lambda text: len(lines(text)) >= after + count,
                    f"{after + count} workload lines", timeout, process)
    return lines(serial.text())


def check_sequence(found, what):
    """Raises unless the lines are consecutive and all verify=ok."""
    for previous, line in zip(found, found[1:]):
        if line[0] != previous[0] + 1:
            raise AssertionError(f"{what}: seq {line[0]} after {previous[0]}: a line was "
                                 "skipped or repeated")
    for line in found:
        if line[2] != "ok":
            raise AssertionError(f"{what}: seq {line[0]} says verify={line[2]}")


class QemuGuest:
    """The same kernel under QEMU 7.2 -M microvm (the oracle), with KVM."""

    def __init__(self, memory_mib=128, append="", smp=1, incoming=None, extra=()):
        self.dir = tempfile.mkdtemp(prefix="godwit-qemu-linux-")
        self.serial = Serial(os.path.join(self.dir, "serial.txt"))
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        args = [QEMU, "-M", "microvm,acpi=off", "-accel", "kvm",
                "-cpu", QEMU_CPU,
                "-m", str(memory_mib), "-smp", str(smp), "-display", "none", "-nodefaults",
                "-no-reboot", "-kernel", LINUX_GUEST, "-append", append,
                "-serial", f"file:{self.serial.path}",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra]
        if incoming:
            args += ["-incoming", incoming]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, preexec_fn=die_with_parent)
        self.qmp = None

    def connect(self):
        deadline = time.monotonic() + 10
        while not os.path.exists(self.qmp_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"QEMU did not start: {self.process.communicate()[1]}")
            time.sleep(0.02)
        self.qmp = Qmp(self.qmp_path)
        return self.qmp

    def close(self):
        if self.qmp:
            self.qmp.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)


def migrate(source_qmp, uri, multifd=True, timeout=120):
    """Starts the migration (multifd with 2 channels by default; the
    destination must have been given the same capability) and waits for its
    end; returns query-migrate's last answer."""
    if multifd:
        source_qmp.command("migrate-set-capabilities",
                           capabilities=[{"capability": "multifd", "state": True}])
    source_qmp.command("migrate", uri=uri)
    return wait_migration(source_qmp, timeout=timeout)


def tcp_uri():
    return f"tcp:127.0.0.1:{free_tcp_port()}"



def longest_period(lines_seen):
    """The longest the guest took between two of these lines, or the
    interval: emulated code on a loaded host runs late, and when a check is
    late by a whole interval the workload starts its next period from then."""
    return max([INTERVAL_MS] + [b[1] - a[1] for a, b in zip(lines_seen, lines_seen[1:])])


def check_switchover(before, after, ran_after_ms, paused, slack_ms):
    """Guest uptime from the source's last line to the destination's first
    goes on (a clock restarted or set back fails) and, the guest running,
    advances by no more than the time it still ran on the source after that
    line (ran_after_ms: from the line's appearance to the migration's end,
    which covers the downtime) plus one interval: the longest the guest took
    between two lines on the source, and that interval's own lateness (the
    first line on the destination can be as late as any on the source).
    Precopy slows this emulated guest, so lines stop coming well before the
    switchover; a clock that jumped by the load's length or by host time
    since boot fails."""
    interval = longest_period(before)
    jump = after[0][1] - before[-1][1]
    if jump <= 0:
        raise AssertionError(f"guest uptime went back across the switchover: {jump} ms")
    allowed = ran_after_ms + interval + (interval - INTERVAL_MS) + slack_ms
    if not paused and jump > allowed:
        raise AssertionError(f"guest uptime jumped {jump} ms across the switchover; the guest "
                             f"ran {ran_after_ms:.0f} ms after its last line on the source "
                             f"(one interval: {interval} ms; allowed {allowed:.0f})")


def check_period(before, after):
    """The LAPIC timer paces the workload on a grid of intervals: a line is
    stamped when its check ran, at or after its grid point, and a check late
    by a whole interval starts the grid again from itself. So n lines in a
    row span more than n-2 intervals however late any one was (a timer or a
    clock running fast breaks that), and on the destination they keep the
    pace they had on the source, within a factor of 3 (load varies)."""
    periods = [b[1] - a[1] for a, b in zip(after, after[1:])]
    span = after[-1][1] - after[0][1]
    if span <= (len(after) - 2) * INTERVAL_MS:
        raise AssertionError(f"{len(after)} lines on the destination within {span} ms; the "
                             f"interval is {INTERVAL_MS} ms (periods {periods})")
    if sorted(periods)[len(periods) // 2] > 3 * longest_period(before):
        raise AssertionError(f"the destination's lines come every {periods} ms; the "
                             f"source's every {longest_period(before)} ms at most")


class LineClock:
    """Notes the host's monotonic time at which each workload line first
    appears on a serial file (polled every 5 ms, so a little late, never
    early), for how long a guest ran after its last line."""

    def __init__(self, serial):
        import threading
        self.serial = serial
        self.seen = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.wait(0.005):
            now = time.monotonic()
            for line in lines(self.serial.text()):
                self.seen.setdefault(line[0], now)

    def stop(self):
        self.stopping.set()
        self.thread.join()

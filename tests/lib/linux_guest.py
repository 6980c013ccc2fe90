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
                "-cpu", "host,arch-capabilities=off,-cx16,+xsaveerptr",
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

"""The very same guest file boots under Debian's QEMU (its multiboot loader),
so godwit and QEMU can be compared on identical guests."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import TESTGUEST, Qmp, Serial, VmTestCase, die_with_parent  # noqa: E402

QEMU = shutil.which("qemu-system-x86_64")


class QemuBoot(VmTestCase):
    def start_qemu(self, append, accel):
        directory = tempfile.mkdtemp(prefix="godwit-qemu-")
        self.addCleanup(lambda: shutil.rmtree(directory, ignore_errors=True))
        serial = Serial(os.path.join(directory, "serial.txt"))
        qmp_path = os.path.join(directory, "qmp.sock")
        process = subprocess.Popen(
            [QEMU, "-accel", accel, "-m", "64", "-display", "none", "-nodefaults",
             "-no-reboot", "-kernel", TESTGUEST, "-append", append,
             "-serial", f"file:{serial.path}",
             "-device", "isa-debug-exit,iobase=0x501,iosize=2",
             "-qmp", f"unix:{qmp_path},server=on,wait=off"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=die_with_parent)

        def stop():
            if process.poll() is None:
                process.kill()
            process.communicate()
        self.addCleanup(stop)
        return process, serial, qmp_path

    def accel(self):
        # QEMU's firmware is guest code too: under this host's emulating KVM
        # TCG is as good; use KVM when it is real.
        return os.environ.get("GODWIT_QEMU_ACCEL", "tcg")

    def test_guest_prints_A_under_qemu(self):
        if not QEMU:
            self.skipTest("qemu-system-x86_64 is not installed (scripts/setup-deps installs it)")
        process, serial, qmp_path = self.start_qemu("mode=idle", self.accel())
        started = time.monotonic()
        serial.wait_for(lambda t: "A" in t, "A from the guest under QEMU", timeout=60,
                        process=process)
        print(f"# QEMU ({self.accel()}) printed A after {time.monotonic() - started:.2f}s")
        qmp = Qmp(qmp_path)
        qmp.command("inject-nmi")
        serial.wait_count("N", 1, process=process)
        qmp.close()

    def test_rate_under_qemu(self):
        """rate= needs QEMU's PIT to time the guest's TSC: the pace must hold
        there too, as the convergence benchmark runs the guest under both.
        Whole passes over 8 MiB, in a band wide enough for a loaded host."""
        if not QEMU:
            self.skipTest("qemu-system-x86_64 is not installed (scripts/setup-deps installs it)")
        rate, range_mib, passes = 32, 8, 12
        process, serial, _ = self.start_qemu(f"mode=dirty start=1M end={1 + range_mib}M "
                                             f"rate={rate}", self.accel())
        first = serial.wait_count("B", 1, timeout=60, process=process).count("B")
        started = time.monotonic()
        serial.wait_count("B", first + passes, timeout=60, process=process)
        measured = passes * range_mib / (time.monotonic() - started)
        print(f"# QEMU ({self.accel()}) rate={rate}: {measured:.1f} MiB/s")
        self.assertGreater(measured, 0.5 * rate)
        self.assertLess(measured, 1.5 * rate)

    def test_bad_command_line_exits_with_the_guest_code_under_qemu(self):
        if not QEMU:
            self.skipTest("qemu-system-x86_64 is not installed (scripts/setup-deps installs it)")
        process, _, _ = self.start_qemu("mode=bogus", self.accel())
        self.assertEqual(process.wait(timeout=60), (2 << 1) | 1)


if __name__ == "__main__":
    tap.main()

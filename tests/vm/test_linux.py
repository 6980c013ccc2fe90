#!/usr/bin/env python3
"""The Linux guest (issue 14): a tiny 6.1 kernel booted through its PVH note,
whose in-kernel workload dirties 16 MiB and prints one line a second
(sequence, its uptime from the kernel clock, verify=ok|MISMATCH over every page it
owns), live-migrated with multifd. After every migration, on the side that
runs: the source's and the destination's lines together count on without a
gap or a repeat, every one says verify=ok, the guest's uptime across the
switchover advanced by no more than the downtime plus one interval (and did
not go back), and the interval keeps its period (the LAPIC timer that paces
the workload survived). The kernel is not built here: without it every case
SKIPs, saying how to build it (make check-linux)."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from godwit_vm import VmTestCase, wait_migration  # noqa: E402
import linux_workload as lg  # noqa: E402
import tap  # noqa: E402

MEMORY = "128M"
BOOT_TIMEOUT = 120          # ~16 s on an idle machine; emulated, so load stretches it
LINES_AFTER = 4             # lines to see on a destination before judging it
# The guest's lines come at its own pace, and each appears on the host a
# while after its stamp (the check it reports and the printing are emulated
# code); this is that allowance, not a figure asserted.
SCHEDULING_SLACK_MS = 1000


class LinuxGuest(VmTestCase):
    def setUp(self):
        super().setUp()
        reason = lg.skip_reason()
        if reason:
            self.skipTest(reason)

    def watch(self, vm):
        """Notes when each of vm's lines appears, for as long as the test runs."""
        vm.line_clock = lg.LineClock(vm.serial)
        self.addCleanup(vm.line_clock.stop)

    def boot(self, smp=1, extra=()):
        vm = self.start_vm(memory=MEMORY, kernel=lg.LINUX_GUEST, append=lg.append_line(),
                           extra=("--smp", str(smp), *extra))
        self.watch(vm)
        vm.connect()
        found = lg.wait_lines(vm.serial, 2, BOOT_TIMEOUT, vm.process)
        lg.check_sequence(found, "after boot")
        return vm

    def destination(self, smp=1, extra=()):
        vm = self.start_vm(memory=MEMORY, kernel=lg.LINUX_GUEST,
                           extra=("--smp", str(smp), "--incoming", "defer", *extra))
        self.watch(vm)
        vm.connect()
        vm.qmp.command("migrate-set-capabilities",
                       capabilities=[{"capability": "multifd", "state": True}])
        uri = lg.tcp_uri()
        vm.qmp.command("migrate-incoming", uri=uri)
        return vm, uri

    def migrate(self, source, smp=1, extra=()):
        """Migrates source to a fresh destination; returns it and the info,
        to which it adds ran-after-ms: how long the guest still ran on the
        source after its last line (at most: until the migration ended)."""
        destination, uri = self.destination(smp, extra)
        info = lg.migrate(source.qmp, uri)
        ended = time.monotonic()
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        time.sleep(0.05)   # the clock's last poll of the source's final text
        last = lg.lines(source.serial.text())[-1][0]
        info["ran-after-ms"] = (ended - source.line_clock.seen.get(last, ended)) * 1000
        return destination, info

    def check_continues(self, source_text, destination, info, paused=False):
        """The lines from source and destination, together, after the
        destination printed LINES_AFTER of its own."""
        before = lg.lines(source_text)
        self.assertGreaterEqual(len(before), 2, "the source printed fewer than 2 lines")
        lg.wait_lines(destination.serial, LINES_AFTER, 90, destination.process)
        whole = lg.lines(source_text + destination.serial.text())
        lg.check_sequence(whole, "across the migration")
        after = whole[len(before):]
        lg.check_switchover(before, after, info["ran-after-ms"], paused, SCHEDULING_SLACK_MS)
        lg.check_period(before, after)
        return whole

    def test_boot_and_migrate_twice_one_vcpu(self):
        source = self.boot()
        first = source.serial.text()
        self.assertIn(lg.START, first)
        destination, info = self.migrate(source)
        self.assertGreater(info["ram"]["multifd-bytes"], 0, "no page crossed on multifd")
        self.assertEqual(destination.qmp.command("query-status")["status"], "running")
        self.check_continues(source.serial.text(), destination, info)
        # and back again, to a fresh process
        again, info = self.migrate(destination)
        self.check_continues(destination.serial.text(), again, info)

    def test_migrate_two_vcpus(self):
        source = self.boot(smp=2)
        cpus = source.qmp.command("query-cpus-fast")
        self.assertEqual(len(cpus), 2)
        self.assertIn("Brought up 1 node, 2 CPUs", source.serial.text(),
                      "Linux did not start the second vCPU")
        destination, info = self.migrate(source, smp=2)
        self.check_continues(source.serial.text(), destination, info)

    def test_paused_guest_arrives_paused(self):
        source = self.boot()
        source.qmp.command("stop")
        time.sleep(0.2)   # a line being printed as it stopped is done now
        stopped_text = source.serial.text()
        destination, info = self.migrate(source)
        self.assertEqual(destination.qmp.command("query-status")["status"], "paused")
        time.sleep(2 * lg.INTERVAL_MS / 1000)
        self.assertEqual(destination.serial.text(), "", "a paused guest printed")
        destination.qmp.command("cont")
        whole = self.check_continues(stopped_text, destination, info, paused=True)
        self.assertTrue(all(line[2] == "ok" for line in whole))


class LinuxUnderQemu(unittest.TestCase):
    """The oracle's own check: QEMU 7.2 migrating the same kernel gives the
    same lines (sequence on, verify=ok), so what godwit's tests ask of the
    guest is what a reference VMM gives."""

    def setUp(self):
        reason = lg.skip_reason()
        if reason:
            self.skipTest(reason)
        if not lg.QEMU:
            self.skipTest("qemu-system-x86_64 is not installed (scripts/setup-deps installs it)")
        self.guests = []

    def tearDown(self):
        for guest in self.guests:
            guest.close()

    def test_qemu_migrates_the_same_kernel(self):
        source = lg.QemuGuest(append=lg.append_line())
        self.guests.append(source)
        clock = lg.LineClock(source.serial)
        self.addCleanup(clock.stop)
        source.connect()
        lg.wait_lines(source.serial, 2, BOOT_TIMEOUT, source.process)
        uri = lg.tcp_uri()
        destination = lg.QemuGuest(append=lg.append_line(), incoming="defer")
        self.guests.append(destination)
        destination.connect()
        destination.qmp.command("migrate-set-capabilities",
                                capabilities=[{"capability": "multifd", "state": True}])
        destination.qmp.command("migrate-incoming", uri=uri)
        info = lg.migrate(source.qmp, uri)
        ended = time.monotonic()
        time.sleep(0.05)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        wait_migration(destination.qmp, ("completed",))
        source_text = source.serial.text()
        lg.wait_lines(destination.serial, LINES_AFTER, 60, destination.process)
        whole = lg.lines(source_text + destination.serial.text())
        lg.check_sequence(whole, "QEMU across the migration")
        before = len(lg.lines(source_text))
        ran_after = (ended - clock.seen.get(whole[before - 1][0], ended)) * 1000
        lg.check_switchover(whole[:before], whole[before:], ran_after, False,
                            SCHEDULING_SLACK_MS)
        lg.check_period(whole[:before], whole[before:])

if __name__ == "__main__":
    tap.main()

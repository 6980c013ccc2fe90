"""The accel test device (--device accel,id=NAME,state-size=SIZE), godwit's
stand-in for a VFIO device with a large state: bad values are refused, its
state changes only while the guest runs, and a migration carries all of it
(checked with x-query-accel's digest on both sides, not just a status)."""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import (GODWIT_VM, TESTGUEST, MigrationTestCase, QmpError,  # noqa: E402
                       VmTestCase, wait_migration)

MiB = 1 << 20
GUEST = "mode=dirty start=1M end=16M"
GPU = "accel,id=gpu0,state-size=64M"
GPU_FIXED = GPU + ",changes=off"          # hidden key: no changing thread
NIC_FIXED = "accel,id=nic1,state-size=4K,changes=off"


def devices(*specs):
    return tuple(arg for spec in specs for arg in ("--device", spec))


def query(vm, device_id):
    return vm.qmp.command("x-query-accel", id=device_id)


def wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        time.sleep(0.02)


class BadDevice(VmTestCase):
    """Refused before anything is created: one line, exit status 2."""

    def assert_refused(self, specs, *phrases):
        result = subprocess.run([GODWIT_VM, "--kernel", TESTGUEST, *devices(*specs)],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 2, f"stderr: {result.stderr!r}")
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, f"want one line, got: {result.stderr!r}")
        self.assertTrue(lines[0].startswith("godwit-vm: --device '"), lines[0])
        for phrase in phrases:
            self.assertIn(phrase, lines[0])

    def test_bad_values(self):
        cases = (
            (["accel,id=gpu0,state-size=0"], "state-size=0", "4K to 1G", "multiple of 4 KiB"),
            (["accel,id=gpu0,state-size=3G"], "3 GiB", "4K to 1G"),
            (["accel,id=gpu0,state-size=5000"], "state-size=5000", "multiple of 4 KiB"),
            (["accel,id=gpu0,state-size=2G"], "2 GiB", "4K to 1G"),
            (["accel,id=gpu0,state-size=lots"], "'lots' is not a size"),
            (["accel,state-size=64M"], "no id", "id=NAME", "1 to 31 characters"),
            (["accel,id=gpu0"], "no state-size", "4K to 1G"),
            ([GPU, "accel,id=gpu0,state-size=4K"], "'gpu0' is already taken", "its own id"),
            ([GPU + ",colour=red"], "unknown key 'colour'", "id and state-size"),
            (["accel,id=gpu0,id=gpu1,state-size=4K"], "id is given twice"),
            (["accel,id=gpu0,,state-size=4K"], "empty item"),
            (["accel,id=gpu0,state-size"], "not KEY=VALUE"),
            (["vfio-pci,id=gpu0,state-size=64M"], "unknown device type 'vfio-pci'",
             "accel,id=NAME,state-size=SIZE"),
            (["accel,id=gpu/0,state-size=4K"], "id 'gpu/0'", "1 to 31 characters"),
            (["accel,id=" + "g" * 32 + ",state-size=4K"], "1 to 31 characters"),
            (["accel,id=serial,state-size=4K"], "godwit-vm's own devices"),
            (["accel,id=gpu0,state-size=4K,changes=maybe"], "on or off"),
            (["accel,id=gpu0,state-size=4K,multifd=maybe"], "multifd=maybe", "on or off"),
            (["accel,id=gpu0,state-size=4K,multifd=off,multifd=on"], "multifd is given twice"),
            ([f"accel,id=d{i},state-size=4K" for i in range(9)], "at most 8"),
        )
        for specs, *phrases in cases:
            with self.subTest(device=specs[-1]):
                self.assert_refused(specs, *phrases)

    def test_help_names_the_option(self):
        result = subprocess.run([GODWIT_VM, "--help"], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0)
        self.assertIn("--device accel,id=NAME,state-size=SIZE", result.stdout)
        for hidden in ("nonsense", "multifd=off"):   # the test-only keys stay hidden
            self.assertNotIn(hidden, result.stdout)


class DeviceState(MigrationTestCase):
    def test_changes_only_while_running(self):
        vm = self.start_source(memory="64M", append=GUEST, extra=devices(GPU, NIC_FIXED))
        first = query(vm, "gpu0")
        self.assertEqual(first["state-size"], 64 * MiB)
        self.assertRegex(first["digest"], r"^[0-9a-f]{16}$")
        changed = wait_until(lambda: (lambda now: now if now["digest"] != first["digest"]
                                      else None)(query(vm, "gpu0")),
                             "no change of gpu0's state while the guest runs")
        self.assertGreater(changed["changes"], first["changes"])
        fixed = query(vm, "nic1")
        self.assertEqual(fixed["state-size"], 4096)
        self.assertEqual(fixed["changes"], 0)

        vm.qmp.command("stop")
        stopped = query(vm, "gpu0")
        time.sleep(0.3)            # ~150 changes if it still ran
        self.assertEqual(query(vm, "gpu0"), stopped, "the state changed while stopped")

        vm.qmp.command("cont")
        wait_until(lambda: query(vm, "gpu0")["changes"] > stopped["changes"],
                   "no change after cont")
        self.assertEqual(query(vm, "nic1"), fixed, "changes=off changed its state")

        with self.assertRaises(QmpError) as caught:
            query(vm, "gpu9")
        self.assertIn("'gpu9'", caught.exception.desc)
        self.assertIn("gpu0, nic1", caught.exception.desc)
        with self.assertRaises(QmpError):
            vm.qmp.command("x-query-accel")

    def test_initial_state_comes_from_the_id(self):
        spec = "accel,id={},state-size=1M,changes=off"
        one = self.start_source(memory="16M", append="mode=idle",
                                extra=devices(spec.format("gpu0")))
        two = self.start_source(memory="16M", append="mode=idle",
                                extra=devices(spec.format("gpu0")))
        other = self.start_source(memory="16M", append="mode=idle",
                                  extra=devices(spec.format("gpu1")))
        incoming = self.start_destination("defer", memory="16M",
                                          extra=devices(spec.format("gpu0")))
        digest = query(one, "gpu0")["digest"]
        self.assertEqual(query(two, "gpu0")["digest"], digest)
        self.assertNotEqual(query(other, "gpu1")["digest"], digest)
        # A destination's state must come from the migration, not the id.
        self.assertNotEqual(query(incoming, "gpu0")["digest"], digest)

    def test_no_accel_device(self):
        vm = self.start_source(memory="16M", append="mode=idle")
        with self.assertRaises(QmpError) as caught:
            query(vm, "gpu0")
        self.assertIn("--device accel", caught.exception.desc)


class AccelMigration(MigrationTestCase):
    def migrate(self, source, uri):
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, timeout=120)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        return info

    def start_pair(self, specs, destination_specs=None):
        source = self.start_source(memory="64M", append=GUEST, extra=devices(*specs))
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(
            uri, memory="64M", extra=devices(*(destination_specs or specs)))
        return source, destination, uri

    def test_state_crosses_exactly(self):
        """changes=off: nothing changes the state, so the destination's
        digest must equal the source's (a 64 MiB state: precopy buffers and a
        state cut into buffers on the wire, and a 4 KiB one)."""
        source, destination, uri = self.start_pair((GPU_FIXED, NIC_FIXED))
        before = {d: query(source, d) for d in ("gpu0", "nic1")}
        for d in ("gpu0", "nic1"):
            self.assertNotEqual(query(destination, d)["digest"], before[d]["digest"])
        self.migrate(source, uri)
        for d in ("gpu0", "nic1"):
            self.assertEqual(query(source, d), before[d])
            self.assertEqual(query(destination, d), before[d], f"{d} differs after migration")
        self.assertLessEqual(self.check_running_guest(destination, high=16 * MiB,
                                                      earlier=(source,)), 1)

    def test_onward_migration_sends_everything(self):
        """A destination sends its whole device state on when it migrates
        again, to a VM that holds nothing of it."""
        source, middle, uri = self.start_pair((GPU_FIXED,))
        expected = query(source, "gpu0")
        self.migrate(source, uri)
        middle.serial.wait_count("B", 1, process=middle.process)
        uri = f"unix:{middle.path('onward.sock')}"
        last = self.start_destination(uri, memory="64M", extra=devices(GPU_FIXED))
        self.migrate(middle, uri)
        self.assertEqual(query(last, "gpu0"), expected)
        self.assertLessEqual(self.check_running_guest(last, high=16 * MiB,
                                                      earlier=(source, middle)), 1)

    def test_changing_state_migrates(self):
        """The state changes during the migration: it completes, the source's
        device stays as it was when it stopped, and the destination's goes on
        from there (its change counter, in the register block, continues)."""
        source, destination, uri = self.start_pair((GPU,))
        wait_until(lambda: query(source, "gpu0")["changes"] >= 50, "no changes on the source")
        self.migrate(source, uri)
        at_stop = query(source, "gpu0")
        arrived = query(destination, "gpu0")
        self.assertGreaterEqual(arrived["changes"], at_stop["changes"])
        time.sleep(0.3)
        self.assertEqual(query(source, "gpu0"), at_stop, "the stopped source's state changed")
        later = wait_until(lambda: (lambda now: now if now["digest"] != arrived["digest"]
                                    else None)(query(destination, "gpu0")),
                           "no change of the destination's state")
        self.assertGreater(later["changes"], at_stop["changes"])
        self.assertLessEqual(self.check_running_guest(destination, high=16 * MiB,
                                                      earlier=(source,)), 1)

    def test_cancel_in_precopy_then_migrate_again(self):
        """A migration cancelled after the device sent its state in precopy,
        then one to a new destination: that one holds nothing, so the device
        must send its whole state again."""
        source = self.start_source(memory="64M", append=GUEST, extra=devices(GPU_FIXED))
        expected = query(source, "gpu0")
        first_uri = f"unix:{source.path('first.sock')}"
        first = self.start_destination(first_uri, memory="64M", extra=devices(GPU_FIXED))
        # No estimate fits 1 byte/s: it stays in precopy until cancelled.
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": 1})
        source.qmp.command("migrate", uri=first_uri)
        wait_migration(source.qmp, ("active",), predicate=lambda i: i["ram"]["dirty-sync-count"]
                       >= 2 and i.get("device-state", {}).get("transferred", 0) >= 64 * MiB)
        source.qmp.command("migrate_cancel")
        wait_migration(source.qmp, ("cancelled",))
        self.assertNotEqual(first.wait_exit(timeout=30)[0], 0)
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": 0})
        second_uri = f"unix:{source.path('second.sock')}"
        second = self.start_destination(second_uri, memory="64M", extra=devices(GPU_FIXED))
        self.migrate(source, second_uri)
        self.assertEqual(query(second, "gpu0"), expected,
                         "the second destination lacks state sent to the first")

    def test_nonsense_pending_sizes_still_migrate(self):
        """pending=nonsense (hidden): query_pending says UINT64_MAX bytes of
        precopy and 1 byte of stop-copy; the engine must not believe it."""
        spec = GPU_FIXED + ",pending=nonsense"
        source, destination, uri = self.start_pair((spec,))
        expected = query(source, "gpu0")
        self.migrate(source, uri)
        self.assertEqual(query(destination, "gpu0"), expected)

    def test_destination_with_a_smaller_state_refuses(self):
        source, destination, uri = self.start_pair(
            (GPU,), destination_specs=("accel,id=gpu0,state-size=32M",))
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("failed",), timeout=120)
        self.assertTrue(info.get("error-desc"))
        status, _, err = destination.wait_exit(timeout=30)
        self.assertNotEqual(status, 0)
        self.assertIn("accel gpu0", err)
        self.assertTrue(re.search(r"33554432 bytes|32 MiB", err), err)
        # The source keeps its guest and its device.
        self.assertEqual(source.qmp.command("query-status")["status"], "running")
        changes = query(source, "gpu0")["changes"]
        wait_until(lambda: query(source, "gpu0")["changes"] > changes,
                   "no change on the source after the failed migration")
        self.assertLessEqual(self.check_running_guest(source, high=16 * MiB), 1)


if __name__ == "__main__":
    tap.main()

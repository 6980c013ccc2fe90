"""The run state crosses a migration as in QEMU (issue 10, defect 1): a
paused guest arrives paused, a source whose migration fails or is cancelled
goes back to the state it had (paused stays paused, and cont works), and
godwit-vm's -S (--paused) keeps a VM, or a destination after its migration,
from running the guest until cont: how libvirt drives every migration.

Every test checks guest memory where the guest ends up: byte for byte
against what it was when it stopped, or the dirty guest's increment rule
once it runs again."""
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import (REC_GO, FakeDestination, MigrationTestCase, QmpError,  # noqa: E402
                       check_increment_pattern, check_pass_count, rp_error_record,
                       wait_migration)

MiB = 1 << 20
# A small dirty range: passes are quick even on a slow host.
HIGH = 24 * MiB
GUEST = f"mode=dirty start=1M end={HIGH // MiB}M"


class RunStateTestCase(MigrationTestCase):
    def start_small_source(self, extra=()):
        return self.start_source(memory="64M", append=GUEST, extra=extra)

    def status(self, vm):
        return vm.qmp.command("query-status")["status"]

    def stop_and_read(self, vm):
        """Stops the guest and returns its dirty range as it stays."""
        vm.qmp.command("stop")
        self.assertEqual(self.status(vm), "paused")
        return vm.read_memory(MiB, HIGH - MiB)

    def check_runs(self, vm, earlier=()):
        self.assertLessEqual(self.check_running_guest(vm, high=HIGH, earlier=earlier), 1)

    def check_does_not_run(self, vm, seconds=0.5):
        """No new pass on the serial port and not a byte of the dirty range
        changed while it waited."""
        before_serial = vm.serial.text()
        before = hashlib.sha256(vm.read_memory(MiB, HIGH - MiB)).hexdigest()
        time.sleep(seconds)
        self.assertEqual(vm.serial.text(), before_serial, "the guest printed: it runs")
        after = hashlib.sha256(vm.read_memory(MiB, HIGH - MiB)).hexdigest()
        self.assertEqual(after, before, "guest memory changed: the guest runs")

    def fake_destination(self, vm, **behaviour):
        vm.qmp.command("migrate-set-parameters", **{"downtime-limit": 2000})
        fake = FakeDestination(vm.path("fake.sock"), **behaviour)
        self.addCleanup(fake.close)
        return fake


class PausedSource(RunStateTestCase):
    def test_paused_guest_arrives_paused_and_cont_runs_it(self):
        source = self.start_small_source()
        stopped = self.stop_and_read(source)
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(uri, memory="64M")
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(self.status(source), "postmigrate")
        wait_migration(destination.qmp, ("completed",), timeout=10)
        self.assertEqual(self.status(destination), "paused",
                         "a guest paused on the source must arrive paused")
        self.assertEqual(destination.serial.text(), "", "the guest ran on the destination")
        arrived = destination.read_memory(MiB, HIGH - MiB)
        self.assertTrue(arrived == stopped, "the paused guest's memory differs on arrival")
        with self.assertRaises(QmpError):
            source.qmp.command("cont")   # it belongs to the destination now
        destination.qmp.command("cont")
        self.check_runs(destination, earlier=(source,))

    def test_failed_migration_leaves_a_paused_source_paused_and_cont_works(self):
        """The destination refuses after END (RP_ERROR): the switchover had
        put the paused source in finish-migrate; it must go back to paused,
        not stay in finish-migrate where cont is refused for ever."""
        source = self.start_small_source()
        stopped = self.stop_and_read(source)
        fake = self.fake_destination(
            source, answer_after_end=rp_error_record(-71, "device 'cpu' cannot load"))
        source.qmp.command("migrate", uri=fake.uri)
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        self.assertIn("device 'cpu' cannot load", info["error-desc"])
        self.assertNotIn(REC_GO, fake.types)
        self.assertEqual(self.status(source), "paused")
        self.assertTrue(source.read_memory(MiB, HIGH - MiB) == stopped,
                        "the paused guest's memory changed")
        source.qmp.command("cont")
        self.check_runs(source)

    def test_cancelled_switchover_leaves_a_paused_source_paused_and_cont_works(self):
        """The fake destination never says READY: the source waits in
        stop-copy (finish-migrate) until migrate_cancel."""
        source = self.start_small_source()
        source.qmp.command("migrate-set-capabilities",
                           capabilities=[{"capability": "events", "state": True}])
        stopped = self.stop_and_read(source)
        fake = self.fake_destination(source)
        source.qmp.command("migrate", uri=fake.uri)
        wait_migration(source.qmp, ("device",), timeout=30)
        self.assertTrue(fake.end_seen.wait(10), "the source never sent END")
        self.assertEqual(self.status(source), "finish-migrate")
        with self.assertRaises(QmpError):
            source.qmp.command("cont")   # mid-switchover: cancel instead
        source.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("cancelled",), timeout=10)
        self.assertNotIn("error-desc", info)
        self.assertEqual(self.status(source), "paused")
        self.assertTrue(source.read_memory(MiB, HIGH - MiB) == stopped,
                        "the paused guest's memory changed")
        # It was paused before: no STOP or RESUME came of the migration.
        source.qmp.execute("query-status")
        self.assertEqual([e["event"] for e in source.qmp.events
                          if e["event"] in ("STOP", "RESUME")], ["STOP"])   # our stop
        source.qmp.command("cont")
        self.check_runs(source)
        source.qmp.command("cont")   # check_runs stopped it
        # And it migrates again, running, to a real destination.
        uri = f"unix:{source.path('again.sock')}"
        destination = self.start_destination(uri, memory="64M")
        source.qmp.command("migrate-set-parameters", **{"downtime-limit": 300})
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.check_runs(destination, earlier=(source,))

    def test_failed_migration_resumes_a_running_source(self):
        """The other half of the rule: a guest that ran before the switchover
        runs again after a failed one (RESUME after STOP)."""
        source = self.start_small_source()
        fake = self.fake_destination(
            source, answer_after_end=rp_error_record(-71, "no room for the guest"))
        source.qmp.command("migrate", uri=fake.uri)
        wait_migration(source.qmp, ("failed",), timeout=30)
        self.check_runs(source)


class DashS(RunStateTestCase):
    def test_dash_s_vm_does_not_run_until_cont(self):
        vm = self.start_vm(memory="64M", append=GUEST, extra=("-S",))
        vm.connect()
        self.assertEqual(self.status(vm), "prelaunch")
        self.assertFalse(vm.qmp.command("query-status")["running"])
        self.check_does_not_run(vm, seconds=1.0)
        self.assertEqual(vm.serial.text(), "", "the guest printed before cont")
        vm.qmp.command("stop")                     # changes nothing, as QEMU
        self.assertEqual(self.status(vm), "prelaunch")
        vm.qmp.command("cont")
        vm.qmp.wait_event("RESUME")
        vm.serial.wait_count("A", 1, process=vm.process)
        self.check_runs(vm)

    def test_dash_s_destination_stays_paused_until_cont(self):
        source = self.start_small_source()
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(uri, memory="64M", extra=("--paused",))
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(self.status(source), "postmigrate")
        wait_migration(destination.qmp, ("completed",), timeout=10)
        self.assertEqual(self.status(destination), "paused",
                         "a -S destination must wait for cont")
        self.check_does_not_run(destination)
        self.assertEqual(destination.serial.text(), "", "the guest ran before cont")
        # As the source left it: the increment rule, and every pass counted.
        arrived = destination.read_memory(MiB, HIGH - MiB)
        self.assertLessEqual(check_increment_pattern(arrived), 1)
        check_pass_count(arrived, source.serial.text().count("B"))
        self.assertFalse([e for e in destination.qmp.events if e["event"] == "RESUME"])
        destination.qmp.command("cont")
        destination.qmp.wait_event("RESUME")
        self.check_runs(destination, earlier=(source,))

    def test_cont_before_arrival_undoes_dash_s_and_stop_before_arrival_keeps_it_paused(self):
        """QEMU's meaning of cont and stop on an incoming VM: whether the
        guest runs when it arrives."""
        source = self.start_small_source()
        uri = f"unix:{source.path('first.sock')}"
        first = self.start_destination(uri, memory="64M", extra=("-S",))
        first.qmp.command("cont")
        self.assertEqual(self.status(first), "inmigrate")
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        wait_migration(first.qmp, ("completed",), timeout=10)
        self.check_runs(first, earlier=(source,))
        first.qmp.command("cont")   # check_runs stopped it
        # Onwards, to a destination told to stop before the guest arrives.
        uri = f"unix:{first.path('second.sock')}"
        second = self.start_destination(uri, memory="64M")
        second.qmp.command("stop")
        self.assertEqual(self.status(second), "inmigrate")
        first.qmp.command("migrate", uri=uri)
        info = wait_migration(first.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        wait_migration(second.qmp, ("completed",), timeout=10)
        self.assertEqual(self.status(second), "paused")
        self.check_does_not_run(second)
        second.qmp.command("cont")
        self.check_runs(second, earlier=(source, first))

    def test_paused_file_snapshot_restores_paused(self):
        """migrate file: of a paused guest, restored with --incoming file:
        the guest comes back paused, byte for byte."""
        source = self.start_small_source()
        stopped = self.stop_and_read(source)
        path = source.path("paused.mig")
        source.qmp.command("migrate", uri=f"file:{path}")
        info = wait_migration(source.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        restored = self.start_vm(memory="64M", extra=("--incoming", f"file:{path}"))
        restored.connect()
        wait_migration(restored.qmp, ("completed",), timeout=30)
        self.assertEqual(self.status(restored), "paused")
        self.assertTrue(restored.read_memory(MiB, HIGH - MiB) == stopped,
                        "the restored guest's memory differs")
        restored.qmp.command("cont")
        self.check_runs(restored, earlier=(source,))


if __name__ == "__main__":
    tap.main()

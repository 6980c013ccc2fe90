"""Dirty-limit, as QEMU 8.1+: the capability dirty-limit with its
parameters vcpu-dirty-limit and x-vcpu-dirty-limit-period, and the QMP
commands set-, cancel- and query-vcpu-dirty-limit. It needs the KVM dirty
ring; without /dev/kvm the cases that need one skip, saying so. Every
migration is checked byte-exact on the side that runs the guest."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import (MigrationTestCase, QmpError, VmTestCase, require_kvm,  # noqa: E402
                       wait_migration)

MiB = 1 << 20
RING = ("--accel", "kvm,dirty-ring-size=4096")
# 59 MiB dirtied at 256 MiB/s: four times what max-bandwidth lets through.
WINDOW_END = 60 * MiB
FAST_GUEST = "mode=dirty start=1M end=60M rate=256"
SLOW_LINK = 64 * MiB


def limited_passes(vm, seconds):
    """How many passes the guest finishes in seconds."""
    before = vm.serial.text().count("B")
    time.sleep(seconds)
    return vm.serial.text().count("B") - before


class Commands(VmTestCase):
    def start_dirty(self, extra=RING):
        vm = self.start_vm(memory="64M", append=FAST_GUEST, extra=extra)
        vm.connect()
        vm.serial.wait_count("B", 1, process=vm.process)
        return vm

    def test_set_query_cancel(self):
        require_kvm(self)
        vm = self.start_dirty()
        qmp = vm.qmp
        self.assertEqual(qmp.command("query-vcpu-dirty-limit"), [])
        qmp.command("set-vcpu-dirty-limit", **{"dirty-rate": 4})
        limits = qmp.command("query-vcpu-dirty-limit")
        self.assertEqual([(e["cpu-index"], e["limit-rate"]) for e in limits], [(0, 4)])
        self.assertIsInstance(limits[0]["current-rate"], int)
        # 4 MB/s for 3 s, a period's burst and the half ring it pays for
        # late (8 MiB): well under one 59 MiB pass. Unlimited, it makes
        # four passes a second.
        self.assertLessEqual(limited_passes(vm, 3), 1)
        self.assertIn("vcpu[0], limit rate 4 (MB/s), current rate",
                      qmp.hmp("info vcpu_dirty_limit"))
        qmp.command("cancel-vcpu-dirty-limit")
        self.assertEqual(qmp.command("query-vcpu-dirty-limit"), [])
        self.assertEqual(qmp.hmp("info vcpu_dirty_limit"), "Dirty page limit not enabled!\r\n")
        # Its full speed back: a sleep in progress ends within 100 ms.
        before = vm.serial.text().count("B")
        vm.serial.wait_count("B", before + 3, timeout=10, process=vm.process)
        # One vCPU by index, and a rate of 0 cancels, as in QEMU.
        qmp.command("set-vcpu-dirty-limit", **{"cpu-index": 0, "dirty-rate": 20})
        self.assertEqual(qmp.command("query-vcpu-dirty-limit")[0]["limit-rate"], 20)
        qmp.command("set-vcpu-dirty-limit", **{"cpu-index": 0, "dirty-rate": 0})
        self.assertEqual(qmp.command("query-vcpu-dirty-limit"), [])

    def test_bad_values_say_the_range(self):
        require_kvm(self)
        qmp = self.start_dirty().qmp
        for args, phrase in (({"cpu-index": 1, "dirty-rate": 5},
                              "cpu-index 1 is not a vCPU of this VM; its vCPUs are 0 to 0"),
                             ({"cpu-index": -1, "dirty-rate": 5}, "numbered from 0"),
                             ({"dirty-rate": -1}, "must not be negative"),
                             ({"cpu-index": 0}, "'dirty-rate' is missing")):
            with self.subTest(args=args), self.assertRaises(QmpError) as caught:
                qmp.command("set-vcpu-dirty-limit", **args)
            self.assertIn(phrase, caught.exception.desc)
        with self.assertRaises(QmpError) as caught:
            qmp.command("cancel-vcpu-dirty-limit", **{"cpu-index": 3})
        self.assertIn("its vCPUs are 0 to 0", caught.exception.desc)
        for name, value, phrase in (
                ("vcpu-dirty-limit", 0, "from 1 to 9223372036854775807 (MB/s)"),
                ("vcpu-dirty-limit", "fast", "from 1 to 9223372036854775807 (MB/s)"),
                ("x-vcpu-dirty-limit-period", 0, "from 1 to 1000 (ms)"),
                ("x-vcpu-dirty-limit-period", 1001, "from 1 to 1000 (ms)")):
            with self.subTest(name=name, value=value), self.assertRaises(QmpError) as caught:
                qmp.command("migrate-set-parameters", **{name: value})
            self.assertIn(f"Parameter '{name}' expects an integer {phrase}",
                          caught.exception.desc)
        params = qmp.command("query-migrate-parameters")
        self.assertEqual((params["vcpu-dirty-limit"], params["x-vcpu-dirty-limit-period"]),
                         (1, 1000))
        # As QEMU: one way of slowing the guest at a time.
        with self.assertRaises(QmpError) as caught:
            qmp.command("migrate-set-capabilities",
                        capabilities=[{"capability": "dirty-limit", "state": True},
                                      {"capability": "auto-converge", "state": True}])
        self.assertIn("dirty-limit conflicts with auto-converge", caught.exception.desc)
        caps = {c["capability"]: c["state"] for c in qmp.command("query-migrate-capabilities")}
        self.assertEqual((caps["dirty-limit"], caps["auto-converge"]), (False, False))
        qmp.command("migrate-set-parameters", **{"vcpu-dirty-limit": 100,
                                                 "x-vcpu-dirty-limit-period": 1})
        params = qmp.command("query-migrate-parameters")
        self.assertEqual((params["vcpu-dirty-limit"], params["x-vcpu-dirty-limit-period"]),
                         (100, 1))

    def test_without_a_ring(self):
        """The bitmap tracker (and --accel none, where KVM is missing) has
        no dirty-limit; the refusals name the option that gives one."""
        vm = self.start_vm(memory="32M", append="mode=idle")
        qmp = vm.connect()
        vm.serial.wait_count("A", 1, process=vm.process)
        with self.assertRaises(QmpError) as caught:
            qmp.command("set-vcpu-dirty-limit", **{"dirty-rate": 10})
        self.assertIn("--accel kvm,dirty-ring-size=N", caught.exception.desc)
        with self.assertRaises(QmpError) as caught:
            qmp.command("migrate-set-capabilities",
                        capabilities=[{"capability": "dirty-limit", "state": True}])
        self.assertIn("--accel kvm,dirty-ring-size=N", caught.exception.desc)
        qmp.command("cancel-vcpu-dirty-limit")   # as QEMU: nothing to cancel
        self.assertEqual(qmp.command("query-vcpu-dirty-limit"), [])
        caps = {c["capability"]: c["state"] for c in qmp.command("query-migrate-capabilities")}
        self.assertFalse(caps["dirty-limit"])


class Migration(MigrationTestCase):
    def start_pair(self, name):
        source = self.start_source(memory="64M", append=FAST_GUEST, extra=RING)
        uri = f"unix:{source.path(name + '.sock')}"
        destination = self.start_destination(uri, memory="64M", extra=RING)
        # A slow link, the switchover's too (it is never paced).
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": SLOW_LINK,
                                                        "avail-switchover-bandwidth": SLOW_LINK})
        return source, destination, uri

    def enable_dirty_limit(self, source):
        source.qmp.command("migrate-set-capabilities",
                           capabilities=[{"capability": "dirty-limit", "state": True}])
        source.qmp.command("migrate-set-parameters", **{"x-vcpu-dirty-limit-period": 500})

    def wait_limited(self, source):
        """Until the throttle trigger has fired and every vCPU is limited."""
        info = wait_migration(source.qmp, ("active",), timeout=60,
                              predicate=lambda i: "dirty-limit-throttle-time-per-round" in i)
        self.assertEqual(source.qmp.command("query-vcpu-dirty-limit")[0]["limit-rate"], 1)
        return info

    def test_converges_only_with_dirty_limit(self):
        require_kvm(self)
        source, first, uri = self.start_pair("first")
        # Without help it never converges: the guest dirties four times the link.
        source.qmp.command("migrate", uri=uri)
        wait_migration(source.qmp, ("active",),
                       predicate=lambda i: i["ram"]["dirty-sync-count"] >= 5, timeout=60)
        self.assertNotIn("dirty-limit-throttle-time-per-round", source.qmp.command("query-migrate"))
        source.qmp.command("migrate_cancel")
        wait_migration(source.qmp, ("cancelled",))
        self.assertLessEqual(self.check_running_guest(source, high=WINDOW_END, resume=True), 1)
        # With dirty-limit: the trigger fires, the guest is held to 1 MB/s.
        second_uri = f"unix:{source.path('second.sock')}"
        second = self.start_destination(second_uri, memory="64M", extra=RING)
        self.enable_dirty_limit(source)
        source.qmp.command("migrate", uri=second_uri)
        info = self.wait_limited(source)
        self.assertGreaterEqual(info["dirty-limit-ring-full-time"], 0)
        self.assertIn("Dirty-limit:            throttle per round=", source.qmp.hmp("info migrate"))
        # The migration holds the limit: QMP may not change it meanwhile.
        with self.assertRaises(QmpError) as caught:
            source.qmp.command("set-vcpu-dirty-limit", **{"dirty-rate": 500})
        self.assertIn("while a migration with the dirty-limit capability",
                      caught.exception.desc)
        info = wait_migration(source.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertNotIn("dirty-limit-throttle-time-per-round", info)
        self.assertEqual(source.qmp.command("query-vcpu-dirty-limit"), [])
        self.assertLessEqual(self.check_running_guest(second, high=WINDOW_END,
                                                      earlier=(source,)), 1)

    def check_full_speed(self, vm):
        """Limited to 1 MB/s a pass takes a minute; free, under a second."""
        self.assertEqual(vm.qmp.command("query-vcpu-dirty-limit"), [])
        before = vm.serial.text().count("B")
        vm.serial.wait_count("B", before + 3, timeout=15, process=vm.process)

    def test_limit_ends_on_completion_failure_and_cancel(self):
        require_kvm(self)
        for end in ("cancel", "failure", "completion"):
            with self.subTest(end=end):
                source, destination, uri = self.start_pair(end)
                self.enable_dirty_limit(source)
                # No switchover until told: the limit is on, the migration runs.
                source.qmp.command("migrate-set-parameters",
                                   **{"avail-switchover-bandwidth": 1})
                source.qmp.command("migrate", uri=uri)
                self.wait_limited(source)
                # A vCPU that filled its ring sleeps: QEMU's figure shows it.
                info = wait_migration(source.qmp, ("active",), timeout=30, predicate=lambda i: i.get(
                    "dirty-limit-throttle-time-per-round", 0) > 0)
                # And so does the verdict (ours).
                self.assertEqual(info["convergence"]["state"], "throttled")
                self.assertIn("throttled (dirty-limit, ", info["convergence"]["reason"])
                self.assertLessEqual(limited_passes(source, 1), 1)
                if end == "cancel":
                    source.qmp.command("migrate_cancel")
                    wait_migration(source.qmp, ("cancelled",))
                elif end == "failure":
                    destination.process.kill()
                    wait_migration(source.qmp, ("failed",))
                else:
                    source.qmp.command("migrate-set-parameters",
                                       **{"avail-switchover-bandwidth": 0})
                    info = wait_migration(source.qmp, timeout=60)
                    self.assertEqual(info["status"], "completed", info.get("error-desc"))
                if end == "completion":
                    self.assertEqual(source.qmp.command("query-vcpu-dirty-limit"), [])
                    self.check_full_speed(destination)
                    self.assertLessEqual(self.check_running_guest(
                        destination, high=WINDOW_END, earlier=(source,)), 1)
                else:
                    self.assertEqual(source.qmp.command("query-status")["status"], "running")
                    self.check_full_speed(source)
                    self.assertLessEqual(self.check_running_guest(source, high=WINDOW_END), 1)
                for vm in (source, destination):   # fewer guests running for the next
                    vm.close()


if __name__ == "__main__":
    tap.main()

"""The KVM dirty ring as godwit-vm's dirty tracker (--accel
kvm,dirty-ring-size=N): the option's range, and a ring far smaller than
what the guest dirties, which fills all the time, losing no page. The
migration suites also run whole with the ring (tests/meson.build sets
GODWIT_TEST_DIRTY_RING). Without /dev/kvm there is no ring: those cases
skip, saying so."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import (DIRTY, GODWIT_VM, TESTGUEST, MigrationTestCase,  # noqa: E402
                       VmTestCase, die_with_parent, require_kvm, wait_migration)

MiB = 1 << 20


def ring(entries):
    return ("--accel", f"kvm,dirty-ring-size={entries}")


class RingSize(VmTestCase):
    def refused(self, accel):
        """godwit-vm's exit status and message for --accel accel: the
        option is checked before anything is made, with or without KVM."""
        result = subprocess.run([GODWIT_VM, "--kernel", TESTGUEST, "--accel", accel],
                                capture_output=True, text=True, timeout=20,
                                preexec_fn=die_with_parent)
        return result.returncode, result.stderr

    def test_bad_sizes_say_the_range(self):
        for value in ("100", "128", "4095", "131072", "-256", "1e3", "", "0x100"):
            with self.subTest(value=value):
                status, err = self.refused(f"kvm,dirty-ring-size={value}")
                self.assertEqual(status, 2, err)
                self.assertIn("must be a power of two from 256 to 65536 entries per vCPU", err)
                self.assertIn("or 0 for the dirty bitmap", err)
        status, err = self.refused("none,dirty-ring-size=256")
        self.assertEqual(status, 2)
        self.assertIn("the dirty ring needs KVM", err)
        status, err = self.refused("kvm,dirty-log-size=256")
        self.assertEqual(status, 2)
        self.assertIn("unknown property 'dirty-log-size=256'", err)

    def test_zero_keeps_the_bitmap(self):
        require_kvm(self)
        vm = self.start_vm(memory="32M", append="mode=idle", extra=ring(0))
        vm.connect()
        vm.serial.wait_count("A", 1, process=vm.process)
        self.assertEqual(vm.qmp.command("x-query-dirty-ring")["size"], 0)
        with self.assertRaises(Exception) as caught:
            vm.qmp.command("set-vcpu-dirty-limit", **{"dirty-rate": 10})
        self.assertIn("--accel kvm,dirty-ring-size=N", str(caught.exception))


class SmallRing(MigrationTestCase):
    def test_ring_far_smaller_than_the_dirty_set_loses_no_page(self):
        """256 entries per vCPU against a 99 MiB window (25344 pages): the
        ring fills a hundred times a pass. The increment rule on the
        destination shows no page was lost or went stale."""
        require_kvm(self)
        source = self.start_source(append=DIRTY, extra=ring(256))
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(uri, extra=ring(256))
        # Held back until the guest has re-dirtied pages already sent. The
        # rings overflow here (vm/dirty_ring.c) and all RAM is resent each
        # pass: the limit lets that converge, however slow the machine.
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": 1,
                                                        "downtime-limit": 5000})
        source.qmp.command("migrate", uri=uri)
        wait_migration(source.qmp, ("active",),
                       predicate=lambda i: i["ram"]["dirty-sync-count"] >= 4)
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": 0})
        info = wait_migration(source.qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        counts = source.qmp.command("x-query-dirty-ring")
        self.assertEqual(counts["size"], 256)
        vcpu = counts["vcpus"][0]
        self.assertGreater(vcpu["full-exits"], 0, "the rings never filled")
        self.assertGreater(vcpu["harvested"], 3 * 256, counts)
        # On this host's KVM a full ring is mostly one it wrote past; those
        # are answered by resending all RAM (vm/dirty_ring.c).
        print(f"# ring of 256: {vcpu['harvested']} pages taken, {vcpu['full-exits']} "
              f"ring-full exits, {vcpu['overflows']} overflows", flush=True)
        self.assertLessEqual(self.check_running_guest(destination, earlier=(source,)), 1)

    def test_ring_migrates_there_and_back(self):
        """A guest that arrived with the ring leaves again with it: the
        destination's own rings start empty and track from its start."""
        require_kvm(self)
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=40M",
                                   extra=ring(4096))
        uri = f"unix:{source.path('there.sock')}"
        middle = self.start_destination(uri, memory="64M", extra=ring(4096))
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        middle.serial.wait_count("B", 2, process=middle.process)
        back = f"unix:{middle.path('back.sock')}"
        final = self.start_destination(back, memory="64M", extra=ring(4096))
        middle.qmp.command("migrate", uri=back)
        info = wait_migration(middle.qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertLessEqual(self.check_running_guest(final, high=40 * MiB,
                                                      earlier=(source, middle)), 1)


if __name__ == "__main__":
    tap.main()

"""The dirty test guest under godwit-vm: it runs, stop really stops it, and
its memory follows the increment rule that migration tests will rely on."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import (PAGE_SIZE, VmTestCase, check_increment_pattern,  # noqa: E402
                       check_pass_count, require_kvm)

MiB = 1 << 20


class DirtyGuest(VmTestCase):
    def test_stop_freezes_memory_and_cont_resumes(self):
        require_kvm(self)
        vm = self.start_vm(memory="64M", append="mode=dirty start=1M end=16M")
        qmp = vm.connect()
        vm.serial.wait_for(lambda t: t.startswith("A") and t.count("B") >= 2,
                           "A and two B's", process=vm.process)
        self.assertEqual(qmp.command("query-status")["status"], "running")

        # Stopped mid-pass, memory has exactly one edge; stopped between two
        # passes it has none. Try a few stops until one lands mid-pass, and
        # check the rule on every one of them.
        edges_seen = 0
        for attempt in range(10):
            qmp.command("stop")
            qmp.wait_event("STOP")
            status = qmp.command("query-status")
            self.assertEqual((status["status"], status["running"]), ("paused", False))
            first, second = vm.path("m1.bin"), vm.path("m2.bin")
            qmp.command("pmemsave", val=MiB, size=15 * MiB, filename=first)
            time.sleep(0.3)
            qmp.command("pmemsave", val=MiB, size=15 * MiB, filename=second)
            with open(first, "rb") as f:
                data1 = f.read()
            with open(second, "rb") as f:
                data2 = f.read()
            self.assertEqual(len(data1), 15 * MiB)
            self.assertTrue(data1 == data2, "guest memory changed while the VM was stopped")
            check_pass_count(data1, vm.serial.text().count("B"))
            edges_seen += check_increment_pattern(data1)
            b_before = vm.serial.text().count("B")
            qmp.command("cont")
            qmp.wait_event("RESUME")
            vm.serial.wait_count("B", b_before + 1, process=vm.process)
            if edges_seen:
                break
        self.assertEqual(edges_seen, 1, "no stop landed in the middle of a pass in 10 tries")

        qmp.command("quit")
        status, _, err = vm.wait_exit()
        self.assertEqual(status, 0, err)
        self.assertFalse(os.path.exists(vm.qmp_path), "quit left the QMP socket behind")

    def test_pass_counter_stops_while_paused(self):
        require_kvm(self)
        vm = self.start_vm(memory="32M", append="mode=dirty start=1M end=8M")
        qmp = vm.connect()
        vm.serial.wait_count("B", 1, process=vm.process)
        qmp.command("stop")
        count = vm.serial.text().count("B")
        time.sleep(0.5)
        self.assertEqual(vm.serial.text().count("B"), count, "B printed while paused")
        self.assertEqual(qmp.hmp("info status"), "VM status: paused\r\n")
        qmp.hmp("cont")
        vm.serial.wait_count("B", count + 1, process=vm.process)
        self.assertEqual(qmp.hmp("info status"), "VM status: running\r\n")


class PacedGuest(VmTestCase):
    """rate=R: the guest dirties R MiB of pages a second, by its own clock.
    Measured from the 'B' after each pass over a known range, in a band wide
    enough for a loaded host: unpaced, this guest goes tens of times faster
    than the rates asked here, so pacing that does nothing fails."""

    RANGE_MIB = 8
    WINDOW_S = 3.0

    def measure_rate(self, vm, rate):
        """From one 'B' to the one about WINDOW_S later: whole passes only."""
        passes = max(2, round(self.WINDOW_S * rate / self.RANGE_MIB))
        first = vm.serial.wait_count("B", 1, timeout=30, process=vm.process).count("B")
        started = time.monotonic()
        vm.serial.wait_count("B", first + passes, timeout=10 * self.WINDOW_S, process=vm.process)
        return passes * self.RANGE_MIB / (time.monotonic() - started)

    def check_rate(self, rate, extra=()):
        vm = self.start_vm(memory="32M", extra=extra,
                           append=f"mode=dirty start=1M end={1 + self.RANGE_MIB}M rate={rate}")
        qmp = vm.connect()
        measured = self.measure_rate(vm, rate)
        print(f"# rate={rate}: {measured:.1f} MiB/s")
        self.assertGreater(measured, 0.5 * rate, f"asked {rate} MiB/s, got {measured:.1f}")
        self.assertLess(measured, 1.5 * rate, f"asked {rate} MiB/s, got {measured:.1f}")
        # Paced or not, the passes keep the increment rule.
        qmp.command("stop")
        data = vm.read_memory(MiB, self.RANGE_MIB * MiB)
        check_pass_count(data, vm.serial.text().count("B"))
        check_increment_pattern(data)

    def test_rate_under_kvm(self):
        require_kvm(self)
        for rate in (16, 64):
            with self.subTest(rate=rate):
                self.check_rate(rate)

    def test_rate_under_accel_none(self):
        for rate in (16, 64):
            with self.subTest(rate=rate):
                self.check_rate(rate, extra=("--accel", "none"))

    def check_no_burst_after_stop(self, extra=()):
        rate = 16
        vm = self.start_vm(memory="32M", extra=extra,
                           append=f"mode=dirty start=1M end={1 + self.RANGE_MIB}M rate={rate}")
        qmp = vm.connect()
        vm.serial.wait_count("B", 1, timeout=30, process=vm.process)
        qmp.command("stop")
        time.sleep(2)
        passes = vm.serial.text().count("B")
        qmp.command("cont")
        time.sleep(1)
        # 1 s at 16 MiB/s is 2 passes of 8 MiB; catching up on the 2 s
        # stopped would add 4 more at once.
        self.assertLessEqual(vm.serial.text().count("B") - passes, 3,
                             "the guest burst after cont to catch up on its stop")

    def test_a_stop_does_not_make_it_burst(self):
        """A guest stopped for a while restarts its schedule on cont rather
        than catching up on the time it was away."""
        require_kvm(self)
        self.check_no_burst_after_stop()

    def test_a_stop_does_not_make_it_burst_under_accel_none(self):
        self.check_no_burst_after_stop(extra=("--accel", "none"))


class SharedMemory(VmTestCase):
    def test_mem_path_is_guest_ram_both_ways(self):
        """What the host writes into the --mem-path file the guest's RAM
        holds, and what the guest writes the file shows."""
        require_kvm(self)
        shm = f"/dev/shm/godwit-test-{os.getpid()}"
        self.addCleanup(lambda: os.path.exists(shm) and os.unlink(shm))
        vm = self.start_vm(memory="64M", append="mode=idle",
                           extra=("--mem-path", shm, "--mem-prealloc"))
        qmp = vm.connect()
        vm.serial.wait_count("A", 1, process=vm.process)
        self.assertEqual(os.path.getsize(shm), 64 * MiB)
        pattern = os.urandom(PAGE_SIZE * 16)
        with open(shm, "r+b") as f:
            f.seek(32 * MiB)
            f.write(pattern)
        dump = vm.path("dump.bin")
        qmp.command("pmemsave", val=32 * MiB, size=len(pattern), filename=dump)
        with open(dump, "rb") as f:
            self.assertTrue(f.read() == pattern, "guest RAM does not hold what the host wrote")
        qmp.command("quit")
        self.assertEqual(vm.wait_exit()[0], 0)
        self.assertTrue(os.path.exists(shm), "--mem-path file removed after a normal run")

    def test_dirty_guest_writes_are_visible_in_the_file(self):
        require_kvm(self)
        shm = f"/dev/shm/godwit-test-dirty-{os.getpid()}"
        self.addCleanup(lambda: os.path.exists(shm) and os.unlink(shm))
        vm = self.start_vm(memory="32M", append="mode=dirty start=1M end=8M",
                           extra=("--mem-path", shm))
        qmp = vm.connect()
        vm.serial.wait_count("B", 3, process=vm.process)
        qmp.command("stop")
        with open(shm, "rb") as f:
            f.seek(MiB)
            data = f.read(7 * MiB)
        check_pass_count(data, vm.serial.text().count("B"))
        check_increment_pattern(data)


if __name__ == "__main__":
    tap.main()

"""RDMA migration (docs/rdma.md): rdma:HOST:PORT, RAM by RDMA WRITE into the
destination's registered chunks, the stream's records by SEND. This machine
has no RDMA device: every migration here runs through godwit's software
provider (x-rdma-provider soft, over TCP), which keeps the verbs semantics
the protocol relies on; the rdma-core provider's data path is not run.

Every end-to-end test checks guest memory where the guest ends up running
(the dirty guest's increment rule and pass count, host-written bytes word for
word), not just a status."""
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import tap  # noqa: E402
from godwit_vm import (QmpError, free_tcp_port, stop_process,  # noqa: E402
                       wait_migration)
from test_migration_faults import FaultTestCase  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
PAGE = 4096
GUEST = "mode=dirty start=1M end=24M"
SOFT = {"x-rdma-provider": "soft"}
# No estimate fits 1 byte/s: precopy goes on until it is set back to 0.
HOLD, RELEASE = 1, 0

print("# every RDMA migration here runs through the software provider "
      "(x-rdma-provider soft, over TCP): this machine has no RDMA device", flush=True)


def rdma_uri(host="127.0.0.1"):
    port = free_tcp_port(host)
    return f"rdma:[{host}]:{port}" if ":" in host else f"rdma:{host}:{port}"


class RdmaCase(FaultTestCase):

    def set_rdma(self, vm, chunk=None, pin_all=False, **extra):
        params = dict(SOFT, **extra)
        if chunk:
            params["x-rdma-chunk-size"] = chunk
        vm.qmp.command("migrate-set-parameters", **params)
        if pin_all:
            vm.qmp.command("migrate-set-capabilities",
                           capabilities=[{"capability": "rdma-pin-all", "state": True}])

    def pair(self, memory="64M", append=GUEST, chunk=None, pin_all=False, host="127.0.0.1",
             source_extra=(), destination_extra=(), source_env=None):
        """A source and a deferred destination, both set for RDMA, listening."""
        if source_env:
            source = self.start_vm(memory=memory, append=append, extra=source_extra,
                                   env=source_env)
            source.connect()
            source.serial.wait_count("A", 1, process=source.process)
        else:
            source = self.start_source(memory=memory, append=append, extra=source_extra)
        self.set_rdma(source, chunk, pin_all)
        destination = self.start_destination("defer", memory=memory, extra=destination_extra)
        self.set_rdma(destination, chunk)
        uri = rdma_uri(host)
        destination.qmp.command("migrate-incoming", uri=uri)
        return source, destination, uri

    def migrate_dirty(self, source, uri, passes=3):
        """Holds convergence back until the guest re-dirtied pages already
        sent (so chunks are written again), then lets it finish."""
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": HOLD})
        source.qmp.command("migrate", uri=uri)
        wait_migration(source.qmp, ("active",),
                       predicate=lambda i: i["ram"]["dirty-sync-count"] >= passes)
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": RELEASE})
        return wait_migration(source.qmp)

    def check_dirty_guest_moved(self, source, destination, info):
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertLessEqual(self.check_running_guest(destination, high=24 * MiB,
                                                      earlier=(source,)), 1)

    def check_source_intact(self, source):
        """The source runs its guest on, whole (invariant 1)."""
        self.assertEqual(source.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(source, high=24 * MiB), 1)


class DirtyGuest(RdmaCase):
    """Byte-exact at each chunk size, chunks registered on demand or all at
    once: the guest dirties pages in chunks already written, which go again."""

    def run_dirty(self, chunk, pin_all):
        source, destination, uri = self.pair(chunk=chunk, pin_all=pin_all)
        info = self.migrate_dirty(source, uri)
        self.check_dirty_guest_moved(source, destination, info)
        rdma = info["rdma"]
        self.assertEqual(rdma["chunk-size"], chunk)
        self.assertGreater(rdma["writes-posted"], 0)
        self.assertGreater(rdma["bytes-write"], 0)
        self.assertGreater(rdma["bytes-send"], 0)
        self.assertGreater(rdma["completions-waited"], 0)
        self.assertGreaterEqual(rdma["bytes-write"], info["ram"]["normal"] * PAGE)
        dest_rdma = destination.qmp.command("query-migrate")["rdma"]
        if pin_all:
            self.assertEqual(dest_rdma["registrations"], 2 + 1)   # buffers, one block
        else:
            self.assertGreater(dest_rdma["chunks-registered"], 0)
        return info

    def test_chunk_1m(self):
        self.run_dirty(MiB, False)

    def test_chunk_1m_pin_all(self):
        self.run_dirty(MiB, True)

    def test_chunk_32m(self):
        self.run_dirty(32 * MiB, False)

    def test_chunk_32m_pin_all(self):
        self.run_dirty(32 * MiB, True)

    def test_chunk_1g(self):
        self.run_dirty(GiB, False)

    def test_chunk_1g_pin_all(self):
        self.run_dirty(GiB, True)


class HostFilled(RdmaCase):
    """Random bytes the host wrote into guest RAM arrive word for word; the
    destination's RAM held other bytes before, so zero chunks must be zapped
    there, not just skipped."""

    def run_filled(self, chunk, pin_all):
        shm_src, shm_dst = self.shm_path("src"), self.shm_path("dst")
        # A file that was there before: its stale bytes, where the source
        # has zeros, must go (the destination cannot take its RAM for zero).
        with open(shm_dst, "wb") as f:
            f.truncate(64 * MiB)
            f.seek(48 * MiB)
            f.write(b"\xa5" * (8 * MiB))
        source, destination, uri = self.pair(
            memory="64M", append="mode=idle", chunk=chunk, pin_all=pin_all,
            source_extra=("--mem-path", shm_src),
            destination_extra=("--mem-path", shm_dst))
        rng = random.Random(chunk * 2 + pin_all)
        content = rng.randbytes(40 * MiB)
        with open(shm_src, "r+b") as f:
            f.seek(MiB)
            f.write(content)
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertGreaterEqual(info["ram"]["normal"], len(content) // PAGE)
        destination.qmp.command("stop")
        with open(shm_src, "rb") as f, open(shm_dst, "rb") as g:
            self.assertTrue(f.read() == g.read(), "RAM differs after the RDMA migration")
        if chunk < 16 * MiB:
            self.assertGreater(info["rdma"]["zero-chunks-skipped"], 0, info["rdma"])
        return info

    def test_chunk_1m(self):
        self.run_filled(MiB, False)

    def test_chunk_1m_pin_all(self):
        self.run_filled(MiB, True)

    def test_chunk_32m(self):
        self.run_filled(32 * MiB, False)

    def test_chunk_32m_pin_all(self):
        self.run_filled(32 * MiB, True)

    def test_chunk_1g(self):
        self.run_filled(GiB, False)

    def test_chunk_1g_pin_all(self):
        self.run_filled(GiB, True)


class ZeroChunks(RdmaCase):
    def test_zero_chunks_are_neither_registered_nor_written(self):
        source, destination, uri = self.pair(memory="128M", append="mode=idle", chunk=MiB)
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        rdma = info["rdma"]
        dest_rdma = destination.qmp.command("query-migrate")["rdma"]
        # Only the guest's image and stack hold data: a chunk or two.
        self.assertGreaterEqual(rdma["zero-chunks-skipped"], 126, rdma)
        self.assertLessEqual(dest_rdma["chunks-registered"], 2, dest_rdma)
        self.assertLess(rdma["bytes-write"], 2 * MiB, rdma)
        self.assertEqual(dest_rdma["zero-chunks-skipped"], 0)
        self.assertGreaterEqual(info["ram"]["duplicate"], 126 * MiB // PAGE)
        destination.qmp.command("inject-nmi")
        destination.serial.wait_count("N", 1, process=destination.process)
        self.assertEqual(destination.read_memory(64 * MiB, MiB), bytes(MiB))

    def test_incoming_option_with_the_defaults(self):
        """--incoming rdma:HOST:PORT on the command line, both sides with the
        default chunk size and x-rdma-provider auto (the software provider
        here: no device)."""
        source = self.start_source(memory="64M", append=GUEST)
        uri = rdma_uri()
        destination = self.start_destination(uri, memory="64M")
        info = self.migrate_dirty(source, uri, passes=2)
        self.check_dirty_guest_moved(source, destination, info)
        self.assertEqual(info["rdma"]["chunk-size"], MiB)

    def test_ipv6(self):
        try:
            free_tcp_port("::1")
        except OSError:
            self.skipTest("no IPv6 loopback on this machine")
        source, destination, uri = self.pair(host="::1")
        self.assertTrue(uri.startswith("rdma:[::1]:"))
        info = self.migrate_dirty(source, uri, passes=2)
        self.check_dirty_guest_moved(source, destination, info)


class Parameters(RdmaCase):
    def test_chunk_size_provider_and_pin_all(self):
        vm = self.start_source(memory="16M", append="mode=idle")
        qmp = vm.qmp
        params = qmp.command("query-migrate-parameters")
        self.assertEqual(params["x-rdma-chunk-size"], MiB)
        self.assertEqual(params["x-rdma-provider"], "auto")
        qmp.command("migrate-set-parameters", **{"x-rdma-chunk-size": 32 * MiB})
        self.assertEqual(qmp.command("query-migrate-parameters")["x-rdma-chunk-size"], 32 * MiB)
        qmp.hmp("migrate_set_parameter x-rdma-chunk-size 1024M")
        self.assertEqual(qmp.command("query-migrate-parameters")["x-rdma-chunk-size"], GiB)
        self.assertIn("x-rdma-chunk-size: 1073741824 bytes", qmp.hmp("info migrate_parameters"))
        for value in (0, 1, 512 * 1024, MiB - 1, 3 * MiB, MiB + PAGE, 2 * GiB, -MiB, 1 << 62):
            with self.assertRaises(QmpError) as caught:
                qmp.command("migrate-set-parameters", **{"x-rdma-chunk-size": value})
            self.assertIn("a power of 2 in the range 1 MiB to 1 GiB", caught.exception.desc)
            self.assertIn(str(value), caught.exception.desc)
        with self.assertRaises(QmpError) as caught:
            qmp.command("migrate-set-parameters", **{"x-rdma-chunk-size": "1M"})
        self.assertIn("integer from 1048576 to 1073741824", caught.exception.desc)
        for text, shown in (("3M", str(3 * MiB)), ("2G", str(2 * GiB)), ("512K", "524288")):
            reply = qmp.hmp(f"migrate_set_parameter x-rdma-chunk-size {text}")
            self.assertIn("a power of 2 in the range 1 MiB to 1 GiB", reply)
            self.assertIn(shown, reply)
        self.assertEqual(qmp.command("query-migrate-parameters")["x-rdma-chunk-size"], GiB)
        for value in ("rxe", "", 1):
            with self.assertRaises(QmpError) as caught:
                qmp.command("migrate-set-parameters", **{"x-rdma-provider": value})
            self.assertIn("'auto', 'verbs', 'soft'", caught.exception.desc)
        qmp.command("migrate-set-parameters", **{"x-rdma-provider": "soft"})
        self.assertIn("x-rdma-provider: soft", qmp.hmp("info migrate_parameters"))
        caps = {c["capability"]: c["state"]
                for c in qmp.command("query-migrate-capabilities")}
        self.assertFalse(caps["rdma-pin-all"])
        qmp.command("migrate-set-capabilities",
                    capabilities=[{"capability": "rdma-pin-all", "state": True}])
        caps = {c["capability"]: c["state"]
                for c in qmp.command("query-migrate-capabilities")}
        self.assertTrue(caps["rdma-pin-all"])

    def test_multifd_with_rdma_is_refused(self):
        vm = self.start_source(memory="16M", append="mode=idle")
        vm.qmp.command("migrate-set-capabilities",
                       capabilities=[{"capability": "multifd", "state": True}])
        with self.assertRaises(QmpError) as caught:
            vm.qmp.command("migrate", uri="rdma:127.0.0.1:1")
        self.assertIn("multifd does not apply to rdma:", caught.exception.desc)
        destination = self.start_destination("defer", memory="16M")
        destination.qmp.command("migrate-set-capabilities",
                                capabilities=[{"capability": "multifd", "state": True}])
        with self.assertRaises(QmpError) as caught:
            destination.qmp.command("migrate-incoming", uri="rdma:127.0.0.1:1")
        self.assertIn("multifd does not apply to rdma:", caught.exception.desc)
        self.assertEqual(vm.qmp.command("query-status")["status"], "running")

    def test_verbs_without_a_device_names_both_fixes(self):
        vm = self.start_source(memory="16M", append="mode=idle")
        vm.qmp.command("migrate-set-parameters", **{"x-rdma-provider": "verbs"})
        vm.qmp.command("migrate", uri=rdma_uri())
        info = wait_migration(vm.qmp, ("failed",), timeout=20)
        self.assertIn("rdma link add", info["error-desc"])
        self.assertIn("x-rdma-provider soft", info["error-desc"])
        destination = self.start_destination("defer", memory="16M")
        destination.qmp.command("migrate-set-parameters", **{"x-rdma-provider": "verbs"})
        with self.assertRaises(QmpError) as caught:
            destination.qmp.command("migrate-incoming", uri=rdma_uri())
        self.assertIn("rdma link add", caught.exception.desc)
        self.assertEqual(vm.qmp.command("query-status")["status"], "running")

    def test_mismatched_chunk_sizes_are_refused_before_any_ram(self):
        source = self.start_source(memory="32M", append="mode=dirty start=1M end=8M")
        self.set_rdma(source, MiB)
        destination = self.start_destination("defer", memory="32M")
        self.set_rdma(destination, 32 * MiB)
        uri = rdma_uri()
        destination.qmp.command("migrate-incoming", uri=uri)
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("failed",), timeout=20)
        for phrase in ("x-rdma-chunk-size", str(MiB), str(32 * MiB)):
            self.assertIn(phrase, info["error-desc"])
        self.assertEqual(info.get("ram", {}).get("transferred", 0), 0, info)
        err = self.check_destination_gave_up(destination, (str(MiB), str(32 * MiB)))
        self.assertIn("x-rdma-chunk-size", err)
        self.assertLessEqual(self.check_running_guest(source, high=8 * MiB), 1)


class BadWrites(RdmaCase):
    """A WRITE the destination must refuse (the test knob
    GODWIT_RDMA_TEST_BAD_WRITE spoils the first one): the migration fails,
    the source's guest runs on, whole, and the destination never runs it."""

    def run_bad(self, knob, phrases):
        source, destination, uri = self.pair(source_env={"GODWIT_RDMA_TEST_BAD_WRITE": knob})
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        for phrase in phrases:
            self.assertIn(phrase, info["error-desc"])
        self.check_source_intact(source)
        self.check_destination_gave_up(destination)
        self.quit_cleanly(source)

    def test_wrong_rkey(self):
        self.run_bad("rkey", ("RDMA WRITE failed", "rkey"))

    def test_outside_the_region(self):
        self.run_bad("range", ("RDMA WRITE failed",))


class Kills(RdmaCase):
    """kill -9 of either side: mid-pass (slowed by max-bandwidth), and in
    the SEND phase (at pause-before-switchover, where the stream's records
    go by SEND and RAM's WRITEs are over)."""

    def slow_pair(self, tag):
        shm = self.shm_path(tag)
        source, destination, uri = self.pair(memory="128M", append="mode=idle",
                                             source_extra=("--mem-path", shm))
        content = self.fill_random(shm, 100 * MiB, seed=len(tag))
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 40 * 1000 * 1000})
        return source, destination, uri, shm, content

    def test_destination_killed_mid_pass(self):
        source, destination, uri, shm, content = self.slow_pair("kill-dst")
        source.qmp.command("migrate", uri=uri)
        info = self.wait_transferred(source, 16 * MiB)
        self.assertEqual(info["ram"]["dirty-sync-count"], 1, "the first pass already ended")
        destination.process.kill()
        info = wait_migration(source.qmp, ("failed",), timeout=20)
        self.assertIn("RDMA", info["error-desc"])
        self.check_idle_guest_runs(source)
        self.assert_ram_unchanged(shm, content)
        self.quit_cleanly(source)

    def test_source_killed_mid_pass(self):
        source, destination, uri, _, _ = self.slow_pair("kill-src")
        source.qmp.command("migrate", uri=uri)
        info = self.wait_transferred(source, 16 * MiB)
        self.assertEqual(info["ram"]["dirty-sync-count"], 1, "the first pass already ended")
        source.process.kill()
        self.check_destination_gave_up(destination)

    def at_pause(self):
        source, destination, uri = self.pair()
        source.qmp.command("migrate-set-capabilities", capabilities=[
            {"capability": "pause-before-switchover", "state": True}])
        source.qmp.command("migrate", uri=uri)
        wait_migration(source.qmp, ("pre-switchover",), timeout=30)
        return source, destination

    def test_destination_killed_in_send_phase(self):
        source, destination = self.at_pause()
        stop_process(destination.process.pid)
        source.qmp.command("migrate-continue", state="pre-switchover")
        wait_migration(source.qmp, ("device",), timeout=20)
        destination.process.kill()
        info = wait_migration(source.qmp, ("failed",), timeout=20)
        self.assertTrue(info.get("error-desc"))
        self.check_source_intact(source)
        self.quit_cleanly(source)

    def test_source_killed_in_send_phase(self):
        source, destination = self.at_pause()
        source.process.kill()
        self.check_destination_gave_up(destination)


class Cancel(RdmaCase):
    def test_cancel_in_setup(self):
        """The destination is stopped before it answers the connect: the
        source waits in setup, and migrate_cancel ends the wait."""
        source, destination, uri = self.pair()
        stop_process(destination.process.pid)
        source.qmp.command("migrate", uri=uri)
        time.sleep(0.3)
        self.assertEqual(source.qmp.command("query-migrate")["status"], "setup")
        source.qmp.command("migrate_cancel")
        wait_migration(source.qmp, ("cancelled",), timeout=20)
        self.check_source_intact(source)
        os.kill(destination.process.pid, signal.SIGCONT)

    def test_cancel_mid_pass_then_migrate_again(self):
        source, destination, uri = self.pair()
        # 64 MiB at 5 MB/s: the first pass lasts about 13 s.
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 5 * 1000 * 1000})
        source.qmp.command("migrate", uri=uri)
        info = self.wait_transferred(source, 4 * MiB)
        self.assertEqual(info["ram"]["dirty-sync-count"], 1, "the first pass already ended")
        source.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("cancelled",), timeout=20)
        self.assertEqual(info["status"], "cancelled")
        self.check_destination_gave_up(destination)
        self.assertLessEqual(self.check_running_guest(source, high=24 * MiB), 1)
        second = self.start_destination("defer", memory="64M")
        self.set_rdma(second)
        uri = rdma_uri()
        second.qmp.command("migrate-incoming", uri=uri)
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 0})
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertLessEqual(self.check_running_guest(second, high=24 * MiB, earlier=(source,)),
                             1)

    def test_cancel_in_pre_switchover(self):
        source, destination, uri = self.pair()
        source.qmp.command("migrate-set-capabilities", capabilities=[
            {"capability": "pause-before-switchover", "state": True}])
        source.qmp.command("migrate", uri=uri)
        wait_migration(source.qmp, ("pre-switchover",), timeout=30)
        source.qmp.command("migrate_cancel")
        wait_migration(source.qmp, ("cancelled",), timeout=20)
        self.check_source_intact(source)
        self.check_destination_gave_up(destination)

    def test_cancel_in_send_phase(self):
        source, destination, uri = self.pair()
        source.qmp.command("migrate-set-capabilities", capabilities=[
            {"capability": "pause-before-switchover", "state": True}])
        source.qmp.command("migrate", uri=uri)
        wait_migration(source.qmp, ("pre-switchover",), timeout=30)
        stop_process(destination.process.pid)
        source.qmp.command("migrate-continue", state="pre-switchover")
        wait_migration(source.qmp, ("device",), timeout=20)
        source.qmp.command("migrate_cancel")
        wait_migration(source.qmp, ("cancelled",), timeout=20)
        self.check_source_intact(source)
        os.kill(destination.process.pid, signal.SIGCONT)
        self.check_destination_gave_up(destination)

    def test_cancel_on_the_destination(self):
        source, destination, uri = self.pair(memory="128M", append="mode=dirty start=1M end=100M")
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 20 * 1000 * 1000})
        source.qmp.command("migrate", uri=uri)
        self.wait_transferred(source, 8 * MiB)
        destination.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("failed",), timeout=20)
        self.assertTrue(info.get("error-desc"))
        self.check_destination_gave_up(destination)
        self.assertLessEqual(self.check_running_guest(source), 1)


if __name__ == "__main__":
    tap.main()

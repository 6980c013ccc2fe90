"""Live migration when something goes wrong: cancel at every phase, a
destination that dies, refuses or never answers, a source that dies, and
damaged streams. docs/stream.md's table "The handshake, and who owns the
guest at each failure" is the specification: at no instant do both sides run
the guest, and the only copy of it is never destroyed. So every test checks
the guest where it ends up running (new passes, the increment rule, or RAM
compared byte for byte), not just a status.

Some tests talk to a fake destination (FakeDestination in godwit_vm.py): a
Python thread that reads the stream and answers wrongly on purpose, which is
how the source can be held in stop-and-copy deterministically. FakeSource
does the converse: it feeds a real destination a saved stream and plays the
handshake up to the failure.

Tests that fail today demonstrate engine bugs; each says what is wrong in
its docstring or assertion message."""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import (RECORD_HEADER_SIZE, REC_END, REC_GO, REC_PAGES,  # noqa: E402
                       REC_RP_ERROR, REC_RP_READY, REC_RP_RUNNING, STREAM_HEADER_SIZE,
                       FakeDestination,
                       MigrationTestCase, QmpError, Vm, crc32c, parse_stream,
                       rp_error_record, stream_record, wait_migration, watch_until_exit)

MiB = 1 << 20
INCOMING_FAILED = "incoming migration failed"


class FaultTestCase(MigrationTestCase):
    def fake_destination(self, vm, name="fake.sock", **behaviour):
        """A FakeDestination for vm. The downtime limit goes up to 2 s: the
        fake reads at whatever speed Python manages on a loaded machine, and
        reaching stop-and-copy is the point, not the downtime."""
        vm.qmp.command("migrate-set-parameters", **{"downtime-limit": 2000})
        fake = FakeDestination(vm.path(name), **behaviour)
        self.addCleanup(fake.close)
        return fake

    def shm_path(self, tag):
        path = f"/dev/shm/godwit-test-faults-{tag}-{os.getpid()}-{time.monotonic_ns()}"
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        return path

    def enable_events(self, vm):
        vm.qmp.command("migrate-set-capabilities",
                       capabilities=[{"capability": "events", "state": True}])

    def migration_events(self, vm):
        """The MIGRATION statuses received so far (reads what is pending)."""
        vm.qmp.execute("query-status")   # flushes events sent before its reply
        return [event["data"]["status"] for event in vm.qmp.events
                if event["event"] == "MIGRATION"]

    def assert_cancel_order(self, statuses):
        """QEMU's state machine: once cancelling, only cancelled follows."""
        self.assertIn("cancelling", statuses)
        after = statuses[statuses.index("cancelling") + 1:]
        self.assertEqual(after, ["cancelled"],
                         f"after 'cancelling' the status went {after}: {statuses}")

    def check_running_guest(self, vm, low=MiB, high=100 * MiB, earlier=()):
        """Checked, and left running: these tests go on with the guest."""
        return super().check_running_guest(vm, low, high, earlier, resume=True)

    def check_idle_guest_runs(self, vm):
        """An idle guest answers an NMI with 'N' only if its vCPU runs."""
        self.assertEqual(vm.qmp.command("query-status")["status"], "running")
        before = vm.serial.text().count("N")
        vm.qmp.command("inject-nmi")
        vm.serial.wait_count("N", before + 1, process=vm.process, timeout=10)

    def check_destination_gave_up(self, destination, phrases=()):
        """A destination whose incoming migration failed exits 1 by itself,
        never having run the guest (it printed nothing on its serial port)."""
        status, seen, err = watch_until_exit(destination, timeout=20)
        self.assertEqual(status, 1, err)
        self.assertNotIn("running", seen)
        self.assertIn(INCOMING_FAILED, err)
        for phrase in phrases:
            self.assertIn(phrase, err)
        self.assertEqual(destination.serial.text(), "", "the destination ran the guest")
        return err

    def migrate_again(self, source, memory="128M", low=MiB, high=100 * MiB):
        """Dirty tracking was stopped and the state reset: a new migration to
        a new destination completes, and the guest runs there, whole."""
        uri = f"unix:{source.path('again-%d.sock' % time.monotonic_ns())}"
        destination = self.start_destination(uri, memory=memory)
        source.qmp.command("migrate-set-parameters",
                           **{"max-bandwidth": 0, "downtime-limit": 300})
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertLessEqual(self.check_running_guest(destination, low, high,
                                                      earlier=(source,)), 1)
        self.quit_cleanly(destination)
        self.quit_cleanly(source)

    def quit_cleanly(self, vm):
        """After the fault, the VM still shuts down cleanly: status 0 and, in
        the sanitizer build, no report (leaks are reported at exit)."""
        vm.qmp.command("quit")
        status, _, err = vm.wait_exit(timeout=20)
        self.assertNotIn("Sanitizer", err)
        self.assertEqual(status, 0, err)

    def wait_transferred(self, vm, at_least, timeout=30):
        return wait_migration(vm.qmp, ("active",), timeout=timeout,
                              predicate=lambda i: i["ram"]["transferred"] >= at_least)

    def fill_random(self, path, size, seed):
        """Guest RAM at [1M, 1M + size) written by the host; returns it."""
        content = random.Random(seed).randbytes(size)
        with open(path, "r+b") as f:
            f.seek(MiB)
            f.write(content)
        return content

    def assert_ram_unchanged(self, path, content):
        with open(path, "rb") as f:
            f.seek(MiB)
            self.assertTrue(f.read(len(content)) == content, "the source's RAM changed")


class Cancel(FaultTestCase):
    def test_cancel_in_the_same_write_as_migrate(self):
        source = self.start_source()
        self.enable_events(source)
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(uri)
        # 10 MB/s: the 99 MiB the guest dirties cannot cross before the cancel.
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 10 * 1000 * 1000})
        source.qmp.send_raw(json.dumps({"execute": "migrate", "arguments": {"uri": uri}}) +
                            json.dumps({"execute": "migrate_cancel"}) + "\n")
        for _ in range(2):
            reply = source.qmp.read_reply()
            self.assertIn("return", reply, reply)
        info = wait_migration(source.qmp, ("cancelled",), timeout=20)
        self.assertNotIn("error-desc", info)
        # The order of statuses is test_cancel_racing_setup_...'s business.
        statuses = self.migration_events(source)
        self.assertEqual(statuses[-1], "cancelled", statuses)
        self.assertNotIn("device", statuses)
        self.assertLessEqual(self.check_running_guest(source), 1)
        self.check_destination_gave_up(destination)
        self.migrate_again(source)

    def test_cancel_racing_setup_never_reports_active_again(self):
        """migrate_cancel sent 0 to 1 ms after migrate lands anywhere in
        setup. Whenever it lands, the MIGRATION events must go cancelling ->
        cancelled, never back to active (QEMU moves setup -> active with a
        compare and swap for this reason), and the guest keeps running.
        Two ways this went wrong: the thread's setup -> active overwrote
        cancelling (fixed: migration_set_status ignores active and device
        once cancelling), and migration_set_status emits the event after
        dropping the lock, so the thread's 'active' event can go out after
        the QMP thread's 'cancelling' although the status changes were in
        the right order."""
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=8M")
        self.enable_events(source)
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 10 * 1000 * 1000})
        wrong = []
        # Measured here: 1 round in 4 to 1 in 20 catches it; a round takes
        # 25 ms, and the first wrong order ends the loop.
        for round_ in range(150):
            fake = self.fake_destination(source, name=f"race-{round_}.sock")
            source.qmp.events.clear()
            source.qmp.command("migrate", uri=fake.uri)
            time.sleep(0.0001 * (round_ % 10))
            source.qmp.command("migrate_cancel")
            info = wait_migration(source.qmp, ("cancelled",), timeout=20)
            self.assertNotIn("error-desc", info)
            statuses = self.migration_events(source)
            self.assertNotIn(REC_GO, fake.types)
            fake.close()
            if statuses[statuses.index("cancelling") + 1:] != ["cancelled"]:
                wrong.append((round_, statuses))
                break
        self.assertEqual(source.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(source, high=8 * MiB), 1)
        self.quit_cleanly(source)
        self.assertEqual(wrong, [], "the status left 'cancelling' for something other than "
                         "'cancelled' (round, MIGRATION events)")

    def test_cancel_while_active(self):
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=16M")
        self.enable_events(source)
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(uri, memory="64M")
        # 15 MiB dirty per pass at 40 MB/s: each pass takes 0.4 s and the
        # next finds everything dirty again, so it cannot converge.
        source.qmp.command("migrate-set-parameters",
                           **{"max-bandwidth": 40 * 1000 * 1000, "downtime-limit": 1})
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("active",), timeout=30,
                              predicate=lambda i: i["ram"]["dirty-sync-count"] >= 2)
        self.assertGreater(info["ram"]["remaining"], 0)
        self.assertEqual(source.qmp.command("query-status")["status"], "running")
        source.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("cancelled",), timeout=10)
        self.assertNotIn("error-desc", info)
        self.assert_cancel_order(self.migration_events(source))
        self.assertLessEqual(self.check_running_guest(source, high=16 * MiB), 1)
        err = self.check_destination_gave_up(destination)
        self.assertIn("offset", err)
        self.migrate_again(source, memory="64M", high=16 * MiB)

    def test_cancel_in_stop_and_copy(self):
        """The fake destination reads everything and never says RP_READY: the
        source sits in 'device' with the guest stopped until we cancel."""
        source = self.start_source()
        self.enable_events(source)
        fake = self.fake_destination(source)
        source.qmp.command("migrate", uri=fake.uri)
        wait_migration(source.qmp, ("device",), timeout=30)
        self.assertTrue(fake.end_seen.wait(10), "the source never sent END")
        self.assertEqual(source.qmp.command("query-status")["status"], "finish-migrate")
        # Stopped means stopped: no pass completes while the source waits.
        passes = source.serial.text().count("B")
        time.sleep(0.5)
        self.assertEqual(source.serial.text().count("B"), passes)
        self.assertEqual(source.qmp.command("query-migrate")["status"], "device")
        source.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("cancelled",), timeout=10)
        self.assertNotIn("error-desc", info)
        self.assert_cancel_order(self.migration_events(source))
        self.assertLessEqual(self.check_running_guest(source), 1)
        self.assertTrue(fake.finished.wait(10), "the source did not close the connection")
        self.assertNotIn(REC_GO, fake.types)
        self.migrate_again(source)

    def block_connect(self, vm):
        """A unix socket whose listen backlog is full and which never
        accepts: a blocking connect() to it waits as long as it exists."""
        path = vm.path("full.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)   # lets a stuck connect return
        listener.bind(path)
        listener.listen(0)
        for _ in range(16):
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(filler.close)
            filler.setblocking(False)
            try:
                filler.connect(path)
            except BlockingIOError:
                return f"unix:{path}"
        self.fail("the listen backlog never filled")

    def test_cancel_while_connect_blocks(self):
        """A destination that does not accept (full backlog, or a TCP
        address that never answers: minutes of SYN retries) holds the
        source in connect(). migrate_cancel must end it: QEMU connects
        asynchronously for this reason."""
        source = self.start_source(memory="32M", append="mode=dirty start=1M end=2M")
        uri = self.block_connect(source)
        source.qmp.command("migrate", uri=uri)
        time.sleep(0.3)
        self.assertEqual(source.qmp.command("query-migrate")["status"], "setup")
        source.qmp.command("migrate_cancel")
        try:
            wait_migration(source.qmp, ("cancelled",), timeout=3)
        except TimeoutError as stuck:
            raise AssertionError(f"migrate_cancel did not end a blocked connect: {stuck}; "
                                 "a new migrate is refused meanwhile") from None
        self.assertLessEqual(self.check_running_guest(source, high=2 * MiB), 1)

    def test_quit_while_connect_blocks(self):
        source = self.start_source(memory="32M", append="mode=idle")
        uri = self.block_connect(source)
        source.qmp.command("migrate", uri=uri)
        time.sleep(0.3)
        source.qmp.command("quit")
        try:
            status, _, err = source.wait_exit(timeout=3)
        except subprocess.TimeoutExpired:
            raise AssertionError("godwit-vm did not exit on quit: it joins a migration "
                                 "thread blocked in connect()") from None
        self.assertEqual(status, 0, err)


class DestinationFaults(FaultTestCase):
    def test_destination_closes_after_end_without_ready(self):
        """Also the 'destination dies during switchover' case at its most
        deterministic: it goes away after END, before RP_READY."""
        source = self.start_source()
        fake = self.fake_destination(source, close_after_end=True)
        source.qmp.command("migrate", uri=fake.uri)
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        self.assertTrue(fake.end_seen.is_set())
        self.assertNotIn(REC_GO, fake.types)
        self.assertIn("the destination closed the connection", info["error-desc"])
        self.assertLessEqual(self.check_running_guest(source), 1)
        self.quit_cleanly(source)

    def test_destination_refuses_after_end(self):
        """RP_ERROR instead of RP_READY, as a device load error would give:
        the source had stopped the guest for the switchover and must resume
        it."""
        source = self.start_source()
        text = "device 'uart' instance 0: version 9 is from the future"
        fake = self.fake_destination(source, answer_after_end=rp_error_record(-71, text))
        source.qmp.command("migrate", uri=fake.uri)
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        self.assertTrue(fake.end_seen.is_set())
        self.assertIn("the destination failed: " + text, info["error-desc"])
        self.assertTrue(fake.finished.wait(10))
        self.assertNotIn(REC_GO, fake.types)
        self.assertLessEqual(self.check_running_guest(source), 1)
        self.migrate_again(source)

    def test_cancel_after_go_is_too_late(self):
        """After GO the destination owns the guest: a cancel while the source
        waits for RP_RUNNING must neither resume the guest on the source nor
        report 'cancelled'. The fake destination says RP_READY, takes GO and
        never says RP_RUNNING."""
        source = self.start_source()
        self.enable_events(source)
        fake = self.fake_destination(source, answer_after_end=stream_record(REC_RP_READY))
        source.qmp.command("migrate", uri=fake.uri)
        self.assertTrue(fake.go_seen.wait(30), "the source never sent GO")
        self.assertEqual(source.qmp.command("query-status")["status"], "finish-migrate")
        source.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("completed",), timeout=15)
        self.assertNotIn("error-desc", info)
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertEqual(self.migration_events(source)[-1], "completed")
        passes = source.serial.text().count("B")
        time.sleep(0.3)
        self.assertEqual(source.serial.text().count("B"), passes, "the guest runs on the source")
        with self.assertRaises(QmpError):
            source.qmp.command("migrate", uri=fake.uri)   # it has migrated away
        self.quit_cleanly(source)

    def running_after_go(self, delay_s, body):
        """A migration to a fake destination that answers RP_READY, then
        RP_RUNNING with body delay_s after GO; returns the completed
        query-migrate."""
        source = self.start_source()
        fake = self.fake_destination(
            source, answer_after_end=stream_record(REC_RP_READY),
            answer_after_go=(delay_s, stream_record(REC_RP_RUNNING, body)))
        source.qmp.command("migrate", uri=fake.uri)
        info = wait_migration(source.qmp, ("completed",), timeout=30)
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.quit_cleanly(source)
        return info

    def test_running_says_how_long_the_guest_ran(self):
        """RP_RUNNING's body (us the guest had run when it was sent) comes off
        the downtime: a reply 400 ms after GO that says 350 ms leaves a
        resume of 50 ms and a little more, never the whole 400."""
        info = self.running_after_go(0.4, (350000).to_bytes(8, "little"))
        resume = info["downtime-detail"]["resume"]
        self.assertGreaterEqual(resume, 50000, info["downtime-detail"])
        self.assertLess(resume, 300000, info["downtime-detail"])

    def test_running_longer_than_since_go_counts_as_nothing(self):
        """A destination cannot have run the guest before GO: a body longer
        than the wait since GO is ignored, as is an empty one (an older
        destination); either way the resume spans the whole wait."""
        for body in ((10 ** 12).to_bytes(8, "little"), b""):
            info = self.running_after_go(0.2, body)
            self.assertGreaterEqual(info["downtime-detail"]["resume"], 200000,
                                    info["downtime-detail"])

    def test_destination_sends_rp_error_after_the_header(self):
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=16M")
        text = "fake refusal after the header: disk on fire"
        fake = self.fake_destination(source, answer_after_header=rp_error_record(-5, text))
        source.qmp.command("migrate", uri=fake.uri)
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        self.assertIn("the destination failed: " + text, info["error-desc"])
        self.assertTrue(fake.finished.wait(10))
        self.assertNotIn(REC_END, fake.types)
        self.assertLessEqual(self.check_running_guest(source, high=16 * MiB), 1)
        self.quit_cleanly(source)

    def test_destination_sends_rp_error_and_closes_at_once(self):
        """As an older godwit-vm did (one that does not drain): RP_ERROR
        after RAM_BLOCKS, then close. The sentence is in the source's
        receive queue whatever its writes do. (Closing right after the
        header can lose it: the source's write of RAM_BLOCKS fails before
        its return-path thread exists; that race is not tested here.)"""
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=16M")
        text = "fake refusal: RAM block 0 is the wrong shape"
        fake = self.fake_destination(source, answer_after_blocks=rp_error_record(-22, text),
                                     close_after_answer=True)
        source.qmp.command("migrate", uri=fake.uri)
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        self.assertIn("the destination failed: " + text, info["error-desc"])
        self.assertLessEqual(self.check_running_guest(source, high=16 * MiB), 1)
        self.quit_cleanly(source)

    def test_garbage_on_the_return_path(self):
        """The destination answers with a record the source cannot accept
        and keeps the connection open. The source must fail (it never got
        RP_READY) and say what was wrong, not that the connection closed."""
        for name, answer, phrase in (
                ("unknown", stream_record(0x999, b"what"), "0x999"),
                ("bad-crc", stream_record(REC_RP_ERROR, b"\xfb\xff\xff\xffoops", crc=5), "CRC")):
            source = self.start_source(memory="32M", append="mode=dirty start=1M end=2M")
            fake = self.fake_destination(source, name=f"{name}.sock", answer_after_header=answer)
            source.qmp.command("migrate", uri=fake.uri)
            info = wait_migration(source.qmp, ("failed",), timeout=30)
            self.assertNotIn(REC_GO, fake.types)
            self.assertLessEqual(self.check_running_guest(source, high=2 * MiB), 1)
            self.quit_cleanly(source)
            self.assertIn(phrase, info["error-desc"], name)
            self.assertNotIn("closed the connection", info["error-desc"], name)

    def test_destination_killed_in_first_pass(self):
        shm = self.shm_path("kill-dst")
        source = self.start_source(memory="256M", append="mode=idle", extra=("--mem-path", shm))
        content = self.fill_random(shm, 254 * MiB, seed=6)
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(uri, memory="256M")
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 50 * 1000 * 1000})
        source.qmp.command("migrate", uri=uri)
        info = self.wait_transferred(source, 16 * MiB)
        self.assertEqual(info["ram"]["dirty-sync-count"], 1, "the first pass already ended")
        destination.process.kill()
        info = wait_migration(source.qmp, ("failed",), timeout=10)
        self.assertIn("writing to " + uri, info["error-desc"])
        self.assertEqual(source.qmp.command("query-status")["status"], "running")
        self.check_idle_guest_runs(source)
        self.assert_ram_unchanged(shm, content)
        self.quit_cleanly(source)

    def test_destination_killed_in_switchover(self):
        """A real destination, SIGSTOPped before the migration: the whole
        stream of a small guest fits in the socket buffer, so the source
        reaches 'device' and waits there for RP_READY. Then kill -9."""
        source = self.start_source(memory="32M", append="mode=dirty start=1M end=1056K")
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(uri, memory="32M")
        # Passes of 8 pages say nothing about bandwidth: give one, so the
        # estimate fits the downtime limit after the first pass.
        source.qmp.command("migrate-set-parameters",
                           **{"avail-switchover-bandwidth": 1 << 30})
        os.kill(destination.process.pid, signal.SIGSTOP)
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("device",), timeout=20)
        self.assertEqual(source.qmp.command("query-status")["status"], "finish-migrate")
        time.sleep(0.2)
        self.assertEqual(source.qmp.command("query-migrate")["status"], "device")
        destination.process.kill()
        info = wait_migration(source.qmp, ("failed",), timeout=10)
        self.assertIn("the destination closed the connection", info["error-desc"])
        self.assertLessEqual(self.check_running_guest(source, high=1056 * 1024), 1)
        self.quit_cleanly(source)
        destination.process.communicate(timeout=10)
        self.assertEqual(destination.process.returncode, -signal.SIGKILL)
        self.assertEqual(destination.serial.text(), "")


class SourceFaults(FaultTestCase):
    def test_source_killed_in_first_pass(self):
        shm = self.shm_path("kill-src")
        source = self.start_source(memory="128M", append="mode=dirty start=120M end=127M",
                                   extra=("--mem-path", shm))
        self.fill_random(shm, 100 * MiB, seed=8)
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(uri)
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 50 * 1000 * 1000})
        source.qmp.command("migrate", uri=uri)
        seen = set()
        deadline = time.monotonic() + 30
        while True:
            seen.add(destination.qmp.command("query-status")["status"])
            info = source.qmp.command("query-migrate")
            if info.get("ram", {}).get("transferred", 0) >= 8 * MiB:
                break
            self.assertLess(time.monotonic(), deadline, info)
            time.sleep(0.01)
        self.assertEqual(info["status"], "active")
        self.assertEqual(info["ram"]["dirty-sync-count"], 1, "the first pass already ended")
        source.process.kill()
        err = self.check_destination_gave_up(destination, ("the stream ended at offset",
                                                           "the sender stopped"))
        self.assertEqual(seen, {"inmigrate"}, err)


_SAVED = {}


def saved_idle_stream():
    """A 32 MiB idle guest migrated to a file, made once per run: (the
    stream, its guest-physical [0, 4M) when saved). The same bytes a socket
    carries up to END."""
    if not _SAVED:
        vm = Vm(memory="32M", append="mode=idle")
        try:
            vm.connect()
            vm.serial.wait_count("A", 1, process=vm.process)
            path = vm.path("good.mig")
            vm.qmp.command("migrate", uri=f"file:{path}")
            info = wait_migration(vm.qmp, timeout=30)
            if info["status"] != "completed":
                raise AssertionError(f"saving the good stream: {info}")
            with open(path, "rb") as f:
                _SAVED["stream"] = f.read()
            _SAVED["low"] = vm.read_memory(0, 4 * MiB)
        finally:
            vm.close()
    return _SAVED["stream"], _SAVED["low"]


class SavedStreamTestCase(FaultTestCase):
    def setUp(self):
        super().setUp()
        self.good, self.saved_low = saved_idle_stream()
        self.records = parse_stream(self.good)

    def check_idle_guest_as_saved(self, destination):
        """Loaded and running: the guest's image, stack and boot information
        arrived as saved (the idle guest halts: it writes nothing until the
        NMI), and it answers an NMI."""
        info = wait_migration(destination.qmp, ("completed",), timeout=20)
        self.assertEqual(info["status"], "completed")
        self.assertEqual(destination.qmp.command("query-status")["status"], "running")
        restored = destination.read_memory(0, 4 * MiB)
        if restored != self.saved_low:
            differ = [i for i in range(0, len(restored), 4096)
                      if restored[i:i + 4096] != self.saved_low[i:i + 4096]]
            self.fail(f"pages differ after loading: {[hex(i) for i in differ[:16]]}")
        self.check_idle_guest_runs(destination)
        self.quit_cleanly(destination)


class FakeSource(SavedStreamTestCase):
    """A real destination fed by the test over its unix socket: the saved
    stream, then the handshake played to the point of each failure. This is
    "the source dies" made deterministic."""

    def connect_to(self, destination, uri):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.settimeout(20)
        sock.connect(uri[len("unix:"):])
        return sock

    def read_answer(self, sock):
        """One return-path record: (type, body)."""
        def exact(size):
            data = b""
            while len(data) < size:
                chunk = sock.recv(size - len(data))
                if not chunk:
                    raise EOFError(f"the destination closed after {len(data)} of {size} bytes")
                data += chunk
            return data
        head = exact(RECORD_HEADER_SIZE)
        rtype = int.from_bytes(head[0:4], "little")
        length = int.from_bytes(head[4:8], "little")
        body = exact(length + (-length % 8))[:length]
        self.assertEqual(int.from_bytes(head[8:12], "little"), crc32c(body, crc32c(head[:8])),
                         "the answer's CRC")
        return rtype, body

    def start_vm_dir(self):
        directory = tempfile.mkdtemp(prefix="godwit-test-src-")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def test_source_gone_after_ready_before_go(self):
        uri = f"unix:{self.start_vm_dir()}/in.sock"
        destination = self.start_destination(uri, memory="32M")
        sock = self.connect_to(destination, uri)
        sock.sendall(self.good)
        self.assertEqual(self.read_answer(sock), (REC_RP_READY, b""))
        self.assertEqual(destination.qmp.command("query-status")["status"], "inmigrate")
        sock.close()   # no GO: the guest stays the source's
        self.check_destination_gave_up(destination, ("GO", "the stream ended"))

    def test_source_gone_right_after_go(self):
        uri = f"unix:{self.start_vm_dir()}/in.sock"
        destination = self.start_destination(uri, memory="32M")
        sock = self.connect_to(destination, uri)
        sock.sendall(self.good)
        self.assertEqual(self.read_answer(sock), (REC_RP_READY, b""))
        sock.sendall(stream_record(REC_GO))
        sock.close()   # GO arrived: the guest is the destination's now
        self.check_idle_guest_as_saved(destination)

    def test_destination_answers_corruption_with_rp_error(self):
        uri = f"unix:{self.start_vm_dir()}/in.sock"
        destination = self.start_destination(uri, memory="32M")
        pages = next(r for r in self.records if r["type"] == REC_PAGES)
        data = bytearray(self.good)
        data[pages["body_offset"] + 8] ^= 0x01   # the first page index: record CRC
        sock = self.connect_to(destination, uri)
        sock.sendall(bytes(data))
        rtype, body = self.read_answer(sock)
        self.assertEqual(rtype, REC_RP_ERROR)
        errno_value = int.from_bytes(body[:4], "little", signed=True)
        self.assertLess(errno_value, 0)
        text = body[4:].decode()
        self.assertIn("PAGES", text)
        self.assertIn("CRC", text)
        self.assertIn(f"stream offset {pages['offset']}", text)
        sock.close()
        err = self.check_destination_gave_up(destination)
        self.assertIn(text, err)


class BadFileStreams(SavedStreamTestCase):
    """The saved stream, damaged, loaded with --incoming file:PATH."""

    def record_of(self, rtype):
        return next(r for r in self.records if r["type"] == rtype)

    def load(self, data, name="stream.mig"):
        directory = tempfile.mkdtemp(prefix="godwit-test-stream-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return self.start_vm(memory="32M", extra=("--incoming", f"file:{path}"))

    def load_bad(self, data, *phrases):
        destination = self.load(data)
        return self.check_destination_gave_up(destination, phrases)

    def check_loads_and_runs(self, data):
        destination = self.load(data)
        deadline = time.monotonic() + 20
        while not os.path.exists(destination.qmp_path):
            if destination.process.poll() is not None:
                self.fail(f"the destination exited with status {destination.process.returncode}"
                          f": {destination.process.communicate()[1]}")
            self.assertLess(time.monotonic(), deadline, "no QMP socket")
            time.sleep(0.01)
        destination.connect()
        self.check_idle_guest_as_saved(destination)

    def test_crc32c_of_the_check_string(self):
        self.assertEqual(crc32c(b"123456789"), 0xE3069283)
        # The stream header carries the CRC32C of its first 20 bytes.
        self.assertEqual(crc32c(self.good[:20]), int.from_bytes(self.good[20:24], "little"))

    def test_good_file_loads_and_runs(self):
        self.assertEqual(self.records[-1]["type"], REC_END)
        self.check_loads_and_runs(self.good)

    def test_truncated(self):
        pages = self.record_of(REC_PAGES)
        end = self.record_of(REC_END)
        for cut in (0, 10, STREAM_HEADER_SIZE + 5, pages["body_offset"] + 4,
                    pages["body_offset"] + pages["length"] - 1000, end["offset"],
                    end["body_offset"] + 8):
            err = self.load_bad(self.good[:cut])
            self.assertIn("the stream ended", err, f"cut at {cut}")
            self.assertIn("offset", err, f"cut at {cut}")

    def test_truncation_names_record_type_and_offset(self):
        """docs/stream.md: every error names the record type and the stream
        offset where the record started. Cut inside a record's body, the
        message must say which record and where it began."""
        blocks = self.records[0]
        pages = self.record_of(REC_PAGES)
        end = self.record_of(REC_END)
        wrong = []
        for record, name, cut in ((blocks, "RAM_BLOCKS", blocks["body_offset"] + 4),
                                  (pages, "PAGES", pages["body_offset"] + 4),
                                  (pages, "PAGES", pages["body_offset"] + pages["length"] - 1000),
                                  (end, "END", end["body_offset"] + 8)):
            err = self.load_bad(self.good[:cut], "the stream ended")
            if name not in err or f"offset {record['offset']}" not in err:
                wrong.append(f"cut at {cut} in {name} at {record['offset']}: {err.strip()}")
        self.assertEqual(wrong, [])

    def test_bit_flip_in_pages_metadata(self):
        pages = self.record_of(REC_PAGES)
        data = bytearray(self.good)
        data[pages["body_offset"] + 8] ^= 0x01   # the first page index
        self.load_bad(bytes(data), "PAGES", "CRC", f"stream offset {pages['offset']}")

    def test_bit_flip_in_page_data(self):
        # The pages come last in the body. A torn page is legal while the
        # guest runs; one that is never sent again is corruption.
        pages = self.record_of(REC_PAGES)
        data = bytearray(self.good)
        data[pages["body_offset"] + pages["length"] - 100] ^= 0x10
        err = self.load_bad(bytes(data), "PAGES", f"stream offset {pages['offset']}",
                            "corrupt")
        self.assertTrue("CRC" in err or "checksum" in err, err)

    def test_wrong_magic(self):
        self.load_bad(b"QEVM" + self.good[4:], "not a godwit migration stream")

    def test_unknown_mandatory_record(self):
        data = (self.good[:STREAM_HEADER_SIZE] + stream_record(0x55, b"from the future") +
                self.good[STREAM_HEADER_SIZE:])
        self.load_bad(data, "unknown mandatory record type 0x55",
                      f"stream offset {STREAM_HEADER_SIZE}")

    def test_unknown_optional_record_is_skipped(self):
        data = (self.good[:STREAM_HEADER_SIZE] + stream_record(0x80000055, b"from the future") +
                self.good[STREAM_HEADER_SIZE:])
        self.check_loads_and_runs(data)

    def test_unknown_optional_record_with_bad_crc(self):
        # "read, checked and skipped": checked, so a bad CRC still fails.
        data = (self.good[:STREAM_HEADER_SIZE] +
                stream_record(0x80000055, b"from the future", crc=0x12345678) +
                self.good[STREAM_HEADER_SIZE:])
        self.load_bad(data, "CRC", f"stream offset {STREAM_HEADER_SIZE}")


if __name__ == "__main__":
    tap.main()

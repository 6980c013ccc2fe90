"""What a real QMP client (QEMU's python qemu.qmp, driven the way libvirt
drives a migration) asks of godwit-vm beyond the basics: query-version,
query-name, query-cpus-fast, libvirt's "unlimited" bandwidth, descriptors
passed with getfd and used as fd:NAME, pause-before-switchover with
migrate-continue, and the query-migrate and event details QEMU has. Every
migration checks the guest's memory on the side that ends up running."""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import (GODWIT_VM, TESTGUEST, MigrationTestCase, Qmp, QmpError,  # noqa: E402
                       wait_migration)

MiB = 1 << 20
SMALL = "mode=dirty start=1M end=8M"
LIBVIRT_UNLIMITED = 9223372036853727232     # libvirt's default max-bandwidth
INT64_MAX = (1 << 63) - 1


class QmpClientTestCase(MigrationTestCase):
    def small_source(self, extra=()):
        return self.start_source(memory="32M", append=SMALL, extra=extra)

    def small_destination(self, incoming="defer"):
        return self.start_destination(incoming, memory="32M")

    def check_arrived(self, source, destination):
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertLessEqual(self.check_running_guest(destination, high=8 * MiB,
                                                      earlier=(source,)), 1)

    def check_stayed(self, source):
        self.assertEqual(source.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(source, high=8 * MiB), 1)

    def events_until(self, qmp, status, timeout=30.0):
        """Every event up to the MIGRATION event with status, in order."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            qmp.sock.settimeout(max(0.1, deadline - time.monotonic()))
            message = qmp.events.pop(0) if qmp.events else qmp.read_message()
            if "event" not in message:
                continue
            seen.append(message)
            if message["event"] == "MIGRATION" and message["data"]["status"] == status:
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"no MIGRATION {status} within {timeout}s: {seen}")


class Identity(QmpClientTestCase):
    def test_query_version_is_godwits_in_qemus_shape(self):
        vm = self.start_vm(memory="16M", append="mode=idle")
        qmp = vm.connect()
        version = qmp.command("query-version")
        self.assertEqual(set(version), {"qemu", "package"})
        self.assertEqual(set(version["qemu"]), {"major", "minor", "micro"})
        printed = subprocess.run([GODWIT_VM, "--version"], capture_output=True,
                                 text=True).stdout.split()[1]
        self.assertEqual("%d.%d.%d" % (version["qemu"]["major"], version["qemu"]["minor"],
                                       version["qemu"]["micro"]), printed)
        self.assertIn(printed, version["package"])
        self.assertEqual(qmp.greeting["QMP"]["version"], version)
        names = {c["name"] for c in qmp.command("query-commands")}
        for name in ("query-version", "query-name", "query-cpus-fast", "getfd", "closefd",
                     "migrate-continue"):
            self.assertIn(name, names)

    def test_query_name(self):
        named = self.start_vm(memory="16M", append="mode=idle", extra=("--name", "guest one"))
        self.assertEqual(named.connect().command("query-name"), {"name": "guest one"})
        unnamed = self.start_vm(memory="16M", append="mode=idle")
        self.assertEqual(unnamed.connect().command("query-name"), {})
        for bad, phrase in (("", "1 to 255"), ("a\nb", "control character"),
                            ("x" * 256, "1 to 255")):
            result = subprocess.run([GODWIT_VM, "--kernel", TESTGUEST, "--name", bad],
                                    capture_output=True, text=True, timeout=30)
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertIn(phrase, result.stderr)

    def test_query_cpus_fast(self):
        vm = self.start_vm(memory="16M", append="mode=idle")
        vm.serial.wait_count("A", 1, process=vm.process)
        cpus = vm.connect().command("query-cpus-fast")
        self.assertEqual(len(cpus), 1)
        cpu = cpus[0]
        self.assertEqual(cpu["cpu-index"], 0)
        self.assertEqual(cpu["target"], "x86_64")
        self.assertEqual(cpu["qom-path"], "/machine/unattached/device[0]")
        self.assertEqual(cpu["props"], {"core-id": 0, "thread-id": 0, "socket-id": 0})
        # The thread that runs the guest, one of the VM process's own.
        self.assertNotEqual(cpu["thread-id"], vm.process.pid)
        self.assertTrue(os.path.exists(f"/proc/{vm.process.pid}/task/{cpu['thread-id']}"))


class Bandwidth(QmpClientTestCase):
    def test_libvirt_unlimited_is_accepted_and_migrates_unthrottled(self):
        source = self.small_source()
        qmp = source.qmp
        for value in (LIBVIRT_UNLIMITED, INT64_MAX, 0):
            for name in ("max-bandwidth", "avail-switchover-bandwidth"):
                qmp.command("migrate-set-parameters", **{name: value})
                self.assertEqual(qmp.command("query-migrate-parameters")[name], value)
        with self.assertRaises(QmpError) as caught:
            qmp.command("migrate-set-parameters", **{"max-bandwidth": -1})
        self.assertIn("0 to 9223372036854775807", caught.exception.desc)
        # QEMU takes up to 2^64 - 1; here a JSON integer ends at 2^63 - 1, and
        # a larger one is a parse error that leaves the connection usable.
        qmp.send_raw('{"execute": "migrate-set-parameters", '
                     '"arguments": {"max-bandwidth": 18446744073709551615}}\n')
        self.assertIn("JSON parse error", qmp.read_reply()["error"]["desc"])
        # HMP: a bare number is MiB/s.
        qmp.hmp("migrate_set_parameter max-bandwidth 8796093022207")
        self.assertEqual(qmp.command("query-migrate-parameters")["max-bandwidth"],
                         8796093022207 * MiB)
        self.assertIn("at most 9223372036854775807",
                      qmp.hmp("migrate_set_parameter max-bandwidth 8796093022208"))
        qmp.command("migrate-set-parameters", **{"max-bandwidth": LIBVIRT_UNLIMITED})
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.small_destination(uri)
        started = time.monotonic()
        qmp.command("migrate", uri=uri)
        info = wait_migration(qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertLess(time.monotonic() - started, 30)
        self.check_arrived(source, destination)


class PassedDescriptors(QmpClientTestCase):
    def test_getfd_and_closefd_errors_are_qemus(self):
        vm = self.start_vm(memory="16M", append="mode=idle")
        qmp = vm.connect()
        reply = qmp.execute("getfd", fdname="mig")
        self.assertEqual(reply["error"]["desc"], "No file descriptor supplied via SCM_RIGHTS")
        reply = qmp.execute("closefd", fdname="mig")
        self.assertEqual(reply["error"]["desc"], "File descriptor named 'mig' not found")
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        with theirs:
            with self.assertRaises(QmpError) as caught:
                qmp.getfd("0mig", theirs.fileno())
        self.assertIn("not starting with a digit", caught.exception.desc)
        # A refused name used the descriptor up: the VM closed its copy.
        mine.settimeout(5)
        self.assertEqual(mine.recv(1), b"")
        reply = qmp.execute("getfd", fdname="mig")
        self.assertIn("No file descriptor", reply["error"]["desc"])
        # closefd closes it in the VM; the name is gone afterwards.
        mine2, theirs2 = socket.socketpair()
        self.addCleanup(mine2.close)
        with theirs2:
            qmp.getfd("mig", theirs2.fileno(), attached=False)
        mine2.settimeout(0.3)
        with self.assertRaises(socket.timeout):
            mine2.recv(1)   # the VM holds the other end open
        self.assertEqual(qmp.command("closefd", fdname="mig"), {})
        mine2.settimeout(5)
        self.assertEqual(mine2.recv(1), b"")
        reply = qmp.execute("closefd", fdname="mig")
        self.assertIn("not found", reply["error"]["desc"])
        reply = qmp.execute("migrate", uri="fd:nope")
        self.assertEqual(reply["error"]["desc"], "File descriptor named 'nope' not found")
        self.assertEqual(qmp.command("query-migrate"), {})
        self.assertEqual(qmp.command("query-status")["status"], "running")

    def test_getfd_then_migrate_fd_name_on_both_sides(self):
        source = self.small_source()
        destination = self.small_destination()
        source_end, destination_end = socket.socketpair()
        with source_end, destination_end:
            # libvirt's way: the descriptor rides on the getfd request; and
            # from a client that leaves: the name belongs to the monitor.
            passer = Qmp(source.qmp_path)
            passer.getfd("migrate", source_end.fileno())
            passer.close()
            # qemu.qmp's way: the descriptor first, then the request.
            destination.qmp.getfd("incoming", destination_end.fileno(), attached=False)
        destination.qmp.command("migrate-incoming", uri="fd:incoming")
        source.qmp.command("migrate", uri="fd:migrate")
        info = wait_migration(source.qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.check_arrived(source, destination)
        # Used up by the migration, on both sides.
        for vm, name in ((source, "migrate"), (destination, "incoming")):
            reply = vm.qmp.execute("closefd", fdname=name)
            self.assertIn("not found", reply["error"]["desc"])

    def test_refused_migrate_leaves_the_named_descriptor(self):
        source = self.small_source()
        source.qmp.command("migrate-set-capabilities",
                           capabilities=[{"capability": "multifd", "state": True}])
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        with theirs:
            source.qmp.getfd("migrate", theirs.fileno())
        with self.assertRaises(QmpError) as caught:
            source.qmp.command("migrate", uri="fd:migrate")
        self.assertIn("multifd needs a tcp: or unix: URI", caught.exception.desc)
        self.assertEqual(source.qmp.command("closefd", fdname="migrate"), {})
        self.check_stayed(source)


class PauseBeforeSwitchover(QmpClientTestCase):
    def start_paused_migration(self):
        source = self.small_source()
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.small_destination(uri)
        qmp = source.qmp
        qmp.command("migrate-set-capabilities", capabilities=[
            {"capability": "events", "state": True},
            {"capability": "pause-before-switchover", "state": True}])
        caps = {c["capability"]: c["state"] for c in qmp.command("query-migrate-capabilities")}
        self.assertTrue(caps["pause-before-switchover"])
        self.assertIn("pause-before-switchover: on", qmp.hmp("info migrate_capabilities"))
        reply = qmp.execute("migrate-continue", state="pre-switchover")
        self.assertEqual(reply["error"]["desc"], "Migration not in expected state: none")
        qmp.command("migrate", uri=uri)
        events = self.events_until(qmp, "pre-switchover")
        return source, destination, events

    def test_pause_then_continue(self):
        source, destination, events = self.start_paused_migration()
        qmp = source.qmp
        names = [e["event"] for e in events]
        self.assertIn("STOP", names)
        statuses = [e["data"]["status"] for e in events if e["event"] == "MIGRATION"]
        self.assertEqual(statuses[0], "setup")
        self.assertEqual(statuses[-2:], ["active", "pre-switchover"])
        # Stopped, and it stays stopped while the migration waits.
        time.sleep(0.3)
        self.assertEqual(qmp.command("query-status")["status"], "finish-migrate")
        info = qmp.command("query-migrate")
        self.assertEqual(info["status"], "pre-switchover")
        self.assertIn("expected-downtime", info)
        self.assertEqual(destination.qmp.command("query-status")["status"], "inmigrate")
        reply = qmp.execute("migrate-continue", state="active")
        self.assertEqual(reply["error"]["desc"],
                         "Migration not in expected state: pre-switchover")
        reply = qmp.execute("migrate-continue", state="bogus")
        self.assertEqual(reply["error"]["desc"], "Parameter 'state' does not accept value 'bogus'")
        qmp.command("migrate-continue", state="pre-switchover")
        events += self.events_until(qmp, "completed")
        statuses = [e["data"]["status"] for e in events if e["event"] == "MIGRATION"]
        self.assertEqual(statuses[-3:], ["pre-switchover", "device", "completed"])
        info = wait_migration(qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        # QEMU's MIGRATION_PASS: one per dirty sync, the final one (with the
        # guest stopped) too, numbered as dirty-sync-count counts.
        names = [e["event"] for e in events]
        passes = [e["data"]["pass"] for e in events if e["event"] == "MIGRATION_PASS"]
        self.assertGreater(len(names) - 1 - names[::-1].index("MIGRATION_PASS"),
                           names.index("STOP"))
        self.assertEqual(passes, list(range(1, len(passes) + 1)))
        self.assertEqual(passes[-1], info["ram"]["dirty-sync-count"])
        self.check_arrived(source, destination)

    def test_cancel_in_pre_switchover_resumes_the_source(self):
        source, destination, _ = self.start_paused_migration()
        source.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("cancelled",))
        self.assertEqual(info["status"], "cancelled")
        self.check_stayed(source)
        status, _, err = destination.wait_exit(timeout=15)
        self.assertNotEqual(status, 0)
        self.assertIn("incoming migration failed", err)


class QueryMigrate(QmpClientTestCase):
    def test_page_size_and_first_expected_downtime(self):
        source = self.small_source()
        qmp = source.qmp
        # Slow enough that the first pass is still running when asked.
        qmp.command("migrate-set-parameters", **{"downtime-limit": 1234,
                                                 "max-bandwidth": 1 * MiB})
        uri = f"unix:{source.path('migrate.sock')}"
        self.small_destination(uri)
        qmp.command("migrate", uri=uri)
        info = wait_migration(qmp, ("active",))
        self.assertEqual(info["ram"]["dirty-sync-count"], 1, info)
        self.assertEqual(info["expected-downtime"], 1234)
        self.assertEqual(info["ram"]["page-size"], 4096)
        qmp.command("migrate_cancel")
        wait_migration(qmp, ("cancelled",))
        self.check_stayed(source)


if __name__ == "__main__":
    tap.main()

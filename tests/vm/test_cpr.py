"""The local update (mode cpr-transfer, issue 16): the guest moves to a new
godwit-vm process on this host and its RAM stays where it is, the memory's
descriptors passed on the cpr channel. Every test checks guest memory on the
process that ends up running; the old one must hold no guest RAM after the
switch, and a failure before it leaves the old one running, intact."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import (DIRTY, PAGE_SIZE, MigrationTestCase, QmpError,  # noqa: E402
                       wait_migration)

MiB = 1 << 20
GiB = 1 << 30
MEMFD_NAME = "memfd:godwit-guest-ram"
GODWIT = os.environ.get("GODWIT", "build/tools/godwit")


def channel(kind, path):
    return {"channel-type": kind, "addr": {"transport": "socket", "type": "unix", "path": path}}


def guest_ram_mapped(pid, needle):
    """Whether /proc/PID/maps still maps a file whose name holds needle."""
    with open(f"/proc/{pid}/maps") as f:
        return any(needle in line for line in f)


def resident_kib(pid, needle):
    """Rss of pid's mappings of a file whose name holds needle, in KiB."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0]:
                inside = needle in line
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def host_pattern(offset):
    """What the host writes at a page: 4 KiB that name their own offset."""
    return hashlib.sha256(offset.to_bytes(8, "little")).digest() * (PAGE_SIZE // 32)


class LocalUpdate(MigrationTestCase):
    def shm_path(self, name):
        path = f"/dev/shm/godwit-test-cpr-{name}-{os.getpid()}-{time.monotonic_ns()}"
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        return path

    def start_new_process(self, source, memory="128M", extra=()):
        """The new godwit-vm: its cpr channel, then its main channel. Its
        monitor answers once it has the RAM, so it is not connected here."""
        cpr = source.path("cpr.sock")
        main = source.path("main.sock")
        new = self.start_vm(memory=memory, extra=(
            "--incoming", json.dumps(channel("cpr", cpr)),
            "--incoming", f"unix:{main}", *extra))
        deadline = time.monotonic() + 10
        while not os.path.exists(cpr):
            self.assertIsNone(new.process.poll(), "the new process exited before listening")
            self.assertLess(time.monotonic(), deadline, "no cpr socket within 10 s")
            time.sleep(0.01)
        new.cpr, new.main = cpr, main
        return new

    def local_update(self, source, new, wait=True):
        source.qmp.command("migrate-set-parameters", mode="cpr-transfer")
        source.qmp.command("migrate", channels=[channel("main", new.main),
                                                channel("cpr", new.cpr)])
        return wait_migration(source.qmp) if wait else None

    def check_old_process_let_go(self, source, needle):
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertFalse(guest_ram_mapped(source.process.pid, needle),
                         f"the old process still maps {needle}")
        with self.assertRaises(QmpError) as refused:
            source.read_memory(0, PAGE_SIZE)
        self.assertIn("local update", refused.exception.desc)

    def test_dirty_guest_moves_to_new_process_with_its_pages(self):
        source = self.start_source(extra=("--memfd",))
        self.assertTrue(guest_ram_mapped(source.process.pid, MEMFD_NAME))
        source.serial.wait_count("B", 2, process=source.process)
        new = self.start_new_process(source)
        info = self.local_update(source, new)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        # Not a page crossed the socket: the RAM stayed where it was.
        self.assertEqual(info["ram"]["normal"], 0)
        self.assertEqual(info["ram"]["duplicate"], 0)
        self.assertGreaterEqual(info["downtime"], 0)
        new.connect()
        self.assertEqual(new.qmp.command("query-status")["status"], "running")
        self.assertTrue(guest_ram_mapped(new.process.pid, MEMFD_NAME))
        self.assertLessEqual(self.check_running_guest(new, earlier=(source,), resume=True), 1)
        self.check_old_process_let_go(source, MEMFD_NAME)

    def test_host_filled_1g_guest_same_pages_byte_exact(self):
        """1 GiB in /dev/shm, sparse: pages the host wrote (a 16 MiB run and
        a page every 8 MiB) and holes. The new process reads them all byte
        for byte, and a host write made after the switch through the file
        shows in its guest: the same physical pages, not a copy."""
        shm = self.shm_path("1g")
        source = self.start_source(memory="1G", append="mode=idle",
                                   extra=("--mem-path", shm))
        written = list(range(64 * MiB, 80 * MiB, PAGE_SIZE)) + \
            list(range(96 * MiB, GiB, 8 * MiB))
        with open(shm, "r+b") as f:
            for offset in written:
                f.seek(offset)
                f.write(host_pattern(offset))
        new = self.start_new_process(source, memory="1G")
        info = self.local_update(source, new)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        new.connect()
        self.assertEqual(new.qmp.command("query-status")["status"], "running")
        # No prefault, no copy: of the 1 GiB mapped (16.5 MiB of it the
        # host wrote, all resident in the file), the new process has touched
        # only what its idle guest and KVM did, not the RAM it was given.
        resident = resident_kib(new.process.pid, shm)
        self.assertLess(resident, 16 * 1024, f"{resident} KiB resident")
        print(f"# resident in the new process right after the switch: {resident} KiB")
        wanted = set(written)
        chunk = 64 * MiB
        for base in range(64 * MiB, GiB, chunk):
            data = new.read_memory(base, chunk)
            for page in range(0, chunk, PAGE_SIZE):
                expected = host_pattern(base + page) if base + page in wanted else None
                got = data[page:page + PAGE_SIZE]
                if expected is None:
                    self.assertEqual(got.count(0), PAGE_SIZE, f"page at {base + page:#x}")
                else:
                    self.assertEqual(got, expected, f"page at {base + page:#x}")
        late = b"written by the host after the switch"
        with open(shm, "r+b") as f:
            f.seek(900 * MiB + 123)
            f.write(late)
        self.assertEqual(new.read_memory(900 * MiB + 123, len(late)), late)
        self.check_old_process_let_go(source, shm)

    def test_updated_process_updates_again(self):
        """The new process holds the descriptors it was given, so it can hand
        the same RAM on to a third: a VMM upgraded twice."""
        source = self.start_source(extra=("--memfd",))
        second = self.start_new_process(source)
        self.assertEqual(self.local_update(source, second)["status"], "completed")
        second.connect()
        second.serial.wait_count("B", 1, process=second.process)   # it ran there
        third = self.start_new_process(second)
        info = self.local_update(second, third)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        third.connect()
        self.assertLessEqual(self.check_running_guest(third, earlier=(source, second)), 1)
        self.check_old_process_let_go(second, MEMFD_NAME)

    def test_godwit_migrate_local_drives_it(self):
        source = self.start_source(extra=("--memfd",))
        new = self.start_new_process(source)
        result = subprocess.run([GODWIT, "migrate", "--from", f"unix:{source.qmp_path}",
                                 "--to", f"unix:{new.main}", "--local", f"unix:{new.cpr}",
                                 "--json"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        self.assertEqual(report["result"], "completed", report)
        self.assertEqual(report["query-migrate"]["ram"]["normal"], 0)
        self.assertEqual(source.qmp.command("query-migrate-parameters")["mode"], "cpr-transfer")
        new.connect()
        self.assertLessEqual(self.check_running_guest(new, earlier=(source,)), 1)
        self.check_old_process_let_go(source, MEMFD_NAME)
        refused = subprocess.run([GODWIT, "migrate", "--from", f"unix:{source.qmp_path}",
                                  "--to", "tcp:127.0.0.1:4444", "--local", f"unix:{new.cpr}"],
                                 capture_output=True, text=True, timeout=30)
        self.assertEqual(refused.returncode, 2)
        self.assertIn("--to", refused.stderr)

    def test_new_process_killed_before_switch_leaves_old_running(self):
        source = self.start_source(extra=("--memfd",))
        source.qmp.command("migrate-set-capabilities", capabilities=[
            {"capability": "pause-before-switchover", "state": True}])
        new = self.start_new_process(source)
        self.local_update(source, new, wait=False)
        wait_migration(source.qmp, ("pre-switchover",))
        new.process.send_signal(signal.SIGKILL)
        new.process.wait()
        info = wait_migration(source.qmp, ("failed",))
        self.assertIn("destination", info.get("error-desc", ""))
        self.assertTrue(guest_ram_mapped(source.process.pid, MEMFD_NAME))
        self.check_running_guest(source)

    def test_new_process_killed_while_waiting_for_memory(self):
        """Killed before the cpr channel said anything: the old process
        reads the end of the channel, says so, and runs on."""
        source = self.start_source(extra=("--memfd",))
        new = self.start_new_process(source)
        new.process.send_signal(signal.SIGKILL)
        new.process.wait()
        source.qmp.command("migrate-set-parameters", mode="cpr-transfer")
        try:
            source.qmp.command("migrate", channels=[channel("main", new.main),
                                                    channel("cpr", new.cpr)])
            info = wait_migration(source.qmp, ("failed",))
            self.assertIn("cpr channel", info.get("error-desc", ""))
        except QmpError as refused:
            self.assertIn("cpr channel", refused.desc)
        self.check_running_guest(source)

    def test_mismatched_memory_size_refused_naming_both(self):
        source = self.start_source(extra=("--memfd",))
        new = self.start_new_process(source, memory="64M")
        self.local_update(source, new, wait=False)
        info = wait_migration(source.qmp, ("failed",))
        desc = info.get("error-desc", "")
        self.assertIn("128 MiB", desc)
        self.assertIn("64 MiB", desc)
        self.assertIn("--memory", desc)
        status, _, err = new.wait_exit()
        self.assertNotEqual(status, 0)
        self.assertIn("128 MiB", err)
        self.check_running_guest(source)

    def test_refusals_with_sentences(self):
        source = self.start_source(extra=("--memfd",))
        cpr = channel("cpr", source.path("cpr.sock"))
        tcp = {"channel-type": "main", "addr": {"transport": "socket", "type": "inet",
                                                  "host": "127.0.0.1", "port": "4444"}}
        source.qmp.command("migrate-set-parameters", mode="cpr-transfer")
        self.assertEqual(source.qmp.command("query-migrate-parameters")["mode"], "cpr-transfer")
        cases = [
            ({"channels": [tcp, cpr]}, "not tcp:127.0.0.1:4444"),
            ({"uri": "tcp:127.0.0.1:4444"}, "not tcp:127.0.0.1:4444"),
            ({"uri": f"unix:{source.path('main.sock')}"}, "needs a cpr channel"),
            ({"channels": [channel("main", source.path("m")),
                           {"channel-type": "cpr", "addr": tcp["addr"]}]}, "unix socket"),
            ({"channels": [cpr]}, "no main channel"),
            ({}, "either 'uri' or 'channels'"),
        ]
        for arguments, sentence in cases:
            reply = source.qmp.execute("migrate", **arguments)
            self.assertIn("error", reply, arguments)
            self.assertIn(sentence, reply["error"]["desc"], arguments)
        reply = source.qmp.execute("migrate-set-parameters", mode="cpr")
        self.assertIn("'normal', 'cpr-transfer'", reply["error"]["desc"])
        source.qmp.command("migrate-set-parameters", mode="normal")
        reply = source.qmp.execute("migrate", channels=[channel("main", source.path("m")), cpr])
        self.assertIn("mode cpr-transfer", reply["error"]["desc"])
        self.check_running_guest(source)

    def test_private_anonymous_ram_refused_naming_the_fix(self):
        source = self.start_source()
        source.qmp.command("migrate-set-parameters", mode="cpr-transfer")
        reply = source.qmp.execute("migrate", channels=[
            channel("main", source.path("m")), channel("cpr", source.path("c"))])
        self.assertIn("private anonymous", reply["error"]["desc"])
        self.assertIn("--memfd", reply["error"]["desc"])
        self.check_running_guest(source)


if __name__ == "__main__":
    tap.main()

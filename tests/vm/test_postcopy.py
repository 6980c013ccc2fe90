"""Postcopy (docs/stream.md, "Postcopy"; docs/qmp.md): the guest runs on the
destination before its RAM has all arrived, and pulls the pages it touches.
Every test checks guest memory where the guest ends up running: the dirty
guest's increment rule and pass count (its passes on both hosts), and bytes
written by the host into a --mem-path file, word for word."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from channel_proxy import ChannelProxy  # noqa: E402
from godwit_vm import (MigrationTestCase, QmpError, free_tcp_port,  # noqa: E402
                       wait_migration)

MiB = 1 << 20
GODWIT = os.environ.get("GODWIT", "build/tools/godwit")
MARKER_ADDRESS = 110 * MiB + 4093      # unaligned, outside the dirty range
MARKER = b"postcopy crossed here"


def postcopy_on(*vms, extra=()):
    for vm in vms:
        vm.qmp.command("migrate-set-capabilities",
                       capabilities=[{"capability": name, "state": True}
                                     for name in ("postcopy-ram", *extra)])


def userfaultfd_skip_reason():
    if os.geteuid() != 0 and not os.access("/dev/userfaultfd", os.R_OK | os.W_OK):
        return "postcopy needs userfaultfd: run as root or give access to /dev/userfaultfd"
    return None


class PostcopyTestCase(MigrationTestCase):
    def setUp(self):
        super().setUp()
        reason = userfaultfd_skip_reason()
        if reason:
            self.skipTest(reason)

    def start_postcopy_destination(self, uri, capabilities=(), memory="128M", extra=()):
        """--incoming defer, the capabilities, then migrate-incoming."""
        destination = self.start_destination("defer", memory=memory, extra=extra)
        postcopy_on(destination, extra=capabilities)
        destination.qmp.command("migrate-incoming", uri=uri)
        return destination

    def shm_path(self, name):
        path = f"/dev/shm/godwit-test-{name}-{os.getpid()}-{time.monotonic_ns()}"
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        return path

    def write_marker(self, path):
        with open(path, "r+b") as f:
            f.seek(MARKER_ADDRESS)
            f.write(MARKER)

    def wait_sent(self, source, nbytes):
        """Until the first pass has sent nbytes (and is not over)."""
        info = wait_migration(source.qmp, ("active",),
                              predicate=lambda i: i["ram"]["transferred"] >= nbytes)
        self.assertEqual(info["ram"]["dirty-sync-count"], 1, "the first pass already ended")
        return info

    def watch_postcopy(self, source, destination):
        """Polls both sides until the source completes; returns the source's
        last answer and what was seen while it was in postcopy-active: the
        destination's run states and its guest's passes there."""
        seen_states, passes = set(), []
        deadline = time.monotonic() + 60
        while True:
            info = source.qmp.command("query-migrate")
            if info["status"] == "postcopy-active":
                seen_states.add(destination.qmp.command("query-status")["status"])
                passes.append(destination.serial.text().count("B"))
            if info["status"] in ("completed", "failed", "cancelled"):
                return info, seen_states, passes
            self.assertLess(time.monotonic(), deadline, f"still {info['status']} after 60 s")
            time.sleep(0.05)


class Switch(PostcopyTestCase):
    def test_dirty_guest_switched_in_first_pass_runs_on_destination(self):
        src_shm, dst_shm = self.shm_path("pc-src"), self.shm_path("pc-dst")
        source = self.start_source(extra=("--mem-path", src_shm))
        self.write_marker(src_shm)
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_postcopy_destination(uri, extra=("--mem-path", dst_shm))
        postcopy_on(source)
        # Slow enough that the switch comes early in the first pass, and
        # that postcopy lasts long enough to watch the guest run there.
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 32 * MiB,
                                                        "max-postcopy-bandwidth": 24 * MiB})
        source.qmp.command("migrate", uri=uri)
        self.wait_sent(source, 8 * MiB)
        source.qmp.command("migrate-start-postcopy")
        info, states, passes = self.watch_postcopy(source, destination)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        # Tracking's start, the end of the first pass (cut short), the switch.
        self.assertEqual(info["ram"]["dirty-sync-count"], 3)
        self.assertGreater(info["ram"]["postcopy-requests"], 0, info["ram"])
        self.assertGreater(info["ram"]["postcopy-bytes"], 64 * MiB, info["ram"])
        self.assertEqual(info["ram"]["x-postcopy-preempt-bytes"], 0, info["ram"])
        self.assertEqual(states, {"running"}, "the destination did not run in postcopy")
        self.assertGreater(passes[-1], passes[0], "the guest made no pass in postcopy")
        dest_info = wait_migration(destination.qmp)
        self.assertEqual(dest_info["status"], "completed", dest_info.get("error-desc"))
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertLessEqual(self.check_running_guest(destination, earlier=(source,)), 1)
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)

    def test_guest_dirtying_faster_than_the_link_completes(self):
        """QEMU's recipe for a guest that never converges: 3 MiB dirtied many
        times a second over 4 MiB/s, with 1 ms of downtime allowed. After
        three passes, postcopy moves it."""
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=4M")
        source.serial.wait_count("B", 2, process=source.process)   # dirtying at full speed
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_postcopy_destination(uri, memory="64M")
        postcopy_on(source)
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 4 * MiB,
                                                        "downtime-limit": 1})
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("active",), timeout=60,
                              predicate=lambda i: i["ram"]["dirty-sync-count"] >= 4)
        self.assertGreater(info["expected-downtime"], 1, "precopy could have converged")
        source.qmp.command("migrate-start-postcopy")
        info = wait_migration(source.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(wait_migration(destination.qmp)["status"], "completed")
        self.assertLessEqual(self.check_running_guest(destination, high=4 * MiB,
                                                      earlier=(source,)), 1)

    def test_multifd_in_precopy_then_postcopy(self):
        """Multifd channels carry precopy (they end before LISTEN, so no page
        of theirs lands after a discard); postcopy goes on the main channel.
        Precopy held back from converging, so the switch is ours."""
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=4M")
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_postcopy_destination(uri, memory="64M", capabilities=("multifd",))
        postcopy_on(source, extra=("multifd",))
        # No switchover estimate fits 1 byte/s: precopy goes on until the switch.
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 4 * MiB,
                                                        "downtime-limit": 1,
                                                        "avail-switchover-bandwidth": 1})
        source.qmp.command("migrate", uri=uri)
        wait_migration(source.qmp, ("active",), timeout=60,
                       predicate=lambda i: i["ram"]["dirty-sync-count"] >= 3 and
                       i["ram"]["multifd-bytes"] > 0)
        source.qmp.command("migrate-start-postcopy")
        info = wait_migration(source.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertGreater(info["ram"]["multifd-bytes"], 0)
        self.assertGreater(info["ram"]["postcopy-bytes"], 0)
        self.assertEqual(wait_migration(destination.qmp)["status"], "completed")
        self.assertLessEqual(self.check_running_guest(destination, high=4 * MiB,
                                                      earlier=(source,)), 1)

    def test_cancel_after_the_switch_is_refused(self):
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=16M")
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_postcopy_destination(uri, memory="64M")
        postcopy_on(source)
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 16 * MiB,
                                                        "max-postcopy-bandwidth": 4 * MiB})
        source.qmp.command("migrate", uri=uri)
        self.wait_sent(source, 4 * MiB)
        source.qmp.command("migrate-start-postcopy")
        wait_migration(source.qmp, ("postcopy-active",), timeout=30)
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate_cancel")
        self.assertIn("already runs on the destination", str(refused.exception))
        self.assertIn("migrate_cancel", source.qmp.command("human-monitor-command",
                                                           **{"command-line": "help"}))
        info = wait_migration(source.qmp, timeout=60)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(wait_migration(destination.qmp)["status"], "completed")
        self.assertLessEqual(self.check_running_guest(destination, high=16 * MiB,
                                                      earlier=(source,)), 1)

    def test_preempt_requested_pages_on_their_own_channel(self):
        """postcopy-preempt: the background held to 4 MiB/s, so the guest
        could only run on what it asks for; with preempt those pages pass
        the background, on their own connection."""
        src_shm = self.shm_path("pc-pre-src")
        source = self.start_source(extra=("--mem-path", src_shm))
        self.write_marker(src_shm)
        uri = f"tcp:127.0.0.1:{free_tcp_port()}"
        destination = self.start_postcopy_destination(
            uri, capabilities=("postcopy-preempt", "postcopy-blocktime"))
        postcopy_on(source, extra=("postcopy-preempt",))
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 32 * MiB,
                                                        "max-postcopy-bandwidth": 16 * MiB})
        source.qmp.command("migrate", uri=uri)
        self.wait_sent(source, 8 * MiB)
        source.qmp.command("migrate-start-postcopy")
        info, states, passes = self.watch_postcopy(source, destination)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(states, {"running"})
        self.assertGreater(passes[-1], passes[0], "the guest made no pass in postcopy")
        # Requested pages went on the preempt channel, the rest on the main one.
        self.assertGreater(info["ram"]["postcopy-requests"], 0, info["ram"])
        self.assertGreaterEqual(info["ram"]["x-postcopy-preempt-bytes"],
                                info["ram"]["postcopy-requests"] * 16, info["ram"])
        self.assertGreater(info["ram"]["postcopy-bytes"],
                           info["ram"]["x-postcopy-preempt-bytes"], info["ram"])
        dest_info = wait_migration(destination.qmp)
        self.assertEqual(dest_info["status"], "completed", dest_info.get("error-desc"))
        self.assertGreater(dest_info["ram"]["postcopy-requests"], 0)
        self.assertEqual(sum(dest_info["postcopy-latency-dist"]),
                         dest_info["ram"]["postcopy-requests"])
        self.assertLessEqual(self.check_running_guest(destination, earlier=(source,)), 1)
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)

    def test_preempt_needs_both_sides(self):
        source = self.start_source(memory="32M", append="mode=dirty start=1M end=8M")
        uri = f"unix:{source.path('migrate.sock')}"
        self.start_postcopy_destination(uri, memory="32M")
        postcopy_on(source, extra=("postcopy-preempt",))
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("failed",), timeout=20)
        self.assertIn("the source uses postcopy-preempt, this destination does not",
                      info["error-desc"])
        self.assertLessEqual(self.check_running_guest(source, high=8 * MiB), 1)


class Recovery(PostcopyTestCase):
    """A broken link in postcopy pauses both sides; migrate-recover and
    migrate with resume reconnect them, and the migration completes with
    the guest whole."""

    # The guest dirties [100 MiB, 108 MiB); the host writes random bytes into
    # [1 MiB, 99 MiB), which the guest never touches: a page of it lost with
    # the link and not sent again would never be asked for, so it reads as
    # zero at the end unless recovery sends again what the destination lacks.
    GUEST = "mode=dirty start=100M end=108M"
    RANDOM_LOW, RANDOM_HIGH = 1 * MiB, 99 * MiB

    def start_paused_migration(self, preempt=False, cut="proxy"):
        """A guest in postcopy over a proxy (background held to 8 MiB/s so
        postcopy lasts), then the link broken while the background sends
        the host's random bytes: by the proxy, or with migrate-pause on the
        source. Returns source and destination, both paused."""
        src_shm = self.shm_path("pc-rec-src")
        source = self.start_source(append=self.GUEST, extra=("--mem-path", src_shm))
        self.write_marker(src_shm)
        self.random = os.urandom(self.RANDOM_HIGH - self.RANDOM_LOW)
        with open(src_shm, "r+b") as f:
            f.seek(self.RANDOM_LOW)
            f.write(self.random)
        listen = f"tcp:127.0.0.1:{free_tcp_port()}"
        extra = ("postcopy-preempt",) if preempt else ()
        destination = self.start_postcopy_destination(listen, capabilities=extra)
        proxy = ChannelProxy(int(listen.rsplit(":", 1)[1]))
        self.addCleanup(proxy.close)
        postcopy_on(source, extra=extra + ("events",))
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 32 * MiB,
                                                        "max-postcopy-bandwidth": 8 * MiB})
        source.qmp.command("migrate", uri=proxy.uri)
        self.wait_sent(source, 8 * MiB)
        source.qmp.command("migrate-start-postcopy")
        wait_migration(source.qmp, ("postcopy-active",), timeout=30,
                       predicate=lambda i: i["ram"]["postcopy-bytes"] > 4 * MiB)
        if cut == "proxy":
            proxy.hold()    # what the source sends from here is lost with the link
            time.sleep(0.5)
            proxy.close()
        else:
            source.qmp.command("migrate-pause")
        wait_migration(source.qmp, ("postcopy-paused",), timeout=30)
        wait_migration(destination.qmp, ("postcopy-paused",), timeout=30)
        # Paused, not failed: the guest is the destination's, stopped here.
        self.assertEqual(source.qmp.command("query-status")["status"], "finish-migrate")
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate_cancel")
        self.assertIn("postcopy-paused", str(refused.exception))
        return source, destination

    def recover(self, source, destination):
        uri = f"tcp:127.0.0.1:{free_tcp_port()}"
        destination.qmp.command("migrate-recover", uri=uri)
        wait_migration(destination.qmp, ("postcopy-recover-setup",), timeout=10)
        source.qmp.command("migrate", uri=uri, resume=True)
        return uri

    def finish_check(self, source, destination):
        info = wait_migration(source.qmp, timeout=120)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        dest_info = wait_migration(destination.qmp, timeout=30)
        self.assertEqual(dest_info["status"], "completed", dest_info.get("error-desc"))
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertLessEqual(self.check_running_guest(destination, low=100 * MiB,
                                                      high=108 * MiB, earlier=(source,)), 1)
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        landed = destination.read_memory(self.RANDOM_LOW, self.RANDOM_HIGH - self.RANDOM_LOW)
        if landed != self.random:
            page = next(i for i in range(0, len(landed), 4096)
                        if landed[i:i + 4096] != self.random[i:i + 4096])
            self.fail(f"the host's bytes differ on the destination from page "
                      f"{(self.RANDOM_LOW + page) // 4096}")

    def test_link_cut_in_postcopy_pauses_then_recovers(self):
        source, destination = self.start_paused_migration()
        time.sleep(0.5)   # both stay paused: nothing is lost meanwhile
        self.assertEqual(source.qmp.command("query-migrate")["status"], "postcopy-paused")
        self.assertEqual(destination.qmp.command("query-migrate")["status"], "postcopy-paused")
        self.assertIsNone(destination.process.poll())
        self.recover(source, destination)
        self.finish_check(source, destination)

    def test_second_failure_during_recovery_pauses_again(self):
        source, destination = self.start_paused_migration()
        # Nobody listens there: the recovery fails, and the source pauses again.
        nowhere = f"tcp:127.0.0.1:{free_tcp_port()}"
        source.qmp.command("migrate", uri=nowhere, resume=True)
        statuses = []   # every status since the migration started (events)
        while statuses[-2:] != ["postcopy-recover-setup", "postcopy-paused"]:
            statuses.append(source.qmp.wait_event("MIGRATION", timeout=30)["data"]["status"])
        self.assertEqual(statuses.count("postcopy-paused"), 2, statuses)
        time.sleep(0.3)
        self.assertEqual(source.qmp.command("query-migrate")["status"], "postcopy-paused")
        with self.assertRaises(QmpError) as refused:
            destination.qmp.command("migrate", uri=nowhere, resume=True)
        self.assertIn("outgoing migration in postcopy-paused", str(refused.exception))
        self.recover(source, destination)
        self.finish_check(source, destination)

    def test_migrate_pause_then_recover_with_preempt(self):
        source, destination = self.start_paused_migration(preempt=True, cut="pause")
        self.recover(source, destination)
        self.finish_check(source, destination)

    def test_recovery_commands_outside_a_pause(self):
        source = self.start_source(memory="32M", append="mode=dirty start=1M end=8M")
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate-pause")
        self.assertIn("migrate-pause is for a migration in postcopy-active", str(refused.exception))
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate", uri="tcp:127.0.0.1:1", resume=True)
        self.assertIn("needs an outgoing migration in postcopy-paused", str(refused.exception))
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate-recover", uri="tcp:127.0.0.1:1")
        self.assertIn("needs an incoming migration in postcopy-paused", str(refused.exception))
        self.assertEqual(source.qmp.command("query-status")["status"], "running")


class Cli(PostcopyTestCase):
    def godwit_postcopy(self, after, extra=()):
        """godwit migrate --dest --postcopy-after AFTER of a guest that never
        converges over 4 MiB/s; returns its result and both VMs."""
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=4M")
        destination = self.start_destination("defer", memory="64M")
        destination.qmp.command("migrate-set-capabilities", capabilities=[
            {"capability": "postcopy-blocktime", "state": True}])
        uri = f"unix:{destination.path('migrate.sock')}"
        result = subprocess.run([GODWIT, "migrate", "--from", f"unix:{source.qmp_path}",
                                 "--dest", f"unix:{destination.qmp_path}", "--to", uri,
                                 "--max-bandwidth", "4M", "--downtime-limit", "1",
                                 "--postcopy-after", after, *extra],
                                capture_output=True, text=True, timeout=120)
        return result, source, destination

    def check_completed_on_destination(self, result, source, destination):
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("switching to postcopy", result.stderr)
        self.assertIn("bytes sent in postcopy:", result.stdout)
        info = wait_migration(destination.qmp)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        # The destination asked for pages and says how long they took.
        self.assertGreater(info["ram"]["postcopy-requests"], 0, info)
        dist = info["postcopy-latency-dist"]
        self.assertEqual(len(dist), 32)
        self.assertEqual(sum(dist), info["ram"]["postcopy-requests"], info)
        self.assertGreater(info["postcopy-latency"], 0, info)
        # QEMU's blocktime counts the time every vCPU (one here) waited,
        # within the time any thread waited (ours).
        self.assertEqual(len(info["postcopy-vcpu-blocktime"]), 1, info)
        self.assertLessEqual(info["postcopy-blocktime"], info["x-postcopy-wait-time"] + 1, info)
        self.assertLessEqual(info["postcopy-vcpu-blocktime"][0], info["x-postcopy-wait-time"] + 1)
        placed = info["x-postcopy-placed"]
        self.assertLessEqual(placed["pages"], 64 * MiB // 4096, placed)
        text = destination.qmp.hmp("info migrate")
        self.assertIn("Postcopy:", text)
        self.assertLessEqual(self.check_running_guest(destination, high=4 * MiB,
                                                      earlier=(source,)), 1)

    def test_postcopy_after_seconds(self):
        result, source, destination = self.godwit_postcopy("1")
        self.assertIn("--postcopy-after 1 s", result.stderr)
        self.check_completed_on_destination(result, source, destination)

    def test_postcopy_after_auto(self):
        result, source, destination = self.godwit_postcopy("auto")
        self.assertIn("passes no longer shrink what is left", result.stderr)
        self.check_completed_on_destination(result, source, destination)

    def test_postcopy_after_is_checked(self):
        result = subprocess.run([GODWIT, "migrate", "--from", "unix:/nonexistent",
                                 "--to", "unix:/nonexistent2", "--postcopy-after", "soon"],
                                capture_output=True, text=True, timeout=10)
        self.assertEqual(result.returncode, 2)
        self.assertIn("--postcopy-after", result.stderr)


class Refusals(PostcopyTestCase):
    def test_destination_killed_before_the_switch_leaves_the_source_whole(self):
        shm = self.shm_path("pc-kill")
        source = self.start_source(extra=("--mem-path", shm))
        self.write_marker(shm)
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_postcopy_destination(uri)
        postcopy_on(source)
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 32 * MiB})
        source.qmp.command("migrate", uri=uri)
        self.wait_sent(source, 8 * MiB)
        destination.process.kill()
        info = wait_migration(source.qmp, ("failed",), timeout=10)
        self.assertIn("writing to " + uri, info["error-desc"])
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate-start-postcopy")
        self.assertIn("it is failed", str(refused.exception))
        self.assertEqual(source.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(source), 1)
        self.assertEqual(source.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)

    def test_destination_without_the_capability_refuses(self):
        source = self.start_source(memory="32M", append="mode=dirty start=1M end=8M")
        uri = f"unix:{source.path('migrate.sock')}"
        self.start_destination(uri, memory="32M")
        postcopy_on(source)
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("failed",), timeout=20)
        self.assertIn("set the capability on both sides", info["error-desc"])
        self.assertLessEqual(self.check_running_guest(source, high=8 * MiB), 1)

    def test_commands_and_uris_that_do_not_fit(self):
        source = self.start_source(memory="32M", append="mode=dirty start=1M end=8M")
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate-start-postcopy")
        self.assertIn("Enable postcopy with migrate_set_capability", str(refused.exception))
        postcopy_on(source)
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate-start-postcopy")
        self.assertIn("needs an outgoing migration in setup or active", str(refused.exception))
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate", uri=f"file:{source.path('x.mig')}")
        self.assertIn("postcopy-ram needs a connection with a return path",
                      str(refused.exception))
        with self.assertRaises(QmpError) as refused:
            source.qmp.command("migrate-set-parameters", **{"max-postcopy-bandwidth": -1})
        caps = {c["capability"]: c["state"]
                for c in source.qmp.command("query-migrate-capabilities")}
        self.assertTrue(caps["postcopy-ram"])
        self.assertFalse(caps["postcopy-blocktime"])
        self.assertEqual(source.qmp.command("query-status")["status"], "running")


if __name__ == "__main__":
    tap.main()

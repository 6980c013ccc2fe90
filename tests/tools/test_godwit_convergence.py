"""godwit migrate against real godwit-vm guests whose convergence is known:
one that dirties 39 MiB faster than max-bandwidth can ever send it, and one
paced below it (the test guest's rate=). While godwit follows the migration
through a pipe, the test polls query-migrate itself, so the line godwit
prints and the figures the VM gives are both checked: the verdict (not
converging within three passes and never an ETA; converging with an ETA
that never promises less than the time it really took, less a second),
what is left (never 0 while the expected downtime is above the engine's
small-downtime threshold), the plain output (no escape codes), the
completion timeout (cancel: the source runs on, its memory intact;
switchover: the destination runs, byte-exact) and --json (the VM's last
query-migrate, as it answers it afterwards).

The migrations need KVM (SKIP without it): the dirty rates these guests
reach decide what is tested. x-migrate-switchover-now's refusals run
anywhere."""
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import FINAL_STATUSES, MigrationTestCase, Qmp, require_kvm  # noqa: E402

GODWIT = os.environ.get("GODWIT", "build/tools/godwit")
MiB = 1 << 20
# The engine's CONVERGENCE_SMALL_DOWNTIME_US (src/migration/migration_convergence.h):
# below it, what is left may well be nothing.
SMALL_DOWNTIME_MS = 2

# Dirties 39 MiB over and over, as fast as it can: hundreds of MB/s, far more
# than the 40 MiB/s it is given.
RACING = "mode=dirty start=1M end=40M"
RACING_LOW, RACING_HIGH = 1 * MiB, 40 * MiB
# Dirties 40 MiB at 12 MiB/s, a link of 20 MiB/s sends it: each pass leaves
# about 60% of the one before, a few seconds of passes after the first.
PACED = "mode=dirty start=1M end=41M rate=12"
PACED_LOW, PACED_HIGH = 1 * MiB, 41 * MiB
STAMP = re.compile(r"^\[\s*([0-9.]+)s\] (.*)$")


class Poller:
    """query-migrate on its own QMP connection every 50 ms until the status
    is final: (time.monotonic(), answer) pairs."""

    def __init__(self, qmp_path):
        self.qmp = Qmp(qmp_path)
        self.samples = []
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        seen_start = False
        while not self.stopping:
            info = self.qmp.command("query-migrate")
            self.samples.append((time.monotonic(), info))
            seen_start = seen_start or info.get("status", "none") != "none"
            if seen_start and info.get("status") in FINAL_STATUSES:
                return
            time.sleep(0.05)

    def stop(self):
        self.stopping = True
        self.thread.join(10)
        self.qmp.close()

    def active(self):
        return [(t, info) for t, info in self.samples if info.get("status") == "active"]

    def trace(self):
        """The answers in short, for a failure's message."""
        lines = []
        start = self.samples[0][0] if self.samples else 0
        for t, info in self.samples:
            ram, verdict = info.get("ram", {}), info.get("convergence", {})
            lines.append(f"{t - start:6.2f} {info.get('status')} pass "
                         f"{ram.get('dirty-sync-count')} remaining {info.get('remaining')} "
                         f"expected {info.get('expected-downtime')} {verdict.get('state')} "
                         f"eta {verdict.get('eta')} dirty {verdict.get('dirty-rate')} "
                         f"link {verdict.get('bandwidth')} trend "
                         f"{verdict.get('trend-percentage')}")
        return "\n".join(lines)

    def finished_at(self):
        """When the poller first saw the final status (a bound above the end)."""
        return next(t for t, info in self.samples if info.get("status") in FINAL_STATUSES)


class Convergence(MigrationTestCase):
    def setUp(self):
        super().setUp()
        require_kvm(self)

    def start_pair(self, memory, append):
        source = self.start_source(memory=memory, append=append)
        # A paced guest has written its range once: the first pass sends data,
        # not the zero pages it started with.
        source.serial.wait_count("B", 1, timeout=60, process=source.process)
        destination = self.start_destination("defer", memory=memory)
        return source, destination

    def godwit(self, source, destination, *options):
        """godwit migrate --dest into a pipe, with a poller on the source."""
        poller = Poller(source.qmp_path)
        self.addCleanup(poller.stop)
        uri = f"unix:{destination.path('migrate.sock')}"
        started = time.monotonic()
        result = subprocess.run([GODWIT, "migrate", "--from", f"unix:{source.qmp_path}",
                                 "--dest", f"unix:{destination.qmp_path}", "--to", uri,
                                 *options], capture_output=True, text=True, timeout=120)
        poller.thread.join(10)
        return result, poller, started

    def assert_plain(self, stdout):
        """Output into a pipe: plain lines, no terminal control at all."""
        self.assertNotIn("\x1b", stdout)
        self.assertNotIn("\r", stdout)

    def assert_remaining_never_zero_too_soon(self, poller):
        """What is left reads 0 only where the expected downtime says almost
        nothing is left: never between a pass's end and the next sync."""
        active = poller.active()
        self.assertTrue(active, "no query-migrate answer while active")
        for _, info in active:
            self.assertGreater(info["remaining"], 0, info)
            if (info["ram"]["dirty-sync-count"] >= 2 and
                    info["expected-downtime"] > SMALL_DOWNTIME_MS):
                self.assertGreater(info["ram"]["remaining"], 0, info)

    def assert_source_runs_intact(self, source):
        self.assertEqual(source.qmp.command("query-migrate")["status"], "cancelled")
        self.assertEqual(source.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(source, RACING_LOW, RACING_HIGH), 1)

    def test_not_converging_within_three_passes_then_timeout_cancel_keeps_the_source(self):
        source, destination = self.start_pair("512M", RACING)
        result, poller, _ = self.godwit(source, destination, "--max-bandwidth", "40M",
                                        "--avail-switchover-bandwidth", "40M",
                                        "--timeout", "8")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assert_plain(result.stdout)
        # The VM's verdict: not converging from the third pass at the latest
        # (dirty-sync-count 4), to the end, and never an ETA.
        verdicts = [info for _, info in poller.active() if "convergence" in info]
        self.assertTrue(verdicts, "no verdict while active")
        first = next(info for info in verdicts
                     if info["convergence"]["state"] == "not-converging")
        self.assertLessEqual(first["ram"]["dirty-sync-count"], 4, first)
        for info in verdicts:
            if info["ram"]["dirty-sync-count"] >= 4:
                self.assertEqual(info["convergence"]["state"], "not-converging", info)
        self.assertFalse([info for _, info in poller.samples if "eta" in
                          info.get("convergence", {})], "an ETA for a migration that "
                                                        "does not converge")
        self.assert_remaining_never_zero_too_soon(poller)
        # What godwit printed: the verdict with both rates, never an ETA,
        # never "remaining 0 B" while it runs.
        lines = [STAMP.match(line).group(2) for line in result.stdout.splitlines()
                 if STAMP.match(line)]
        said = [line for line in lines if line.startswith("not converging: the guest dirties ")]
        self.assertEqual(len(said), 1, result.stdout)
        rates = re.match(r"not converging: the guest dirties (?:at least )?(\d+) MB/s, the link "
                         r"moves ([0-9.]+) MB/s: .* above downtime-limit 300 ms; raise "
                         r"max-bandwidth or downtime-limit, or turn on auto-converge or "
                         r"dirty-limit; --timeout 8 cancels it at 8 s$", said[0])
        self.assertTrue(rates, said[0])
        self.assertGreater(float(rates.group(1)), float(rates.group(2)), said[0])
        self.assertNotIn("ETA", result.stdout)
        for line in lines:
            if line.startswith("active"):
                self.assertNotIn("remaining 0 B", line)
        report = result.stdout.split("\noutcome:", 1)[1].split("\n", 1)[0].strip()
        self.assertTrue(report.startswith("migration timed out after 8 s (--timeout) and was "
                                          "cancelled (not converging: "), report)
        self.assertTrue(report.endswith("; the guest keeps running on the source"), report)
        self.assertIn("godwit: " + report, result.stderr)
        self.assert_source_runs_intact(source)
        status, _, _ = destination.wait_exit(timeout=30)
        self.assertEqual(status, 1, "a cancelled incoming migration fails the destination")

    def test_switchover_at_the_timeout_completes_byte_exact_and_json_is_query_migrate(self):
        source, destination = self.start_pair("512M", RACING)
        result, _, _ = self.godwit(source, destination, "--max-bandwidth", "40M",
                                        "--avail-switchover-bandwidth", "40M",
                                   "--timeout", "3", "--on-timeout", "switchover", "--json")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout.count("\n"), 1, result.stdout)
        report = json.loads(result.stdout)
        self.assertEqual(report["result"], "timed-out-switched-over")
        self.assertTrue(report["outcome"].startswith(
            "migration timed out after 3 s (--timeout) and was switched over by force "
            "(not converging: "), report["outcome"])
        # The VM's own final figures, as it gives them now.
        final = source.qmp.command("query-migrate")
        self.assertEqual(report["query-migrate"], final)
        self.assertEqual(final["status"], "completed")
        self.assertGreaterEqual(final["total-time"], 3000)
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertLessEqual(self.check_running_guest(destination, RACING_LOW, RACING_HIGH,
                                                      earlier=(source,)), 1)

    def test_a_converging_guest_shows_converging_and_an_eta_that_holds(self):
        source, destination = self.start_pair("256M", PACED)
        result, poller, started = self.godwit(source, destination, "--max-bandwidth", "20M",
                                              "--avail-switchover-bandwidth", "20M")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assert_plain(result.stdout)
        end = poller.finished_at()
        etas = [(t, info["convergence"]) for t, info in poller.active()
                if "eta" in info.get("convergence", {})]
        self.assertGreaterEqual(len(etas), 3, "fewer than three answers with an ETA")
        for t, convergence in etas:
            self.assertEqual(convergence["state"], "converging", convergence)
            self.assertGreaterEqual(convergence["eta"] / 1000, end - t - 1,
                                    f"an ETA of {convergence['eta']} ms {end - t:.2f} s before "
                                    f"the end:\n{poller.trace()}")
        self.assert_remaining_never_zero_too_soon(poller)
        # godwit's lines: converging with an ETA, never "not converging", and
        # each ETA no shorter than what was left of the run, less a second.
        lines = [(float(m.group(1)), m.group(2)) for m in map(STAMP.match,
                                                              result.stdout.splitlines()) if m]
        printed = [(stamp, float(m.group(1))) for stamp, line in lines
                   for m in [re.search(r"  converging, ETA ([0-9.]+) s", line)] if m]
        self.assertTrue(printed, result.stdout)
        self.assertNotIn("not converging", result.stdout)
        for stamp, eta in printed:
            self.assertGreaterEqual(eta, end - (started + stamp) - 1, result.stdout)
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertLessEqual(self.check_running_guest(destination, PACED_LOW, PACED_HIGH,
                                                      earlier=(source,)), 1)


class SwitchoverNow(MigrationTestCase):
    """x-migrate-switchover-now (ours) where there is nothing to switch over:
    an error that says why. Runs with --accel none too."""

    def test_without_a_migration_it_is_refused(self):
        vm = self.start_source(memory="64M", append="mode=dirty start=1M end=8M")
        reply = vm.qmp.execute("x-migrate-switchover-now")
        self.assertEqual(reply["error"]["desc"], "no outgoing migration to switch over (status "
                         "none): x-migrate-switchover-now acts on a migration in setup or active")
        self.assertEqual(vm.qmp.command("query-status")["status"], "running")

    def test_a_destination_refuses_it(self):
        destination = self.start_destination("defer", memory="64M")
        destination.qmp.command("migrate-incoming",
                                uri=f"unix:{destination.path('migrate.sock')}")
        reply = destination.qmp.execute("x-migrate-switchover-now")
        self.assertEqual(reply["error"]["desc"], "this VM is the destination of the migration: "
                         "ask the source to switch over")


if __name__ == "__main__":
    tap.main()

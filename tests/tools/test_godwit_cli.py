"""The godwit command-line tool against a fake VM: a QMP server in a thread
that answers migrate-set-parameters, migrate-set-capabilities, their queries,
migrate, migrate-incoming, query-migrate and migrate_cancel from a script, so
the tool's exit codes, progress output, report, Ctrl-C handling and the
commands it sends to both sides are checked without the migration engine.

RealMultifd then drives real godwit-vm processes (with --accel none where
/dev/kvm is missing): a multifd migration set up on both sides by --dest,
checked in the guest's memory on the destination."""
import fcntl
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import MigrationTestCase  # noqa: E402

GODWIT = os.environ.get("GODWIT", "build/tools/godwit")

RAM_TOTAL = 1 << 30

# The last query-migrate answer of a successful migration; every number is
# distinct so a report that prints the wrong field is caught.
COMPLETED = {
    "status": "completed", "total-time": 2345, "setup-time": 12, "downtime": 7,
    "expected-downtime-at-switchover": 6,
    "ram": {"transferred": 1181116006, "remaining": 0, "total": RAM_TOTAL,
            "duplicate": 1234, "normal": 260000, "normal-bytes": 1064960000,
            "dirty-pages-rate": 0, "mbps": 4049.1, "dirty-sync-count": 3,
            "pages-per-second": 111000, "precopy-bytes": 1181000000,
            "downtime-bytes": 116006, "dirty-sync-time": 1, "multifd-bytes": 1100000000},
}

# godwit-vm's defaults (docs/qmp.md), which the fake VM starts with.
CAPABILITIES = {"events": False, "multifd": False, "x-channel-header": False}
PARAMETERS = {"downtime-limit": 300, "max-bandwidth": 0, "avail-switchover-bandwidth": 0,
              "multifd-channels": 2, "multifd-compression": "none", "multifd-zstd-level": 1,
              "zero-page-detection": "multifd", "x-multifd-channels-device-state": 0,
              "x-multifd-packet-pages": 256}
# What a destination must share with its source, as --dest copies it.
SHARED_CAPABILITIES = ("multifd", "x-channel-header")
SHARED_PARAMETERS = ("multifd-channels", "multifd-compression", "multifd-zstd-level",
                     "zero-page-detection", "x-multifd-channels-device-state")

# godwit-vm's verdict on convergence (docs/qmp.md), as the fake VM gives it
# from its second pass on.
CONVERGING = {"state": "converging", "dirty-rate": 12582912, "bandwidth": 536870912,
              "trend-percentage": 60, "working-set": 25 << 20, "eta": 3300,
              "reason": "converging: the guest dirties 12.6 MB/s, the link moves 537 MB/s; "
                        "the last pass left 60% of what was left before it"}
NOT_CONVERGING = {"state": "not-converging", "dirty-rate": 1100000000, "bandwidth": 42000000,
                  "trend-percentage": 100, "working-set": 39 << 20,
                  "reason": "not converging: the guest dirties 1100 MB/s, the link moves "
                            "42.0 MB/s: the 39.0 MiB it keeps dirty would take 973 ms stopped, "
                            "above downtime-limit 300 ms; raise max-bandwidth or downtime-limit, "
                            "or turn on auto-converge or dirty-limit"}

THROTTLED = {"state": "throttled", "throttle-percentage": 30, "dirty-rate": 30000000,
             "bandwidth": 42000000, "trend-percentage": 70, "working-set": 39 << 20,
             "eta": 12000,
             "reason": "throttled 30% (auto-converge); converging: the guest dirties 30.0 MB/s, "
                       "the link moves 42.0 MB/s; the last pass left 70% of what was left "
                       "before it"}

FAILED = {"status": "failed", "total-time": 321, "setup-time": 2,
          "error-desc": "Unable to write to socket: Broken pipe",
          "ram": dict(COMPLETED["ram"], transferred=5000000, **{"dirty-sync-count": 1})}


class Script:
    """What the fake VM answers, as a function of the time since migrate:
    setup, then active with transferred growing (the first pass, then from
    1.5 s the second, with `verdict`), then `final`. A cancel turns it into
    cancelling, then cancelled after cancel_delay seconds; a switchover
    asked for (x-migrate-switchover-now) into device, then `final`."""

    def __init__(self, active_s=0.3, final=None, migrate_error=None, params_error=None,
                 cancel_delay=0.2, huge_reply=False, silent_query=False, incoming_error=None,
                 verdict=CONVERGING):
        self.active_s = active_s
        self.verdict = verdict
        self.final = final or COMPLETED
        self.migrate_error = migrate_error
        self.params_error = params_error
        self.cancel_delay = cancel_delay
        self.huge_reply = huge_reply
        self.silent_query = silent_query
        self.incoming_error = incoming_error
        self.started = None
        self.cancelled = None
        self.switchover = None

    def status(self, now):
        if self.started is None:
            return {"status": "none"}
        if self.cancelled is not None:
            if now - self.cancelled >= self.cancel_delay:
                return {"status": "cancelled", "total-time": 999, "setup-time": 1}
            return {"status": "cancelling"}
        if self.switchover is not None:
            return self.final if now - self.switchover >= 0.2 else {"status": "device"}
        elapsed = now - self.started
        if elapsed < 0.05:
            return {"status": "setup"}
        if elapsed < self.active_s:
            sent = min(RAM_TOTAL, int(RAM_TOTAL * elapsed / 2.0))
            second_pass = elapsed >= 1.5
            answer = {"status": "active", "total-time": int(elapsed * 1000), "setup-time": 12,
                      "expected-downtime": 40, "remaining": RAM_TOTAL - sent + 8192,
                      "ram": {"transferred": sent, "remaining": RAM_TOTAL - sent,
                              "total": RAM_TOTAL, "duplicate": 0, "normal": sent // 4096,
                              "dirty-pages-rate": 2500, "mbps": 4294.9,
                              "dirty-sync-count": 2 if second_pass else 1,
                              "multifd-bytes": 3 * (1 << 20)}}
            if second_pass and self.verdict:
                answer["convergence"] = self.verdict
            return answer
        return self.final


class FakeVm:
    """A QMP server on a unix socket in a temporary directory, one client at
    a time, in a thread. Records every request in `received`, and when it
    came in `received_at`; keeps capabilities and parameters as a VM does."""

    def __init__(self, script):
        self.script = script
        self.dir = tempfile.mkdtemp(prefix="godwit-cli-test-")
        self.path = os.path.join(self.dir, "qmp.sock")
        self.received = []
        self.received_at = []
        self.capabilities = dict(CAPABILITIES)
        self.parameters = dict(PARAMETERS)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.listener.settimeout(0.05)
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def events(self):
        return self.capabilities["events"]

    def commands(self):
        return [r["execute"] for r in self.received]

    def time_of(self, command):
        """When the first request for command came (time.monotonic())."""
        return self.received_at[self.commands().index(command)]

    def arguments(self, command):
        return [r.get("arguments") for r in self.received if r["execute"] == command]

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            with conn:
                try:
                    self.session(conn)
                except (BrokenPipeError, ConnectionResetError):
                    pass

    def send(self, conn, message):
        conn.sendall(json.dumps(message).encode() + b"\r\n")

    def session(self, conn):
        conn.settimeout(0.02)
        self.send(conn, {"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 0},
                                             "package": "fake"}, "capabilities": []}})
        buffer, negotiated, last_status = b"", False, None
        while not self.stopping:
            if self.events:   # MIGRATION events arrive on their own, as from a VM
                status = self.script.status(time.monotonic())["status"]
                if status != last_status:
                    self.send(conn, {"event": "MIGRATION", "data": {"status": status},
                                     "timestamp": {"seconds": 0, "microseconds": 0}})
                    last_status = status
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                self.received.append(request)
                self.received_at.append(time.monotonic())
                if not negotiated:
                    negotiated = request["execute"] == "qmp_capabilities"
                    reply = {"return": {}} if negotiated else self.error(
                        "CommandNotFound", "Expecting capabilities negotiation with "
                        "'qmp_capabilities'")
                    self.send(conn, dict(reply, id=request.get("id")))
                    # An event the client did not ask for: it must skip it.
                    self.send(conn, {"event": "RESUME", "data": {},
                                     "timestamp": {"seconds": 0, "microseconds": 0}})
                    continue
                reply = self.answer(request)
                if reply is None:
                    continue
                if isinstance(reply, bytes):
                    conn.sendall(reply)
                    continue
                if "id" in request:
                    reply["id"] = request["id"]
                self.send(conn, reply)

    @staticmethod
    def error(error_class, desc):
        return {"error": {"class": error_class, "desc": desc}}

    def answer(self, request):
        script, command = self.script, request["execute"]
        args = request.get("arguments", {})
        if command == "migrate-set-parameters":
            if script.params_error:
                return self.error("GenericError", script.params_error)
            self.parameters.update(args)
            return {"return": {}}
        if command == "migrate-set-capabilities":
            for cap in args.get("capabilities", []):
                self.capabilities[cap["capability"]] = cap["state"]
            return {"return": {}}
        if command == "query-migrate-capabilities":
            return {"return": [{"capability": name, "state": state}
                               for name, state in self.capabilities.items()]}
        if command == "query-migrate-parameters":
            return {"return": dict(self.parameters)}
        if command == "migrate-incoming":
            if script.incoming_error:
                return self.error("GenericError", script.incoming_error)
            return {"return": {}}
        if command == "migrate":
            if script.migrate_error:
                return self.error("GenericError", script.migrate_error)
            script.started = time.monotonic()
            return {"return": {}}
        if command == "migrate_cancel":
            if script.cancelled is None:
                script.cancelled = time.monotonic()
            return {"return": {}}
        if command == "x-migrate-switchover-now":
            if script.switchover is None:
                script.switchover = time.monotonic()
            return {"return": {}}
        if command == "query-migrate":
            if script.silent_query:
                return None
            if script.huge_reply:
                return b'{"return": {"status": "active", "pad": "' + b"x" * (1200 * 1024) \
                    + b'"}}\r\n'
            return {"return": script.status(time.monotonic())}
        return self.error("CommandNotFound", f"The command {command} has not been found")


def run_godwit(*args, env=None, timeout=15):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([GODWIT, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env)


# A verdict's own line in plain output: "[   1.5s] converging: ...".
VERDICT_LINE = re.compile(r"^\[\s*[0-9.]+s\] (converging|not converging|throttled)")


def progress_lines(stdout):
    """The lines stamped with the seconds since migrate: progress and verdicts."""
    return [line for line in stdout.splitlines() if line.startswith("[")]


def parse_report(stdout):
    """The report's 'name: value' lines, by name."""
    report = {}
    for line in stdout.splitlines():
        match = re.match(r"^([a-z ]+):\s+(.*)$", line)
        if match:
            report[match.group(1)] = match.group(2)
    return report


class GodwitCliTestCase(unittest.TestCase):
    def fake(self, **script):
        vm = FakeVm(Script(**script))
        self.addCleanup(vm.close)
        return vm

    def migrate(self, vm, *extra, **kwargs):
        return run_godwit("migrate", "--from", f"unix:{vm.path}", "--to", "tcp:localhost:4444",
                          *extra, **kwargs)


class Migrate(GodwitCliTestCase):
    def test_completed_migration_exits_0_and_reports_the_final_numbers(self):
        vm = self.fake()
        result = self.migrate(vm)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        ram = COMPLETED["ram"]
        throughput = ram["transferred"] / (COMPLETED["total-time"] - COMPLETED["setup-time"]) \
            / 1000
        report = parse_report(result.stdout)
        self.assertEqual(report["status"], "completed")
        self.assertEqual(report["total time"], "2345 ms")
        self.assertEqual(report["downtime"], "7 ms")
        self.assertEqual(report["expected downtime at switchover"], "6 ms")
        self.assertEqual(report["setup time"], "12 ms")
        self.assertEqual(report["transferred"], "1181116006 bytes (1.1 GiB)")
        self.assertEqual(report["throughput"], f"{throughput:.1f} MB/s")
        self.assertEqual(report["passes"], "3")
        self.assertEqual(report["zero pages"], "1234")
        self.assertEqual(report["pages sent with data"], "260000")
        self.assertEqual(report["bytes sent while stopped"], "116006 bytes (113.3 KiB)")
        self.assertEqual(vm.arguments("migrate"), [{"uri": "tcp:localhost:4444"}])
        # No parameter given: none is set.
        self.assertNotIn("migrate-set-parameters", vm.commands())

    def test_the_parameters_given_are_the_ones_sent_before_migrate(self):
        vm = self.fake(active_s=0.1)
        result = self.migrate(vm, "--max-bandwidth", "100M", "--downtime-limit", "50",
                              "--avail-switchover-bandwidth", "1G")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(vm.arguments("migrate-set-parameters"), [
            {"max-bandwidth": 104857600, "downtime-limit": 50,
             "avail-switchover-bandwidth": 1073741824}])
        commands = vm.commands()
        self.assertLess(commands.index("migrate-set-parameters"), commands.index("migrate"))
        # The bounds themselves are allowed.
        vm = self.fake(active_s=0.1)
        result = self.migrate(vm, "--max-bandwidth", str((1 << 63) - 1), "--downtime-limit", "0")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(vm.arguments("migrate-set-parameters"),
                         [{"max-bandwidth": (1 << 63) - 1, "downtime-limit": 0}])

    def test_plain_output_is_one_line_per_second(self):
        vm = self.fake(active_s=2.5)
        result = self.migrate(vm)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = [l for l in progress_lines(result.stdout) if not VERDICT_LINE.match(l)]
        self.assertNotIn("\r", result.stdout)
        self.assertNotIn("\x1b", result.stdout)
        self.assertTrue(2 <= len(lines) <= 4, lines)
        stamps = [float(re.match(r"\[\s*([0-9.]+)s\]", l).group(1)) for l in lines]
        # Once a second: never sooner; later only by what a loaded host
        # makes the fake VM's answers wait.
        for before, after in zip(stamps, stamps[1:]):
            self.assertGreaterEqual(after - before, 0.9, lines)
            self.assertLessEqual(after - before, 2.0, lines)
        active = [l for l in lines if " active " in l]
        self.assertTrue(active, lines)
        for field in ("first pass", "remaining", "link"):
            self.assertIn(field, active[0])
        # Before a pass has measured anything, the expected downtime is only
        # the limit, and there is no verdict to give an ETA.
        self.assertNotIn("expected downtime", active[0])
        self.assertNotIn("ETA", active[0])
        # mbps 4294.9 is shown as MB/s, divided by 8; what is left counts the
        # devices' state too (the system-wide "remaining").
        self.assertIn("link 537 MB/s", active[0])
        # The fake sends half the RAM a second from when it got migrate; the
        # line's stamp is the CLI's own clock, a few ms earlier (more under
        # load), so the share may differ by a little.
        stamp = float(re.match(r"\[\s*([0-9.]+)s\]", active[0]).group(1))
        shown = float(re.search(r"first pass ([0-9.]+)%", active[0]).group(1))
        self.assertLessEqual(abs(shown - 100 * stamp / 2.0), 5, active[0])
        # Then the pass, the rates side by side and the verdict with its ETA.
        self.assertRegex(lines[-1], r"active  pass 2  remaining \S+ \S+  dirty 12.6 MB/s  "
                                    r"link 537 MB/s  converging, ETA 3.3 s  expected downtime "
                                    r"40 ms")

    def test_completed_migration_opens_the_report_with_how_it_ended(self):
        vm = self.fake(active_s=0.2)
        result = self.migrate(vm)
        lines = result.stdout.splitlines()
        first = [i for i, line in enumerate(lines) if line.startswith("outcome:")]
        self.assertEqual(len(first), 1, result.stdout)
        self.assertEqual(lines[first[0]], "outcome:" + " " * 25 + "migration completed in 2.3 s "
                         "after 3 passes, downtime 7 ms; the guest runs on the destination")
        self.assertTrue(lines[first[0] + 1].startswith("status:"), result.stdout)

    def test_failed_migration_exits_1_with_the_reason_on_stderr(self):
        vm = self.fake(active_s=0.2, final=FAILED)
        result = self.migrate(vm)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr,
                         "godwit: migration failed: Unable to write to socket: Broken pipe\n")
        report = parse_report(result.stdout)
        self.assertEqual(report["status"], "failed")
        self.assertEqual(report["transferred"], "5000000 bytes (4.8 MiB)")

    def test_migration_cancelled_elsewhere_exits_1(self):
        vm = self.fake(active_s=0.2, final={"status": "cancelled"})
        result = self.migrate(vm)
        self.assertEqual(result.returncode, 1)
        self.assertIn("migration cancelled by the VM or another client", result.stderr)

    def test_migrate_refused_by_the_vm_shows_its_error(self):
        desc = "Failed to connect to 'localhost:4444': Connection refused"
        vm = self.fake(migrate_error=desc)
        result = self.migrate(vm)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "godwit: the VM refused to migrate to "
                         f"tcp:localhost:4444: {desc}\n")
        self.assertNotIn("query-migrate", vm.commands())

    def test_a_parameter_refused_by_the_vm_shows_its_error_and_nothing_starts(self):
        desc = "Parameter 'max-bandwidth' expects a value below the host's limit"
        vm = self.fake(params_error=desc)
        result = self.migrate(vm, "--max-bandwidth", "1G")
        self.assertEqual(result.returncode, 1)
        self.assertIn("refused migrate-set-parameters: " + desc, result.stderr)
        self.assertNotIn("migrate", vm.commands())

    def test_events_turn_on_the_capability_and_migration_completes(self):
        vm = self.fake(active_s=0.3)
        result = self.migrate(vm, "--events")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(vm.arguments("migrate-set-capabilities"),
                         [{"capabilities": [{"capability": "events", "state": True}]}])
        self.assertEqual(parse_report(result.stdout)["status"], "completed")


class Verdict(GodwitCliTestCase):
    def test_a_new_verdict_is_a_line_of_its_own_with_the_vms_reason(self):
        vm = self.fake(active_s=3.8, verdict=NOT_CONVERGING)
        result = self.migrate(vm)
        self.assertEqual(result.returncode, 0, result.stderr)
        verdicts = [l for l in progress_lines(result.stdout) if VERDICT_LINE.match(l)]
        self.assertEqual(len(verdicts), 1, result.stdout)
        # The VM's sentence, and what godwit can do about it.
        self.assertIn("] " + NOT_CONVERGING["reason"] + ", or end it with --timeout SECONDS",
                      verdicts[0])
        later = [l for l in progress_lines(result.stdout)
                 if " pass 2 " in l and not VERDICT_LINE.match(l)]
        self.assertTrue(later, result.stdout)
        for line in later:
            self.assertRegex(line, r"dirty 1100 MB/s  link 42.0 MB/s  not converging  "
                                   r"expected downtime")
        self.assertNotIn("ETA", result.stdout)
        # The report keeps the last verdict.
        self.assertEqual(parse_report(result.stdout)["outcome"],
                         "migration completed in 2.3 s after 3 passes, downtime 7 ms; "
                         "the guest runs on the destination")

    def test_a_throttle_shows_its_percentage_and_the_eta(self):
        vm = self.fake(active_s=2.5, verdict=THROTTLED)
        result = self.migrate(vm)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("] " + THROTTLED["reason"] + "\n", result.stdout)
        self.assertRegex(result.stdout, r"dirty 30.0 MB/s  link 42.0 MB/s  throttled 30%, "
                                        r"ETA 12.0 s  expected downtime 40 ms")

    def test_quiet_prints_the_report_only(self):
        vm = self.fake(active_s=2.0)
        result = self.migrate(vm, "--quiet")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(progress_lines(result.stdout), [])
        self.assertTrue(result.stdout.startswith("outcome:"), result.stdout)
        self.assertEqual(parse_report(result.stdout)["status"], "completed")

    def test_json_is_one_object_holding_the_last_query_migrate(self):
        vm = self.fake(active_s=0.3)
        result = self.migrate(vm, "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.count("\n"), 1, result.stdout)
        report = json.loads(result.stdout)
        self.assertEqual(report["result"], "completed")
        self.assertEqual(report["query-migrate"], COMPLETED)
        self.assertTrue(report["outcome"].startswith("migration completed in 2.3 s"), report)

    def test_json_of_a_failed_migration_says_why(self):
        vm = self.fake(active_s=0.2, final=FAILED)
        result = self.migrate(vm, "--json")
        self.assertEqual(result.returncode, 1)
        report = json.loads(result.stdout)
        self.assertEqual((report["result"], report["outcome"]),
                         ("failed", "migration failed: " + FAILED["error-desc"]))
        self.assertEqual(report["query-migrate"], FAILED)


class Timeout(GodwitCliTestCase):
    def test_timeout_cancels_and_says_why(self):
        vm = self.fake(active_s=1e9, verdict=NOT_CONVERGING)
        result = self.migrate(vm, "--timeout", "2")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(vm.commands().count("migrate_cancel"), 1)
        self.assertNotIn("x-migrate-switchover-now", vm.commands())
        waited = vm.time_of("migrate_cancel") - vm.time_of("migrate")
        self.assertGreaterEqual(waited, 2.0)
        self.assertLess(waited, 2.5)
        sentence = ("migration timed out after 2 s (--timeout) and was cancelled (" +
                    NOT_CONVERGING["reason"] + "); the guest keeps running on the source")
        self.assertEqual(parse_report(result.stdout)["outcome"], sentence)
        self.assertIn("godwit: " + sentence + "\n", result.stderr)
        # The verdict line says what the timeout will do.
        self.assertIn("; --timeout 2 cancels it at 2 s", result.stdout)

    def test_timeout_switches_over_and_the_migration_completes(self):
        vm = self.fake(active_s=1e9)
        result = self.migrate(vm, "--timeout", "2", "--on-timeout", "switchover", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(vm.commands().count("x-migrate-switchover-now"), 1)
        self.assertNotIn("migrate_cancel", vm.commands())
        report = json.loads(result.stdout)
        self.assertEqual(report["result"], "timed-out-switched-over")
        self.assertEqual(report["outcome"],
                         "migration timed out after 2 s (--timeout) and was switched over by "
                         "force (" + CONVERGING["reason"] + "); it completed in 2.3 s with a "
                         "downtime of 7 ms and the guest runs on the destination")
        self.assertEqual(report["query-migrate"], COMPLETED)

    def test_a_migration_that_completes_first_is_not_touched(self):
        vm = self.fake(active_s=0.3)
        result = self.migrate(vm, "--timeout", "5")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("migrate_cancel", vm.commands())
        self.assertTrue(parse_report(result.stdout)["outcome"].startswith(
            "migration completed in"))


class Multifd(GodwitCliTestCase):
    ALL = ("--multifd", "4", "--multifd-compression", "zstd", "--multifd-zstd-level", "5",
           "--zero-page-detection", "legacy", "--channel-header", "--device-state-channels", "1")

    def test_plain_migration_shows_no_multifd_and_says_nothing_more(self):
        vm = self.fake(active_s=0.1)
        result = self.migrate(vm)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        self.assertNotIn("multifd", result.stdout)
        self.assertNotIn("migrate-set-capabilities", vm.commands())

    def test_options_set_the_source_and_a_note_says_what_the_destination_needs(self):
        vm = self.fake(active_s=1.2)
        result = self.migrate(vm, *self.ALL, "--to", "unix:/tmp/godwit-cli-nowhere.sock")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(vm.arguments("migrate-set-capabilities"), [{"capabilities": [
            {"capability": "multifd", "state": True},
            {"capability": "x-channel-header", "state": True}]}])
        self.assertEqual(vm.arguments("migrate-set-parameters"), [{
            "multifd-channels": 4, "multifd-compression": "zstd", "multifd-zstd-level": 5,
            "zero-page-detection": "legacy", "x-multifd-channels-device-state": 1}])
        # Settings first, then read back (what the source really has), then migrate.
        commands = vm.commands()
        self.assertLess(commands.index("migrate-set-parameters"),
                        commands.index("query-migrate-parameters"))
        self.assertLess(commands.index("query-migrate-parameters"), commands.index("migrate"))
        # One line: the destination must be given the same, and how.
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("godwit: note: "), result.stderr)
        for setting in ("multifd on", "x-channel-header on", "multifd-channels 4",
                        "multifd-compression zstd", "multifd-zstd-level 5",
                        "zero-page-detection legacy", "x-multifd-channels-device-state 1",
                        "--dest"):
            self.assertIn(setting, result.stderr)
        report = parse_report(result.stdout)
        self.assertEqual(report["multifd channels"], "4 RAM + 1 device state")
        self.assertEqual(report["multifd compression"], "zstd, level 5")
        self.assertEqual(report["multifd bytes"], "1100000000 bytes (1.0 GiB)")
        active = [l for l in result.stdout.splitlines() if " active " in l]
        self.assertTrue(active, result.stdout)
        self.assertIn("  multifd 4+1 channels, 3 MiB", active[0])

    def test_multifd_already_on_is_shown_and_noted(self):
        """A capability stays on after the migration that set it: godwit
        shows what the source really migrates with."""
        vm = self.fake(active_s=0.1)
        vm.capabilities["multifd"] = True
        vm.parameters["multifd-channels"] = 3
        result = self.migrate(vm, "--to", "unix:/tmp/godwit-cli-nowhere.sock")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("godwit: note: ", result.stderr)
        self.assertIn("multifd-channels 3", result.stderr)
        report = parse_report(result.stdout)
        self.assertEqual(report["multifd channels"], "3")
        self.assertEqual(report["multifd compression"], "none")
        self.assertIn("multifd bytes", report)

    def dest_pair(self, source_script=None, destination_script=None):
        source = self.fake(**(source_script or {"active_s": 0.1}))
        destination = self.fake(**(destination_script or {}))
        return source, destination

    def migrate_to(self, source, destination, *extra):
        uri = f"unix:{os.path.join(destination.dir, 'migrate.sock')}"
        return uri, run_godwit("migrate", "--from", f"unix:{source.path}", "--dest",
                               f"unix:{destination.path}", "--to", uri, *extra)

    def test_dest_gets_the_sources_settings_then_listens_before_migrate(self):
        source, destination = self.dest_pair()
        source.capabilities["x-channel-header"] = True    # set earlier, by someone else
        source.parameters["zero-page-detection"] = "none"
        uri, result = self.migrate_to(source, destination, "--multifd", "2",
                                      "--multifd-compression", "zstd")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "", "no note: --dest took care of it")
        self.assertEqual(destination.commands()[1:], [
            "migrate-set-capabilities", "migrate-set-parameters", "migrate-incoming"])
        self.assertEqual(destination.arguments("migrate-incoming"), [{"uri": uri}])
        self.assertEqual(source.arguments("migrate"), [{"uri": uri}])
        for name in SHARED_CAPABILITIES:
            self.assertEqual(destination.capabilities[name], source.capabilities[name], name)
        for name in SHARED_PARAMETERS:
            self.assertEqual(destination.parameters[name], source.parameters[name], name)
        self.assertEqual(destination.parameters["zero-page-detection"], "none")
        self.assertTrue(destination.capabilities["x-channel-header"])
        self.assertFalse(destination.capabilities["events"])
        self.assertLess(destination.time_of("migrate-incoming"), source.time_of("migrate"))

    def test_dest_refusing_migrate_incoming_starts_nothing(self):
        desc = "migrate-incoming needs a VM started with --incoming defer"
        source, destination = self.dest_pair(destination_script={"incoming_error": desc})
        uri, result = self.migrate_to(source, destination, "--multifd", "2")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, f"godwit: the destination VM (unix:{destination.path}) "
                         f"refused migrate-incoming {uri}: {desc}\n")
        self.assertNotIn("migrate", source.commands())

    def test_source_refusing_migrate_says_the_destination_still_listens(self):
        desc = "There's a migration process in progress"
        source, destination = self.dest_pair(source_script={"migrate_error": desc})
        uri, result = self.migrate_to(source, destination)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"the VM refused to migrate to {uri}: {desc}; the destination VM still "
                      f"listens on {uri}", result.stderr)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)

    def test_unreachable_dest_touches_neither_side(self):
        source = self.fake()
        path = os.path.join(tempfile.gettempdir(), "godwit-no-such-destination.sock")
        result = run_godwit("migrate", "--from", f"unix:{source.path}", "--dest",
                            f"unix:{path}", "--to", "tcp:localhost:4444", "--multifd", "2")
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stderr.startswith(f"godwit: --dest: cannot connect to unix:{path}"),
                        result.stderr)
        self.assertEqual(source.commands(), ["qmp_capabilities"])

    def test_status_shows_the_multifd_of_the_last_migration(self):
        vm = self.fake()
        vm.script.started = time.monotonic() - 10
        vm.capabilities["multifd"] = True
        result = run_godwit("status", "--qmp", f"unix:{vm.path}")
        self.assertEqual(result.returncode, 0, result.stderr)
        report = parse_report(result.stdout)
        self.assertEqual(report["multifd channels"], "2")
        self.assertEqual(report["multifd bytes"], "1100000000 bytes (1.0 GiB)")
        # Turned on after a migration that sent nothing on multifd channels.
        vm.script.final = dict(COMPLETED, ram=dict(COMPLETED["ram"], **{"multifd-bytes": 0}))
        result = run_godwit("status", "--qmp", f"unix:{vm.path}")
        self.assertNotIn("multifd", result.stdout)


class Interrupt(GodwitCliTestCase):
    def start_and_wait_active(self, vm):
        process = subprocess.Popen([GODWIT, "migrate", "--from", f"unix:{vm.path}",
                                    "--to", "unix:/tmp/nowhere.sock"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 5
        while vm.commands().count("query-migrate") < 3:
            self.assertLess(time.monotonic(), deadline, "godwit never polled query-migrate")
            time.sleep(0.02)
        return process

    def test_sigint_sends_migrate_cancel_and_exits_1_once_cancelled(self):
        vm = self.fake(active_s=1e9)
        process = self.start_and_wait_active(vm)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
        self.assertEqual(process.returncode, 1, err)
        self.assertEqual(vm.commands().count("migrate_cancel"), 1)
        # It kept polling until the VM said cancelled.
        self.assertEqual(parse_report(out)["status"], "cancelled")
        self.assertIn("guest keeps running on the source", err)

    def test_second_sigint_stops_waiting_for_a_slow_cancel(self):
        vm = self.fake(active_s=1e9, cancel_delay=1e9)
        process = self.start_and_wait_active(vm)
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 5
        while "migrate_cancel" not in vm.commands():
            self.assertLess(time.monotonic(), deadline, "no migrate_cancel")
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
        self.assertEqual(process.returncode, 1)
        self.assertIn("stopped waiting", err)
        self.assertIn(f"godwit status --qmp unix:{vm.path}", err)


class Terminal(GodwitCliTestCase):
    def test_terminal_progress_is_redrawn_with_carriage_returns(self):
        vm = self.fake(active_s=0.6)
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 70, 0, 0))
        process = subprocess.Popen([GODWIT, "migrate", "--from", f"unix:{vm.path}",
                                    "--to", "tcp:localhost:4444"],
                                   stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        output = b""
        while True:
            ready, _, _ = select.select([master], [], [], 10)
            self.assertTrue(ready, "no output from godwit within 10 s")
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: godwit closed the terminal
                break
            if not chunk:
                break
            output += chunk
        os.close(master)
        process.wait(timeout=5)
        self.assertEqual(process.returncode, 0, process.stderr.read())
        process.stderr.close()
        text = output.decode().replace("\r\n", "\n")   # the tty's own newline mapping
        progress, _, report = text.partition("outcome:")
        self.assertGreaterEqual(progress.count("\r"), 3, repr(progress))
        self.assertTrue(progress.endswith("\n"), repr(progress))
        self.assertEqual(progress.count("\n"), 1, repr(progress))
        # Every redraw fits the 70 columns, so it never wraps.
        for frame in progress.split("\r"):
            self.assertLess(len(frame.replace("\x1b[K", "").rstrip("\n")), 70, repr(frame))
        self.assertIn("completed", progress.split("\r")[-1])
        self.assertTrue(report.endswith("\n"))


class Status(GodwitCliTestCase):
    def test_no_migration_has_run(self):
        vm = self.fake()
        result = run_godwit("status", "--qmp", f"unix:{vm.path}")
        self.assertEqual((result.returncode, result.stdout, result.stderr),
                         (0, "no migration has run\n", ""))

    def test_status_reports_the_last_migration(self):
        vm = self.fake()
        vm.script.started = time.monotonic() - 10
        result = run_godwit("status", "--qmp", f"unix:{vm.path}")
        self.assertEqual(result.returncode, 0, result.stderr)
        report = parse_report(result.stdout)
        self.assertEqual(report["status"], "completed")
        self.assertEqual(report["downtime"], "7 ms")
        self.assertEqual(report["passes"], "3")
        vm.script.final = FAILED
        result = run_godwit("status", "--qmp", f"unix:{vm.path}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(parse_report(result.stdout)["error"],
                         "Unable to write to socket: Broken pipe")


class Errors(GodwitCliTestCase):
    def test_cannot_connect_names_the_fix(self):
        path = os.path.join(tempfile.gettempdir(), "godwit-no-such-vm.sock")
        result = run_godwit("migrate", "--from", f"unix:{path}", "--to", "tcp:localhost:4444")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr,
                         f"godwit: cannot connect to unix:{path}: No such file or directory; "
                         f"is godwit-vm running with --qmp unix:{path}?\n")

    def test_a_line_over_1_mib_is_an_error_not_a_crash(self):
        vm = self.fake(huge_reply=True)
        result = self.migrate(vm)
        self.assertEqual(result.returncode, 1)
        self.assertIn("longer than 1 MiB", result.stderr)
        self.assertIn("godwit status --qmp", result.stderr)

    def test_no_answer_within_the_timeout_is_a_clear_error(self):
        vm = self.fake(silent_query=True)
        started = time.monotonic()
        result = self.migrate(vm, env={"GODWIT_QMP_TIMEOUT": "0.3"})
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"unix:{vm.path} did not answer 'query-migrate' within 0.3 s",
                      result.stderr)

    def test_bad_usage_exits_2_with_one_line_saying_what_is_allowed(self):
        sock = "unix:" + os.path.join(tempfile.gettempdir(), "godwit-no-such-vm.sock")
        to = ["--to", "tcp:localhost:4444"]
        cases = [
            ([], "no command given; the commands are migrate and status"),
            (["frob"], "unknown command 'frob'; the commands are migrate and status"),
            (["--frob"], "unknown option '--frob'"),
            (["migrate", *to], "--from is required"),
            (["migrate", "--from", sock], "--to is required: the destination, accepted forms"),
            (["migrate", "--from", "tcp:localhost:1", *to], "as unix:PATH"),
            (["migrate", "--from", sock, "--to", "pigeon:7"], "accepted forms are tcp:HOST:PORT"),
            (["migrate", "--from", sock, *to, "--downtime-limit", "2000001"],
             "--downtime-limit 2000001 is out of range; allowed: 0 to 2000000 ms"),
            (["migrate", "--from", sock, *to, "--downtime-limit", "-1"], "allowed: 0 to 2000000"),
            (["migrate", "--from", sock, *to, "--downtime-limit", "1s"], "allowed: 0 to 2000000"),
            (["migrate", "--from", sock, *to, "--max-bandwidth", "12X"],
             "'12X' is not a size"),
            (["migrate", "--from", sock, *to, "--max-bandwidth", str(1 << 63)],
             "out of range; allowed: 0 to 9223372036854775807 bytes/s"),
            (["migrate", "--from", sock, *to, "--avail-switchover-bandwidth", "8388608T"],
             "out of range; allowed: 0 to 9223372036854775807 bytes/s"),
            (["migrate", "--from", sock, *to, "--multifd", "0"],
             "--multifd 0 is out of range; allowed: 1 to 255 channels"),
            (["migrate", "--from", sock, *to, "--multifd", "256"],
             "--multifd 256 is out of range; allowed: 1 to 255 channels"),
            (["migrate", "--from", sock, *to, "--multifd", "two"],
             "--multifd 'two' is not a number of channels; allowed: 1 to 255"),
            (["migrate", "--from", sock, *to, "--multifd", "2", "--multifd-compression", "lz4"],
             "--multifd-compression 'lz4' is not supported; allowed: none or zstd"),
            (["migrate", "--from", sock, *to, "--multifd", "2", "--multifd-compression", "zstd",
              "--multifd-zstd-level", "21"],
             "--multifd-zstd-level 21 is out of range; allowed: 0 to 20"),
            (["migrate", "--from", sock, *to, "--multifd", "2", "--multifd-compression", "zstd",
              "--multifd-zstd-level", "-1"], "is not a zstd level; allowed: 0 to 20"),
            (["migrate", "--from", sock, *to, "--zero-page-detection", "fast"],
             "'fast' is not supported; allowed: none, legacy or multifd"),
            (["migrate", "--from", sock, *to, "--multifd", "2", "--channel-header",
              "--device-state-channels", "256"],
             "--device-state-channels 256 is out of range; allowed: 0 to 255 channels"),
            (["migrate", "--from", sock, *to, "--multifd", "2", "--device-state-channels", "1"],
             "--device-state-channels 1 needs --multifd N and --channel-header"),
            (["migrate", "--from", sock, *to, "--channel-header", "--device-state-channels", "2"],
             "add --multifd N, or give 0"),
            (["migrate", "--from", sock, *to, "--multifd-compression", "zstd"],
             "--multifd-compression applies to the multifd channels: add --multifd N"),
            (["migrate", "--from", sock, *to, "--multifd", "2", "--multifd-zstd-level", "3"],
             "--multifd-zstd-level sets zstd's level: add --multifd-compression zstd"),
            (["migrate", "--from", sock, "--to", "file:/tmp/guest.mig", "--multifd", "2"],
             "--multifd needs a tcp: or unix: --to"),
            (["migrate", "--from", sock, "--to", "fd:3", "--dest", sock + "2"],
             "--dest needs a tcp: or unix: --to"),
            (["migrate", "--from", sock, "--to", "tcp:localhost:0", "--dest", sock + "2"],
             "has port 0"),
            (["migrate", "--from", sock, *to, "--dest", sock], "--dest and --from are the same"),
            (["migrate", "--from", sock, *to, "--dest", "tcp:localhost:5"], "as unix:PATH"),
            (["migrate", "--from", sock, *to, "--bogus"], "unknown option '--bogus'"),
            (["migrate", "--from", sock, *to, "--timeout", "0"],
             "--timeout 0 is out of range; allowed: 1 to 86400 s"),
            (["migrate", "--from", sock, *to, "--timeout", "86401"],
             "--timeout 86401 is out of range; allowed: 1 to 86400 s"),
            (["migrate", "--from", sock, *to, "--timeout", "1.5"],
             "--timeout '1.5' is not a number of seconds; allowed: 1 to 86400"),
            (["migrate", "--from", sock, *to, "--timeout", "10", "--on-timeout", "pause"],
             "--on-timeout 'pause' is not supported; allowed: cancel or switchover"),
            (["migrate", "--from", sock, *to, "--on-timeout", "cancel"],
             "--on-timeout says what --timeout does: add --timeout SECONDS (1 to 86400)"),
            (["migrate", "--from", sock, "--to"], "option '--to' needs a value"),
            (["migrate", "--from", sock, *to, "extra"], "unexpected argument 'extra'"),
            (["status"], "--qmp is required"),
            (["status", "--qmp", "/tmp/vm.sock"], "as unix:PATH"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                result = run_godwit(*args)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertEqual(result.stdout, "")
                self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
                self.assertIn(expected, result.stderr)
        result = run_godwit("migrate", "--from", sock, *to, env={"GODWIT_QMP_TIMEOUT": "soon"})
        self.assertEqual(result.returncode, 2)
        self.assertIn("GODWIT_QMP_TIMEOUT", result.stderr)


MiB = 1 << 20
PAGE = 4096
GUEST = "mode=dirty start=1M end=16M"
LOW, HIGH = MiB, 16 * MiB
CONTENT_ADDRESS = 32 * MiB           # above the dirty range: only the host writes it
GPU = "accel,id=gpu0,state-size=32M,changes=off"


def host_content(seed):
    """What the host writes into guest RAM: random pages, which zstd cannot
    shrink, a compressible run of text, and pages of data between zero pages."""
    rng = random.Random(seed)
    text = b"".join(b"page %08d of a compressible run; " % i for i in range(MiB // 32))
    zero_gaps = bytearray(2 * MiB)
    for page in range(0, len(zero_gaps), 2 * PAGE):
        zero_gaps[page:page + PAGE] = rng.randbytes(PAGE)
    return rng.randbytes(2 * MiB) + text * 4 + bytes(zero_gaps)


class RealMultifd(MigrationTestCase):
    """godwit migrate --dest against real godwit-vm processes: the source
    gets the options, the destination (started with --incoming defer) gets
    the same settings from godwit and listens; the guest must arrive whole."""

    def start_source_with_content(self, extra=()):
        shm = f"/dev/shm/godwit-cli-test-{os.getpid()}-{time.monotonic_ns()}"
        self.addCleanup(lambda: os.path.exists(shm) and os.unlink(shm))
        source = self.start_source(append=GUEST, extra=("--mem-path", shm, *extra))
        content = host_content(seed=len(extra))
        with open(shm, "r+b") as f:
            f.seek(CONTENT_ADDRESS)
            f.write(content)
        return source, content

    def godwit_migrate(self, source, destination, *options):
        uri = f"unix:{destination.path('migrate.sock')}"
        result = run_godwit("migrate", "--from", f"unix:{source.qmp_path}", "--dest",
                            f"unix:{destination.qmp_path}", "--to", uri, *options, timeout=120)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stderr, "")
        return parse_report(result.stdout)

    def assert_same_settings(self, source, destination):
        caps = [{c["capability"]: c["state"] for c in vm.qmp.command("query-migrate-capabilities")
                 if c["capability"] in SHARED_CAPABILITIES} for vm in (source, destination)]
        self.assertEqual(caps[0], caps[1])
        params = [{k: v for k, v in vm.qmp.command("query-migrate-parameters").items()
                   if k in SHARED_PARAMETERS} for vm in (source, destination)]
        self.assertEqual(params[0], params[1])
        return caps[0], params[0]

    def assert_arrived_whole(self, source, destination, content):
        """The guest runs on the destination, its memory follows the dirty
        guest's rule, and what the host wrote is there word for word."""
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertLessEqual(self.check_running_guest(destination, LOW, HIGH,
                                                      earlier=(source,)), 1)
        data = destination.read_memory(CONTENT_ADDRESS, len(content))   # stopped by the check
        differ = [hex(CONTENT_ADDRESS + i) for i in range(0, len(content), PAGE)
                  if data[i:i + PAGE] != content[i:i + PAGE]]
        self.assertEqual(differ, [], "host-written pages differ on the destination")
        for vm in (source, destination):
            vm.qmp.command("quit")
            status, _, err = vm.wait_exit(timeout=20)
            self.assertNotIn("Sanitizer", err)
            self.assertEqual(status, 0, err)

    def test_two_zstd_channels_set_up_on_both_sides(self):
        source, content = self.start_source_with_content()
        destination = self.start_destination("defer")
        report = self.godwit_migrate(source, destination, "--multifd", "2",
                                     "--multifd-compression", "zstd", "--multifd-zstd-level", "3")
        self.assertEqual(report["status"], "completed")
        self.assertEqual(report["multifd channels"], "2")
        self.assertEqual(report["multifd compression"], "zstd, level 3")
        caps, params = self.assert_same_settings(source, destination)
        self.assertEqual(caps, {"multifd": True, "x-channel-header": False})
        self.assertEqual((params["multifd-channels"], params["multifd-compression"],
                          params["multifd-zstd-level"]), (2, "zstd", 3))
        ram = source.qmp.command("query-migrate")["ram"]
        self.assertEqual(report["multifd bytes"].split()[0], str(ram["multifd-bytes"]))
        # The compressible half crossed smaller than it is.
        self.assertGreater(ram["multifd-bytes"], 2 * MiB, ram)
        self.assertLess(ram["multifd-bytes"], ram["normal-bytes"], ram)
        self.assert_arrived_whole(source, destination, content)

    def test_device_state_on_a_channel_of_its_own(self):
        source, content = self.start_source_with_content(extra=("--device", GPU))
        before = source.qmp.command("x-query-accel", id="gpu0")["digest"]
        destination = self.start_destination("defer", extra=("--device", GPU))
        report = self.godwit_migrate(source, destination, "--multifd", "2", "--channel-header",
                                     "--device-state-channels", "1")
        self.assertEqual(report["status"], "completed")
        self.assertEqual(report["multifd channels"], "2 RAM + 1 device state")
        caps, params = self.assert_same_settings(source, destination)
        self.assertEqual(caps, {"multifd": True, "x-channel-header": True})
        self.assertEqual(params["x-multifd-channels-device-state"], 1)
        self.assertEqual(destination.qmp.command("x-query-accel", id="gpu0")["digest"], before)
        self.assert_arrived_whole(source, destination, content)


class Help(unittest.TestCase):
    def test_version(self):
        result = run_godwit("--version")
        self.assertEqual(result.returncode, 0)
        self.assertRegex(result.stdout, r"^godwit \d+\.\d+\.\d+\n$")

    def test_help_lists_exactly_the_options_that_exist(self):
        result = run_godwit("--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("migrate", result.stdout)
        self.assertIn("status", result.stdout)
        for command in ("migrate", "status"):
            with self.subTest(command=command):
                help_text = run_godwit(command, "--help")
                self.assertEqual(help_text.returncode, 0)
                # The unknown-option error lists what the parser accepts.
                error = run_godwit(command, "--no-such-option").stderr
                accepted = set(re.findall(r"--[a-z-]+", error.split("the options are")[1]))
                documented = set(re.findall(r"^\s+(?:-h, )?(--[a-z-]+)", help_text.stdout,
                                            re.M))
                self.assertEqual(documented, accepted)


if __name__ == "__main__":
    tap.main()

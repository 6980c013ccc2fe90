"""A destination never waits for ever (issue 10, defect 6). After READY it
waits for GO at most GODWIT_GO_TIMEOUT_MS (ours, for tests; 10 s by
default), tcp: connections have keepalive and TCP_USER_TIMEOUT, and
migrate_cancel on a destination cancels the incoming migration, as in QEMU:
the destination fails and never runs the guest.

A proxy between source and destination (ReadyProxy) sees the destination's
RP_READY go by, so a test can stop or kill the source exactly there: after
the destination has loaded everything, before GO. When the source dies the
proxy either closes the destination's side (what a dead process on the same
host gives: an EOF) or keeps it open and silent (what a vanished host gives).

Every test checks the guest where it ends up: on the source, running and
whole (the dirty guest's increment rule), or nowhere because the source was
killed, and then never on the destination (its serial port stays empty)."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import (RECORD_HEADER_SIZE, REC_RP_ERROR, REC_RP_READY,  # noqa: E402
                       MigrationTestCase, free_tcp_port, recv_exact, stop_process,
                       wait_migration, watch_until_exit)

MiB = 1 << 20
HIGH = 24 * MiB
GUEST = f"mode=dirty start=1M end={HIGH // MiB}M"
GO_TIMEOUT_MS = 1500
DRAIN_S = 2        # a destination that failed waits this long for the source to read its error
SLACK_S = 6        # a loaded 2-core machine
INCOMING_FAILED = "incoming migration failed"


def _shutdown(sock, how):
    try:
        sock.shutdown(how)
    except OSError:
        pass


class ReadyProxy:
    """A tcp: proxy for one migration connection (no multifd). The stream
    goes through as bytes; the return path is read record by record, and at
    RP_READY on_ready() runs before READY is forwarded (or, with
    hold_ready, READY is dropped: the source never sees it). When the
    source's side ends: eof=True closes the destination's side too, False
    leaves it open and silent."""

    def __init__(self, upstream_port, on_ready=None, hold_ready=False, eof=True):
        self.upstream_port = upstream_port
        self.on_ready = on_ready
        self.hold_ready = hold_ready
        self.eof = eof
        self.answers = []            # return-path record types, in order
        self.ready_seen = threading.Event()
        self.ready_at = None
        self.sockets = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    @property
    def uri(self):
        return f"tcp:127.0.0.1:{self.port}"

    def _serve(self):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        self.sockets.append(client)
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
        upstream.settimeout(None)
        self.sockets.append(upstream)
        forward = threading.Thread(target=self._stream, args=(client, upstream), daemon=True)
        self.threads.append(forward)
        forward.start()
        self._return_path(upstream, client)

    def _stream(self, client, upstream):
        try:
            while True:
                data = client.recv(1 << 20)
                if not data:
                    break
                upstream.sendall(data)
        except OSError:
            pass
        if self.eof:
            _shutdown(upstream, socket.SHUT_WR)

    def _return_path(self, upstream, client):
        try:
            while True:
                head = recv_exact(upstream, RECORD_HEADER_SIZE)
                length = int.from_bytes(head[4:8], "little")
                body = recv_exact(upstream, length + (-length % 8)) if length else b""
                rtype = int.from_bytes(head[0:4], "little")
                self.answers.append(rtype)
                if rtype == REC_RP_READY:
                    self.ready_at = time.monotonic()
                    if self.on_ready:
                        self.on_ready()
                    self.ready_seen.set()
                    if self.hold_ready:
                        continue
                try:
                    client.sendall(head + body)
                except OSError:
                    pass   # the source is gone: go on reading the destination
        except (EOFError, OSError):
            pass
        _shutdown(client, socket.SHUT_WR)

    def close(self):
        _shutdown(self.listener, socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.sockets:
            _shutdown(sock, socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


class VanishingSource(MigrationTestCase):
    def start_pair(self, **proxy):
        """A source, a tcp: destination with a short GO deadline, a proxy."""
        source = self.start_source(memory="64M", append=GUEST)
        self.addCleanup(self.continue_process, source)
        port = free_tcp_port()
        destination = self.start_destination(f"tcp:127.0.0.1:{port}", memory="64M",
                                             env={"GODWIT_GO_TIMEOUT_MS": str(GO_TIMEOUT_MS)})
        proxy = ReadyProxy(port, **proxy)
        self.addCleanup(proxy.close)
        return source, destination, proxy, port

    def continue_process(self, vm):
        """A stopped process cannot die of SIGKILL until it runs: let it."""
        if vm.process.poll() is None:
            os.kill(vm.process.pid, signal.SIGCONT)

    def stop_source(self, source):
        def stop():
            stop_process(source.process.pid, timeout=5.0)
        return stop

    def check_gave_up(self, destination, phrases=(), within=None, since=None):
        """Exits 1 by itself, never having run the guest."""
        status, seen, err = watch_until_exit(destination, timeout=30)
        took = time.monotonic() - since if since is not None else None
        self.assertEqual(status, 1, err)
        self.assertIn(INCOMING_FAILED, err)
        for phrase in phrases:
            self.assertIn(phrase, err)
        self.assertNotIn("running", seen)
        self.assertEqual(destination.serial.text(), "", "the destination ran the guest")
        if within is not None:
            self.assertLess(took, within, f"the destination gave up after {took:.1f}s: {err}")
        return err, took

    def keepalive_timer(self, port):
        """What ss says of the destination's accepted connection on port."""
        try:
            out = subprocess.run(["ss", "-Htno", "state", "established",
                                  f"( sport = :{port} )"], capture_output=True, text=True,
                                 timeout=5).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out

    def test_source_killed_at_ready_on_a_silent_connection(self):
        """The source is stopped at READY and killed -9, and its connection
        stays open and silent, as when its host vanishes: the destination
        gives up once its wait for GO passes, and never runs the guest."""
        source, destination, proxy, port = self.start_pair(eof=False)
        proxy.on_ready = self.stop_source(source)
        source.qmp.command("migrate", uri=proxy.uri)
        self.assertTrue(proxy.ready_seen.wait(60), "the destination never said READY")
        timer = self.keepalive_timer(port)
        source.process.kill()   # SIGKILL ends a stopped process too
        source.process.wait(timeout=10)
        if timer is not None:
            self.assertIn("keepalive", timer, f"no keepalive on the destination's socket: {timer}")
        err, took = self.check_gave_up(destination, ("no GO within", "READY"),
                                       within=GO_TIMEOUT_MS / 1000 + DRAIN_S + SLACK_S,
                                       since=proxy.ready_at)
        self.assertGreaterEqual(took, GO_TIMEOUT_MS / 1000 * 0.9, err)

    def test_source_killed_at_ready_gives_an_eof_at_once(self):
        """The source's process dies at READY on a live host: its kernel
        closes the connection, and the destination fails at once."""
        source, destination, proxy, _ = self.start_pair(eof=True, hold_ready=True)
        proxy.on_ready = lambda: os.kill(source.process.pid, signal.SIGKILL)
        source.qmp.command("migrate", uri=proxy.uri)
        self.assertTrue(proxy.ready_seen.wait(60), "the destination never said READY")
        err, took = self.check_gave_up(destination, ("GO",), within=DRAIN_S + SLACK_S,
                                       since=proxy.ready_at)
        self.assertNotIn("no GO within", err, "an EOF, not the deadline, should end it")

    def test_source_stalled_past_the_deadline_keeps_its_guest(self):
        """The source stalls at READY past the destination's deadline, then
        goes on and sends GO. The destination gave up and said so (RP_ERROR):
        the source must take its guest back and run it, or the guest would
        run nowhere."""
        source, destination, proxy, _ = self.start_pair()
        proxy.on_ready = self.stop_source(source)
        source.qmp.command("migrate", uri=proxy.uri)
        self.assertTrue(proxy.ready_seen.wait(60), "the destination never said READY")
        try:
            err, _ = self.check_gave_up(destination, ("no GO within",),
                                        within=GO_TIMEOUT_MS / 1000 + DRAIN_S + SLACK_S,
                                        since=proxy.ready_at)
        finally:
            os.kill(source.process.pid, signal.SIGCONT)
        self.assertIn(REC_RP_ERROR, proxy.answers)
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        self.assertIn("no GO within", info["error-desc"])
        self.assertLessEqual(self.check_running_guest(source, high=HIGH), 1)

    def test_migrate_cancel_on_the_destination_at_ready(self):
        """The source never gets READY (the proxy holds it); the destination
        waits for GO until migrate_cancel there. It fails, never runs the
        guest, and tells the source, which keeps its guest running."""
        source, destination, proxy, _ = self.start_pair(hold_ready=True)
        source.qmp.command("migrate", uri=proxy.uri)
        self.assertTrue(proxy.ready_seen.wait(60), "the destination never said READY")
        destination.qmp.command("migrate_cancel")
        self.check_gave_up(destination, ("cancelled",))
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        self.assertIn("cancelled", info["error-desc"])
        self.assertIn(REC_RP_ERROR, proxy.answers)
        self.assertLessEqual(self.check_running_guest(source, high=HIGH), 1)


class CancelIncoming(MigrationTestCase):
    def test_migrate_cancel_on_the_destination_while_it_loads(self):
        source = self.start_source(memory="64M", append=GUEST)
        uri = f"unix:{source.path('migrate.sock')}"
        destination = self.start_destination(uri, memory="64M")
        # 23 MiB dirty per pass at 20 MB/s: it cannot converge.
        source.qmp.command("migrate-set-parameters",
                           **{"max-bandwidth": 20 * 1000 * 1000, "downtime-limit": 1})
        source.qmp.command("migrate", uri=uri)
        wait_migration(destination.qmp, ("active",), timeout=30)
        wait_migration(source.qmp, ("active",), timeout=30,
                       predicate=lambda i: i["ram"]["transferred"] >= 4 * MiB)
        destination.qmp.command("migrate_cancel")
        status, seen, err = watch_until_exit(destination, timeout=30)
        self.assertEqual(status, 1, err)
        self.assertIn("cancelled", err)
        self.assertNotIn("running", seen)
        self.assertEqual(destination.serial.text(), "")
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        self.assertIn("error-desc", info)
        self.assertLessEqual(self.check_running_guest(source, high=HIGH), 1)

    def test_migrate_cancel_on_a_destination_that_waits_for_its_source(self):
        port = free_tcp_port()
        destination = self.start_destination(f"tcp:127.0.0.1:{port}", memory="64M")
        self.assertEqual(destination.qmp.command("query-migrate")["status"], "setup")
        destination.qmp.command("migrate_cancel")
        status, seen, err = watch_until_exit(destination, timeout=30)
        self.assertEqual(status, 1, err)
        self.assertIn("cancelled", err)
        self.assertNotIn("running", seen)
        self.assertEqual(destination.serial.text(), "")

    def test_a_bad_go_timeout_is_refused_at_start(self):
        vm = self.start_vm(memory="64M", extra=("--incoming", "defer"),
                           env={"GODWIT_GO_TIMEOUT_MS": "soon"})
        status, _, err = vm.wait_exit(timeout=10)
        self.assertEqual(status, 2, err)
        self.assertIn("GODWIT_GO_TIMEOUT_MS", err)
        self.assertIn("1 to 3600000", err)

    def test_migrate_cancel_on_a_destination_that_waits_for_migrate_incoming(self):
        """Nothing runs yet: as QEMU, nothing to cancel is not an error."""
        destination = self.start_destination("defer", memory="64M")
        destination.qmp.command("migrate_cancel")
        self.assertEqual(destination.qmp.command("query-status")["status"], "inmigrate")
        self.assertEqual(destination.qmp.command("query-migrate").get("status", "none"), "none")
        self.assertIsNone(destination.process.poll())


if __name__ == "__main__":
    tap.main()

"""godwit-vm's QMP monitor over its real socket: negotiation, errors that
leave the connection usable, events, NMI, HMP, reconnecting clients."""
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import Qmp, QmpError, VmTestCase  # noqa: E402


class Monitor(VmTestCase):
    def setUp(self):
        super().setUp()
        self.vm = self.start_vm(memory="16M", append="mode=idle")
        self.vm.serial.wait_count("A", 1, process=self.vm.process)

    def test_greeting_and_negotiation(self):
        qmp = Qmp(self.vm.qmp_path, negotiate=False)
        self.assertIn("QMP", qmp.greeting)
        self.assertIn("version", qmp.greeting["QMP"])
        reply = qmp.execute("query-status")
        self.assertEqual(reply["error"]["class"], "CommandNotFound")
        self.assertIn("qmp_capabilities", reply["error"]["desc"])
        self.assertEqual(qmp.execute("qmp_capabilities"), {"return": {}})
        again = qmp.execute("qmp_capabilities")
        self.assertEqual(again["error"]["class"], "CommandNotFound")
        self.assertEqual(qmp.command("query-status")["status"], "running")
        qmp.close()

    def test_bad_requests_get_errors_and_the_connection_stays_usable(self):
        qmp = self.vm.connect()
        qmp.send_raw(b'{"execute": }\n')
        self.assertIn("JSON parse error", qmp.read_reply()["error"]["desc"])
        qmp.send_raw(b'[1, 2]\n')
        self.assertEqual(qmp.read_reply()["error"]["desc"], "QMP input must be a JSON object")
        qmp.send_raw(b'{"arguments": {}}\n')
        self.assertEqual(qmp.read_reply()["error"]["desc"], "QMP input lacks member 'execute'")
        reply = qmp.execute("no-such-command")
        self.assertEqual(reply["error"]["class"], "CommandNotFound")
        self.assertIn("no-such-command", reply["error"]["desc"])
        reply = qmp.execute("pmemsave", val=0, size=4096)
        self.assertEqual(reply["error"]["desc"], "Parameter 'filename' is missing")
        reply = qmp.execute("pmemsave", val="zero", size=4096, filename="/dev/null")
        self.assertIn("Invalid parameter type for 'val'", reply["error"]["desc"])
        reply = qmp.execute("stop", force=True)
        self.assertEqual(reply["error"]["desc"], "Parameter 'force' is unexpected")
        reply = qmp.execute("pmemsave", val=1 << 40, size=4096, filename="/dev/null")
        self.assertIn("guest RAM", reply["error"]["desc"])
        # An id comes back with the reply, success or error.
        qmp.send_raw(b'{"execute": "query-status", "id": "abc"}\n')
        self.assertEqual(qmp.read_reply()["id"], "abc")
        qmp.send_raw(b'{"execute": "nope", "id": 7}\n')
        self.assertEqual(qmp.read_reply()["id"], 7)
        # Two requests in one write, and one split over two writes.
        qmp.send_raw(b'{"execute":"query-status"}{"execute":"query-status"}')
        self.assertIn("return", qmp.read_reply())
        self.assertIn("return", qmp.read_reply())
        qmp.send_raw(b'{"execute":"query-')
        qmp.send_raw(b'status"}\n')
        self.assertEqual(qmp.read_reply()["return"]["status"], "running")

    def test_query_commands_lists_what_the_monitor_serves(self):
        names = {c["name"] for c in self.vm.connect().command("query-commands")}
        for name in ("qmp_capabilities", "query-status", "stop", "cont", "quit", "pmemsave",
                     "inject-nmi", "query-commands", "human-monitor-command"):
            self.assertIn(name, names)

    def test_inject_nmi_reaches_the_idle_guest(self):
        qmp = self.vm.connect()
        qmp.command("inject-nmi")
        self.vm.serial.wait_count("N", 1, process=self.vm.process)
        qmp.hmp("nmi")
        self.vm.serial.wait_count("N", 2, process=self.vm.process)
        # While stopped the NMI waits, and arrives on cont.
        qmp.command("stop")
        qmp.command("inject-nmi")
        self.assertEqual(self.vm.serial.text().count("N"), 2)
        qmp.command("cont")
        self.vm.serial.wait_count("N", 3, process=self.vm.process)

    def test_events_stop_resume_shutdown(self):
        qmp = self.vm.connect()
        qmp.command("stop")
        event = qmp.wait_event("STOP")
        self.assertIn("seconds", event["timestamp"])
        qmp.command("stop")   # already stopped: no error, as in QEMU
        qmp.command("cont")
        qmp.wait_event("RESUME")
        qmp.command("quit")
        shutdown = qmp.wait_event("SHUTDOWN")
        self.assertEqual(shutdown["data"], {"guest": False, "reason": "host-qmp-quit"})
        status, _, _ = self.vm.wait_exit()
        self.assertEqual(status, 0)

    def test_hmp(self):
        qmp = self.vm.connect()
        self.assertEqual(qmp.hmp("info status"), "VM status: running\r\n")
        self.assertIn("info status", qmp.hmp("help"))
        self.assertEqual(qmp.hmp("frobnicate now"), "unknown command: 'frobnicate'\r\n")
        self.assertIn("godwit", qmp.hmp("info version"))
        qmp.hmp("stop")
        self.assertEqual(qmp.command("query-status")["status"], "paused")
        reply = qmp.execute("human-monitor-command")
        self.assertEqual(reply["error"]["desc"], "Parameter 'command-line' is missing")

    def test_clients_connect_one_after_another(self):
        first = self.vm.connect()
        first.command("stop")
        first.close()
        second = Qmp(self.vm.qmp_path)
        self.assertEqual(second.command("query-status")["status"], "paused")
        second.command("cont")
        # A client that vanishes mid-request does not hurt the server.
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        second.close()
        raw.connect(self.vm.qmp_path)
        raw.sendall(b'{"execute": "qmp_capab')
        raw.close()
        third = Qmp(self.vm.qmp_path)
        self.assertEqual(third.command("query-status")["status"], "running")
        third.close()

    def test_a_client_that_does_not_read_is_dropped_not_waited_for(self):
        """Replies pile up for a client that never reads; the monitor stays
        responsive to others and drops it past its backlog limit (8 MiB)."""
        flooder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        flooder.connect(self.vm.qmp_path)
        flooder.sendall(b'{"execute":"qmp_capabilities"}')
        request = b'{"execute":"query-commands"}' * 200
        other = self.vm.connect()
        flooder.settimeout(2)
        for _ in range(400):   # at most ~80000 replies of ~1.5 KB: far past 8 MiB
            try:
                flooder.sendall(request)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                break
            self.assertEqual(other.command("query-status")["status"], "running")
        # The server closed it: reading what it had buffered ends in EOF.
        received, chunk = 0, b"x"
        try:
            while chunk:
                chunk = flooder.recv(1 << 20)
                received += len(chunk)
        except ConnectionResetError:
            chunk = b""
        except socket.timeout:
            self.fail(f"the flooding client was never dropped ({received} bytes read)")
        self.assertEqual(chunk, b"")
        self.assertEqual(other.command("query-status")["status"], "running")
        flooder.close()

    def test_sigterm_ends_the_vm_cleanly(self):
        qmp = self.vm.connect()
        self.vm.process.terminate()
        self.assertEqual(qmp.wait_event("SHUTDOWN")["data"]["reason"], "host-signal")
        status, _, _ = self.vm.wait_exit()
        self.assertEqual(status, 0)
        self.assertFalse(os.path.exists(self.vm.qmp_path))

    def test_pmemsave_to_an_unwritable_file_is_an_error(self):
        qmp = self.vm.connect()
        with self.assertRaises(QmpError) as caught:
            qmp.command("pmemsave", val=0, size=4096, filename="/nonexistent/dir/x")
        self.assertIn("/nonexistent/dir/x", caught.exception.desc)
        self.assertEqual(qmp.command("query-status")["status"], "running")


if __name__ == "__main__":
    tap.main()

"""TLS on every migration channel (issue 13; docs/qmp.md, "TLS"): QEMU's
objects (tls-creds-x509, tls-creds-psk, authz-simple) and parameters
(tls-creds, tls-hostname, tls-authz).

Certificates and keys are made at test time with certtool into a temporary
directory (tests/lib/tls_certs.py). Every migration that completes is
checked on the destination (the dirty guest's increment rule and pass
count, a host-written marker byte for byte, a device's state digest); every
refusal leaves the source running with its guest whole, and says why.
The destination of the refusal tests takes every wrong source in turn and
then the right one: a refused connection never ends its wait."""
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import tap  # noqa: E402
from godwit_vm import QmpError, free_tcp_port, wait_migration  # noqa: E402
from test_multifd import (HEADERS, HIGH, LOW, MARKER, MARKER_ADDRESS,  # noqa: E402
                          MultifdTestCase, devices, digest)
from tls_certs import (CLIENT_DN, EXPIRED, NOT_YET_VALID, Pki, certtool_skip_reason,  # noqa: E402
                       psk_dir)

GODWIT = os.environ.get("GODWIT", "build/tools/godwit")
KEY = "9a3c1f0e5b7d2468ace013579bdf2468ace013579bdf0246"
WRONG_KEY = "1111111111111111111111111111111111111111111111111"[:48]
DEVICE = "accel,id=gpu0,state-size=8M,changes=off"


def x509(object_id, path, endpoint, verify_peer=True):
    return ("--object", f"tls-creds-x509,id={object_id},dir={path},endpoint={endpoint},"
                        f"verify-peer={'on' if verify_peer else 'off'}")


def psk(object_id, path, endpoint, username="godwit"):
    return ("--object", f"tls-creds-psk,id={object_id},dir={path},endpoint={endpoint},"
                        f"username={username}")


def authz(object_id, identity):
    return ("--object", f"authz-simple,id={object_id},identity={identity.replace(',', ',,')}")


class CuttingProxy:
    """Forwards one connection to port; passes the source's bytes through
    and the destination's first `limit` bytes back, then closes both ends:
    a handshake cut half-way."""

    def __init__(self, port, limit=64):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.uri = f"tcp:127.0.0.1:{self.listener.getsockname()[1]}"
        self.port, self.limit = port, limit
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        source, _ = self.listener.accept()
        destination = socket.create_connection(("127.0.0.1", self.port))
        forward = threading.Thread(target=self._pipe, args=(source, destination), daemon=True)
        forward.start()
        sent = 0
        while sent < self.limit:
            data = destination.recv(self.limit - sent)
            if not data:
                break
            source.sendall(data)
            sent += len(data)
        for end in (source, destination):
            end.shutdown(socket.SHUT_RDWR)
            end.close()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def close(self):
        self.listener.close()
        self.thread.join(timeout=5)


class FlippingProxy:
    """Forwards one connection both ways, and flips one bit of the source's
    bytes once `after` of them have passed: a TLS record that no longer
    authenticates. With stall, once the destination has gone the source
    reads the end of the connection but its writes are never read nor
    refused: its socket's buffers fill and a write blocks, until close()."""

    def __init__(self, port, after=2 << 20, stall=False):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.uri = f"tcp:127.0.0.1:{self.listener.getsockname()[1]}"
        self.port, self.after, self.stall = port, after, stall
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def _serve(self):
        source, _ = self.listener.accept()
        destination = socket.create_connection(("127.0.0.1", self.port))
        self.sockets = (source, destination)
        back = threading.Thread(target=self._back, args=(destination, source), daemon=True)
        back.start()
        self.threads.append(back)
        passed = 0
        try:
            while data := source.recv(65536):
                if passed <= self.after < passed + len(data):
                    flip = self.after - passed
                    data = data[:flip] + bytes([data[flip] ^ 0x40]) + data[flip + 1:]
                passed += len(data)
                destination.sendall(data)
        except OSError:
            pass   # the destination gave up: its answer still comes back

    def _back(self, destination, source):
        """The destination's answers; once it has closed, the source sees
        the connection end, as it would without a proxy."""
        CuttingProxy._pipe(destination, source)
        try:
            source.shutdown(socket.SHUT_WR if self.stall else socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self):
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=5)
        for end in getattr(self, "sockets", ()):
            end.close()


class TlsServer:
    """A TLS server that is not godwit: Python's ssl with a certificate
    godwit would refuse to load (expired, not yet valid), so the source's
    check of the destination's certificate is what refuses it."""

    def __init__(self, directory):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(os.path.join(directory, "server-cert.pem"),
                                     os.path.join(directory, "server-key.pem"))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.uri = f"tcp:127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            connection, _ = self.listener.accept()
            with self.context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except OSError:
            pass   # the source refuses our certificate: the handshake fails here too

    def close(self):
        self.listener.close()
        self.thread.join(timeout=5)


class TlsTestCase(MultifdTestCase):
    @classmethod
    def setUpClass(cls):
        reason = certtool_skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.pki = Pki()
        cls.other_pki = Pki("another CA")
        cls.server = cls.pki.x509_dir("server", "server")
        cls.client = cls.pki.x509_dir("client", "client")
        cls.no_cert = cls.pki.x509_dir("client", "no-cert", with_own_cert=False)
        cls.intruder = cls.pki.x509_dir("client", "intruder", cn="intruder")
        cls.other_client = cls.other_pki.x509_dir("client", "client")
        cls.psk_server = psk_dir(cls.pki.dir, "psk-server", "godwit", KEY)
        cls.psk_client = psk_dir(cls.pki.dir, "psk-client", "godwit", KEY)
        cls.psk_wrong = psk_dir(cls.pki.dir, "psk-wrong", "godwit", WRONG_KEY)

    @classmethod
    def tearDownClass(cls):
        cls.pki.close()
        cls.other_pki.close()

    def assert_refused(self, source, uri, *phrases):
        """migrate fails with a sentence holding every phrase; the source
        runs on, its guest whole."""
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("failed",), timeout=30)
        for phrase in phrases:
            self.assertIn(phrase, info.get("error-desc", ""))
        self.assert_source_whole(source)
        return info["error-desc"]

    def assert_tls_info(self, vm):
        tls = vm.qmp.command("query-migrate").get("tls")
        self.assertIsNotNone(tls, "query-migrate does not say which TLS carried the migration")
        self.assertIs(tls["ktls"], False)
        self.assertTrue(tls["cipher"])
        self.assertTrue(tls["protocol"].startswith("TLS"), tls)


class Migrations(TlsTestCase):
    def test_x509_verify_peer_multifd_and_device_channels(self):
        """x509 both ways (verify-peer on, the client's DN checked by
        tls-authz), 2 RAM channels and 1 device-state channel, all TLS."""
        params = {"multifd-channels": 2, "x-multifd-channels-device-state": 1}
        destination, uri = self.incoming(
            HEADERS, {**params, "tls-creds": "tls0", "tls-authz": "auth0"},
            extra=(*x509("tls0", self.server, "server"), *authz("auth0", CLIENT_DN),
                   *devices(DEVICE)))
        source = self.start_source_with_marker(
            extra=(*x509("tls0", self.client, "client"), *devices(DEVICE)))
        before = digest(source)
        self.configure(source, HEADERS, {**params, "tls-creds": "tls0"})
        info = self.migrate_held(source, uri, passes=2)
        self.assertGreater(info["ram"]["multifd-bytes"], 0)
        self.assert_tls_info(source)
        self.assert_tls_info(destination)
        self.assertRegex(source.qmp.hmp("info migrate"),
                         r"TLS: +TLS1\.\d \S+, GnuTLS in user space")
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assertEqual(digest(destination), before)
        self.assert_completed(source, destination, info)

    def test_psk_unix(self):
        destination, uri = self.incoming(None, {"tls-creds": "psk0"}, transport="unix",
                                         extra=psk("psk0", self.psk_server, "server"))
        source = self.start_source_with_marker(extra=psk("psk0", self.psk_client, "client"))
        self.configure(source, None, {"tls-creds": "psk0"})
        info = self.migrate(source, uri)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assert_tls_info(source)
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assertEqual(destination.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(destination, LOW, HIGH,
                                                      earlier=(source,)), 1)

    def test_x509_fd_with_tls_hostname(self):
        """fd: carries no host name: tls-hostname gives it."""
        source_end, destination_end = socket.socketpair()
        self.addCleanup(source_end.close)
        self.addCleanup(destination_end.close)
        destination = self.start_destination(
            "defer", extra=x509("tls0", self.server, "server"),
            pass_fds=(destination_end.fileno(),))
        self.configure(destination, None, {"tls-creds": "tls0"})
        destination.qmp.command("migrate-incoming", uri=f"fd:{destination_end.fileno()}")
        source = self.start_source(extra=x509("tls0", self.client, "client"),
                                   pass_fds=(source_end.fileno(),))
        self.configure(source, None, {"tls-creds": "tls0"})
        with self.assertRaisesRegex(QmpError, "set tls-hostname"):
            source.qmp.command("migrate", uri=f"fd:{source_end.fileno()}")
        self.configure(source, None, {"tls-hostname": "localhost"})
        info = self.migrate(source, f"fd:{source_end.fileno()}")
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assert_tls_info(destination)
        self.assertEqual(destination.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(destination, LOW, HIGH,
                                                      earlier=(source,)), 1)

    def test_godwit_migrate_tls_creds(self):
        """godwit migrate --tls-creds sets both sides (--dest) and its report
        says which TLS carried the migration."""
        destination = self.start_destination("defer", extra=x509("tls0", self.server, "server"))
        source = self.start_source_with_marker(extra=x509("tls0", self.client, "client"))
        port = free_tcp_port()
        done = subprocess.run([GODWIT, "migrate", "--from", f"unix:{source.qmp_path}",
                               "--dest", f"unix:{destination.qmp_path}",
                               "--to", f"tcp:127.0.0.1:{port}", "--multifd", "2",
                               "--tls-creds", "tls0", "--tls-hostname", "localhost", "--quiet"],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertRegex(done.stdout, r"TLS: +TLS1\.\d \S+, in user space \(GnuTLS, no kTLS\)")
        self.assertEqual(destination.qmp.command("query-migrate-parameters")["tls-creds"], "tls0")
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assertEqual(destination.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(destination, LOW, HIGH,
                                                      earlier=(source,)), 1)

    def test_kill_destination_during_tls_migration(self):
        destination, uri = self.incoming(None, {"tls-creds": "tls0"},
                                         extra=x509("tls0", self.server, "server"))
        source = self.start_source(extra=x509("tls0", self.client, "client"))
        self.configure(source, None, {"tls-creds": "tls0", "max-bandwidth": 8 << 20})
        source.qmp.command("migrate", uri=uri)
        wait_migration(source.qmp, ("active",), timeout=30,
                       predicate=lambda i: i["ram"]["transferred"] > 4 << 20)
        destination.process.send_signal(signal.SIGKILL)
        info = wait_migration(source.qmp, ("failed",), timeout=60)
        self.assertTrue(info.get("error-desc"))
        self.configure(source, None, {"max-bandwidth": 0})
        self.assert_source_whole(source)


class Refusals(TlsTestCase):
    def test_x509_refusals_then_the_right_source(self):
        """One destination (verify-peer on, tls-authz CLIENT_DN) refuses
        each wrong source, then takes the right one."""
        destination, uri = self.incoming(
            None, {"tls-creds": "tls0", "tls-authz": "auth0"},
            extra=(*x509("tls0", self.server, "server"), *authz("auth0", CLIENT_DN)))
        source = self.start_source_with_marker(
            extra=(*x509("good", self.client, "client"),
                   *x509("other-ca", self.other_client, "client"),
                   *x509("no-cert", self.no_cert, "client"),
                   *x509("intruder", self.intruder, "client")))
        port = int(uri.rsplit(":", 1)[1])
        cases = [
            ({"tls-creds": "other-ca"}, uri, ("destination's certificate was refused",
                                             "not signed by the CA")),
            ({"tls-creds": "good", "tls-hostname": "elsewhere.example"}, uri,
             ("not for the host", "tls-hostname")),
            ({"tls-creds": "no-cert", "tls-hostname": ""}, uri, ("certificate",)),
            ({"tls-creds": "intruder"}, uri, ("CN=intruder", "tls-authz")),
            ({"tls-creds": ""}, uri, ("takes TLS only", "plaintext")),
        ]
        for params, target, phrases in cases:
            with self.subTest(params=params):
                self.configure(source, None, params)
                self.assert_refused(source, target, *phrases)
        cut = CuttingProxy(port)
        self.addCleanup(cut.close)
        self.configure(source, None, {"tls-creds": "good"})
        self.assert_refused(source, cut.uri, "TLS handshake", "half-way")
        info = self.migrate(source, uri)
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(destination.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(destination, LOW, HIGH,
                                                      earlier=(source,)), 1)

    def test_stalled_handshakes_time_out(self):
        """A peer that stops half-way through the handshake holds neither
        side: the source gives up after 10 s, and so does the destination,
        which then takes the next source."""
        destination, uri = self.incoming(None, {"tls-creds": "tls0"},
                                         extra=x509("tls0", self.server, "server"))
        stalled = socket.create_connection(("127.0.0.1", int(uri.rsplit(":", 1)[1])))
        self.addCleanup(stalled.close)
        stalled.sendall(bytes([0x16, 0x03, 0x01, 0x01, 0x00, 0x01]))  # a ClientHello's start
        silent = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(silent.close)
        source = self.start_source_with_marker(extra=x509("tls0", self.client, "client"))
        self.configure(source, None, {"tls-creds": "tls0", "tls-hostname": "localhost"})
        started = time.monotonic()
        self.assert_refused(source, f"tcp:127.0.0.1:{silent.getsockname()[1]}",
                            "did not finish it within 10 s")
        self.assertGreaterEqual(time.monotonic() - started, 9)
        info = self.migrate(source, uri)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assertLessEqual(self.check_running_guest(destination, LOW, HIGH,
                                                      earlier=(source,)), 1)

    def test_corrupt_tls_record_ends_the_migration(self):
        """A record that fails its authentication tag ends the migration on
        both sides; the destination says why (the source reads only that
        it closed: GnuTLS sends nothing more on a session whose record
        failed), and the source keeps its guest whole."""
        destination, uri = self.incoming(None, {"tls-creds": "tls0"},
                                         extra=x509("tls0", self.server, "server"))
        source = self.start_source(extra=x509("tls0", self.client, "client"))
        self.configure(source, None, {"tls-creds": "tls0"})
        flipping = FlippingProxy(int(uri.rsplit(":", 1)[1]))
        self.addCleanup(flipping.close)
        self.configure(source, None, {"tls-hostname": "localhost"})
        self.assert_refused(source, flipping.uri, "closed the connection")
        self.assert_gave_up(destination, "TLS record error")

    def test_source_blocked_in_a_write_learns_the_destination_left(self):
        """As above, but the source's writes are neither read nor refused
        once the destination has gone, so its migration thread blocks in a
        write with the buffers full: the return path's end must wake it
        (it has no RP_ERROR to act on)."""
        destination, uri = self.incoming(None, {"tls-creds": "tls0"},
                                         extra=x509("tls0", self.server, "server"))
        source = self.start_source(extra=x509("tls0", self.client, "client"))
        self.configure(source, None, {"tls-creds": "tls0", "tls-hostname": "localhost"})
        stalling = FlippingProxy(int(uri.rsplit(":", 1)[1]), stall=True)
        self.addCleanup(stalling.close)
        self.assert_refused(source, stalling.uri, "closed the connection")
        self.assert_gave_up(destination, "TLS record error")

    def test_wrong_psk_and_tls_to_a_plaintext_destination(self):
        psk_destination, psk_uri = self.incoming(None, {"tls-creds": "psk0"},
                                                 extra=psk("psk0", self.psk_server, "server"))
        plain_destination, plain_uri = self.incoming(None, None)
        source = self.start_source(extra=(*psk("wrong", self.psk_wrong, "client"),
                                          *x509("tls0", self.client, "client")))
        self.configure(source, None, {"tls-creds": "wrong"})
        self.assert_refused(source, psk_uri, "TLS handshake", "PSK")
        self.configure(source, None, {"tls-creds": "tls0", "tls-hostname": "localhost"})
        self.assert_refused(source, plain_uri, "TLS handshake")
        for vm in (psk_destination, plain_destination):
            self.assertEqual(vm.qmp.command("query-status")["status"], "inmigrate")

    def test_expired_and_not_yet_valid_destination_certificates(self):
        source = self.start_source(extra=x509("tls0", self.client, "client"))
        self.configure(source, None, {"tls-creds": "tls0", "tls-hostname": "localhost"})
        for name, validity, phrase in (("expired", EXPIRED, "has expired"),
                                       ("future", NOT_YET_VALID, "not valid yet")):
            with self.subTest(name=name):
                directory = self.pki.x509_dir("server", name, validity=validity)
                with self.assertRaisesRegex(QmpError, phrase):
                    source.qmp.command("object-add", **{"qom-type": "tls-creds-x509",
                                                        "id": name, "dir": directory,
                                                        "endpoint": "server"})
                server = TlsServer(directory)
                self.addCleanup(server.close)
                self.assert_refused(source, server.uri, "destination's certificate was refused",
                                    phrase)


class Objects(TlsTestCase):
    """Objects are checked when they are made; parameters when a migration
    starts; each refusal is a sentence that says what to fix."""

    def add(self, vm, **properties):
        return vm.qmp.command("object-add", **properties)

    def test_object_errors(self):
        vm = self.start_source()
        mismatch = self.pki.x509_dir("server", "mismatch")
        os.replace(os.path.join(self.intruder, "client-key.pem"),
                   os.path.join(mismatch, "server-key.pem"))
        garbage = self.pki.x509_dir("server", "garbage")
        with open(os.path.join(garbage, "server-key.pem"), "w") as f:
            f.write("not a key\n")
        bad = os.path.join(self.pki.dir, "bad-psk")
        os.makedirs(bad)
        with open(os.path.join(bad, "keys.psk"), "w") as f:
            f.write("godwit:xyz\n")
        x509_server = {"qom-type": "tls-creds-x509", "endpoint": "server"}
        cases = [
            ({**x509_server, "id": "a", "dir": "/nonexistent"}, "cannot use dir"),
            ({**x509_server, "id": "a", "dir": self.no_cert}, "server-cert.pem"),
            ({**x509_server, "id": "a", "dir": mismatch}, "is not the private key of"),
            ({**x509_server, "id": "a", "dir": garbage}, "cannot load the certificate and key"),
            ({**x509_server, "id": "a", "dir": self.server, "endpoint": "both"},
             "endpoint is 'server' or 'client'"),
            ({**x509_server, "id": "1a", "dir": self.server}, "must start with a letter"),
            ({"qom-type": "tls-creds-psk", "id": "a", "dir": bad}, "not USERNAME:HEXKEY"),
            ({"qom-type": "tls-creds-psk", "id": "a", "dir": self.psk_client,
              "username": "nobody"}, "no key for username 'nobody'"),
            ({"qom-type": "authz-simple", "id": "a"}, "identity is missing"),
            ({"qom-type": "memory-backend-ram", "id": "a"}, "not one godwit makes"),
        ]
        for properties, phrase in cases:
            with self.subTest(properties=properties):
                with self.assertRaisesRegex(QmpError, phrase):
                    self.add(vm, **properties)
        with self.assertRaisesRegex(QmpError, "Parameter 'priority2' is unexpected"):
            self.add(vm, **x509_server, id="a", dir=self.server, priority2="x")
        self.add(vm, **x509_server, id="server", dir=self.server)
        self.add(vm, **{"qom-type": "tls-creds-x509", "id": "client", "dir": self.client,
                        "endpoint": "client", "verify-peer": True})
        with self.assertRaisesRegex(QmpError, "exists already"):
            self.add(vm, **x509_server, id="server", dir=self.server)
        with self.assertRaisesRegex(QmpError, "object 'nothing' not found"):
            vm.qmp.command("object-del", id="nothing")

        def refused(params, uri, phrase):
            self.configure(vm, None, params)
            with self.assertRaisesRegex(QmpError, phrase):
                vm.qmp.command("migrate", uri=uri)

        refused({"tls-creds": "nothing"}, "tcp:127.0.0.1:1", "no such object")
        refused({"tls-creds": "server"}, "tcp:127.0.0.1:1", "needs endpoint=client")
        refused({"tls-creds": "client"}, f"file:{vm.path('x')}", "file: URI has no peer")
        refused({"tls-creds": "client"}, "rdma:127.0.0.1:1", "rdma:")
        refused({"tls-creds": "client", "tls-hostname": ""}, f"unix:{vm.path('x')}",
                "set tls-hostname")
        vm.qmp.command("object-del", id="client")
        refused({"tls-creds": "client"}, "tcp:127.0.0.1:1", "no such object")
        self.configure(vm, None, {"tls-creds": None, "tls-hostname": "h", "tls-authz": ""})
        params = vm.qmp.command("query-migrate-parameters")
        self.assertEqual((params["tls-creds"], params["tls-hostname"], params["tls-authz"]),
                         ("", "h", ""))
        vm.qmp.hmp("migrate_set_parameter tls-creds server")
        self.assertIn("tls-creds: 'server'", vm.qmp.hmp("info migrate_parameters"))
        self.assert_source_whole(vm)

    def test_startup_object_errors(self):
        for extra, phrase in ((("--object", "tls-creds-x509,id=t,dir=/nonexistent"),
                               "cannot use dir"),
                              (("--object", f"tls-creds-x509,id=t,dir={self.server},bogus=1"),
                               "has no property 'bogus'"),
                              (("--object", "tls-creds-psk"), "not TYPE,id=ID")):
            with self.subTest(extra=extra):
                vm = self.start_vm(extra=extra)
                status, _, err = vm.wait_exit(timeout=20)
                self.assertNotEqual(status, 0)
                self.assertIn("--object", err)
                self.assertIn(phrase, err)


if __name__ == "__main__":
    tap.main()

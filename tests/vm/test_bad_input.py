"""Every way to start godwit-vm wrongly: one clear line on stderr that says
what is wrong and what is allowed, exit status 2, and no file left behind."""
import os
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from godwit_vm import GODWIT_VM, TESTGUEST, VmTestCase, require_kvm  # noqa: E402


class BadInput(VmTestCase):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="godwit-bad-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))

    def run_vm(self, *args):
        """Runs godwit-vm with args plus a QMP socket and serial file in the
        temp dir; returns (status, stderr) and checks nothing was left."""
        before = set(os.listdir(self.dir))
        result = subprocess.run([GODWIT_VM, *args], capture_output=True, text=True, timeout=30)
        self.assertEqual(set(os.listdir(self.dir)), before,
                         f"files left behind: {set(os.listdir(self.dir)) - before}")
        return result.returncode, result.stderr

    def assert_refused(self, args, *expected_phrases):
        status, stderr = self.run_vm(*args)
        self.assertEqual(status, 2, f"status {status}, stderr: {stderr}")
        lines = stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, f"want one line, got: {stderr!r}")
        self.assertTrue(lines[0].startswith("godwit-vm: "), lines[0])
        for phrase in expected_phrases:
            self.assertIn(phrase, lines[0])

    def common(self):
        return ["--qmp", f"unix:{self.dir}/qmp.sock", "--serial", f"file:{self.dir}/serial.txt"]

    def write_file(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_missing_kernel_file(self):
        self.assert_refused(["--kernel", "/nonexistent/kernel.elf", *self.common()],
                            "/nonexistent/kernel.elf", "No such file")

    def test_no_kernel_option(self):
        self.assert_refused(self.common(), "--kernel FILE")

    def test_kernel_that_is_not_multiboot(self):
        # A real ELF without a multiboot header: the test program itself.
        self.assert_refused(["--kernel", "/bin/true", *self.common()], "64-bit ELF")
        text = self.write_file("kernel.txt", b"hello, not a kernel\n" * 10)
        self.assert_refused(["--kernel", text, *self.common()], "not an ELF file")
        os.unlink(text)

    def test_smp_and_cpu(self):
        base = ["--kernel", TESTGUEST, *self.common()]
        self.assert_refused(["--smp", "0", *base], "--smp 0", "from 1 to 8")
        self.assert_refused(["--smp", "9", *base], "from 1 to 8")
        self.assert_refused(["--smp", "two", *base], "from 1 to 8")
        self.assert_refused(["--cpu", "pentium", *base], "godwit (the default) or host")
        self.assert_refused(["--cpu", "godwit,+warp", *base], "unknown feature 'warp'",
                            "xsaveerptr")
        self.assert_refused(["--cpu", "host,cx16", *base], "not +FEATURE or -FEATURE")

    def test_memory_sizes(self):
        base = ["--kernel", TESTGUEST, *self.common()]
        self.assert_refused(["--memory", "0", *base], "at least 16M")
        self.assert_refused(["--memory", "lots", *base], "not a size", "64M")
        self.assert_refused(["--memory", "12M", *base], "at least 16M")
        self.assert_refused(["--memory", "64X", *base], "suffix")
        self.assert_refused(["--memory", "100T", *base], "available memory", "use 16M up to")

    def test_unwritable_serial_path(self):
        self.assert_refused(["--kernel", TESTGUEST, "--qmp", f"unix:{self.dir}/qmp.sock",
                             "--serial", "file:/nonexistent/dir/serial.txt"],
                            "--serial", "/nonexistent/dir/serial.txt")
        self.assert_refused(["--kernel", TESTGUEST, "--serial", "tcp:1234"],
                            "file:PATH, stdio or none")

    def test_qmp_socket_in_use(self):
        path = f"{self.dir}/busy.sock"
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        holder.bind(path)
        holder.listen(1)
        try:
            self.assert_refused(["--kernel", TESTGUEST, "--qmp", f"unix:{path}",
                                 "--serial", f"file:{self.dir}/serial.txt"],
                                "already in use")
        finally:
            holder.close()
            os.unlink(path)
        self.assert_refused(["--kernel", TESTGUEST, "--qmp", "tcp:localhost:4444"],
                            "unix:PATH")

    def test_unknown_option(self):
        self.assert_refused(["--kernel", TESTGUEST, "--frobnicate"], "--frobnicate",
                            "--memory")
        self.assert_refused(["--kernel", TESTGUEST, "stray"], "stray")
        self.assert_refused(["--kernel"], "needs a value")

    def test_incoming_with_a_bad_uri(self):
        self.assert_refused(["--kernel", TESTGUEST, "--incoming", "tcp:nohost", *self.common()],
                            "accepted forms")
        self.assert_refused(["--kernel", TESTGUEST, "--incoming", "ftp:x:1", *self.common()],
                            "unknown transport 'ftp'")
        # fd:NAME names a descriptor passed later with getfd: none exists yet.
        self.assert_refused(["--kernel", TESTGUEST, "--incoming", "fd:migrate", *self.common()],
                            "--incoming defer, then getfd")

    def test_help_and_version(self):
        result = subprocess.run([GODWIT_VM, "--help"], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0)
        for option in ("--memory", "--kernel", "--append", "--serial", "--qmp", "--mem-path",
                       "--mem-prealloc", "--incoming", "-S, --paused", "--name", "--help",
                       "--version"):
            self.assertIn(option, result.stdout)
        result = subprocess.run([GODWIT_VM, "--version"], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0)
        self.assertRegex(result.stdout, r"^godwit-vm \d+\.\d+\.\d+\n$")

    def test_bad_rate_under_accel_none(self):
        """--accel none checks rate= as the guest does, before anything runs.
        It is refused once the VM is being built, so with the status of a VM
        that could not start (1), not of a bad option (2)."""
        for rate in ("0", "fast", "64M", "1048577", "", "-5"):
            status, stderr = self.run_vm("--kernel", TESTGUEST, "--accel", "none", "--append",
                                         f"mode=dirty rate={rate}", *self.common())
            self.assertEqual(status, 1, stderr)
            self.assertEqual(stderr, "godwit-vm: --append: rate= takes whole MiB/s from 1 to "
                             f"1048576, not '{rate}'\n")

    def test_stale_socket_file_is_replaced(self):
        """A socket file from a dead process is not 'in use'."""
        path = f"{self.dir}/stale.sock"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()
        vm = self.start_vm(memory="16M", append="mode=idle",
                           extra=("--qmp", f"unix:{path}"))
        vm.qmp_path = path
        vm.connect().command("quit")
        self.assertEqual(vm.wait_exit()[0], 0)


class GuestErrors(VmTestCase):
    """The guest reports its own errors through isa-debug-exit; godwit-vm
    exits with QEMU's status for it, (code << 1) | 1."""

    def expect_guest_exit(self, append, code):
        require_kvm(self)
        vm = self.start_vm(memory="32M", append=append)
        status, _, err = vm.wait_exit(timeout=20)
        self.assertEqual(status, (code << 1) | 1, err)
        self.assertIn("isa-debug-exit", err)

    def test_bad_mode(self):
        self.expect_guest_exit("mode=bogus", 2)

    def test_bad_size(self):
        self.expect_guest_exit("mode=dirty start=lots", 2)

    def test_inverted_range(self):
        self.expect_guest_exit("mode=dirty start=20M end=10M", 3)

    def test_range_past_memory(self):
        self.expect_guest_exit("mode=dirty start=1M end=64M", 3)

    def test_bad_rate(self):
        for rate in ("0", "fast", "64M", "1048577", ""):
            with self.subTest(rate=rate):
                self.expect_guest_exit(f"mode=dirty start=1M end=8M rate={rate}", 2)


if __name__ == "__main__":
    tap.main()

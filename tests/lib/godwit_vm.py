"""Drives godwit-vm (or QEMU) from tests: start it, talk QMP, read the serial
output, check guest memory with the migration-test rule. Standard library
only, so the tests run on a fresh machine."""
import ctypes
import json
import os
import signal
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

GODWIT_VM = os.environ.get("GODWIT_VM", "build/vm/godwit-vm")
_PR_SET_PDEATHSIG = 1


def die_with_parent():
    """preexec_fn for every process a test starts: it gets SIGKILL when the
    test process dies, so a test killed by a time-out leaves no VM behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
TESTGUEST = os.environ.get("TESTGUEST", "build/guest/testguest.elf")
PAGE_SIZE = 4096


def kvm_skip_reason():
    """Why a test that needs KVM cannot run here, or None."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist on this machine"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return None


def require_kvm(test):
    """For tests of what only a real KVM guest shows (its CPU state, the
    guest's own code); the rest run with --accel none where KVM is missing."""
    reason = kvm_skip_reason()
    if reason:
        test.skipTest(reason)


# How godwit-vm runs the test guest: on KVM, or, where /dev/kvm is missing
# (or GODWIT_ACCEL=none), with --accel none: a host thread plays the guest
# (vm/soft_cpu.h) and everything else, the engine, its channels and threads,
# the monitor and the devices, is the same.
ACCEL = os.environ.get("GODWIT_ACCEL") or ("none" if kvm_skip_reason() else "kvm")
ACCEL_ARGS = ("--accel", "none") if ACCEL == "none" else ()
# GODWIT_TEST_DIRTY_RING=N: every godwit-vm on KVM tracks dirty pages with
# KVM's dirty ring of N entries per vCPU instead of the dirty bitmap, so the
# same tests prove the second tracker (tests/meson.build runs the key ones
# so). Without KVM there is no ring: require_dirty_ring skips such a run.
DIRTY_RING = int(os.environ.get("GODWIT_TEST_DIRTY_RING") or 0)
if DIRTY_RING and ACCEL == "kvm":
    ACCEL_ARGS = ("--accel", f"kvm,dirty-ring-size={DIRTY_RING}")


def dirty_ring_skip_reason():
    """Why a run meant for the dirty ring (GODWIT_TEST_DIRTY_RING) cannot
    use it here, or None; such a run skips every test rather than pass
    them on the bitmap or --accel none."""
    if DIRTY_RING and ACCEL != "kvm":
        return (f"GODWIT_TEST_DIRTY_RING={DIRTY_RING} needs KVM's dirty ring: "
                f"{kvm_skip_reason() or 'GODWIT_ACCEL=' + ACCEL}")
    return None
if ACCEL == "none" and not os.environ.get("GODWIT_ACCEL_NOTED"):
    os.environ["GODWIT_ACCEL_NOTED"] = "1"
    print(f"# godwit-vm runs with --accel none here: {kvm_skip_reason() or 'GODWIT_ACCEL=none'}",
          flush=True)


class QmpError(Exception):
    def __init__(self, error):
        super().__init__(f"{error.get('class')}: {error.get('desc')}")
        self.error_class = error.get("class")
        self.desc = error.get("desc")


class Qmp:
    """A QMP client: replies are matched to requests, events are kept."""

    def __init__(self, path, timeout=10.0, negotiate=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.buffer = b""
        self.events = []
        self.greeting = self.read_message()
        if negotiate:
            self.command("qmp_capabilities")

    def read_message(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def send_fds(self, data, fds):
        """Sends data with descriptors attached (SCM_RIGHTS): the server
        keeps the first for the next getfd. libvirt attaches the descriptor
        to the getfd request itself; qemu.qmp's send_fd_scm sends it with a
        single space before the request."""
        data = data if isinstance(data, bytes) else data.encode()
        sent = socket.send_fds(self.sock, [data], list(fds))
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def getfd(self, name, fd, attached=True):
        """QEMU's getfd: passes fd and names it. attached=False sends the
        descriptor first, on its own, as qemu.qmp does."""
        request = json.dumps({"execute": "getfd", "arguments": {"fdname": name}}) + "\n"
        if attached:
            self.send_fds(request, [fd])
        else:
            self.send_fds(b" ", [fd])
            self.send_raw(request)
        reply = self.read_reply()
        if "error" in reply:
            raise QmpError(reply["error"])
        return reply["return"]

    def read_reply(self):
        """The next reply (return or error), keeping events aside."""
        while True:
            message = self.read_message()
            if "event" in message:
                self.events.append(message)
                continue
            return message

    def execute(self, command, **arguments):
        """Sends a command, returns the whole reply."""
        request = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.send_raw(json.dumps(request) + "\n")
        return self.read_reply()

    def command(self, command, **arguments):
        reply = self.execute(command, **arguments)
        if "error" in reply:
            raise QmpError(reply["error"])
        return reply["return"]

    def hmp(self, command_line):
        return self.command("human-monitor-command", **{"command-line": command_line})

    def wait_event(self, name, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["event"] == name:
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {name} event within {timeout}s")
            self.sock.settimeout(remaining)
            message = self.read_message()
            if "event" in message:
                self.events.append(message)

    def close(self):
        self.sock.close()


class Serial:
    """The guest's COM1 output, read from the file godwit-vm writes it to."""

    def __init__(self, path):
        self.path = path

    def text(self):
        try:
            with open(self.path, "rb") as f:
                return f.read().decode("latin-1")
        except FileNotFoundError:
            return ""

    def wait_for(self, predicate, what, timeout=20.0, process=None):
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if predicate(text):
                return text
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the VM exited with status {process.returncode} "
                                     f"while waiting for {what}; serial: {text[-200:]!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout}s; serial: {text[-200:]!r}")
            time.sleep(0.01)

    def wait_count(self, char, count, timeout=20.0, process=None):
        return self.wait_for(lambda t: t.count(char) >= count,
                             f"{count} x {char!r} on the serial port", timeout, process)


class Vm:
    """A godwit-vm process in a temporary directory, with QMP and serial."""

    def __init__(self, memory="64M", append="", extra=(), binary=None, kernel=None,
                 pass_fds=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="godwit-test-")
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.serial = Serial(os.path.join(self.dir, "serial.txt"))
        self.args = [binary or GODWIT_VM, "--memory", memory, "--kernel", kernel or TESTGUEST,
                     "--append", append, "--serial", f"file:{self.serial.path}",
                     "--qmp", f"unix:{self.qmp_path}", *ACCEL_ARGS, *extra]
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, pass_fds=pass_fds,
                                        env={**os.environ, **env} if env else None,
                                        preexec_fn=die_with_parent)
        self.qmp = None

    def connect(self):
        self.qmp = Qmp(self.qmp_path)
        return self.qmp

    def wait_exit(self, timeout=10.0):
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def close(self):
        if self.qmp:
            self.qmp.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        else:
            self.process.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def read_memory(self, address, size, name="dump.bin"):
        """Guest-physical memory through pmemsave."""
        dump = self.path(name)
        self.qmp.command("pmemsave", val=address, size=size, filename=dump)
        with open(dump, "rb") as f:
            data = f.read()
        os.unlink(dump)
        return data


def stop_process(pid, timeout=10.0):
    """SIGSTOP, and wait until every thread of pid has stopped: a group stop
    is not done when kill() returns (each thread takes the signal in its own
    time), and a thread still running could answer a peer meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                continue
        if states and all(state in "tT" for state in states):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


def free_tcp_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


FINAL_STATUSES = ("completed", "failed", "cancelled")


def wait_migration(qmp, statuses=FINAL_STATUSES, timeout=60.0, predicate=None):
    """Polls query-migrate until its status is one of statuses (and
    predicate(info) holds, if given); returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        info = qmp.command("query-migrate")
        if info.get("status") in statuses and (predicate is None or predicate(info)):
            return info
        if info.get("status") in FINAL_STATUSES and info.get("status") not in statuses:
            raise AssertionError(f"migration ended as {info.get('status')}: "
                                 f"{info.get('error-desc')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"migration still {info.get('status')} after {timeout}s: {info}")
        time.sleep(0.02)


def first_bytes_of_pages(data):
    return data[::PAGE_SIZE]


def check_increment_pattern(data):
    """QEMU's migration-test rule for the dirty guest: every page's first byte
    equals the one before, except at most one place where a page is one less
    (mod 256) than the page before: where the guest's pass was when it
    stopped. Returns the number of such edges; raises on any other pattern."""
    values = first_bytes_of_pages(data)
    edges = 0
    for i in range(1, len(values)):
        if values[i] == values[i - 1]:
            continue
        if (values[i - 1] - values[i]) & 0xff == 1:
            edges += 1
            if edges > 1:
                raise AssertionError(f"a second edge at page {i}: lost or stale pages")
            continue
        raise AssertionError(f"page {i} holds {values[i]} after {values[i - 1]}: "
                             "neither equal nor one less")
    return edges


def check_pass_count(data, passes):
    """The dirty guest's first page holds the number of passes it finished
    (the B's it printed, on every host it ran on) or one more if it had begun
    the next, modulo 256: a lost or repeated pass breaks this."""
    first = data[0]
    if first not in (passes % 256, (passes + 1) % 256):
        raise AssertionError(f"page 0 holds {first} after {passes} passes: a pass was lost "
                             "or stale memory won")


class VmTestCase(unittest.TestCase):
    """Starts no VM itself; tracks the ones a test starts and cleans them up."""

    def setUp(self):
        self.vms = []
        reason = dirty_ring_skip_reason()
        if reason:
            self.skipTest(reason)

    def tearDown(self):
        for vm in self.vms:
            vm.close()

    def start_vm(self, **kwargs):
        vm = Vm(**kwargs)
        self.vms.append(vm)
        return vm


# --- The migration stream (docs/stream.md), for tests that forge or damage one ---

STREAM_MAGIC = b"GODWITMS"
STREAM_HEADER_SIZE = 24
RECORD_HEADER_SIZE = 16
REC_RAM_BLOCKS, REC_PAGES, REC_ZERO_PAGES, REC_DEVICE, REC_END, REC_GO = 1, 2, 3, 4, 5, 6
REC_PASS_END = 0x80000007
REC_RP_READY, REC_RP_RUNNING, REC_RP_ERROR = 0x101, 0x102, 0x103


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC32C (Castagnoli, reflected 0x82F63B78, init and final xor
    0xFFFFFFFF); crc chains a previous result, as the stream's record CRC
    covers the header's first 8 bytes and then the body."""
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def stream_record(rtype, body=b"", crc=None):
    """One record whose CRC covers the whole body (every type but PAGES):
    header, body, zero padding to 8. crc=None computes the right CRC; pass
    a value to forge a wrong one."""
    head = rtype.to_bytes(4, "little") + len(body).to_bytes(4, "little")
    if crc is None:
        crc = crc32c(body, crc32c(head))
    return (head + crc.to_bytes(4, "little") + len(body).to_bytes(4, "little") + body +
            bytes(-len(body) % 8))


def rp_error_record(errno_value, text):
    """An RP_ERROR answer: i32 errno (negative), then the sentence."""
    return stream_record(REC_RP_ERROR, errno_value.to_bytes(4, "little", signed=True) +
                         text.encode())


# Multifd (docs/stream.md, "Multifd channels"): more record types, the
# 48-byte channel header every multifd connection starts with.
REC_CONFIG, REC_PAGES_ZSTD, REC_SYNC, REC_CHANNEL_END = 8, 9, 10, 11
DEVICE_LAST, DEVICE_PRECOPY = 1, 2
DEVICE_HEADER_SIZE = 48                 # id[32], instance, version, index, flags
DEVICE_BODY_BOUND = 48 + (16 << 20)     # the bound on a DEVICE record's body
CHANNEL_MAGIC = b"GODWITCH"
CHANNEL_HEADER_SIZE = 48
CHANNEL_MAIN, CHANNEL_RAM, CHANNEL_DEVICE = 1, 2, 3


def channel_header(ctype, index, migration_id, crc=None, version=1, magic=CHANNEL_MAGIC):
    """A channel header: magic, version, type, index, reserved, the 16-byte
    migration id, the CRC32C of bytes 0..39 (crc=None computes it; pass a
    value to forge a wrong one), reserved."""
    if len(migration_id) != 16:
        raise ValueError("a migration id is 16 bytes")
    head = (magic + version.to_bytes(4, "little") + ctype.to_bytes(4, "little") +
            index.to_bytes(4, "little") + bytes(4) + migration_id)
    if crc is None:
        crc = crc32c(head)
    return head + crc.to_bytes(4, "little") + bytes(4)


def parse_channel_header(data):
    """The fields of a 48-byte channel header, as a dict (crc_ok says
    whether its CRC matches)."""
    if len(data) != CHANNEL_HEADER_SIZE:
        raise ValueError(f"a channel header is {CHANNEL_HEADER_SIZE} bytes, not {len(data)}")
    field = lambda offset: int.from_bytes(data[offset:offset + 4], "little")  # noqa: E731
    return {"magic": bytes(data[0:8]), "version": field(8), "type": field(12),
            "index": field(16), "id": bytes(data[24:40]),
            "crc_ok": crc32c(bytes(data[0:40])) == field(40)}


def parse_device_header(body):
    """A DEVICE record's first 48 body bytes: id, instance, version, index,
    flags."""
    field = lambda offset: int.from_bytes(body[offset:offset + 4], "little")  # noqa: E731
    return {"id": bytes(body[0:32]).rstrip(b"\0").decode("latin-1"), "instance": field(32),
            "version": field(36), "index": field(40), "flags": field(44)}


def recv_exact_into(sock, size):
    """size bytes from sock as a bytearray (16 MiB bodies are not copied
    again); EOFError if it closes first."""
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if not n:
            raise EOFError(f"the peer closed after {got} of {size} bytes")
        got += n
    return data


def recv_exact(sock, size):
    """size bytes from sock; EOFError if it closes first."""
    return bytes(recv_exact_into(sock, size))


def read_return_record(sock):
    """One record as the destination writes it on a connection's return path
    (no stream header there): (type, body, crc_ok)."""
    head = recv_exact(sock, RECORD_HEADER_SIZE)
    rtype = int.from_bytes(head[0:4], "little")
    length = int.from_bytes(head[4:8], "little")
    if length > 1 << 16:
        raise ValueError(f"a return-path record of type {rtype:#x} claims {length} bytes")
    body = recv_exact(sock, length + (-length % 8))[:length]
    crc_ok = int.from_bytes(head[8:12], "little") == crc32c(body, crc32c(head[:8]))
    return rtype, body, crc_ok


def parse_stream(data):
    """The records of a whole stream held in memory, as dicts with offset,
    type, length, crc_length and body_offset (within data); stops at the
    first incomplete record. Checks neither CRCs nor the header."""
    records = []
    offset = STREAM_HEADER_SIZE
    while offset + RECORD_HEADER_SIZE <= len(data):
        rtype = int.from_bytes(data[offset:offset + 4], "little")
        length = int.from_bytes(data[offset + 4:offset + 8], "little")
        end = offset + RECORD_HEADER_SIZE + length + (-length % 8)
        if end > len(data):
            break
        crc_length = int.from_bytes(data[offset + 12:offset + 16], "little")
        records.append({"offset": offset, "type": rtype, "length": length,
                        "crc_length": crc_length, "body_offset": offset + RECORD_HEADER_SIZE})
        offset = end
    return records


class FakeDestination:
    """A destination that is not godwit-vm: a thread serving a unix socket
    that reads the source's stream record by record and answers as told.
    answer_after_header: bytes sent back once the stream header has arrived
    (then it closes if close_after_answer, else reads on); answer_after_blocks:
    the same once the RAM_BLOCKS record has arrived; answer_after_end:
    bytes sent back once END has arrived (RP_READY, RP_ERROR), then it reads
    on; answer_after_go: (delay in s, bytes) sent back that long after GO
    has arrived; close_after_end: close the connection once END has arrived, without
    a word. Otherwise it reads and discards everything until the source
    closes, and never answers."""

    def __init__(self, path, answer_after_header=None, close_after_answer=False,
                 answer_after_end=None, close_after_end=False, answer_after_blocks=None,
                 answer_after_go=None):
        import threading
        self.path = path
        self.answer_after_header = answer_after_header
        self.answer_after_blocks = answer_after_blocks
        self.close_after_answer = close_after_answer
        self.answer_after_end = answer_after_end
        self.close_after_end = close_after_end
        self.answer_after_go = answer_after_go
        self.types = []               # record types in arrival order
        self.bytes_read = 0
        self.header = None
        self.end_seen = threading.Event()
        self.go_seen = threading.Event()
        self.finished = threading.Event()   # the connection is gone
        self.error = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.connection = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def uri(self):
        return f"unix:{self.path}"

    def _read_exact(self, size):
        data = b""
        while len(data) < size:
            chunk = self.connection.recv(min(size - len(data), 1 << 20))
            if not chunk:
                raise EOFError(f"the source closed after {self.bytes_read + len(data)} bytes")
            data += chunk
        self.bytes_read += size
        return data

    def _serve(self):
        try:
            self.connection, _ = self.listener.accept()
            self.header = self._read_exact(STREAM_HEADER_SIZE)
            if self.answer_after_header:
                self.connection.sendall(self.answer_after_header)
                if self.close_after_answer:
                    self.connection.close()
                    self.connection = None
                    return
            while True:
                head = self._read_exact(RECORD_HEADER_SIZE)
                rtype = int.from_bytes(head[0:4], "little")
                length = int.from_bytes(head[4:8], "little")
                self._read_exact(length + (-length % 8))
                self.types.append(rtype)
                if rtype == REC_RAM_BLOCKS and self.answer_after_blocks:
                    self.connection.sendall(self.answer_after_blocks)
                    if self.close_after_answer:
                        self.connection.close()
                        self.connection = None
                        return
                if rtype == REC_GO:
                    self.go_seen.set()
                    if self.answer_after_go:
                        time.sleep(self.answer_after_go[0])
                        self.connection.sendall(self.answer_after_go[1])
                if rtype == REC_END:
                    self.end_seen.set()
                    if self.answer_after_end:
                        self.connection.sendall(self.answer_after_end)
                    if self.close_after_end:
                        self.connection.close()
                        self.connection = None
                        return
        except (EOFError, OSError) as error:
            self.error = error
        finally:
            self.finished.set()

    def close(self):
        for sock in (self.connection, self.listener):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        self.thread.join(timeout=5)


def watch_until_exit(vm, timeout=30.0, kill_at_timeout=True):
    """Polls a VM's query-status until the process ends (a destination that
    fails exits by itself); returns (exit status, the set of statuses seen,
    stderr). Connection errors while the VM goes away are expected."""
    deadline = time.monotonic() + timeout
    seen = set()
    qmp = vm.qmp
    while vm.process.poll() is None and time.monotonic() < deadline:
        try:
            if qmp is None:
                if not os.path.exists(vm.qmp_path):
                    time.sleep(0.01)
                    continue
                qmp = Qmp(vm.qmp_path, timeout=0.2)
                qmp.sock.settimeout(5.0)
                vm.qmp = qmp
            seen.add(qmp.command("query-status")["status"])
        except (OSError, ConnectionError, ValueError, QmpError):
            if vm.process.poll() is None:
                time.sleep(0.01)
            continue
        time.sleep(0.01)
    if vm.process.poll() is None and kill_at_timeout:
        vm.process.kill()
        _, err = vm.process.communicate()
        raise TimeoutError(f"the VM did not exit within {timeout}s (statuses {seen}); "
                           f"stderr: {err[-500:]!r}")
    _, err = vm.process.communicate(timeout=10)
    return vm.process.returncode, seen, err


# --- QEMU beside godwit-vm (benchmarks, the QEMU boot test) ---

QEMU = os.environ.get("QEMU", "qemu-system-x86_64")


class QemuVm(Vm):
    """A qemu-system-x86_64 process with Vm's interface (dir, qmp_path,
    serial, process, connect, read_memory, close): the same test guest loaded
    with -kernel, COM1 to a file, QMP on a unix socket, isa-debug-exit where
    godwit-vm has it. extra: more QEMU options (memory backend, -incoming)."""

    def __init__(self, memory="64M", append="", extra=(), binary=None, kernel=None,
                 accel="kvm", machine="pc", bios=None):
        self.dir = tempfile.mkdtemp(prefix="godwit-qemu-")
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.serial = Serial(os.path.join(self.dir, "serial.txt"))
        self.args = [binary or QEMU, "-machine", machine, "-accel", accel, "-m", memory,
                     "-display", "none", "-nodefaults", "-no-reboot",
                     "-kernel", kernel or TESTGUEST, "-append", append,
                     "-serial", f"file:{self.serial.path}",
                     "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                     "-device", "isa-debug-exit,iobase=0x501,iosize=2",
                     *(("-bios", bios) if bios else ()), *extra]
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True,
                                        preexec_fn=die_with_parent)
        self.qmp = None

    def connect(self, timeout=10.0):
        self.qmp = Qmp(self.qmp_path, timeout=timeout)
        return self.qmp


def event_time(event):
    """A QMP event's timestamp in seconds (wall clock of the VMM that sent it)."""
    stamp = event["timestamp"]
    return stamp["seconds"] + stamp["microseconds"] / 1e6


MiB = 1 << 20
DIRTY = "mode=dirty start=1M end=100M"


class MigrationTestCase(VmTestCase):
    """Sources, destinations and the check that a migrated guest is whole."""

    def start_source(self, memory="128M", append=DIRTY, extra=(), pass_fds=()):
        source = self.start_vm(memory=memory, append=append, extra=extra, pass_fds=pass_fds)
        source.connect()
        source.serial.wait_count("A", 1, process=source.process)
        return source

    def start_destination(self, incoming, memory="128M", extra=(), pass_fds=(), env=None):
        destination = self.start_vm(memory=memory, extra=("--incoming", incoming, *extra),
                                    pass_fds=pass_fds, env=env)
        destination.connect()
        self.assertEqual(destination.qmp.command("query-status")["status"], "inmigrate")
        return destination

    def check_running_guest(self, vm, low=MiB, high=100 * MiB, earlier=(), resume=False):
        """The dirty guest runs where it is: it makes new passes; stopped,
        its memory follows the increment rule and page 0 counts every pass
        it made here and on the hosts it came from (earlier). Returns the
        number of edges (0 or 1); resume=True lets it run on afterwards."""
        self.assertEqual(vm.qmp.command("query-status")["status"], "running")
        before = vm.serial.text().count("B")
        vm.serial.wait_count("B", before + 2, process=vm.process)
        vm.qmp.command("stop")
        data = vm.read_memory(low, high - low)
        check_pass_count(data, vm.serial.text().count("B") +
                         sum(e.serial.text().count("B") for e in earlier))
        edges = check_increment_pattern(data)
        if resume:
            vm.qmp.command("cont")
        return edges

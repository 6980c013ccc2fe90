"""A TCP proxy between a migration source and its destination, for tests of
multifd channels (docs/stream.md, "Multifd channels").

It forwards every connection the source opens to the destination's address,
and the destination's answers (the return path) back unchanged. On the way
it reads each channel's 48-byte header (or tells a main channel without one
by its stream magic), then the stream header and every record, so a test can
see which channel carried what (`channels`), and, on the channels of the
types in `tamper_types` (device-state channels by default), it can tamper
with the stop-copy DEVICE buffers of one device:

- "reverse": hold them all, send them in reverse order before CHANNEL_END
  (the spec lets buffers of a device come in any order: it must load)
- "duplicate": send the chosen buffer twice
- "drop": leave the chosen buffer out
- "oversize": declare a body length one byte past the DEVICE bound
- "rename": give the chosen buffer another device id (record CRC recomputed)
- "stall": forward neither the chosen buffer nor anything after it on that
  channel (still read from the source): the source sits in its switchover
  waiting for an answer that cannot come

The chosen buffer is `buffer` (an index, or "last" for the one flagged
LAST). What was done is listed in `tampered`.

slow=(type, index, seconds, records) makes one channel lag: after its first
SYNC it waits before forwarding each of its next `records` records (None:
all of them), so its
passes arrive long after the other channels' (invariant 3).

inject_foreign=True plays a channel of another migration: once the main
channel's CONFIG record has been forwarded (the destination knows the
migration id then), and before any multifd channel is forwarded, the proxy
opens a connection of its own to the destination, sends a RAM channel header
with index 0 and a different migration id, and records in `foreign` what
came back. The source's multifd channels wait for that.

hold() stops forwarding records on every channel (nothing is read from the
source any more, so its writes fill the buffers on the way); close() then
loses all of that: a link cut with data in flight (postcopy recovery).

Standard library only; CRC32C through isa-l (ctypes) when it is there,
pure Python otherwise."""
import ctypes
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from godwit_vm import (recv_exact_into, CHANNEL_DEVICE, CHANNEL_HEADER_SIZE, CHANNEL_MAGIC,  # noqa: E402
                       CHANNEL_MAIN, CHANNEL_RAM, DEVICE_BODY_BOUND, DEVICE_HEADER_SIZE,
                       DEVICE_LAST, DEVICE_PRECOPY, RECORD_HEADER_SIZE, REC_CHANNEL_END,
                       REC_CONFIG, REC_DEVICE, REC_SYNC, STREAM_HEADER_SIZE, STREAM_MAGIC,
                       channel_header, crc32c as _crc32c_python, parse_channel_header,
                       parse_device_header, read_return_record)

ACTIONS = (None, "reverse", "duplicate", "drop", "oversize", "rename", "stall")
SMALL_BODY = 64
CHANNEL_KINDS = {CHANNEL_MAIN: "main", CHANNEL_RAM: "ram", CHANNEL_DEVICE: "device"}


def _isal_crc32_iscsi():
    for name in ("libisal.so.2", "libisal.so"):
        try:
            function = ctypes.CDLL(name).crc32_iscsi
        except (OSError, AttributeError):
            continue
        function.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32)
        function.restype = ctypes.c_uint32
        return function
    return None


_CRC32_ISCSI = _isal_crc32_iscsi()


def crc32c(data, crc=0):
    """CRC32C as godwit_vm.crc32c computes it, through isa-l when it is
    installed (its crc32_iscsi takes and gives the CRC without the final
    inversions): fast enough for 16 MiB buffers."""
    if _CRC32_ISCSI is None:
        return _crc32c_python(data, crc)
    data = bytes(data)
    return ~_CRC32_ISCSI(data, len(data), ~crc & 0xFFFFFFFF) & 0xFFFFFFFF


def record_crc(head8, body, crc_length):
    """The record CRC: the header's first 8 bytes, then crc_length body bytes."""
    return crc32c(bytes(body[:crc_length]), crc32c(bytes(head8)))


class Channel:
    """One connection from the source, as the proxy saw it."""

    def __init__(self, number):
        self.number = number          # in order of arrival
        self.kind = "unknown"         # main, ram, device, or unknown (forwarded raw)
        self.type = None
        self.index = None
        self.migration_id = None
        self.has_header = False
        # (type, length, extra): extra is the device header (a dict) of a
        # DEVICE record, the pass of a SYNC, the body of other records of up
        # to SMALL_BODY bytes (CONFIG, END), else None.
        self.records = []
        self.error = None             # what ended forwarding, if not a clean close
        self.returned = bytearray()   # what the destination sent back (first 64 KiB)
        self.sync_times = {}          # pass -> when its SYNC went through
        self.done = threading.Event()

    def devices(self, device_id=None, precopy=None):
        """The DEVICE records seen on this channel: their device headers."""
        found = []
        for rtype, _, device in self.records:
            if rtype != REC_DEVICE or not isinstance(device, dict):
                continue
            if device_id is not None and device["id"] != device_id:
                continue
            if precopy is not None and bool(device["flags"] & DEVICE_PRECOPY) != precopy:
                continue
            found.append(device)
        return found

    def __repr__(self):
        return (f"<channel {self.number} {self.kind} index {self.index} "
                f"{len(self.records)} records>")


class ChannelProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1", action=None, device="gpu0",
                 buffer="last", new_id="gpuX", tamper_types=(CHANNEL_DEVICE,),
                 inject_foreign=False, hold_timeout=20.0, slow=None):
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}: one of {ACTIONS}")
        self.upstream = (upstream_host, upstream_port)
        self.action = action
        self.device = device
        self.buffer = buffer
        self.new_id = new_id
        self.tamper_types = tuple(tamper_types)
        self.inject_foreign = inject_foreign
        # slow=(type, index, seconds, records): once that channel has carried
        # its first SYNC, wait before forwarding each of its next records.
        self.slow = slow
        self.hold_timeout = hold_timeout
        self.channels = []
        self.tampered = []
        self.foreign = None           # what the injected channel got back
        self.lock = threading.Lock()
        self.main_released = threading.Event()
        self.holding = threading.Event()
        if not inject_foreign:
            self.main_released.set()
        self.sockets = []
        self.threads = []
        self.closing = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._start(self._accept_loop)

    @property
    def uri(self):
        return f"tcp:127.0.0.1:{self.port}"

    def _start(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self.threads.append(thread)
        thread.start()
        return thread

    def _track(self, sock):
        with self.lock:
            self.sockets.append(sock)
        return sock

    def _accept_loop(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._track(client)
            with self.lock:
                channel = Channel(len(self.channels))
                self.channels.append(channel)
            self._start(self._serve, client, channel)

    # --- one connection ---

    def _serve(self, client, channel):
        upstream = None
        try:
            first = recv_exact_or_eof(client, 8)
            if first == CHANNEL_MAGIC:
                head = first + recv_exact(client, CHANNEL_HEADER_SIZE - 8)
                fields = parse_channel_header(head)
                channel.has_header = True
                channel.type = fields["type"]
                channel.index = fields["index"]
                channel.migration_id = fields["id"]
                channel.kind = CHANNEL_KINDS.get(fields["type"], "unknown")
                prefix = head
                stream_head = recv_exact(client, STREAM_HEADER_SIZE)
            elif first == STREAM_MAGIC:
                channel.kind, channel.type = "main", CHANNEL_MAIN
                prefix = b""
                stream_head = first + recv_exact(client, STREAM_HEADER_SIZE - 8)
            else:
                channel.kind = "unknown"
                upstream = self._connect()
                upstream.sendall(first)
                self._start(self._pump, upstream, client, channel.returned)
                self._pump(client, upstream)
                return
            if channel.kind != "main" and not self.main_released.wait(self.hold_timeout):
                channel.error = "released without the main channel"
            upstream = self._connect()
            self._start(self._pump, upstream, client, channel.returned)
            upstream.sendall(prefix + stream_head)
            self._forward_records(client, upstream, channel)
        except EOFError as error:
            channel.error = channel.error or f"eof: {error}"
        except OSError as error:
            channel.error = channel.error or f"{type(error).__name__}: {error}"
            # The destination went away: so does the source's connection, as
            # it would without a proxy (its writes fail instead of blocking).
            _shutdown(client, socket.SHUT_RDWR)
        finally:
            if upstream is not None:
                _shutdown(upstream, socket.SHUT_WR)
            if channel.kind == "main":
                self.main_released.set()
            channel.done.set()

    def _connect(self):
        sock = socket.create_connection(self.upstream, timeout=10)
        sock.settimeout(None)
        return self._track(sock)

    def _pump(self, source, sink, capture=None):
        """Raw bytes from source to sink until source closes; the first 64
        KiB of them also into capture."""
        try:
            while True:
                data = source.recv(1 << 20)
                if not data:
                    break
                if capture is not None and len(capture) < 1 << 16:
                    capture += data[:(1 << 16) - len(capture)]
                sink.sendall(data)
        except OSError:
            _shutdown(source, socket.SHUT_RDWR)
        finally:
            _shutdown(sink, socket.SHUT_WR)

    def _forward_records(self, client, upstream, channel):
        tamper = self.action is not None and channel.type in self.tamper_types
        slow_left = 0
        if self.slow and self.slow[:2] == (channel.type, channel.index):
            slow_left = self.slow[3] if self.slow[3] is not None else float("inf")
        synced = False
        stalled = False
        held = []
        scratch = bytearray(1 << 20)   # reused: fresh 16 MiB buffers cost page faults
        while True:
            head = recv_exact_or_eof(client, RECORD_HEADER_SIZE)
            if head is None:
                break
            rtype = int.from_bytes(head[0:4], "little")
            length = int.from_bytes(head[4:8], "little")
            size = length + (-length % 8)
            if size > len(scratch):
                scratch = bytearray(size)
            body = memoryview(scratch)[:size]
            recv_into_exact(client, body)
            device = extra = None
            if rtype == REC_DEVICE and length >= DEVICE_HEADER_SIZE:
                device = extra = parse_device_header(body[:DEVICE_HEADER_SIZE])
            elif rtype == REC_SYNC and length >= 8:
                extra = int.from_bytes(body[0:8], "little")
            elif length <= SMALL_BODY:
                extra = bytes(body[:length])
            channel.records.append((rtype, length, extra))
            if slow_left and synced:
                time.sleep(self.slow[2])
                slow_left -= 1
            synced = synced or rtype == REC_SYNC
            if stalled:
                continue
            if rtype == REC_SYNC:
                channel.sync_times[extra] = time.monotonic()   # forwarded at about then
            if tamper and rtype == REC_CHANNEL_END and held:
                self._send_reversed(upstream, held)
                held = []
            if tamper and device is not None and self._chosen(device):
                if self.action == "reverse":
                    held.append((head, bytes(body), device))
                    continue
                if self.action == "stall":
                    stalled = True
                    self.tampered.append((self.action, device["id"], device["index"],
                                          device["flags"]))
                    continue
                if self._tamper(upstream, head, body, device, length):
                    continue
            while self.holding.is_set() and not self.closing:
                time.sleep(0.005)
            _send(upstream, head, body)
            if rtype == REC_CONFIG and channel.kind == "main" and self.inject_foreign:
                self._inject_foreign(channel.migration_id)
        if held:
            self._send_reversed(upstream, held)

    def _chosen(self, device):
        """Is this a stop-copy buffer of the device the test picked?"""
        if device["id"] != self.device or device["flags"] & DEVICE_PRECOPY:
            return False
        if self.action == "reverse":
            return True
        if self.buffer == "last":
            return bool(device["flags"] & DEVICE_LAST)
        return device["index"] == self.buffer

    def _send_reversed(self, upstream, held):
        for head, body, _ in reversed(held):
            _send(upstream, head, body)
        self.tampered.append(("reverse", [device["index"] for _, _, device in reversed(held)]))

    def _tamper(self, upstream, head, body, device, length):
        """Applies the action to the chosen buffer; True if the record was
        dealt with (sent changed, or dropped)."""
        what = (self.action, device["id"], device["index"], device["flags"])
        if self.action in ("duplicate", "drop", "oversize", "rename"):
            self.tampered.append(what)   # before sending: the destination may hang up
        if self.action == "duplicate":
            _send(upstream, head, body)
            _send(upstream, head, body)
        elif self.action == "drop":
            pass
        elif self.action == "oversize":
            bad = DEVICE_BODY_BOUND + 1
            forged = (head[0:4] + bad.to_bytes(4, "little") + head[8:12] +
                      bad.to_bytes(4, "little"))
            _send(upstream, forged, body)
        elif self.action == "rename":
            new = self.new_id.encode().ljust(32, b"\0")
            body = new + bytes(body[32:])
            crc_length = int.from_bytes(head[12:16], "little")
            crc = record_crc(head[0:8], body, min(crc_length, length))
            _send(upstream, head[0:8] + crc.to_bytes(4, "little") + head[12:16], body)
        else:
            return False
        return True

    def _inject_foreign(self, migration_id):
        """A RAM channel header with another migration's id, on a connection
        of our own, while the source's multifd channels wait."""
        result = {"sent": False, "answer": None, "closed": False, "error": None}
        other = bytes(b ^ 0xA5 for b in (migration_id or bytes(16)))
        sock = None
        try:
            sock = socket.create_connection(self.upstream, timeout=10)
            self._track(sock)
            sock.sendall(channel_header(CHANNEL_RAM, 0, other))
            result["sent"] = True
            sock.settimeout(10)
            try:
                result["answer"] = read_return_record(sock)
                result["closed"] = sock.recv(1) == b""   # it closes after its answer
            except EOFError:
                result["closed"] = True
        except (OSError, ValueError) as error:
            # ECONNRESET also means it closed the connection on us.
            result["error"] = f"{type(error).__name__}: {error}"
            if isinstance(error, ConnectionResetError):
                result["closed"] = True
        finally:
            if sock is not None:
                sock.close()
            self.foreign = result
            self.main_released.set()

    # --- what the test asks ---

    def of_kind(self, kind):
        with self.lock:
            return [c for c in self.channels if c.kind == kind]

    def wait_channels(self, timeout=10.0):
        """Waits until every connection seen so far is done."""
        deadline = time.monotonic() + timeout
        for channel in list(self.channels):
            channel.done.wait(max(0.0, deadline - time.monotonic()))

    def hold(self):
        self.holding.set()

    def close(self):
        self.closing = True
        self.main_released.set()
        _shutdown(self.listener, socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            sockets = list(self.sockets)
            threads = list(self.threads)
        for sock in sockets:
            _shutdown(sock, socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(timeout=5)


recv_exact = recv_exact_into   # a bytearray: bodies of 16 MiB are not copied again


def recv_into_exact(sock, view):
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:], len(view) - got)
        if not n:
            raise EOFError(f"the source closed after {got} of {len(view)} bytes")
        got += n


def recv_exact_or_eof(sock, size):
    """size bytes, or None if the peer closed cleanly before the first."""
    first = sock.recv(size)
    if not first:
        return None
    if len(first) == size:
        return first
    return first + recv_exact(sock, size - len(first))


def _send(sock, head, body):
    """A record: its header, then its body, without joining them."""
    sock.sendall(head)
    if body:
        sock.sendall(body)


def _shutdown(sock, how):
    try:
        sock.shutdown(how)
    except OSError:
        pass

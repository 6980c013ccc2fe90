"""Multifd: RAM (and the stop-copy state of devices that take it) on several
connections beside the main channel. docs/stream.md ("CONFIG", "Multifd
channels" and what follows) is the specification, docs/qmp.md the interface.

Every end-to-end test checks guest memory where the guest ends up running
(the dirty guest's increment rule and pass count, host-written bytes word for
word, the accel device's digest), not just a status. Tests that look inside
the channels go through tests/lib/channel_proxy.py, a TCP proxy that reads
the channel headers and records on the way and can tamper with DEVICE
buffers. ProxySelfCheck tests that proxy on its own, without KVM."""
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402
from channel_proxy import ChannelProxy, crc32c as proxy_crc32c  # noqa: E402
from godwit_vm import (CHANNEL_DEVICE, CHANNEL_HEADER_SIZE, CHANNEL_MAIN,  # noqa: E402
                       CHANNEL_RAM, DEVICE_BODY_BOUND, DEVICE_LAST, DEVICE_PRECOPY,
                       FakeDestination, MigrationTestCase, QmpError, RECORD_HEADER_SIZE,
                       REC_CHANNEL_END, REC_CONFIG, REC_DEVICE, REC_END, REC_PAGES,
                       REC_PAGES_ZSTD, REC_RAM_BLOCKS, REC_RP_ERROR, REC_SYNC, REC_ZERO_PAGES,
                       STREAM_MAGIC, channel_header, crc32c, free_tcp_port,
                       parse_channel_header, parse_device_header, read_return_record, recv_exact,
                       stream_record, wait_migration, watch_until_exit)

MiB = 1 << 20
PAGE = 4096
GUEST = "mode=dirty start=1M end=16M"
LOW, HIGH = MiB, 16 * MiB
MARKER_ADDRESS = 110 * MiB + 4093      # unaligned, outside the dirty range
MARKER = b"multifd crossed here"
MULTIFD = {"multifd": True}
HEADERS = {"multifd": True, "x-channel-header": True}
PARAMETER_DEFAULTS = {"multifd-channels": 2, "multifd-compression": "none",
                      "multifd-zstd-level": 1, "zero-page-detection": "multifd",
                      "x-multifd-channels-device-state": 0, "x-multifd-packet-pages": 256}
# The accel device with a state bigger than one pass of precopy sends (64
# MiB per device per pass, and a little more: buffers of 16 MiB less a page):
# the rest, about 48 MiB, is stop-copy state, 4 buffers on the wire. With
# changes=off nothing changes it, so digests compare exactly.
GPU = "accel,id=gpu0,state-size=128M,changes=off"
NIC = "accel,id=nic1,state-size=4K,changes=off"
# No estimate fits 1 byte/s: precopy goes on until it is set back to 0. A
# huge one makes any estimate fit: the source stops after the first pass,
# which leaves a large stop-copy state for the device.
HOLD, RELEASE, AT_ONCE = 1, 0, 1 << 40


def devices(*specs):
    return tuple(arg for spec in specs for arg in ("--device", spec))


def digest(vm, device_id="gpu0"):
    return vm.qmp.command("x-query-accel", id=device_id)["digest"]


def names_word(text, word):
    """word stands alone in text, not as part of a longer name
    ('multifd' in 'x-multifd-channels-device-state' does not count)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def config_fields(body):
    """CONFIG's body: multifd, channels, compression, zero-page detection,
    x-channel-header, device-state channels, migration id."""
    values = [int.from_bytes(body[i:i + 4], "little") for i in range(0, 24, 4)]
    return values, bytes(body[24:40])


class MultifdTestCase(MigrationTestCase):
    def start_source(self, memory="128M", append=GUEST, extra=(), pass_fds=()):
        """A small dirty range by default: host-written RAM lies above it."""
        return super().start_source(memory=memory, append=append, extra=extra,
                                    pass_fds=pass_fds)

    def configure(self, vm, caps=None, params=None):
        if caps:
            vm.qmp.command("migrate-set-capabilities",
                           capabilities=[{"capability": name, "state": state}
                                         for name, state in caps.items()])
        if params:
            vm.qmp.command("migrate-set-parameters", **params)

    def shm_path(self, tag):
        path = f"/dev/shm/godwit-test-multifd-{tag}-{os.getpid()}-{time.monotonic_ns()}"
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        return path

    def start_source_with_marker(self, memory="128M", append=GUEST, extra=()):
        shm = self.shm_path("src")
        source = self.start_source(memory=memory, append=append,
                                   extra=("--mem-path", shm, *extra))
        source.mem_path = shm
        with open(shm, "r+b") as f:
            f.seek(MARKER_ADDRESS)
            f.write(MARKER)
        return source

    def incoming(self, caps, params, memory="128M", extra=(), transport="tcp"):
        """A destination started with --incoming defer, given caps and
        params, then listening: (destination, its uri)."""
        destination = self.start_destination("defer", memory=memory, extra=extra)
        self.configure(destination, caps, params)
        if transport == "unix":
            uri = f"unix:{destination.path('migrate.sock')}"
        else:
            uri = f"tcp:127.0.0.1:{free_tcp_port()}"
        destination.qmp.command("migrate-incoming", uri=uri)
        return destination, uri

    def migrate_held(self, source, uri, passes=3, timeout=60, until=lambda info: True,
                     release=RELEASE):
        """Migrates, holding convergence back until passes dirty syncs (and
        until(query-migrate) holds), so pages already sent are dirtied and
        sent again on other channels; then lets it converge with
        avail-switchover-bandwidth release."""
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": HOLD})
        source.qmp.command("migrate", uri=uri)
        wait_migration(source.qmp, ("active",), timeout=timeout,
                       predicate=lambda i: i["ram"]["dirty-sync-count"] >= passes and until(i))
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": release})
        return wait_migration(source.qmp, timeout=timeout)

    def migrate(self, source, uri, timeout=60):
        source.qmp.command("migrate", uri=uri)
        return wait_migration(source.qmp, timeout=timeout)

    def assert_completed(self, source, destination, info, low=LOW, high=HIGH, earlier=None,
                         resume=False):
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(source.qmp.command("query-status")["status"], "postmigrate")
        self.assertIn("multifd-bytes", info["ram"], "query-migrate's ram lacks multifd-bytes")
        self.assertEqual(destination.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(
            destination, low, high, earlier=earlier if earlier is not None else (source,),
            resume=resume), 1)

    def assert_gave_up(self, destination, *phrases):
        """The destination of a failed migration exits 1 by itself and never
        ran the guest."""
        status, seen, err = watch_until_exit(destination, timeout=30)
        self.assertEqual(status, 1, err)
        self.assertNotIn("running", seen, err)
        self.assertEqual(destination.serial.text(), "", "the destination ran the guest")
        for phrase in phrases:
            self.assertIn(phrase, err)
        return err

    def assert_source_whole(self, source, digests=None, low=LOW, high=HIGH):
        """After a failure: the source runs its guest, whole, and its devices
        hold what they held before."""
        self.assertEqual(source.qmp.command("query-status")["status"], "running")
        for device_id, expected in (digests or {}).items():
            self.assertEqual(digest(source, device_id), expected,
                             f"{device_id}'s state changed on the source")
        self.assertLessEqual(self.check_running_guest(source, low, high, resume=True), 1)

    def quit_cleanly(self, vm):
        vm.qmp.command("quit")
        status, _, err = vm.wait_exit(timeout=20)
        self.assertNotIn("Sanitizer", err)
        self.assertEqual(status, 0, err)

    def proxy(self, uri, **behaviour):
        port = int(uri.rsplit(":", 1)[1])
        proxy = ChannelProxy(port, **behaviour)
        self.addCleanup(proxy.close)
        return proxy


class Channels(MultifdTestCase):
    """1, 2 and 8 RAM channels; the dirty guest re-dirties pages while they
    cross, so a page goes on several channels over the passes."""

    def test_one_channel_unix(self):
        source = self.start_source_with_marker()
        destination, uri = self.incoming(MULTIFD, {"multifd-channels": 1},
                                         transport="unix")
        self.configure(source, MULTIFD, {"multifd-channels": 1})
        info = self.migrate_held(source, uri)
        self.assertGreaterEqual(info["ram"]["dirty-sync-count"], 3)
        self.assertGreaterEqual(info["ram"]["multifd-bytes"], info["ram"]["normal-bytes"],
                                "pages with data must cross on the multifd channel")
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assert_completed(source, destination, info)

    def test_two_channels_tcp_by_default(self):
        source = self.start_source_with_marker()
        destination, uri = self.incoming(MULTIFD, None)
        self.configure(source, MULTIFD, None)
        for vm in (source, destination):
            params = vm.qmp.command("query-migrate-parameters")
            self.assertEqual(params["multifd-channels"], 2)
            caps = {c["capability"]: c["state"]
                    for c in vm.qmp.command("query-migrate-capabilities")}
            self.assertTrue(caps["multifd"])
            self.assertFalse(caps["x-channel-header"])
        info = self.migrate_held(source, uri)
        self.assertGreater(info["ram"]["multifd-bytes"], 0)
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assert_completed(source, destination, info)

    def test_eight_channels_tcp_seen_on_the_wire(self):
        """Through the proxy: one main channel (no header without
        x-channel-header: it starts with the stream magic) and 8 RAM
        channels with indexes 0 to 7; CONFIG says so; pages and zero pages
        only on RAM channels; SYNC counts 1, 2, 3, ... on every RAM channel,
        the same passes on each, and each ends with CHANNEL_END."""
        source = self.start_source_with_marker()
        params = {"multifd-channels": 8}
        destination, uri = self.incoming(MULTIFD, params)
        self.configure(source, MULTIFD, params)
        proxy = self.proxy(uri)
        info = self.migrate_held(source, proxy.uri)
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assert_completed(source, destination, info)
        proxy.wait_channels()

        mains, rams = proxy.of_kind("main"), proxy.of_kind("ram")
        self.assertEqual(len(mains), 1, proxy.channels)
        self.assertFalse(mains[0].has_header, "a main channel header without x-channel-header")
        self.assertEqual(sorted(c.index for c in rams), list(range(8)), proxy.channels)
        self.assertEqual(proxy.of_kind("device") + proxy.of_kind("unknown"), [])
        main_types = [r[0] for r in mains[0].records]
        self.assertEqual(main_types[:2], [REC_RAM_BLOCKS, REC_CONFIG])
        values, migration_id = config_fields(mains[0].records[1][2])
        self.assertEqual(values, [1, 8, 0, 2, 0, 0], "CONFIG: multifd, channels, compression, "
                         "zero-page-detection, x-channel-header, device-state channels")
        self.assertEqual(len(migration_id), 16)
        for rtype in (REC_PAGES, REC_PAGES_ZSTD, REC_ZERO_PAGES, REC_SYNC):
            self.assertNotIn(rtype, main_types, f"record type {rtype} on the main channel")
        syncs = {}
        for channel in rams:
            types = [r[0] for r in channel.records]
            self.assertEqual(channel.migration_id, migration_id, channel)
            self.assertEqual(types[-1], REC_CHANNEL_END, channel)
            self.assertIn(REC_PAGES, types, f"RAM channel {channel.index} carried no page")
            self.assertNotIn(REC_DEVICE, types)
            syncs[channel.index] = [r[2] for r in channel.records if r[0] == REC_SYNC]
        passes = syncs[0]
        self.assertGreaterEqual(len(passes), 3, syncs)
        self.assertEqual(passes, list(range(1, len(passes) + 1)), syncs)
        for index, seen in syncs.items():
            self.assertEqual(seen, passes, f"RAM channel {index}'s SYNC passes differ")


class Content(MultifdTestCase):
    """Compression and zero-page detection, with RAM the host wrote through
    --mem-path before the migration: random pages, compressible pages,
    zero pages among them."""

    def fill(self, path, seed):
        rng = random.Random(seed)
        random_part = rng.randbytes(4 * MiB)
        text = b"".join(b"page %08d of a compressible run; " % i for i in range(2 * MiB // 32))
        pattern = (text * 4)[:8 * MiB]
        zero_gaps = bytearray(4 * MiB)   # every other page holds data, the rest zero
        for page in range(0, len(zero_gaps), 2 * PAGE):
            zero_gaps[page:page + PAGE] = rng.randbytes(PAGE)
        content = random_part + pattern + bytes(zero_gaps)
        with open(path, "r+b") as f:
            f.seek(32 * MiB)
            f.write(content)
        return content

    def assert_content(self, vm, content):
        was_running = vm.qmp.command("query-status")["status"] == "running"
        if was_running:
            vm.qmp.command("stop")
        data = vm.read_memory(32 * MiB, len(content))
        if was_running:
            vm.qmp.command("cont")
        if data != content:
            differ = [i for i in range(0, len(content), PAGE)
                      if data[i:i + PAGE] != content[i:i + PAGE]]
            self.fail(f"{len(differ)} host-written pages differ, first at "
                      f"{[hex(32 * MiB + i) for i in differ[:8]]}")

    def test_zstd(self):
        shm = self.shm_path("zstd")
        source = self.start_source(extra=("--mem-path", shm))
        content = self.fill(shm, seed=1)
        params = {"multifd-channels": 2, "multifd-compression": "zstd",
                  "multifd-zstd-level": 3}
        destination, uri = self.incoming(MULTIFD, params)
        self.configure(source, MULTIFD, params)
        info = self.migrate_held(source, uri)
        ram = info["ram"]
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        # Half the pages with data compress well: less crosses than they hold.
        self.assertLess(ram["multifd-bytes"], ram["normal-bytes"] * 0.8, ram)
        self.assertGreater(ram["multifd-bytes"], 4 * MiB, ram)   # the random pages
        self.assert_content(destination, content)
        self.assert_completed(source, destination, info)

    def test_zero_page_detection_modes(self):
        """One guest, migrated on from host to host: none, legacy, multifd;
        each hop's destination becomes the next hop's source."""
        shm = self.shm_path("zero")
        current = self.start_source(extra=("--mem-path", shm))
        content = self.fill(shm, seed=2)
        hosts = [current]
        total_pages = 128 * MiB // PAGE
        for mode in ("none", "legacy", "multifd"):
            params = {"multifd-channels": 2, "zero-page-detection": mode}
            destination, uri = self.incoming(MULTIFD, params)
            self.configure(current, MULTIFD, params)
            info = self.migrate_held(current, uri, passes=2)
            ram = info["ram"]
            self.assertEqual(info["status"], "completed", f"{mode}: {info.get('error-desc')}")
            if mode == "none":
                self.assertEqual(ram["duplicate"], 0, f"{mode}: {ram}")
                self.assertGreaterEqual(ram["normal"], total_pages, f"{mode}: {ram}")
            else:
                # Most of the guest is zero: found, not sent with data.
                self.assertGreater(ram["duplicate"], total_pages // 2, f"{mode}: {ram}")
            self.assert_content(destination, content)
            self.assert_completed(current, destination, info, earlier=hosts, resume=True)
            hosts.append(destination)
            current = destination


class Invariant3(MultifdTestCase):
    """docs/stream.md "SYNC and invariant 3": a page of pass k+1 on one
    channel never lands before the same page of pass k on another. The guest
    rewrites 61 pages as fast as it can, every packet holds one page, 8
    channels, many passes: without the barrier a stale copy could win, and
    the increment rule would catch it."""
    END = MiB + 61 * PAGE     # prime: a page changes channel from pass to pass
    PARAMS = {"multifd-channels": 8, "x-multifd-packet-pages": 1}

    def start(self):
        source = self.start_source(append=f"mode=dirty start=1M end={self.END // 1024}K")
        destination, uri = self.incoming(MULTIFD, self.PARAMS)
        self.configure(source, MULTIFD, self.PARAMS)
        return source, destination, uri

    def test_same_pages_on_eight_channels_one_page_per_packet(self):
        """Held until the pages have crossed ten times: on a busy host the
        guest may rewrite them far less often than the passes go by."""
        source, destination, uri = self.start()
        info = self.migrate_held(source, uri, passes=30,
                                 until=lambda i: i["ram"]["normal"] > 10 * 61)
        self.assertGreaterEqual(info["ram"]["dirty-sync-count"], 3)
        self.assertGreater(info["ram"]["normal"], 10 * 61, "the pages did not cross many times")
        self.assert_completed(source, destination, info, high=self.END)

    def test_one_lagging_channel_delivers_no_stale_page(self):
        """The proxy slows RAM channel 0 after its first SYNC: its passes
        arrive well after the same pages' later passes on channels 1 to 7,
        unless the destination waits at each SYNC as it must."""
        source, destination, uri = self.start()
        proxy = self.proxy(uri, slow=(CHANNEL_RAM, 0, 0.0005, None))

        def passes_behind(info=None):
            """The lag is real: the passes k that reached the destination on
            channel 0 after pass k + 2 had on every other channel."""
            ram = proxy.of_kind("ram")
            lagging = [c for c in ram if c.index == 0]
            others = [c for c in ram if c.index != 0]
            if not lagging or len(others) < 7:
                return []
            return [k for k, when in list(lagging[0].sync_times.items())
                    if all(c.sync_times.get(k + 2, when) < when for c in others)]

        # Held until the lag shows: a busy host can keep the guest from
        # dirtying enough for channel 0 to fall behind in 20 passes. Then
        # switched over at once: by then every channel's socket may be full
        # behind the slowed one (50 MB at the 22 MB/s the link measured
        # through it), which the estimate rightly says takes seconds to
        # drain: with the link's rate, one make check run did not converge
        # in 60 s.
        info = self.migrate_held(source, proxy.uri, passes=20,
                                 until=lambda i: bool(passes_behind()), release=AT_ONCE)
        self.assert_completed(source, destination, info, high=self.END)
        proxy.wait_channels()
        self.assertTrue(passes_behind(), "channel 0 never lagged two passes behind")


class AccelOnMultifd(MultifdTestCase):
    """The accel device takes multifd: with x-channel-header its stop-copy
    state goes on multifd channels, mixed into the RAM channels or on
    channels of its own; its precopy stays on the main channel."""

    def migrate_device(self, device_channels):
        params = {"multifd-channels": 2, "x-multifd-channels-device-state": device_channels,
                  "avail-switchover-bandwidth": AT_ONCE}
        source = self.start_source(extra=devices(GPU, NIC))
        before = {d: digest(source, d) for d in ("gpu0", "nic1")}
        destination, uri = self.incoming(HEADERS, params, extra=devices(GPU, NIC))
        self.configure(source, HEADERS, params)
        proxy = self.proxy(uri)
        info = self.migrate(source, proxy.uri, timeout=120)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        for d, expected in before.items():
            self.assertEqual(digest(source, d), expected, f"{d} changed on the source")
            self.assertEqual(digest(destination, d), expected, f"{d} differs after migration")
        self.assert_completed(source, destination, info)
        proxy.wait_channels()
        return proxy, info

    def check_placement(self, proxy, carriers):
        mains = proxy.of_kind("main")
        self.assertEqual(len(mains), 1, proxy.channels)
        self.assertTrue(mains[0].has_header, "x-channel-header: the main channel has one")
        self.assertEqual(mains[0].index, 0)
        ids = {c.migration_id for c in proxy.channels}
        self.assertEqual(len(ids), 1, "every channel header carries the one migration id")
        config = next(r for r in mains[0].records if r[0] == REC_CONFIG)
        self.assertEqual(config_fields(config[2])[1], mains[0].migration_id)
        self.assertEqual(mains[0].devices("gpu0", precopy=False), [],
                         "gpu0's stop-copy state went on the main channel")
        self.assertTrue(mains[0].devices("gpu0", precopy=True), "gpu0 sent no precopy")
        for channel in proxy.channels:
            if channel is not mains[0]:
                self.assertEqual(channel.devices(precopy=True), [],
                                 f"precopy data on {channel}")
                # godwit-vm's own devices do not take multifd.
                self.assertLessEqual({d["id"] for d in channel.devices()}, {"gpu0", "nic1"},
                                     channel)
        buffers = [d for c in carriers for d in c.devices("gpu0", precopy=False)]
        self.assertEqual(sorted(d["index"] for d in buffers), list(range(len(buffers))))
        self.assertGreaterEqual(len(buffers), 2, "gpu0's stop-copy state was expected to "
                                "span several 16 MiB buffers")
        last = [d for d in buffers if d["flags"] & DEVICE_LAST]
        self.assertEqual([d["index"] for d in last], [len(buffers) - 1])
        self.assertEqual(len([d for c in carriers for d in c.devices("nic1", precopy=False)]),
                         1)

    def check_estimated_lanes(self, info, lanes):
        """The downtime estimate spread gpu0's state over the lanes that
        carried it (downtime-detail.expected, ours)."""
        expected = info["downtime-detail"]["expected"]
        self.assertEqual(expected["device-lanes"], lanes, expected)
        self.assertGreaterEqual(expected["cores"], 1, expected)

    def test_mixed_into_ram_channels(self):
        proxy, info = self.migrate_device(0)
        self.assertEqual(proxy.of_kind("device"), [])
        self.check_placement(proxy, proxy.of_kind("ram"))
        self.check_estimated_lanes(info, 2)

    def test_dedicated_channel(self):
        proxy, info = self.migrate_device(1)
        channels = proxy.of_kind("device")
        self.assertEqual([c.index for c in channels], [0], proxy.channels)
        for channel in proxy.of_kind("ram"):
            self.assertEqual(channel.devices(), [], f"device state on {channel}")
        self.assertEqual({r[0] for r in channels[0].records}, {REC_DEVICE, REC_CHANNEL_END})
        self.check_placement(proxy, channels)
        self.check_estimated_lanes(info, 1)


class MixedDeviceKinds(MultifdTestCase):
    """A registry with both kinds of device: gpu0 takes multifd (its
    stop-copy pieces go on the device-state channel, sent by another thread
    while the migration thread goes on) and gpu1 does not (multifd=off, a
    test-only key: its pieces go on the main channel). Both save in pieces
    into the same few buffers, so the main-channel device must not refill a
    buffer that a multifd channel still holds. Each state is 64 MiB, all of
    it stop-copy (precopy=off): 5 pieces each, so gpu1 starts while gpu0's
    last pieces wait on the device-state channel."""
    PARAMS = {"multifd-channels": 2, "x-multifd-channels-device-state": 1,
              "avail-switchover-bandwidth": AT_ONCE}
    ON_MULTIFD = "accel,id=gpu0,state-size=64M,changes=off,precopy=off"
    ON_MAIN = "accel,id=gpu1,state-size=64M,changes=off,precopy=off,multifd=off"

    def test_mixed_device_kinds_keep_their_state(self):
        specs = devices(self.ON_MULTIFD, self.ON_MAIN)
        source = self.start_source(extra=specs)
        before = {d: digest(source, d) for d in ("gpu0", "gpu1")}
        self.assertNotEqual(before["gpu0"], before["gpu1"], "the two states must differ")
        destination, uri = self.incoming(HEADERS, self.PARAMS, extra=specs)
        self.configure(source, HEADERS, self.PARAMS)
        proxy = self.proxy(uri)
        info = self.migrate(source, proxy.uri, timeout=120)
        if info["status"] != "completed":
            # The source keeps the guest and both states, whatever went wrong.
            self.assert_source_whole(source, before)
            self.fail(f"the migration {info['status']}: {info.get('error-desc')}")
        for d, expected in before.items():
            self.assertEqual(digest(source, d), expected, f"{d} changed on the source")
            self.assertEqual(digest(destination, d), expected, f"{d} differs after migration")
        self.assert_completed(source, destination, info)
        # Each kind went where it says: gpu0's stop-copy pieces on the
        # device-state channel, gpu1's on the main channel, several each.
        proxy.wait_channels()
        main, = proxy.of_kind("main")
        carriers = proxy.of_kind("device")
        self.assertEqual(main.devices("gpu0", precopy=False), [],
                         "gpu0's stop-copy state went on the main channel")
        self.assertEqual([d for c in carriers for d in c.devices("gpu1")], [],
                         "gpu1 (multifd=off) went on a device-state channel")
        on_multifd = [d for c in carriers for d in c.devices("gpu0", precopy=False)]
        on_main = main.devices("gpu1", precopy=False)
        for name, pieces in (("gpu0", on_multifd), ("gpu1", on_main)):
            self.assertGreaterEqual(len(pieces), 4, f"{name}: want several pieces")
            self.assertEqual(sorted(d["index"] for d in pieces), list(range(len(pieces))),
                             name)


class DeviceBuffers(MultifdTestCase):
    """The proxy reorders, duplicates, drops, inflates or renames gpu0's
    stop-copy buffers on the device-state channel. Any order must load;
    everything else must fail, say what, and leave the source whole."""
    PARAMS = {"multifd-channels": 2, "x-multifd-channels-device-state": 1,
              "avail-switchover-bandwidth": AT_ONCE}

    def test_reversed_buffers_load(self):
        source = self.start_source(extra=devices(GPU))
        expected = digest(source)
        destination, uri = self.incoming(HEADERS, self.PARAMS, extra=devices(GPU))
        self.configure(source, HEADERS, self.PARAMS)
        proxy = self.proxy(uri, action="reverse")
        info = self.migrate(source, proxy.uri, timeout=120)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(len(proxy.tampered), 1, proxy.tampered)
        order = proxy.tampered[0][1]
        self.assertGreaterEqual(len(order), 2, "nothing to reverse: one stop-copy buffer")
        self.assertEqual(order, sorted(order, reverse=True))
        self.assertEqual(digest(destination), expected)
        self.assert_completed(source, destination, info)

    def test_tampered_buffers_fail(self):
        source = self.start_source(extra=devices(GPU))
        before = {"gpu0": digest(source)}
        self.configure(source, HEADERS, self.PARAMS)
        cases = (
            ("duplicate", 0, ("gpu0", r"(buffer|index)\D{0,20}\b0\b")),
            ("drop", 1, ("gpu0", r"(buffer|index)\D{0,20}\b1\b")),
            ("oversize", 0, ("DEVICE", r"offset|length|bound|bytes")),
            ("rename", "last", ("gpuX",)),
        )
        for action, buffer, phrases in cases:
            with self.subTest(action=action):
                destination, uri = self.incoming(HEADERS, self.PARAMS,
                                                 extra=devices(GPU))
                proxy = self.proxy(uri, action=action, buffer=buffer)
                source.qmp.command("migrate", uri=proxy.uri)
                info = wait_migration(source.qmp, ("failed", "completed"), timeout=120)
                err = ""
                if destination.process.poll() is not None or info["status"] == "failed":
                    err = self.assert_gave_up(destination)
                self.assertEqual(len(proxy.tampered), 1, f"the proxy did not {action}: "
                                 f"{proxy.channels}")
                self.assertEqual(info["status"], "failed",
                                 f"a migration with gpu0 buffer {buffer} {action}d completed")
                # The source whole first (it must be, whatever the wording),
                # then what it says.
                self.assert_source_whole(source, before)
                proxy.close()
                desc = info.get("error-desc", "")
                for phrase in phrases:
                    self.assertTrue(re.search(phrase, desc),
                                    f"{phrase!r} not in the source's error {desc!r}; "
                                    f"destination stderr: {err[-600:]!r}")
        self.quit_cleanly(source)

    def test_whole_state_after_a_failed_switchover(self):
        """A migration that fails in the middle of gpu0's stop-copy pieces
        (the destination refuses a duplicate of buffer 0), then a new one:
        the new destination gets all of gpu0's state, not just what the
        device had not made into pieces the first time."""
        source = self.start_source(extra=devices(GPU))
        before = digest(source)
        self.configure(source, HEADERS, self.PARAMS)
        destination, uri = self.incoming(HEADERS, self.PARAMS, extra=devices(GPU))
        proxy = self.proxy(uri, action="duplicate", buffer=0)
        source.qmp.command("migrate", uri=proxy.uri)
        info = wait_migration(source.qmp, ("failed", "completed"), timeout=120)
        self.assertEqual(info["status"], "failed", "a duplicate buffer 0 was taken")
        self.assert_gave_up(destination)
        self.assert_source_whole(source, {"gpu0": before})
        second, uri = self.incoming(HEADERS, self.PARAMS, extra=devices(GPU))
        info = self.migrate(source, uri, timeout=120)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        self.assertEqual(digest(second), before, "gpu0 differs after the second migration")
        self.assert_completed(source, second, info)


class Validation(MultifdTestCase):
    def test_parameter_ranges_and_defaults(self):
        vm = self.start_source(memory="32M", append="mode=idle")
        qmp = vm.qmp
        params = qmp.command("query-migrate-parameters")
        for name, value in PARAMETER_DEFAULTS.items():
            self.assertEqual(params.get(name), value, name)
        caps = {c["capability"]: c["state"] for c in qmp.command("query-migrate-capabilities")}
        self.assertIs(caps.get("multifd"), False, caps)
        self.assertIs(caps.get("x-channel-header"), False, caps)
        bad = (("multifd-channels", 0, ("1 to 255",)), ("multifd-channels", 256, ("1 to 255",)),
               ("multifd-channels", -1, ("1 to 255",)), ("multifd-channels", "two", ("1 to 255",)),
               ("multifd-zstd-level", 21, ("0 to 20",)), ("multifd-zstd-level", -1, ("0 to 20",)),
               ("x-multifd-channels-device-state", 256, ("0 to 255",)),
               ("x-multifd-packet-pages", 0, ("1 to 256",)),
               ("x-multifd-packet-pages", 257, ("1 to 256",)),
               ("multifd-compression", "lz4", ("none", "zstd")),
               ("multifd-compression", "", ("none", "zstd")),
               ("multifd-compression", 1, ("none", "zstd")),
               ("zero-page-detection", "fast", ("none", "legacy", "multifd")),
               ("zero-page-detection", True, ("none", "legacy", "multifd")))
        for name, value, phrases in bad:
            with self.subTest(name=name, value=value):
                with self.assertRaises(QmpError) as caught:
                    qmp.command("migrate-set-parameters", **{name: value})
                self.assertIn(name, caught.exception.desc)
                for phrase in phrases:
                    self.assertIn(phrase, caught.exception.desc)
        # One bad value refuses the whole command: nothing of it is set.
        with self.assertRaises(QmpError):
            qmp.command("migrate-set-parameters",
                        **{"multifd-channels": 4, "multifd-zstd-level": 99})
        self.assertEqual({k: v for k, v in qmp.command("query-migrate-parameters").items()
                          if k in PARAMETER_DEFAULTS}, PARAMETER_DEFAULTS)
        good = {"multifd-channels": 255, "multifd-compression": "zstd",
                "multifd-zstd-level": 20, "zero-page-detection": "legacy",
                "x-multifd-channels-device-state": 255, "x-multifd-packet-pages": 1}
        qmp.command("migrate-set-parameters", **good)
        params = qmp.command("query-migrate-parameters")
        self.assertEqual({k: params[k] for k in good}, good)
        qmp.command("migrate-set-parameters", **{"multifd-channels": 1, "multifd-zstd-level": 0,
                                                 "zero-page-detection": "none"})
        self.assertEqual(qmp.command("query-migrate-parameters")["zero-page-detection"], "none")
        self.configure(vm, HEADERS)
        caps = {c["capability"]: c["state"] for c in qmp.command("query-migrate-capabilities")}
        self.assertTrue(caps["multifd"] and caps["x-channel-header"], caps)
        self.assertIn("multifd", qmp.hmp("info migrate_capabilities"))
        self.assertIn("multifd-channels", qmp.hmp("info migrate_parameters"))
        self.assertEqual(qmp.command("query-status")["status"], "running")

    def refused_at_migrate(self, vm, uri):
        """The sentence a refused migrate gives, at once or as the failed
        migration's error-desc."""
        try:
            vm.qmp.command("migrate", uri=uri)
        except QmpError as error:
            return error.desc
        info = wait_migration(vm.qmp, ("failed",), timeout=20)
        return info.get("error-desc", "")

    def test_device_state_channels_need_both_capabilities(self):
        vm = self.start_source(memory="32M", append="mode=dirty start=1M end=2M")
        vm.qmp.command("migrate-set-parameters", **{"x-multifd-channels-device-state": 1})
        for caps, missing in (({"multifd": False, "x-channel-header": False}, "multifd"),
                              ({"multifd": True, "x-channel-header": False}, "x-channel-header"),
                              ({"multifd": False, "x-channel-header": True}, "multifd")):
            with self.subTest(caps=caps):
                self.configure(vm, caps)
                fake = FakeDestination(vm.path(f"fake-{len(vm.qmp.events)}-"
                                               f"{time.monotonic_ns()}.sock"))
                self.addCleanup(fake.close)
                desc = self.refused_at_migrate(vm, fake.uri)
                self.assertIn("x-multifd-channels-device-state", desc)
                self.assertTrue(names_word(desc, missing), f"{missing!r} not named in {desc!r}")
                self.assertEqual(vm.qmp.command("query-status")["status"], "running")
                fake.close()
        self.assertLessEqual(self.check_running_guest(vm, high=2 * MiB, resume=True), 1)

    def test_multifd_refuses_file_and_fd(self):
        one, other = socket.socketpair()
        self.addCleanup(one.close)
        self.addCleanup(other.close)
        vm = self.start_vm(memory="32M", append="mode=dirty start=1M end=2M",
                           pass_fds=(one.fileno(),))
        vm.connect()
        vm.serial.wait_count("A", 1, process=vm.process)
        self.configure(vm, MULTIFD)
        for uri, word in ((f"file:{vm.path('guest.mig')}", "file"),
                          (f"fd:{one.fileno()}", "fd")):
            with self.subTest(uri=uri):
                desc = self.refused_at_migrate(vm, uri)
                self.assertTrue(names_word(desc, "multifd"), desc)
                # What is wrong: the refused kind, or the kinds that work.
                self.assertTrue(word in desc or ("tcp" in desc and "unix" in desc), desc)
                self.assertEqual(vm.qmp.command("query-status")["status"], "running")
        self.assertLessEqual(self.check_running_guest(vm, high=2 * MiB, resume=True), 1)
        # Without multifd the same file works.
        self.configure(vm, {"multifd": False})
        info = self.migrate(vm, f"file:{vm.path('guest.mig')}")
        self.assertEqual(info["status"], "completed", info.get("error-desc"))

    def test_mismatch_names_both_values(self):
        """CONFIG: the destination refuses settings that differ from its own,
        naming both; the source keeps its guest, whole. One source, a new
        destination per case."""
        source = self.start_source(memory="64M", append="mode=dirty start=1M end=8M")
        base_caps = {"multifd": True, "x-channel-header": False}
        base = {"multifd-channels": 2, "multifd-compression": "none",
                "zero-page-detection": "multifd"}
        cases = (
            ("multifd-channels", {}, {"multifd-channels": 4}, {}, {"multifd-channels": 2},
             r"multifd-channels 4\b.*\b2\b"),
            ("multifd-compression", {}, {"multifd-compression": "zstd"}, {},
             {"multifd-compression": "none"}, r"zstd.*none"),
            ("zero-page-detection", {}, {"zero-page-detection": "legacy"}, {},
             {"zero-page-detection": "multifd"}, r"legacy.*multifd"),
            ("x-channel-header", {"x-channel-header": True}, {}, {"x-channel-header": False},
             {}, r"x-channel-header"),
            ("multifd", {"multifd": True}, {}, {"multifd": False}, {}, None),
        )
        for name, src_caps, src_params, dst_caps, dst_params, pattern in cases:
            with self.subTest(name=name):
                destination, uri = self.incoming({**base_caps, **dst_caps},
                                                 {**base, **dst_params}, memory="64M")
                self.configure(source, {**base_caps, **src_caps}, {**base, **src_params})
                source.qmp.command("migrate", uri=uri)
                info = wait_migration(source.qmp, ("failed",), timeout=30)
                desc = info.get("error-desc", "")
                err = self.assert_gave_up(destination)
                self.assertTrue(names_word(desc, name),
                                f"{name!r} not named in {desc!r}; destination stderr: "
                                f"{err[-400:]!r}")
                self.assertIn("source", desc)
                self.assertIn("destination", desc)
                if pattern:
                    self.assertTrue(re.search(pattern, desc), f"{pattern!r} not in {desc!r}")
                self.assertTrue(names_word(err, name), err)
                self.assert_source_whole(source, high=8 * MiB)
        self.quit_cleanly(source)


class ForeignChannel(MultifdTestCase):
    PARAMS = {"multifd-channels": 2}

    def assert_refusal(self, answer, closed):
        if answer is not None:
            rtype, body, crc_ok = answer
            self.assertEqual(rtype, REC_RP_ERROR)
            self.assertTrue(crc_ok, "the RP_ERROR's CRC")
            self.assertLess(int.from_bytes(body[:4], "little", signed=True), 0)
            self.assertIn("another migration", body[4:].decode("utf-8", "replace"))
        self.assertTrue(closed, "the destination kept the foreign connection open")

    def test_foreign_channel_after_main(self):
        """The proxy holds the source's multifd channels until a RAM channel
        0 with another migration id has reached the destination after the
        main channel: refused, and the real channel 0 still counts."""
        source = self.start_source_with_marker()
        destination, uri = self.incoming(HEADERS, self.PARAMS)
        self.configure(source, HEADERS, self.PARAMS)
        proxy = self.proxy(uri, inject_foreign=True)
        info = self.migrate(source, proxy.uri)
        foreign = proxy.foreign
        self.assertIsNotNone(foreign, "the proxy never saw CONFIG on the main channel")
        self.assertTrue(foreign["sent"], foreign)
        self.assertIsNotNone(foreign["answer"], f"no RP_ERROR for a foreign channel: {foreign}")
        self.assert_refusal(foreign["answer"], foreign["closed"])
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assert_completed(source, destination, info)

    def test_foreign_channel_before_migration(self):
        """A RAM channel of another migration connects before the source
        does: the destination must not take it for one of its own."""
        source = self.start_source_with_marker()
        destination, uri = self.incoming(HEADERS, self.PARAMS)
        self.configure(source, HEADERS, self.PARAMS)
        port = int(uri.rsplit(":", 1)[1])
        foreign = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(foreign.close)
        foreign.sendall(channel_header(CHANNEL_RAM, 0, os.urandom(16)))
        result = {}

        def listen():
            foreign.settimeout(60)
            try:
                result["answer"] = read_return_record(foreign)
                result["closed"] = foreign.recv(1) == b""
            except EOFError:
                result["closed"] = True
            except ConnectionResetError:
                result["closed"] = True
            except OSError as error:
                result["error"] = error
        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        info = self.migrate(source, uri)
        self.assertEqual(info["status"], "completed", info.get("error-desc"))
        listener.join(timeout=15)
        self.assertFalse(listener.is_alive(), "the foreign connection was neither answered "
                         "nor closed")
        self.assert_refusal(result.get("answer"), result.get("closed"))
        self.assertEqual(destination.read_memory(MARKER_ADDRESS, len(MARKER)), MARKER)
        self.assert_completed(source, destination, info)


class Faults(MultifdTestCase):
    """Cancel and kill -9 in the middle of a multifd migration: held in
    precopy (no estimate fits 1 byte/s), or in the switchover (the proxy
    keeps the device's stop-copy buffer back)."""
    PARAMS = {"multifd-channels": 4, "x-multifd-channels-device-state": 1,
              "avail-switchover-bandwidth": HOLD}
    DEVICE = "accel,id=gpu0,state-size=16M,changes=off"

    def start_held(self):
        source = self.start_source(extra=devices(self.DEVICE))
        before = {"gpu0": digest(source)}
        destination, uri = self.incoming(HEADERS, self.PARAMS,
                                         extra=devices(self.DEVICE))
        self.configure(source, HEADERS, self.PARAMS)
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, ("active",), timeout=30,
                              predicate=lambda i: i["ram"]["dirty-sync-count"] >= 3)
        self.assertGreater(info["ram"]["multifd-bytes"], 0)
        return source, destination, before

    def test_cancel_then_migrate_again(self):
        source, destination, before = self.start_held()
        source.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("cancelled",), timeout=15)
        self.assertNotIn("error-desc", info)
        self.assert_source_whole(source, before)
        self.assert_gave_up(destination)
        # The channels and their threads are gone: a new multifd migration
        # to a new destination completes, the device's whole state with it.
        params = {**self.PARAMS, "avail-switchover-bandwidth": RELEASE}
        second, uri = self.incoming(HEADERS, params, extra=devices(self.DEVICE))
        self.configure(source, HEADERS, params)
        info = self.migrate(source, uri)
        self.assertEqual(digest(second), before["gpu0"])
        self.assert_completed(source, second, info)

    def start_stalled(self):
        """Held in the switchover: the proxy keeps gpu0's stop-copy buffer
        (its only one: precopy sent the rest) from the destination, so the
        source has stopped the guest and waits for RP_READY."""
        params = {**self.PARAMS, "avail-switchover-bandwidth": AT_ONCE}
        source = self.start_source(extra=devices(self.DEVICE))
        before = {"gpu0": digest(source)}
        destination, uri = self.incoming(HEADERS, params, extra=devices(self.DEVICE))
        self.configure(source, HEADERS, params)
        proxy = self.proxy(uri, action="stall", buffer=0)
        source.qmp.command("migrate", uri=proxy.uri)
        wait_migration(source.qmp, ("device",), timeout=30)
        deadline = time.monotonic() + 10
        while not proxy.tampered and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertTrue(proxy.tampered, "gpu0's stop-copy buffer never came")
        self.assertEqual(source.qmp.command("query-status")["status"], "finish-migrate")
        return source, destination, before

    def test_cancel_in_switchover(self):
        source, destination, before = self.start_stalled()
        source.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("cancelled",), timeout=15)
        self.assertNotIn("error-desc", info)
        self.assert_source_whole(source, before)
        self.assert_gave_up(destination)
        self.quit_cleanly(source)

    def test_destination_killed_in_switchover(self):
        source, destination, before = self.start_stalled()
        destination.process.send_signal(signal.SIGKILL)
        info = wait_migration(source.qmp, ("failed",), timeout=15)
        self.assertTrue(info.get("error-desc"))
        destination.process.communicate(timeout=10)
        self.assertEqual(destination.serial.text(), "")
        self.assert_source_whole(source, before)
        self.quit_cleanly(source)

    def test_destination_killed(self):
        source, destination, before = self.start_held()
        destination.process.send_signal(signal.SIGKILL)
        info = wait_migration(source.qmp, ("failed",), timeout=15)
        self.assertTrue(info.get("error-desc"))
        destination.process.communicate(timeout=10)
        self.assertEqual(destination.process.returncode, -signal.SIGKILL)
        self.assertEqual(destination.serial.text(), "")
        self.assert_source_whole(source, before)
        self.quit_cleanly(source)


class ProxySelfCheck(unittest.TestCase):
    """channel_proxy.py between a scripted source and a scripted
    destination on loopback: no KVM, no godwit-vm."""
    ID = bytes(range(16))

    def device_record(self, device_id, index, flags, size):
        body = (device_id.encode().ljust(32, b"\0") + (0).to_bytes(4, "little") +
                (1).to_bytes(4, "little") + index.to_bytes(4, "little") +
                flags.to_bytes(4, "little") + bytes([index + 1]) * size)
        return stream_record(REC_DEVICE, body)

    def stream_head(self):
        head = STREAM_MAGIC + (1).to_bytes(4, "little") + (4096).to_bytes(4, "little") + bytes(4)
        return head + crc32c(head).to_bytes(4, "little")

    def serve(self, foreign_answer=None):
        """A destination that records what each connection sends; a channel
        with another id than the main one's gets foreign_answer and a close."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self.addCleanup(listener.close)
        got, order = [], []
        state = {"main_id": None}

        # order lists connections as accepted (one thread, so in the order
        # they connected), each filled in once its header is read: the
        # connection threads may run in any order.
        def connection(sock, seq):
            data = b""
            sock.settimeout(10)
            try:
                head = recv_exact(sock, CHANNEL_HEADER_SIZE)
                fields = parse_channel_header(head)
                order[seq] = (fields["type"], fields["id"])
                if fields["type"] == CHANNEL_MAIN:
                    state["main_id"] = fields["id"]
                elif fields["id"] != state["main_id"] and foreign_answer:
                    sock.sendall(foreign_answer)
                    sock.close()
                    return
                data = head
                while True:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
            except (OSError, EOFError):
                pass
            got.append(data)
            sock.close()

        def accept():
            while True:
                try:
                    sock, _ = listener.accept()
                except OSError:
                    return
                order.append((None, None))
                threading.Thread(target=connection, args=(sock, len(order) - 1),
                                 daemon=True).start()
        threading.Thread(target=accept, daemon=True).start()
        return listener.getsockname()[1], got, order

    def send_channels(self, proxy, device_records):
        main = socket.create_connection(("127.0.0.1", proxy.port))
        main.sendall(channel_header(CHANNEL_MAIN, 0, self.ID) + self.stream_head() +
                     stream_record(REC_RAM_BLOCKS, bytes(8)) +
                     stream_record(REC_CONFIG, bytes(24) + self.ID))
        dev = socket.create_connection(("127.0.0.1", proxy.port))
        dev.sendall(channel_header(CHANNEL_DEVICE, 0, self.ID) + self.stream_head() +
                    b"".join(device_records) + stream_record(REC_CHANNEL_END))
        main.sendall(stream_record(REC_END, bytes(24)))
        for sock in (dev, main):
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            while sock.recv(65536):
                pass
            sock.close()
        proxy.wait_channels()

    def device_channel_records(self, data):
        """(type, length, device header, crc ok) of each record after the
        channel and stream headers."""
        offset = CHANNEL_HEADER_SIZE + 24
        records = []
        while offset + RECORD_HEADER_SIZE <= len(data):
            head = data[offset:offset + RECORD_HEADER_SIZE]
            rtype = int.from_bytes(head[0:4], "little")
            length = int.from_bytes(head[4:8], "little")
            body = data[offset + RECORD_HEADER_SIZE:offset + RECORD_HEADER_SIZE + length]
            crc_ok = int.from_bytes(head[8:12], "little") == crc32c(body, crc32c(head[:8]))
            records.append((rtype, length, parse_device_header(body) if rtype == REC_DEVICE
                            and length <= 1 << 20 else None, crc_ok))
            if length > 1 << 20:
                break
            offset += RECORD_HEADER_SIZE + length + (-length % 8)
        return records

    def run_action(self, action, buffer="last"):
        port, got, _ = self.serve()
        proxy = ChannelProxy(port, action=action, buffer=buffer)
        self.addCleanup(proxy.close)
        records = [self.device_record("gpu0", 0, DEVICE_PRECOPY, 100),
                   self.device_record("gpu0", 0, 0, 5000), self.device_record("nic1", 0, 1, 10),
                   self.device_record("gpu0", 1, 0, 3000), self.device_record("gpu0", 2, 1, 7)]
        self.send_channels(proxy, records)
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        data = next(d for d in got if parse_channel_header(d[:48])["type"] == CHANNEL_DEVICE)
        return proxy, self.device_channel_records(data)

    def summary(self, records):
        return [(r[2]["id"], r[2]["index"], r[2]["flags"]) if r[2] else r[0] for r in records]

    def test_crc32c_through_isal_matches(self):
        for data in (b"123456789", os.urandom(5000), b""):
            self.assertEqual(proxy_crc32c(data), crc32c(data))
        self.assertEqual(proxy_crc32c(b"123456789"), 0xE3069283)
        self.assertEqual(proxy_crc32c(b"6789", proxy_crc32c(b"12345")), 0xE3069283)

    def test_passthrough(self):
        proxy, records = self.run_action(None)
        self.assertEqual(self.summary(records),
                         [("gpu0", 0, 2), ("gpu0", 0, 0), ("nic1", 0, 1), ("gpu0", 1, 0),
                          ("gpu0", 2, 1), REC_CHANNEL_END])
        self.assertTrue(all(r[3] for r in records))
        self.assertEqual(proxy.tampered, [])
        self.assertEqual(sorted(c.kind for c in proxy.channels), ["device", "main"])
        main = proxy.of_kind("main")[0]
        self.assertEqual([r[0] for r in main.records], [REC_RAM_BLOCKS, REC_CONFIG, REC_END])
        self.assertEqual(config_fields(main.records[1][2])[1], self.ID)

    def test_reverse(self):
        proxy, records = self.run_action("reverse")
        self.assertEqual(self.summary(records),
                         [("gpu0", 0, 2), ("nic1", 0, 1), ("gpu0", 2, 1), ("gpu0", 1, 0),
                          ("gpu0", 0, 0), REC_CHANNEL_END])
        self.assertEqual(proxy.tampered, [("reverse", [2, 1, 0])])

    def test_duplicate_drop_rename(self):
        _, records = self.run_action("duplicate", 1)
        self.assertEqual([s for s in self.summary(records) if s != REC_CHANNEL_END][3:5],
                         [("gpu0", 1, 0), ("gpu0", 1, 0)])
        _, records = self.run_action("drop", 1)
        self.assertNotIn(("gpu0", 1, 0), self.summary(records))
        self.assertEqual(len(records), 5)
        _, records = self.run_action("rename", "last")
        self.assertIn(("gpuX", 2, 1), self.summary(records))
        self.assertTrue(all(r[3] for r in records), "the renamed record's CRC")

    def test_stall(self):
        proxy, records = self.run_action("stall", 1)
        self.assertEqual(self.summary(records), [("gpu0", 0, 2), ("gpu0", 0, 0), ("nic1", 0, 1)])
        self.assertEqual(proxy.tampered, [("stall", "gpu0", 1, 0)])

    def test_main_channel_without_header(self):
        port, got, _ = self.serve()
        proxy = ChannelProxy(port)
        self.addCleanup(proxy.close)
        sent = (self.stream_head() + stream_record(REC_RAM_BLOCKS, bytes(8)) +
                stream_record(REC_CONFIG, bytes(24) + self.ID) + stream_record(REC_END, bytes(24)))
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.sendall(channel_header(CHANNEL_MAIN, 0, self.ID) + sent)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        while sock.recv(65536):
            pass
        sock.close()
        bare = socket.create_connection(("127.0.0.1", proxy.port))
        bare.sendall(sent)
        bare.shutdown(socket.SHUT_WR)
        bare.settimeout(10)
        while bare.recv(65536):
            pass
        bare.close()
        proxy.wait_channels()
        kinds = [(c.kind, c.has_header, [r[0] for r in c.records]) for c in proxy.channels]
        self.assertEqual(kinds, [("main", True, [REC_RAM_BLOCKS, REC_CONFIG, REC_END]),
                                 ("main", False, [REC_RAM_BLOCKS, REC_CONFIG, REC_END])])

    def test_oversize(self):
        _, records = self.run_action("oversize", 0)
        self.assertEqual(records[1][1], DEVICE_BODY_BOUND + 1)

    def test_foreign_injection(self):
        answer = stream_record(REC_RP_ERROR, (-71).to_bytes(4, "little", signed=True) +
                               b"a channel of another migration")
        port, got, order = self.serve(foreign_answer=answer)
        proxy = ChannelProxy(port, inject_foreign=True)
        self.addCleanup(proxy.close)
        self.send_channels(proxy, [self.device_record("gpu0", 0, 1, 10)])
        self.assertEqual([t for t, _ in order], [CHANNEL_MAIN, CHANNEL_RAM, CHANNEL_DEVICE])
        self.assertNotEqual(order[1][1], self.ID)
        self.assertEqual(proxy.foreign["answer"][0], REC_RP_ERROR)
        self.assertTrue(proxy.foreign["answer"][2])
        self.assertTrue(proxy.foreign["closed"])


if __name__ == "__main__":
    tap.main()

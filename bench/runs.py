"""One migration run, the same for godwit-vm and QEMU: start the source with
its RAM in a /dev/shm file, wait for the guest's 'A', write the content from
the host, start the destination, set the same parameters over QMP, migrate
over TCP loopback while sampling query-migrate every 50 ms, then check the
destination's memory. Returns a record (a dict, one JSON line in
bench/results/) whether the run completed, failed or timed out."""
import ctypes
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from godwit_vm import (ACCEL, PAGE_SIZE, Qmp, QmpError, QemuVm, Vm,  # noqa: E402
                       check_increment_pattern, check_pass_count, event_time,
                       free_tcp_port)

MiB = 1 << 20

# A line of QEMU's trace log (-trace EVENT -msg timestamp=on -D FILE):
# "PID@SECONDS.MICROSECONDS:EVENT ARGS" (7.2), or a wall-clock prefix.
QEMU_TRACE_LINE = re.compile(r"(?:(\d+)@(\d+)\.(\d+):|(\d{4}-\d\d-\d\d) (\d\d):(\d\d):(\d\d)\.(\d+) )"
                             r"\s*(\w+)\s*(.*)")


def qemu_trace_events(trace_path, events):
    """(seconds, event, arguments) for every line of the given events in
    QEMU's trace log, in file order."""
    with open(trace_path) as f:
        for line in f:
            m = QEMU_TRACE_LINE.search(line)
            if not m or m.group(9) not in events:
                continue
            if m.group(2):
                t = int(m.group(2)) + int(m.group(3)) / 1e6
            else:
                t = (int(m.group(5)) * 3600 + int(m.group(6)) * 60 + int(m.group(7)) +
                     int(m.group(8)) / 10 ** len(m.group(8)))
            yield t, m.group(9), m.group(10)
GiB = 1 << 30
LOW_RAM_MAX = 3 * GiB        # both VMMs: RAM above 3 GiB sits at 4 GiB (pc machine)
CHUNK = 256 * MiB            # pmemsave and compare this much at a time
SAMPLE_INTERVAL = 0.05       # query-migrate every 50 ms
DOWNTIME_LIMIT_MS = 300
# "Unlimited" for both: QEMU's default is 128 MiB/s and godwit's 0 means
# unlimited; the same explicit 1 TiB/s goes to both so neither is paced.
MAX_BANDWIDTH = 1 << 40
DIRTY_START, DIRTY_END = 1 * MiB, 100 * MiB
QEMU_BIOS = "/usr/share/qemu/qboot.rom"
# Where /dev/kvm is missing godwit-vm runs with --accel none (tests/lib's Vm
# adds it: a host thread plays the test guest) and QEMU with TCG.
QEMU_ACCEL = "kvm" if ACCEL == "kvm" else "tcg"


@dataclass
class Scenario:
    key: str                 # file names and result records
    title: str
    controls: str            # the variable this scenario controls, in words
    memory_mib: int
    content: str             # "random" (host-written), "zero" or "dirty" (the guest dirties)
    prealloc: bool = True    # destination RAM touched before the migration
    cold_wait: float = 0.0   # seconds of idleness before each run
    channels: int = 1        # multifd-channels (with multifd)
    compression: str = "none"
    multifd: bool = None     # the multifd capability; None: on when channels > 1
    capabilities: tuple = ()  # more capabilities, on both sides (x-channel-header)
    both_params: dict = None  # more parameters set on both sides (they must match)
    source_params: dict = None   # more parameters set on the source only
    downtime_limit: int = DOWNTIME_LIMIT_MS
    devices: tuple = ()      # godwit --device specs, on both sides ("accel,id=...")
    tls: bool = False        # x509 TLS on every channel (ctx.tls_dirs: bench/tls.py)
    vmms: tuple = ("godwit", "qemu")
    skipped: dict = None     # vmm -> why it has no runs here
    short: str = ""          # the bar chart's label
    describe: str = ""       # a sentence or two for docs/benchmarks.md
    target: str = ""         # godwit's target from issue 4, if any, in words
    target_check: object = None   # f(medians) -> bool for that target

    def __post_init__(self):
        if self.multifd is None:
            self.multifd = self.channels > 1

    @property
    def device_ids(self):
        """The ids of the scenario's --device specs."""
        return [dict(kv.split("=", 1) for kv in spec.split(",")[1:] if "=" in kv)["id"]
                for spec in self.devices]

    @property
    def append(self):
        if self.content == "dirty":
            return f"mode=dirty start={DIRTY_START // MiB}M end={DIRTY_END // MiB}M"
        return "mode=idle"

    @property
    def size(self):
        return self.memory_mib * MiB


def ram_ranges(size, start, end):
    """The guest-physical ranges holding RAM-file offsets [start, end), as
    (file offset, guest-physical address, length), CHUNK at most each."""
    ranges = []
    offset = start
    while offset < end:
        limit = LOW_RAM_MAX if offset < LOW_RAM_MAX else end
        length = min(end, limit, offset + CHUNK) - offset
        gpa = offset if offset < LOW_RAM_MAX or size <= LOW_RAM_MAX else offset + GiB
        ranges.append((offset, gpa, length))
        offset += length
    return ranges


def fill_range(scenario):
    """RAM-file offsets the host writes for a random guest (and checks for
    every idle guest): [1 MiB, end - 1 MiB)."""
    return MiB, scenario.size - MiB


class Content:
    """The incompressible pseudo-random content written into every random
    guest, generated once per benchmark run (os.urandom) into /dev/shm so
    both VMMs get the same bytes and each run can be checked against it."""

    def __init__(self, size, directory="/dev/shm"):
        self.path = os.path.join(directory, f"godwit-bench-{os.getpid()}-content")
        self.size = size
        with open(self.path, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 32 * MiB))
                f.write(chunk)
                left -= len(chunk)

    def write_into(self, ram_path, start, end):
        """Copies content [0, end - start) to ram_path at start."""
        with open(self.path, "rb") as src, open(ram_path, "r+b") as dst:
            done = 0
            while done < end - start:
                done += os.copy_file_range(src.fileno(), dst.fileno(), end - start - done,
                                           offset_src=done, offset_dst=start + done)

    def read(self, offset, length):
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def read_into(self, offset, view):
        with open(self.path, "rb") as f:
            f.seek(offset)
            read_fully(f, view)

    def close(self):
        if os.path.exists(self.path):
            os.unlink(self.path)


class RunFailed(Exception):
    pass


def _connect(vm, timeout):
    vm.qmp = Qmp(vm.qmp_path, timeout=timeout)
    vm.qmp.sock.settimeout(60)
    return vm.qmp


def qemu_source_options(scenario, ram_path):
    return ("-object", f"memory-backend-file,id=mem,size={scenario.memory_mib}M,"
            f"mem-path={ram_path},share=on", "-machine", "memory-backend=mem")


def qemu_destination_options(scenario, incoming):
    # Anonymous RAM like godwit-vm's destination; a backend with the source's
    # id ("mem") because QEMU names the RAM block after it.
    return ("-object", f"memory-backend-ram,id=mem,size={scenario.memory_mib}M",
            "-machine", "memory-backend=mem", *(("-mem-prealloc",) if scenario.prealloc else ()),
            "-incoming", incoming)


def device_options(scenario):
    return tuple(arg for spec in scenario.devices for arg in ("--device", spec))


TLS_ID = "tls0"


def tls_options(vmm, scenario, ctx, endpoint):
    """The same tls-creds-x509 object for both VMMs (QEMU's -object and
    godwit-vm's --object take the same text), from the run's certificates."""
    if not scenario.tls:
        return ()
    return ("--object" if vmm == "godwit" else "-object",
            f"tls-creds-x509,id={TLS_ID},dir={ctx.tls_dirs[endpoint]},endpoint={endpoint}")


def start_source(vmm, scenario, ram_path, ctx):
    tls = tls_options(vmm, scenario, ctx, "client")
    if vmm == "godwit":
        return Vm(memory=f"{scenario.memory_mib}M", append=scenario.append, binary=ctx.vm,
                  kernel=ctx.guest,
                  extra=("--mem-path", ram_path, *device_options(scenario), *tls))
    return QemuVm(memory=f"{scenario.memory_mib}M", append=scenario.append, binary=ctx.qemu,
                  kernel=ctx.guest, bios=QEMU_BIOS, accel=QEMU_ACCEL,
                  extra=qemu_source_options(scenario, ram_path) + tls)


def start_destination(vmm, scenario, incoming, ctx):
    tls = tls_options(vmm, scenario, ctx, "server")
    if vmm == "godwit":
        return Vm(memory=f"{scenario.memory_mib}M", append=scenario.append, binary=ctx.vm,
                  kernel=ctx.guest,
                  extra=("--incoming", incoming, *(("--mem-prealloc",) if scenario.prealloc
                                                   else ()), *device_options(scenario), *tls))
    return QemuVm(memory=f"{scenario.memory_mib}M", append=scenario.append, binary=ctx.qemu,
                  kernel=ctx.guest, bios=QEMU_BIOS, accel=QEMU_ACCEL,
                  extra=tls + qemu_destination_options(scenario, incoming))


def matching_parameters(scenario):
    """The parameters both sides must agree on (the destination gets them
    before migrate-incoming)."""
    params = {}
    if scenario.multifd:
        params["multifd-channels"] = scenario.channels
        params["multifd-compression"] = scenario.compression
    if scenario.tls:
        params["tls-creds"] = TLS_ID
    params.update(scenario.both_params or {})
    return params


def parameters(scenario):
    """Everything the source gets, in one migrate-set-parameters."""
    params = {"max-bandwidth": MAX_BANDWIDTH, "downtime-limit": scenario.downtime_limit}
    params.update(matching_parameters(scenario))
    if scenario.tls:
        params["tls-hostname"] = "localhost"
    params.update(scenario.source_params or {})
    return params


def capabilities(scenario):
    names = (("multifd",) if scenario.multifd else ()) + tuple(scenario.capabilities)
    return [{"capability": name, "state": True} for name in names]


def sample(info, asked, t):
    """t: when the answer came (a monitor that waits answers late, with the
    state of that moment); asked: when the question went."""
    ram = info.get("ram", {})
    return {"t": round(t, 4), "asked": round(asked, 4), "status": info.get("status"),
            "transferred": ram.get("transferred", 0), "remaining": ram.get("remaining", 0),
            "total": ram.get("total", 0), "passes": ram.get("dirty-sync-count", 0)}


def drive_migration(source, uri, timeout):
    """migrate, then query-migrate every SAMPLE_INTERVAL until the end (or the
    timeout: migrate_cancel). Returns (final info, samples, timed_out)."""
    samples = []
    source.qmp.events.clear()
    t0 = time.monotonic()
    source.qmp.command("migrate", uri=uri)
    timed_out = False
    while True:
        asked = time.monotonic()
        info = source.qmp.command("query-migrate")
        samples.append(sample(info, asked - t0, time.monotonic() - t0))
        if info.get("status") in ("completed", "failed", "cancelled"):
            return settle(source, info), samples, timed_out
        if time.monotonic() - t0 > timeout and not timed_out:
            timed_out = True
            source.qmp.command("migrate_cancel")
            timeout += 30   # let it reach "cancelled"
        if timed_out and time.monotonic() - t0 > timeout:
            return info, samples, timed_out
        # 50 ms from the last question; a late answer (QEMU's monitor waits
        # while the VM is stopped) pushes the next one back, no burst after it.
        time.sleep(max(0.0, asked + SAMPLE_INTERVAL - time.monotonic()))


def settle(source, info):
    """QEMU 7.2 reports "completed" a moment before it fills in total-time
    and downtime (both 0 until then): ask again until two answers agree and
    total-time is set, for at most 2 s."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = source.qmp.command("query-migrate")
        if again == info and info.get("total-time"):
            break
        info = again
    return info


def read_fully(f, view):
    """Fills view from f; returns the bytes read (fewer at the end of f)."""
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            break
        done += n
    return done


class Buffers:
    """Two CHUNK-sized buffers kept for the whole benchmark: on a machine
    where first touching memory is slow (4 KiB pages at ~350 MB/s under PVM)
    allocating 2 x 256 MiB for every piece compared costs more than the
    migration. compare() is memcmp, not Python's element-wise loop."""
    data = expected = None

    @classmethod
    def get(cls):
        if cls.data is None:
            cls.data, cls.expected = bytearray(CHUNK), bytearray(CHUNK)
        return cls.data, cls.expected


_memcmp = ctypes.CDLL(None).memcmp
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_memcmp.restype = ctypes.c_int


def same(a, b, length):
    """a[:length] == b[:length] for two bytearrays, without copying them."""
    ca = (ctypes.c_char * length).from_buffer(a)
    cb = (ctypes.c_char * length).from_buffer(b)
    return _memcmp(ctypes.addressof(ca), ctypes.addressof(cb), length) == 0


def pmemsave_chunks(vm, scenario, start, end, dump, buffer=None):
    """Yields (file offset, bytes) of the guest's RAM-file range [start, end),
    read through pmemsave one CHUNK at a time; with buffer (a CHUNK-sized
    bytearray), (file offset, length) read into it instead, each piece
    overwriting the last."""
    for offset, gpa, length in ram_ranges(scenario.size, start, end):
        vm.qmp.command("pmemsave", val=gpa, size=length, filename=dump)
        with open(dump, "rb") as f:
            if buffer is None:
                data = f.read()
                got = len(data)
            else:
                got = read_fully(f, memoryview(buffer)[:length])
                extra = f.read(1)
                got += len(extra)
        os.unlink(dump)
        if got != length:
            raise RunFailed(f"pmemsave at {gpa:#x} gave {got} bytes, not {length}")
        yield offset, (data if buffer is None else length)


def first_difference(a, b):
    for page in range(0, len(a), PAGE_SIZE):
        if a[page:page + PAGE_SIZE] != b[page:page + PAGE_SIZE]:
            return page
    return 0


def verify(destination, source, scenario, content, dump):
    """Checks the destination's memory; returns what was checked, raises
    RunFailed on a mismatch."""
    if scenario.content == "dirty":
        before = destination.serial.text().count("B")
        destination.serial.wait_count("B", before + 1, timeout=30, process=destination.process)
        destination.qmp.command("stop")
        data = b"".join(d for _, d in pmemsave_chunks(destination, scenario, DIRTY_START,
                                                      DIRTY_END, dump))
        passes = destination.serial.text().count("B") + source.serial.text().count("B")
        try:
            edges = check_increment_pattern(data)
            check_pass_count(data, passes)
        except AssertionError as failure:
            raise RunFailed(f"dirty guest's memory: {failure}")
        return (f"[1M,100M): increment rule holds ({edges} edge), page 0 counts "
                f"{passes} passes; the guest ran on after")
    destination.qmp.command("stop")
    start, end = fill_range(scenario)
    data, expected = Buffers.get()
    if scenario.content != "random":
        ctypes.memset((ctypes.c_char * CHUNK).from_buffer(expected), 0, CHUNK)
    for offset, length in pmemsave_chunks(destination, scenario, start, end, dump, data):
        if scenario.content == "random":
            content.read_into(offset - start, memoryview(expected)[:length])
        if not same(data, expected, length):
            where = offset + first_difference(bytes(data[:length]), bytes(expected[:length]))
            raise RunFailed(f"destination memory differs from the "
                            f"{'written content' if scenario.content == 'random' else 'zeros'}"
                            f" at RAM offset {where:#x}")
    what = "the written content" if scenario.content == "random" else "all zero"
    return f"[1M, {scenario.memory_mib}M-1M) is {what}, byte for byte"


def device_digests(vm, scenario):
    """{id: x-query-accel's answer} for the scenario's devices."""
    return {i: vm.qmp.command("x-query-accel", id=i) for i in scenario.device_ids}


def verify_devices(source, destination, scenario, before):
    """Every device's state on the destination is the source's: the digest
    the stopped source gives now, the same as before the migration (the
    devices run with changes=off) and the destination's."""
    after, there = device_digests(source, scenario), device_digests(destination, scenario)
    for i in scenario.device_ids:
        digests = (before[i]["digest"], after[i]["digest"], there[i]["digest"])
        if len(set(digests)) != 1 or after[i]["state-size"] != there[i]["state-size"]:
            raise RunFailed(f"device {i}: digest before/after on the source and on the "
                            f"destination: {' / '.join(digests)} (state-size "
                            f"{after[i]['state-size']} / {there[i]['state-size']})")
    return "; ".join(f"device {i}: {there[i]['state-size'] >> 20} MiB, digest "
                     f"{there[i]['digest']} on both sides" for i in scenario.device_ids)


def cpu_seconds(pid):
    """User and system CPU time of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_note(vm):
    """The exit status and the last lines of stderr of a VM that died."""
    if vm is None or vm.process.poll() is None:
        return ""
    try:
        _, err = vm.process.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        err = ""
    tail = " | ".join((err or "").strip().splitlines()[-3:])
    return f" ({os.path.basename(vm.args[0])} exited with {vm.process.returncode}: {tail})"


def cpu_ticks():
    """This machine's steal and total CPU time so far (/proc/stat, ticks):
    steal is time the hypervisor under this machine ran something else
    while this machine had work to run."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    return fields[7], sum(fields)


def steal_share(before, after):
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0


def run_once(vmm, scenario, rep, ctx):
    """One migration; a record dict with ok, failure, info, samples, ..."""
    record = {"vmm": vmm, "scenario": scenario.key, "rep": rep, "ok": False,
              "failure": None, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "load": os.getloadavg()[0]}
    if scenario.cold_wait:
        time.sleep(scenario.cold_wait)
    ram_path = f"/dev/shm/godwit-bench-{os.getpid()}-ram"
    dump = f"/dev/shm/godwit-bench-{os.getpid()}-dump"
    for path in (ram_path, dump):
        if os.path.exists(path):
            os.unlink(path)
    source = destination = None
    wall = time.monotonic()
    try:
        source = start_source(vmm, scenario, ram_path, ctx)
        _connect(source, 30)
        source.serial.wait_count("A", 1, timeout=60, process=source.process)
        if scenario.content == "random":
            ctx.content.write_into(ram_path, *fill_range(scenario))
        if scenario.content == "dirty":
            source.serial.wait_count("B", 2, timeout=60, process=source.process)
        port = free_tcp_port()
        uri = f"tcp:127.0.0.1:{port}"
        caps = capabilities(scenario)
        defer = bool(caps or matching_parameters(scenario))
        destination = start_destination(vmm, scenario, "defer" if defer else uri, ctx)
        _connect(destination, 300)
        if defer:
            for vm in (source, destination):
                if caps:
                    vm.qmp.command("migrate-set-capabilities", capabilities=caps)
            if matching_parameters(scenario):
                destination.qmp.command("migrate-set-parameters",
                                        **matching_parameters(scenario))
            destination.qmp.command("migrate-incoming", uri=uri)
        record["commands"] = {"source": source.args, "destination": destination.args}
        source.qmp.command("migrate-set-parameters", **parameters(scenario))
        record["parameters"] = parameters(scenario)
        record["capabilities"] = [c["capability"] for c in caps]
        before = device_digests(source, scenario)
        cpu = [cpu_seconds(vm.process.pid) for vm in (source, destination)]
        ticks = cpu_ticks()
        info, samples, timed_out = drive_migration(source, uri, ctx.migration_timeout)
        record.update(info=info, samples=samples, steal=steal_share(ticks, cpu_ticks()))
        # what the migration cost each side, before the check reads memory
        record["cpu_s"] = {role: cpu_seconds(vm.process.pid) - was for role, vm, was in
                           (("source", source, cpu[0]), ("destination", destination, cpu[1]))}
        if timed_out:
            passes = info.get("ram", {}).get("dirty-sync-count")
            raise RunFailed(f"timed out after {ctx.migration_timeout:g} s "
                            f"({info.get('status')}, pass {passes})")
        if info.get("status") != "completed":
            raise RunFailed(f"migration {info.get('status')}: {info.get('error-desc')}")
        stop = [e for e in source.qmp.events if e["event"] == "STOP"]
        resume = destination.qmp.wait_event("RESUME", timeout=30)
        if stop:
            record["stop_to_resume_ms"] = (event_time(resume) - event_time(stop[-1])) * 1000
        # What the migration made the source allocate: reading a hole of a
        # shared tmpfs file allocates a page.
        record["source_file_mib"] = os.stat(ram_path).st_blocks * 512 / MiB
        record["verified"] = verify(destination, source, scenario, ctx.content, dump)
        if scenario.devices:
            record["verified"] += "; " + verify_devices(source, destination, scenario, before)
        record["ok"] = True
    except (RunFailed, AssertionError, TimeoutError, QmpError, OSError,
            ConnectionError) as failure:
        note = process_note(source) + process_note(destination)
        record["failure"] = f"{type(failure).__name__}: {failure}{note}".replace("\n", " ")
    finally:
        for vm in (source, destination):
            if vm is not None:
                vm.close()
        for path in (ram_path, dump):
            if os.path.exists(path):
                os.unlink(path)
    record["wall_s"] = round(time.monotonic() - wall, 2)
    return record


def figures(record):
    """The table's numbers from a completed run's query-migrate."""
    info = record["info"]
    ram = info["ram"]
    seconds = max(info["total-time"] - info.get("setup-time", 0), 1) / 1000
    return {"mbs": ram["transferred"] / 1e6 / seconds,
            "covered_mbs": ram["total"] / 1e6 / seconds,
            "total": info["total-time"], "downtime": info.get("downtime"),
            "setup": info.get("setup-time", 0), "passes": ram.get("dirty-sync-count"),
            "stopped_kib": (ram["downtime-bytes"] / 1024 if "downtime-bytes" in ram else None),
            "transferred_mib": ram["transferred"] / MiB,
            "stop_to_resume": record.get("stop_to_resume_ms"),
            "steal": record.get("steal"),
            "source_file_mib": record.get("source_file_mib"),
            "predicted": info.get("expected-downtime-at-switchover"),
            "predicted_ratio": (info["expected-downtime-at-switchover"] / info["downtime"]
                                if info.get("downtime") and
                                "expected-downtime-at-switchover" in info else None),
            "stopped_mib": (ram["downtime-bytes"] / MiB if "downtime-bytes" in ram else None),
            "device_mib": (info["device-state"]["transferred"] / MiB
                           if "transferred" in info.get("device-state", {}) else None),
            "multifd_mib": (ram["multifd-bytes"] / MiB if "multifd-bytes" in ram else None),
            "src_cpu_per_gib": (record["cpu_s"]["source"] / (ram["transferred"] / GiB)
                                if record.get("cpu_s") else None),
            "dst_cpu_per_gib": (record["cpu_s"]["destination"] / (ram["transferred"] / GiB)
                                if record.get("cpu_s") else None)}


def run_all(scenarios, repeat, ctx, jsonl, log, results, interleave=False):
    """Runs every scenario repeat times into results[key][vmm] (a list of
    records, also written to jsonl). Within a repetition godwit and QEMU run
    back to back, alternating which goes first. interleave: repetition by
    repetition across the scenarios (the first scenario of each repetition
    rotating), rather than scenario by scenario, so slow drifts of the
    machine spread over all of them."""
    if interleave:
        plan = [(rep, scenarios[(i + rep) % len(scenarios)])
                for rep in range(repeat) for i in range(len(scenarios))]
    else:
        plan = [(rep, s) for s in scenarios for rep in range(repeat)]
    for rep, s in plan:
        order = s.vmms if rep % 2 == 0 else tuple(reversed(s.vmms))
        for vmm in order:
            if s.cold_wait:
                log(f"{s.key} {vmm} run {rep + 1}: {s.cold_wait:.0f} s idle first")
            record = run_once(vmm, s, rep, ctx)
            results.setdefault(s.key, {}).setdefault(vmm, []).append(record)
            if jsonl:
                jsonl.write(json.dumps(record) + "\n")
                jsonl.flush()
            if record["ok"]:
                f = figures(record)
                extra = (f", predicted {f['predicted']} ms, stopped {f['stopped_mib']:.0f} MiB"
                         if s.devices and f["stopped_mib"] is not None else "")
                log(f"{s.key} {vmm} run {rep + 1}: {f['mbs']:.0f} MB/s, total "
                    f"{f['total']} ms, downtime {f['downtime']} ms, passes "
                    f"{f['passes']}{extra}, checked ({record['wall_s']} s)")
            else:
                log(f"{s.key} {vmm} run {rep + 1}: FAILED: {record['failure']}")
    return results

"""One migration run, the same for godwit-vm and QEMU: start the source with
its RAM in a /dev/shm file, wait for the guest's 'A', write the content from
the host, start the destination, set the same parameters over QMP, migrate
over TCP loopback while sampling query-migrate every 50 ms, then check the
destination's memory. Returns a record (a dict, one JSON line in
bench/results/) whether the run completed, failed or timed out."""
import os
import subprocess
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from godwit_vm import (PAGE_SIZE, Qmp, QmpError, QemuVm, Vm,  # noqa: E402
                       check_increment_pattern, check_pass_count, event_time,
                       free_tcp_port)

MiB = 1 << 20
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


@dataclass
class Scenario:
    key: str                 # file names and result records
    title: str
    controls: str            # the variable this scenario controls, in words
    memory_mib: int
    content: str             # "random" (host-written), "zero" or "dirty" (the guest dirties)
    prealloc: bool = True    # destination RAM touched before the migration
    cold_wait: float = 0.0   # seconds of idleness before each run
    channels: int = 1        # > 1: multifd (QEMU only)
    compression: str = "none"
    vmms: tuple = ("godwit", "qemu")
    skipped: dict = None     # vmm -> why it has no runs here
    short: str = ""          # the bar chart's label
    describe: str = ""       # a sentence or two for docs/benchmarks.md
    target: str = ""         # godwit's target from issue 4, if any, in words
    target_check: object = None   # f(medians) -> bool for that target

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


def start_source(vmm, scenario, ram_path, ctx):
    if vmm == "godwit":
        return Vm(memory=f"{scenario.memory_mib}M", append=scenario.append, binary=ctx.vm,
                  kernel=ctx.guest, extra=("--mem-path", ram_path))
    return QemuVm(memory=f"{scenario.memory_mib}M", append=scenario.append, binary=ctx.qemu,
                  kernel=ctx.guest, bios=QEMU_BIOS, extra=qemu_source_options(scenario, ram_path))


def start_destination(vmm, scenario, incoming, ctx):
    if vmm == "godwit":
        return Vm(memory=f"{scenario.memory_mib}M", append=scenario.append, binary=ctx.vm,
                  kernel=ctx.guest,
                  extra=("--incoming", incoming, *(("--mem-prealloc",) if scenario.prealloc
                                                   else ())))
    return QemuVm(memory=f"{scenario.memory_mib}M", append=scenario.append, binary=ctx.qemu,
                  kernel=ctx.guest, bios=QEMU_BIOS,
                  extra=qemu_destination_options(scenario, incoming))


def parameters(scenario):
    params = {"max-bandwidth": MAX_BANDWIDTH, "downtime-limit": DOWNTIME_LIMIT_MS}
    if scenario.channels > 1:
        params["multifd-channels"] = scenario.channels
        params["multifd-compression"] = scenario.compression
    return params


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


def pmemsave_chunks(vm, scenario, start, end, dump):
    """Yields (file offset, bytes) of the guest's RAM-file range [start, end),
    read through pmemsave one CHUNK at a time."""
    for offset, gpa, length in ram_ranges(scenario.size, start, end):
        vm.qmp.command("pmemsave", val=gpa, size=length, filename=dump)
        with open(dump, "rb") as f:
            data = f.read()
        os.unlink(dump)
        if len(data) != length:
            raise RunFailed(f"pmemsave at {gpa:#x} gave {len(data)} bytes, not {length}")
        yield offset, data


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
    zero = bytes(CHUNK)
    for offset, data in pmemsave_chunks(destination, scenario, start, end, dump):
        if scenario.content == "random":
            expected = content.read(offset - start, len(data))
        else:
            expected = zero[:len(data)]
        if data != expected:
            where = offset + first_difference(data, expected)
            raise RunFailed(f"destination memory differs from the "
                            f"{'written content' if scenario.content == 'random' else 'zeros'}"
                            f" at RAM offset {where:#x}")
    what = "the written content" if scenario.content == "random" else "all zero"
    return f"[1M, {scenario.memory_mib}M-1M) is {what}, byte for byte"


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
        multifd = scenario.channels > 1
        destination = start_destination(vmm, scenario, "defer" if multifd else uri, ctx)
        _connect(destination, 300)
        if multifd:
            caps = [{"capability": "multifd", "state": True}]
            for vm in (source, destination):
                vm.qmp.command("migrate-set-capabilities", capabilities=caps)
            destination.qmp.command("migrate-set-parameters", **{
                k: v for k, v in parameters(scenario).items() if k.startswith("multifd")})
            destination.qmp.command("migrate-incoming", uri=uri)
        record["commands"] = {"source": source.args, "destination": destination.args}
        source.qmp.command("migrate-set-parameters", **parameters(scenario))
        record["parameters"] = parameters(scenario)
        info, samples, timed_out = drive_migration(source, uri, ctx.migration_timeout)
        record.update(info=info, samples=samples)
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
            "source_file_mib": record.get("source_file_mib"),
            "predicted": info.get("expected-downtime-at-switchover")}

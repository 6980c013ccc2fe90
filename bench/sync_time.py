#!/usr/bin/env python3
"""Dirty-bitmap sync time per GiB of guest RAM, godwit-vm beside QEMU 7.2.

Seed 001: the time a sync takes decides which guests converge. Here the
guest is sparse: RAM of 1, 4 and 16 GiB in a /dev/shm file, the test guest
dirtying [1 MiB, 9 MiB) and nothing else, so untouched RAM costs nothing but
the sync's walk over its bitmap. Each VMM migrates it over TCP loopback with
a downtime limit it cannot meet (godwit: avail-switchover-bandwidth 1 byte/s;
QEMU: downtime-limit 1 ms, which its estimate cannot meet for 8 MiB dirty
per pass), for SYNC_SECONDS of passes after the first, then is allowed to
converge; the destination's dirty window is checked byte-exact (the
increment rule and the pass count) while the guest runs there.

Measured, per sync after the first two (the first pass sends all of RAM):
  godwit   query-migrate's ram.last-dirty-sync (ours), sampled every 20 ms:
           total, and its fetch (KVM_GET_DIRTY_LOG), merge and device parts;
  QEMU     the time between its trace points migration_bitmap_sync_start
           and migration_bitmap_sync_end (-trace, timestamps from
           -msg timestamp=on), which bracket the same work: KVM's dirty log
           read for every slot and the merge into its RAM bitmap.
Prints a table: median sync time in ms and per GiB, and godwit/QEMU."""
import argparse
import os
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
from godwit_vm import (PAGE_SIZE, QemuVm, Vm, check_increment_pattern,  # noqa: E402
                       check_pass_count, free_tcp_port, kvm_skip_reason)
from runs import qemu_trace_events  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
SIZES_GIB = (1, 4, 16)
WINDOW = (1 * MiB, 9 * MiB)
APPEND = f"mode=dirty start={WINDOW[0] // MiB}M end={WINDOW[1] // MiB}M"
SYNC_SECONDS = 4.0
QEMU_BIOS = "/usr/share/qemu/qboot.rom"


class RunFailed(Exception):
    pass


def shm_path(tag):
    return f"/dev/shm/godwit-bench-sync-{os.getpid()}-{tag}"


def start_source(vmm, gib, ram_path, args):
    if vmm == "godwit":
        return Vm(memory=f"{gib}G", append=APPEND, binary=args.vm, kernel=args.guest,
                  extra=("--mem-path", ram_path))
    trace = os.path.join(os.path.dirname(ram_path), os.path.basename(ram_path) + ".trace")
    vm = QemuVm(memory=f"{gib}G", append=APPEND, binary=args.qemu, kernel=args.guest,
                bios=QEMU_BIOS,
                extra=("-object", f"memory-backend-file,id=mem,size={gib}G,mem-path={ram_path},"
                       "share=on", "-machine", "memory-backend=mem",
                       "-trace", "migration_bitmap_sync_start",
                       "-trace", "migration_bitmap_sync_end",
                       "-msg", "timestamp=on", "-D", trace))
    vm.trace_path = trace
    return vm


def start_destination(vmm, gib, uri, args):
    if vmm == "godwit":
        return Vm(memory=f"{gib}G", append=APPEND, binary=args.vm, kernel=args.guest,
                  extra=("--incoming", uri))
    return QemuVm(memory=f"{gib}G", append=APPEND, binary=args.qemu, kernel=args.guest,
                  bios=QEMU_BIOS,
                  extra=("-object", f"memory-backend-ram,id=mem,size={gib}G",
                         "-machine", "memory-backend=mem", "-incoming", uri))


def qemu_sync_times(trace_path):
    """Durations in ms of every start/end pair in QEMU's trace log."""
    started, durations = None, []
    for t, event, _ in qemu_trace_events(trace_path, ("migration_bitmap_sync_start",
                                                      "migration_bitmap_sync_end")):
        if event.endswith("start"):
            started = t
        elif started is not None:
            durations.append((t - started) * 1000)
            started = None
    return durations


def hold_back(vmm, source):
    if vmm == "godwit":
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": 1,
                                                          "downtime-limit": 300})
    else:
        source.qmp.command("migrate-set-parameters", **{"downtime-limit": 1})
    source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 1 << 40})


def let_go(vmm, source):
    if vmm == "godwit":
        source.qmp.command("migrate-set-parameters", **{"avail-switchover-bandwidth": 0})
    else:
        source.qmp.command("migrate-set-parameters", **{"downtime-limit": 300})


def godwit_samples(source, seconds):
    """{sync count: last-dirty-sync} seen while passes run."""
    seen, deadline = {}, time.monotonic() + seconds
    while time.monotonic() < deadline:
        info = source.qmp.command("query-migrate")
        if info.get("status") != "active":
            raise RunFailed(f"status {info.get('status')} while held back: "
                            f"{info.get('error-desc', '')}")
        ram = info.get("ram", {})
        count = ram.get("dirty-sync-count", 0)
        if count > 2 and "last-dirty-sync" in ram:
            seen[count] = ram["last-dirty-sync"]
        time.sleep(0.02)
    return seen


def wait_status(source, statuses, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = source.qmp.command("query-migrate")
        if info.get("status") in statuses:
            return info
        time.sleep(0.05)
    raise RunFailed(f"no {'/'.join(statuses)} within {timeout:g} s")


def verify(destination, source):
    """The dirty window on the destination, with the guest running there;
    page 0 counts the passes made on both hosts."""
    before = destination.serial.text().count("B")
    destination.serial.wait_count("B", before + 1, timeout=30, process=destination.process)
    destination.qmp.command("stop")
    data = destination.read_memory(WINDOW[0], WINDOW[1] - WINDOW[0])
    # Both raise AssertionError with the page that breaks the rule.
    check_increment_pattern(data)
    check_pass_count(data, source.serial.text().count("B") + destination.serial.text().count("B"))


def run_once(vmm, gib, args):
    ram_path = shm_path(vmm)
    source = destination = None
    try:
        source = start_source(vmm, gib, ram_path, args)
        source.connect()
        source.serial.wait_count("A", 1, timeout=60, process=source.process)
        port = free_tcp_port()
        uri = f"tcp:127.0.0.1:{port}"
        destination = start_destination(vmm, gib, uri, args)
        destination.connect()
        hold_back(vmm, source)
        source.qmp.command("migrate", uri=uri)
        wait_status(source, ("active",), 30)
        # Past the first pass, which sends all of RAM.
        deadline = time.monotonic() + 120
        while source.qmp.command("query-migrate").get("ram", {}).get("dirty-sync-count", 0) < 3:
            if time.monotonic() > deadline:
                raise RunFailed("the first pass did not end within 120 s")
            time.sleep(0.05)
        seen = godwit_samples(source, args.seconds) if vmm == "godwit" else None
        if vmm == "qemu":
            time.sleep(args.seconds)
        let_go(vmm, source)
        info = wait_status(source, ("completed", "failed", "cancelled"), 120)
        if info["status"] != "completed":
            raise RunFailed(f"{info['status']}: {info.get('error-desc', '')}")
        verify(destination, source)
        if vmm == "godwit":
            syncs = list(seen.values())
            return {"total": [s["total"] / 1000 for s in syncs],
                    "fetch": [s["fetch"] / 1000 for s in syncs],
                    "merge": [s["merge"] / 1000 for s in syncs],
                    "device": [s["device"] / 1000 for s in syncs]}
        # Drop the first two syncs (tracking start, end of the first pass)
        # and the last (the final sync, guest stopped).
        return {"total": qemu_sync_times(source.trace_path)[2:-1]}
    finally:
        for vm in (destination, source):
            if vm is not None:
                vm.close()
        for path in (ram_path, ram_path + ".trace"):
            if os.path.exists(path):
                os.unlink(path)


def median(values):
    return statistics.median(values) if values else float("nan")


def table(results, sizes):
    lines = ["| guest RAM | godwit sync ms (fetch / merge / device) | godwit ms per GiB "
             "| QEMU 7.2 sync ms | QEMU ms per GiB | godwit / QEMU | syncs (godwit, QEMU) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for gib in sizes:
        g, q = results.get(("godwit", gib)), results.get(("qemu", gib))
        g_cell = g_gib = q_cell = q_gib = ratio = "-"
        counts = [str(len(r["total"])) if isinstance(r, dict) else "-" for r in (g, q)]
        if isinstance(g, dict) and g["total"]:
            g_cell = (f"{median(g['total']):.2f} ({median(g['fetch']):.2f} / "
                      f"{median(g['merge']):.2f} / {median(g['device']):.2f})")
            g_gib = f"{median(g['total']) / gib:.3f}"
        elif isinstance(g, str):
            g_cell = g
        if isinstance(q, dict) and q["total"]:
            q_cell, q_gib = f"{median(q['total']):.2f}", f"{median(q['total']) / gib:.3f}"
        elif isinstance(q, str):
            q_cell = q
        if isinstance(g, dict) and isinstance(q, dict) and g["total"] and q["total"]:
            ratio = f"{median(g['total']) / median(q['total']):.2f}"
        lines.append(f"| {gib} GiB | {g_cell} | {g_gib} | {q_cell} | {q_gib} | {ratio} "
                     f"| {', '.join(counts)} |")
    return lines


def section(results, sizes):
    """docs/benchmarks.md's sync-time table (markdown lines)."""
    return ["### Dirty-bitmap sync time per GiB of sparse guest (bench/sync_time.py)", "",
            f"Guests of {', '.join(str(g) for g in sizes)} GiB, RAM in a /dev/shm file, the "
            f"test guest dirtying only [{WINDOW[0] // MiB} MiB, {WINDOW[1] // MiB} MiB); each "
            f"VMM held in precopy for {SYNC_SECONDS:g} s of passes after the first, then let "
            "converge, and the destination's dirty window checked byte-exact. godwit: "
            "`ram.last-dirty-sync` (ours) sampled every 20 ms, median of the syncs seen, with "
            "its parts (fetch: `KVM_GET_DIRTY_LOG`; merge into the engine's bitmaps; device: "
            "asking the devices what they hold). QEMU 7.2: time between its trace points "
            "`migration_bitmap_sync_start` and `_end` (`-trace`, `-msg timestamp=on`, "
            "microsecond stamps), median over its syncs after the first two. Lower is better; "
            "the ratio below 1 means godwit's sync is shorter. Seed 001's formula needs this "
            "figure as x: sync time counts against the downtime a guest can reach.", "",
            *table(results, sizes), ""]


def measure(args, log=print):
    """{(vmm, GiB): {"total": [ms, ...], ...} or a failure sentence}."""
    results = {}
    vmms = ("godwit", "qemu") if args.qemu else ("godwit",)
    for gib in args.sizes:
        for vmm in vmms:
            log(f"sync time: {vmm}, {gib} GiB sparse guest")
            try:
                results[(vmm, gib)] = run_once(vmm, gib, args)
            except Exception as e:   # a failed run is a row, never a figure
                results[(vmm, gib)] = f"failed: {e}"
                log(f"  failed: {e}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--guest", default="build/guest/testguest.elf")
    parser.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES_GIB))
    parser.add_argument("--seconds", type=float, default=SYNC_SECONDS)
    args = parser.parse_args()
    reason = kvm_skip_reason()
    if reason:
        print(f"sync time: not measured: {reason}")
        return 0
    results = measure(args, log=lambda s: print(s, file=sys.stderr))
    for line in table(results, args.sizes):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The local update in make bench (issue 16): a guest moved to a new
godwit-vm process on this host with its RAM left in place (mode
cpr-transfer: the RAM's descriptors cross on the cpr channel), beside
godwit's ordinary migration of the same guest over unix: with multifd (2
channels, RAM copied), in the same run. Guests of 1, 4 and 16 GiB, RAM in a
/dev/shm file: 1 and 4 GiB filled by the host with random bytes, 16 GiB
sparse (a 256 MiB run of random bytes and a page every 64 MiB, holes
elsewhere); each idle, and dirty (the test guest incrementing a byte of every
page of [1 MiB, 64 MiB) at 256 MiB/s).

Every run is checked on the process that ends up running: the dirty guest's
increment rule over its range; the host's bytes above it (the copy's
destination file compared with the source's byte for byte; the local update's
new process read through pmemsave at 64 sampled MiB, and a host write made
through the file after the switch seen by its guest: the same pages).

Targets: downtime under 10 ms and total under 50 ms for every size, and at
least 100x less total time than the copying migration at 4 GiB.

bench/compare.py runs it (make bench; --no-local-update leaves it out).
Alone:

    python3 bench/local_update.py --vm build/vm/godwit-vm --guest build/guest/testguest.elf"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
from godwit_vm import (QmpError, Vm, check_increment_pattern, wait_migration)  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
ISSUE = "issue 16"
SIZES_GIB = (1, 4, 16)
SPARSE_GIB = 16
DIRTY_END = 64 * MiB
WORKLOADS = {"idle": "mode=idle",
             "dirty": f"mode=dirty start=1M end={DIRTY_END >> 20}M rate=256"}
FILL_START = DIRTY_END        # the guest's image, stack and dirty range stay below
TARGET_DOWNTIME_MS = 10
TARGET_TOTAL_MS = 50
TARGET_RATIO = 100            # copy total / local total at 4 GiB
RATIO_GIB = 4
MIGRATION_TIMEOUT = 180.0
SAMPLE = 64 * MiB
LATE = b"written by the host after the switch"


class RunFailed(Exception):
    pass


def guest_address(offset):
    """godwit-vm's layout: the file's first 3 GiB at guest-physical 0, the
    rest from 4 GiB."""
    return offset if offset < 3 * GiB else offset + GiB


def shm(tag):
    return f"/dev/shm/godwit-bench-local-{os.getpid()}-{tag}"


def fill(path, size):
    """The guest's RAM file: random bytes from FILL_START (a 64 MiB block of
    them repeated), or for the sparse guest a run and scattered pages."""
    block = os.urandom(64 * MiB)
    with open(path, "wb") as f:
        f.truncate(size)
        if size >= SPARSE_GIB * GiB:
            f.seek(FILL_START)
            for _ in range(4):
                f.write(block)
            for offset in range(FILL_START + 256 * MiB, size, 64 * MiB):
                f.seek(offset)
                f.write(block[offset % (60 * MiB):offset % (60 * MiB) + 4096])
            return
        f.seek(FILL_START)
        for _ in range(FILL_START, size, 64 * MiB):
            f.write(block[:min(64 * MiB, size - f.tell())])


def same_files(a, b, start, size):
    with open(a, "rb") as f, open(b, "rb") as g:
        f.seek(start)
        g.seek(start)
        for _ in range(start, size, 64 * MiB):
            if f.read(64 * MiB) != g.read(64 * MiB):
                return False
    return True


def start_source(args, size_gib, workload, ram):
    source = Vm(memory=f"{size_gib}G", append=WORKLOADS[workload], binary=args.vm,
                kernel=args.guest, extra=("--mem-path", ram))
    source.connect()
    source.serial.wait_count("A", 1, process=source.process, timeout=60)
    if workload == "dirty":
        source.serial.wait_count("B", 2, process=source.process, timeout=60)
    return source


def check_dirty(vm):
    """The increment rule over the dirty range, the guest stopped."""
    vm.qmp.command("stop")
    check_increment_pattern(vm.read_memory(1 * MiB, DIRTY_END - 1 * MiB))


def run_copy(args, size_gib, workload, ram):
    vms, dest_ram = [], shm("dst")
    try:
        source = start_source(args, size_gib, workload, ram)
        vms.append(source)
        dest = Vm(memory=f"{size_gib}G", append=WORKLOADS[workload], binary=args.vm,
                  kernel=args.guest, extra=("--mem-path", dest_ram, "--incoming", "defer"))
        vms.append(dest)
        dest.connect()
        for vm in (source, dest):
            vm.qmp.command("migrate-set-capabilities",
                           capabilities=[{"capability": "multifd", "state": True}])
            vm.qmp.command("migrate-set-parameters", **{"multifd-channels": 2})
        uri = f"unix:{source.path('main.sock')}"
        dest.qmp.command("migrate-incoming", uri=uri)
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp, timeout=MIGRATION_TIMEOUT)
        if info["status"] != "completed":
            raise RunFailed(f"{info['status']}: {info.get('error-desc')}")
        if workload == "dirty":
            check_dirty(dest)
        else:
            dest.qmp.command("stop")
        if not same_files(ram, dest_ram, FILL_START, size_gib * GiB):
            raise RunFailed("the destination's RAM differs from the source's")
        return info
    finally:
        for vm in vms:
            vm.close()
        if os.path.exists(dest_ram):
            os.unlink(dest_ram)


def run_local(args, size_gib, workload, ram):
    vms = []
    try:
        source = start_source(args, size_gib, workload, ram)
        vms.append(source)
        cpr, main = source.path("cpr.sock"), source.path("main.sock")
        channel = {"transport": "socket", "type": "unix"}
        new = Vm(memory=f"{size_gib}G", append=WORKLOADS[workload], binary=args.vm,
                 kernel=args.guest, extra=(
                     "--incoming", json.dumps({"channel-type": "cpr",
                                               "addr": dict(channel, path=cpr)}),
                     "--incoming", f"unix:{main}"))
        vms.append(new)
        deadline = time.monotonic() + 30
        while not os.path.exists(cpr):
            if new.process.poll() is not None or time.monotonic() > deadline:
                raise RunFailed("the new process did not listen on its cpr channel")
            time.sleep(0.01)
        source.qmp.command("migrate-set-parameters", mode="cpr-transfer")
        source.qmp.command("migrate", channels=[
            {"channel-type": "main", "addr": dict(channel, path=main)},
            {"channel-type": "cpr", "addr": dict(channel, path=cpr)}])
        info = wait_migration(source.qmp, timeout=MIGRATION_TIMEOUT)
        if info["status"] != "completed":
            raise RunFailed(f"{info['status']}: {info.get('error-desc')}")
        new.connect()
        late_at = size_gib * GiB - 4096 + 17
        with open(ram, "r+b") as f:
            f.seek(late_at)
            f.write(LATE)
        if new.read_memory(guest_address(late_at), len(LATE)) != LATE:
            raise RunFailed("a host write after the switch is not in the new process's guest")
        if workload == "dirty":
            check_dirty(new)
        sample = min(SAMPLE, size_gib * GiB - FILL_START - 4096)
        with open(ram, "rb") as f:
            f.seek(FILL_START)
            if new.read_memory(FILL_START, sample) != f.read(sample):
                raise RunFailed("the new process's RAM differs from the file")
        return info
    finally:
        for vm in vms:
            vm.close()


def measure(args, log):
    """{(size, workload, method): [run, ...]}: query-migrate's answer, or a failure."""
    results = {}
    for size_gib in args.sizes:
        ram = shm(f"{size_gib}g")
        log(f"bench/local_update.py: {size_gib} GiB guest"
            f"{' (sparse)' if size_gib >= SPARSE_GIB else ''}, filling its RAM file")
        fill(ram, size_gib * GiB)
        try:
            for workload in WORKLOADS:
                for rep in range(args.repeat):
                    for method, run in (("local", run_local), ("copy", run_copy)):
                        log(f"  {size_gib} GiB {workload}, {method}, run {rep + 1}")
                        try:
                            entry = dict(ok=True, info=run(args, size_gib, workload, ram))
                        except (RunFailed, AssertionError, OSError, TimeoutError,
                                ValueError, QmpError) as failure:
                            entry = dict(ok=False, failure=str(failure))
                            log(f"    failed: {failure}")
                        results.setdefault((size_gib, workload, method), []).append(entry)
        finally:
            os.unlink(ram)
    return results


def median(runs, what):
    values = [what(r["info"]) for r in runs if r["ok"]]
    return statistics.median(values) if values else None


def downtime_ms(info):
    return info["downtime-detail"]["total"] / 1000


def total_ms(info):
    return info["total-time"]


def num(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def section(results, args):
    lines = ["## Local update (issue 16, bench/local_update.py)", "",
             "A guest moved to a new godwit-vm process on this host: the local update "
             "(mode cpr-transfer, the RAM's descriptors passed on the cpr channel, no page "
             "copied) beside godwit's ordinary migration over unix: with multifd (2 channels), "
             f"same guest, same run ({args.repeat} run(s) each, medians). RAM in /dev/shm: "
             "1 and 4 GiB filled by the host, 16 GiB sparse; idle, or dirty (the test guest "
             f"over [1 MiB, {DIRTY_END >> 20} MiB) at 256 MiB/s). Downtime from the source's "
             "stop to the new process running (downtime-detail, us); total from migrate to "
             "completed (total-time). Every run checked where the guest runs (increment rule, "
             "host bytes; the local update also by a host write after the switch).", "",
             "| guest | workload | local downtime ms | local total ms | copy downtime ms | "
             "copy total ms | copy total ÷ local total |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for size_gib in args.sizes:
        for workload in WORKLOADS:
            local = results.get((size_gib, workload, "local"), [])
            copy = results.get((size_gib, workload, "copy"), [])
            lt, ct = median(local, total_ms), median(copy, total_ms)
            ratio = f"{ct / lt:,.0f}x" if lt and ct else "–"
            guest = f"{size_gib} GiB{' sparse' if size_gib >= SPARSE_GIB else ''}"
            lines.append(f"| {guest} | {workload} | {num(median(local, downtime_ms), 2)} | "
                         f"{num(lt, 0)} | {num(median(copy, downtime_ms), 2)} | {num(ct, 0)} | "
                         f"{ratio} |")
            for method, runs in (("local", local), ("copy", copy)):
                for r in runs:
                    if not r["ok"]:
                        lines.append(f"| **failed** {guest} {workload} {method} | "
                                     f"{r['failure']} | | | | | |")
    lines += [""] + targets(results, args) + [""]
    return lines


def targets(results, args):
    local = [r for (size, _, method), runs in results.items() if method == "local"
             for r in runs if r["ok"]]
    out = []
    if not local:
        return ["- local update targets: no completed runs"]
    worst_down = max(downtime_ms(r["info"]) for r in local)
    worst_total = max(total_ms(r["info"]) for r in local)
    out.append(f"- local update downtime, every size and workload: target < "
               f"{TARGET_DOWNTIME_MS} ms ({ISSUE}); worst {worst_down:.2f} ms: "
               f"**{'met' if worst_down < TARGET_DOWNTIME_MS else 'not met'}**")
    out.append(f"- local update total time, every size and workload: target < "
               f"{TARGET_TOTAL_MS} ms ({ISSUE}); worst {worst_total} ms: "
               f"**{'met' if worst_total < TARGET_TOTAL_MS else 'not met'}**")
    for workload in WORKLOADS:
        lt = median(results.get((RATIO_GIB, workload, "local"), []), total_ms)
        ct = median(results.get((RATIO_GIB, workload, "copy"), []), total_ms)
        what = (f"- {RATIO_GIB} GiB {workload}, copying total ÷ local total: target >= "
                f"{TARGET_RATIO} ({ISSUE})")
        if not lt or not ct:
            out.append(what + ": no completed runs")
            continue
        out.append(what + f"; {ct} / {lt} ms = {ct / lt:,.0f}x: "
                   f"**{'met' if ct / lt >= TARGET_RATIO else 'not met'}**")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--guest", default="build/guest/testguest.elf")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES_GIB),
                        help="guest sizes in GiB (default 1 4 16)")
    args = parser.parse_args()
    started = time.monotonic()
    results = measure(args, lambda m: print(m, file=sys.stderr, flush=True))
    for line in section(results, args):
        print(line)
    print(f"({(time.monotonic() - started) / 60:.1f} min)", file=sys.stderr)
    failed = sum(not r["ok"] for runs in results.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

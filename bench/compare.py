#!/usr/bin/env python3
"""godwit beside QEMU 7.2: live migration of the same guest, in the same run.

Both VMMs boot build/guest/testguest.elf with the same memory, the source's
RAM in a /dev/shm file; the host writes the same random content into it;
both are driven over QMP with the same parameters (max-bandwidth 2^40
bytes/s, i.e. unlimited, downtime-limit 300 ms, TCP 127.0.0.1) and
query-migrate is sampled every 50 ms. Every run's destination memory is
checked; a run that fails a check, fails or times out is a row, never a
figure. Runs are interleaved: each repetition of a scenario runs godwit and
QEMU back to back, alternating which goes first.

Quick set (make bench): 1 GiB filled with a preallocated and a cold
destination, the dirty guest, a 2 GiB zero guest, multifd (bench/multifd.py:
godwit on 1, 2 and 4 channels, QEMU on 2 and 4, with and without zstd) and
seed 002's device-state experiment (godwit alone: 400 MiB of device state
on the main channel, mixed into the multifd channels, or on dedicated
ones); also the machine's limits (iperf3, memcpy, first touch, zero scan)
bench/guest_rates.py, bench/sync_time.py (dirty-bitmap sync time of sparse
1, 4 and 16 GiB guests, beside QEMU's) and bench/convergence_map.py (which
dirty rates converge at 256 MiB/s, with and without auto-converge and
dirty-limit, beside QEMU's and seed 001's formula; 4 rates, 7 in the full
set), bench/tls.py (the 1 GiB filled guest in plaintext and over TLS on
1, 2 and 4 channels, godwit beside QEMU; --no-tls leaves it out) and
bench/postcopy.py (a guest that never converges, moved by godwit postcopy,
godwit postcopy-preempt and QEMU 7.2 postcopy: total time, stall, request
latency and its histogram; --no-postcopy leaves it out) and
bench/rdma.py (seed 000's table in shape: a 4 GiB filled guest over rdma: at
three chunk sizes, pin-all off and on, beside tcp: on one connection;
software-provider figures; --no-rdma leaves it out), bench/local_update.py
(issue 16: the local update of 1, 4 and 16 GiB guests, idle and dirty,
beside godwit's copying migration over unix: with multifd;
--no-local-update leaves it out) and bench/linux_guest.py
(the Linux guest of issue 14: boot time and migration, godwit-vm beside
QEMU 7.2 microvm; skipped with a line when no kernel is built; --no-linux
leaves it out). Full set (make
bench-full): also 2 GiB and 4 GiB filled guests.

Writes docs/benchmarks.md and its PNGs (docs/benchmarks/), prints the
tables, and keeps every run as a JSON line in bench/results/RUN/runs.jsonl
(the convergence map's in convergence-map.jsonl, postcopy's in
postcopy.jsonl)."""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
import limits as limits_mod  # noqa: E402
import multifd  # noqa: E402
import postcopy as postcopy_bench  # noqa: E402
import rdma as rdma_bench  # noqa: E402
import local_update  # noqa: E402
import convergence_map  # noqa: E402
import report  # noqa: E402
import sync_time  # noqa: E402
import tls  # noqa: E402
import linux_guest as linux_bench  # noqa: E402
from godwit_vm import kvm_skip_reason  # noqa: E402
from runs import (DOWNTIME_LIMIT_MS, MAX_BANDWIDTH, QEMU_ACCEL, QEMU_BIOS, MiB,  # noqa: E402
                  Content, Scenario, run_all)

COLD_WAIT = 15.0


def scenario_list(full, cold_wait):
    filled = dict(content="random", memory_mib=1024)
    out = [
        Scenario("filled-1g", "1 GiB filled, destination preallocated",
                 "sending incompressible pages (destination first touch excluded)",
                 short="1 GiB filled\\nprealloc",
                 describe="An idle 1 GiB guest whose [1 MiB, 1023 MiB) holds random data; "
                          "the destination's RAM is touched before the migration starts "
                          "(--mem-prealloc / -mem-prealloc), one TCP connection.",
                 target="MB/s >= 2000, downtime <= 10 ms",
                 target_check=lambda m: m["mbs"] >= 2000 and m["downtime"] <= 10, **filled),
    ]
    if full:
        for gib in (2, 4):
            out.append(Scenario(
                f"filled-{gib}g", f"{gib} GiB filled, destination preallocated",
                "guest size (as 1, larger)", short=f"{gib} GiB filled\\nprealloc",
                describe=f"As scenario 1 with a {gib} GiB guest"
                         + (" (RAM above 3 GiB at 4 GiB in both VMMs)." if gib > 3 else "."),
                content="random", memory_mib=gib * 1024))
    out += [
        Scenario("cold-1g", "1 GiB filled, cold destination",
                 "destination first touch (as 1, but RAM first touched by the migration)",
                 short="1 GiB filled\\ncold", prealloc=False, cold_wait=cold_wait,
                 describe=f"As scenario 1 but without preallocation: the destination's RAM "
                          f"is first touched as pages arrive. Each run starts after "
                          f"{cold_wait:.0f} s of idleness, so that this machine has returned "
                          f"freed memory to its host and first touch is as slow as it gets.",
                 **filled),
        Scenario("dirty", "dirty guest, 256 MiB VM, [1M, 100M)",
                 "convergence and downtime while the guest dirties memory",
                 short="dirty\\n256 MiB VM", content="dirty", memory_mib=256,
                 describe="The guest increments a byte of each of the 25344 pages of "
                          "[1 MiB, 100 MiB) over and over (a pass takes ~35 ms here, in both "
                          "VMMs) and prints B per pass; the migration starts after 2 passes.",
                 target="downtime <= 300 ms (the limit)",
                 target_check=lambda m: m["downtime"] <= DOWNTIME_LIMIT_MS),
        Scenario("zero-2g", "2 GiB all zero", "zero-page handling (nothing else to send)",
                 short="zero\\n2 GiB", content="zero", memory_mib=2048,
                 describe="An idle 2 GiB guest nobody wrote to: every page is zero (on the "
                          "source, a hole in the /dev/shm file).",
                 target="total <= 100 ms, downtime <= 10 ms",
                 target_check=lambda m: m["total"] <= 100 and m["downtime"] <= 10),
    ]
    out += multifd.throughput_scenarios(filled)
    return out


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_text(args):
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def machine_lines(load_start, load_end, foreign):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    hypervisor = " ".join(run_text(["sh", "-c", "lscpu | grep -i 'hypervisor vendor' || true"])
                          .split())
    commit = run_text(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=12"])
    return [
        f"CPU: {cpu}, {os.cpu_count()} cores; RAM {mem_kib / 2**20:.1f} GiB; "
        f"kernel {platform.release()}; {hypervisor or 'no hypervisor reported'}",
        ("/dev/kvm here is a software hypervisor (PVM): guest code is emulated at a few "
         "million instructions per second, so the host writes guest RAM, never the guest "
         "(except the dirty guest's one byte per page)." if QEMU_ACCEL == "kvm" else
         f"No KVM here ({kvm_skip_reason()}): godwit-vm runs with `--accel none` (a host "
         "thread plays the test guest, with a software dirty log; the migration code is the "
         "same) and QEMU with `-accel tcg`. The host writes guest RAM, never the guest "
         "(except the dirty guest's one byte per page). Compare with figures taken on KVM "
         "with care: the dirty guest and boot differ most."),
        f"Load average (1 min) at start {load_start:.2f}, at end {load_end:.2f}; "
        f"other VMs running at start: {foreign or 'none'}",
        f"godwit {commit}; {run_text(['qemu-system-x86_64', '--version'])}; "
        f"{run_text(['cc', '--version'])}; {run_text(['iperf3', '--version'])}; "
        f"{run_text(['gnuplot', '--version'])}; Python {platform.python_version()}",
    ]


def foreign_vms():
    """VMM processes that this benchmark did not start (other engineers' tests)."""
    names = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith(("godwit-vm", "qemu-system")):
            names.append(comm)
    return ", ".join(f"{n} x{names.count(n)}" for n in sorted(set(names)))


def method_lines(scenarios, results, args):
    example = {}
    for vmm in ("godwit", "qemu"):
        for r in results.get("filled-1g", {}).get(vmm, []):
            if r.get("commands"):
                example[vmm] = r["commands"]
                break
    lines = [
        "- Same guest, same memory size: `build/guest/testguest.elf` (`mode=idle`, or "
        f"`mode=dirty start=1M end=100M`), one vCPU. QEMU runs `-machine pc -accel {QEMU_ACCEL}` "
        f"with `-bios {QEMU_BIOS}`: qboot reaches the guest in ~0.1 s where SeaBIOS takes "
        "~3.6 s here, and migrates the same (it leaves the LAPIC's NMI input masked, which "
        "no scenario uses). Its multiboot loader is given the same `-append` on both sides.",
        "- Source RAM: a file in /dev/shm, shared (godwit `--mem-path FILE`; QEMU "
        "`-object memory-backend-file,id=mem,size=S,mem-path=FILE,share=on "
        "-machine memory-backend=mem`). Destination RAM: anonymous in both (QEMU "
        "`-object memory-backend-ram,id=mem,size=S -machine memory-backend=mem`, the id "
        "matching the source's RAM block name), preallocated with `--mem-prealloc` / "
        "`-mem-prealloc` in every scenario but the cold one.",
        "- Content: random bytes (os.urandom, generated once per benchmark run) copied "
        "into the source's RAM file at [1 MiB, size − 1 MiB) by the host after the guest "
        "printed A; the same bytes for both VMMs.",
        f"- Parameters, set over QMP on the source before `migrate` for both: "
        f"`max-bandwidth` {MAX_BANDWIDTH} (2^40 bytes/s: QEMU's default is 128 MiB/s; "
        f"godwit's default, 0, already means unlimited, but both get the same value), "
        f"`downtime-limit` {DOWNTIME_LIMIT_MS}; no capabilities (multifd only in its own "
        "scenarios); `migrate` to `tcp:127.0.0.1:PORT` (destination started with "
        "`--incoming` / `-incoming` on that URI; `defer` then `migrate-incoming` for multifd).",
        "- The same Python driver polls `query-migrate` every 50 ms from `migrate` until "
        "`completed`, `failed` or `cancelled` (timeout: `migrate_cancel`, the run is a "
        f"failure; {args.timeout:.0f} s).",
        "- Figures from the final `query-migrate`: MB/s = `ram.transferred` / "
        "(`total-time` − `setup-time`), 10^6 bytes; `downtime`, `setup-time`, "
        "`total-time`, `ram.dirty-sync-count` (passes), `ram.downtime-bytes` (bytes sent "
        "while stopped; QEMU 7.2 reports it too).",
        "- The two `downtime`s differ in what they span: godwit's runs from the source's "
        "stop to the destination's resume; QEMU's from the source's stop to the end of "
        "sending (the destination's loading and resume are not in it). The row "
        "\"source STOP → destination RESUME\" is the same measure for both: the "
        "difference of the two QMP events' timestamps, both from this host's clock.",
        "- Every run's destination is checked: stopped, its RAM read with `pmemsave` in "
        "256 MiB pieces and compared byte for byte with the content written (or with "
        "zeros); for the dirty guest, the destination must print one more B, then "
        "[1 MiB, 100 MiB) must follow the increment rule (all pages equal but for one "
        "place where a page is one less, tests/lib/godwit_vm.py) and page 0 must count "
        "the passes made on both hosts.",
        f"- Each scenario runs {args.repeat} times per VMM, godwit and QEMU back to back, "
        "alternating which goes first. A failed or timed-out run is a row in its table.",
        "- Limits: iperf3 over 127.0.0.1 (1 and 2 streams), and `bench/limits.c` (compiled "
        "with `cc -O2` at run time): memcpy of 1 GiB, first touch of 1 GiB (one write per "
        f"4 KiB page) after {args.cold_wait:.0f} s idle (cold) and at once again (warm), "
        "with THP and 4 KiB pages, and a zero-page scan (8-byte ORs, early exit).",
    ]
    for vmm, name in (("godwit", "godwit"), ("qemu", "QEMU")):
        if vmm in example:
            for role in ("source", "destination"):
                lines.append(f"- {name} {role} (scenario 1): `{' '.join(example[vmm][role])}`")
    return lines


READING = [
    "- **QEMU spends the downtime budget; godwit does not.** QEMU stops the "
    "source as soon as it estimates that what is left can be sent within `downtime-limit` "
    "at the bandwidth it measured; at 300 ms and a few GB/s that is hundreds of MiB, sent "
    "while the guest is stopped (row \"sent while stopped\"), so its downtime lands near "
    "the limit even for an idle guest. godwit keeps making passes while the dirty set "
    "shrinks and stops with next to nothing left. QEMU's MB/s and total time include its "
    "stop-and-copy phase.",
    "- **Zero pages.** QEMU reads every page to learn that it is zero; on the source's "
    "shared /dev/shm file, reading a hole allocates a page, so QEMU's source ends with the "
    "whole file allocated (row \"source's RAM file allocated\") and its time goes there. "
    "godwit asks the file where its data is (SEEK_DATA) and reads no hole, which is why its "
    "\"RAM covered\" rate is above the zero-scan limit. MB/s means little in that scenario "
    "(a few KiB of zero-page records cross the wire): compare total times.",
    "- **Cold destination.** Both destinations first touch guest RAM as pages arrive; the "
    "first-touch limits below bound what either can do.",
    "- **Timelines.** Points are plotted when `query-migrate`'s answer arrived. QEMU's "
    "monitor can wait while its migration thread holds the big lock to send the last pages "
    "with the guest stopped, so its timelines can have a gap there. `ram.remaining` is left "
    "out before the first dirty-bitmap sync, where it means nothing.",
    "- **multifd** on 2 cores: the channels compete with each other and with the "
    "destination for the same two CPUs. zstd saves no bytes on random data, yet both VMMs "
    "are faster with it on this machine: the sending thread reads the guest pages once into "
    "the compressor, and the kernel then copies one contiguous buffer instead of 256 pages "
    "(a profile of the source puts most of its time in first touches of the 4 KiB pages of "
    "its /dev/shm RAM file, in the zero check and in the kernel's copy). QEMU's multifd "
    "downtime includes the pages it sends while stopped (it spends the budget, as above); "
    "godwit's does not.",
    "- **Noise.** This 2-core machine is shared and figures move by tens of percent from "
    "run to run (see min..max); that is why godwit and QEMU run back to back in every "
    "repetition and only medians are compared. Compare ratios within this file, not with "
    "figures taken on another day.",
]


def findings(scenarios, results):
    """Where each VMM is ahead, from the medians: a list of markdown lines."""
    lines = []
    for key, label, higher in (("mbs", "MB/s", True), ("total", "total time", False),
                               ("downtime", "downtime", False),
                               ("stop_to_resume", "STOP → RESUME", False)):
        ahead = {"godwit": [], "qemu": []}
        for s in scenarios:
            if key == "mbs" and s.content == "zero":
                continue   # MB/s of a few KiB of zero-page records says nothing: see total time
            g = report.median(report.ok_runs(results, s, "godwit"), key)
            q = report.median(report.ok_runs(results, s, "qemu"), key)
            if g is None or q is None or g == q:
                continue
            winner = "godwit" if (g > q) == higher else "qemu"
            ahead[winner].append(f"{s.title} ({report.num(g)} vs {report.num(q)})")
        for vmm in ("godwit", "qemu"):
            if ahead[vmm]:
                lines.append(f"- {report.NAMES[vmm]} ahead on {label}: "
                             + "; ".join(ahead[vmm]))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--guest", default="build/guest/testguest.elf")
    parser.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"))
    parser.add_argument("--full", action="store_true", help="add 2 GiB and 4 GiB guests")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--cold-wait", type=float, default=COLD_WAIT)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a migration may take before it is cancelled")
    parser.add_argument("--iperf-seconds", type=int, default=3)
    parser.add_argument("--no-limits", action="store_true")
    parser.add_argument("--no-guest-rates", action="store_true")
    parser.add_argument("--no-convergence-map", action="store_true",
                        help="skip bench/convergence_map.py")
    parser.add_argument("--no-sync-time", action="store_true",
                        help="skip bench/sync_time.py (sparse 1, 4 and 16 GiB guests)")
    parser.add_argument("--no-device-state", action="store_true",
                        help="leave out seed 002's device-state experiment (bench/multifd.py)")
    parser.add_argument("--no-tls", action="store_true",
                        help="leave out the TLS section (bench/tls.py)")
    parser.add_argument("--no-rdma", action="store_true",
                        help="leave out the RDMA table (bench/rdma.py)")
    parser.add_argument("--no-postcopy", action="store_true",
                        help="leave out the postcopy section (bench/postcopy.py)")
    parser.add_argument("--no-local-update", action="store_true",
                        help="leave out the local-update table (bench/local_update.py)")
    parser.add_argument("--no-linux", action="store_true",
                        help="leave out the Linux guest section (bench/linux_guest.py)")
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--docs", help="the markdown to write ('' for none; default "
                        "docs/benchmarks.md, or none with --only or a --repeat other than 3, "
                        "so that a partial run never replaces the committed page)")
    args = parser.parse_args()
    if args.docs is None:
        partial = args.only or args.repeat != 3
        args.docs = "" if partial else os.path.join(ROOT, "docs", "benchmarks.md")
    reason = kvm_skip_reason()
    if reason:
        log(f"{reason}: godwit-vm runs with --accel none, QEMU with -accel tcg")
    started = time.monotonic()
    load_start, foreign = os.getloadavg()[0], foreign_vms()
    scenarios = scenario_list(args.full, args.cold_wait)
    if args.only:
        scenarios = [s for s in scenarios if s.key in args.only]
    if not args.qemu:
        for s in scenarios:
            s.skipped = dict(s.skipped or {}, qemu="not measured: qemu-system-x86_64 not found")
            s.vmms = tuple(v for v in s.vmms if v != "qemu")
    run_dir = os.path.join(args.results, time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    log(f"results in {run_dir}; load {load_start:.2f}; other VMs: {foreign or 'none'}")
    if load_start > 1.0 or foreign:
        log("warning: the machine is not idle; figures will be noisier")
    ctx = argparse.Namespace(vm=args.vm, guest=args.guest, qemu=args.qemu,
                             migration_timeout=args.timeout, content=None)
    results = {}
    device, precopy_off = [], True
    tls_scenarios, tls_results = [], {}
    limits, notes = {}, {}
    try:
        if not args.no_limits:
            limits, notes = limits_mod.measure(args.cold_wait, args.iperf_seconds, log)
            with open(os.path.join(run_dir, "limits.json"), "w") as f:
                json.dump({"limits": limits, "notes": notes}, f)
        random_sizes = [s.size for s in scenarios if s.content == "random"]
        if random_sizes:
            log(f"generating {(max(random_sizes) >> 20) - 2} MiB of random content")
            ctx.content = Content(max(random_sizes) - 2 * MiB)
        with open(os.path.join(run_dir, "runs.jsonl"), "w") as jsonl:
            run_all(scenarios, args.repeat, ctx, jsonl, log, results)
            if not args.no_device_state:
                if ctx.content is None:
                    ctx.content = Content(254 * MiB)
                device, device_results, precopy_off = multifd.run_device_experiment(
                    ctx, args.repeat, log, jsonl, args.only)
                results.update(device_results)
            if not args.no_tls:
                if ctx.content is None or ctx.content.size < 1022 * MiB:
                    if ctx.content:
                        ctx.content.close()
                    ctx.content = Content(1022 * MiB)
                tls_scenarios, tls_results = tls.run(ctx, min(args.repeat, tls.REPEAT), log,
                                                     jsonl, args.only)
    finally:
        if ctx.content:
            ctx.content.close()
    extra = {}
    if not args.no_guest_rates:
        log("bench/guest_rates.py: boot and dirty-pass time")
        command = [sys.executable, os.path.join(HERE, "guest_rates.py"), "--vm", args.vm,
                   "--guest", args.guest] + (["--qemu", args.qemu] if args.qemu else [])
        out = subprocess.run(command, capture_output=True, text=True)
        extra["guest_rates"] = out.stdout + (out.stderr if out.returncode else "")
    sync_lines = []
    if not args.no_sync_time and not kvm_skip_reason():
        sync_args = argparse.Namespace(vm=args.vm, guest=args.guest, qemu=args.qemu,
                                       sizes=list(sync_time.SIZES_GIB),
                                       seconds=sync_time.SYNC_SECONDS)
        sync_results = sync_time.measure(sync_args, log)
        sync_lines = sync_time.section(sync_results, sync_args.sizes)
    elif not args.no_sync_time:
        sync_lines = ["### Dirty-bitmap sync time (bench/sync_time.py)", "",
                      f"Not measured: {kvm_skip_reason()}.", ""]
    map_skip = None if args.no_convergence_map else convergence_map.link_skip_reason()
    map_on = not args.no_convergence_map and not map_skip
    map_lines = []
    if map_on:
        map_args = argparse.Namespace(
            vm=args.vm, guest=args.guest, qemu=args.qemu, timeout=convergence_map.TIMEOUT,
            rates=list(convergence_map.RATES if args.full else convergence_map.QUICK_RATES),
            limits=list(convergence_map.DOWNTIME_LIMITS),
            configs=list(convergence_map.CONFIGS))
        map_results = convergence_map.measure(map_args, log)
        # every run whole (downtime-detail's parts beside the estimate's),
        # so that a miss can be read part by part afterwards
        with open(os.path.join(run_dir, "convergence-map.jsonl"), "w") as f:
            for (config, rate, limit), record in sorted(map_results.items()):
                f.write(json.dumps({"config": config, "rate": rate, "limit": limit,
                                    "record": record}) + "\n")
    elif not args.no_convergence_map:
        map_lines = ["### The convergence map (bench/convergence_map.py)", "",
                     f"Not measured: {map_skip}.", ""]
    pc_records = None
    if not args.no_postcopy:
        pc_args = argparse.Namespace(vm=args.vm, guest=args.guest, qemu=args.qemu,
                                     repeat=postcopy_bench.REPEAT)
        with open(os.path.join(run_dir, "postcopy.jsonl"), "w") as pc_jsonl:
            pc_records = postcopy_bench.run(pc_args, log, pc_jsonl)
    rdma_lines = []
    if not args.no_rdma:
        rdma_args = argparse.Namespace(vm=args.vm, guest=args.guest, repeat=1)
        rdma_lines = rdma_bench.section(rdma_bench.measure(rdma_args, log), 1)
    local_lines = []
    if not args.no_local_update:
        local_args = argparse.Namespace(vm=args.vm, guest=args.guest, repeat=1,
                                        sizes=list(local_update.SIZES_GIB))
        local_lines = local_update.section(local_update.measure(local_args, log), local_args)
    linux_lines = []
    if not args.no_linux:
        linux_args = argparse.Namespace(vm=args.vm, repeat=2)
        linux_lines = linux_bench.section(linux_bench.measure(linux_args, log),
                                          linux_bench.lg.skip_reason())
    extra["findings"] = findings(scenarios, results)
    extra["reading"] = READING
    png_dir = os.path.join(os.path.dirname(args.docs) if args.docs else run_dir, "benchmarks")
    # report.plots empties png_dir of PNGs first: every other plot comes after it.
    made = report.plots(scenarios, results, run_dir, png_dir) if shutil.which("gnuplot") else {}
    postcopy_lines = []
    if pc_records is not None:
        pc_png = postcopy_bench.plot(pc_records, png_dir) if made else None
        if pc_png:
            made["postcopy-latency"] = os.path.basename(pc_png)
        postcopy_lines = postcopy_bench.section(
            pc_records, pc_png, f"benchmarks/{os.path.basename(pc_png)}" if pc_png else None)
    by_key = {s.key: s for s in scenarios}
    baseline = by_key.get("filled-1g")
    throughput = [s for s in scenarios if s.key.startswith("multifd-")]
    if made:
        made.update(multifd.plots(baseline, throughput, device, results, run_dir, png_dir))
    extra["sections"] = multifd.section(baseline, throughput, device, results, precopy_off,
                                        made, "benchmarks")
    if map_on:
        map_made = (convergence_map.plot(map_results, map_args, run_dir, png_dir)
                    if shutil.which("gnuplot") else {})
        map_lines = convergence_map.section(map_results, map_args, map_made, "benchmarks")
    if tls_scenarios:
        extra["sections"] += tls.section(tls_scenarios, tls_results)
    sync_lines += map_lines
    if sync_lines:
        extra["sections"] += ["## Convergence (issue 11)", ""] + sync_lines
    extra["sections"] += postcopy_lines + rdma_lines + local_lines + linux_lines
    duration = time.monotonic() - started
    # Tables to the terminal (markdown reads fine as text).
    print()
    for line in report.summary_table(scenarios, results):
        print(line)
    for n, s in enumerate(scenarios, 1):
        print(f"\n{n}. {s.title} (controls: {s.controls})")
        for line in report.scenario_table(s, results):
            print(line)
    print("\nLimits")
    for line in report.limits_table(limits_mod.LIMITS, limits, notes, scenarios, results):
        print(line)
    print()
    for line in report.target_lines(scenarios, results) + extra["findings"]:
        print(line)
    for line in multifd.terminal_lines(baseline, throughput, device, results, precopy_off):
        print(line)
    if tls_scenarios:
        print()
        for line in tls.table(tls_scenarios, tls_results) + tls.targets(tls_scenarios,
                                                                         tls_results):
            print(line)
    if extra.get("guest_rates"):
        print(extra["guest_rates"])
    for line in sync_lines + postcopy_lines + rdma_lines + local_lines + linux_lines:
        print(line)
    if args.docs and made:
        command = "make bench-full" if args.full else "make bench"
        if args.only or args.repeat != 3:
            command = "python3 bench/compare.py " + " ".join(sys.argv[1:])
        doc = argparse.Namespace(
            command=command, date=time.strftime("%Y-%m-%d %H:%M %Z"),
            set_name="full" if args.full else "quick", repeat=args.repeat,
            duration=f"{duration / 60:.1f} min",
            machine=machine_lines(load_start, os.getloadavg()[0], foreign),
            method=method_lines(scenarios, results, args))
        text = report.markdown(doc, scenarios, results, limits_mod.LIMITS, limits, notes, made,
                               "benchmarks", extra)
        with open(args.docs, "w") as f:
            f.write(text)
        log(f"wrote {args.docs} and {len(made)} plots in {png_dir}")
    elif args.docs:
        log("gnuplot is missing: no plots and no docs (scripts/setup-deps --bench)")
    failed = sum(not r["ok"] for per in {**results, **tls_results}.values()
                 for runs in per.values() for r in runs)
    log(f"done in {duration / 60:.1f} min; {failed} failed run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The Linux guest in make bench (issue 14): boot time to the workload's first
line, and the migration of the running guest (total, downtime, pages), in
godwit-vm and in QEMU 7.2 (-M microvm, same kernel, same 128 MiB, same command
line, same CPUID changes), in the same run.

The kernel is scripts/build-linux-guest's; without it the section says so and
nothing is measured (make bench does not build a kernel). The guest's own
code is emulated on this machine's KVM, so boot times are the emulator's and
the host's load's as much as the VMM's: both VMMs are timed back to back,
alternately, --repeat times, medians. Every migration is checked the way the
tests check it: the destination's lines go on from the source's without a
gap, verify=ok.

    python3 bench/linux_guest.py --vm build/vm/godwit-vm [--repeat N]"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
from godwit_vm import Vm, event_time, wait_migration  # noqa: E402
import linux_workload as lg  # noqa: E402

MEMORY_MIB = 128
BOOT_TIMEOUT = 240


class RunFailed(Exception):
    pass


def boot_godwit(args):
    started = time.monotonic()
    vm = Vm(memory=f"{MEMORY_MIB}M", kernel=lg.LINUX_GUEST, append=lg.append_line(),
            binary=args.vm)
    vm.connect()
    lg.wait_lines(vm.serial, 1, BOOT_TIMEOUT, vm.process)
    return vm, time.monotonic() - started


def boot_qemu(args):
    started = time.monotonic()
    vm = lg.QemuGuest(memory_mib=MEMORY_MIB, append=lg.append_line())
    vm.connect()
    lg.wait_lines(vm.serial, 1, BOOT_TIMEOUT, vm.process)
    return vm, time.monotonic() - started


def destination_godwit(args):
    vm = Vm(memory=f"{MEMORY_MIB}M", kernel=lg.LINUX_GUEST, binary=args.vm,
            extra=("--incoming", "defer"))
    vm.connect()
    return vm


def destination_qemu(args):
    vm = lg.QemuGuest(memory_mib=MEMORY_MIB, append=lg.append_line(), incoming="defer")
    vm.connect()
    return vm


def migrate_and_check(source, destination):
    lg.wait_lines(source.serial, 3, 60, source.process)
    destination.qmp.command("migrate-set-capabilities",
                            capabilities=[{"capability": "multifd", "state": True}])
    uri = lg.tcp_uri()
    destination.qmp.command("migrate-incoming", uri=uri)
    info = lg.migrate(source.qmp, uri)
    if info["status"] != "completed":
        raise RunFailed(f"migration {info['status']}: {info.get('error-desc')}")
    wait_migration(destination.qmp, ("completed",), timeout=30)
    # The same measure for both VMMs (their own downtimes span different
    # things): the source's STOP to the destination's RESUME, both stamped
    # by this host's clock.
    stops = [e for e in source.qmp.events if e["event"] == "STOP"]
    resume = destination.qmp.wait_event("RESUME", timeout=30)
    if not stops:
        raise RunFailed("the source sent no STOP event")
    stop_to_resume = (event_time(resume) - event_time(stops[-1])) * 1000
    source_text = source.serial.text()
    lg.wait_lines(destination.serial, 2, 60, destination.process)
    lg.check_sequence(lg.lines(source_text + destination.serial.text()), "across the migration")
    ram = info["ram"]
    parts = {k: v for k, v in info.get("downtime-detail", {}).items()
             if isinstance(v, (int, float)) and k not in ("total", "bytes")}
    return dict(total=info["total-time"], downtime=info["downtime"],
                stop_to_resume=stop_to_resume,
                pages=ram["normal"], zero=ram["duplicate"],
                mib=ram["transferred"] / 2**20, parts=parts)


def one(vmm, args, log):
    boot, destination = (boot_godwit, destination_godwit) if vmm == "godwit" else \
        (boot_qemu, destination_qemu)
    source = dest = None
    try:
        source, seconds = boot(args)
        log(f"    {vmm}: first workload line after {seconds:.1f} s")
        dest = destination(args)
        run = migrate_and_check(source, dest)
        run.update(boot=seconds, ok=True)
        log(f"    {vmm}: migrated in {run['total']} ms, downtime {run['downtime']} ms")
        return run
    except (RunFailed, AssertionError, TimeoutError, OSError) as failure:
        log(f"    {vmm}: failed: {failure}")
        return dict(ok=False, failure=str(failure))
    finally:
        for vm in (source, dest):
            if vm:
                vm.close()


def measure(args, log):
    """{"godwit": [run, ...], "qemu": [...]}, or None when nothing can run."""
    reason = lg.skip_reason() or (None if lg.QEMU else "qemu-system-x86_64 is not installed")
    if reason:
        log(f"bench/linux_guest.py: skipped: {reason}")
        return None
    results = {"godwit": [], "qemu": []}
    for rep in range(args.repeat):
        log(f"bench/linux_guest.py: run {rep + 1} of {args.repeat}")
        for vmm in ("godwit", "qemu") if rep % 2 == 0 else ("qemu", "godwit"):
            results[vmm].append(one(vmm, args, log))
    return results


def median(runs, key):
    values = [r[key] for r in runs if r.get("ok")]
    return statistics.median(values) if values else None


def cell(value, digits=0):
    return "–" if value is None else f"{value:.{digits}f}"


def table(results):
    rows = [("boot to first line, s", "boot", 1), ("migration total, ms", "total", 0),
            ("downtime, ms (each VMM's own)", "downtime", 0),
            ("source STOP → destination RESUME, ms (event timestamps)", "stop_to_resume", 1),
            ("pages sent", "pages", 0),
            ("zero pages", "zero", 0), ("MiB transferred", "mib", 1)]
    lines = ["| 128 MiB Linux guest, 1 vCPU | godwit-vm | QEMU 7.2 microvm | godwit ÷ QEMU |",
             "| --- | --- | --- | --- |"]
    for label, key, digits in rows:
        g, q = median(results["godwit"], key), median(results["qemu"], key)
        ratio = f"{g / q:.2f}" if g is not None and q else "–"
        lines.append(f"| {label} | {cell(g, digits)} | {cell(q, digits)} | {ratio} |")
    failed = [f"{vmm}: {r['failure']}" for vmm, runs in results.items() for r in runs
              if not r.get("ok")]
    runs = len(results["godwit"])
    lines += ["", f"{runs} run(s) each, medians; failed runs: "
              f"{'; '.join(failed) if failed else 'none'}."]
    parts = [r["parts"] for r in results["godwit"] if r.get("ok") and r.get("parts")]
    if parts:
        names = list(parts[0])
        lines += ["", "godwit's downtime in its parts (query-migrate's downtime-detail, "
                  "microseconds, medians): " + ", ".join(
                      f"{name} {statistics.median(p.get(name, 0) for p in parts):.0f}"
                      for name in names) + "."]
    return lines


def section(results, skip_reason=None):
    lines = ["## Linux guest (issue 14, bench/linux_guest.py)", ""]
    if results is None:
        return lines + [f"Not measured: {skip_reason or 'no kernel built'} "
                        "(scripts/build-linux-guest builds it).", ""]
    return lines + [
        "The tiny Linux 6.1 guest of scripts/build-linux-guest (PVH entry, 128 MiB, 1 vCPU, "
        "workload: 16 MiB, 2560 pages/s, a verify line a second) in godwit-vm and in QEMU "
        "7.2 -M microvm,acpi=off with the same kernel, command line and CPUID changes; "
        "boot time is host seconds from starting the VMM to the workload's first line; "
        "the migration is multifd (2 channels) over TCP loopback with the default "
        "parameters, started once 3 lines are out, and the destination's lines must go on "
        "without a gap with verify=ok. The guest's kernel code is emulated by this host's "
        "KVM (PVM): boot time is mostly the emulator's, and the host's load shows in it. "
        "The two downtimes differ in what they span: godwit's runs from the source's stop "
        "until the guest ran on the destination; QEMU 7.2's from the source's stop to the "
        "end of its sending (the destination's loading and resume are not in it). The row "
        "source STOP → destination RESUME is the same measure for both.",
        ""] + table(results) + [""]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    started = time.monotonic()
    results = measure(args, lambda text: print(text, file=sys.stderr, flush=True))
    for line in section(results, lg.skip_reason()):
        print(line)
    print(f"bench/linux_guest.py took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Boot time and dirty-pass time of the test guest, godwit-vm beside QEMU.

Both VMMs boot the same build/guest/testguest.elf with the same memory in the
same run, interleaved, REPEAT times each. Measured:
  boot-to-A   from process start to the guest's 'A' on COM1 (idle guest);
  pass time   the dirty guest over [1M, 100M) (25344 pages, one byte
              incremented per page), averaged over PASS_SECONDS after its
              second pass, so first-touch of guest RAM is left out.
QEMU runs with -accel kvm (same hypervisor as godwit-vm) and, for boot, also
with TCG. Prints a table: median (min..max) and the ratio godwit/QEMU."""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from godwit_vm import Serial, die_with_parent, kvm_skip_reason  # noqa: E402

MEMORY_MIB = 128
DIRTY = "mode=dirty start=1M end=100M"


def godwit_cmd(args, append, serial):
    return [args.vm, "--memory", f"{MEMORY_MIB}M", "--kernel", args.guest, "--append", append,
            "--serial", f"file:{serial}"]


def qemu_cmd(accel):
    def build(args, append, serial):
        return [args.qemu, "-accel", accel, "-m", str(MEMORY_MIB), "-display", "none",
                "-nodefaults", "-no-reboot", "-kernel", args.guest, "-append", append,
                "-serial", f"file:{serial}", "-device", "isa-debug-exit,iobase=0x501,iosize=2"]
    return build


def run_guest(command, args, append, measure):
    directory = tempfile.mkdtemp(prefix="godwit-bench-")
    serial = Serial(os.path.join(directory, "serial.txt"))
    started = time.monotonic()
    process = subprocess.Popen(command(args, append, serial.path), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        return measure(serial, process, started)
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def boot_to_a(serial, process, started):
    serial.wait_for(lambda t: "A" in t, "A", timeout=120, process=process)
    return (time.monotonic() - started) * 1000


def pass_time(seconds):
    def measure(serial, process, started):
        serial.wait_count("B", 2, timeout=120, process=process)
        first, t0 = serial.text().count("B"), time.monotonic()
        time.sleep(seconds)
        last, t1 = serial.text().count("B"), time.monotonic()
        return (t1 - t0) * 1000 / max(last - first, 1)
    return measure


def summary(values):
    if not values:
        return "failed"
    return f"{statistics.median(values):8.1f} ({min(values):.1f}..{max(values):.1f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--guest", default="build/guest/testguest.elf")
    parser.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pass-seconds", type=float, default=3.0)
    args = parser.parse_args()
    reason = kvm_skip_reason()
    if reason:
        print(f"bench: cannot run guests here: {reason}")
        return 1

    vmms = [("godwit-vm", godwit_cmd)]
    if args.qemu:
        vmms += [("qemu kvm", qemu_cmd("kvm")), ("qemu tcg", qemu_cmd("tcg"))]
    else:
        print("bench: qemu-system-x86_64 not found; godwit-vm alone (no ratio)")
    metrics = [("boot-to-A ms", "mode=idle", boot_to_a),
               ("pass over 99 MiB ms", DIRTY, pass_time(args.pass_seconds))]
    results = {(name, metric): [] for name, _ in vmms for metric, _, _ in metrics}
    for repetition in range(args.repeat):
        for metric, append, measure in metrics:
            for name, command in vmms:   # interleaved: same conditions for both
                try:
                    results[name, metric].append(run_guest(command, args, append, measure))
                except (TimeoutError, AssertionError) as failure:
                    print(f"# {name} {metric} run {repetition + 1} failed: {failure}")

    print(f"\nTest guest, {MEMORY_MIB} MiB, {args.repeat} runs each, median (min..max); "
          f"lower is better")
    print(f"{'metric':<22}" + "".join(f"{name:>28}" for name, _ in vmms) +
          ("   godwit/qemu-kvm" if args.qemu else ""))
    for metric, _, _ in metrics:
        row = f"{metric:<22}" + "".join(f"{summary(results[name, metric]):>28}"
                                        for name, _ in vmms)
        if args.qemu and results["godwit-vm", metric] and results["qemu kvm", metric]:
            ratio = (statistics.median(results["godwit-vm", metric]) /
                     statistics.median(results["qemu kvm", metric]))
            row += f"   {ratio:14.3g}"
        print(row)
    passes = results["godwit-vm", "pass over 99 MiB ms"]
    if passes:
        ms = statistics.median(passes)
        print(f"\ngodwit-vm dirty guest: {1000 / ms:.1f} passes/s over 25344 pages "
              f"({25344 / ms:.0f} pages/ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Live-migration figures of godwit on this machine, against issue 4's
targets. Each scenario runs REPEAT times over TCP loopback to a destination
started with --mem-prealloc (so first-touch of fresh memory, about 0.46 GB/s
here, is not what is measured), with the default parameters (downtime-limit
300 ms, max-bandwidth unlimited):

  filled   1 GiB guest, idle, 1022 MiB of random data written by the host
  zero     2 GiB guest, idle, all zero
  dirty    256 MiB guest dirtying [1M, 100M) (25344 pages) all the time

MB/s is ram.transferred over (total-time - setup-time), 10^6 bytes. Every
run checks the destination's memory (filled: word for word; dirty: the
increment rule); a run that fails a check is reported as failed, never as a
figure. Prints one table: median (min..max)."""
import argparse
import hashlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from godwit_vm import (Vm, check_increment_pattern, free_tcp_port,  # noqa: E402
                       kvm_skip_reason, wait_migration)

MiB = 1 << 20


def fill(path, offset, size):
    """Writes size bytes of random data at offset; returns their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "r+b") as ram:
        ram.seek(offset)
        while size > 0:
            chunk = os.urandom(min(size, 32 * MiB))
            digest.update(chunk)
            ram.write(chunk)
            size -= len(chunk)
    return digest.hexdigest()


def migrate(args, memory_mib, append, filled):
    shm = f"/dev/shm/godwit-bench-{os.getpid()}"
    vms = []
    try:
        source = Vm(memory=f"{memory_mib}M", append=append, binary=args.vm, kernel=args.guest,
                    extra=("--mem-path", shm))
        vms.append(source)
        source.connect()
        source.serial.wait_count("A", 1, process=source.process)
        digest = fill(shm, MiB, (memory_mib - 2) * MiB) if filled else None
        if append.startswith("mode=dirty"):
            source.serial.wait_count("B", 2, process=source.process)
        port = free_tcp_port()
        destination = Vm(memory=f"{memory_mib}M", binary=args.vm, kernel=args.guest,
                         extra=("--incoming", f"tcp:127.0.0.1:{port}", "--mem-prealloc"))
        vms.append(destination)
        destination.connect()
        source.qmp.command("migrate", uri=f"tcp:127.0.0.1:{port}")
        info = wait_migration(source.qmp, timeout=300)
        if info["status"] != "completed":
            return None, f"{info['status']}: {info.get('error-desc')}"
        destination.qmp.command("stop")
        if filled:
            data = destination.read_memory(MiB, (memory_mib - 2) * MiB)
            if hashlib.sha256(data).hexdigest() != digest:
                return None, "destination memory differs"
        if append.startswith("mode=dirty"):
            check_increment_pattern(destination.read_memory(MiB, 99 * MiB))
        return info, None
    except (AssertionError, TimeoutError) as failure:
        return None, str(failure)
    finally:
        for vm in vms:
            vm.close()
        if os.path.exists(shm):
            os.unlink(shm)


SCENARIOS = [
    ("filled", 1024, "mode=idle", True, "MB/s >= 2000, downtime <= 10 ms"),
    ("zero", 2048, "mode=idle", False, "total <= 100 ms, downtime <= 10 ms"),
    ("dirty", 256, "mode=dirty start=1M end=100M", False, "downtime <= 300 ms (the limit)"),
]


def summary(values, unit=""):
    if not values:
        return "-"
    return f"{statistics.median(values):.0f}{unit} ({min(values):.0f}..{max(values):.0f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--guest", default="build/guest/testguest.elf")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    reason = kvm_skip_reason()
    if reason:
        print(f"bench: cannot run guests here: {reason}")
        return 1
    rows = []
    for name, memory, append, filled, target in SCENARIOS:
        runs, failures = [], []
        for _ in range(args.repeat):
            info, failure = migrate(args, memory, append, filled)
            if failure:
                failures.append(failure)
                print(f"# {name}: run failed: {failure}", flush=True)
                continue
            ram = info["ram"]
            seconds = max(info["total-time"] - info["setup-time"], 1) / 1000
            runs.append({"mbs": ram["transferred"] / 1e6 / seconds, "downtime": info["downtime"],
                         "total": info["total-time"], "passes": ram["dirty-sync-count"],
                         "expected": info.get("expected-downtime-at-switchover", 0),
                         "stopped": ram["downtime-bytes"] / 1024})
            print(f"# {name}: {runs[-1]}", flush=True)
        rows.append((name, memory, runs, failures, target))
    print(f"\ngodwit live migration, TCP loopback, destination preallocated, "
          f"{args.repeat} runs each: median (min..max)")
    header = (f"{'scenario':<8} {'RAM':>6} {'MB/s':>16} {'downtime ms':>14} {'predicted ms':>14} "
              f"{'total ms':>16} {'passes':>8} {'KiB sent stopped':>18} {'failed':>7}  target")
    print(header)
    print("-" * len(header))
    for name, memory, runs, failures, target in rows:
        col = lambda key: [run[key] for run in runs]  # noqa: E731
        print(f"{name:<8} {memory:>5}M {summary(col('mbs')):>16} {summary(col('downtime')):>14} "
              f"{summary(col('expected')):>14} {summary(col('total')):>16} "
              f"{summary(col('passes')):>8} {summary(col('stopped')):>18} "
              f"{len(failures):>7}  {target}")
    print(f"\nmachine: {os.cpu_count()} cores; measured {time.strftime('%Y-%m-%d %H:%M')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

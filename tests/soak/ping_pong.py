#!/usr/bin/env python3
"""make soak: migrates one running guest back and forth between fresh
godwit-vm processes, HOPS times, over rotating transports, half of them
with multifd (channels, compression, zero-page detection, packet size and
channel headers drawn at random), sometimes cancelling a migration half-way
and retrying it. After every hop the guest
must run where it landed, its memory must follow the increment rule, and
page 0 must count every pass it made on every host so far.

Usage: tests/soak/ping_pong.py [--hops N] [--seed S]"""
import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from godwit_vm import (Vm, check_increment_pattern, check_pass_count,  # noqa: E402
                       free_tcp_port, kvm_skip_reason, wait_migration)

MiB = 1 << 20
MEMORY = "128M"
DIRTY = "mode=dirty start=1M end=64M"


def uri_for(kind, vm):
    if kind == "tcp":
        return f"tcp:127.0.0.1:{free_tcp_port()}"
    return f"unix:{vm.path('hop-%d.sock' % time.monotonic_ns())}"


def check_guest(vm, passes_before):
    before = vm.serial.text().count("B")
    vm.serial.wait_count("B", before + 1, process=vm.process)
    vm.qmp.command("stop")
    data = vm.read_memory(MiB, 63 * MiB)
    check_pass_count(data, passes_before + vm.serial.text().count("B"))
    check_increment_pattern(data)
    vm.qmp.command("cont")


def multifd_settings(rng):
    """Half the hops use multifd, with settings drawn at random: both sides
    get the same (the destination refuses any difference)."""
    if rng.random() < 0.5:
        return None
    return ({"multifd-channels": rng.choice([1, 2, 4, 8]),
             "multifd-compression": rng.choice(["none", "zstd"]),
             "zero-page-detection": rng.choice(["none", "legacy", "multifd"]),
             "x-multifd-packet-pages": rng.choice([16, 64, 256])},
            rng.random() < 0.5)


def configure(vm, settings):
    params, header = settings if settings else ({"zero-page-detection": "multifd"}, False)
    vm.qmp.command("migrate-set-capabilities", capabilities=[
        {"capability": "multifd", "state": settings is not None},
        {"capability": "x-channel-header", "state": header}])
    vm.qmp.command("migrate-set-parameters", **params)


def describe(kind, settings):
    if not settings:
        return kind
    params, header = settings
    return (f"{kind} multifd {params['multifd-channels']} ch {params['multifd-compression']}"
            f" zero={params['zero-page-detection']} pages={params['x-multifd-packet-pages']}"
            + (" header" if header else ""))


def hop(args, rng, source, passes_before, number):
    kind = rng.choice(["unix", "tcp"])
    uri = uri_for(kind, source)
    settings = multifd_settings(rng)
    destination = Vm(memory=MEMORY, binary=args.vm, kernel=args.guest,
                     extra=("--incoming", "defer"))
    destination.connect()
    configure(destination, settings)
    configure(source, settings)
    destination.qmp.command("migrate-incoming", uri=uri)
    if rng.random() < 0.25:
        # Cancel half-way: the guest must stay, whole, on the source, and the
        # abandoned destination must give up without running it.
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 20 * MiB})
        source.qmp.command("migrate", uri=uri)
        time.sleep(rng.uniform(0.0, 0.3))
        source.qmp.command("migrate_cancel")
        info = wait_migration(source.qmp, ("cancelled", "completed"))
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": 0})
        if info["status"] == "cancelled":
            status, _, _ = destination.wait_exit(timeout=10)
            assert status != 0, "an abandoned destination exited 0"
            destination.close()
            check_guest(source, passes_before)
            print(f"hop {number}: {describe(kind, settings)}: cancelled half-way, guest still "
                  "on the source", flush=True)
            return source, passes_before
    else:
        source.qmp.command("migrate", uri=uri)
        info = wait_migration(source.qmp)
    assert info["status"] == "completed", info
    passes_before += source.serial.text().count("B")
    check_guest(destination, passes_before)
    print(f"hop {number}: {describe(kind, settings)}, {info['total-time']} ms, "
          f"downtime {info['downtime']} ms, "
          f"{info['ram']['dirty-sync-count']} syncs", flush=True)
    source.qmp.command("quit")
    source.wait_exit()
    source.close()
    return destination, passes_before


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--guest", default="build/guest/testguest.elf")
    parser.add_argument("--hops", type=int, default=100)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    reason = kvm_skip_reason()
    if reason:
        print(f"soak: {reason}: the guest is played with --accel none", flush=True)
    rng = random.Random(args.seed)
    print(f"soak: {args.hops} hops, seed {args.seed}", flush=True)
    vm = Vm(memory=MEMORY, append=DIRTY, binary=args.vm, kernel=args.guest)
    vm.connect()
    vm.serial.wait_count("B", 2, process=vm.process)
    passes_before = 0
    started = time.monotonic()
    try:
        for number in range(1, args.hops + 1):
            vm, passes_before = hop(args, rng, vm, passes_before, number)
    finally:
        vm.close()
    print(f"soak: {args.hops} hops passed in {time.monotonic() - started:.0f} s "
          f"(seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

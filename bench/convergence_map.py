#!/usr/bin/env python3
"""The convergence map: which guests converge, at what cost, godwit beside
QEMU 7.2 and beside seed 001's formula.

The test guest dirties its window [1 MiB, 129 MiB) at a set rate D
(`rate=` on its command line, MiB/s of page increments, paced by its TSC).
Both VMMs migrate it over TCP on a link of B = 256 MiB/s (the destination
in a network namespace, a veth pair, a tbf qdisc; see Link; max-bandwidth
4 GiB/s so that only the link holds the migration back) with a downtime
limit y of 50 or 300 ms, for each D of the sweep and each of:
  godwit           no throttle
  godwit-ac        auto-converge (QEMU's defaults: 20 % then +10 %)
  godwit-dl        dirty-limit (vcpu-dirty-limit 1 MB/s, period 1000 ms;
                   needs the KVM dirty ring: --accel kvm,dirty-ring-size=4096)
  qemu             QEMU 7.2, no throttle
  qemu-ac          QEMU 7.2, auto-converge
A run that has not completed after TIMEOUT seconds is cancelled (and the
source's guest checked intact); a completed run's destination is checked
byte-exact (increment rule and pass count). For each run: converged or not,
total time, downtime, the throttle reached (cpu-throttle-percentage, or the
dirty-limit's throttle time per round), and the guest's progress: its passes
over the window per second during the migration, as a share of the rate it
was asked for, and the work it lost (elapsed times the missing share).

Beside each D: seed 001's largest convergent dirty rate for this B and y,
computed from x, the sync time godwit measured in these runs (median of
ram.last-dirty-sync): with t = D*x/(B-D), when x + t > 100 ms the guest
converges if y > B*x/(B-D), i.e. D < B*(y-x)/y; otherwise if
y > 100*D*x/((B-D)*(100-x)), i.e. D < B*y*(100-x)/(y*(100-x) + 100*x)."""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
from runs import cpu_ticks, steal_share  # noqa: E402
from godwit_vm import (QemuVm, Vm, check_increment_pattern, check_pass_count,  # noqa: E402
                       free_tcp_port, kvm_skip_reason)

MiB = 1 << 20
MEMORY_MIB = 256
WINDOW = (1 * MiB, 129 * MiB)
BANDWIDTH = 256 * MiB            # B, bytes/s: the link's rate (tbf)
NO_CAP = 4096 * MiB              # max-bandwidth, far above the link
DOWNTIME_LIMITS = (50, 300)      # y, ms
RATES = (16, 64, 128, 192, 256, 384, 512)   # D, MiB/s
QUICK_RATES = (32, 128, 256, 512)
TIMEOUT = 30.0
RING_SIZE = 4096
QEMU_BIOS = "/usr/share/qemu/qboot.rom"
CONFIGS = ("godwit", "godwit-ac", "godwit-dl", "qemu", "qemu-ac")
TITLES = {"godwit": "godwit", "godwit-ac": "godwit auto-converge",
          "godwit-dl": "godwit dirty-limit", "qemu": "QEMU 7.2",
          "qemu-ac": "QEMU 7.2 auto-converge"}


class RunFailed(Exception):
    pass


class Link:
    """Seed 001's link of bandwidth B, for real: the destination runs in a
    network namespace of its own, joined to this one by a veth pair whose
    source end a tbf qdisc holds to B. Both phases of a migration, precopy
    and the stop-copy that no VMM paces, then cross at B, as between two
    hosts; loopback with max-bandwidth would pace precopy only. Needs root
    (CAP_NET_ADMIN)."""
    SOURCE_ADDRESS, DESTINATION_ADDRESS = "10.77.0.1", "10.77.0.2"

    def __init__(self, bandwidth):
        tag = f"{os.getpid() % 100000}"
        self.netns, self.veth = f"gwmap{tag}", f"gwm{tag}"
        self.wrappers = tempfile.mkdtemp(prefix="godwit-map-")
        try:
            for command in (
                    ["ip", "netns", "add", self.netns],
                    ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "gwpeer",
                     "netns", self.netns],
                    ["ip", "addr", "add", f"{self.SOURCE_ADDRESS}/24", "dev", self.veth],
                    ["ip", "link", "set", self.veth, "up"],
                    ["ip", "-n", self.netns, "addr", "add", f"{self.DESTINATION_ADDRESS}/24",
                     "dev", "gwpeer"],
                    ["ip", "-n", self.netns, "link", "set", "gwpeer", "up"],
                    ["ip", "-n", self.netns, "link", "set", "lo", "up"],
                    # rate in bits/s; a burst of 1 MiB (what a link's
                    # buffers let through at once after a pause) still
                    # carries the full rate here (iperf3: 2.03 Gbit/s).
                    ["tc", "qdisc", "add", "dev", self.veth, "root", "tbf",
                     "rate", f"{bandwidth * 8}bit", "burst", "1mb", "latency", "20ms"]):
                subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            self.close()
            detail = getattr(e, "stderr", "") or str(e)
            raise RuntimeError(f"cannot make the {bandwidth // MiB} MiB/s link "
                               f"(netns, veth, tbf; needs root): {detail.strip()}") from e

    def inside(self, binary):
        """A wrapper that execs binary in the destination's namespace: the
        VM keeps the wrapper's pid, so killing it kills the VM."""
        path = os.path.join(self.wrappers, os.path.basename(binary))
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\nexec ip netns exec {self.netns} {os.path.abspath(binary)} "$@"\n')
        os.chmod(path, 0o755)
        return path

    def close(self):
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        shutil.rmtree(self.wrappers, ignore_errors=True)


def append(rate):
    return f"mode=dirty start={WINDOW[0] // MiB}M end={WINDOW[1] // MiB}M rate={rate}"


def ring_options(config):
    return ("--accel", f"kvm,dirty-ring-size={RING_SIZE}") if config == "godwit-dl" else ()


def start_vm(config, rate, args, incoming=None):
    """The source here; the destination (incoming) behind the link."""
    if config.startswith("godwit"):
        extra = ring_options(config) + (("--incoming", incoming) if incoming else ())
        return Vm(memory=f"{MEMORY_MIB}M", append=append(rate),
                  binary=args.link.inside(args.vm) if incoming else args.vm,
                  kernel=args.guest, extra=extra)
    extra = ("-incoming", incoming) if incoming else ()
    return QemuVm(memory=f"{MEMORY_MIB}M", append=append(rate),
                  binary=args.link.inside(args.qemu) if incoming else args.qemu,
                  kernel=args.guest, bios=QEMU_BIOS, extra=extra)


def configure(config, source, limit_ms):
    # The link is B; max-bandwidth above it holds nothing back (QEMU 7.2's
    # default, 128 MiB/s, would).
    params = {"max-bandwidth": NO_CAP, "downtime-limit": limit_ms}
    source.qmp.command("migrate-set-parameters", **params)
    capability = {"godwit-ac": "auto-converge", "qemu-ac": "auto-converge",
                  "godwit-dl": "dirty-limit"}.get(config)
    if capability:
        source.qmp.command("migrate-set-capabilities",
                           capabilities=[{"capability": capability, "state": True}])


def throttle_of(info):
    """The throttle an answer shows: cpu-throttle-percentage, or the
    dirty-limit's throttle time per round (us)."""
    return (info.get("cpu-throttle-percentage", 0),
            info.get("dirty-limit-throttle-time-per-round", 0))


def check_guest(vm, earlier=()):
    """Stops the dirty guest where it runs and checks its window: the
    increment rule, and page 0 counting every pass on every host."""
    before = vm.serial.text().count("B")
    vm.serial.wait_count("B", before + 1, timeout=60, process=vm.process)
    vm.qmp.command("stop")
    data = vm.read_memory(WINDOW[0], WINDOW[1] - WINDOW[0])
    check_increment_pattern(data)
    check_pass_count(data, sum(v.serial.text().count("B") for v in (vm, *earlier)))


def run_once(config, rate, limit_ms, args):
    source = destination = None
    try:
        source = start_vm(config, rate, args)
        source.connect()
        source.serial.wait_count("A", 1, timeout=60, process=source.process)
        # Let the guest settle at its rate before measuring it.
        source.serial.wait_count("B", 1, timeout=60, process=source.process)
        uri = f"tcp:{Link.DESTINATION_ADDRESS}:{free_tcp_port()}"
        destination = start_vm(config, rate, args, incoming=uri)
        destination.connect()
        configure(config, source, limit_ms)
        passes_before = source.serial.text().count("B")
        started = time.monotonic()
        ticks_before = cpu_ticks()
        source.qmp.command("migrate", uri=uri)
        cpu_max = dl_max = 0
        last_expected = None
        syncs = []
        cancelled = False
        while True:
            info = source.qmp.command("query-migrate")
            cpu, dl = throttle_of(info)
            if "expected-downtime" in info:
                last_expected = info["expected-downtime"]
            cpu_max, dl_max = max(cpu_max, cpu), max(dl_max, dl)
            sync = info.get("ram", {}).get("last-dirty-sync")
            if sync and sync.get("total"):
                syncs.append(sync["total"] / 1000)
            status = info.get("status")
            if status in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() - started > args.timeout and not cancelled:
                source.qmp.command("migrate_cancel")
                cancelled = True
            if time.monotonic() - started > args.timeout + 30:
                raise RunFailed(f"still {status} 30 s after migrate_cancel")
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        passes = source.serial.text().count("B") - passes_before
        record = {"config": config, "rate": rate, "limit": limit_ms, "elapsed": elapsed,
                  "converged": status == "completed", "cpu_throttle": cpu_max,
                  "dl_time": dl_max, "syncs": syncs,
                  "steal": steal_share(ticks_before, cpu_ticks())}
        if status == "completed":
            info = settle(source, info)
            record.update(total_ms=info.get("total-time"), downtime_ms=info.get("downtime"))
            # godwit's prediction at the stop (ours); QEMU 7.2 has none, so
            # its last expected-downtime sampled while active (100 ms apart).
            record["predicted_ms"] = info.get("expected-downtime-at-switchover", last_expected)
            # godwit's switchover in us (ours): whole-ms figures cannot
            # compare downtimes of a few ms.
            detail = info.get("downtime-detail")
            if detail:
                record.update(downtime_us=detail["total"],
                              predicted_us=detail["expected"]["total"], detail=detail)
            # Passes the guest made while the source ran it (up to switchover).
            record["progress"] = passes / max(elapsed, 1e-3)
            check_guest(destination, earlier=(source,))
        elif status == "cancelled":
            record["progress"] = passes / max(elapsed, 1e-3)
            if source.qmp.command("query-status")["status"] != "running":
                raise RunFailed("the source's guest is not running after migrate_cancel")
            check_guest(source)
        else:
            raise RunFailed(f"failed: {info.get('error-desc', '')}")
        return record
    finally:
        for vm in (destination, source):
            if vm is not None:
                vm.close()


def settle(source, info):
    """QEMU 7.2 fills in total-time and downtime a moment after "completed"."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not info.get("total-time"):
        time.sleep(0.05)
        info = source.qmp.command("query-migrate")
    return info


def formula_max_rate(bandwidth, x_ms, y_ms):
    """Seed 001: the largest convergent D (same unit as bandwidth) for sync
    time x and downtime limit y, both in ms."""
    if x_ms <= 0:
        return bandwidth
    case1 = bandwidth * (y_ms - x_ms) / y_ms
    case2 = bandwidth * y_ms * (100 - x_ms) / (y_ms * (100 - x_ms) + 100 * x_ms)
    # x + t = B*x/(B-D) passes 100 ms at D = B*(1 - x/100): below, case 2
    # decides; above, case 1.
    boundary = bandwidth * (1 - x_ms / 100)
    if case1 > boundary:
        return case1
    return max(0.0, min(case2, boundary))


def progress_text(record):
    """Passes are whole sweeps of the window: a migration shorter than two
    of them at the asked rate says nothing about the guest's progress."""
    window_mib = (WINDOW[1] - WINDOW[0]) / MiB
    if record.get("elapsed", 0) < 2 * window_mib / record["rate"]:
        return "guest progress -"
    share = record["progress"] * window_mib / record["rate"]
    return (f"guest {record['progress']:.2f} passes/s ({share:.0%}, "
            f"{lost_seconds(record):.1f} s of work lost)")


def lost_seconds(record):
    """The guest's work the migration cost it, in seconds at the asked rate:
    a throttle that holds the guest hard but briefly can cost less than a
    mild one that holds it long."""
    window_mib = (WINDOW[1] - WINDOW[0]) / MiB
    share = record["progress"] * window_mib / record["rate"]
    return max(0.0, record["elapsed"] * (1 - share))


def prediction_ratio(record):
    """godwit's in us (downtime-detail, ours); QEMU's in whole ms."""
    if record.get("downtime_us"):
        return record["predicted_us"] / record["downtime_us"]
    if not record.get("downtime_ms") or record.get("predicted_ms") is None:
        return None
    return record["predicted_ms"] / record["downtime_ms"]


def downtime_text(record):
    if record.get("downtime_us") is not None:
        return (f"down {record['downtime_us'] / 1000:.1f} ms (predicted "
                f"{record['predicted_us'] / 1000:.1f}, {prediction_ratio(record):.2f}x)")
    text = f"down {record['downtime_ms']} ms"
    if record.get("predicted_ms") is not None:
        ratio = prediction_ratio(record)
        text += f" (predicted {record['predicted_ms']}" + (f", {ratio:.2f}x)" if ratio else ")")
    return text


def cell(record, timeout):
    if record is None:
        return "-"
    if isinstance(record, str):
        return record
    if record["converged"]:
        text = f"yes {record['total_ms'] / 1000:.1f} s, {downtime_text(record)}"
    else:
        text = f"no (cancelled at {timeout:g} s)"
    if record["cpu_throttle"]:
        text += f", throttle {record['cpu_throttle']}%"
    if record["dl_time"]:
        text += f", dl {record['dl_time'] / 1000:.0f} ms/round"
    return text + ", " + progress_text(record)


def sync_ms(results):
    values = [s for r in results.values() if isinstance(r, dict) for s in r["syncs"]
              if r["config"] == "godwit"]
    return statistics.median(values) if values else 0.0


def tables(results, rates, limits, configs, timeout):
    x = sync_ms(results)
    out = []
    for limit in limits:
        out += [f"#### downtime-limit {limit} ms, max-bandwidth {BANDWIDTH // MiB} MiB/s "
                f"(seed 001 allows D < {formula_max_rate(BANDWIDTH / MiB, x, limit):.1f} MiB/s "
                f"with x = {x:.3f} ms)", "",
                "| D (MiB/s) | formula | " + " | ".join(TITLES[c] for c in configs) + " |",
                "| --- | --- |" + " --- |" * len(configs)]
        allowed = formula_max_rate(BANDWIDTH / MiB, x, limit)
        for rate in rates:
            row = [str(rate), "converges" if rate < allowed else "does not"]
            row += [cell(results.get((c, rate, limit)), timeout) for c in configs]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return out


def targets(results, rates, limits):
    """The issue's targets, each with the evidence."""
    x = sync_ms(results)
    lines = []
    for limit in limits:
        allowed = formula_max_rate(BANDWIDTH / MiB, x, limit)
        misses = [r for r in rates if r < allowed and isinstance(results.get(("godwit", r, limit)),
                                                                    dict)
                  and not results[("godwit", r, limit)]["converged"]]
        lines.append(f"- y = {limit} ms: godwit without throttle "
                     + (f"fails to converge at D = {misses} MiB/s, which the formula allows"
                        if misses else "converges at every measured D the formula allows"))
        g = [r for r in rates if isinstance(results.get(("godwit", r, limit)), dict)
             and results[("godwit", r, limit)]["converged"]]
        q = [r for r in rates if isinstance(results.get(("qemu", r, limit)), dict)
             and results[("qemu", r, limit)]["converged"]]
        lines.append(f"  - largest D converged without throttle: godwit "
                     f"{max(g) if g else 'none'}, QEMU 7.2 {max(q) if q else 'none'}")
        for config in ("godwit-ac", "godwit-dl"):
            measured = [r for r in rates if isinstance(results.get((config, r, limit)), dict)]
            not_conv = [r for r in measured if not results[(config, r, limit)]["converged"]]
            lines.append(f"  - {TITLES[config]}: " + (
                "not measured" if not measured else
                f"did not converge at D = {not_conv}" if not_conv else
                f"every measured point converged ({len(measured)} of {len(rates)})"))
        ratios = [prediction_ratio(r) for r in
                  (results.get((c, rate, limit)) for c in ("godwit", "godwit-ac", "godwit-dl")
                   for rate in rates)
                  if isinstance(r, dict) and r["converged"] and prediction_ratio(r)]
        inside = [x for x in ratios if 0.8 <= x <= 1.2]
        if ratios:
            lines.append(f"  - godwit's predicted/measured downtime within 20%: {len(inside)} of "
                         f"{len(ratios)} converged runs (range {min(ratios):.2f} to "
                         f"{max(ratios):.2f}, in us)")
        outside = [(c, rate, r) for c in ("godwit", "godwit-ac", "godwit-dl") for rate in rates
                   for r in (results.get((c, rate, limit)),)
                   if isinstance(r, dict) and r["converged"] and prediction_ratio(r)
                   and not 0.8 <= prediction_ratio(r) <= 1.2]
        if outside:
            lines.append("    - outside: " + "; ".join(
                f"{TITLES[c]} at D = {rate}: {prediction_ratio(r):.2f}, this machine's CPU "
                f"steal {r.get('steal', 0):.0f}% during the run" for c, rate, r in outside))
        for rate in rates:
            ac, dl = results.get(("godwit-ac", rate, limit)), results.get(("godwit-dl", rate, limit))
            if isinstance(ac, dict) and isinstance(dl, dict) and (ac["cpu_throttle"] or dl["dl_time"]):
                lines.append(f"  - D = {rate}: dirty-limit {progress_text(dl)}, "
                             f"auto-converge {progress_text(ac)}")
    return lines


def plot(results, args, data_dir, png_dir):
    """One PNG per downtime limit (bench/convergence.gp); returns the file
    names by limit."""
    sys.path.insert(0, HERE)
    import report   # gnuplot's runner, shared with the other plots
    made = {}
    for limit in args.limits:
        data = os.path.join(data_dir, f"convergence-{limit}.dat")
        with open(data, "w") as f:
            for config in args.configs:
                f.write(f'"{TITLES[config]}"\n')
                for rate in args.rates:
                    r = results.get((config, rate, limit))
                    if not isinstance(r, dict):
                        f.write(f"{rate} NaN NaN NaN\n")
                        continue
                    total = r["total_ms"] / 1000 if r["converged"] else "NaN"
                    cancelled = "NaN" if r["converged"] else args.timeout
                    share = 100 * r["progress"] * (WINDOW[1] - WINDOW[0]) / MiB / rate
                    f.write(f"{rate} {total} {cancelled} {share:.1f}\n")
                f.write("\n\n")
        out = os.path.join(png_dir, f"convergence-{limit}.png")
        report.gnuplot("convergence.gp", {
            "data": data, "out": out, "timeout": args.timeout,
            "plottitle": f"Convergence on a {BANDWIDTH // MiB} MiB/s link, "
                         f"downtime-limit {limit} ms"})
        made[limit] = os.path.basename(out)
    return made


def link_skip_reason():
    """Why the map cannot run here (no KVM, no netns or tbf), or None."""
    reason = kvm_skip_reason()
    if reason:
        return reason
    try:
        Link(BANDWIDTH).close()
    except RuntimeError as e:
        return str(e)
    return None


def measure(args, log=print):
    args.link = Link(BANDWIDTH)
    try:
        return measure_on_link(args, log)
    finally:
        args.link.close()


def measure_on_link(args, log):
    results = {}
    for limit in args.limits:
        for rate in args.rates:
            for config in args.configs:
                if config.startswith("qemu") and not args.qemu:
                    results[(config, rate, limit)] = "not measured: no qemu-system-x86_64"
                    continue
                log(f"convergence map: {config}, D = {rate} MiB/s, y = {limit} ms")
                try:
                    results[(config, rate, limit)] = run_once(config, rate, limit, args)
                except Exception as e:   # a failed run is a cell, never a figure
                    results[(config, rate, limit)] = f"failed: {e}"
                    log(f"  failed: {e}")
    return results


READING = (
    "Where the formula and the measurements disagree, and why. The formula models "
    "QEMU's bandwidth estimate and a guest whose dirty pages grow with time without "
    "bound; with x of about 0.01 ms it allows every D below B and none at or above it. "
    "(1) At D >= B a guest still converges in some runs without a throttle (on "
    "2026-12-02, at 256 MiB/s both VMMs did in both runs at 300 ms and in one of two at "
    "50 ms): the test guest sweeps a 128 MiB window in address "
    "order, so what is dirty after a pass is at most the window, and fewer pages when "
    "the guest's sweep and the pass's walk run in step; godwit re-arms dirty logging "
    "just before it reads each 64-page chunk (KVM_CLEAR_DIRTY_LOG), so only writes "
    "after the send count. A real workload's pattern decides this, not its rate alone. "
    "(2) The link here is B in both phases, as the formula assumes; the earlier map "
    "paced precopy alone with max-bandwidth on loopback, where the stop-copy phase ran "
    "at memory speed and every estimate made at the paced rate (godwit's then, QEMU's "
    "always) foretold 7 to 9 times the downtime. godwit now measures the rate from the "
    "bytes that crossed the link (not those its socket buffers took) and adds what the "
    "switchover pays whatever is dirty: the stop, the last sync, the devices, and the "
    "wait for what the link still holds (SIOCOUTQ, 9 to 15 ms of a 256 MiB/s link's "
    "queue and buffers here, most of each downtime) plus TCP's round trip; "
    "downtime-detail gives both sides part by part. (3) Until 2026-12-03 the prediction "
    "missed by more than 20% in 5 of 21 runs, short by 4 to 6 ms: downtime-detail put the "
    "difference in the destination's resume (GO to RUNNING, 3.6 to 6 ms), where on 2 cores "
    "the destination's reply waited for a core its freshly started vCPU held although the "
    "guest had run after 0.3 ms. RP_RUNNING now says how long the guest has run, so the "
    "downtime ends when it ran, and the estimate counts the guest's start as timed at "
    "setup: every converged godwit run was within 20% at 06:16 on 2026-12-03 (0.91 to "
    "0.99). Later that day, 2 of 21 were not: dirty-limit at D = 512 MiB/s, predicted "
    "about 12 ms, measured 19 to 22. Nothing was dirty at the stop; the downtime was the "
    "wait for what the link still held, which took 2 to 8 ms longer than those bytes at "
    "the link's rate. Timestamps of both sides through that wait (2026-12-03, about 40 runs of "
    "that point alone, a third of them outside) put the extra time in stalls of this whole "
    "machine, not in the model: the unacknowledged bytes stood still for 2 to 5 ms, or "
    "the destination took 2.6 to 7.5 ms after its last byte had been acknowledged, while "
    "perf saw both CPUs idle or saw no sample at all, and a thread sleeping 0.5 ms woke "
    "3.5 to 6 ms later. This machine is itself a VM: /proc/stat's steal was 4 to 28% "
    "of its CPU time during those runs (1% idle). The tbf link and the veth pair are "
    "software on the same 2 CPUs, so a stall holds the link too, which a real link "
    "between hosts would not; at this point the wait is most of a 12 ms downtime, so a "
    "few ms of stall is 20 to 50%. It is not that point's alone: at D = 32 on the same "
    "day, 8 of 20 runs of godwit and godwit auto-converge alone were outside, each with "
    "one step of the switchover milliseconds longer than it ever takes otherwise (the "
    "stop 7 ms where it takes 0.1, the resume 5 ms, the device step 2 ms, the wait for "
    "the link 2 to 9 ms over). The estimate cannot foresee a stall; the line "
    "\"outside\" gives each such run's steal share. "
    "QEMU 7.2 reports the limit as its expected downtime until a pass has measured "
    "anything, so its ratios at small D say nothing.")


def section(results, args, made=None, png_rel="benchmarks"):
    images = [f"![convergence, {limit} ms]({png_rel}/{name})" for limit, name in
              sorted((made or {}).items())]
    return ["### The convergence map (bench/convergence_map.py)", "",
            f"A {MEMORY_MIB} MiB test guest dirtying [{WINDOW[0] // MiB} MiB, "
            f"{WINDOW[1] // MiB} MiB) at D MiB/s (`rate=`), migrated over TCP on a link of "
            f"B = {BANDWIDTH // MiB} MiB/s: the destination in a network namespace of its own, "
            "a veth pair, a tbf qdisc at B on the source's end (iperf3 moves 256 MB/s over it), "
            "max-bandwidth 4 GiB/s on both VMMs so that only the link holds them back; "
            "precopy and stop-copy both cross at B, as between two hosts "
            "(max-bandwidth on loopback would pace precopy alone); a run not completed after "
            f"{args.timeout:g} s is cancelled and its source checked intact; a completed "
            "run's destination is checked byte-exact. Each cell: converged or not, total "
            "time and downtime (with the predicted downtime and predicted/measured: godwit's "
            "`downtime-detail` in us, its `total` and `expected.total`; QEMU's downtime and "
            "last expected-downtime sampled, in whole ms), the "
            "throttle reached (auto-converge's "
            "cpu-throttle-percentage, dirty-limit's throttle time per round), and the guest's "
            "progress during the migration in passes over its window per second, as a "
            "share of the rate asked, and the guest work lost: elapsed time times the share "
            "missing, in seconds at the asked rate (a throttle that holds the guest hard but "
            "briefly can cost it less than a mild one that holds it long). \"formula\": whether seed 001's formula lets this D "
            "converge, with x the median sync time godwit reported in these runs. How to read "
            "it: down a column the guest dirties faster; a throttle should turn every \"no\" "
            "into \"yes\", and the less progress it takes from the guest the better.", "",
            *tables(results, args.rates, args.limits, args.configs, args.timeout),
            *targets(results, args.rates, args.limits), "", READING, "", *images, ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--guest", default="build/guest/testguest.elf")
    parser.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"))
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    parser.add_argument("--limits", type=int, nargs="+", default=list(DOWNTIME_LIMITS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--timeout", type=float, default=TIMEOUT)
    args = parser.parse_args()
    reason = link_skip_reason()
    if reason:
        print(f"convergence map: not measured: {reason}")
        return 0
    results = measure(args, log=lambda s: print(s, file=sys.stderr))
    for line in section(results, args):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Postcopy in make bench (issue 15): a guest that precopy cannot move.

A 1 GiB VM whose test guest dirties [1 MiB, 101 MiB) (100 MiB) over and
over, many times a second, migrated over TCP loopback with max-bandwidth
64 MiB/s: precopy never converges (300 ms of downtime cannot hold 100 MiB).
After 3 s of precopy the source gets migrate-start-postcopy; the guest then
runs on the destination, which pulls what it touches. Four configurations,
interleaved, in the same run: godwit postcopy, godwit postcopy-preempt, and
QEMU 7.2 postcopy, untraced and traced (7.2 has no postcopy-preempt: its
preempt channel came in QEMU 8.0). Both VMMs boot the same guest with the same memory, parameters
and capabilities (postcopy-ram both sides, postcopy-blocktime on the
destination; max-postcopy-bandwidth 0, unlimited, on both).

Every run's destination is checked: stopped after two more passes there,
[1 MiB, 101 MiB) must follow the test guest's increment rule and its first
page must count every pass the guest made on both hosts (a lost, stale or
doubled page breaks one or the other), else the run is a failure row.

Figures per run: total time (source, migrate to completed), the switch's
downtime, the time in postcopy (switch to completed), the guest's stall
(the destination's postcopy-blocktime, ms), page requests (the source's
ram.postcopy-requests) and, for godwit, the request latency from its
postcopy-latency-dist (QEMU 10.1's histogram; bucket N is [2^N, 2^(N+1))
us: median and p99 are given as the bucket they fall in). QEMU 7.2 reports
no request latency (postcopy-latency came in QEMU 10.1), so a fourth
configuration runs QEMU 7.2 with its destination tracing two of its trace
points, postcopy_ram_fault_thread_request (a fault became a request) and
postcopy_place_page / _zero (a page was placed): the latency of a request
is the time from it to the placing of its page, into the same log2
buckets. Tracing costs QEMU some time per placed page; the untraced QEMU
row beside it shows how much. For all configurations the table also gives
the stall per request (blocktime / requests), which both VMMs report: with
one vCPU, the mean time the guest waited for a requested page.

bench/compare.py runs it (make bench; --no-postcopy leaves it out). Alone:

    python3 bench/postcopy.py --vm build/vm/godwit-vm --guest build/guest/testguest.elf

prints the table and writes bench/results/RUN-postcopy/ (postcopy.md,
runs.jsonl, postcopy-latency.png)."""
import argparse
import json
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
from godwit_vm import (QemuVm, Vm, check_increment_pattern,  # noqa: E402
                       check_pass_count, free_tcp_port)
from runs import (QEMU_ACCEL, QEMU_BIOS, MiB, cpu_ticks, qemu_trace_events,  # noqa: E402
                  steal_share)

ISSUE = "issue 15"
MEMORY = "1024M"
DIRTY_LOW, DIRTY_HIGH = 1 * MiB, 101 * MiB
APPEND = "mode=dirty start=1M end=101M"
MAX_BANDWIDTH = 64 * MiB
SWITCH_AFTER_S = 3.0
REPEAT = 4
TIMEOUT_S = 120
BUCKETS = 32
# (key, title, vmm, preempt)
CONFIGS = (("godwit", "godwit postcopy", "godwit", False),
           ("godwit-preempt", "godwit postcopy-preempt", "godwit", True),
           ("qemu", "QEMU 7.2 postcopy", "qemu", False),
           ("qemu-traced", "QEMU 7.2 postcopy, destination traced", "qemu", False))
QEMU_REQUEST = "postcopy_ram_fault_thread_request"
QEMU_PLACED = ("postcopy_place_page", "postcopy_place_page_zero")
PAGE = 4096
TARGET_MEDIAN_RATIO = 0.5    # godwit's median latency <= half of QEMU's
TARGET_P99_US = 10000        # with preempt


def capabilities(names):
    return [{"capability": name, "state": True} for name in names]


def start_vm(vmm, args, incoming=False, trace_path=None):
    if vmm == "godwit":
        return Vm(memory=MEMORY, append=APPEND, binary=args.vm, kernel=args.guest,
                  extra=("--incoming", "defer") if incoming else ())
    trace = ()
    if trace_path:
        trace = tuple(a for event in (QEMU_REQUEST,) + QEMU_PLACED for a in ("-trace", event))
        trace += ("-msg", "timestamp=on", "-D", trace_path)
    return QemuVm(memory=MEMORY, append=APPEND, binary=args.qemu, kernel=args.guest,
                  bios=QEMU_BIOS, accel=QEMU_ACCEL,
                  extra=(("-incoming", "defer") if incoming else ()) + trace)


def qemu_request_latencies(trace_path):
    """us from each request of a page (the faulting address's page) to the
    first placing of that page after it, from QEMU's trace log."""
    asked, latencies = {}, []
    for t, event, arguments in qemu_trace_events(trace_path, (QEMU_REQUEST,) + QEMU_PLACED):
        field = "HVA=" if event == QEMU_REQUEST else "host="
        at = arguments.find(field)
        if at < 0:
            continue
        page = int(arguments[at + len(field):].split()[0], 16) & ~(PAGE - 1)
        if event == QEMU_REQUEST:
            asked.setdefault(page, t)
        elif page in asked:
            latencies.append((t - asked.pop(page)) * 1e6)
    return latencies


def latency_dist(latencies_us):
    """postcopy-latency-dist's shape: bucket N counts [2^N, 2^(N+1)) us."""
    dist = [0] * BUCKETS
    for us in latencies_us:
        dist[min(max(int(us), 1).bit_length() - 1, BUCKETS - 1)] += 1
    return dist


def wait_status(qmp, wanted, timeout):
    deadline = time.monotonic() + timeout
    while True:
        info = qmp.command("query-migrate")
        if info.get("status") in wanted:
            return info
        if info.get("status") in ("failed", "cancelled"):
            raise RuntimeError(f"migration {info['status']}: {info.get('error-desc')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"still {info.get('status')} after {timeout} s")
        time.sleep(0.05)


def check_destination(destination, source):
    """The increment rule over the dirty range and the pass count across
    both hosts, after two passes on the destination."""
    before = destination.serial.text().count("B")
    destination.serial.wait_count("B", before + 2, timeout=60, process=destination.process)
    destination.qmp.command("stop")
    data = destination.read_memory(DIRTY_LOW, DIRTY_HIGH - DIRTY_LOW)
    check_pass_count(data, destination.serial.text().count("B") +
                     source.serial.text().count("B"))
    return check_increment_pattern(data)


def percentile_bucket(dist, fraction):
    """The bucket holding the given fraction of the requests, or None."""
    total = sum(dist)
    if not total:
        return None
    seen = 0
    for bucket, count in enumerate(dist):
        seen += count
        if seen >= fraction * total:
            return bucket
    return len(dist) - 1


def run_once(key, vmm, preempt, args):
    record = {"config": key, "vmm": vmm, "preempt": preempt}
    source = destination = None
    trace_path = None
    if key == "qemu-traced":
        trace_path = os.path.join("/tmp", f"godwit-bench-postcopy-{os.getpid()}.trace")
    try:
        source = start_vm(vmm, args)
        source.connect()
        source.serial.wait_count("A", 1, timeout=60, process=source.process)
        destination = start_vm(vmm, args, incoming=True, trace_path=trace_path)
        destination.connect()
        extra = ("postcopy-preempt",) if preempt else ()
        destination.qmp.command("migrate-set-capabilities", capabilities=capabilities(
            ("postcopy-ram", "postcopy-blocktime") + extra))
        source.qmp.command("migrate-set-capabilities",
                           capabilities=capabilities(("postcopy-ram",) + extra))
        source.qmp.command("migrate-set-parameters", **{"max-bandwidth": MAX_BANDWIDTH,
                                                        "downtime-limit": 300,
                                                        "max-postcopy-bandwidth": 0})
        uri = f"tcp:127.0.0.1:{free_tcp_port()}"
        destination.qmp.command("migrate-incoming", uri=uri)
        started = time.monotonic()
        ticks = cpu_ticks()
        source.qmp.command("migrate", uri=uri)
        time.sleep(SWITCH_AFTER_S)
        info = source.qmp.command("query-migrate")
        if info.get("status") != "active":
            raise RuntimeError(f"precopy was {info.get('status')} at the switch, not active "
                               "(it should not converge)")
        record["precopy_passes"] = info["ram"]["dirty-sync-count"]
        switched = time.monotonic()
        source.qmp.command("migrate-start-postcopy")
        info = wait_status(source.qmp, ("completed",), TIMEOUT_S)
        ended = time.monotonic()
        dest = wait_status(destination.qmp, ("completed",), 30)
        record.update(total_ms=info.get("total-time", (ended - started) * 1000),
                      downtime_ms=info.get("downtime"),
                      postcopy_s=ended - switched,
                      requests=info["ram"].get("postcopy-requests"),
                      blocktime_ms=dest.get("postcopy-blocktime"),
                      latency_dist=dest.get("postcopy-latency-dist"),
                      mean_latency_us=dest.get("postcopy-latency"),
                      steal=steal_share(ticks, cpu_ticks()))
        record["edges"] = check_destination(destination, source)
        if trace_path:
            latencies = qemu_request_latencies(trace_path)
            # A run whose guest never waited for a page has no latency to
            # give; one that asked for pages must have traced them.
            if not latencies and record["requests"]:
                raise RuntimeError("QEMU's trace log holds no request followed by its page")
            record.update(latency_dist=latency_dist(latencies), traced_requests=len(latencies),
                          latencies_us=[round(us, 1) for us in latencies])
            if latencies:
                record.update(median_latency_us=statistics.median(latencies),
                              p99_latency_us=sorted(latencies)[int(0.99 * (len(latencies) - 1))])
        record["ok"] = True
    except Exception as error:   # a failed run is a row, never a figure
        record.update(ok=False, error=str(error)[:300])
    finally:
        for vm in (source, destination):
            if vm:
                vm.close()
        if trace_path and os.path.exists(trace_path):
            os.unlink(trace_path)
    return record


def run(args, log, jsonl=None):
    """REPEAT runs of each configuration, interleaved; returns the records."""
    records = []
    configs = [c for c in CONFIGS if (c[2] != "qemu" or args.qemu) and
               (not getattr(args, "only", None) or c[0] in args.only)]
    for rep in range(args.repeat):
        order = configs if rep % 2 == 0 else configs[::-1]
        for key, title, vmm, preempt in order:
            log(f"postcopy: {title}, run {rep + 1}")
            record = run_once(key, vmm, preempt, args)
            record["rep"] = rep
            if jsonl:
                jsonl.write(json.dumps(record) + "\n")
                jsonl.flush()
            log(f"  {'ok' if record['ok'] else 'FAILED: ' + record['error']}")
            records.append(record)
    return records


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values, digits=0):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    fmt = f"{{:.{digits}f}}"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}.." \
           f"{fmt.format(max(values))})"


def bucket_text(bucket):
    return "n/a" if bucket is None else f"[{1 << bucket}, {2 << bucket}) us"


def merged_dist(runs):
    dist = [0] * BUCKETS
    for r in runs:
        for i, count in enumerate(r.get("latency_dist") or []):
            dist[i] += count
    return dist


def pooled_latencies(runs):
    """Every traced request's latency over the runs: pooled as godwit's
    histograms are (merged_dist), so that both medians weigh each request
    alike, not each run."""
    return [us for r in runs for us in r.get("latencies_us") or []]


def table(records):
    out = ["| configuration | runs ok | total time (ms) | downtime (ms) | postcopy (s) | "
           "requests | blocktime (ms) | stall per request (us) | latency median | "
           "latency p99 | CPU steal % |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, title, vmm, _ in CONFIGS:
        runs = [r for r in records if r["config"] == key]
        if not runs:
            continue
        ok = [r for r in runs if r["ok"]]
        stall = [r["blocktime_ms"] * 1000 / r["requests"] for r in ok
                 if r.get("blocktime_ms") is not None and r.get("requests")]
        dist = merged_dist(ok)
        median_text = p99_text = "not reported by QEMU 7.2 (traced: next row)"
        if any(r.get("latency_dist") for r in ok):
            median_text = bucket_text(percentile_bucket(dist, 0.5))
            p99_text = bucket_text(percentile_bucket(dist, 0.99))
        pooled = sorted(pooled_latencies(ok))
        if key == "qemu-traced" and pooled:
            median_text += (f" ({statistics.median(pooled):.0f} us; per run "
                            f"{spread([r.get('median_latency_us') for r in ok])} us)")
            p99_text += (f" ({pooled[int(0.99 * (len(pooled) - 1))]:.0f} us; per run "
                         f"{spread([r.get('p99_latency_us') for r in ok])} us)")
        out.append(f"| {title} | {len(ok)}/{len(runs)} | "
                   f"{spread([r['total_ms'] for r in ok])} | "
                   f"{spread([r['downtime_ms'] for r in ok])} | "
                   f"{spread([r['postcopy_s'] for r in ok], 2)} | "
                   f"{spread([r['requests'] for r in ok])} | "
                   f"{spread([r['blocktime_ms'] for r in ok])} | {spread(stall)} | "
                   f"{median_text} | {p99_text} | {spread([r.get('steal') for r in ok])} |")
    for r in records:
        if not r["ok"]:
            out.append(f"| {r['config']} run {r['rep'] + 1} FAILED | | | | | | | | | "
                       f"{r['error']} | |")
    return out


def targets(records):
    ok = {key: [r for r in records if r["config"] == key and r["ok"]] for key, *_ in CONFIGS}
    out = ["Targets (issue 15):", ""]
    stall = {key: median([r["blocktime_ms"] * 1000 / r["requests"] for r in runs
                          if r.get("blocktime_ms") is not None and r.get("requests")])
             for key, runs in ok.items()}
    qemu_pooled = pooled_latencies(ok["qemu-traced"])
    qemu_median = statistics.median(qemu_pooled) if qemu_pooled else None
    if qemu_median:
        half = qemu_median * TARGET_MEDIAN_RATIO
        verdicts = []
        for key, title, vmm, _ in CONFIGS:
            bucket = percentile_bucket(merged_dist(ok[key]), 0.5) if vmm == "godwit" else None
            if bucket is None:
                continue
            verdict = ("met" if (2 << bucket) <= half else
                       "not met" if (1 << bucket) > half else "the bucket straddles half")
            verdicts.append(f"{title} in {bucket_text(bucket)}: {verdict}")
        out.append(f"- godwit's median request latency at most half of QEMU's: QEMU 7.2's "
                   f"median {qemu_median:.0f} us (traced destination), half {half:.0f} us; " +
                   "; ".join(verdicts) + ".")
    else:
        out.append("- godwit's median request latency vs QEMU's: not measured (no traced "
                   "QEMU run).")
    if stall.get("godwit") is not None and stall.get("qemu"):
        ratios = [(title, stall[key] / stall["qemu"]) for key, title, vmm, _ in CONFIGS
                  if key != "qemu" and stall.get(key) is not None]
        out.append("- the stall per request (blocktime / requests, both VMMs' own figures), "
                   "against untraced QEMU 7.2's: " +
                   ", ".join(f"{title} {ratio:.2f}" for title, ratio in ratios) +
                   " (the traced QEMU's ratio is what its tracing costs it).")
    p99 = percentile_bucket(merged_dist(ok["godwit-preempt"]), 0.99)
    if p99 is None:
        out.append("- p99 under 10 ms with preempt: not measured.")
    else:
        met = (2 << p99) <= TARGET_P99_US
        out.append(f"- p99 under 10 ms with preempt: p99 in {bucket_text(p99)}: "
                   f"{'met' if met else 'not met' if (1 << p99) >= TARGET_P99_US else 'the bucket straddles 10 ms'}.")
    failed = [r for r in records if not r["ok"]]
    out.append(f"- no lost or doubled page in any run: {len(records) - len(failed)} of "
               f"{len(records)} runs checked whole on the destination (increment rule and "
               "pass count)" + (f"; {len(failed)} failed (rows above)" if failed else "") + ".")
    return out


def plot(records, out_dir):
    """The godwit configurations' latency histograms (counts per log2 bucket)."""
    if not shutil.which("gnuplot"):
        return None
    png = os.path.join(out_dir, "postcopy-latency.png")
    keys = ("godwit", "godwit-preempt", "qemu-traced")
    dists = {key: merged_dist([r for r in records if r["config"] == key and r["ok"]])
             for key in keys}
    used = [i for i in range(BUCKETS) if any(dists[key][i] for key in keys)]
    if not used:
        return None
    # The data lives only while gnuplot reads it: out_dir may be docs/.
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as f:
        data = f.name
        for i in range(min(used), max(used) + 1):
            f.write(f"\"{1 << i}\" " + " ".join(str(dists[key][i]) for key in keys) + "\n")
    script = (f"set terminal pngcairo size 960,480 font 'sans,10'; set output '{png}'; "
              "set title 'page-request latency (godwit: postcopy-latency-dist; QEMU 7.2: "
              "its trace, request to placed page), all runs'; "
              "set xlabel 'latency bucket: [N, 2N) us'; set ylabel 'requests (log scale)'; "
              "set logscale y; set yrange [0.8:*]; "
              "set style data histogram; set style histogram clustered gap 1; "
              "set style fill solid 0.8 border -1; set grid ytics; set key top right; "
              f"plot '{data}' using 2:xtic(1) title 'postcopy' lc rgb '#1f77b4', "
              "'' using 3 title 'postcopy-preempt' lc rgb '#2ca02c', "
              "'' using 4 title 'QEMU 7.2 postcopy (traced)' lc rgb '#d62728'")
    try:
        subprocess.run(["gnuplot", "-e", script], check=False, capture_output=True)
    finally:
        os.unlink(data)
    return png if os.path.exists(png) else None


def section(records, png=None, png_rel=None):
    out = [f"## Postcopy ({ISSUE})", "",
           "A 1 GiB guest dirtying 100 MiB many times a second over max-bandwidth 64 MiB/s "
           "(precopy cannot converge), switched to postcopy after 3 s of precopy; godwit "
           "postcopy, godwit postcopy-preempt and QEMU 7.2 postcopy (7.2 has no "
           "postcopy-preempt), untraced and with its destination tracing requests and "
           "placed pages, interleaved. Every destination checked (increment rule and "
           "pass count). Median (min..max) over the runs. Latency percentiles are over "
           "every request of a configuration's runs pooled, as the log2 bucket of "
           "postcopy-latency-dist they fall in; QEMU 7.2 has no latency figure, so its "
           "traced runs' are from its trace log (a request to the placing of its page), "
           "put in the same buckets, with the exact pooled figure and the per-run ones "
           "beside; the stall per request (postcopy-blocktime / postcopy-requests) stands "
           "beside them for all. How to read the latency: a request whose page was already "
           "on its way (the guest caught up with the background stream) is answered in "
           "microseconds, one that has to cross to the source and back in tens; the median "
           "says which kind most requests were, and runs of the same configuration differ "
           "in that (the requests column), so the guest's stall says more about what the "
           "guest felt. CPU steal: the share of this machine's CPU time the hypervisor "
           "under it gave to others during the run (/proc/stat; this machine is a VM).", ""]
    out += table(records) + [""] + targets(records) + [""]
    if png_rel:
        out += [f"![page-request latency]({png_rel})", ""]
    return out


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--guest", default="build/guest/testguest.elf")
    parser.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"))
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--only", action="append", choices=[c[0] for c in CONFIGS],
                        help="run only this configuration (repeatable)")
    args = parser.parse_args()
    run_dir = os.path.join(args.results, time.strftime("%Y%m%d-%H%M%S") + "-postcopy")
    os.makedirs(run_dir, exist_ok=True)
    log(f"results in {run_dir}; load {os.getloadavg()[0]:.2f}")
    with open(os.path.join(run_dir, "runs.jsonl"), "w") as jsonl:
        records = run(args, log, jsonl)
    png = plot(records, run_dir)
    lines = section(records, png, os.path.basename(png) if png else None)
    with open(os.path.join(run_dir, "postcopy.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print()
    print("\n".join(lines))
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""TLS in make bench (issue 13): what encrypting every channel costs.

The 1 GiB filled guest of bench/compare.py (random content written by the
host, destination preallocated, every destination's memory checked byte for
byte) migrated in plaintext on one connection, then with TLS (x509, the
same certificates for both VMMs: `tls-creds-x509` objects on both sides,
verify-peer on, made by certtool for this run) on one connection and with
multifd on 2 and 4 channels; godwit and QEMU 7.2 in the same run.

Figures: MB/s, downtime, and each side's CPU seconds (user + system, from
/proc/PID/stat, between `migrate` and the end) per GiB sent; the cost of TLS
is plaintext MB/s / TLS MB/s of the same VMM. Targets: godwit over TLS at
least 1.2x QEMU over TLS in each configuration, downtime under 10 ms.

bench/compare.py runs it (make bench; --no-tls leaves it out). Alone:

    python3 bench/tls.py --vm build/vm/godwit-vm --guest build/guest/testguest.elf

prints the table and writes bench/results/RUN/tls.md and runs.jsonl."""
import argparse
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
import report  # noqa: E402
from runs import Content, MiB, Scenario, run_all  # noqa: E402
from tls_certs import Pki, certtool_skip_reason  # noqa: E402

ISSUE = "issue 13"
TARGET_RATIO = 1.2          # godwit TLS MB/s / QEMU TLS MB/s, each configuration
TARGET_DOWNTIME_MS = 10
# One run per configuration and VMM: 8 migrations of 1 GiB with their
# checks take about 2 minutes here, within the section's 3.
REPEAT = 1


def scenarios():
    filled = dict(content="random", memory_mib=1024)
    out = [Scenario("tls-plain", "plaintext, one connection", "TLS on or off",
                    short="plain\\n1 conn", describe="No TLS: scenario 1 again, in this "
                    "section's run, the reference for the cost of TLS.", **filled),
           Scenario("tls-1", "TLS, one connection", "TLS on or off", short="TLS\\n1 conn",
                    tls=True, describe="tls-creds on both sides, one connection.", **filled)]
    for channels in (2, 4):
        out.append(Scenario(f"tls-multifd-{channels}", f"TLS, multifd {channels} channels",
                            "TLS and the channel count", short=f"TLS\\nmultifd {channels}",
                            tls=True, channels=channels, multifd=True,
                            describe=f"tls-creds and multifd-channels {channels} on both "
                                     "sides: every channel carries its own TLS session.",
                            **filled))
    return out


def make_certificates():
    """A CA, a server and a client certificate for localhost: the dirs a
    tls-creds-x509 object reads (never kept after the run)."""
    pki = Pki("godwit bench CA")
    return pki, {"server": pki.x509_dir("server", "server"),
                 "client": pki.x509_dir("client", "client")}


def cell(runs, key, digits=None):
    values = report.values(runs, key)
    if not values:
        return "–"
    if digits is None:
        return report.spread(runs, key)
    values = sorted(values)
    middle = report.median(runs, key)
    return (f"{middle:.{digits}f}" if len(values) == 1 else
            f"{middle:.{digits}f} ({values[0]:.{digits}f}..{values[-1]:.{digits}f})")


def table(tls_scenarios, results):
    by_key = {s.key: s for s in tls_scenarios}
    lines = ["| VMM | configuration | runs | MB/s | downtime ms | source CPU s/GiB | "
             "destination CPU s/GiB | TLS cost (plain MB/s ÷ MB/s) | godwit MB/s ÷ QEMU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for vmm in ("godwit", "qemu"):
        plain = report.median(report.ok_runs(results, by_key["tls-plain"], vmm), "mbs") \
            if "tls-plain" in by_key else None
        for s in tls_scenarios:
            if vmm not in s.vmms:
                continue
            runs = report.ok_runs(results, s, vmm)
            mbs = report.median(runs, "mbs")
            other = report.median(report.ok_runs(results, s, "qemu"), "mbs")
            cells = [report.NAMES[vmm], s.title, report.run_count(results, s, vmm),
                     cell(runs, "mbs"), cell(runs, "downtime"),
                     cell(runs, "src_cpu_per_gib", 2), cell(runs, "dst_cpu_per_gib", 2),
                     report.ratio(plain, mbs) if s.tls else "1",
                     report.ratio(mbs, other) if vmm == "godwit" else ""]
            lines.append("| " + " | ".join(cells) + " |")
    for s in tls_scenarios:
        for vmm in s.vmms:
            for r in report.all_runs(results, s, vmm):
                if not r["ok"]:
                    lines.append(f"| **failed** | {report.NAMES[vmm]} {s.title} run "
                                 f"{r['rep'] + 1} | {report.escape(r['failure'])} "
                                 "| | | | | | |")
    return lines


def targets(tls_scenarios, results):
    lines = []
    for s in tls_scenarios:
        if not s.tls:
            continue
        godwit = report.ok_runs(results, s, "godwit")
        qemu = report.ok_runs(results, s, "qemu")
        if not godwit:
            lines.append(f"- {s.title}: no completed godwit run")
            continue
        g, q = report.median(godwit, "mbs"), report.median(qemu, "mbs")
        down = report.median(godwit, "downtime")
        ratio = g / q if q else None
        verdict = ("met" if ratio and ratio >= TARGET_RATIO else "not met") if ratio else \
            "no QEMU run to compare"
        lines.append(f"- {s.title}: godwit {report.num(g)} MB/s, QEMU 7.2 {report.num(q)} MB/s,"
                     f" ratio {report.num(ratio) if ratio else '–'} (target >= {TARGET_RATIO}, "
                     f"{ISSUE}): **{verdict}**; godwit downtime {report.num(down)} ms (target "
                     f"< {TARGET_DOWNTIME_MS}): "
                     f"**{'met' if down is not None and down < TARGET_DOWNTIME_MS else 'not met'}"
                     "**")
    return lines


READING = (
    "Reading it: TLS here is GnuTLS in user space on both sides (this kernel has no kTLS: "
    "`TCP_ULP \"tls\"` is not registered, see docs/qmp.md), AES-GCM on 2 cores shared by "
    "the source, the destination and the guests. Every byte is encrypted by one thread and "
    "decrypted by another, so CPU seconds per GiB say what TLS costs whatever the link; "
    "MB/s says how much of it 2 cores can hide. With multifd each channel has its own "
    "session and thread, which helps only while a core is free.")


def section(tls_scenarios, results):
    out = ["## TLS (issue 13)", "",
           "The 1 GiB filled guest (as scenario 1: random content, destination preallocated, "
           "every run's RAM checked byte for byte) in plaintext and over TLS: x509 "
           "certificates made for the run by certtool (ECDSA P-256), the same "
           "`tls-creds-x509` object text for both VMMs (`endpoint=client` on the source, "
           "`endpoint=server` with `verify-peer` on at the destination), `tls-creds` on both "
           "sides and `tls-hostname localhost` on the source. CPU seconds are user + system "
           "time of each VMM process from `migrate` to the end (/proc/PID/stat), divided by "
           "the GiB sent. Median (min..max).", ""]
    out += table(tls_scenarios, results)
    out += [""] + targets(tls_scenarios, results) + ["", READING, ""]
    return out


def run(ctx, repeat, log, jsonl, only=None):
    """Runs the TLS scenarios with ctx (its content must hold 1022 MiB);
    returns (scenarios, results)."""
    reason = certtool_skip_reason()
    tls_scenarios = [s for s in scenarios() if not only or s.key in only]
    if reason or not tls_scenarios:
        return [], {}
    if not ctx.qemu:
        for s in tls_scenarios:
            s.vmms = ("godwit",)
    pki, ctx.tls_dirs = make_certificates()
    results = {}
    try:
        run_all(tls_scenarios, repeat, ctx, jsonl, log, results, interleave=True)
    finally:
        pki.close()
    return tls_scenarios, results


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vm", default="build/vm/godwit-vm")
    parser.add_argument("--guest", default="build/guest/testguest.elf")
    parser.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"))
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    reason = certtool_skip_reason()
    if reason:
        log(f"not run: {reason}")
        return 1
    run_dir = os.path.join(args.results, time.strftime("%Y%m%d-%H%M%S") + "-tls")
    os.makedirs(run_dir, exist_ok=True)
    started, load = time.monotonic(), os.getloadavg()[0]
    log(f"results in {run_dir}; load {load:.2f}")
    ctx = argparse.Namespace(vm=args.vm, guest=args.guest, qemu=args.qemu,
                             migration_timeout=args.timeout, content=None)
    try:
        ctx.content = Content(1022 * MiB)
        with open(os.path.join(run_dir, "runs.jsonl"), "w") as jsonl:
            tls_scenarios, results = run(ctx, args.repeat, log, jsonl, args.only)
    finally:
        if ctx.content:
            ctx.content.close()
    lines = section(tls_scenarios, results)
    print("\n".join(lines))
    path = os.path.join(run_dir, "tls.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    failed = sum(not r["ok"] for per in results.values() for runs in per.values() for r in runs)
    log(f"wrote {path}; done in {(time.monotonic() - started) / 60:.1f} min, load "
        f"{load:.2f} -> {os.getloadavg()[0]:.2f}; {failed} failed run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

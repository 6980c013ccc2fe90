"""Tables, plots and docs/benchmarks.md from bench/compare.py's records.
Every figure is a median (min..max) over the runs that completed and whose
destination memory checked out; runs that did not are counted and listed
with their reason, never turned into figures."""
import os
import statistics
import subprocess

from runs import figures

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = {"godwit": "godwit", "qemu": "QEMU 7.2"}

# key, label, which way is better ("" = neither), scenarios it applies to (None = all)
METRICS = [
    ("mbs", "MB/s: ram.transferred / (total − setup)", "higher", None),
    ("covered_mbs", "guest RAM covered, MB/s: ram.total / (total − setup)", "higher", {"zero"}),
    ("total", "total time, ms", "lower", None),
    ("downtime", "downtime, ms (the VMM's own figure)", "lower", None),
    ("stop_to_resume", "source STOP → destination RESUME, ms (event timestamps)", "lower", None),
    ("setup", "setup time, ms", "lower", None),
    ("passes", "passes (ram.dirty-sync-count)", "", None),
    ("stopped_kib", "sent while stopped, KiB (ram.downtime-bytes)", "lower", None),
    ("transferred_mib", "transferred, MiB", "", None),
    ("predicted", "predicted downtime at switchover, ms (godwit only)", "", None),
    ("source_file_mib", "source's RAM file allocated after the migration, MiB", "lower",
     {"zero"}),
]


def num(value):
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 0.1 else f"{value:.2g}"


def values(runs, key):
    return [f[key] for f in map(figures, runs) if f.get(key) is not None]


def median(runs, key):
    v = values(runs, key)
    return statistics.median(v) if v else None


def spread(runs, key):
    v = values(runs, key)
    if not v:
        return "-"
    return f"{num(statistics.median(v))} ({num(min(v))}..{num(max(v))})"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.3g}"


def ok_runs(results, scenario, vmm):
    return [r for r in results.get(scenario.key, {}).get(vmm, []) if r["ok"]]


def all_runs(results, scenario, vmm):
    return results.get(scenario.key, {}).get(vmm, [])


def escape(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def run_count(results, scenario, vmm):
    if vmm not in scenario.vmms:
        return "not run"
    runs = all_runs(results, scenario, vmm)
    return f"{len([r for r in runs if r['ok']])}/{len(runs)} completed and checked"


def scenario_table(scenario, results):
    """The per-scenario table: metrics down, godwit, QEMU, ratio across."""
    lines = ["| | godwit | QEMU 7.2 | godwit/QEMU | better |", "| --- | --- | --- | --- | --- |"]
    lines.append(f"| runs | {run_count(results, scenario, 'godwit')} | "
                 f"{run_count(results, scenario, 'qemu')} | | |")
    for vmm, why in (scenario.skipped or {}).items():
        lines.append(f"| {NAMES[vmm]} | {escape(why)} | | | |")
    g, q = ok_runs(results, scenario, "godwit"), ok_runs(results, scenario, "qemu")
    for key, label, better, only in METRICS:
        if only and scenario.content not in only:
            continue
        if not values(g, key) and not values(q, key):
            continue
        lines.append(f"| {label} | {spread(g, key)} | {spread(q, key)} | "
                     f"{ratio(median(g, key), median(q, key))} | {better} |")
    failures = [r for vmm in ("godwit", "qemu") for r in all_runs(results, scenario, vmm)
                if not r["ok"]]
    for r in failures:
        lines.append(f"| **failed** {NAMES[r['vmm']]} run {r['rep'] + 1} | "
                     f"{escape(r['failure'])} | | | |")
    return lines


def summary_table(scenarios, results):
    head = "| scenario | controls |"
    for label in ("MB/s", "total ms", "downtime ms"):
        head += f" godwit {label} | QEMU {label} | godwit/QEMU |"
    lines = [head + " runs failed |", "|" + " --- |" * 12]
    for s in scenarios:
        g, q = ok_runs(results, s, "godwit"), ok_runs(results, s, "qemu")
        failed = sum(1 for vmm in ("godwit", "qemu") for r in all_runs(results, s, vmm)
                     if not r["ok"])
        row = f"| {s.title} | {s.controls} |"
        for key in ("mbs", "total", "downtime"):
            gcell = spread(g, key) if "godwit" in s.vmms else "not run"
            row += f" {gcell} | {spread(q, key)} | {ratio(median(g, key), median(q, key))} |"
        lines.append(row + f" {failed} |")
    return lines


def target_lines(scenarios, results):
    """godwit against issue 4's targets."""
    lines = []
    for s in scenarios:
        if not s.target:
            continue
        g = ok_runs(results, s, "godwit")
        if not g:
            lines.append(f"- {s.title}: {s.target}: no completed run")
            continue
        medians = {key: median(g, key) for key in ("mbs", "downtime", "total")}
        met = s.target_check(medians)
        lines.append(f"- {s.title}: target {s.target}; medians: {num(medians['mbs'])} MB/s, "
                     f"downtime {num(medians['downtime'])} ms, total {num(medians['total'])} ms: "
                     f"**{'met' if met else 'not met'}**")
    return lines


# limit key -> (scenario key and metric compared for godwit, the same for QEMU)
LIMIT_COMPARISONS = {
    "tcp1": (("filled-1g", "mbs"), ("filled-1g", "mbs")),
    "tcp2": (("multifd-2-none", "mbs"), ("multifd-2-none", "mbs")),
    "memcpy": (("filled-1g", "mbs"), ("filled-1g", "mbs")),
    "touch-cold-thp": (("cold-1g", "mbs"), ("cold-1g", "mbs")),
    "touch-cold-4k": (("cold-1g", "mbs"), ("cold-1g", "mbs")),
    "zeroscan": (("zero-2g", "covered_mbs"), ("zero-2g", "covered_mbs")),
}


def limits_table(limit_defs, limits, notes, scenarios, results):
    by_key = {s.key: s for s in scenarios}
    lines = ["| limit | MB/s | bounds | godwit compared | godwit MB/s | godwit fraction | "
             "QEMU compared | QEMU MB/s | QEMU fraction |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, label, bounds in limit_defs:
        value = limits.get(key)
        cells = [label, num(value) if value is not None else escape(notes.get(key, "-")),
                 bounds]
        for vmm, (skey, metric) in zip(("godwit", "qemu"),
                                       LIMIT_COMPARISONS.get(key, ((None, None),) * 2)):
            s = by_key.get(skey)
            if s is None or vmm not in s.vmms:
                cells += ["-", "-", "-"]
                continue
            m = median(ok_runs(results, s, vmm), metric)
            what = s.title + (" (RAM covered)" if metric == "covered_mbs" else "")
            cells += [what, num(m), f"{m / value:.2f}" if m is not None and value else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# --- plots (gnuplot) ---

def gnuplot(script, variables):
    assignments = "; ".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={v}"
                            for k, v in variables.items())
    subprocess.run(["gnuplot", "-e", assignments, os.path.join(HERE, script)], check=True,
                   capture_output=True, text=True)


def bar_data(path, scenarios, results, key):
    with open(path, "w") as f:
        f.write("# scenario godwit_median godwit_min godwit_max qemu_median qemu_min qemu_max\n")
        for s in scenarios:
            row = [f'"{s.short}"']
            for vmm in ("godwit", "qemu"):
                v = values(ok_runs(results, s, vmm), key)
                row += ([f"{statistics.median(v):.3f}", f"{min(v):.3f}", f"{max(v):.3f}"]
                        if v else ["NaN"] * 3)
            f.write(" ".join(row) + "\n")


def median_run(runs):
    """The run whose MB/s is the median (the lower middle for an even count)."""
    ranked = sorted(runs, key=lambda r: figures(r)["mbs"])
    return ranked[(len(ranked) - 1) // 2] if ranked else None


def timeline_data(path, scenario, results):
    """Two gnuplot data blocks (godwit, QEMU): ms, transferred MiB, remaining
    MiB of the median run; returns each block's title."""
    titles = []
    with open(path, "w") as f:
        for vmm in ("godwit", "qemu"):
            run = median_run(ok_runs(results, scenario, vmm))
            label = f"{NAMES[vmm]} (median run)"
            if run is None:   # no completed run: the first attempt, if any, shown as failed
                attempts = [r for r in all_runs(results, scenario, vmm) if r.get("samples")]
                run = attempts[0] if attempts else None
                label = f"{NAMES[vmm]} (failed run)" if run else f"{NAMES[vmm]}: no run"
            f.write(f"# {label}\n")
            for p in (run or {}).get("samples", []):
                # ram.remaining means nothing before the first dirty-bitmap sync
                remaining = f"{p['remaining'] / 2**20:.3f}" if p["passes"] else "NaN"
                f.write(f"{p['t'] * 1000:.1f} {p['transferred'] / 2**20:.3f} {remaining}\n")
            if not run or not run.get("samples"):
                f.write("NaN NaN NaN\n")
            f.write("\n\n")
            titles.append(label)
    return titles


def plots(scenarios, results, data_dir, png_dir):
    """Writes the PNGs into png_dir; returns {name: file name}."""
    os.makedirs(png_dir, exist_ok=True)
    for name in os.listdir(png_dir):
        if name.endswith(".png"):
            os.unlink(os.path.join(png_dir, name))
    made = {}
    for key, name, ylabel, title in (
            ("mbs", "throughput", "MB/s (log scale)", "Migration throughput"),
            ("stop_to_resume", "downtime", "ms (log scale)",
             "Downtime as the host sees it (source STOP to destination RESUME event)")):
        data = os.path.join(data_dir, f"bars-{key}.dat")
        bar_data(data, scenarios, results, key)
        out = os.path.join(png_dir, f"{name}.png")
        gnuplot("bars.gp", {"data": data, "out": out, "ylab": ylabel,
                            "plottitle": f"{title}: median, whiskers min..max"})
        made[name] = os.path.basename(out)
    for s in scenarios:
        data = os.path.join(data_dir, f"timeline-{s.key}.dat")
        g_title, q_title = timeline_data(data, s, results)
        out = os.path.join(png_dir, f"timeline-{s.key}.png")
        gnuplot("timeline.gp", {"data": data, "out": out, "plottitle": s.title,
                                "gtitle": g_title, "qtitle": q_title,
                                "has_godwit": int("godwit" in s.vmms)})
        made[f"timeline-{s.key}"] = os.path.basename(out)
    return made


# --- docs/benchmarks.md ---

def markdown(ctx, scenarios, results, limit_defs, limits, notes, made, png_rel, extra):
    out = ["# Benchmarks: godwit beside QEMU 7.2", "",
           f"Generated by `{ctx.command}` on {ctx.date} ({ctx.set_name} set, "
           f"{ctx.repeat} runs per scenario and VMM, {ctx.duration}). "
           "Do not edit: run it again. Raw samples (query-migrate every 50 ms, "
           "one JSON line per run) are in `bench/results/` (not committed).", "",
           "## Summary", "",
           "Median (min..max) over the runs that completed and whose destination memory "
           "matched. MB/s is 10^6 bytes/s of `ram.transferred` over total minus setup time; "
           "downtime is each VMM's own `downtime`. godwit/QEMU below 1 means godwit "
           "moved fewer MB/s (worse) or had less downtime (better).", ""]
    out += summary_table(scenarios, results)
    out += ["", "Where each is ahead (medians, godwit vs QEMU):", "",
            *extra.get("findings", []), "", "### Reading the figures", "",
            *extra.get("reading", []), ""]
    out += ["## Machine", ""] + [f"- {line}" for line in ctx.machine] + [""]
    out += ["## Method", ""] + ctx.method + [""]
    out += ["## Scenarios", ""]
    for n, s in enumerate(scenarios, 1):
        out += [f"### {n}. {s.title}", "", f"Controls: {s.controls}. {s.describe}", ""]
        out += scenario_table(s, results)
        out += ["", f"![timeline {s.key}]({png_rel}/{made[f'timeline-{s.key}']})", ""]
    out += ["## godwit against issue 4's targets", ""] + target_lines(scenarios, results) + [""]
    out += extra.get("sections", [])
    out += ["## The machine's limits, measured in the same run", "",
            "MB/s (10^6 bytes/s); a fraction is the VMM's median in the scenario named "
            "over the limit. A fraction above 1 means the VMM does not do the work the "
            "limit measures (godwit finds zero pages from file holes and never reads them).",
            ""]
    out += limits_table(limit_defs, limits, notes, scenarios, results)
    out += ["", "## Plots", "",
            f"![throughput]({png_rel}/{made['throughput']})", "",
            f"![downtime]({png_rel}/{made['downtime']})", ""]
    if extra.get("guest_rates"):
        out += ["## Boot and dirty-pass time (bench/guest_rates.py, same run)", "", "```",
                extra["guest_rates"].strip(), "```", ""]
    return "\n".join(out) + "\n"

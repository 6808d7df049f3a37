#!/usr/bin/env python3
"""bench_report.py — writes bench/REPORT.md and its plots from the output
of the benchmarks (`make bench` runs it; scripts/bench.sh).

    python3 scripts/bench_report.py --out bench LOG...

Each LOG is one benchmark's standard output. The benchmarks print, next to
their human-readable lines (bench/bench_util.h):

    @target ROW|FIGURE|PASS or MISS|BOUND     one row of DESIGN.md's targets
    @data SERIES|X|Y                          one point of a plot

The report names the machine, gives every row of DESIGN.md's "Performance
targets" with the same-run figure, its verdict and, where it applies, the
bound (a row no log measured says so), embeds the plots (SVG, drawn by
gnuplot when it is installed; without it the data tables stand alone) and
keeps each log's verdict lines. Exit status 0; the verdicts are the result.
"""
import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time

# DESIGN.md "Performance targets", in its order: key, what, target.
ROWS = [
    ("flush", "durable flush, 1,000 dirty of 100,000 keys (p50)",
     "<= 1.5x a raw LMDB single-record append; >= 10x faster than raw per-key LMDB puts"),
    ("flush_per_key", "the same, against raw per-key LMDB puts", ">= 10x faster"),
    ("flush_compaction", "the same, amortised with compaction",
     ">= 5x faster than raw per-key LMDB puts; no flush stalls behind a compaction"),
    ("poll_compaction", "polls while compactions run", "compaction off the flush path: p99 of working polls on/off <= 1.25x"),
    ("restart_flat", "restart to first applied event, read-through, 1 MiB -> 1 GiB", "flat (within 2x)"),
    ("restart_sqlite", "restart, read-through, at 8 MiB vs the SQLite whole-row way", ">= 20x faster"),
    ("restart_load_all", "restart, load-all mode", "<= 1.25x the same-run bound (raw cursor walk + the same map build)"),
    ("recovery", "recovery as history grows 10k -> 1M events", "flat (snapshot + bounded tail)"),
    ("larger_than_ram", "state larger than RAM (a real cgroup memory cap)",
     "keeps working and restarts in O(tail) with a state 4x its memory limit"),
    ("publish", "publish through opstate_nats vs raw js_PublishMsgAsync, same message", ">= 0.95x"),
    ("replay", "replay with decode + apply vs a raw ordered push read of the same stream", ">= 0.9x"),
    ("replay_pull", "the same vs the pull-with-acks way", ">= 2x"),
    ("durable", "durable (pull) consumer driver, apply + ack, vs raw pull with per-message acks", ">= 1.5x"),
    ("codec", "codec encode + decode of 1 KiB events vs CRC32C alone over the same bytes", ">= 0.75x"),
    ("kv_apply", "KV fold apply vs a bare open-addressing hash map", "within 1.5x"),
    ("kv_collisions", "KV fold apply of keys crafted to collide", "linear (seeded hash)"),
    ("footprint", "core footprint, Cortex-M4 -Os, no malloc",
     "decision + cursor + resume check + codec + ids < 8 KiB .text"),
]

# Plots: file, title, x label, y label, the axes on a log scale ("x", "xy" or ""), the series drawn.
PLOTS = [
    ("recovery", "Recovery time as history grows", "events in the history", "ms to the first new event", "x",
     ["recovery_snapshot_tail", "recovery_snapshot_compacted", "recovery_full_replay"]),
    ("restart", "Restart time as the state grows", "state size (MiB)", "ms to the first applied event", "xy",
     ["restart_read_through", "restart_load_all", "restart_sqlite"]),
    ("flush_latency", "Flush latency distribution", "percentile", "ms per flush", "",
     ["flush_compaction_off", "flush_compaction_on"]),
]

LINE = re.compile(r"^@(target|data) (.*)$")


def read_logs(paths):
    """Targets {row: (figure, verdict, bound, log)}, data {series: [(x, y)]},
    and the human verdict lines of each log."""
    targets, data, lines = {}, {}, {}
    for path in paths:
        name = os.path.basename(path)
        lines[name] = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                raw = raw.rstrip("\n")
                m = LINE.match(raw)
                if not m:
                    if re.search(r"\b(PASS|MISS|SKIP)\b", raw):
                        lines[name].append(raw)
                    continue
                fields = m.group(2).split("|")
                if m.group(1) == "target" and len(fields) >= 3:
                    row = fields[0]
                    bound = fields[3] if len(fields) > 3 else ""
                    targets.setdefault(row, []).append((fields[1], fields[2], bound, name))
                elif m.group(1) == "data" and len(fields) == 3:
                    try:
                        data.setdefault(fields[0], []).append((float(fields[1]), float(fields[2])))
                    except ValueError:
                        pass
    return targets, data, lines


def machine():
    """One paragraph naming the machine and the versions measured."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = ""
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            load = f"; load average at the end {' '.join(f.read().split()[:3])}"
    except OSError:
        pass
    return (f"{platform.node()}: {platform.system()} {platform.release()} {platform.machine()}, {cpu}, "
            f"{os.cpu_count()} CPUs{mem}{load}.")


def plot(out_dir, spec, data):
    """Draws one plot as SVG with gnuplot; returns the file name or None."""
    name, title, xl, yl, logaxes, series = spec
    present = [s for s in series if data.get(s)]
    if not present or not shutil.which("gnuplot"):
        return None
    dat = os.path.join(out_dir, f"{name}.dat")
    with open(dat, "w", encoding="utf-8") as f:
        for s in present:
            for x, y in sorted(data[s]):
                f.write(f"{x} {y}\n")
            f.write("\n\n")
    svg = f"{name}.svg"
    cmds = [
        "set terminal svg size 720,420 dynamic font 'sans,11'",
        f"set output '{os.path.join(out_dir, svg)}'",
        f"set title '{title}'", f"set xlabel '{xl}'", f"set ylabel '{yl}'",
        "set key top left", "set grid",
    ]
    if logaxes:
        cmds.append(f"set logscale {logaxes}")
    parts = [f"'{dat}' index {i} with linespoints title '{s.replace('_', ' ')}'" for i, s in enumerate(present)]
    cmds.append("plot " + ", ".join(parts))
    r = subprocess.run(["gnuplot"], input="\n".join(cmds) + "\n", text=True, capture_output=True, check=False)
    os.remove(dat)
    return svg if r.returncode == 0 else None


def target_table(targets):
    """The markdown rows of DESIGN.md's targets with this run's figures."""
    out = ["| what | target | this run | verdict | bound |", "|---|---|---|---|---|"]
    for key, what, target in ROWS:
        for figure, verdict, bound, log in targets.get(key, [("not measured in this run", "-", "", "")]):
            out.append(f"| {what} | {target} | {figure} | **{verdict}** | {bound} |")
    return out


def data_tables(data):
    out = []
    for series in sorted(data):
        pts = ", ".join(f"{x:g}: {y:.3g}" for x, y in sorted(data[series]))
        out.append(f"- `{series}` (x: y): {pts}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench", help="directory of REPORT.md and the plots")
    ap.add_argument("--quick", action="store_true", help="the logs come from a quick run")
    ap.add_argument("logs", nargs="+")
    a = ap.parse_args()
    targets, data, lines = read_logs(a.logs)
    os.makedirs(a.out, exist_ok=True)
    doc = ["# opstate benchmark report", "",
           f"Made by `make bench{' QUICK=1' if a.quick else ''}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
           " (scripts/bench_report.py). Every figure is a ratio against a baseline measured in the same run; "
           "absolute times are context only.", "", f"Machine: {machine()}", "",
           "## Targets (DESIGN.md \"Performance targets\")", ""]
    doc += target_table(targets)
    doc += ["", "## Plots", ""]
    for spec in PLOTS:
        svg = plot(a.out, spec, data)
        doc.append(f"![{spec[1]}]({svg})" if svg else f"({spec[1]}: no data in this run, or no gnuplot)")
        doc.append("")
    doc += ["## Data behind the plots", ""] + data_tables(data)
    doc += ["", "## Verdict lines, as each benchmark printed them", ""]
    for name, ls in lines.items():
        doc += [f"### {name}", "", "```"] + ls + ["```", ""]
    with open(os.path.join(a.out, "REPORT.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(doc) + "\n")
    misses = sum(1 for rows in targets.values() for r in rows if r[1] == "MISS")
    print(f"bench report: {os.path.join(a.out, 'REPORT.md')} ({len(targets)} rows measured, {misses} MISS)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The scaling chart: time and peak RSS of each tool and step against the number of files.

    benches/scale-chart.py RESULTS.csv... -o CHART.svg

Reads the rows `benches/scale.sh` appends to its results file (files, directories, tool,
step, seconds, MiB, version, date) and draws two panels, both against the file count on a
log scale: wall time (log scale) and peak RSS. One colour per step, one line style per tool.
Where a step was measured more than once at a file count, the last row counts.
"""

import argparse
import csv
import math
import sys

STEPS = ["initial backup", "unchanged backup", "night-2 backup", "restore", "check", "prune"]
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
DASHES = {"stowage": "", "restic": "6,3", "borg": "2,3", "rustic": "8,2,2,2"}
PANEL_W, PANEL_H, MARGIN = 460, 340, 60


def load(paths):
    points = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row["step"] not in STEPS:
                    continue
                key = (row["tool"], row["step"])
                points.setdefault(key, {})[int(row["files"])] = (
                    float(row["seconds"]),
                    float(row["mib"]),
                )
    return points


def log_ticks(lo, hi):
    start, end = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0**e for e in range(start, end + 1)]


def label(value):
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def panel(x0, title, points, measure, log_y, unit):
    files = sorted({n for series in points.values() for n in series})
    values = [v[measure] for series in points.values() for v in series.values()]
    if not files or not values:
        return ""
    fx = log_ticks(files[0], files[-1])
    lx0, lx1 = math.log10(fx[0]), math.log10(fx[-1])
    if log_y:
        fy = log_ticks(max(min(values), 0.01), max(values))
        ly0, ly1 = math.log10(fy[0]), math.log10(fy[-1])
    else:
        step = 10 ** math.floor(math.log10(max(values)))
        top = math.ceil(max(values) / step) * step
        fy = [i * step for i in range(int(top / step) + 1)]
        ly0, ly1 = 0.0, top

    def sx(n):
        return x0 + MARGIN + (math.log10(n) - lx0) / ((lx1 - lx0) or 1) * (PANEL_W - MARGIN - 10)

    def sy(v):
        y = math.log10(max(v, fy[0])) if log_y else v
        return 30 + (1 - (y - ly0) / ((ly1 - ly0) or 1)) * (PANEL_H - 70)

    out = [f'<text x="{x0 + PANEL_W / 2}" y="18" text-anchor="middle" font-weight="bold">{title}</text>']
    for t in fx:
        out.append(f'<line x1="{sx(t):.1f}" y1="30" x2="{sx(t):.1f}" y2="{PANEL_H - 40}" stroke="#ddd"/>')
        out.append(f'<text x="{sx(t):.1f}" y="{PANEL_H - 25}" text-anchor="middle">{label(t)}</text>')
    for t in fy:
        out.append(f'<line x1="{x0 + MARGIN}" y1="{sy(t):.1f}" x2="{x0 + PANEL_W - 10}" y2="{sy(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + MARGIN - 5}" y="{sy(t) + 4:.1f}" text-anchor="end">{label(t)}{unit}</text>')
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{PANEL_H - 8}" text-anchor="middle">files</text>')
    for (tool, step), series in sorted(points.items()):
        colour = COLOURS[STEPS.index(step)]
        dash = DASHES.get(tool, "1,1")
        coords = " ".join(f"{sx(n):.1f},{sy(v[measure]):.1f}" for n, v in sorted(series.items()))
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-dasharray="{dash}"><title>{tool}, {step}</title></polyline>'
        )
        for n, v in sorted(series.items()):
            out.append(f'<circle cx="{sx(n):.1f}" cy="{sy(v[measure]):.1f}" r="2.5" fill="{colour}"/>')
    return "\n".join(out)


def legend(y, tools):
    out, x = [], MARGIN
    for step, colour in zip(STEPS, COLOURS):
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 20}" y2="{y}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{x + 24}" y="{y + 4}">{step}</text>')
        x += 140
    x = MARGIN
    for tool in tools:
        out.append(
            f'<line x1="{x}" y1="{y + 20}" x2="{x + 30}" y2="{y + 20}" stroke="#333" stroke-width="2" '
            f'stroke-dasharray="{DASHES.get(tool, "1,1")}"/>'
        )
        out.append(f'<text x="{x + 34}" y="{y + 24}">{tool}</text>')
        x += 120
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    points = load(args.results)
    if not points:
        sys.exit("no rows of the charted steps in the results")
    tools = sorted({tool for tool, _ in points}, key=lambda t: list(DASHES).index(t) if t in DASHES else 99)
    width, height = 2 * PANEL_W + 20, PANEL_H + 70
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        panel(0, "wall time", points, 0, True, " s"),
        panel(PANEL_W + 20, "peak RSS", points, 1, False, " MiB"),
        legend(PANEL_H + 15, tools),
        "</svg>",
    ]
    with open(args.output, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()

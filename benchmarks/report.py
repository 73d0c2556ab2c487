"""The report of the fan-out benchmark: ratios within each round, two tables and a chart.

``fanout.py`` measures; ``summarize`` turns its runs into what the report shows, and is saved
in the same JSON, so every figure printed or drawn can be found there. The headline is a ratio
taken within one round, where every server met the same machine within a minute or two:
a server's delivery lag divided by the floor's (one bare ``send()`` a client) and by
python-websockets'. Over the rounds it gives the median and the spread (min-max).

    python benchmarks/report.py                     # tables of benchmarks/results/fanout.json
    python benchmarks/report.py RESULTS.json --chart lag.png
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

REFERENCES = ("floor", "websockets")
RATIO_FIGURES = ("lag_ms_p50", "lag_ms_p99", "fanout_ms_mean")
SERVER_FIGURES = ("fanout_ms_mean", "lag_ms_p50", "lag_ms_p99", "VmRSS_per_client_kb")
COLORS = {"app": "C0", "naive": "C1", "websockets": "C2", "floor": "C3"}


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min and max of the values over the rounds, and the values themselves."""
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "rounds": [round(value, 2) for value in values],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per client count: each server's figures and each ratio, as spreads over the rounds."""
    rounds: dict[int, dict[int, dict[str, Any]]] = collections.defaultdict(dict)
    for run in runs:
        if "error" not in run:
            rounds[run["clients_asked"]].setdefault(run["round"], {})[run["server"]] = run
    servers = list(dict.fromkeys(run["server"] for run in runs))
    summary: dict[str, list[dict[str, Any]]] = {"servers": [], "ratios": []}
    for clients, by_round in sorted(rounds.items()):
        for kind in servers:
            mine = [one[kind] for one in by_round.values() if kind in one]
            if mine:
                summary["servers"].append(server_row(kind, clients, mine))
        for reference in REFERENCES:
            for kind in servers:
                pairs = [
                    (one[kind], one[reference])
                    for one in by_round.values()
                    if {kind, reference} <= one.keys()
                ]
                if kind not in (reference, "floor") and pairs:
                    summary["ratios"].append(ratio_row(f"{kind}/{reference}", clients, pairs))
    return summary


def server_row(kind: str, clients: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "server": kind,
        "clients_asked": clients,
        "clients_min": min(run["clients"] for run in runs),
        "missed_ticks": sum(run["missed_ticks"] for run in runs),
    }
    for figure in SERVER_FIGURES:
        values = [run[figure] for run in runs if run[figure] is not None]
        row[figure] = spread(values) if values else None
    return row


def ratio_row(name: str, clients: int, pairs: list[tuple[dict, dict]]) -> dict[str, Any]:
    row: dict[str, Any] = {"ratio": name, "clients_asked": clients}
    for figure in RATIO_FIGURES:
        values = [run[figure] / ref[figure] for run, ref in pairs if run[figure] and ref[figure]]
        row[figure] = spread(values) if values else None
    return row


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    with open("/proc/cpuinfo") as cpuinfo:
        models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model n")]
    return {
        "cpu": models[0] if models else "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **{name: importlib.metadata.version(name) for name in ("tornado", "websockets")},
    }


def title(about: dict[str, Any], rounds: int, ticks: int, interval: float) -> str:
    return (
        f"{about['cpu']}, {about['cores']} cores, Python {about['python']}, "
        f"Tornado {about['tornado']}, websockets {about['websockets']}: "
        f"{rounds} rounds of {ticks} ticks of {interval} s"
    )


# Tables


def markdown(rows: list[list[str]]) -> str:
    """A Markdown table, right-aligned, that also reads as plain text."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def with_spread(figure: dict[str, Any] | None, form: str) -> str:
    if figure is None:
        return "-"
    low, high = form.format(figure["min"]), form.format(figure["max"])
    return f"{form.format(figure['median'])} ({low}-{high})"


def ratio_table(summary: dict[str, Any]) -> str:
    """Each ratio's median over the rounds, with its min-max in brackets."""
    rows = [["clients", "ratio", "lag p50", "lag p99", "fan-out"]]
    for row in summary["ratios"]:
        figures = [with_spread(row[figure], "{:.2f}") for figure in RATIO_FIGURES]
        rows.append([f"{row['clients_asked']:,}", row["ratio"], *figures])
    return markdown(rows)


def server_table(summary: dict[str, Any]) -> str:
    """Each server's figures, median over the rounds; missed ticks are added up."""
    rows = [["server", "clients", "fan-out ms", "lag p50 ms", "lag p99 ms", "missed", "KB/conn"]]
    for row in summary["servers"]:
        clients = f"{row['clients_asked']:,}"
        if row["clients_min"] < row["clients_asked"]:
            clients = f"{row['clients_min']:,} of {clients}"
        figures = [
            "-" if row[figure] is None else f"{row[figure]['median']:.1f}"
            for figure in SERVER_FIGURES
        ]
        rows.append([row["server"], clients, *figures[:3], f"{row['missed_ticks']:,}", figures[3]])
    return markdown(rows)


def tables(summary: dict[str, Any]) -> str:
    return f"{ratio_table(summary)}\n\n{server_table(summary)}"


# The chart


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    """Left: lag as a multiple of the floor's. Right: lag in ms. Bars: p50 light, p99 dark."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (ratio_axes, lag_axes) = pyplot.subplots(1, 2, figsize=(11, 4.5))
    to_floor = {
        (row["ratio"].split("/")[0], row["clients_asked"]): row
        for row in summary["ratios"]
        if row["ratio"].endswith("/floor")
    }
    absolute = {(row["server"], row["clients_asked"]): row for row in summary["servers"]}
    bars(ratio_axes, to_floor)
    bars(lag_axes, absolute)
    ratio_axes.axhline(1, color="grey", linestyle=":", label="floor = 1")
    ratio_axes.set(title="Lag ÷ the floor's lag in the same round", ylabel="ratio")
    lag_axes.set(title="Delivery lag after the tick's turn", ylabel="ms")
    for axes in (ratio_axes, lag_axes):
        axes.grid(True, axis="y", alpha=0.3)
        axes.legend(fontsize="small")
    note = "bars: median over the rounds, light p50, dark p99; whiskers: min-max"
    figure.suptitle(f"{title}\n{note}", fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def bars(axes: Any, rows: dict[tuple[str, int], dict[str, Any]]) -> None:
    """One group of bars per client count, a pair (p50, p99) per server; whiskers: min-max."""
    kinds = list(dict.fromkeys(kind for kind, _ in rows))
    sizes = sorted({clients for _, clients in rows})
    width = 0.8 / (2 * len(kinds))
    for k, kind in enumerate(kinds):
        color = COLORS.get(kind, "C4")
        for p, (figure, alpha) in enumerate((("lag_ms_p50", 0.45), ("lag_ms_p99", 1.0))):
            found = [(i, rows[kind, n][figure]) for i, n in enumerate(sizes) if (kind, n) in rows]
            found = [(i, value) for i, value in found if value is not None]
            offsets = [i - 0.4 + width * (2 * k + p + 0.5) for i, _ in found]
            medians = [value["median"] for _, value in found]
            errors = [
                [value["median"] - value["min"] for _, value in found],
                [value["max"] - value["median"] for _, value in found],
            ]
            label = kind if p else None
            axes.bar(offsets, medians, width, yerr=errors, color=color, alpha=alpha, label=label)
    axes.set_xticks(range(len(sizes)), [f"{n:,} clients" for n in sizes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results", nargs="?", type=Path, default=Path(__file__).parent / "results" / "fanout.json"
    )
    parser.add_argument("--chart", type=Path, help="draw the chart to this PNG too")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    summary = summarize(results["runs"])
    print(tables(summary))
    if args.chart:
        plot(summary, args.chart, results.get("title", ""))


if __name__ == "__main__":
    main()

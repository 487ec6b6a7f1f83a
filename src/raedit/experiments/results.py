"""Where experiments put what they measured: `<out>/<name>.{json,md,png}`, each with the command that made it."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch

from raedit.core.files import write_json, write_text


def command_line() -> str:
    """The command as typed (program name shortened to `raedit`)."""
    return " ".join(["raedit", *sys.argv[1:]]) if Path(sys.argv[0]).name == "raedit" else " ".join(sys.argv)


def write_results(out: Path, name: str, title: str, summary: str, columns: list[str], rows: list[list],
                  started: float, extra: dict | None = None) -> tuple[Path, Path]:
    """`<out>/<name>.json` (rows, command, machine, wall time since `started`, a `time.time()`) and `<out>/<name>.md`
    (a table); the caller writes the PNG."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "experiment": name, "title": title, "summary": summary, "command": command_line(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "wall_minutes": round((time.time() - started) / 60, 1), "columns": columns, "rows": rows, **(extra or {}),
    }
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    write_json(json_path, record)
    write_text(md_path, render_markdown(record))
    return json_path, md_path


def render_markdown(record: dict) -> str:
    """The page of a results record: title, summary, command, the table, any further `tables` (title ->
    {"columns", "rows"}) and the plot."""
    wall = f"; {record['wall_minutes']} min" if "wall_minutes" in record else ""
    lines = [f"# {record['title']}", "", record["summary"], "",
             f"Command: `{record['command']}` ({record['date']}, {record['machine']}{wall})", ""]
    lines += _table(record["columns"], record["rows"])
    for title, table in record.get("tables", {}).items():
        lines += ["", f"## {title}", "", *_table(table["columns"], table["rows"])]
    lines += ["", f"![{record['experiment']}]({record['experiment']}.png)", ""]
    return "\n".join(lines)


def _table(columns: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns),
            *("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def bar_plot(path: Path, groups: dict[str, list[float]], labels: list[str], ylabel: str, title: str) -> None:
    """One bar per label for each group of values (e.g. {"FID": [...], "rFID": [...]}), values written on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1.6 + 1.5 * len(labels) * len(groups) ** 0.5, 3.8))
    width = 0.8 / len(groups)
    for index, (group, values) in enumerate(groups.items()):
        positions = [i + (index - (len(groups) - 1) / 2) * width for i in range(len(labels))]
        bars = axis.bar(positions, values, width, label=group)
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
    axis.set_xticks(range(len(labels)), labels, fontsize=8)
    axis.set(ylabel=ylabel, title=title)
    if len(groups) > 1:
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def line_plots(path: Path, curves: dict[str, list[tuple[float, ...]]], xlabel: str, ylabels: list[str],
               title: str) -> None:
    """One panel per y label; in each, one line per curve through its points (x, y_1, y_2, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(ylabels), figsize=(5.2 * len(ylabels), 4.2), squeeze=False)
    for panel, (axis, ylabel) in enumerate(zip(axes[0], ylabels)):
        for label, points in curves.items():
            axis.plot([point[0] for point in points], [point[panel + 1] for point in points], marker="o",
                      label=label)
        axis.set(xlabel=xlabel, ylabel=ylabel)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)

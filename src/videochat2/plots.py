"""The pictures a run leaves beside its numbers: training curves, and evaluation variants side by side.

    python -m videochat2.plots outputs/default          # curves.png in every stage directory of the run

Drawn on Agg canvases directly, so plotting never changes the process-wide matplotlib backend of a caller.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every numeric column of a metrics.csv as (step, value) points, empty cells skipped."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            step = int(float(row["step"]))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def curve_panels(series: dict[str, list[tuple[int, float]]]) -> dict[str, list[str]]:
    """Which columns share a panel: the losses, the learning rates, the validation metrics."""
    panels = {
        "loss": [k for k in series if k.startswith("train/")],
        "learning rate": [k for k in series if k.startswith("lr")],
        "validation": [k for k in series if k.startswith("val/")],
    }
    return {name: keys for name, keys in panels.items() if keys}


def plot_training_curves(metrics_csv: str | Path, out: str | Path, title: str) -> Path:
    """One panel per kind of curve (see `curve_panels`), steps on the x axis."""
    series = read_metrics(metrics_csv)
    panels = curve_panels(series)
    if not panels:
        raise ValueError(f"{metrics_csv} holds no train/, lr or val/ column to plot")
    fig = Figure(figsize=(5.0 * len(panels), 3.8))
    FigureCanvasAgg(fig)
    for i, (name, keys) in enumerate(panels.items(), start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for key in sorted(keys):
            steps, values = zip(*series[key])
            ax.plot(steps, values, label=key, marker="." if len(steps) < 20 else None)
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return Path(out)


def read_variants(eval_dir: str | Path, benchmark: str) -> dict[str, dict]:
    """The per-task results of every evaluation of `benchmark` in a run's eval/ directory, by variant name."""
    variants = {}
    for path in sorted(Path(eval_dir).glob(f"{benchmark}*/results.json")):
        name = path.parent.name
        if name != benchmark and not name.startswith(f"{benchmark}-"):
            continue
        results = json.loads(path.read_text())
        if "tasks" in results:
            variants[name.removeprefix(benchmark).lstrip("-") or "full"] = results
    return variants


def plot_variants(eval_dir: str | Path, benchmark: str, title: str) -> Path | None:
    """Grouped bars per task, one colour per variant (full, blind, 1 frame, oracle, ...); None if fewer than two."""
    variants = read_variants(eval_dir, benchmark)
    if len(variants) < 2:
        return None
    tasks = list(next(iter(variants.values()))["tasks"]) + ["macro"]
    width = 0.8 / len(variants)
    fig = Figure(figsize=(max(7.0, 0.9 * len(tasks) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (name, results) in enumerate(variants.items()):
        scores = [results["tasks"].get(t, {}).get("acc", math.nan) for t in tasks[:-1]] + [results["avg"]]
        ax.bar([x + (i - (len(variants) - 1) / 2) * width for x in range(len(tasks))], scores, width, label=name)
    ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(eval_dir) / f"{benchmark}-variants.png"
    fig.savefig(out, dpi=100)
    return out


def plot_run(run_dir: str | Path) -> list[Path]:
    """curves.png in every stage directory (and sweep job) of a run that has a metrics.csv."""
    run_dir = Path(run_dir)
    written = []
    for metrics in sorted(run_dir.glob("stage[123]/**/metrics.csv")):
        title = f"run {run_dir.name}, {metrics.parent.relative_to(run_dir).as_posix()}"
        written.append(plot_training_curves(metrics, metrics.parent / "curves.png", title))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videochat2.plots", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (outputs/<run_name>)")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        written = plot_run(run_dir)
        if not written:
            parser.error(f"{run_dir}: no stage directory with a metrics.csv")
        print("\n".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

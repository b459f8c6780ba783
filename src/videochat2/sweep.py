"""One table for a sweep: `python -m videochat2.sweep outputs/<run_name>/stage3`.

One row per job directory below the stage directory (a job counts once it has left a checkpoint, a
summary or Hydra's record of its overrides, so a job that failed early still shows): the overrides that
differ between jobs (from each job's `.hydra/overrides.yaml`; those all jobs share are printed once above
the table), whether it finished, its steps and wall time and final metrics (`summary.json`), and the
accuracy of every MVBench-format evaluation whose `results.json` records that job's checkpoint. An
evaluation made before the checkpoint last changed shows as `stale`. The table is printed and written
beside the jobs as `sweep_summary.csv` and `sweep_summary.md`.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from videochat2.run_layout import STAGE_NAME, RunLayout, StageDir

OVERRIDES = Path(".hydra") / "overrides.yaml"
# Files that show a directory below stage<N>/ is a job that started.
JOB_MARKERS = (str(OVERRIDES), "summary.json", "checkpoints/last.ckpt")


@dataclass
class JobRow:
    """What is known of one job: its sub-directory, overrides, summary and matched evaluations."""

    job: str
    overrides: dict[str, str] | None
    summary: dict | None
    evals: dict[str, float | str] = field(default_factory=dict)


def stage_of(path: Path) -> StageDir:
    """The stage directory `outputs/<run_name>/stage<N>` that `path` names, or a one-line error."""
    match = STAGE_NAME.fullmatch(path.name)
    if match is None or not path.is_dir():
        raise ValueError(f"{path}: expected a stage directory of a run, such as outputs/<run_name>/stage3")
    return StageDir(path, int(match.group(1)), RunLayout(path.parent.parent, path.parent.name))


def job_dirs(stage_dir: StageDir) -> list[StageDir]:
    """Every job below the stage directory that started, in the order of their sub-directories."""
    found = {
        marker_path.parents[len(Path(marker).parts) - 1]
        for marker in JOB_MARKERS
        for marker_path in stage_dir.path.glob(f"*/**/{marker}")
    }
    ordered = sorted(found, key=lambda p: [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in p.parts])
    return [StageDir(p, stage_dir.stage, stage_dir.run) for p in ordered]


def read_overrides(job: StageDir) -> dict[str, str] | None:
    """`key=value` overrides Hydra recorded for the job (None: no readable record)."""
    try:
        entries = yaml.safe_load((job.path / OVERRIDES).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(entries, list):
        return None
    return dict(str(e).split("=", 1) if "=" in str(e) else (str(e), "") for e in entries)


def read_summary(job: StageDir) -> dict | None:
    try:
        summary = json.loads(job.summary.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def evaluations(stage_dir: StageDir, jobs: Sequence[StageDir]) -> dict[Path, dict[str, float | str]]:
    """Per job directory: {evaluation folder: accuracy, or `stale`} for the results that name its checkpoint."""
    by_checkpoint = {job.last_checkpoint.resolve(): job for job in jobs}
    found: dict[Path, dict[str, float | str]] = {}
    eval_root = stage_dir.run.root / "eval"
    for path in sorted(eval_root.glob("**/results.json")):
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        settings = results.get("settings") if isinstance(results, dict) else None
        if not isinstance(settings, dict) or not isinstance(settings.get("checkpoint"), str):
            continue
        job = by_checkpoint.get(stage_dir.run.absolute(settings["checkpoint"]).resolve())
        if job is None or not isinstance(results.get("avg"), (int, float)):
            continue
        tag = re.escape("-".join(("-job", *job.job.parts)))
        name = re.sub(rf"{tag}(?=-|$)", "", path.parent.relative_to(eval_root).as_posix())
        found.setdefault(job.path, {})[name] = results["avg"] if _current(settings, job) else "stale"
    return found


def _current(settings: dict, job: StageDir) -> bool:
    """Whether the job's checkpoint has the size and mtime the evaluation recorded for it."""
    recorded = (settings.get("init_from") or [[None]])[-1]
    if len(recorded) < 3 or not job.last_checkpoint.is_file():
        return False
    stat = job.last_checkpoint.stat()
    return [stat.st_size, stat.st_mtime_ns] == list(recorded[1:3])


def summarize(stage_path: str | Path) -> list[JobRow]:
    """One row per job of the sweep under `stage_path`; a one-line error when it holds none."""
    stage_dir = stage_of(Path(stage_path))
    jobs = job_dirs(stage_dir)
    if not jobs:
        raise ValueError(
            f"{stage_dir.path}: no sweep jobs below it (a job directory holds {OVERRIDES} or summary.json)"
        )
    evals = evaluations(stage_dir, jobs)
    return [JobRow(job.job.as_posix(), read_overrides(job), read_summary(job), evals.get(job.path, {})) for job in jobs]


def table(rows: Sequence[JobRow]) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """(header, cells, overrides every job shares): swept keys, summary and metrics, evaluations as columns."""
    known = [r.overrides for r in rows if r.overrides is not None]
    keys = list(dict.fromkeys(k for o in known for k in o))
    shared = {k: known[0][k] for k in keys if all(o.get(k, None) == known[0].get(k) for o in known)}
    swept = [k for k in keys if k not in shared or len(known) < len(rows)]
    metrics = sorted({k for r in rows for k in ((r.summary or {}).get("metrics") or {})})
    variants = sorted({k for r in rows for k in r.evals})
    header = ["job", *swept, "finished", "steps", "wall_time_s", *metrics, *(f"eval {v}" for v in variants)]
    cells = []
    for row in rows:
        summary = row.summary or {}
        values = summary.get("metrics") or {}
        cells.append(
            [
                row.job,
                *(_swept(row.overrides, k) for k in swept),
                "yes" if summary.get("finished") else "no",
                _cell(summary.get("steps")),
                _cell(summary.get("wall_time_s")),
                *(_cell(values.get(k)) for k in metrics),
                *(_cell(row.evals.get(v)) for v in variants),
            ]
        )
    return header, cells, {} if len(known) < len(rows) else shared


def _swept(overrides: dict[str, str] | None, key: str) -> str:
    if overrides is None:
        return "?"
    return overrides.get(key, "")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(header: list[str], cells: list[list[str]], shared: dict[str, str]) -> str:
    lines = [f"Overrides of every job: {' '.join(f'`{k}={v}`' for k, v in shared.items())}", ""] if shared else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_summary(stage_path: str | Path) -> str:
    """Write sweep_summary.csv and sweep_summary.md into the stage directory; returns the Markdown."""
    header, cells, shared = table(summarize(stage_path))
    out = Path(stage_path)
    with open(out / "sweep_summary.csv", "w", newline="") as file:
        csv.writer(file).writerows([header, *cells])
    text = markdown(header, cells, shared)
    (out / "sweep_summary.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videochat2.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("stage_dir", type=Path, help="the stage directory of a sweep (outputs/<run_name>/stage3)")
    args = parser.parse_args(argv)
    try:
        print(write_summary(args.stage_dir), end="")
    except (ValueError, OSError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"written: {args.stage_dir / 'sweep_summary.csv'}, {args.stage_dir / 'sweep_summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

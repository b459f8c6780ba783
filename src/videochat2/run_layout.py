"""Where every file of a run lives, and which checkpoints make up each stage's model.

    <output_root>/<run_name>/stage<N>/[<job>/]      a stage directory (a sweep job adds its sub-directory)
        config.yaml, model_spec.json, load_report.json, summary.json, metrics.csv, skipped_media.txt
        checkpoints/last.ckpt

A stage checkpoint holds only what that stage trained, so a stage's model is its initialisation chain (the
checkpoints it started from, recorded in its `model_spec.json` as `init_from`) followed by its own
`last.ckpt`. `model.init_from=auto` chains the earlier stages of the same run: for a sweep job, the same
job of an earlier sweep when there is one, else the plain earlier stage. This module is the one owner of
those rules; training, evaluation, chat and export all ask it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from videochat2.spec import ModelSpec, read_spec, write_spec

STAGE_NAME = re.compile(r"stage([123])")
SPEC_FILE = "model_spec.json"


class RunLayoutError(FileNotFoundError):
    """A run, stage or checkpoint that is not where the layout says it should be; the message says what to run."""


@dataclass(frozen=True)
class StageDir:
    """One trained (or training) stage: its directory, its stage number and the run it belongs to."""

    path: Path
    stage: int
    run: RunLayout

    @property
    def job(self) -> Path | None:
        """The sweep sub-directory (e.g. `0`, `ablation_lora/1`); None for a plain run, or for a sweep whose
        directory lies outside the run's (its jobs then chain the run's plain earlier stages)."""
        base = (self.run.root / f"stage{self.stage}").resolve()
        path = self.path.resolve()
        if not path.is_relative_to(base):
            return None
        relative = path.relative_to(base)
        return relative if relative.parts else None

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.ckpt"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def spec_file(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def load_report(self) -> Path:
        return self.path / "load_report.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    def is_trained(self) -> bool:
        return self.last_checkpoint.exists()

    def finished_summary(self) -> dict | None:
        """The summary of a run that finished here, if any (an unreadable one, cut by a kill, is none)."""
        try:
            summary = json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) and summary.get("finished") else None

    def write_spec(self, spec: ModelSpec, init_from: Sequence[str | Path]) -> None:
        """model_spec.json: the spec and the checkpoints this stage started from, relative to the output root."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_spec(spec, self.spec_file, init_from=[self.run.relative(p) for p in init_from])

    def read_spec(self) -> tuple[ModelSpec, list[Path]]:
        """The spec and the recorded initialisation chain.

        Runs from before model_spec.json existed are read from their resolved config.yaml (plain YAML, its
        component sections allow-listed like a spec), with the `auto` chain they were trained with.
        """
        if self.spec_file.is_file():
            spec, data = read_spec(self.spec_file)
            return spec, [self.run.absolute(p) for p in data.get("init_from", [])]
        if self.config.is_file():
            return legacy_spec(self.config), self.run.auto_chain(self.stage, self.job)
        raise RunLayoutError(f"{self.path} has no {SPEC_FILE}: it was not written by this package's train.py")

    def checkpoints(self) -> list[Path]:
        """Everything this stage's model is loaded from, in order: its initialisation chain, then its own weights."""
        if not self.is_trained():
            raise RunLayoutError(f"{self.path} holds no checkpoint ({self.last_checkpoint}): train it first")
        return [*self.read_spec()[1], self.last_checkpoint]


@dataclass(frozen=True)
class RunLayout:
    """`<output_root>/<run_name>`: the stage directories of one run."""

    output_root: Path
    name: str

    @property
    def root(self) -> Path:
        return self.output_root / self.name

    def stage(self, stage: int, job: str | Path | None = None) -> StageDir:
        path = self.root / f"stage{stage}"
        return StageDir(path / job if job else path, stage, self)

    def relative(self, path: str | Path) -> str:
        """A path as a run records it: relative to the output root when under it, so runs can move."""
        resolved = Path(path).resolve()
        root = self.output_root.resolve()
        return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)

    def absolute(self, recorded: str | Path) -> Path:
        recorded = Path(recorded)
        return recorded if recorded.is_absolute() else self.output_root / recorded

    def sweep_jobs(self, stage: int) -> list[StageDir]:
        """Trained sweep jobs of a stage (directories below `stage<N>/` holding a last checkpoint)."""
        base = self.root / f"stage{stage}"
        found = sorted(p.parent.parent for p in base.glob("*/**/checkpoints/last.ckpt"))
        return [StageDir(path, stage, self) for path in found]

    def trained(self, stage: int, job: str | Path | None = None) -> StageDir:
        """The stage directory to load: the given sweep job, else the plain stage; never a guess among jobs."""
        stage_dir = self.stage(stage, job)
        if stage_dir.is_trained():
            return stage_dir
        jobs = [] if job else self.sweep_jobs(stage)
        if jobs:
            listing = ", ".join(str(j.path) for j in jobs[:8])
            raise RunLayoutError(
                f"run '{self.name}' has no plain stage-{stage} result, only sweep jobs ({listing}); "
                f"name one: model.init_from=<one of them>"
            )
        raise RunLayoutError(
            f"run '{self.name}' has no stage-{stage} checkpoint in {stage_dir.path}: train it first "
            f"(`python train.py stage={stage} run_name={self.name}`) or pass model.init_from=<checkpoint>"
        )

    def latest_trained(self, stages: Sequence[int] = (3, 2, 1)) -> StageDir:
        """The highest of `stages` this run has a plain result for."""
        for stage in stages:
            if self.stage(stage).is_trained():
                return self.stage(stage)
        raise RunLayoutError(f"{self.root} holds no trained stage {'/'.join(map(str, sorted(stages)))} run")

    def auto_chain(self, stage: int, job: str | Path | None = None) -> list[Path]:
        """`model.init_from=auto`: the earlier stages' checkpoints, oldest first.

        Stage N loads stages 1..N-1 in order, so a component a stage did not train (the Q-Former text path
        in stage 2) comes from the last stage that did. A missing stage N-1 is an error; a missing earlier one
        is skipped (a run may start at stage 2 from an official stage-1 file).
        """
        found = []
        for earlier in range(1, stage):
            candidates = [self.stage(earlier, job), self.stage(earlier)] if job else [self.stage(earlier)]
            trained = next((c for c in candidates if c.is_trained()), None)
            if trained is not None:
                found.append(trained.last_checkpoint)
            elif earlier == stage - 1:
                raise RunLayoutError(
                    f"stage {stage} starts from stage {earlier} of run '{self.name}', which has no checkpoint in "
                    f"{candidates[-1].path}: run `python train.py stage={earlier} run_name={self.name}` first, "
                    "or pass model.init_from=none"
                )
        return found


def legacy_spec(config_path: Path) -> ModelSpec:
    """The spec of a run whose config.yaml still held the model under `module` (before model_spec.json)."""
    config = yaml.safe_load(config_path.read_text())
    module, data = config["module"], config["data"]
    return ModelSpec.from_json(
        {
            **module,
            "stage": config["stage"],
            "vision": module["vision"],
            "qformer": module["qformer"],
            "media": {k: data[k] for k in ("num_frames", "image_size", "normalization")},
        }
    )


def locate(path: str | Path) -> StageDir | None:
    """The stage directory `path` is (`…/<run>/stage<N>[/<job>]`, or a checkpoint file in it), or None."""
    path = Path(path).resolve()
    if path.is_file() and path.parent.name == "checkpoints":
        path = path.parent.parent
    if not ((path / SPEC_FILE).is_file() or (path / "config.yaml").is_file()):
        return None
    for candidate in (path, *path.parents):
        match = STAGE_NAME.fullmatch(candidate.name)
        if match:
            run_root = candidate.parent
            return StageDir(path, int(match.group(1)), RunLayout(run_root.parent, run_root.name))
    return None


def init_chain(init_from: str | Sequence[str] | None, stage: StageDir) -> list[Path]:
    """`model.init_from` as the checkpoints a stage starts from.

    `auto` chains the earlier stages of this run; `none` (or null) starts fresh; a stage directory brings its
    own chain and weights; any other path (a file, an export directory) or list of paths is taken as given.
    """
    if init_from is None or init_from == "none":
        return []
    if init_from == "auto":
        return stage.run.auto_chain(stage.stage, stage.job)
    paths = [init_from] if isinstance(init_from, (str, Path)) else list(init_from)
    chain: list[Path] = []
    for path in paths:
        source = locate(path)
        chain += source.checkpoints() if source is not None and Path(path).is_dir() else [Path(path)]
    return chain

"""The training recipe: what `python train.py` does, top to bottom."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`auto` resumes from the run directory's last checkpoint when there is one."""
    if ckpt_path != "auto":
        return ckpt_path
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.exists() else None


def resolve_init_from(init_from: str | list[str] | None, stage: int, run_dir: Path, run_root: Path) -> list[str]:
    """Checkpoints to initialise from: `auto` chains the earlier stages of this run, oldest first; a list is
    taken as given (e.g. the official stage-1 file, then the official stage-2 file).

    Stage N loads stages 1..N-1 in order, so a component a stage did not train (the Q-Former text
    path in stage 2) comes from the last stage that did. A sweep job looks for its earlier stages in
    the same sweep sub-directory first, then in the plain stage directory.
    """
    if OmegaConf.is_list(init_from) or isinstance(init_from, (list, tuple)):
        return [str(p) for p in init_from]
    if init_from in (None, "none"):
        return []
    if init_from != "auto":
        return [str(init_from)]
    sweep_subdir = run_dir.relative_to(run_root / f"stage{stage}")
    found = []
    for earlier in range(1, stage):
        candidates = [run_root / f"stage{earlier}" / sweep_subdir, run_root / f"stage{earlier}"]
        ckpt = next((c / "checkpoints" / "last.ckpt" for c in candidates if (c / "checkpoints" / "last.ckpt").exists()), None)
        if ckpt is not None:
            found.append(str(ckpt))
        elif earlier == stage - 1:
            raise FileNotFoundError(
                f"stage {stage} starts from stage {earlier} of run '{run_root.name}', which has no checkpoint in "
                f"{candidates[-1]}: run `python train.py stage={earlier} run_name={run_root.name}` first, "
                "or pass model.init_from=none"
            )
    return found


# Settings that do not change what a run computes, so a re-run may differ in them.
VOLATILE = ("ckpt_path", "data.num_workers", "trainer.enable_progress_bar", "trainer.log_every_n_steps")


def config_difference(saved: DictConfig, current: DictConfig) -> str | None:
    """The first setting (dotted key) in which two resolved configs differ, ignoring VOLATILE ones."""
    flat = [_flatten(OmegaConf.to_container(c)) for c in (saved, current)]
    for key in sorted(set(flat[0]) | set(flat[1])):
        if key not in VOLATILE and flat[0].get(key) != flat[1].get(key):
            return f"{key}: {flat[0].get(key)!r} there, {flat[1].get(key)!r} now"
    return None


def _flatten(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, child in node.items() for k, v in _flatten(child, f"{prefix}{key}.").items()}


def check_same_run(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to resume or skip a run directory that holds a different run (e.g. another sweep's job)."""
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    difference = config_difference(OmegaConf.load(saved), cfg)
    if difference is not None:
        raise ValueError(
            f"{run_dir} holds a run with another configuration ({difference}); "
            "use another run_name, or ckpt_path=null to start over there"
        )


def finished_summary(run_dir: Path) -> dict | None:
    """The summary of a run that already finished in this directory, if any."""
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("finished") else None


def train(cfg: DictConfig) -> dict[str, float]:
    """Train one stage; returns the final metrics (for sweepers)."""
    OmegaConf.resolve(cfg)
    run_dir = Path(cfg.paths.run_dir)
    if cfg.ckpt_path == "auto":
        check_same_run(run_dir, cfg)
    done = finished_summary(run_dir) if cfg.ckpt_path == "auto" else None
    if done is not None:
        log.info("stage %s of run '%s' already finished in %s; nothing to do", cfg.stage, cfg.run_name, run_dir)
        return done["metrics"]

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.datamodule, _recursive_=False)
    datamodule.prepare_data()
    init_from = resolve_init_from(
        cfg.model.init_from, cfg.stage, run_dir.resolve(), (Path(cfg.paths.output_root) / cfg.run_name).resolve()
    )
    module = instantiate(
        cfg.module, optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler), init_from=init_from
    )
    trainer = instantiate(
        cfg.trainer,
        callbacks=[instantiate(c) for c in cfg.callbacks.values()],
        logger=[instantiate(c) for c in cfg.logger.values()] or False,
    )
    if trainer.global_rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.ckpt_path, run_dir))
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

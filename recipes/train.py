"""The training recipe: what `python train.py` does, top to bottom."""

from __future__ import annotations

import copy
import logging
import math
import shutil
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_modules.callbacks import RunRecords
from lightning_modules.checkpoint_io import AtomicCheckpointIO
from recipes import preflight
from videochat2.checkpoints import CheckpointError, read_checkpoint
from videochat2.device import prepare_backend
from videochat2.plots import plot_training_curves
from videochat2.run_layout import RunLayout, StageDir, init_chain
from videochat2.run_lock import RunLock
from videochat2.spec import ModelSpec, spec_from_settings

log = logging.getLogger(__name__)

# Settings a run cannot start with, checked before anything is written: (key, lowest allowed, what it means).
LOWER_BOUNDS = (
    ("model.num_query", 1, "visual tokens per clip"),
    ("data.num_frames", 1, "frames per clip"),
    ("data.image_size", 1, "pixels per side"),
    ("data.batch_size", 1, "samples per batch"),
    ("optimizer.lr", 0, "the learning rate"),
    ("trainer.max_steps", 1, "optimizer steps; -1 only with trainer.max_epochs set"),
)
# Files a fresh start replaces; left from an earlier attempt they would mix two runs.
RUN_RECORDS = (
    "config.yaml",
    "model_spec.json",
    "load_report.json",
    "metrics.csv",
    "summary.json",
    "skipped_media.txt",
    "curves.png",
)
# The one setting an existing run may change beyond the VOLATILE ones: raised, it trains the run further.
GROWABLE = "trainer.max_steps"

# Settings that do not change what a run computes, so a re-run may differ in them (a key or a group prefix).
VOLATILE = (
    "ckpt_path",
    "data.num_workers",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "logger.",
    "callbacks.progress_log.",
    "callbacks.progress_bar.",
)


def model_spec(cfg: DictConfig, stage: int | None = None) -> ModelSpec:
    """The model this config describes (see `videochat2.spec.spec_from_settings`)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    media = {key: cfg.data[key] for key in ("num_frames", "image_size", "normalization")}
    return spec_from_settings(stage or int(cfg.stage), model, media, cfg.paths.pretrained)


def validate(cfg: DictConfig) -> None:
    """One-line errors naming the key, before a run directory is touched (so a fixed command is not refused)."""
    for key, lowest, meaning in LOWER_BOUNDS:
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}={value!r}: expected a number ({meaning})")
        if value < lowest and not epochs_decide(cfg, key, value):
            raise ValueError(f"{key}={value}: must be at least {lowest} ({meaning})")


def epochs_decide(cfg: DictConfig, key: str, value) -> bool:
    """`trainer.max_steps=-1` with a positive `trainer.max_epochs`: Lightning's 'no step limit' (the paper recipes)."""
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    return key == "trainer.max_steps" and value == -1 and isinstance(epochs, int) and epochs > 0


def step_limit(max_steps: int | None) -> float:
    """`trainer.max_steps` as a number of steps to compare: -1 (the epochs decide) is no limit."""
    return math.inf if max_steps is None or max_steps < 0 else max_steps


def stage_dir_of(cfg: DictConfig) -> StageDir:
    """This run's stage directory (Hydra's output directory: a sweep job's lies below the stage's)."""
    layout = RunLayout(Path(cfg.paths.output_root), cfg.run_name)
    return StageDir(Path(cfg.paths.run_dir), int(cfg.stage), layout)


def resolve_ckpt_path(ckpt_path: str | None, stage_dir: StageDir) -> str | None:
    """`auto` resumes from the run directory's last checkpoint when there is one."""
    if ckpt_path != "auto":
        return ckpt_path
    return str(stage_dir.last_checkpoint) if stage_dir.is_trained() else None


def check_resumable(ckpt_path: str | None, trust: bool) -> None:
    """Read a resume checkpoint through the safe loader before Lightning does.

    So a pickle with code in it is refused whatever the installed torch's default, and a damaged or
    truncated file gives one line naming it and what to do instead of a traceback from deep in torch.
    """
    if ckpt_path is None:
        return
    try:
        read_checkpoint(ckpt_path, trust)
    except CheckpointError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(
            f"cannot resume from {ckpt_path}: it is damaged or incomplete ({reason}); delete it and run again "
            "to start this stage over, or pass ckpt_path=<an intact checkpoint>"
        ) from None


def clear_for_fresh_start(stage_dir: StageDir) -> None:
    """Remove the checkpoints and records an earlier attempt left, so a fresh start writes `last.ckpt` itself.

    Only called when this run starts from step 0 (`ckpt_path=null`, or `auto` without a `last.ckpt`):
    left in place, an old `last.ckpt` would outlive this run's and be what later stages load.
    """
    old = [p for p in (stage_dir.checkpoint_dir, *(stage_dir.path / n for n in RUN_RECORDS)) if p.exists()]
    if not old:
        return
    log.warning("starting %s fresh: removing %s", stage_dir.path, ", ".join(p.name for p in old))
    for path in old:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def is_volatile(key: str) -> bool:
    return any(key == v or (v.endswith(".") and key.startswith(v)) for v in VOLATILE)


def config_difference(saved: DictConfig, current: DictConfig) -> str | None:
    """The first setting (dotted key) in which two resolved configs differ, ignoring VOLATILE ones."""
    flat = [_flatten(OmegaConf.to_container(c)) for c in (saved, current)]
    for key in sorted(set(flat[0]) | set(flat[1])):
        if not is_volatile(key) and flat[0].get(key) != flat[1].get(key):
            return f"{key}: {flat[0].get(key)!r} there, {flat[1].get(key)!r} now"
    return None


def _flatten(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, child in node.items() for k, v in _flatten(child, f"{prefix}{key}.").items()}


def at_max_steps(raw: DictConfig, max_steps: int) -> DictConfig:
    """The resolved config `raw` gives with another trainer.max_steps (settings interpolated from it follow)."""
    probe = copy.deepcopy(raw)
    probe.trainer.max_steps = max_steps
    OmegaConf.resolve(probe)
    settle_global_batch(probe)
    return probe


def check_same_run(stage_dir: StageDir, cfg: DictConfig, raw: DictConfig | None = None) -> None:
    """Refuse to resume or skip a run directory that holds a different run (e.g. another sweep's job).

    Only a directory with something to resume or skip is guarded: one whose start failed, or that stopped
    before its first checkpoint, is started over by the fresh run anyway. `trainer.max_steps` may grow
    (the run is trained further; `raw`, the unresolved config, says which settings follow it), never shrink.
    """
    if not stage_dir.config.exists() or not (stage_dir.is_trained() or stage_dir.finished_summary()):
        return
    saved = OmegaConf.load(stage_dir.config)
    trained_to = OmegaConf.select(saved, GROWABLE)
    wanted = OmegaConf.select(cfg, GROWABLE)
    if trained_to is not None and step_limit(wanted) < step_limit(trained_to):
        raise ValueError(
            f"{GROWABLE}={wanted}: {stage_dir.path} holds a run trained towards {trained_to} steps, and an "
            f"existing run may only be trained further; use another run_name, or ckpt_path=null to start over there"
        )
    same = cfg if trained_to in (None, wanted) or raw is None else at_max_steps(raw, trained_to)
    difference = config_difference(saved, same)
    if difference is not None:
        raise ValueError(
            f"{stage_dir.path} holds a run with another configuration ({difference}); "
            "use another run_name, or ckpt_path=null to start over there"
        )


def trained_further(done: dict, cfg: DictConfig) -> bool:
    """Whether a finished run is asked for more steps than it was trained towards."""
    trained_to = done.get("max_steps", done.get("steps"))
    return trained_to is not None and step_limit(cfg.trainer.max_steps) > step_limit(trained_to)


def send_config_to_trackers(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Every tracker gets the resolved config (the CSV logger's record of it is the run's config.yaml)."""
    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger):
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))


def device_count(devices, accelerator: str) -> int:
    """Devices per node as the Trainer will count them (an int, a list of ids, or auto/-1 = all visible)."""
    if isinstance(devices, int) and devices > 0:
        return devices
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices.strip().isdigit():
        return int(devices)
    if accelerator in ("gpu", "cuda", "auto"):
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def settle_global_batch(cfg: DictConfig) -> str:
    """Set `trainer.accumulate_grad_batches` so the recipe's `global_batch_size` holds on this device count.

    The global batch is devices x nodes x data.batch_size x accumulation; a recipe names the original's (e.g.
    stage 3: 4 per GPU on 32 GPUs = 128), and a run on fewer devices accumulates to reach it. Without
    `global_batch_size` the configured accumulation stays. Returns the line printed at start-up.
    """
    devices = device_count(cfg.trainer.devices, cfg.trainer.accelerator)
    per_step = devices * int(cfg.trainer.num_nodes) * int(cfg.data.batch_size)
    target = cfg.get("global_batch_size")
    if target is not None:
        if target % per_step:
            raise ValueError(
                f"global_batch_size {target} is not a multiple of devices x nodes x data.batch_size = {per_step}; "
                "change data.batch_size or the device count"
            )
        with open_dict(cfg):
            cfg.trainer.accumulate_grad_batches = target // per_step
    accumulate = int(cfg.trainer.accumulate_grad_batches)
    return (
        f"global batch {per_step * accumulate} = {devices} device(s) x {cfg.trainer.num_nodes} node(s) x "
        f"{cfg.data.batch_size} per device x {accumulate} accumulated"
        + (f" (the recipe's {target})" if target is not None else "")
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Train one stage; returns the final metrics (for sweepers)."""
    raw = copy.deepcopy(cfg)  # with its interpolations, for comparing a longer run with its saved config
    OmegaConf.resolve(cfg)
    validate(cfg)
    # Before the same-run check: the accumulation it settles is part of the saved config.
    print(settle_global_batch(cfg), flush=True)
    stage_dir = stage_dir_of(cfg)
    if cfg.ckpt_path == "auto":
        check_same_run(stage_dir, cfg, raw)
        done = stage_dir.finished_summary()
        if done is not None and not trained_further(done, cfg):
            log.info(
                "stage %s of run '%s' already finished in %s; nothing to do", cfg.stage, cfg.run_name, stage_dir.path
            )
            return done["metrics"]
        if done is not None:
            log.info(
                "training %s further: from step %s to %s", stage_dir.path, done.get("steps"), cfg.trainer.max_steps
            )
    # Before any model or data is built, and before the run directory is touched: everything missing at once.
    preflight.check(preflight.training_missing(cfg, stage_dir, model_spec(cfg)))
    # Rank 0 holds the lock (the other ranks of a DDP run are its children or its peers on other nodes).
    lock = RunLock(stage_dir.path)
    if rank_zero_only.rank == 0:
        lock.acquire()
    try:
        return fit(cfg, stage_dir)
    finally:
        lock.release()


def write_run_records(cfg: DictConfig, stage_dir: StageDir, module, init_from: list[Path]) -> None:
    """config.yaml, model_spec.json and load_report.json: written once set-up succeeded (see RunRecords)."""
    stage_dir.path.mkdir(parents=True, exist_ok=True)
    stage_dir.config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    stage_dir.write_spec(module.spec, init_from)
    if module.load_report is not None:
        module.load_report.write(stage_dir.load_report)


def callbacks(cfg: DictConfig) -> list[Callback]:
    """The configured callbacks; the progress bar only where `trainer.enable_progress_bar` asks for one
    (Lightning refuses a bar callback together with the flag off, which the tests and batch jobs set)."""
    built = [instantiate(c) for c in cfg.callbacks.values()]
    return [c for c in built if cfg.trainer.enable_progress_bar or not isinstance(c, ProgressBar)]


def fit(cfg: DictConfig, stage_dir: StageDir) -> dict[str, float]:
    """Build data, model and trainer, write the run's records and fit; the caller holds the run lock."""
    L.seed_everything(cfg.seed, workers=True)
    trust = bool(cfg.model.trust_checkpoint)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, stage_dir)
    check_resumable(ckpt_path, trust)
    spec = model_spec(cfg)
    # Built as partials, then called: Hydra would turn the spec (a dataclass) into a config node.
    datamodule = instantiate(cfg.datamodule, _partial_=True)(data=cfg.data, spec=spec, seed=cfg.seed)
    # Every process gets here before the Trainer exists; the embedded data and LLM are made once (a file lock).
    datamodule.prepare_data()
    init_from = init_chain(cfg.model.init_from, stage_dir)
    module = instantiate(cfg.module, _partial_=True)(
        spec=spec,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        init_from=[str(p) for p in init_from],
    )
    records = RunRecords(lambda: write_run_records(cfg, stage_dir, module, init_from))
    trainer = instantiate(
        cfg.trainer,
        callbacks=[*callbacks(cfg), records],
        logger=[instantiate(c) for c in cfg.logger.values()] or False,
        plugins=[AtomicCheckpointIO()],
    )
    if trainer.strategy.root_device.type == "cuda":
        prepare_backend(trainer.strategy.root_device)
    send_config_to_trackers(trainer, cfg)
    if trainer.global_rank == 0 and ckpt_path is None:
        clear_for_fresh_start(stage_dir)
    # weights_only explicit: Lightning's default (None) defers to torch's, which was unsafe before torch 2.6.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trust)
    if trainer.global_rank == 0 and stage_dir.metrics.is_file():
        title = f"run {cfg.run_name}, stage {cfg.stage}" + (f", job {stage_dir.job}" if stage_dir.job else "")
        plot_training_curves(stage_dir.metrics, stage_dir.path / "curves.png", title)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

"""The training recipe: what `python train.py` does, top to bottom."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from videochat2.run_layout import RunLayout, StageDir, init_chain
from videochat2.spec import ModelSpec, spec_from_settings

log = logging.getLogger(__name__)

# Settings that do not change what a run computes, so a re-run may differ in them.
VOLATILE = ("ckpt_path", "data.num_workers", "trainer.enable_progress_bar", "trainer.log_every_n_steps")


def model_spec(cfg: DictConfig, stage: int | None = None) -> ModelSpec:
    """The model this config describes (see `videochat2.spec.spec_from_settings`)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    media = {key: cfg.data[key] for key in ("num_frames", "image_size", "normalization")}
    return spec_from_settings(stage or int(cfg.stage), model, media, cfg.paths.pretrained)


def stage_dir_of(cfg: DictConfig) -> StageDir:
    """This run's stage directory (Hydra's output directory: a sweep job's lies below the stage's)."""
    layout = RunLayout(Path(cfg.paths.output_root), cfg.run_name)
    return StageDir(Path(cfg.paths.run_dir), int(cfg.stage), layout)


def resolve_ckpt_path(ckpt_path: str | None, stage_dir: StageDir) -> str | None:
    """`auto` resumes from the run directory's last checkpoint when there is one."""
    if ckpt_path != "auto":
        return ckpt_path
    return str(stage_dir.last_checkpoint) if stage_dir.is_trained() else None


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


def check_same_run(stage_dir: StageDir, cfg: DictConfig) -> None:
    """Refuse to resume or skip a run directory that holds a different run (e.g. another sweep's job)."""
    if not stage_dir.config.exists():
        return
    difference = config_difference(OmegaConf.load(stage_dir.config), cfg)
    if difference is not None:
        raise ValueError(
            f"{stage_dir.path} holds a run with another configuration ({difference}); "
            "use another run_name, or ckpt_path=null to start over there"
        )


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
    OmegaConf.resolve(cfg)
    # Before the same-run check: the accumulation it settles is part of the saved config.
    print(settle_global_batch(cfg), flush=True)
    stage_dir = stage_dir_of(cfg)
    if cfg.ckpt_path == "auto":
        check_same_run(stage_dir, cfg)
        done = stage_dir.finished_summary()
        if done is not None:
            log.info(
                "stage %s of run '%s' already finished in %s; nothing to do", cfg.stage, cfg.run_name, stage_dir.path
            )
            return done["metrics"]

    L.seed_everything(cfg.seed, workers=True)
    spec = model_spec(cfg)
    # Built as partials, then called: Hydra would turn the spec (a dataclass) into a config node.
    datamodule = instantiate(cfg.datamodule, _partial_=True)(data=cfg.data, spec=spec, seed=cfg.seed)
    datamodule.prepare_data()
    init_from = init_chain(cfg.model.init_from, stage_dir)
    module = instantiate(cfg.module, _partial_=True)(
        spec=spec,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        init_from=[str(p) for p in init_from],
    )
    trainer = instantiate(
        cfg.trainer,
        callbacks=[instantiate(c) for c in cfg.callbacks.values()],
        logger=[instantiate(c) for c in cfg.logger.values()] or False,
    )
    if trainer.global_rank == 0:
        stage_dir.path.mkdir(parents=True, exist_ok=True)
        stage_dir.config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        stage_dir.write_spec(module.spec, init_from)
        if module.load_report is not None:
            module.load_report.write(stage_dir.load_report)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.ckpt_path, stage_dir))
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

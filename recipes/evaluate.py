"""The evaluation recipe: what `python eval.py` does, top to bottom.

MVBench-format benchmarks: load the model, decide frames and pixels, answer every question not yet in
predictions.jsonl, then score, tabulate and plot the whole set; under `torchrun --nproc-per-node N eval.py`
N processes share the answering (see `videochat2.eval.mvbench.evaluate`). Retrieval: encode the caption
corpus with the stage-1 model and report similarity-only and re-ranked recalls. Probe: the mean features of
labelled clips after any stage, and per task how well a linear classifier reads the answer from them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from recipes import preflight
from recipes.train import model_spec
from videochat2.builder import LoadedModel
from videochat2.data.formats import DEFAULT_FORMAT, load_records
from videochat2.data.transforms import FrameTransform
from videochat2.device import DeviceError, for_rank, plan
from videochat2.distributed import init_from_launcher, launched_world_size, local_rank
from videochat2.embedded.splits import SPLITS, prepare_split
from videochat2.eval.mvbench import load_questions, write_results
from videochat2.eval.mvbench.data import FrameCache, FrameSpec, MVBenchDataset
from videochat2.eval.mvbench.evaluate import AnswerOptions, check_media, evaluate_mvbench
from videochat2.eval.probe.classifier import format_probe, probe_tasks
from videochat2.eval.probe.clips import clip_features, collate_clips, load_labelled_clips, probe_instruction
from videochat2.eval.retrieval.run import ClipDataset, build_corpus, evaluate_retrieval, format_retrieval
from videochat2.loader import load_model
from videochat2.run_layout import RunLayout, locate
from videochat2.spec import MediaConfig

log = logging.getLogger(__name__)


@dataclass
class Evaluated:
    """The model under evaluation, and how it was trained to see (None: files of unknown training)."""

    loaded: LoadedModel
    trained_media: MediaConfig | None


def evaluated_model(cfg: DictConfig, stage: int) -> Evaluated:
    """`auto`: the run's stage result, rebuilt from its own spec; a directory (a stage of a run, a sweep job,
    an export) or a checkpoint inside a run likewise; any other file, or a list of files, fills the model
    this config composes."""
    init_from = cfg.model.init_from
    options = dict(
        pretrained_root=cfg.paths.pretrained,
        trust_checkpoint=cfg.model.trust_checkpoint,
        trust_remote_code=cfg.model.trust_remote_code,
        device=process_device(cfg),
        precision=cfg.precision,
    )
    if init_from == "auto":
        init_from = str(RunLayout(Path(cfg.paths.output_root), cfg.run_name).trained(stage).path)
    if OmegaConf.is_list(init_from) or not (Path(init_from).is_dir() or locate(init_from) is not None):
        files = list(init_from) if OmegaConf.is_list(init_from) else [init_from]
        return Evaluated(load_model(files, spec=model_spec(cfg, stage), **options), None)
    loaded = load_model(init_from, stages=(stage,), **options)
    if (loaded.spec.stage == 1) != (stage == 1):
        needed = "a stage-1" if stage == 1 else "a stage-2 or stage-3"
        raise ValueError(f"{init_from} holds a stage-{loaded.spec.stage} model; this benchmark needs {needed} one")
    return Evaluated(loaded, loaded.spec.media)


def process_device(cfg: DictConfig) -> str:
    """`device`, or under torchrun this process's own GPU (`cuda:<LOCAL_RANK>`) where it names a GPU."""
    if launched_world_size() > 1:
        return for_rank(cfg.device, local_rank())
    return cfg.device


def frame_spec(cfg: DictConfig, trained: MediaConfig | None) -> FrameSpec:
    """Frames and pixels: a `data.*` value > the training value (where followed) > the benchmark's."""
    bench = cfg.benchmark
    follow = vars(trained) if bench.follow_training and trained is not None else {}

    def pick(key: str):
        return next(v for v in (cfg.data[key], follow.get(key), bench[key]) if v is not None)

    normalization = cfg.data.normalization or ("clip" if bench.transform == "official" else pick("normalization"))
    return FrameSpec(int(pick("num_frames")), int(pick("image_size")), bench.transform, normalization)


def evaluated_job(cfg: DictConfig) -> str | None:
    """`job-1` when `model.init_from` names sweep job `stage<N>/1` (or a checkpoint in it), so that the
    evaluations of a sweep's jobs sit side by side instead of replacing each other."""
    init_from = cfg.model.init_from
    if not isinstance(init_from, str) or init_from in ("auto", "none"):
        return None
    stage_dir = locate(init_from)
    job = stage_dir.job if stage_dir is not None else None
    return "-".join(("job", *job.parts)) if job is not None else None


def output_dir(cfg: DictConfig) -> Path:
    """outputs/<run_name>/eval/<benchmark>[-<tag>], the tag naming what differs from a plain run.

    Read before the model is built, while `data.*` still holds only what the user set.
    """
    tag = cfg.eval.tag
    if tag is None:
        split = benchmark_split(cfg)
        parts = [
            split if split != "test" else None,
            evaluated_job(cfg),
            cfg.eval.answerer if cfg.eval.answerer != "letter_logits" else None,
            "blind" if cfg.eval.blind else None,
            "oracle" if cfg.eval.oracle else None,
            f"{cfg.data.num_frames}f" if cfg.data.num_frames is not None else None,
            f"{cfg.data.image_size}px" if cfg.data.image_size is not None else None,
            "official" if cfg.benchmark.transform == "official" else None,
        ]
        tag = "-".join(p for p in parts if p) or None
    name = cfg.benchmark.name + (f"-{tag}" if tag else "")
    return Path(cfg.paths.output_root) / cfg.run_name / "eval" / name


def prompt_family(cfg: DictConfig, loaded: LoadedModel) -> str:
    """The MVBench prompt of the LLM's conversation template unless eval.prompt names one."""
    return cfg.eval.prompt or loaded.template


def recorded_path(path: str, cfg: DictConfig) -> str:
    """A checkpoint as results record it: relative to the output root when under it, so a run directory
    can be moved or shared without carrying this machine's layout."""
    root = Path(cfg.paths.output_root).resolve()
    resolved = Path(path).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path


def fingerprint(paths: list[str], cfg: DictConfig) -> list[list]:
    """Each checkpoint with its size and mtime, so retrained weights make old predictions stale."""
    rows = []
    for path in paths:
        stat = Path(path).stat() if Path(path).exists() else None
        rows.append([recorded_path(path, cfg), *((stat.st_size, stat.st_mtime_ns) if stat else ())])
    return rows


def last_checkpoint(loaded: LoadedModel, cfg: DictConfig) -> str | None:
    return recorded_path(loaded.checkpoints[-1], cfg) if loaded.checkpoints else None


def benchmark_split(cfg: DictConfig) -> str:
    """`test` (the benchmark) unless the benchmark offers other splits and one is asked for."""
    return cfg.benchmark.get("split", "test")


def benchmark_root(cfg: DictConfig) -> Path:
    """The benchmark's root, or for the embedded world's other splits theirs, written on first use."""
    split = benchmark_split(cfg)
    if split == "test":
        return Path(cfg.benchmark.root)
    return prepare_split(cfg.data.root, split)


def select_questions(cfg: DictConfig, root: Path | None = None) -> list:
    """The questions of `root` (default: the configured benchmark's) that `eval.tasks` and `eval.limit` keep."""
    questions = load_questions(root or benchmark_root(cfg), list(cfg.eval.tasks) if cfg.eval.tasks else None)
    if cfg.eval.limit is None:
        return questions
    return [q for q in questions if q.index < cfg.eval.limit]


def answer_options(cfg: DictConfig) -> AnswerOptions:
    return AnswerOptions(
        answerer=cfg.eval.answerer,
        max_new_tokens=cfg.eval.max_new_tokens,
        generate_batched=cfg.eval.generate_batched,
        blind=cfg.eval.blind,
        oracle=cfg.eval.oracle,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.eval.num_workers,
        cache_dir=cfg.eval.cache_dir,
        strict_media=bool(cfg.benchmark.get("strict_media", False)),
    )


def evaluate_mvbench_benchmark(cfg: DictConfig) -> dict:
    options = answer_options(cfg)
    root = benchmark_root(cfg)
    questions = select_questions(cfg, root)
    check_media(questions, cfg.benchmark.strict_media)
    out_dir = output_dir(cfg)
    evaluated = evaluated_model(cfg, 3)
    loaded = evaluated.loaded
    frames = frame_spec(cfg, evaluated.trained_media)
    family = prompt_family(cfg, loaded)
    settings = {
        "benchmark": cfg.benchmark.name,
        "root": str(root),
        "frames": frames.num_frames,
        "size": frames.image_size,
        "transform": frames.mode,
        "normalisation": frames.normalization,
        "prompt_family": family,
        "answerer": options.answerer,
        "blind": options.blind,
        "oracle": options.oracle,
        "max_new_tokens": options.max_new_tokens if options.answerer == "generate" else None,
        "generate_batched": options.generate_batched if options.answerer == "generate" else None,
        "checkpoint": last_checkpoint(loaded, cfg),
        "init_from": fingerprint(list(loaded.checkpoints), cfg),
        # Predictions made at another precision (or on another kind of device) are not reused.
        "device": loaded.device.type,
        "precision": loaded.placement.precision,
    }
    return evaluate_mvbench(loaded, questions, frames, family, options, out_dir, settings)


def evaluate_retrieval_benchmark(cfg: DictConfig) -> dict:
    out_dir = output_dir(cfg)
    evaluated = evaluated_model(cfg, 1)
    loaded = evaluated.loaded
    spec = frame_spec(cfg, evaluated.trained_media)
    corpus_cfg = cfg.benchmark.corpus
    records = load_records(
        corpus_cfg.annotation,
        corpus_cfg.media_root,
        corpus_cfg.media_type,
        format=corpus_cfg.get("format") or DEFAULT_FORMAT["retrieval"],
        reader=corpus_cfg.get("reader") or "decord",
    )
    corpus = build_corpus(records)
    clips = ClipDataset(corpus.media, spec.num_frames, FrameTransform(spec.image_size, spec.mode, spec.normalization))
    loader = torch.utils.data.DataLoader(
        clips,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.eval.num_workers,
        pin_memory=loaded.placement.pin_memory,
    )
    with loaded.visual_autocast():
        metrics = evaluate_retrieval(
            loaded.model,
            loaded.qformer_tokenizer,
            corpus,
            loader,
            cfg.benchmark.max_txt_len,
            cfg.eval.k_test,
            loaded.device,
        )
    settings = {
        "frames": spec.num_frames,
        "size": spec.image_size,
        "transform": spec.mode,
        "normalisation": spec.normalization,
        "k_test": cfg.eval.k_test,
        "checkpoint": last_checkpoint(loaded, cfg),
    }
    results = {"n_videos": len(corpus.media), "n_texts": len(corpus.texts), **metrics, "settings": settings}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(results, out_dir / "results.json")
    print(format_retrieval(metrics))
    return results


def evaluate_probe(cfg: DictConfig) -> dict:
    bench = cfg.benchmark
    clips = load_labelled_clips(bench.labels, bench.media_root, bench.path_prefix)
    evaluated = evaluated_model(cfg, int(cfg.stage))
    loaded = evaluated.loaded
    spec = frame_spec(cfg, evaluated.trained_media)
    dataset = MVBenchDataset(clips, spec, FrameCache(cfg.eval.cache_dir))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.eval.num_workers,
        collate_fn=collate_clips,
        pin_memory=loaded.placement.pin_memory,
    )
    with loaded.visual_autocast():
        features = clip_features(loaded.model, loader, probe_instruction(loaded), loaded.device)
    probed = probe_tasks(
        features, [c.task for c in clips], [c.answer for c in clips], bench.train_fraction, bench.max_classes, cfg.seed
    )
    settings = {
        "stage": int(cfg.stage),
        "labels": str(bench.labels),
        "frames": spec.num_frames,
        "size": spec.image_size,
        "train_fraction": bench.train_fraction,
        "checkpoint": last_checkpoint(loaded, cfg),
    }
    results = {"n": len(clips), **probed, "settings": settings}
    out_dir = output_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(results, out_dir / "results.json")
    print(format_probe(probed))
    log.info("results in %s", out_dir)
    return results


# Values an evaluation cannot run with, checked before the model loads: (key, what it means).
POSITIVE = (
    ("data.num_frames", "frames per clip"),
    ("data.image_size", "pixels per side"),
    ("eval.batch_size", "questions per batch"),
)


def validate(cfg: DictConfig) -> None:
    """One line naming the key, instead of an error blamed on the first media file read."""
    split = benchmark_split(cfg)
    if split not in ("test", *SPLITS):
        raise ValueError(f"benchmark.split={split!r}: must be one of test, {', '.join(SPLITS)}")
    for key, meaning in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{key}={value!r}: must be a whole number of at least 1 ({meaning})")


def evaluate(cfg: DictConfig) -> dict:
    """Run the configured benchmark; returns its results dict.

    The settings, device and precision are checked first, so a bad value or a GPU that is not there stops
    the run before any work; a `SystemExit` with one line, not a traceback.
    """
    validate(cfg)
    try:
        placement = plan(process_device(cfg), cfg.precision)
    except DeviceError as error:
        raise SystemExit(f"eval.py: {error}") from None
    torch.manual_seed(cfg.seed)
    kinds = {"mvbench": evaluate_mvbench_benchmark, "retrieval": evaluate_retrieval_benchmark, "probe": evaluate_probe}
    if cfg.benchmark.kind not in kinds:
        raise ValueError(f"benchmark.kind must be one of {sorted(kinds)}, got {cfg.benchmark.kind!r}")
    if launched_world_size() > 1 and cfg.benchmark.kind != "mvbench":
        raise SystemExit(f"eval.py: {cfg.benchmark.kind} runs in one process; start it without torchrun")
    # Before the model loads: every missing input at once.
    preflight.check(preflight.evaluation_missing(cfg, lambda stage: model_spec(cfg, stage)))
    init_from_launcher(placement.device)
    try:
        return kinds[cfg.benchmark.kind](cfg)
    except DeviceError as error:  # e.g. a 4-bit LLM asked to run on the CPU
        raise SystemExit(f"eval.py: {error}") from None

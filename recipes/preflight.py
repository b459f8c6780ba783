"""Pre-flight: every file a recipe will read, checked before anything is built, all that is missing in one error.

A paper recipe reads a dozen inputs (the LLM and BERT directories, tokenizers, official checkpoints, annotation
files and media roots, a benchmark). Found one per start, each after minutes of loading, they cost an
afternoon; listed together they cost one look. What the embedded default makes on first use (everything
under `data.root` when `data.synthetic` is set: the world, its tokenizers, the tiny LLM) is not required yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from videochat2.models.llm import resolve_model_dir
from videochat2.run_layout import RunLayout, RunLayoutError, StageDir, init_chain, locate
from videochat2.spec import ModelSpec

# Benchmarks that read a fixed stage's model (probe reads `stage`).
BENCHMARK_STAGE = {"mvbench": 3, "retrieval": 1}


@dataclass(frozen=True)
class Need:
    """One input: what it is (with the key that names it), where, and whether a file or a directory."""

    what: str
    path: Path
    kind: str = "path"

    def present(self) -> bool:
        if self.kind == "file":
            return self.path.is_file()
        if self.kind == "dir":
            return self.path.is_dir()
        return self.path.exists()

    def __str__(self) -> str:
        return f"{self.what}: {self.path}"


def check(missing: list[str]) -> None:
    """One ValueError listing every missing input (a single one reads as one line)."""
    if len(missing) == 1:
        raise ValueError(missing[0])
    if missing:
        raise ValueError(f"{len(missing)} inputs are missing:\n" + "\n".join(f"  - {item}" for item in missing))


def made_on_first_use(data: DictConfig) -> Callable[[Path], bool]:
    """Whether a path is one the embedded default builds before it is read (under `data.root`)."""
    root = Path(data.root).resolve() if data.get("synthetic") and data.get("root") else None
    return lambda path: root is not None and Path(path).resolve().is_relative_to(root)


def model_missing(spec: ModelSpec, made: Callable[[Path], bool] = lambda path: False) -> list[str]:
    """The tokenizer and LLM directories a model spec reads (its checkpoints are the caller's)."""
    needs = [Need("Q-Former tokenizer (model.qformer_tokenizer)", Path(spec.qformer_tokenizer), "dir")]
    if spec.llm_tokenizer is not None:
        needs.append(Need("LLM tokenizer (model.llm_tokenizer)", Path(spec.llm_tokenizer), "dir"))
    missing = [str(n) for n in needs if not made(n.path) and not n.present()]
    llm = spec.llm
    if llm is None or (llm.preset == "tiny_llama" and llm.path is None) or (llm.path and made(Path(llm.path))):
        return missing
    try:
        resolve_model_dir(llm, spec.pretrained_root)
    except (ValueError, FileNotFoundError) as error:
        missing.append(str(error))
    return missing


def corpus_needs(data: DictConfig, tasks: list[str]) -> list[Need]:
    """The annotation file and media root of every corpus entry of `tasks` (`data.corpora.<task>`)."""
    needs = []
    for task in tasks:
        entries = data.corpora.get(task)
        entries = [entries] if OmegaConf.is_dict(entries) else list(entries or [])
        for entry in entries:
            name = entry.get("name") or task
            needs.append(
                Need(f"annotation file of corpus {name} (data.corpora.{task})", Path(entry.annotation), "file")
            )
            needs.append(Need(f"media root of corpus {name} (data.corpora.{task})", Path(entry.media_root), "dir"))
    return needs


def training_missing(cfg: DictConfig, stage_dir: StageDir, spec: ModelSpec) -> list[str]:
    """Everything `python train.py` would read and cannot find: model inputs, init_from, corpora, resume file."""
    made = made_on_first_use(cfg.data)
    missing = model_missing(spec, made)
    needs: list[Need] = []
    try:
        needs += [Need("checkpoint of model.init_from", p) for p in init_chain(cfg.model.init_from, stage_dir)]
    except RunLayoutError as error:
        missing.append(str(error))
    tasks = [cfg.data.task, *(["retrieval"] if int(cfg.stage) == 1 else [])]
    needs += corpus_needs(cfg.data, tasks)
    if cfg.ckpt_path not in (None, "auto"):
        needs.append(Need("resume checkpoint (ckpt_path)", Path(cfg.ckpt_path)))
    return missing + [str(n) for n in needs if not made(n.path) and not n.present()]


def evaluation_missing(cfg: DictConfig, composed: Callable[[int], ModelSpec]) -> list[str]:
    """Everything `python eval.py` would read and cannot find: the benchmark's files and the model's.

    `composed(stage)` is the spec this config describes, used when model.init_from names checkpoint files.
    """
    bench = cfg.benchmark
    needs: list[Need] = []
    if bench.kind == "mvbench":
        needs.append(Need("benchmark root (benchmark.root)", Path(bench.root), "dir"))
    elif bench.kind == "retrieval":
        needs += corpus_needs(
            OmegaConf.create({"corpora": {"retrieval": OmegaConf.to_container(bench.corpus, resolve=True)}}),
            ["retrieval"],
        )
    elif bench.kind == "probe":
        needs += [Need("labels (benchmark.labels)", Path(bench.labels), "file")]
        needs += [Need("media root (benchmark.media_root)", Path(bench.media_root), "dir")]
    missing = [str(n) for n in needs if not n.present()]
    return missing + evaluated_model_missing(cfg, BENCHMARK_STAGE.get(bench.kind, int(cfg.stage)), composed)


def evaluated_model_missing(cfg: DictConfig, stage: int, composed: Callable[[int], ModelSpec]) -> list[str]:
    """The model eval.py loads: a run's stage (auto), a stage or export directory, or checkpoint files."""
    init_from = cfg.model.init_from
    if init_from == "auto":
        try:
            return model_missing(RunLayout(Path(cfg.paths.output_root), cfg.run_name).trained(stage).read_spec()[0])
        except RunLayoutError as error:
            return [str(error)]
    files = list(init_from) if OmegaConf.is_list(init_from) else [init_from]
    missing = [str(n) for n in (Need("checkpoint of model.init_from", Path(p)) for p in files) if not n.present()]
    # As evaluated_model decides: files fill the composed model; a directory brings its own spec.
    fills_composed = OmegaConf.is_list(init_from) or not (Path(init_from).is_dir() or locate(init_from) is not None)
    return missing + (model_missing(composed(stage)) if fills_composed else [])

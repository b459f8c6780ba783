"""The model card (README.md) of an export: what the model is, what it was trained on, how it scored.

Everything comes from files a run already wrote: each stage directory's `config.yaml` (data, steps, batch,
learning rate) and `summary.json` (steps done, samples, final loss), and the run's `eval/*/results.json`.
A re-export (of an export directory) keeps the training and evaluation sections of that export's card; a
model from an official file gets a card without them rather than guessed facts. No path of this machine goes
into the card.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from videochat2.models.llm import is_hub_id
from videochat2.run_layout import StageDir, locate
from videochat2.spec import ModelSpec


def model_card(spec: ModelSpec, checkpoints: Sequence[str], name: str) -> str:
    """The card's markdown, with Hub metadata (tags, pipeline, base model) in its front matter."""
    stages = trained_stages(checkpoints)
    inherited = card_sections(checkpoints)
    sections = [
        front_matter(spec),
        f"# {name}\n\nA VideoChat2 stage-{spec.stage} model (video encoder → Q-Former → LLM), exported by "
        "videochat2-lightning.",
        architecture(spec),
        training(stages) if stages else inherited.get("Training", UNRECORDED),
        evaluation(stages[-1].run.root / "eval" if stages else None, inherited.get("Evaluation")),
        usage(name),
    ]
    return "\n\n".join(sections) + "\n"


UNRECORDED = "## Training\n\nTrained outside a videochat2-lightning run: no record."


def card_sections(checkpoints: Sequence[str]) -> dict[str, str]:
    """`## Title` sections of the card of an export the model was loaded from (a re-export keeps its history)."""
    cards = [Path(path) / "README.md" for path in checkpoints if (Path(path) / "README.md").is_file()]
    if len(cards) != 1:
        return {}
    parts = re.split(r"\n(?=## )", cards[0].read_text(encoding="utf-8"))
    return {part.split("\n", 1)[0][3:].strip(): part.strip() for part in parts if part.startswith("## ")}


def trained_stages(checkpoints: Sequence[str]) -> list[StageDir]:
    """The run stage directories the checkpoints came from, in order (files outside a run are left out)."""
    found = [locate(path) for path in checkpoints]
    return [stage for stage in found if stage is not None]


def front_matter(spec: ModelSpec) -> str:
    meta = {"library_name": "videochat2-lightning", "pipeline_tag": "video-text-to-text", "tags": ["videochat2"]}
    if spec.llm is not None and spec.llm.path is not None and is_hub_id(spec.llm.path):
        meta["base_model"] = spec.llm.path
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---"


def architecture(spec: ModelSpec) -> str:
    vision, qformer, media = spec.vision, spec.qformer, spec.media
    rows = [
        ("vision encoder", f"ViT, {vision.depth} layers, width {vision.embed_dim}, patch {vision.patch_size}"),
        ("Q-Former", f"{qformer.num_layers} layers, width {qformer.hidden_size}, {qformer.num_query_tokens} queries"),
        ("frames", f"{media.num_frames} per clip, {media.image_size} px, {media.normalization} normalisation"),
    ]
    if spec.llm is not None:
        llm = spec.llm
        base = llm.path or f"preset {llm.preset}"
        adapter = f", LoRA r={llm.lora_r} alpha={llm.lora_alpha}" if llm.lora else ""
        rows.append(("LLM", f"{base} ({llm.dtype}{adapter}), prompt template {llm.conversation_template}"))
        rows.append(("Q-Former reads the instruction", "yes" if spec.videochat2.qformer_text_input else "no"))
    return "## Model\n\n" + table(("part", "settings"), rows)


def training(stages: Sequence[StageDir]) -> str:
    rows = [stage_row(stage) for stage in stages]
    return "## Training\n\n" + table(("stage", "data", "steps", "batch", "lr", "samples", "final loss"), rows)


def stage_row(stage: StageDir) -> tuple:
    """One stage's data, schedule and outcome, read from its config.yaml and summary.json."""
    config = yaml.safe_load(stage.config.read_text()) if stage.config.is_file() else {}
    summary = json.loads(stage.summary.read_text()) if stage.summary.is_file() else {}
    data = config.get("data") or {}
    task = data.get("task")
    corpora = (data.get("corpora") or {}).get(task) if task else None
    entries = corpora if isinstance(corpora, list) else [corpora] if corpora else []
    names = ", ".join(str(entry.get("name")) for entry in entries) or "?"
    loss = (summary.get("metrics") or {}).get("train/loss")
    return (
        stage.stage,
        names,
        summary.get("steps", (config.get("trainer") or {}).get("max_steps", "?")),
        data.get("batch_size", "?"),
        (config.get("optimizer") or {}).get("lr", "?"),
        summary.get("samples", "?"),
        f"{loss:.4f}" if isinstance(loss, (int, float)) else "?",
    )


def evaluation(eval_dir: Path | None, inherited: str | None = None) -> str:
    """One row per results.json of the run: MVBench-format accuracies, or the benchmark's headline numbers."""
    files = sorted(eval_dir.glob("*/results.json")) if eval_dir is not None and eval_dir.is_dir() else []
    if not files:
        return inherited or "## Evaluation\n\nNo evaluation results were recorded with this run."
    rows = [result_row(path.parent.name, json.loads(path.read_text())) for path in files]
    return "## Evaluation\n\n" + table(("benchmark", "questions", "accuracy", "strict", "macro"), rows)


def result_row(name: str, results: dict) -> tuple:
    if "avg" in results:
        return (name, results.get("n"), pct(results["avg"]), pct(results.get("avg_strict")), pct(results["macro_avg"]))
    headline = {k: v for k, v in results.items() if isinstance(v, (int, float)) and k.startswith(("r_mean", "acc"))}
    summary = ", ".join(f"{k} {v:.1f}" for k, v in headline.items()) or "see results.json"
    return (name, results.get("n", results.get("n_videos", "?")), summary, "", "")


def pct(value: float | None) -> str:
    return f"{value:.1f}%" if isinstance(value, (int, float)) else ""


def usage(name: str) -> str:
    return (
        "## Use\n\n```python\nfrom videochat2 import ChatSession\n\n"
        f'chat = ChatSession.from_pretrained("{name}").watch("clip.mp4")\n'
        'print(chat.ask("What happens in the video?"))\n```\n\n'
        "or, the transformers way (no remote code): "
        f'`VideoChat2ForConditionalGeneration.from_pretrained("{name}")` from `videochat2.hf`.'
    )


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)

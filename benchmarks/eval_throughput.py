"""MVBench questions/s: the batched letter-logit path versus the official per-question generate loop.

Both run in one process on the same trained model, questions and pixels:
- fast: DataLoader workers decode into a fresh (cold) frame cache, batches are left-padded, one forward
  pass reads the option-letter logits; then the same again from the now warm cache (a re-run, or a
  second model on the same benchmark), which must give the same letters;
- official: one question at a time, decoded on the fly, greedy generation of up to 100 tokens.
With `--model-shape 7b` (or `tiny`, its CPU dry run) the model is instead a random one of the paper's
shape (UMT-L/16, the BERT-base Q-Former, a 7B Llama in fp16, 96 visual tokens; the original's precision via
`videochat2.device`) and the figures are the three parts of an MVBench-sized run, each timed alone on a
sample of batches and projected to `--questions` (4,000): clip decoding (the evaluation's own dataset and
DataLoader workers, 16 frames of 224 px, over the embedded benchmark's clips), ViT + Q-Former, and the LLM
(letter logits; batched greedy generation of `--new-tokens`, the length of a typical official answer).
`agreement` compares the letters both protocols score. It is only meaningful where greedy's first token
is a letter, so it is also reported on that subset, and against greedy's first generated token itself:
the official post-processing keeps only the text after the last `Assistant:`, so a model that rambles
on into a new turn gets scored on a later letter than the one it answered first. The last line is a
JSON object.

    python benchmarks/eval_throughput.py --run s1a --per-task 5
    python benchmarks/eval_throughput.py --model-shape 7b --questions 4000      # one GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from videochat2.eval.mvbench.answerers import GenerateAnswerer, LetterLogitsAnswerer
from videochat2.eval.mvbench.data import FrameCache, MVBenchCollator, MVBenchDataset
from videochat2.eval.mvbench.run import question_loader
from videochat2.eval.mvbench.scoring import parse_letter

CONF = Path(__file__).resolve().parents[1] / "conf"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="default", help="run_name whose stage-3 result is measured")
    parser.add_argument("--per-task", type=int, default=5, help="questions per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-shape", choices=("7b", "tiny"), help="time a random model of this shape instead")
    parser.add_argument("--questions", type=int, default=4000, help="--model-shape: the run size projected to")
    parser.add_argument("--sample-batches", type=int, default=6, help="--model-shape: batches timed per part")
    parser.add_argument("--new-tokens", type=int, default=8, help="--model-shape: greedy tokens per answer")
    parser.add_argument("--benchmark-root", default="data/synthetic/mvbench", help="--model-shape: clips to decode")
    parser.add_argument("--device", default="auto", help="--model-shape: auto | cpu | cuda | cuda:N")
    parser.add_argument("overrides", nargs="*", help="further eval.py overrides, e.g. paths.output_root=...")
    return parser.parse_args()


def load(args: argparse.Namespace):
    from hydra import compose, initialize_config_dir

    from recipes.cli import quote_stage_overrides
    from recipes.evaluate import evaluated_model, frame_spec, prompt_family
    from recipes.schema import register

    overrides = [f"run_name={args.run}", f"eval.limit={args.per_task}", *args.overrides]
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=quote_stage_overrides(overrides))
    evaluated = evaluated_model(cfg, 3)
    loaded = evaluated.loaded
    spec = frame_spec(cfg, evaluated.trained_media)
    family = prompt_family(cfg, loaded)
    qformer = loaded.qformer_tokenizer if loaded.model.config.qformer_text_input else None
    return cfg, spec, loaded, MVBenchCollator(loaded.llm_tokenizer, qformer, family), family


def fast_path(dataset: MVBenchDataset, collate, answerer, args) -> tuple[list, float]:
    start = time.perf_counter()
    answers = []
    for batch in question_loader(dataset, collate, args.batch_size, args.workers):
        answers.extend(answerer(batch))
    return answers, time.perf_counter() - start


def official_loop(dataset: MVBenchDataset, collate, answerer) -> tuple[list, float]:
    start = time.perf_counter()
    answers = [answerer(collate([dataset[i]]))[0] for i in range(len(dataset))]
    return answers, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.set_grad_enabled(False)
    if args.model_shape:
        from benchmarks.eval_shaped import shaped_run

        print(json.dumps(shaped_run(args)))
        return
    from recipes.evaluate import select_questions

    cfg, spec, loaded, collate, family = load(args)
    questions = select_questions(cfg)
    tokenizer = loaded.llm_tokenizer
    letters = LetterLogitsAnswerer(loaded.model, tokenizer)
    with tempfile.TemporaryDirectory() as cache_dir:
        fast_set = MVBenchDataset(questions, spec, FrameCache(cache_dir))
        fast, fast_s = fast_path(fast_set, collate, letters, args)
        warm, warm_s = fast_path(fast_set, collate, letters, args)
    slow_set = MVBenchDataset(questions, spec, FrameCache(None))
    slow, slow_s = official_loop(slow_set, collate, GenerateAnswerer(loaded.model, tokenizer, family))
    fast_letters = [parse_letter(a.prediction, len(q.candidates)) for a, q in zip(fast, questions)]
    slow_letters = [parse_letter(a.prediction, len(q.candidates)) for a, q in zip(slow, questions)]
    agree = [f == s for f, s in zip(fast_letters, slow_letters)]
    letter_first = [a.extra["argmax_is_letter"] for a in fast]
    agree_letter_first = [ok for ok, first in zip(agree, letter_first) if first]
    agree_first_token = [f == s.extra["first_token"] for f, s in zip(fast_letters, slow)]
    n = len(questions)
    result = {
        "questions": n,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "letter_logits_qps": round(n / fast_s, 3),
        "generate_qps": round(n / slow_s, 3),
        "ratio": round(slow_s / fast_s, 2),
        "letter_logits_warm_cache_qps": round(n / warm_s, 3),
        "ratio_warm_cache": round(slow_s / warm_s, 2),
        "warm_cache_same_letters": [a.prediction for a in warm] == [a.prediction for a in fast],
        "agreement": round(sum(agree) / n, 4),
        "greedy_first_token_is_letter": round(sum(letter_first) / n, 4),
        "agreement_where_first_token_is_letter": (
            round(sum(agree_letter_first) / len(agree_letter_first), 4) if agree_letter_first else None
        ),
        "agreement_with_first_generated_token": round(sum(agree_first_token) / n, 4),
        "generate_unparsed": sum(s is None for s in slow_letters),
    }
    print(
        f"letter_logits: {n} questions in {fast_s:.1f} s (cold frame cache), {warm_s:.1f} s (warm); "
        f"generate: {slow_s:.1f} s"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

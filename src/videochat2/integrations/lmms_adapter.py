"""Answer lmms-eval requests with a `ChatSession`, without importing lmms-eval.

lmms-eval hands a model `Instance`s whose `args` are, for `generate_until`,
`(context, gen_kwargs, doc_to_visual, doc_id, task, split)` and, for `loglikelihood`,
`(context, continuation or doc_to_target, doc_to_visual, doc_id, task, split)`; the document itself is
`task_dict[task][split][doc_id]`, which the harness fills in before asking. The context becomes the user turn
of the conversation template the model was trained with, after the video. Keeping this logic free of
lmms-eval lets it be tested (and used by `benchmarks/lmms_eval_prompt.py`) where lmms-eval is not installed;
`videochat2.integrations.lmms_eval` is the registered class built on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from videochat2.chat import ChatSession, batches
from videochat2.loader import load_model

log = logging.getLogger(__name__)

# Generation settings lmms-eval tasks pass that mean the same to `transformers.generate`.
GENERATION_KEYS = ("max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_p", "num_beams")
# Keys that are not generation settings: `until` is applied to the text, the rest are the harness's own.
NOT_GENERATION_KEYS = ("until",)
# Settings already reported as unused: once per process, not once per request.
REPORTED: set[str] = set()


def generation_settings(gen_kwargs: dict) -> dict:
    """The `generate` settings of a task's gen_kwargs; temperature 0 (lmms-eval's greedy) means no sampling."""
    settings = {k: gen_kwargs[k] for k in GENERATION_KEYS if gen_kwargs.get(k) is not None}
    if not settings.get("do_sample") or settings.get("temperature") == 0:
        settings = {k: v for k, v in settings.items() if k not in ("temperature", "top_p")}
        settings["do_sample"] = False
    ignored = set(gen_kwargs) - set(GENERATION_KEYS) - set(NOT_GENERATION_KEYS) - REPORTED
    if ignored:
        log.warning("lmms-eval generation settings not used by videochat2: %s", ", ".join(sorted(ignored)))
        REPORTED.update(ignored)
    return settings


def stop_sequences(gen_kwargs: dict) -> list[str]:
    """`until` as a list (lmms-eval allows one string or a list)."""
    until = gen_kwargs.get("until") or []
    return [until] if isinstance(until, str) else [s for s in until if s]


def cut_at(text: str, until: Sequence[str]) -> str:
    """Text before the first of the stop sequences."""
    cut = min((text.index(s) for s in until if s in text), default=len(text))
    return text[:cut]


def continuation_ids(tokenizer, context: str, continuation: str) -> list[int]:
    """Token ids of `continuation` as they follow `context`: the tail of the joint tokenization when the
    context tokenizes the same inside it (merges at the boundary would shift the split), else on its own."""
    head = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    if whole[: len(head)] == head and len(whole) > len(head):
        return whole[len(head) :]
    return tokenizer(continuation, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def continuation_logprobs(
    session: ChatSession,
    pixels: torch.Tensor,
    prompts: Sequence[tuple[str, str, str]],
    continuations: Sequence[str],
) -> list[tuple[float, bool]]:
    """(log P(continuation | prompt, clip), whether greedy decoding would produce it) per row of `pixels`.

    Each prompt is (text before the visual tokens, text after, Q-Former instruction); the continuation's
    tokens are appended after it, so with left padding every row's continuation ends the sequence.
    """
    inputs = session.encode(pixels, prompts)
    targets = []
    for i, ((_, after, _), continuation) in enumerate(zip(prompts, continuations)):
        ids = continuation_ids(session.loaded.llm_tokenizer, after, continuation)
        if not ids:
            raise ValueError(f"the continuation {continuation!r} has no tokens to score")
        target = torch.tensor(ids, device=inputs["input_ids_after"][i].device)
        inputs["input_ids_after"][i] = torch.cat([inputs["input_ids_after"][i], target])
        targets.append(target)
    model = session.loaded.model
    with session.loaded.autocast():
        logits = model.llm(**model.prompt_batch(**inputs), use_cache=False).logits.float()
    out = []
    for row, target in zip(logits, targets):
        logprobs = row[-len(target) - 1 : -1].log_softmax(-1)
        picked = logprobs.gather(-1, target[:, None]).squeeze(-1)
        out.append((float(picked.sum()), bool((logprobs.argmax(-1) == target).all())))
    return out


def flat_visuals(visuals: Any) -> list:
    """doc_to_visual's answer as a flat list (lmms-eval returns a list, sometimes of lists)."""
    if visuals is None:
        return []
    if isinstance(visuals, (list, tuple)):
        return [v for item in visuals for v in flat_visuals(item)]
    return [visuals]


def chunks(rows: Sequence[int], size: int) -> list[list[int]]:
    return [list(rows[s : s + size]) for s in range(0, len(rows), size)]


class LmmsAdapter:
    """The lmms-eval request methods over a `ChatSession`; `task_dict` is set by the harness (or a test).

    model_args: `pretrained` (a run, stage or export directory, or an official file), `device`, `precision`
    (as `load_model`), `num_frames` (default: as trained), `batch_size` (clips per forward pass).
    """

    def __init__(
        self,
        pretrained: str,
        device: str = "auto",
        precision: str = "auto",
        num_frames: int | None = None,
        batch_size: int | str = 1,
        pretrained_root: str | None = None,
        **unused: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(k for k, v in unused.items() if v is not None and k != "max_batch_size")
        if unknown:
            raise ValueError(f"unknown videochat2 model_args: {', '.join(unknown)}")
        loaded = load_model(pretrained, pretrained_root=pretrained_root, device=device or "auto", precision=precision)
        if num_frames is not None:
            loaded.spec = replace(loaded.spec, media=replace(loaded.spec.media, num_frames=int(num_frames)))
        self.session = ChatSession(loaded)
        self.batch_size = int(batch_size)
        self.task_dict: dict = {}

    def visual(self, doc_to_visual: Callable | Any, doc_id: int, task: str, split: str) -> str | Path:
        """The one video (or image) file a request is about."""
        doc = self.task_dict[task][split][doc_id]
        visuals = flat_visuals(doc_to_visual(doc) if callable(doc_to_visual) else doc_to_visual)
        if len(visuals) != 1 or not isinstance(visuals[0], (str, Path)):
            raise ValueError(f"{task} doc {doc_id}: videochat2 answers about one video or image file, got {visuals!r}")
        return visuals[0]

    def generate_until(self, requests: Sequence) -> list[str]:
        """Greedy (or the task's) answers, one per request in request order, cut at the task's `until`.

        Requests go `batch_size` at a time, so only that many clips are decoded at once (lmms-eval sends
        every request of every task in one call).
        """
        answers: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(generation_settings(request.args[1]).items())), []).append(i)
        for rows in groups.values():
            session = replace(self.session, generation=generation_settings(requests[rows[0]].args[1]))
            for chunk in chunks(rows, self.batch_size):
                args = [requests[i].args for i in chunk]
                media = [self.visual(*a[2:6]) for a in args]
                texts = session.answer_batch(media, [a[0] for a in args], batch_size=self.batch_size)
                for i, a, text in zip(chunk, args, texts):
                    answers[i] = cut_at(text, stop_sequences(a[1]))
        return answers

    def loglikelihood(self, requests: Sequence) -> list[tuple[float, bool]]:
        """(log-probability of the continuation after the context and the video, whether it is greedy)."""
        results: list[tuple[float, bool]] = []
        for chunk in chunks(range(len(requests)), self.batch_size):
            items = [self.scoring_item(requests[i].args) for i in chunk]
            clips = [self.session.clip(media) for _, _, media in items]
            scores: dict[int, tuple[float, bool]] = {}
            for rows in batches(clips, self.batch_size):
                kind = clips[rows[0]][1]
                prompts = [self.session.conversation(items[i][0], [], kind) for i in rows]
                pixels = torch.cat([clips[i][0] for i in rows])
                scored = continuation_logprobs(self.session, pixels, prompts, [items[i][1] for i in rows])
                scores.update(zip(rows, scored))
            results += [scores[i] for i in range(len(items))]
        return results

    def scoring_item(self, args: tuple) -> tuple[str, str, str | Path]:
        """(context, continuation, media) of a loglikelihood request; the continuation may be doc_to_target."""
        context, target, doc_to_visual, doc_id, task, split = args
        continuation = target(self.task_dict[task][split][doc_id]) if callable(target) else target
        return context, str(continuation), self.visual(doc_to_visual, doc_id, task, split)

    def generate_until_multi_round(self, requests: Sequence) -> list[str]:
        raise NotImplementedError("videochat2 answers single-round tasks only (generate_until, loglikelihood)")

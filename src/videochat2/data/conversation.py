"""Prompt templates of the VideoChat2 LLM families and the label masks that pick what the LLM learns.

A conversation is a sequence of text segments, each marked learned or not, containing one media
placeholder (`<VideoHere>` or `<ImageHere>`) between `<Video>`/`</Video>` (or `<Image>`/`</Image>`). The
model splices the visual tokens where the placeholder stands, so the text is tokenized as two parts: the
part before the placeholder, which gets the BOS token, and the part after it, which does not (this is the
split the original uses in training and inference). Position 0 of the LLM input is therefore the BOS slot;
the official stage-3 checkpoints were trained with a constant vector there instead of the BOS embedding,
which is the model's switch, not this module's.

Labels come from ONE tokenization of each part, read through the character offsets of a fast tokenizer:
a token is learned when its first non-space character lies in a learned segment. The original instead
tokenized each piece separately and asserted that the piece lengths add up, which SentencePiece merges
across piece boundaries break.

Learned spans per template (stage 3), as in the original code:
- `vicuna_v0`: every `###Human:` separator after the media message, every `###Assistant: answer` block and
  the closing `###`; the media message, questions and everything before the media are masked.
- `mistral_instruct`: ` answer </s>` of every turn; `[INST] … [/INST]` parts are masked.
- `phi3`: `answer<|end|>\\n` of every turn (the last without its newline: the original strips the text).
- `chat_template` (the tokenizer's own chat template): each assistant message as rendered, with the
  template's end-of-turn text.
Stage 2 (captions) learns the caption and the family's end symbol only.

Multiple-choice records (`build_choice_conversation`) are rendered in the benchmark's own prompt instead,
ending in `Best option:(`, and learn `X) option` plus the family's end symbol: what the benchmark reads.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from videochat2.data.formats import MultipleChoice
from videochat2.data.qa_generation import format_question
from videochat2.models.videochat2 import IGNORE_INDEX
from videochat2.prompts import PROMPT_FAMILIES, VIDEO_PLACEHOLDER, build_prompt, option_letter

TEMPLATES = ("vicuna_v0", "mistral_instruct", "phi3", "chat_template")

MEDIA_TAGS = {
    "video": ("<Video>", "<VideoHere>", "</Video>"),
    "image": ("<Image>", "<ImageHere>", "</Image>"),
}

CAPTION_FORMATS = {
    "vicuna_v0": ("###Human: {} ###Assistant: ", "###"),
    "mistral_instruct": ("[INST] {} [/INST]", "</s>"),
    "phi3": ("<|user|>\n{}<|end|>\n<|assistant|>\n", "<|end|>"),
}
# Where the original pads a stage-2 batch's captions (its Phi-3 class pads on the left, between prompt and caption).
CAPTION_PADDING_SIDES = {"vicuna_v0": "right", "mistral_instruct": "right", "phi3": "left"}
# The official stage-2 caption requests (source in the file); `caption_prompts("video", "official")`.
OFFICIAL_CAPTION_PROMPTS = Path(__file__).with_name("caption_prompts.json")

VIDEO_CAPTION_PROMPTS = (
    "<Video><VideoHere></Video> Describe the following video concisely.",
    "<Video><VideoHere></Video> Give a short description of this video.",
    "<Video><VideoHere></Video> Summarize what happens in the video in one sentence.",
    "<Video><VideoHere></Video> What is shown in this clip? Answer briefly.",
    "<Video><VideoHere></Video> Write a brief caption for the video.",
    "<Video><VideoHere></Video> Tell me in a few words what the video shows.",
    "<Video><VideoHere></Video> Provide a concise caption of the events in this video.",
    "<Video><VideoHere></Video> Briefly explain the content of the clip.",
    "<Video><VideoHere></Video> Offer a one-line summary of the video.",
    "<Video><VideoHere></Video> Describe the main action in this video in short.",
)

IMAGE_CAPTION_PROMPTS = (
    "<Image><ImageHere></Image> Describe the following image concisely.",
    "<Image><ImageHere></Image> Give a short description of this picture.",
    "<Image><ImageHere></Image> Summarize the image in one sentence.",
    "<Image><ImageHere></Image> What is shown in this photo? Answer briefly.",
    "<Image><ImageHere></Image> Write a brief caption for the image.",
    "<Image><ImageHere></Image> Tell me in a few words what the image shows.",
    "<Image><ImageHere></Image> Provide a concise caption of this picture.",
    "<Image><ImageHere></Image> Briefly explain the content of the photo.",
    "<Image><ImageHere></Image> Offer a one-line summary of the image.",
    "<Image><ImageHere></Image> Describe the main subject of this image in short.",
)


@dataclass(frozen=True)
class Segment:
    text: str
    learned: bool = False


@dataclass(frozen=True)
class Conversation:
    """Rendered text in learned/unlearned segments, plus the text the Q-Former reads."""

    segments: tuple[Segment, ...]
    placeholder: str
    instruction: str = ""

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)

    def learned_text(self) -> list[str]:
        return [segment.text for segment in self.segments if segment.learned]

    def split(self) -> tuple[str, str, list[tuple[int, int]]]:
        """The text before and after the placeholder, and the learned character spans of the latter."""
        text = self.text
        if text.count(self.placeholder) != 1:
            raise ValueError(f"the conversation must hold {self.placeholder} exactly once: {text!r}")
        cut = text.index(self.placeholder)
        after_start = cut + len(self.placeholder)
        spans, position = [], 0
        for segment in self.segments:
            start, position = position, position + len(segment.text)
            if not segment.learned:
                continue
            if start < after_start:
                raise ValueError("a learned segment may not precede or contain the media placeholder")
            spans.append((start - after_start, position - after_start))
        return text[:cut], text[after_start:], spans


def media_tags(media_type: str) -> tuple[str, str, str]:
    if media_type not in MEDIA_TAGS:
        raise ValueError(f"media_type must be one of {sorted(MEDIA_TAGS)}, got {media_type!r}")
    return MEDIA_TAGS[media_type]


def frame_time_message(seconds: Sequence[float]) -> str:
    """The original's optional note on when the frames were taken, placed right after the media."""
    stamps = ", ".join(f"{second:.1f}" for second in seconds)
    return f" The video contains {len(seconds)} frames sampled at {stamps} seconds."


def _turns(record: Mapping, rng: random.Random | None) -> list[dict[str, str]]:
    """The QA list, shuffled (a copy) when an rng is given, since turn order carries no meaning."""
    turns = [{"i": qa.get("i", "") or "", "q": qa.get("q", "") or "", "a": qa["a"]} for qa in record["QA"]]
    if not turns:
        raise ValueError("an instruction record needs at least one QA turn")
    if rng is not None and len(turns) > 1:
        rng.shuffle(turns)
    return turns


def _vicuna(turns: list[dict[str, str]], media: tuple[str, str, str], system: str, message: str) -> list[Segment]:
    if system and not system.endswith(" "):
        raise ValueError("a Vicuna system prompt must end with a space")
    start, placeholder, end = media
    instruction = turns[0]["i"] + " " if turns[0]["i"] else ""
    segments = [Segment(f"{system}{instruction}###Human: {start}{placeholder}{end}{message.rstrip()}")]
    for turn in turns:
        if turn["q"]:
            segments += [Segment(" ###Human:", True), Segment(" " + turn["q"])]
        segments.append(Segment(" ###Assistant: " + turn["a"], True))
    segments.append(Segment(" ###", True))
    return segments


def _mistral(turns: list[dict[str, str]], media: tuple[str, str, str], system: str, message: str) -> list[Segment]:
    start, placeholder, end = media
    prefix = f"{system}{turns[0]['i']} ".lstrip()
    segments = [Segment(f"{prefix}[INST] {start}{placeholder}{end}{message.rstrip()} [/INST]")]
    for turn in turns:
        if turn["q"]:
            segments.append(Segment(f" [INST] {turn['q']} [/INST]"))
        segments.append(Segment(f" {turn['a']} </s>", True))
    return segments


def _phi3(turns: list[dict[str, str]], media: tuple[str, str, str], system: str, message: str) -> list[Segment]:
    start, placeholder, end = media
    system_text = system + turns[0]["i"]
    header = f"<|system|>\n{system_text}<|end|>\n" if system_text else ""
    first = f"{header}<|user|>\n{start}{placeholder}{end}{message}\n"
    segments = []
    for index, turn in enumerate(turns):
        opening = first if index == 0 else "<|user|>\n"
        segments.append(Segment(f"{opening}{turn['q']}<|end|>\n<|assistant|>\n"))
        segments.append(Segment(f"{turn['a']}<|end|>\n", True))
    # The original strips the conversation: the last answer ends at `<|end|>`, no newline to learn.
    segments[-1] = Segment(segments[-1].text.rstrip("\n"), True)
    return segments


def _chat_messages(
    turns: list[dict[str, str]], media: tuple[str, str, str], system: str, message: str
) -> list[dict[str, str]]:
    start, placeholder, end = media
    system_text = (system + turns[0]["i"]).strip()
    messages = [{"role": "system", "content": system_text}] if system_text else []
    for index, turn in enumerate(turns):
        parts = [f"{start}{placeholder}{end}{message}"] if index == 0 else []
        parts += [turn["q"]] if turn["q"] else []
        messages.append({"role": "user", "content": "\n".join(parts)})
        messages.append({"role": "assistant", "content": turn["a"]})
    return messages


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)


def chat_template_segments(messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase) -> list[Segment]:
    """Segments of a chat-template rendering; an assistant turn spans from its generation prompt to its end.

    Relies on each rendered prefix being a prefix of the whole, which holds for append-only templates;
    templates that rewrite earlier turns are refused rather than mislabelled.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'chat_template' needs a tokenizer that defines a chat template")
    full = _render(tokenizer, messages, prompt=False)
    bos = tokenizer.bos_token or ""
    skip = len(bos) if bos and full.startswith(bos) else 0
    segments, position = [], skip
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt_text = _render(tokenizer, messages[:index], prompt=True)
        turn_text = _render(tokenizer, messages[: index + 1], prompt=False)
        start, stop = len(prompt_text), len(turn_text)
        if not (full.startswith(prompt_text) and full.startswith(turn_text) and position <= start < stop):
            raise ValueError("the tokenizer's chat template is not append-only; learned spans cannot be located")
        segments += [Segment(full[position:start]), Segment(full[start:stop], True)]
        position = stop
    if position < len(full):
        segments.append(Segment(full[position:]))
    return segments


def qformer_instruction(template: str, turns: list[dict[str, str]]) -> str:
    """Vicuna's Q-Former also reads the first question; the other families read the instruction only."""
    instruction = turns[0]["i"]
    if template == "vicuna_v0":
        return f"{instruction} {turns[0]['q']}".strip() if instruction else ""
    return instruction


def build_conversation(
    record: Mapping,
    template: str,
    media_type: str = "video",
    *,
    system: str = "",
    time_message: str = "",
    tokenizer: PreTrainedTokenizerBase | None = None,
    rng: random.Random | None = None,
) -> Conversation:
    """A stage-3 conversation from an instruction record `{"QA": [{"i", "q", "a"}, ...]}`.

    `time_message` is the text right after the media (see `frame_time_message`); `tokenizer` is needed only
    for `chat_template`; `rng` shuffles multi-turn QA.
    """
    turns = _turns(record, rng)
    media = media_tags(media_type)
    if template == "vicuna_v0":
        segments = _vicuna(turns, media, system, time_message)
    elif template == "mistral_instruct":
        segments = _mistral(turns, media, system, time_message)
    elif template == "phi3":
        segments = _phi3(turns, media, system, time_message)
    elif template == "chat_template":
        if tokenizer is None:
            raise ValueError("template 'chat_template' needs the tokenizer")
        segments = chat_template_segments(_chat_messages(turns, media, system, time_message), tokenizer)
    else:
        raise ValueError(f"unknown conversation template {template!r}; choose one of {TEMPLATES}")
    return Conversation(tuple(segments), media[1], qformer_instruction(template, turns))


# What ends an answer in each family with a benchmark prompt (the training templates' own end of turn).
CHOICE_ANSWER_END = {"vicuna_v0": " ###", "mistral_instruct": " </s>", "phi3": "<|end|>\n"}


def build_choice_conversation(
    choice: MultipleChoice,
    template: str,
    media_type: str = "video",
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    rng: random.Random | None = None,
    shuffle: bool = False,
) -> Conversation:
    """A multiple-choice sample in the benchmark's prompt, learning `X) option` after `Best option:(`.

    Training on the prompt the benchmark asks with, and giving the Q-Former what it reads there (the system
    prompt), leaves nothing for a small model to bridge between training and evaluation. `shuffle` re-draws
    the option order with `rng`, so the letter cannot be remembered per clip and must be read off the options.
    Templates without a benchmark prompt (`chat_template`, which needs `tokenizer`) get one QA turn in their
    own format instead.
    """
    candidates = list(choice.candidates)
    if shuffle:
        if rng is None:
            raise ValueError("shuffling the options needs an rng")
        rng.shuffle(candidates)
    letter = option_letter(candidates.index(choice.answer))
    if template not in PROMPT_FAMILIES:
        turn = {"i": "", "q": format_question(choice.question, candidates), "a": f"({letter}) {choice.answer}"}
        return build_conversation({"QA": [turn]}, template, media_type, tokenizer=tokenizer)
    start, placeholder, end = media_tags(media_type)
    prompt = build_prompt(choice.question, candidates, template)
    text = prompt.text.replace(VIDEO_PLACEHOLDER, f"{start}{placeholder}{end}")
    answer = Segment(f"{letter}) {choice.answer}{CHOICE_ANSWER_END[template]}", True)
    return Conversation((Segment(text), answer), placeholder, prompt.qformer_instruction)


@lru_cache(maxsize=1)
def _official_caption_prompts() -> dict[str, tuple[str, ...]]:
    data = json.loads(OFFICIAL_CAPTION_PROMPTS.read_text(encoding="utf-8"))
    return {"video": tuple(data["video"]), "image": tuple(data["image"])}


CAPTION_PROMPT_SETS = ("official", "ours")


def caption_prompts(media_type: str, prompt_set: str = "ours") -> tuple[str, ...]:
    """The caption requests of a media type: the original's 11 (`official`) or our 10 (`ours`).

    `ours` stays the embedded default's set because its tiny LLM is pretrained on those phrasings.
    """
    media_tags(media_type)
    if prompt_set == "official":
        return _official_caption_prompts()[media_type]
    if prompt_set != "ours":
        raise ValueError(f"caption prompt set must be one of {CAPTION_PROMPT_SETS}, got {prompt_set!r}")
    return VIDEO_CAPTION_PROMPTS if media_type == "video" else IMAGE_CAPTION_PROMPTS


def caption_request(template: str, media_type: str, prompt_set: str, rng: random.Random) -> str:
    """One caption request drawn from the set and wrapped in the family's template (the original: per batch)."""
    if template not in CAPTION_FORMATS:
        raise ValueError(f"caption batches need one of the templates {sorted(CAPTION_FORMATS)}, got {template!r}")
    return CAPTION_FORMATS[template][0].format(rng.choice(caption_prompts(media_type, prompt_set)))


def prefixes_a_space(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer starts every text with a word-start piece (SentencePiece's `▁`), as LLaMA,
    Mistral and Phi-3 do; byte-level BPEs do not, and a text tokenized apart keeps only the spaces it has."""
    first = tokenizer("a", add_special_tokens=False)["input_ids"][:1]
    return bool(first) and tokenizer.convert_ids_to_tokens(first)[0].startswith("▁")


def tokenize_caption_batch(
    request: str,
    captions: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    max_length: int,
    padding_side: str | None = None,
    mask_pad_id: bool = True,
) -> dict[str, list[torch.Tensor]]:
    """A stage-2 batch tokenized as the original does, per sample `input_ids_before/after`, labels, masks.

    The request (one for the batch, holding the media placeholder) and the captions are tokenized apart, so
    each caption starts a fresh SentencePiece word; `caption + end symbol` is cut on the right to `max_length`
    tokens (the prompt does not count) and padded to the batch's longest on `padding_side` (None: the
    family's, see `CAPTION_PADDING_SIDES`). With `mask_pad_id` every caption token equal to the pad id is
    unlearned, as in the original, so a family whose end symbol is its pad (Mistral's `</s>`) never learns it;
    False learns the end symbol wherever it survives. The after part carries the padding with attention 0
    (`attention_after`): left padding then sits between the request and the caption, as in the original.
    """
    side = padding_side or CAPTION_PADDING_SIDES[template]
    if side not in ("left", "right"):
        raise ValueError(f"caption padding side must be left or right, got {side!r}")
    placeholder = next(tags[1] for tags in MEDIA_TAGS.values() if tags[1] in request)
    before_text, after_text = request.split(placeholder)
    # The original's Vicuna tokenizer (slow SentencePiece) drops the template's trailing space: a SentencePiece
    # caption brings its own `▁`. A byte-level tokenizer adds none, so the space goes in front of the caption.
    space = after_text[len(after_text.rstrip(" ")) :]
    after_text = after_text.rstrip(" ")
    lead = "" if prefixes_a_space(tokenizer) else space
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    before = torch.tensor(bos + _encode(tokenizer, before_text)[0], dtype=torch.long)
    after = torch.tensor(_encode(tokenizer, after_text)[0], dtype=torch.long)
    end = CAPTION_FORMATS[template][1]
    texts = [tokenizer(lead + c + end, add_special_tokens=False)["input_ids"][:max_length] for c in captions]
    longest = max(len(ids) for ids in texts)
    batch: dict[str, list[torch.Tensor]] = {key: [] for key in ("before", "after", "labels", "attention")}
    for ids in texts:
        pad = [tokenizer.pad_token_id] * (longest - len(ids))
        real = [1] * len(ids)
        tokens, mask = (ids + pad, real + [0] * len(pad)) if side == "right" else (pad + ids, [0] * len(pad) + real)
        learned = [m == 1 and not (mask_pad_id and t == tokenizer.pad_token_id) for t, m in zip(tokens, mask)]
        batch["before"].append(before)
        batch["after"].append(torch.cat([after, torch.tensor(tokens, dtype=torch.long)]))
        labels = [t if keep else IGNORE_INDEX for t, keep in zip(tokens, learned)]
        batch["labels"].append(
            torch.cat([torch.full_like(after, IGNORE_INDEX), torch.tensor(labels, dtype=torch.long)])
        )
        batch["attention"].append(torch.cat([torch.ones_like(after), torch.tensor(mask, dtype=torch.long)]))
    return {
        "input_ids_before": batch["before"],
        "input_ids_after": batch["after"],
        "labels_after": batch["labels"],
        "attention_after": batch["attention"],
    }


def build_caption_conversation(
    caption: str,
    template: str,
    media_type: str = "video",
    *,
    prompt: str | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    rng: random.Random | None = None,
) -> Conversation:
    """A stage-2 sample: a caption request (random phrasing when `rng` is given) answered by the caption."""
    if prompt is None:
        prompts = caption_prompts(media_type)
        prompt = rng.choice(prompts) if rng is not None else prompts[0]
    placeholder = media_tags(media_type)[1]
    if template == "chat_template":
        if tokenizer is None:
            raise ValueError("template 'chat_template' needs the tokenizer")
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": caption}]
        return Conversation(tuple(chat_template_segments(messages, tokenizer)), placeholder)
    if template not in CAPTION_FORMATS:
        raise ValueError(f"unknown conversation template {template!r}; choose one of {TEMPLATES}")
    wrapper, end_symbol = CAPTION_FORMATS[template]
    request = wrapper.format(prompt)
    joiner = "" if request[-1].isspace() else " "
    segments = (Segment(request), Segment(f"{joiner}{caption}{end_symbol}", True))
    return Conversation(segments, placeholder)


def leading_special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The BOS an inference prompt starts with: the tokenizer's own choice where it states one.

    The original's inference (demos, MVBench) tokenizes the prompt's first segment with the tokenizer's
    special tokens, so BOS is there only where the tokenizer adds one (Llama, Mistral; not Phi-3, whose
    post-processor adds nothing). A bare tokenizer with no post-processor states nothing, and gets its BOS
    (when it has one) as training gives it. Training always has the BOS slot.
    """
    if tokenizer.bos_token_id is None:
        return []
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    if ids and ids[0] == tokenizer.bos_token_id:
        return [ids[0]]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return [] if getattr(backend, "post_processor", None) is not None else [tokenizer.bos_token_id]


def _learned_mask(text: str, offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """A token is learned when its first non-space character (its only one, if all blank) is in a span."""
    learned = [False] * len(text)
    for start, stop in spans:
        learned[start:stop] = [True] * (stop - start)
    mask = []
    for start, stop in offsets:
        if start == stop:
            mask.append(False)
            continue
        anchor = next((index for index in range(start, stop) if not text[index].isspace()), start)
        mask.append(learned[anchor])
    return mask


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    if not text:
        return [], []
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoded["input_ids"], [tuple(pair) for pair in encoded["offset_mapping"]]


def tokenize_conversation(
    conversation: Conversation, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, torch.Tensor]:
    """Token ids around the placeholder and the labels of the part after it.

    `input_ids_before` starts with BOS (when the tokenizer has one); `max_length` bounds the text tokens of
    both parts together (the visual tokens come on top), cutting the end of the after part, as the original
    truncates at the end.
    """
    if not tokenizer.is_fast:
        raise TypeError("label masks need a fast tokenizer (character offsets); load it with use_fast=True")
    before_text, after_text, spans = conversation.split()
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    before_ids = bos + _encode(tokenizer, before_text)[0]
    if len(before_ids) >= max_length:
        raise ValueError(f"the text before the media takes {len(before_ids)} tokens, max_length is {max_length}")
    after_ids, offsets = _encode(tokenizer, after_text)
    mask = _learned_mask(after_text, offsets, spans)
    keep = max_length - len(before_ids)
    labels = [token if learned else IGNORE_INDEX for token, learned in zip(after_ids, mask)]
    return {
        "input_ids_before": torch.tensor(before_ids, dtype=torch.long),
        "input_ids_after": torch.tensor(after_ids[:keep], dtype=torch.long),
        "labels_after": torch.tensor(labels[:keep], dtype=torch.long),
    }

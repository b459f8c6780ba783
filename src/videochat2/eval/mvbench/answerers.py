"""The two ways of getting an MVBench answer out of a VideoChat2 model.

- `LetterLogitsAnswerer` (the fast protocol): one forward pass per batch; the next-token distribution
  after the pre-filled `Best option:(` is restricted to the question's option letters. It equals greedy
  decoding whenever greedy's first token is a letter, so each answer also records whether the
  unrestricted argmax was one of those letters.
- `GenerateAnswerer` (the official protocol): greedy decoding of at most 100 new tokens, cut at the
  family's stop string, scored as `"(" +` the first line. Batched by default: the whole batch decodes
  together (left padding, the KV cache, each sample stopping at its own stop string and padded after
  it); `batched=False` is the reference notebook's loop, one question at a time.

Both return one `Answer` per sample with the string the scorers read (see `scoring.score_prediction`).
Batches are left-padded by the model, so an answer does not depend on the batch it came in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from videochat2.models.videochat2 import VideoChat2
from videochat2.prompts import ANSWER_PREFIX, extract_answer, get_family, option_letter

MODEL_INPUTS = ("pixel_values", "input_ids_before", "input_ids_after", "instruction_ids", "instruction_mask")
MAX_OPTIONS = 26


@dataclass
class Answer:
    """What the scorer reads (`prediction`) plus what the run log keeps about how it was obtained."""

    prediction: str
    extra: dict = field(default_factory=dict)


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def sample_inputs(inputs: dict, row: int) -> dict:
    """The model inputs of one sample of a batch, as a batch of one."""
    return {
        key: None if value is None else value[row : row + 1] if isinstance(value, torch.Tensor) else [value[row]]
        for key, value in inputs.items()
    }


def letter_token_ids(tokenizer: PreTrainedTokenizerBase, count: int, context: str = ANSWER_PREFIX) -> list[int]:
    """Token id of each of the first `count` option letters as it follows `context` (the prompt's end).

    Tokenizers merge differently at boundaries (SentencePiece may fuse `:(`), so the letter's id is read
    off the tokenization of `context + letter`, and the context must tokenize the same with it or without.
    """
    if not 1 <= count <= MAX_OPTIONS:
        raise ValueError(f"questions have 1 to {MAX_OPTIONS} options, got {count}")
    base = tokenizer(context, add_special_tokens=False)["input_ids"]
    ids = []
    for position in range(count):
        letter = option_letter(position)
        full = tokenizer(context + letter, add_special_tokens=False)["input_ids"]
        if full[: len(base)] != base or len(full) != len(base) + 1:
            raise ValueError(
                f"option letter {letter!r} does not tokenize as one token after {context!r}: {base} -> {full}"
            )
        ids.append(full[-1])
    return ids


class LetterLogitsAnswerer:
    """Argmax of the next-token logits over the valid option letters."""

    name = "letter_logits"

    def __init__(self, model: VideoChat2, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._letter_ids: dict[int, list[int]] = {}

    def letter_ids(self, count: int) -> list[int]:
        """Ids of the first `count` letters, looked up once per option count."""
        if count not in self._letter_ids:
            self._letter_ids[count] = letter_token_ids(self.tokenizer, count)
        return self._letter_ids[count]

    @torch.no_grad()
    def __call__(self, batch: dict) -> list[Answer]:
        logits = self.model.next_token_logits(**model_inputs(batch))
        return [self._answer(row, len(q.candidates)) for row, q in zip(logits, batch["questions"])]

    def _answer(self, logits: torch.Tensor, num_options: int) -> Answer:
        valid = self.letter_ids(num_options)
        restricted = logits[valid]
        choice = int(restricted.argmax())
        top = int(logits.argmax())
        return Answer(
            prediction="(" + option_letter(choice),
            extra={
                "letter_probs": [round(p, 6) for p in restricted.softmax(0).tolist()],
                "argmax_is_letter": top in valid,
                "argmax_token": self.tokenizer.convert_ids_to_tokens(top),
            },
        )


class GenerateAnswerer:
    """Greedy decoding as the reference evaluator: at most `max_new_tokens`, stopping at the stop string."""

    name = "generate"

    def __init__(
        self,
        model: VideoChat2,
        tokenizer: PreTrainedTokenizerBase,
        family: str,
        max_new_tokens: int = 100,
        batched: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.family = family
        self.max_new_tokens = max_new_tokens
        self.stop = get_family(family).stop
        self.batched = batched

    @torch.no_grad()
    def __call__(self, batch: dict) -> list[Answer]:
        inputs = model_inputs(batch)
        if self.batched:
            return [self._answer(row) for row in self._generate(inputs)]
        count = len(batch["questions"])
        return [self._answer(self._generate(sample_inputs(inputs, i))[0]) for i in range(count)]

    def _generate(self, inputs: dict) -> torch.Tensor:
        """Greedy new tokens [B, ≤ max_new_tokens]; a sample that met its stop string is padded after it."""
        return self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            num_beams=1,
            stop_strings=[self.stop],
            tokenizer=self.tokenizer,
            use_cache=True,
        )

    def _answer(self, tokens: torch.Tensor) -> Answer:
        """Text up to the first end-of-sequence; padding after it belongs to other samples' lengths.

        The first generated token is kept too: the official post-processing keeps only the text after
        the last `Assistant:`, so the scored letter can differ from the one the model emitted first.
        """
        ids = tokens.tolist()
        eos = self.tokenizer.eos_token_id
        if eos in ids:
            ids = ids[: ids.index(eos)]
        decoded = self.tokenizer.decode(ids, skip_special_tokens=True)
        first = self.tokenizer.convert_ids_to_tokens(ids[0]) if ids else None
        return Answer(prediction=extract_answer(decoded, self.family), extra={"output": decoded, "first_token": first})


def build_answerer(
    name: str,
    model: VideoChat2,
    tokenizer: PreTrainedTokenizerBase,
    family: str,
    max_new_tokens: int = 100,
    batched: bool = True,
) -> LetterLogitsAnswerer | GenerateAnswerer:
    """`letter_logits` (fast, the default) or `generate` (the official protocol, batched unless asked not to)."""
    if name == "letter_logits":
        return LetterLogitsAnswerer(model, tokenizer)
    if name == "generate":
        return GenerateAnswerer(model, tokenizer, family, max_new_tokens, batched)
    raise ValueError(f"eval.answerer must be 'letter_logits' or 'generate', got {name!r}")

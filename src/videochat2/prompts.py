"""MVBench prompts and answer post-processing, byte for byte as the reference.

Scores move with the prompt (a stray space in the answer prefix changed published
numbers), so every string here is fixed and tested against the reference text.
The rendered prompt holds ``<Video><VideoHere></Video>``: the model splits the text
at ``<VideoHere>`` and splices the visual tokens in between.

Families:

- ``vicuna_v0``: the official evaluator's ``###Human:``/``###Assistant:`` format.
- ``mistral_instruct``: the ``[INST]`` format used for VideoChat2-Mistral/HD
  (system text both in front and inside the user turn).
- ``phi3``: our own choice, since no official MVBench prompt exists for Phi-3: the
  Phi-3 chat turns of the instruction data with the same user text and answer prefix,
  ``<|user|>\\n<Video><VideoHere></Video>\\n{SYS}{QA}\\nOnly give the best
  option.<|end|>\\n<|assistant|>\\nBest option:(``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "Carefully watch the video and pay attention to the cause and sequence of events, "
    "the detail and movement of objects, and the action and pose of persons. "
    "Based on your observations, select the best option that accurately addresses "
    "the question.\n"
)
QUESTION_SUFFIX = "\nOnly give the best option."
ANSWER_PREFIX = "Best option:("
VIDEO_PLACEHOLDER = "<Video><VideoHere></Video>"
SPLIT_TOKEN = "<VideoHere>"


@dataclass(frozen=True)
class PromptFamily:
    """How one chat format wraps the MVBench user text and ends its answers."""

    name: str
    template: str
    stop: str


PROMPT_FAMILIES: dict[str, PromptFamily] = {
    "vicuna_v0": PromptFamily(
        "vicuna_v0",
        "{sys}###Human: {video}\n###Human: {user}\n###Assistant: {prefix}",
        "###",
    ),
    "mistral_instruct": PromptFamily(
        "mistral_instruct",
        "{sys}[INST] {video} [/INST] [INST] {user} [/INST] {prefix}",
        "</s>",
    ),
    "phi3": PromptFamily(
        "phi3",
        "<|user|>\n{video}\n{user}<|end|>\n<|assistant|>\n{prefix}",
        "<|end|>",
    ),
}


@dataclass(frozen=True)
class MVBenchPrompt:
    """A rendered prompt plus the text the Q-Former is conditioned on."""

    text: str
    qformer_instruction: str

    @property
    def segments(self) -> tuple[str, str]:
        """Text before and after the visual tokens."""
        before, after = self.text.split(SPLIT_TOKEN)
        return before, after


def get_family(name: str) -> PromptFamily:
    """Look up a prompt family, failing with the list of valid names."""
    if name not in PROMPT_FAMILIES:
        raise KeyError(f"unknown prompt family {name!r}; choose from {sorted(PROMPT_FAMILIES)}")
    return PROMPT_FAMILIES[name]


def option_letter(position: int) -> str:
    """``0 -> "A"``; options are lettered in the order the question file lists them."""
    return chr(ord("A") + position)


def qa_template(question: str, candidates: Sequence[str]) -> str:
    """``Question: …\\nOptions:\\n(A) …`` with the final newline stripped."""
    lines = [f"Question: {question}", "Options:"]
    lines += [f"({option_letter(i)}) {c}" for i, c in enumerate(candidates)]
    return "\n".join(lines).rstrip()


def build_prompt(
    question: str, candidates: Sequence[str], family: str = "vicuna_v0", context: str | None = None
) -> MVBenchPrompt:
    """The full MVBench prompt ending in the pre-filled ``Best option:(``.

    ``context`` (e.g. a video's subtitles) goes between the instruction and the question, as Video-MME's
    subtitle protocol places it; without it the prompt is the reference's, byte for byte.
    """
    user = SYSTEM_PROMPT + (context.rstrip("\n") + "\n" if context else "")
    user += qa_template(question, candidates) + QUESTION_SUFFIX
    text = get_family(family).template.format(
        sys=SYSTEM_PROMPT, video=VIDEO_PLACEHOLDER, user=user, prefix=ANSWER_PREFIX
    )
    return MVBenchPrompt(text=text, qformer_instruction=SYSTEM_PROMPT)


def drop_leading_special(token_ids: Sequence[int], special_ids: Collection[int] = (0, 1)) -> list[int]:
    """Drop the unk/bos ids a generate call may echo first (LLaMA: unk 0, bos 1)."""
    ids = list(token_ids)
    for special in special_ids:
        if ids and ids[0] == special:
            ids = ids[1:]
    return ids


def extract_answer(decoded: str, family: str = "vicuna_v0") -> str:
    """The string the official scorer sees: ``"(" +`` the first line of the reply.

    The pre-filled ``(`` is part of the prompt, not of the generation, so it is
    added back here exactly as the reference does.
    """
    text = decoded.split(get_family(family).stop)[0]
    text = text.split("Assistant:")[-1].strip()
    return "(" + text.split("\n")[0]

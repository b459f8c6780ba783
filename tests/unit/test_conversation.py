"""Conversation templates and label masks, checked by decoding what each template makes the LLM learn."""

import random
import string
from pathlib import Path

import pytest
import sentencepiece
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.tokenization_utils_base import generate_merges

from videochat2.data.conversation import (
    IMAGE_CAPTION_PROMPTS,
    VIDEO_CAPTION_PROMPTS,
    Conversation,
    Segment,
    build_caption_conversation,
    build_choice_conversation,
    build_conversation,
    frame_time_message,
    tokenize_conversation,
)
from videochat2.data.formats import MultipleChoice
from videochat2.models.videochat2 import IGNORE_INDEX
from videochat2.prompts import build_prompt

SPECIALS = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TIME = frame_time_message([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])
RIDER = {"QA": [{"i": "Answer the question briefly.", "q": "What is the man doing?", "a": "He is riding a bike."}]}
CAT = {
    "QA": [
        {"i": "", "q": "Describe the video.", "a": "A cat sits on a red sofa."},
        {"i": "", "q": "What color is the sofa?", "a": "Red."},
    ]
}
# The strings the original dataset code builds for these two records (reference parity conversations).
ORIGINAL_VICUNA = [
    "Answer the question briefly. ###Human: <Video></Video> The video contains 8 frames sampled at 0.5, 1.5, 2.5,"
    " 3.5, 4.5, 5.5, 6.5, 7.5 seconds. ###Human: What is the man doing? ###Assistant: He is riding a bike. ###",
    "###Human: <Video></Video> The video contains 8 frames sampled at 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5"
    " seconds. ###Human: Describe the video. ###Assistant: A cat sits on a red sofa. ###Human: What color is the"
    " sofa? ###Assistant: Red. ###",
]


def sentencepiece_like_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """A BPE over Metaspace pieces with a prefix space, as LLaMA/Mistral/Phi-3 tokenizers are."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=list(string.printable), show_progress=False
    )
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", chat_template=CHATML
    )


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    corpus = (
        ORIGINAL_VICUNA
        + [
            "[INST] <Video></Video> [/INST] [INST] What color is the sofa? [/INST] Red. </s>",
            "<|user|>\n<Video></Video>\nWhat color is the sofa?<|end|>\n<|assistant|>\nRed.<|end|>\nRed.<|end|>\n",
            "Describe the following video concisely. A cat sits on a red sofa.",
        ]
        * 10
    )
    return sentencepiece_like_tokenizer(corpus)


LLAMA_SPM = Path(__file__).parents[1] / "data" / "parity" / "stage3_vicuna" / "llm_base" / "tokenizer.model"


def legacy_llama_tokenizer(model_file: Path) -> PreTrainedTokenizerFast:
    """The fast form of a legacy LLaMA SentencePiece model, built without the protobuf package."""
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    pieces = [processor.id_to_piece(index) for index in range(processor.get_piece_size())]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    scores = {piece: processor.get_score(index) for index, piece in enumerate(pieces)}
    backend = Tokenizer(
        models.BPE(vocab, generate_merges(vocab, scores), unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    for text in ORIGINAL_VICUNA:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == processor.encode(text)
    return tokenizer


def learned_runs(encoded: dict[str, torch.Tensor], tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """Decoded maximal runs of learned tokens."""
    runs, current = [], []
    for label in encoded["labels_after"].tolist() + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs.append(tokenizer.decode(current).strip())
            current = []
    return runs


def without_placeholder(conversation: Conversation) -> str:
    return conversation.text.replace(conversation.placeholder, "")


def test_vicuna_matches_the_original_strings_and_instructions() -> None:
    rider = build_conversation(RIDER, "vicuna_v0", time_message=TIME)
    cat = build_conversation(CAT, "vicuna_v0", time_message=TIME)
    assert [without_placeholder(rider), without_placeholder(cat)] == ORIGINAL_VICUNA
    assert rider.instruction == "Answer the question briefly. What is the man doing?"
    assert cat.instruction == ""
    assert "<Video><VideoHere></Video>" in rider.text


def test_vicuna_learns_separators_answers_and_the_closing_mark(tokenizer: PreTrainedTokenizerFast) -> None:
    rider = tokenize_conversation(build_conversation(RIDER, "vicuna_v0", time_message=TIME), tokenizer, 512)
    assert learned_runs(rider, tokenizer) == ["###Human:", "###Assistant: He is riding a bike. ###"]
    cat = tokenize_conversation(build_conversation(CAT, "vicuna_v0", time_message=TIME), tokenizer, 512)
    assert learned_runs(cat, tokenizer) == [
        "###Human:",
        "###Assistant: A cat sits on a red sofa. ###Human:",
        "###Assistant: Red. ###",
    ]


def test_split_gives_bos_to_the_part_before_the_media_only(tokenizer: PreTrainedTokenizerFast) -> None:
    conversation = build_conversation(RIDER, "vicuna_v0")
    encoded = tokenize_conversation(conversation, tokenizer, 512)
    before, after, _ = conversation.split()
    assert before.endswith("###Human: <Video>") and after.startswith("</Video>")
    assert encoded["input_ids_before"][0].item() == tokenizer.bos_token_id
    assert tokenizer.bos_token_id not in encoded["input_ids_after"].tolist()
    assert tokenizer.decode(encoded["input_ids_before"][1:]) == before
    assert encoded["input_ids_after"].shape == encoded["labels_after"].shape


def test_mistral_learns_answers_with_eos(tokenizer: PreTrainedTokenizerFast) -> None:
    record = {"QA": [{"i": "Answer briefly.", "q": "What color is the sofa?", "a": "Red."}, {"q": "", "a": "Yes."}]}
    conversation = build_conversation(record, "mistral_instruct")
    assert without_placeholder(conversation) == (
        "Answer briefly. [INST] <Video></Video> [/INST] [INST] What color is the sofa? [/INST] Red. </s> Yes. </s>"
    )
    assert conversation.instruction == "Answer briefly."
    encoded = tokenize_conversation(conversation, tokenizer, 512)
    assert learned_runs(encoded, tokenizer) == ["Red. </s> Yes. </s>"]
    assert encoded["labels_after"].tolist().count(tokenizer.eos_token_id) == 2


def test_mistral_without_instruction_starts_with_inst() -> None:
    conversation = build_conversation({"QA": [{"q": "Why?", "a": "Because."}]}, "mistral_instruct")
    assert conversation.text.startswith("[INST] <Video><VideoHere></Video> [/INST] [INST] Why? [/INST]")


def test_phi3_learns_answer_end_and_newline_but_strips_the_last(tokenizer: PreTrainedTokenizerFast) -> None:
    """As the original, which strips the conversation: no newline after the last `<|end|>` to learn."""
    conversation = build_conversation(CAT, "phi3", system="Be brief. ")
    assert without_placeholder(conversation) == (
        "<|system|>\nBe brief. <|end|>\n<|user|>\n<Video></Video>\nDescribe the video.<|end|>\n<|assistant|>\n"
        "A cat sits on a red sofa.<|end|>\n<|user|>\nWhat color is the sofa?<|end|>\n<|assistant|>\nRed.<|end|>"
    )
    encoded = tokenize_conversation(conversation, tokenizer, 512)
    assert learned_runs(encoded, tokenizer) == ["A cat sits on a red sofa.<|end|>", "Red.<|end|>"]
    newline = tokenizer.convert_tokens_to_ids("\n")
    labels = encoded["labels_after"].tolist()
    assert newline in labels
    assert labels[-1] == tokenizer.convert_tokens_to_ids("<|end|>")


def test_offsets_hold_where_separate_pieces_do_not_add_up(tokenizer: PreTrainedTokenizerFast) -> None:
    conversation = build_conversation({"QA": [{"q": "What color is the sofa?", "a": "Teal."}]}, "phi3")
    _, after, _ = conversation.split()
    pieces = after.split("<|assistant|>\n")
    pieces[0] += "<|assistant|>\n"
    # The original counted tokens piece by piece; SentencePiece's prefix space makes the answer one longer.
    separately = sum(len(tokenizer(piece, add_special_tokens=False)["input_ids"]) for piece in pieces)
    together = len(tokenizer(after, add_special_tokens=False)["input_ids"])
    assert separately != together
    encoded = tokenize_conversation(conversation, tokenizer, 512)
    assert learned_runs(encoded, tokenizer) == ["Teal.<|end|>"]


def test_chat_template_learns_assistant_turns(tokenizer: PreTrainedTokenizerFast) -> None:
    conversation = build_conversation(CAT, "chat_template", system="Be brief.", tokenizer=tokenizer, time_message=TIME)
    assert conversation.text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<Video>")
    assert conversation.learned_text() == ["A cat sits on a red sofa.<|im_end|>\n", "Red.<|im_end|>\n"]
    encoded = tokenize_conversation(conversation, tokenizer, 512)
    assert learned_runs(encoded, tokenizer) == ["A cat sits on a red sofa.<|im_end|>", "Red.<|im_end|>"]


def test_chat_template_needs_a_template(tokenizer: PreTrainedTokenizerFast) -> None:
    plain = sentencepiece_like_tokenizer(["a b c"])
    plain.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        build_conversation(RIDER, "chat_template", tokenizer=plain)


def test_chat_template_drops_a_rendered_bos(tokenizer: PreTrainedTokenizerFast) -> None:
    with_bos = sentencepiece_like_tokenizer(["a b c"])
    with_bos.chat_template = "{{ bos_token }}" + CHATML
    conversation = build_conversation(CAT, "chat_template", tokenizer=with_bos)
    assert conversation.text.startswith("<|im_start|>user")
    assert conversation.learned_text() == ["A cat sits on a red sofa.<|im_end|>\n", "Red.<|im_end|>\n"]


def test_truncation_cuts_the_end(tokenizer: PreTrainedTokenizerFast) -> None:
    conversation = build_conversation(CAT, "vicuna_v0", time_message=TIME)
    full = tokenize_conversation(conversation, tokenizer, 512)
    short = tokenize_conversation(conversation, tokenizer, 40)
    assert len(short["input_ids_before"]) + len(short["input_ids_after"]) == 40
    kept = len(short["input_ids_after"])
    assert torch.equal(short["input_ids_after"], full["input_ids_after"][:kept])
    assert torch.equal(short["labels_after"], full["labels_after"][:kept])
    with pytest.raises(ValueError, match="before the media"):
        tokenize_conversation(conversation, tokenizer, len(full["input_ids_before"]))


def test_shuffling_uses_the_rng_and_leaves_the_record() -> None:
    record = {"QA": [{"q": f"q{index}", "a": f"a{index}"} for index in range(6)]}
    first = build_conversation(record, "vicuna_v0", rng=random.Random(1)).text
    assert first == build_conversation(record, "vicuna_v0", rng=random.Random(1)).text
    assert first != build_conversation(record, "vicuna_v0").text
    assert [qa["q"] for qa in record["QA"]] == [f"q{index}" for index in range(6)]


def test_image_records_use_image_tags() -> None:
    conversation = build_conversation(RIDER, "phi3", media_type="image")
    assert "<Image><ImageHere></Image>" in conversation.text and conversation.placeholder == "<ImageHere>"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("vicuna_v0", "A cat sits on a red sofa.###"),
        ("mistral_instruct", "A cat sits on a red sofa.</s>"),
        ("phi3", "A cat sits on a red sofa.<|end|>"),
        ("chat_template", "A cat sits on a red sofa.<|im_end|>"),
    ],
)
def test_captions_learn_caption_and_end_symbol(
    tokenizer: PreTrainedTokenizerFast, template: str, expected: str
) -> None:
    caption = "A cat sits on a red sofa."
    conversation = build_caption_conversation(caption, template, tokenizer=tokenizer, rng=random.Random(0))
    assert conversation.text.count("<Video><VideoHere></Video>") == 1
    encoded = tokenize_conversation(conversation, tokenizer, 512)
    assert learned_runs(encoded, tokenizer) == [expected]


def test_caption_prompts_vary_and_match_the_media() -> None:
    assert len(VIDEO_CAPTION_PROMPTS) == len(IMAGE_CAPTION_PROMPTS) == 10
    rng = random.Random(0)
    picked = {build_caption_conversation("x", "vicuna_v0", rng=rng).text for _ in range(50)}
    assert len(picked) > 5
    image = build_caption_conversation("x", "mistral_instruct", media_type="image")
    assert image.text == "[INST] " + IMAGE_CAPTION_PROMPTS[0] + " [/INST] x</s>"


def test_invalid_inputs_are_refused(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="template"):
        build_conversation(RIDER, "alpaca")
    with pytest.raises(ValueError, match="space"):
        build_conversation(RIDER, "vicuna_v0", system="You are helpful.")
    with pytest.raises(ValueError, match="media_type"):
        build_conversation(RIDER, "phi3", media_type="audio")
    with pytest.raises(ValueError, match="exactly once"):
        tokenize_conversation(Conversation((Segment("no media", True),), "<VideoHere>"), tokenizer, 16)


@pytest.mark.parametrize(
    ("record", "before_length", "after_length", "runs"),
    [
        (RIDER, 13, 83, {59: [25, 95, 250], 69: [25, 98, 250, 229, 262, 230, 36, 217, 34, 27, 48, 163, 244, 25]}),
        (
            CAT,
            6,
            95,
            {
                59: [25, 95, 250],
                67: [25, 98, 250, 46, 210, 17, 165, 37, 27, 216, 96, 244, 25, 95, 250],
                89: [25, 98, 250, 207, 244, 25],
            },
        ),
    ],
)
def test_vicuna_labels_equal_the_original_on_a_llama_tokenizer(
    record: dict, before_length: int, after_length: int, runs: dict[int, list[int]]
) -> None:
    """The label ids and positions the original code produced on the parity LLaMA tokenizer."""
    tokenizer = legacy_llama_tokenizer(LLAMA_SPM)
    encoded = tokenize_conversation(build_conversation(record, "vicuna_v0", time_message=TIME), tokenizer, 512)
    expected = [IGNORE_INDEX] * after_length
    for start, ids in runs.items():
        expected[start : start + len(ids)] = ids
    assert encoded["labels_after"].tolist() == expected
    assert len(encoded["input_ids_before"]) == 1 + before_length


CHOICE = MultipleChoice("Which way does it move?", ("left", "up", "right", "down"), "right")


@pytest.mark.parametrize(("template", "end"), [("vicuna_v0", "###"), ("mistral_instruct", "</s>"), ("phi3", "<|end|>")])
def test_choices_train_in_the_benchmark_prompt(tokenizer: PreTrainedTokenizerFast, template: str, end: str) -> None:
    conversation = build_choice_conversation(CHOICE, template)
    benchmark = build_prompt(CHOICE.question, CHOICE.candidates, template)
    assert conversation.text.startswith(benchmark.text)
    assert conversation.instruction == benchmark.qformer_instruction
    learned = learned_runs(tokenize_conversation(conversation, tokenizer, 1024), tokenizer)
    assert learned == [f"C) right {end}".replace(" <|end|>", "<|end|>")]


def test_choice_shuffling_moves_the_letter_with_the_answer() -> None:
    rng = random.Random(0)
    seen = set()
    for _ in range(40):
        conversation = build_choice_conversation(CHOICE, "vicuna_v0", rng=rng, shuffle=True)
        options = [line[4:] for line in conversation.text.split("\n") if line[:1] == "(" and line[2:4] == ") "]
        letter = conversation.segments[-1].text[0]
        assert sorted(options) == sorted(CHOICE.candidates)
        assert options["ABCD".index(letter)] == "right"
        seen.add(letter)
    assert seen == set("ABCD")
    assert build_choice_conversation(CHOICE, "vicuna_v0").segments[-1].text.startswith("C)")
    with pytest.raises(ValueError, match="needs an rng"):
        build_choice_conversation(CHOICE, "vicuna_v0", shuffle=True)


def test_choices_of_images_and_of_chat_templates(tokenizer: PreTrainedTokenizerFast) -> None:
    image = build_choice_conversation(CHOICE, "vicuna_v0", media_type="image")
    assert "<Image><ImageHere></Image>" in image.text and image.placeholder == "<ImageHere>"
    chat = build_choice_conversation(CHOICE, "chat_template", tokenizer=tokenizer)
    assert learned_runs(tokenize_conversation(chat, tokenizer, 1024), tokenizer) == ["(C) right<|im_end|>"]

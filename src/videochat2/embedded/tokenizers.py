"""The Q-Former's WordPiece and the LLM's byte-level BPE tokenizers, trained on the world's text."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from videochat2.data import qa_generation as qa
from videochat2.embedded.captions import CAPTION_PROMPTS, IMAGE_PROMPTS
from videochat2.prompts import SYSTEM_PROMPT

PROMPT_VOCABULARY = (
    SYSTEM_PROMPT,
    "Question:",
    "Options:",
    "Only give the best option.",
    "Best option:(",
    "Best Option:(",
    "###Human:",
    "###Assistant:",
    "###",
    "[INST]",
    "[/INST]",
    "<Video>",
    "</Video>",
    "<Image>",
    "</Image>",
    "<VideoHere>",
    "<ImageHere>",
    *CAPTION_PROMPTS,
    *IMAGE_PROMPTS,
    "The video contains 8 frames sampled at 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5 seconds.",
    "(A) (B) (C) (D) (E) A B C D E 0 1 2 3 4 5 6 7 8 9",
)


def _corpus(annotations: dict[str, list[dict]], benchmark: dict[str, list[dict]]) -> list[str]:
    texts = list(PROMPT_VOCABULARY)
    for name in ("pretrain_video", "pretrain_image", "retrieval_test"):
        texts += [r["caption"] for r in annotations[name]]
    for name in ("instruction_video", "instruction_image"):
        texts += [f"{t['i']} {t['q']} {t['a']}" for r in annotations[name] for t in r["QA"]]
    for name in ("instruction_video_mc", "instruction_image_mc"):
        texts += [f"{qa.format_question(i['question'], i['candidates'])} {i['answer']}" for i in annotations[name]]
    texts += [qa.format_question(i["question"], i["candidates"]) for items in benchmark.values() for i in items]
    return texts


def _wordpiece_vocab(tok: Tokenizer, corpus: Sequence[str], vocab_size: int, specials: list[str]) -> dict[str, int]:
    """Every character (alone and as a ``##`` continuation), then the most frequent whole words.

    Built from counts with a total order rather than with the library's trainer, whose ties are broken in
    hash order and so change from run to run; reproducible checksums need the same vocabulary every time.
    """
    words: dict[str, int] = {}
    for text in corpus:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            words[word] = words.get(word, 0) + 1
    chars = sorted({c for w in words for c in w})
    pieces = specials + chars + [f"##{c}" for c in chars]
    ranked = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    pieces += ranked[: max(0, vocab_size - len(pieces))]
    return {piece: index for index, piece in enumerate(pieces)}


def _save_qformer_tokenizer(corpus: Sequence[str], out: Path, vocab_size: int = 1000) -> None:
    """BERT-style WordPiece: [CLS] text [SEP], lowercase, with [DEC] as the captioning bos token."""
    from transformers import PreTrainedTokenizerFast  # heavy; only the main process needs it

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.model = models.WordPiece(_wordpiece_vocab(tok, corpus, vocab_size, specials), unk_token="[UNK]")
    tok.add_special_tokens(specials)
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[DEC]",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    wrapped.save_pretrained(str(out))


def _save_llm_tokenizer(corpus: Sequence[str], out: Path, vocab_size: int = 1500) -> None:
    """Byte-level BPE where every punctuation mark is its own token, so "(" + "A" survive any context."""
    from transformers import PreTrainedTokenizerFast  # heavy; only the main process needs it

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\w\s]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1", special_tokens=[bos])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    wrapped.save_pretrained(str(out))


def train_tokenizers(corpus: Sequence[str], out_dir: Path) -> None:
    """WordPiece for the Q-Former and byte-level BPE for the LLM, both loadable with AutoTokenizer."""
    _save_qformer_tokenizer(corpus, out_dir / "qformer")
    _save_llm_tokenizer(corpus, out_dir / "llm")

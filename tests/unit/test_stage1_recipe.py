"""Stage 1 as the original trains it: the Q-Former from BERT, the original's VTC gradient and weight decay."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from videochat2.builder import build_alignment, split_bert_directories
from videochat2.distributed import gather_with_grad
from videochat2.models.alignment import AlignmentConfig
from videochat2.models.qformer import QFormerConfig
from videochat2.models.vision import VisionConfig
from videochat2.optim import param_groups
from videochat2.spec import MediaConfig, ModelSpec

VOCAB = Path(__file__).parents[1] / "data" / "parity" / "tokenizers" / "bert_vocab.txt"


def tiny_bert(directory: Path) -> BertForMaskedLM:
    """A BERT directory shaped like the tiny Q-Former (vocabulary of the parity sets), as save_pretrained writes."""
    torch.manual_seed(0)
    size = QFormerConfig.tiny()
    config = BertConfig(
        vocab_size=200,
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        intermediate_size=size.intermediate_size,
        max_position_embeddings=size.max_position_embeddings,
    )
    bert = BertForMaskedLM(config)
    bert.save_pretrained(directory)
    BertTokenizer(vocab=str(VOCAB), do_lower_case=True).save_pretrained(directory)
    return bert


def stage1_spec(tokenizer: Path) -> ModelSpec:
    return ModelSpec(
        stage=1,
        vision=VisionConfig.tiny(),
        qformer=QFormerConfig.tiny(),
        qformer_tokenizer=str(tokenizer),
        media=MediaConfig(),
        alignment=AlignmentConfig(embed_dim=16),
    )


def test_a_bert_directory_in_init_from_initialises_the_qformer(tmp_path):
    bert = tiny_bert(tmp_path / "bert-base-uncased")
    loaded = build_alignment(stage1_spec(tmp_path / "bert-base-uncased"), [tmp_path / "bert-base-uncased"], ["qformer"])
    qformer = loaded.model.qformer
    words = qformer.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(words[:200], bert.bert.embeddings.word_embeddings.weight)
    assert words.shape[0] == 201  # + [DEC]
    layer, source = qformer.bert.encoder.layer[2], bert.bert.encoder.layer[2]
    torch.testing.assert_close(layer.attention.self.key.weight, source.attention.self.key.weight)
    torch.testing.assert_close(layer.intermediate_query.dense.weight, source.intermediate.dense.weight)
    fresh = build_alignment(stage1_spec(tmp_path / "bert-base-uncased"))
    assert not torch.equal(fresh.model.qformer.bert.embeddings.word_embeddings.weight[:200], words[:200])


def test_a_missing_bert_directory_says_what_to_put_there(tmp_path):
    tiny_bert(tmp_path / "tokenizer")
    with pytest.raises(FileNotFoundError, match="bert-base-uncased.*put a Hugging Face BERT directory there"):
        build_alignment(stage1_spec(tmp_path / "tokenizer"), [tmp_path / "bert-base-uncased"], ["qformer"])


def test_later_stages_leave_the_bert_directory_of_their_stage1_chain_out(tmp_path):
    tiny_bert(tmp_path / "bert-base-uncased")
    chain = [tmp_path / "bert-base-uncased", tmp_path / "bert-moved", tmp_path / "stage1.ckpt"]
    assert split_bert_directories(chain, required=False) == ([tmp_path / "bert-base-uncased"], [chain[2]])
    with pytest.raises(FileNotFoundError, match="bert-moved"):
        split_bert_directories(chain)


def test_the_original_decay_rule_decays_queries_temperature_and_temporal_embedding():
    model = torch.nn.Module()
    model.query_tokens = torch.nn.Parameter(torch.zeros(1, 4, 8))
    model.temp = torch.nn.Parameter(torch.tensor(0.07))
    model.norm = torch.nn.LayerNorm(8)
    model.proj = torch.nn.Linear(8, 8)

    def decayed(rule: str) -> set[int]:
        groups = param_groups(model.named_parameters(), 0.02, {"query_tokens", "temp"}, decay_rule=rule)
        return {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}

    assert decayed("ours") == {id(model.proj.weight)}
    assert decayed("original") == {id(model.proj.weight), id(model.query_tokens), id(model.temp)}
    with pytest.raises(ValueError, match="decay_rule"):
        decayed("other")


def _gather_grads(rank: int, world: int, port: int, backward: str, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = gather_with_grad(x, backward)
    (gathered * torch.arange(1.0, 5.0)[:, None]).sum().backward()
    out[rank] = x.grad.clone()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # starts fresh interpreters importing torch
@pytest.mark.parametrize("backward, scale", [("sum", 2.0), ("local", 1.0)])
def test_vtc_gather_backward_sums_over_ranks_or_keeps_the_local_slice(backward, scale):
    """Each rank's loss weighs row r of the gathered batch by r + 1; "sum" adds both ranks' gradients."""
    out = mp.Manager().dict()
    mp.spawn(_gather_grads, args=(2, _free_port(), backward, out), nprocs=2)
    for rank in range(2):
        expected = torch.tensor([1.0, 2.0])[:, None].expand(2, 3) + 2 * rank
        torch.testing.assert_close(out[rank], scale * expected)

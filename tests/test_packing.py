"""Packing: a packed batch's loss and gradients equal the sum of its rows' own, computed
one by one; and the mask really is block-diagonal."""

from __future__ import annotations

import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.model.attention import causal_mask
from llmhood.train.data import Example
from llmhood.train.loss import loss_sum
from llmhood.train.packing import pack

VOCAB = 97


@pytest.fixture
def examples() -> list[Example]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for length in (9, 4, 13, 6, 3, 11):
        ids = torch.randint(0, VOCAB, (length,), generator=g).tolist()
        mask = [False] * (length // 2) + [True] * (length - length // 2)
        rows.append(Example(ids, mask))
    return rows


def test_packed_loss_equals_the_rows_alone(examples):
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=VOCAB,
                         hidden_dim=64, max_seq_len=64)  # fmt: skip
    model = Transformer(config)
    packed = pack(examples, seq_len=16)
    assert packed.tokens.shape == (3, 16)  # 46 tokens in 3 sequences of 16
    got, n = loss_sum(model, packed.tokens, packed.mask, **packed.forward_args())
    got.backward()
    packed_grad = model.layers[0].attention.wq.weight.grad.clone()
    model.zero_grad()
    alone = [loss_sum(model, torch.tensor([e.ids]), torch.tensor([e.mask])) for e in examples]
    want = sum(loss for loss, _ in alone)
    want.backward()
    assert n == sum(count for _, count in alone) == sum(e.trained - e.mask[0] for e in examples)
    # Each row's arithmetic is the same, only in larger matrices: float32 rounding.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(packed_grad, model.layers[0].attention.wq.weight.grad,
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_the_mask_is_block_diagonal_and_causal():
    segments = torch.tensor([[0, 0, 1, 1, 1, -1]])
    mask = causal_mask(6, 6, segments=segments)[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself: no row of the softmax is empty
    ]


def test_positions_restart_in_every_row(examples):
    packed = pack(examples, seq_len=16)
    for b in range(packed.tokens.shape[0]):
        for s in packed.segments[b].unique().tolist():
            if s >= 0:
                where = packed.segments[b] == s
                assert packed.positions[b, where].tolist() == list(range(int(where.sum())))


def test_a_row_longer_than_the_sequence_is_refused(examples):
    with pytest.raises(LLMHoodError, match="Row 2 has 13 tokens, more than seq_len 12"):
        pack(examples, seq_len=12)

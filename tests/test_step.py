"""The schedule against transformers', and an accumulated step against the same step
taken as one batch."""

from __future__ import annotations

import copy

import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.train.loss import loss_sum
from llmhood.train.scheduler import lr_factor, warmup_cosine
from llmhood.train.step import optimizer_step

VOCAB = 89


@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (3, 10), (10, 10), (5, 100)])
def test_the_schedule_equals_transformers(warmup, total):
    from transformers import get_cosine_schedule_with_warmup

    def rates(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = make(optimizer)
        out = []
        for _ in range(total + 1):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    ours = rates(lambda o: warmup_cosine(o, warmup, total))
    theirs = rates(lambda o: get_cosine_schedule_with_warmup(o, warmup, total))
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_the_floor_is_where_the_cosine_ends():
    assert lr_factor(100, 10, 100, floor=0.1) == pytest.approx(0.1)
    assert lr_factor(130, 10, 100, floor=0.1) == pytest.approx(0.1)  # and stays there
    assert lr_factor(10, 10, 100, floor=0.1) == pytest.approx(1.0)


def test_bad_schedules_are_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(LLMHoodError, match="impossible"):
        warmup_cosine(optimizer, 20, 10)


def make_batch(seed: int, rows: int, trained: int):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (rows, 12), generator=g)
    mask = torch.zeros(rows, 12, dtype=torch.bool)
    mask[:, 12 - trained :] = True  # micro-batches train different numbers of tokens
    return tokens, mask


def test_accumulating_four_micro_batches_equals_one_batch():
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=VOCAB,
                         hidden_dim=64, max_seq_len=32)  # fmt: skip
    base = Transformer(config)
    micro = [make_batch(i, rows=2, trained=t) for i, t in enumerate((2, 9, 5, 11))]
    tokens = sum(int(m[:, 1:].sum()) for _, m in micro)

    def run(batches):
        model = copy.deepcopy(base)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        calls = [lambda t=t, m=m: loss_sum(model, t, m) for t, m in batches]
        return model, optimizer_step(model, calls, tokens, optimizer)

    accumulated, stats = run(micro)
    whole_batch = (torch.cat([t for t, _ in micro]), torch.cat([m for _, m in micro]))
    one, one_stats = run([whole_batch])
    assert stats.tokens == one_stats.tokens == tokens
    assert stats.loss == pytest.approx(one_stats.loss, rel=1e-6)
    assert stats.grad_norm == pytest.approx(one_stats.grad_norm, rel=1e-5)
    for (name, a), (_, b) in zip(accumulated.named_parameters(), one.named_parameters(),
                                 strict=True):  # fmt: skip
        # One AdamW step moves each weight by about lr; float32 sums in two orders differ
        # far below that.
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # Averaging per micro-batch instead would weigh tokens unequally: a different step.
    naive = copy.deepcopy(base)
    for t, m in micro:
        loss, n = loss_sum(naive, t, m)
        (loss / n / len(micro)).backward()
    ref_grad = torch.autograd.grad(
        loss_sum(base, *whole_batch)[0] / tokens, base.layers[0].attention.wq.weight
    )[0]
    assert not torch.allclose(naive.layers[0].attention.wq.weight.grad, ref_grad, rtol=1e-3)


def test_a_step_without_trained_tokens_is_refused():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(LLMHoodError, match="no trained token"):
        optimizer_step(model, [], 0, optimizer)

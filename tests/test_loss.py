"""The chunked training loss against F.cross_entropy over the full logits: the same value,
the same gradients, and never more than one chunk of logits kept for the backward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmhood.model import ModelConfig, Transformer
from llmhood.train.loss import IGNORE, loss_sum, shift_labels, token_nll

VOCAB = 211


@pytest.fixture
def model() -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=VOCAB,
                         hidden_dim=64, max_seq_len=64)  # fmt: skip
    return Transformer(config)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (3, 17), generator=g)
    mask = torch.rand(3, 17, generator=g) < 0.6  # which tokens are trained
    mask[:, 0] = False  # the first token has nothing before it
    return tokens, mask


def reference_loss(model: Transformer, tokens: torch.Tensor, mask: torch.Tensor):
    logits = model(tokens)  # (bs, T, V) in full
    labels = torch.where(mask[:, 1:], tokens[:, 1:], IGNORE)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels.reshape(-1),
                         ignore_index=IGNORE, reduction="sum")  # fmt: skip
    return ce, int(mask[:, 1:].sum())


def grads(model: Transformer) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out


def test_shift_labels():
    tokens = torch.tensor([[5, 6, 7, 8]])
    mask = torch.tensor([[False, False, True, True]])
    assert shift_labels(tokens, mask).tolist() == [[IGNORE, 7, 8, IGNORE]]


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_chunked_loss_equals_full_cross_entropy(model, batch, chunk):
    tokens, mask = batch
    want, n_want = reference_loss(model, tokens, mask)
    want.backward()
    want_grads = grads(model)
    got, n = loss_sum(model, tokens, mask, chunk=chunk)
    got.backward()
    got_grads = grads(model)
    assert n == n_want
    # The same float32 operations on the same rows: the loss is summed in another order,
    # and the head's weight gradient chunk by chunk; gradients are of order 0.1 to 1, so
    # 1e-5 is a few float32 roundings of such sums.
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-5, atol=1e-5)


def test_no_full_logits_are_kept_for_the_backward_pass(model, batch):
    tokens, mask = batch
    chunk = 5
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() if t.shape[-1:] == (VOCAB,) else 0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = loss_sum(model, tokens, mask, chunk=chunk)
    loss.backward()  # the recomputed chunks are saved again while their gradient is taken
    assert max(saved) <= chunk * VOCAB  # one chunk of logits at a time, not bs·T·V
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        reference_loss(model, tokens, mask)
    assert max(saved) >= tokens[:, 1:].numel() * VOCAB  # what the plain loss keeps


def test_summed_losses_of_micro_batches_make_the_batch_mean(model, batch):
    """What gradient accumulation relies on: sums and counts add up across micro-batches."""
    tokens, mask = batch
    whole, n = loss_sum(model, tokens, mask)
    parts = [loss_sum(model, tokens[i : i + 1], mask[i : i + 1]) for i in range(3)]
    total = sum(p[0] for p in parts)
    assert sum(p[1] for p in parts) == n
    torch.testing.assert_close(total / n, whole / n, rtol=1e-6, atol=1e-6)


def test_a_batch_with_nothing_to_train_has_zero_tokens(model, batch):
    tokens, _ = batch
    nll = token_nll(model(tokens, head=False), model.output, torch.full_like(tokens, IGNORE))
    assert nll.numel() == 0


def test_under_bf16_autocast_it_is_the_autocast_cross_entropy(model, batch):
    """The head's own backward (loss._HeadNLL) against autograd through autocast's linear and
    F.cross_entropy: logits in bf16, softmax in float32, their gradient cast back to bf16.
    bf16 keeps 8 bits of mantissa, so sums of its products agree to about 1% (2**-7), not
    to float32's roundings; the weight's gradient is also summed in float32 chunk by chunk
    here, and in one bf16 matmul there."""
    tokens, mask = batch
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, _ = reference_loss(model, tokens, mask)
    want.backward()
    want_grads = grads(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = loss_sum(model, tokens, mask, chunk=7)
    got.backward()
    got_grads = grads(model)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=2e-2, atol=2e-3)

"""DPO: the loss against its closed form (log 2 at the start, the gradient of −log σ), and
on a tiny model with a LoRA policy whose reference is the same model with adapters off."""

from __future__ import annotations

import math

import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.train.dpo import dpo_loss
from llmhood.train.lora import LoraConfig, adapters_disabled, apply_lora
from llmhood.train.loss import IGNORE, sequence_logprob, shift_labels


def test_the_loss_is_log_2_when_the_policy_is_the_reference():
    logps = torch.tensor([-12.5, -3.0, -40.0])
    out = dpo_loss(logps, logps - 2, logps, logps - 2, beta=0.3)
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert out.accuracy == 0.0  # no pair preferred yet: rewards are equal


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_gradient_is_the_closed_form(smoothing):
    """d loss / d h = −β·((1 − ε)·σ(−βh) − ε·σ(βh)) per pair, over the batch size."""
    beta = 0.5
    chosen = torch.tensor([-5.0, -7.0, -2.0], requires_grad=True)
    rejected = torch.tensor([-6.0, -4.0, -2.5])
    ref_c, ref_r = torch.tensor([-5.5, -6.0, -3.0]), torch.tensor([-5.0, -5.0, -2.0])
    out = dpo_loss(chosen, rejected, ref_c, ref_r, beta, smoothing)
    out.loss.backward()
    h = (chosen - ref_c) - (rejected - ref_r)
    bh = beta * h.detach()
    want = -beta * ((1 - smoothing) * torch.sigmoid(-bh) - smoothing * torch.sigmoid(bh)) / 3
    torch.testing.assert_close(chosen.grad, want, rtol=1e-6, atol=1e-7)
    loss = -(1 - smoothing) * torch.log(torch.sigmoid(bh)) - smoothing * torch.log(
        torch.sigmoid(-bh)
    )
    assert out.loss.item() == pytest.approx(loss.mean().item(), rel=1e-6)


def test_sequence_logprob_sums_the_trained_tokens():
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=50,
                         hidden_dim=64, max_seq_len=32)  # fmt: skip
    model = Transformer(config)
    tokens = torch.randint(0, 50, (2, 9))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, 4:], mask[1, 6:] = True, True
    with torch.no_grad():
        got = sequence_logprob(model, tokens, mask)
        logp = model(tokens).log_softmax(-1)  # (bs, T, V), the plain way
    labels = shift_labels(tokens, mask)
    want = [
        sum(logp[b, t, labels[b, t]].item() for t in range(9) if labels[b, t] != IGNORE)
        for b in range(2)
    ]
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-5, atol=1e-5)


def test_a_lora_policy_starts_at_log_2_against_its_own_base():
    """The reference is the policy with adapters off: no second model, and at the start
    (B = 0) the two agree exactly."""
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=60,
                         hidden_dim=64, max_seq_len=32)  # fmt: skip
    model = Transformer(config)
    apply_lora(model, LoraConfig(rank=4, alpha=8))
    chosen, rejected = torch.randint(0, 60, (2, 10)), torch.randint(0, 60, (2, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 5:] = True
    with torch.no_grad(), adapters_disabled(model):
        ref = [sequence_logprob(model, t, mask) for t in (chosen, rejected)]
    policy = [sequence_logprob(model, t, mask) for t in (chosen, rejected)]
    out = dpo_loss(*policy, *ref)
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-6)
    out.loss.backward()
    b = model.layers[0].attention.wq.lora_B
    assert b.grad is not None and b.grad.abs().sum() > 0  # the adapters learn from it


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"beta": 0}, "beta=0"), ({"label_smoothing": 0.5}, "label_smoothing")]
)
def test_bad_hyperparameters(kwargs, message):
    x = torch.zeros(1)
    with pytest.raises(LLMHoodError, match=message):
        dpo_loss(x, x, x, x, **kwargs)

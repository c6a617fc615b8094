"""The hashed dropout (llmhood/train/dropout.py) against the law of dropout itself: its masks
cannot equal torch's (another random stream), so what is checked is what makes it dropout.
Bounds are 5 standard deviations of the binomial counts involved: each check fails about
once in 1.7 million runs when the kernel is right, and a keep rate wrong by even 1% relative
at p = 0.3 over 10⁶ elements is 20 deviations off."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from llmhood.train import dropout
from llmhood.train.dropout import Dropout, hashed_dropout

pytestmark = pytest.mark.skipif(
    dropout.available() is not None, reason=f"the kernel does not run: {dropout.available()}"
)
N = 1_000_000


def scale(p: float) -> float:
    """1 / the exact keep rate: p is rounded to a multiple of 2⁻³²."""
    return 2**32 / (2**32 - round(p * 2**32))


def within(count: float, n: int, q: float) -> bool:
    """count within 5 binomial standard deviations of n·q."""
    return abs(count - n * q) <= 5 * math.sqrt(n * q * (1 - q))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_keep_rate_and_scale(p):
    x = torch.rand(N) + 0.5  # no zeros of its own
    y = hashed_dropout(x, p, seed=7)
    dropped = y == 0
    assert within(int(dropped.sum()), N, p)
    kept = ~dropped
    assert torch.equal(y[kept], x[kept] * torch.tensor(scale(p)))  # one float32 product each


def test_expectation_is_the_input():
    p, x = 0.3, torch.ones(N)
    y = hashed_dropout(x, p, seed=11)
    # y is scale·Bernoulli(1 − p): mean 1, variance scale² · p(1 − p) per element
    sd = scale(p) * math.sqrt(p * (1 - p) / N)
    assert abs(float(y.double().mean()) - 1) <= 5 * sd


def test_elements_and_calls_are_independent():
    p, x = 0.3, torch.ones(N)
    a = hashed_dropout(x, p, seed=1) == 0
    b = hashed_dropout(x, p, seed=2) == 0
    assert within(int((a[:-1] & a[1:]).sum()), N - 1, p * p)  # neighbours
    assert within(int((a[:-64] & a[64:]).sum()), N - 64, p * p)  # a row of 64 apart
    assert within(int((a & b).sum()), N, p * p)  # two calls, consecutive seeds
    assert torch.equal(a, hashed_dropout(x, p, seed=1) == 0)  # a seed is a mask


def test_shapes_dtypes_and_zero_p():
    x = torch.randn(3, 5, 7)
    y = hashed_dropout(x, 0.5, seed=3)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(hashed_dropout(x, 0.0, seed=3), x)
    # A non-contiguous input is masked by its contiguous order.
    t = x.transpose(0, 2)
    assert torch.equal(hashed_dropout(t, 0.5, 3), hashed_dropout(t.contiguous(), 0.5, 3))
    # bf16: the float32 mask, and the float32 product rounded to bf16 as torch rounds it.
    xb = x.bfloat16()
    want = (xb.float() * (y != 0) * scale(0.5)).bfloat16()
    assert torch.equal(hashed_dropout(xb, 0.5, 3), want)


def test_the_module_is_repeatable_and_backward_uses_the_forward_mask():
    drop = Dropout(0.25).train()
    x = torch.ones(1000, 64, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the seed comes from torch's generator
    assert not torch.equal(drop(x), y)  # and a new call draws a new one
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(x.grad, g * (y != 0) * scale(0.25))
    assert torch.equal(drop.eval()(x), x)


def test_checkpointing_recomputes_the_same_mask():
    """Non-reentrant checkpointing restores the generator before it runs the block again, so
    the gradient is the one of the mask the forward pass used."""
    w = torch.randn(64, 64)
    drop = Dropout(0.3).train()
    x = torch.randn(256, 64, requires_grad=True)

    def block(t):
        return (drop(t) @ w).tanh()

    torch.manual_seed(5)
    block(x).sum().backward()
    plain, x.grad = x.grad, None
    torch.manual_seed(5)
    checkpoint(block, x, use_reentrant=False).sum().backward()
    assert torch.equal(x.grad, plain)


def test_torch_dropout_when_asked(monkeypatch):
    monkeypatch.setenv(dropout.ENV, "0")
    x = torch.randn(100, 10)
    torch.manual_seed(3)
    y = Dropout(0.4).train()(x)
    torch.manual_seed(3)
    assert torch.equal(y, F.dropout(x, 0.4, training=True))

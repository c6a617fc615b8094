"""CoPE against RoPE and no position encoding, on a task that is about counting.

The task, "the k-th last marker": a sequence of random filler tokens holds 3 to 6 marker
tokens at random places; each marker is one of 8 kinds (its value). The last token is a
query, one of three, asking for the value of the last, second-to-last or third-to-last
marker, and the model must answer with that marker token. Which token that is depends on
how many markers come after it, not on how far away it is: the gaps are random. RoPE
sees distances in tokens, so it has to find the answer some other way; CoPE can learn
gates that fire on markers only, which makes its positions p_ij count markers (cope.py).

Tiny models (1 layer by default) are trained from scratch on sequences of 32 tokens,
then scored on fresh sequences of 32 and of 64 tokens (the longer ones test whether the
learned rule still holds when the gaps grow). Chance is 1/8.

    llmhood experiment cope-counting [--steps 300] [--layers 1] [--seed 0]

tests/test_cope.py runs the same comparison with the default settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmhood.model import ModelConfig, Transformer

N_FILLER = 16  # tokens 0 .. 15
N_VALUES = 8  # marker tokens 16 .. 23, one per value
MAX_K = 3  # query tokens 24 .. 26 ask for the 1st .. 3rd last marker
FIRST_MARKER = N_FILLER
FIRST_QUERY = N_FILLER + N_VALUES
VOCAB = FIRST_QUERY + MAX_K
MARKERS = (MAX_K, 6)  # fewest and most markers per sequence
TRAIN_LEN = 32
ENCODINGS = ("cope", "rope", "none")


def make_batch(
    n: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences and their answers: tokens (n, seq_len), answers (n,) (marker token ids)."""
    tokens = torch.randint(0, N_FILLER, (n, seq_len), generator=generator)
    answers = torch.empty(n, dtype=torch.long)
    for row in range(n):
        count = int(torch.randint(MARKERS[0], MARKERS[1] + 1, (1,), generator=generator))
        places = torch.randperm(seq_len - 1, generator=generator)[:count].sort().values
        markers = FIRST_MARKER + torch.randint(0, N_VALUES, (count,), generator=generator)
        tokens[row, places] = markers
        k = int(torch.randint(1, MAX_K + 1, (1,), generator=generator))
        tokens[row, -1] = FIRST_QUERY + k - 1
        answers[row] = markers[count - k]
    return tokens, answers


@dataclass
class Result:
    encoding: str
    accuracy: float  # held-out, sequences as long as in training
    accuracy_long: float  # held-out, sequences twice as long
    seconds: float  # training time


def accuracy(model: Transformer, seq_len: int, generator: torch.Generator, n: int = 1000) -> float:
    tokens, answers = make_batch(n, seq_len, generator)
    with torch.no_grad():
        guesses = model(tokens)[:, -1].argmax(-1)
    return (guesses == answers).float().mean().item()


def train_and_evaluate(
    encoding: str, steps: int = 300, layers: int = 1, seed: int = 0, batch_size: int = 64
) -> Result:
    """Train a fresh model with `encoding` ("rope", "cope" or "none") and score it.

    Runs on one CPU thread: the matrices are too small to gain from more, and on a busy
    machine extra threads mostly wait for each other.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        config = ModelConfig(
            dim=64, n_layers=layers, n_heads=4, n_kv_heads=4, vocab_size=VOCAB, hidden_dim=128,
            max_seq_len=2 * TRAIN_LEN, rope_theta=10000.0, position_encoding=encoding,
            cope_npos=16,
        )  # fmt: skip
        model = Transformer(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        data = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        for _ in range(steps):
            tokens, answers = make_batch(batch_size, TRAIN_LEN, data)
            loss = F.cross_entropy(model(tokens)[:, -1], answers)  # only the answer is scored
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        model.eval()
        held_out = torch.Generator().manual_seed(10_000 + seed)  # never seen in training
        return Result(
            encoding,
            accuracy(model, TRAIN_LEN, held_out),
            accuracy(model, 2 * TRAIN_LEN, held_out),
            seconds,
        )
    finally:
        torch.set_num_threads(threads)


def table(results: list[Result]) -> str:
    lines = [f"{'encoding':<9} {'acc@32':>7} {'acc@64':>7} {'train s':>8}"]
    lines += [
        f"{r.encoding:<9} {r.accuracy:>7.3f} {r.accuracy_long:>7.3f} {r.seconds:>8.1f}"
        for r in results
    ]
    return "\n".join(lines)


def run(steps: int = 300, layers: int = 1, seed: int = 0) -> list[Result]:
    """CoPE, RoPE and no position encoding, each trained and scored the same way."""
    return [train_and_evaluate(encoding, steps, layers, seed) for encoding in ENCODINGS]

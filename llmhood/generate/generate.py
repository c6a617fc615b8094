"""Autoregressive generation: prefill the prompts once, then one token per step.

A causal model predicts the next token from the ones before it, so text is produced in a
loop: run, pick a token, append it, run again. Re-running the whole sequence each step
costs O(n²); with the KV cache (llmhood.model.kv_cache) each step runs only the newest
token. So there are two phases:

* **prefill** — all prompt tokens in one forward pass, which fills the cache and gives
  the logits for the first new token;
* **decode** — one forward pass per new token, reading earlier keys/values from the cache.

Prompts of different lengths share a batch by *left* padding: every prompt then ends in
the same column, so each row's next token is written to the same cache slot and the last
column always holds every row's newest logits. Two things keep the padding invisible:
`key_padding` stops real tokens from attending to pad slots, and per-row `positions`
start at 0 at each prompt's first real token, so RoPE sees the same positions as for the
prompt alone. Rows finish on their own (end-of-sequence token, stop string or length);
a finished row stops producing tokens and the loop ends when every row has finished.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from llmhood.errors import LLMHoodError
from llmhood.generate.sampling import SamplingParams, row_generators, sample
from llmhood.generate.streaming import ByteTokenizer, StreamDecoder
from llmhood.model import Transformer

FinishReason = Literal["stop", "length", "eos"]


class Tokenizer(ByteTokenizer, Protocol):
    """What generation needs from a tokenizer (llmhood.tokenizer.BPETokenizer)."""

    eos_id: int | None  # always a stop token when set


@dataclass
class Generation:
    text: str
    # New tokens only, without the end-of-sequence/stop token. After a stop string, every
    # token generated up to it is kept: a token may straddle the stop string's boundary.
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: FinishReason  # "stop": stop string; "eos": stop token; "length": limit


@dataclass
class _Row:
    """One prompt's progress through the loop."""

    ids: list[int]  # prompt + new tokens, as the repetition penalty sees them
    prompt_tokens: int
    decoder: StreamDecoder
    pieces: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    def add(self, token: int, stop_ids: set[int], max_new_tokens: int) -> str:
        """Take one sampled token; return the text that became final and update finish_reason."""
        if token in stop_ids:
            self.finish_reason = "eos"
            piece = self.decoder.flush()
        else:
            self.ids.append(token)
            piece = self.decoder.push(token)
            if self.decoder.stopped:
                self.finish_reason = "stop"
            elif len(self.ids) - self.prompt_tokens == max_new_tokens:
                self.finish_reason = "length"
                piece += self.decoder.flush()
        self.pieces.append(piece)
        return piece

    def generation(self) -> Generation:
        assert self.finish_reason is not None, "generation() before the loop finished"
        return Generation(
            text="".join(self.pieces),
            token_ids=self.ids[self.prompt_tokens :],
            prompt_tokens=self.prompt_tokens,
            finish_reason=self.finish_reason,
        )


@dataclass
class _Batch:
    rows: list[_Row]
    max_new_tokens: int
    sampling: SamplingParams
    stop_ids: set[int]


def generate_stream(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    sampling: SamplingParams,
    stop_token_ids: set[int],
    stop_strings: Sequence[str] = (),
) -> Iterator[tuple[int, str]]:
    """Generate for every prompt at once, yielding (row, text piece) as text becomes final.

    `row` indexes `prompt_ids`. Generation of a row ends at a token in `stop_token_ids` or
    the tokenizer's EOS, at a stop string (which is not shown), or after `max_new_tokens`.
    Arguments are checked here, before the first token, not when iteration starts.
    """
    batch = _start(
        model, tokenizer, prompt_ids, max_new_tokens, sampling, stop_token_ids, stop_strings
    )
    return _run(model, batch)


def generate(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    sampling: SamplingParams,
    stop_token_ids: set[int],
    stop_strings: Sequence[str] = (),
) -> list[Generation]:
    """`generate_stream`, run to the end: one Generation per prompt, in prompt order."""
    batch = _start(
        model, tokenizer, prompt_ids, max_new_tokens, sampling, stop_token_ids, stop_strings
    )
    for _ in _run(model, batch):
        pass
    return [row.generation() for row in batch.rows]


def _start(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    sampling: SamplingParams,
    stop_token_ids: set[int],
    stop_strings: Sequence[str],
) -> _Batch:
    """Check the request and set up one row per prompt."""
    sampling.validate()
    if max_new_tokens < 1:
        raise LLMHoodError(
            f"max_new_tokens={max_new_tokens} is invalid: it is the number of tokens to "
            "generate and must be at least 1."
        )
    if not prompt_ids:
        raise LLMHoodError("No prompt was given: generation needs at least one prompt.")
    context, vocab = model.config.max_seq_len, model.config.vocab_size
    for i, prompt in enumerate(prompt_ids):
        name = "The prompt" if len(prompt_ids) == 1 else f"Prompt {i}"
        if not prompt:
            raise LLMHoodError(
                f"{name} is empty: the model needs at least one token to continue from. "
                "Give some text, or start the prompt with the BOS token."
            )
        if len(prompt) + max_new_tokens > context:
            advice = (
                f"shorten the prompt or lower max_new_tokens to at most {context - len(prompt)}"
                if len(prompt) < context
                else f"shorten the prompt to fewer than {context} tokens"
            )
            raise LLMHoodError(
                f"{name} has {len(prompt)} tokens and max_new_tokens is {max_new_tokens}, "
                f"{len(prompt) + max_new_tokens} in all, but the model's context window is "
                f"{context} tokens: {advice}."
            )
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise LLMHoodError(
                f"{name} holds token id {bad[0]}, but the model's vocabulary has ids 0 to "
                f"{vocab - 1}: the tokenizer does not belong to this model."
            )
    rows = [
        _Row(list(prompt), len(prompt), StreamDecoder(tokenizer, stop_strings))
        for prompt in prompt_ids
    ]
    stop_ids = set(stop_token_ids)
    if tokenizer.eos_id is not None:
        stop_ids.add(tokenizer.eos_id)
    return _Batch(rows, max_new_tokens, sampling, stop_ids)


def _run(model: Transformer, batch: _Batch) -> Iterator[tuple[int, str]]:
    """The generation loop shared by `generate` and `generate_stream`."""
    rows = batch.rows
    device = model.tok_embeddings.weight.device
    lengths = torch.tensor([row.prompt_tokens for row in rows], device=device)  # (bs,)
    width = int(lengths.max())
    pad = width - lengths  # (bs,) pad slots at the left of each row
    total = width + batch.max_new_tokens
    # True for real tokens: a row's slots from its first prompt token on, new tokens included.
    key_padding = torch.arange(total, device=device)[None, :] >= pad[:, None]  # (bs, total)
    tokens = torch.zeros(len(rows), width, dtype=torch.long, device=device)  # (bs, width)
    for i, row in enumerate(rows):
        tokens[i, width - row.prompt_tokens :] = torch.tensor(row.ids, device=device)
    positions = (torch.arange(width, device=device)[None, :] - pad[:, None]).clamp(min=0)
    generators = row_generators(batch.sampling.seed, len(rows), device)
    cache = model.new_cache(len(rows), total)

    with torch.inference_mode():
        logits = model(tokens, positions, cache, key_padding[:, :width])[:, -1]  # (bs, V)
    for step in range(batch.max_new_tokens):
        next_ids = sample(logits, batch.sampling, generators, [row.ids for row in rows])  # (bs,)
        for i, (row, token) in enumerate(zip(rows, next_ids.tolist(), strict=True)):
            if row.finish_reason is None:
                piece = row.add(token, batch.stop_ids, batch.max_new_tokens)
                if piece:
                    yield i, piece
        if all(row.finish_reason is not None for row in rows):
            return
        # Finished rows still run (their output is ignored) so that the batch keeps its shape.
        with torch.inference_mode():
            logits = model(
                next_ids[:, None],
                (lengths + step)[:, None],  # the new token's position in its own row
                cache,
                key_padding[:, : cache.length + 1],
            )[:, -1]

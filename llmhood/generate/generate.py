"""Autoregressive generation: prefill the prompts once, then one token per step.

A causal model predicts the next token from the ones before it, so text is produced in a
loop: run, pick a token, append it, run again. Re-running the whole sequence each step
costs O(n²); with the KV cache (llmhood.model.kv_cache) each step runs only the newest
token. So there are two phases:

* **prefill** — all of a prompt's tokens in one forward pass, which fills the cache and
  gives the logits for the first new token;
* **decode** — one forward pass per new token, reading earlier keys/values from the cache.

Prompts of different lengths share a batch by *left* padding the cache. Each prompt is
prefilled alone (in a padded batch every pad slot is computed like a token: for prompts
of 1 to 300 tokens, often more than half the work) and its keys and values are
placed at the end of its row, so every row ends in the same slot: each step writes every
row's new token to the same slot, and one forward pass decodes all rows. Two things keep
the padding invisible: `key_padding` stops tokens from attending to pad slots, and
per-row `positions` continue from each prompt's own length, so RoPE sees the positions it
sees for the prompt alone. Rows finish on their own (end-of-sequence token, stop string
or length). A finished row leaves the batch: its rows of the KV cache are dropped, and so
are the leading slots that were padding in every row still running, so that each later
step computes only for live rows. A long prompt list runs in chunks of `batch_size`
prompts, longest first, so that prompts of similar length share a chunk and pad little.

What batching guarantees. Sampling draws each row from its own generator, seeded by
(seed, the prompt's index in the caller's list), so a prompt's random numbers do not
depend on the other prompts, on batch_size or on the sorting. The prefill is the prompt's
prefill alone, bit for bit, so the first new token is always the one it gets alone. Each
decode step computes for every row the same function as for the prompt alone, but not
the same float32 rounding: CPU kernels choose their order of summation by shape (MKL
multiplies one row, and most row counts below 12, with other kernels than larger
products; the fused attention kernel's blocked reductions run over the padding slots
too). So a row's logits in a batch differ from its logits alone in the last bits: by
about 1e-4 at most on SmolLM2, whose logits are of order 10. Greedy and seeded sampled
tokens are therefore identical to the prompt alone unless two candidates lie within that
rounding noise; tests/test_batching.py checks 10 prompts of 1 to about 300 tokens, token
for token. Bit-exact decoding would need kernels that sum in one fixed order whatever the
shape, e.g. every matrix product padded to at least 12 rows, which makes single-prompt
decoding about 3× slower on a CPU.

Logits processors. Each prompt may bring a `LogitsProcessor` (a constraint such as a JSON
schema, llmhood.generate.constrain.matcher), one per row or none. It sees its row's logits
as the model returns them, on the plain and the fused decode path alike, before any
sampling step, so every sampling setting draws from the tokens it allows only; then it
follows the token drawn. A processor is given the stop tokens and decides when they may
come (a constraint allows them once its text is complete). The guarantees above hold for
constrained rows too: a processor's decisions depend on its own row's tokens alone. A
constrained row that reaches max_new_tokens before its text is complete says so in
`Generation.constraint_complete`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import torch

from llmhood.errors import LLMHoodError
from llmhood.generate.sampling import SamplingParams, row_generators, sample
from llmhood.generate.streaming import ByteTokenizer, StreamDecoder
from llmhood.model import Transformer

FinishReason = Literal["stop", "length", "eos"]

# Prompts that run together unless the caller says otherwise: enough rows to keep the
# matrix kernels busy, few enough that their KV cache fits in memory (SmolLM2 keeps 45 KiB
# per token: 16 prompts filling its 8192-token context take almost 6 GiB).
DEFAULT_BATCH_SIZE = 16


class LogitsProcessor(Protocol):
    """One row's say over its next token."""

    def process(self, logits: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
        """logits (V,) of the row's next token -> (V,), -inf where a token may not come.
        stop_ids: (k,) int64, the batch's stop tokens."""
        ...

    def advance(self, token: int) -> None:
        """Follow the token the row drew (never a stop token: those end the row)."""
        ...

    @property
    def complete(self) -> bool:
        """The row's text is complete as far as the processor is concerned."""
        ...


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
    # With a constraint: whether the text is complete (False: it stopped at max_new_tokens,
    # or at a stop string, before the constraint was satisfied). None without a constraint.
    constraint_complete: bool | None = None


@dataclass
class _Row:
    """One prompt's progress through the loop."""

    index: int  # in the caller's prompt list: names the row in results and seeds its sampler
    ids: list[int]  # prompt + new tokens, as the repetition penalty sees them
    prompt_tokens: int
    decoder: StreamDecoder
    processor: LogitsProcessor | None = None
    pieces: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    def add(self, token: int, stop_ids: set[int], max_new_tokens: int) -> str:
        """Take one sampled token; return the text that became final and update finish_reason."""
        if token in stop_ids:
            self.finish_reason = "eos"
            piece = self.decoder.flush()
        else:
            if self.processor is not None:
                self.processor.advance(token)
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
            constraint_complete=None if self.processor is None else self.processor.complete,
        )


@dataclass
class _Batch:
    rows: list[_Row]
    max_new_tokens: int
    sampling: SamplingParams
    stop_ids: set[int]

    def chunks(self, batch_size: int) -> Iterator[_Batch]:
        """Sub-batches of at most `batch_size` rows, longest prompts first.

        Sorting puts prompts of similar length together, so a chunk pads little. It changes
        which prompts share a chunk, never a row's name or sampler: both come from `index`.
        """
        rows = sorted(self.rows, key=lambda row: -row.prompt_tokens)
        for start in range(0, len(rows), batch_size):
            yield replace(self, rows=rows[start : start + batch_size])


def generate_stream(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    sampling: SamplingParams,
    stop_token_ids: set[int],
    stop_strings: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    processors: Sequence[LogitsProcessor | None] | None = None,
) -> Iterator[tuple[int, str]]:
    """Generate for every prompt, yielding (row, text piece) as text becomes final.

    `row` indexes `prompt_ids`. Generation of a row ends at a token in `stop_token_ids` or
    the tokenizer's EOS, at a stop string (which is not shown), or after `max_new_tokens`.
    At most `batch_size` prompts run together; the next chunk starts when one has finished.
    `processors`: one LogitsProcessor or None per prompt (each used by one row only), or None.
    Arguments are checked here, before the first token, not when iteration starts.
    """
    batch = _start(
        model, tokenizer, prompt_ids, max_new_tokens, sampling, stop_token_ids, stop_strings,
        processors,
    )  # fmt: skip
    check_batch_size(batch_size)
    return _run_chunks(model, batch, batch_size)


def generate(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    sampling: SamplingParams,
    stop_token_ids: set[int],
    stop_strings: Sequence[str] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    processors: Sequence[LogitsProcessor | None] | None = None,
) -> list[Generation]:
    """`generate_stream`, run to the end: one Generation per prompt, in prompt order."""
    batch = _start(
        model, tokenizer, prompt_ids, max_new_tokens, sampling, stop_token_ids, stop_strings,
        processors,
    )  # fmt: skip
    check_batch_size(batch_size)
    for _ in _run_chunks(model, batch, batch_size):
        pass
    return [row.generation() for row in batch.rows]


def check_batch_size(batch_size: int) -> None:
    """Public, so that the CLI can refuse a bad --batch-size before it loads a model."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise LLMHoodError(
            f"batch_size={batch_size!r} is invalid: it is the number of prompts that run "
            "together and must be a whole number of at least 1."
        )


def _start(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    sampling: SamplingParams,
    stop_token_ids: set[int],
    stop_strings: Sequence[str],
    processors: Sequence[LogitsProcessor | None] | None,
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
    processors = [None] * len(prompt_ids) if processors is None else list(processors)
    if len(processors) != len(prompt_ids):
        raise LLMHoodError(
            f"{len(processors)} logits processors were given for {len(prompt_ids)} prompts: "
            "give one per prompt (None for a prompt without one)."
        )
    if len({id(p) for p in processors if p is not None}) < sum(p is not None for p in processors):
        raise LLMHoodError(
            "The same logits processor was given for two prompts, but a processor follows "
            "one row's tokens: give each prompt its own."
        )
    stop_ids = set(stop_token_ids)
    if tokenizer.eos_id is not None:
        stop_ids.add(tokenizer.eos_id)
    if not stop_ids and any(p is not None for p in processors):
        raise LLMHoodError(
            "A constrained generation needs a stop token, to end once the text is complete, "
            "but the tokenizer has no end-of-sequence token and none was given."
        )
    rows = [
        _Row(i, list(prompt), len(prompt), StreamDecoder(tokenizer, stop_strings), processor)
        for i, (prompt, processor) in enumerate(zip(prompt_ids, processors, strict=True))
    ]
    return _Batch(rows, max_new_tokens, sampling, stop_ids)


def _run_chunks(model: Transformer, batch: _Batch, batch_size: int) -> Iterator[tuple[int, str]]:
    for chunk in batch.chunks(batch_size):
        yield from _run(model, chunk)


def _process(logits: torch.Tensor, rows: list[_Row], stop_ids: torch.Tensor) -> torch.Tensor:
    """Each row's logits (bs, V) through its processor, if it has one."""
    if all(row.processor is None for row in rows):
        return logits
    return torch.stack(
        [
            logits[i] if row.processor is None else row.processor.process(logits[i], stop_ids)
            for i, row in enumerate(rows)
        ]
    )


def _run(model: Transformer, batch: _Batch) -> Iterator[tuple[int, str]]:
    """The prefill/decode loop for one batch; yields (row index, text piece)."""
    rows = batch.rows  # the rows still generating; finished ones leave it
    device = model.tok_embeddings.weight.device
    lengths = torch.tensor([row.prompt_tokens for row in rows], device=device)  # (bs,)
    width = int(lengths.max())
    pad = width - lengths  # (bs,) pad slots at the left of each row
    total = width + batch.max_new_tokens
    # True for real tokens: a row's slots from its first prompt token on, new tokens included.
    key_padding = torch.arange(total, device=device)[None, :] >= pad[:, None]  # (bs, total)
    padded = bool(pad.any())  # without padding, a decode step needs no mask at all
    generators = row_generators(batch.sampling.seed, [row.index for row in rows], device)
    cache = model.new_cache(len(rows), total)

    # Prefill one prompt at a time, without padding. Batching pays off in decode, where a
    # step reads all the weights whether it computes one row or many.
    first_logits = []
    with torch.inference_mode():
        for i, row in enumerate(rows):
            alone = model.new_cache(1, row.prompt_tokens)
            ids = torch.tensor([row.ids], device=device)  # (1, prompt_tokens)
            first_logits.append(model(ids, cache=alone, last_only=True)[:, -1])  # (1, V)
            cache.fill_row(i, alone, end=width)
    cache.advance(width)
    logits = torch.cat(first_logits)  # (bs, V)
    stop_ids = torch.tensor(sorted(batch.stop_ids), dtype=torch.long, device=device)  # (k,)
    for step in range(batch.max_new_tokens):
        logits = _process(logits, rows, stop_ids)
        next_ids = sample(logits, batch.sampling, generators, [row.ids for row in rows])  # (bs,)
        for row, token in zip(rows, next_ids.tolist(), strict=True):
            piece = row.add(token, batch.stop_ids, batch.max_new_tokens)
            if piece:
                yield row.index, piece
        live = [i for i, row in enumerate(rows) if row.finish_reason is None]
        if not live:
            return
        if len(live) < len(rows):
            # Drop the finished rows, so that every later step computes for live rows only,
            # and the leading slots that are padding in every row still live.
            keep = torch.tensor(live, device=device)
            rows = [rows[i] for i in live]
            if generators is not None:
                generators = [generators[i] for i in live]
            next_ids, lengths, key_padding = next_ids[keep], lengths[keep], key_padding[keep]
            unused = int((~key_padding).sum(dim=1).min())  # the smallest live row's padding
            cache.keep_rows(keep, unused)
            key_padding = key_padding[:, unused:]
            padded = not bool(key_padding.all())
        with torch.inference_mode():
            logits = model(
                next_ids[:, None],
                (lengths + step)[:, None],  # the new token's position in its own row
                cache,
                key_padding[:, : cache.length + 1] if padded else None,
            )[:, -1]

"""`llmhood.load()` and the `LLM` it returns: a model, its tokenizer, and generation.

This is the Python face of the CLI: `llmhood generate` is `LLM.generate`/`LLM.stream`,
`llmhood chat` is `LLM.stream_chat` with a growing message list.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmhood.errors import LLMHoodError
from llmhood.generate import (
    DEFAULT_BATCH_SIZE,
    Generation,
    SamplingParams,
    generate,
    generate_stream,
)
from llmhood.generate.chat_settings import ChatSettings, chat_settings
from llmhood.generate.constrain.matcher import Constraint, Constraints
from llmhood.generate.constrain.vocab import TokenVocab
from llmhood.model import ModelConfig, Transformer
from llmhood.model.fast import decode_step as fast_step
from llmhood.registry import DEFAULT_MODEL, resolve
from llmhood.speed.guard import choose
from llmhood.speed.modes import DTYPES as DTYPES
from llmhood.speed.modes import REFERENCE, Mode, build, requested
from llmhood.tokenizer import BPETokenizer

# Tokens that end an assistant turn in the chat formats we know; the model's own EOS is
# always included.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>")


class IncompleteConstraint(UserWarning):
    """A streamed constrained generation stopped before its text was complete."""


@dataclass
class LLM:
    model: Transformer
    tokenizer: BPETokenizer
    source: str
    load_seconds: float = 0.0
    # How the weights are held and which fast paths run (llmhood.speed.modes).
    mode: Mode = REFERENCE
    # Sampling options `chat` and `stream_chat` start from (llmhood.generate.chat_settings).
    chat_settings: ChatSettings = field(default_factory=ChatSettings)
    # The fine-tuned adapter running on the base, if any (llmhood.train.adapter.Adapter).
    adapter: Any = None
    # This tokenizer's compiled constraints, built on first use (llmhood.generate.constrain).
    _constraints: Constraints | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def dtype(self) -> torch.dtype:
        return self.model.tok_embeddings.weight.dtype

    @property
    def stop_token_ids(self) -> set[int]:
        ids = {self.tokenizer.token_to_id(t) for t in END_OF_TURN}
        ids.add(self.tokenizer.eos_id)
        return {i for i in ids if i is not None}

    def encode_prompts(
        self, prompts: Sequence[str], add_bos: bool | None = None
    ) -> list[list[int]]:
        """Token ids per prompt; BOS only where the model asks for it, unless told."""
        bos = self.tokenizer.add_bos if add_bos is None else add_bos
        return [self.tokenizer.encode(p, add_bos=bos) for p in prompts]

    @property
    def constraints(self) -> Constraints:
        """The compiled constraints of this model's tokenizer: each distinct schema, regex
        or grammar is compiled once and shared by every row and every call."""
        if self._constraints is None:
            vocab = TokenVocab.from_tokenizer(self.tokenizer, self.config.vocab_size)
            self._constraints = Constraints(vocab)
        return self._constraints

    def processors(self, prompts: int, **constraint: Any) -> list[Constraint | None] | None:
        """One constraint per prompt from at most one of json_schema=, regex=, grammar=:
        a single value for every prompt, or a list with one value (or None) per prompt."""
        given = {kind: value for kind, value in constraint.items() if value is not None}
        if len(given) > 1:
            raise LLMHoodError(
                f"Give at most one of json_schema, regex and grammar; this call had "
                f"{' and '.join(given)}."
            )
        if not given:
            return None
        kind, value = next(iter(given.items()))
        values = value if isinstance(value, list) else [value] * prompts
        if len(values) != prompts:
            raise LLMHoodError(
                f"{kind} is a list of {len(values)} for {prompts} prompts: give one per prompt "
                "(None for a prompt without one), or a single value for all."
            )
        return [None if v is None else self.constraints.constraint(kind, v) for v in values]

    def _run(
        self,
        prompts: str | Sequence[str],
        stream: bool,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        seed: int | None = 0,
        stop: Sequence[str] = (),
        add_bos: bool | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        json_schema: Any = None,
        regex: str | list[str | None] | None = None,
        grammar: str | list[str | None] | None = None,
    ) -> tuple[list[Generation] | Iterator[tuple[int, str]], list[Constraint | None] | None]:
        if isinstance(prompts, str):
            prompts = [prompts]
        sampling = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, seed)
        sampling.validate()
        processors = self.processors(
            len(prompts), json_schema=json_schema, regex=regex, grammar=grammar
        )
        args = (self.model, self.tokenizer, self.encode_prompts(prompts, add_bos))
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            stop_token_ids=self.stop_token_ids,
            stop_strings=list(stop),
            batch_size=batch_size,
            processors=processors,
        )
        run = generate_stream(*args, **kwargs) if stream else generate(*args, **kwargs)
        return run, processors

    def generate(self, prompts: str | Sequence[str], **options) -> list[Generation]:
        """One `Generation` per prompt, in the order given. Options: max_new_tokens,
        temperature, top_k, top_p, min_p, repetition_penalty, seed, stop (strings), add_bos,
        batch_size (prompts that run together; a long list runs in chunks of this size), and
        at most one constraint: json_schema (a dict or JSON text), regex or grammar (GBNF
        text), one for all prompts or a list with one per prompt (None: unconstrained).

        A prompt's result does not depend on which prompts share its batch or on batch_size:
        see llmhood.generate.generate for what exactly is guaranteed. A constrained text that
        reached max_new_tokens before it was complete has `constraint_complete` False."""
        return self._run(prompts, stream=False, **options)[0]

    def stream(self, prompt: str, **options) -> Iterator[str]:
        """Text pieces of one prompt's continuation as soon as they are final. A constrained
        text that stops before it is complete ends with an `IncompleteConstraint` warning."""
        pieces, processors = self._run([prompt], stream=True, **options)
        for _, piece in pieces:
            yield piece
        if processors and not processors[0].complete:
            warnings.warn(
                "The constrained text stopped before it was complete (max_new_tokens or a stop "
                "string came first): it does not match its schema, regex or grammar. Raise "
                "max_new_tokens.",
                IncompleteConstraint,
                stacklevel=2,
            )

    def chat_prompt(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt)

    def chat(self, messages: Sequence[dict], **options) -> str:
        """The assistant's reply to a conversation, rendered with the model's chat template.

        Sampling starts from `chat_settings` (the model's recommended settings, or ones
        measured to loop least); options override them, and temperature=0 is greedy."""
        options = {**self.chat_settings.options, **options}
        return self.generate(self.chat_prompt(messages), add_bos=False, **options)[0].text

    def stream_chat(self, messages: Sequence[dict], **options) -> Iterator[str]:
        """`chat`, as text pieces as soon as they are final."""
        options = {**self.chat_settings.options, **options}
        return self.stream(self.chat_prompt(messages), add_bos=False, **options)


def load(
    model: str | Path = DEFAULT_MODEL,
    dtype: str | torch.dtype = "auto",
    progress: bool = True,
    *,
    quantize: str | None = "auto",
    fuse: bool | None = None,
    dense: bool | None = None,
    decode_step: bool | None = None,
    adapter: str | Path | None = None,
) -> LLM:
    """Load a model by name ("smollm2-135m"), or from a .gguf file, an HF or a Meta directory.

    By default (dtype and quantize "auto") the fastest mode this machine runs whose
    perplexity stays within 2% of float32's is chosen (llmhood.speed.guard; the first load
    of a file measures it, later loads remember). dtype="float32" is the exact reference path.
    quantize: "int4", "int8" or None; fuse: fused q/k/v and gate/up projections; dense:
    int4 only, also keep bf16 weights for prefill and batches; decode_step: one C++ call per
    generated token instead of the Python blocks (llmhood.model.fast.decode_step; by default on
    where it can run, except in float32).
    adapter: a LoRA/DoRA adapter to run on the base, unmerged and exact, in float32: a run
    directory of `llmhood train`, its adapter/ or a peft adapter directory. `model` then
    defaults to the base the adapter names. To run it quantized, merge it first
    (`llmhood export --merge`) and load the merged model.
    """
    start = time.perf_counter()
    if adapter is not None:
        return _load_with_adapter(model, adapter, dtype, quantize, progress, start)
    path = resolve(model)  # every argument is checked before anything slow starts
    modes = requested(dtype, quantize, fuse, dense)
    problem = fast_step.available() if decode_step else None
    if problem is not None:
        raise LLMHoodError(f"The fused decode step cannot run here: {problem}.")
    mode = choose(path, modes, progress)
    net, checkpoint = build(path, mode, progress, decode_step=decode_step)
    warm_up(net)
    settings = chat_settings(checkpoint.sampling, checkpoint.source)
    seconds = time.perf_counter() - start
    return LLM(net, checkpoint.tokenizer, checkpoint.source, seconds, mode, settings)


def _load_with_adapter(
    model: str | Path | None,
    adapter: str | Path,
    dtype: str | torch.dtype,
    quantize: str | None,
    progress: bool,
    start: float,
) -> LLM:
    # The adapter is training's; the engine imports it only when asked to run one.
    from llmhood.train.adapter import attach, read_adapter

    if dtype not in ("auto", "float32", torch.float32) or quantize not in ("auto", None):
        raise LLMHoodError(
            "An adapter runs on the float32 base, unmerged. To run it in another dtype or "
            "quantized, merge it first (llmhood export RUN --merge --format gguf --out DIR) and "
            "load the merged model."
        )
    found = read_adapter(adapter)
    base = found.base if model in (None, DEFAULT_MODEL) and found.base else model
    net, checkpoint = build(resolve(base or DEFAULT_MODEL), REFERENCE, progress, keep=False,
                            decode_step=False)  # fmt: skip
    attach(net, found)
    net.eval()
    settings = chat_settings(checkpoint.sampling, checkpoint.source)
    source = f"{checkpoint.source} + adapter {found.source}"
    llm = LLM(net, checkpoint.tokenizer, source, time.perf_counter() - start, REFERENCE, settings)
    llm.adapter = found
    return llm


def warm_up(model: Transformer, prompt_tokens: int = 32) -> None:
    """Run one short prompt and one decode step, and throw them away.

    The first forward passes in a process pay for setting up what later ones reuse: the
    matmul libraries' kernels for this CPU, torch's thread pool, the allocator's first
    blocks. On SmolLM2 and 2 cores that is about 30 ms on the first answer's first token.
    Paid here, it makes the load that much longer and the first answer as quick as the next
    (llama.cpp warms up at load the same way). The prompt is long enough to take the dense
    path of int4 layers, the step the single-token path.
    """
    device = model.tok_embeddings.weight.device
    with torch.inference_mode():
        tokens = torch.zeros(1, prompt_tokens, dtype=torch.long, device=device)
        cache = model.new_cache(1, prompt_tokens + 1)
        model(tokens, cache=cache, last_only=True)
        model(tokens[:, :1], cache=cache, last_only=True)

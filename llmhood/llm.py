"""`llmhood.load()` and the `LLM` it returns: a model, its tokenizer, and generation.

This is the Python face of the CLI: `llmhood generate` is `LLM.generate`/`LLM.stream`,
`llmhood chat` is `LLM.stream_chat` with a growing message list.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from llmhood.errors import LLMHoodError
from llmhood.generate import Generation, SamplingParams, generate, generate_stream
from llmhood.model import ModelConfig, Transformer
from llmhood.registry import DEFAULT_MODEL, resolve
from llmhood.tokenizer import BPETokenizer
from llmhood.weights import read_checkpoint
from llmhood.weights.checkpoint import build_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Tokens that end an assistant turn in the chat formats we know; the model's own EOS is
# always included.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name; "auto" is float32 for now, exact and what tests compare."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32
    if dtype not in DTYPES:
        raise LLMHoodError(f"Unknown dtype '{dtype}'. Choose one of: auto, {', '.join(DTYPES)}.")
    return DTYPES[dtype]


@dataclass
class LLM:
    model: Transformer
    tokenizer: BPETokenizer
    source: str
    load_seconds: float = 0.0

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
    ) -> list[Generation] | Iterator[tuple[int, str]]:
        if isinstance(prompts, str):
            prompts = [prompts]
        sampling = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, seed)
        sampling.validate()
        args = (self.model, self.tokenizer, self.encode_prompts(prompts, add_bos))
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            stop_token_ids=self.stop_token_ids,
            stop_strings=list(stop),
        )
        return generate_stream(*args, **kwargs) if stream else generate(*args, **kwargs)

    def generate(self, prompts: str | Sequence[str], **options) -> list[Generation]:
        """One `Generation` per prompt. Options: max_new_tokens, temperature, top_k, top_p,
        min_p, repetition_penalty, seed, stop (strings), add_bos."""
        return self._run(prompts, stream=False, **options)

    def stream(self, prompt: str, **options) -> Iterator[str]:
        """Text pieces of one prompt's continuation as soon as they are final."""
        for _, piece in self._run([prompt], stream=True, **options):
            yield piece

    def chat_prompt(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt)

    def chat(self, messages: Sequence[dict], **options) -> str:
        """The assistant's reply to a conversation, rendered with the model's chat template."""
        return self.generate(self.chat_prompt(messages), add_bos=False, **options)[0].text

    def stream_chat(self, messages: Sequence[dict], **options) -> Iterator[str]:
        return self.stream(self.chat_prompt(messages), add_bos=False, **options)


def load(
    model: str | Path = DEFAULT_MODEL, dtype: str | torch.dtype = "auto", progress: bool = True
) -> LLM:
    """Load a model by name ("smollm2-135m"), or from a .gguf file, an HF or a Meta directory."""
    start = time.perf_counter()
    torch_dtype = resolve_dtype(dtype)
    checkpoint = read_checkpoint(resolve(model), progress=progress)
    if checkpoint.tokenizer is None:
        raise LLMHoodError(f"{checkpoint.source} has no tokenizer; llmhood needs one to run it.")
    net = build_model(checkpoint, torch_dtype).eval()
    return LLM(net, checkpoint.tokenizer, checkpoint.source, time.perf_counter() - start)

"""The quality guard: the automatic mode is the fastest one whose perplexity holds.

A fast mode rounds differently from the float32 reference (bf16 activations, int8 weights),
and how much that costs depends on the model: a mode is taken only if its perplexity on a
fixed text stays within 2% of the reference's (llmhood.perplexity). A verdict takes a
perplexity run, seconds, and depends only on the model file, the software and the CPU, so
each is computed once and kept in llmhood.speed.cache.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import torch

from llmhood.model import Transformer
from llmhood.model.fast.quantized import Int4Linear, int4_kernel_only
from llmhood.perplexity import GUARD_TOKENS, Verdict, guard_tokens, perplexity
from llmhood.speed import cache
from llmhood.speed.modes import REFERENCE, Mode, build

CACHE_KIND = "guard"  # llmhood.speed.cache kind of the verdicts


def guard_verdicts(path: Path, modes: list[Mode], progress: bool = True) -> dict[str, Verdict]:
    """The quality guard's verdict on `modes` for the model at `path`, from the cache where it
    has them (computing one takes seconds: a perplexity run)."""
    known = cache.read(path, CACHE_KIND) or {}
    verdicts = {name: Verdict(**v) for name, v in known.items()}
    missing = [m for m in modes if m.name not in verdicts]
    if missing:
        if progress:
            names = ", ".join(m.name for m in missing)
            print(
                f"llmhood: checking the perplexity of {names} against float32 on this machine, "
                f"once for this model file (remembered in {cache.cache_dir()})",
                file=sys.stderr,
            )
        verdicts.update(evaluate(path, missing, progress))
        cache.write(path, CACHE_KIND, {name: asdict(v) for name, v in verdicts.items()})
    return verdicts


def evaluate(
    path: Path, modes: list[Mode], progress: bool = True, tokens: int = GUARD_TOKENS
) -> dict[str, Verdict]:
    """Perplexity of each mode on the first `tokens` tokens of the guard text, next to the
    float32 reference's."""
    reference, ckpt = build(path, REFERENCE, progress)
    text = guard_tokens(ckpt.tokenizer, tokens)
    ref = perplexity(reference, text).value
    del reference  # its memory is free before the next model is built
    verdicts = {REFERENCE.name: Verdict(REFERENCE.name, ref, ref)}
    for mode in modes:
        if mode != REFERENCE:
            model = build(path, mode, progress, keep=False)[0]
            verdicts[mode.name] = Verdict(mode.name, mode_perplexity(model, text), ref)
    return verdicts


def mode_perplexity(model: Transformer, tokens: torch.Tensor) -> float:
    """Perplexity of a model in whatever mode, by its worse path: with dense copies, the int4
    kernel (decoding) and the bf16 matmuls (prefill) are measured separately."""
    value = perplexity(model, tokens).value
    if any(isinstance(m, Int4Linear) and m.dense is not None for m in model.modules()):
        with int4_kernel_only(model):
            value = max(value, perplexity(model, tokens).value)
    return value


def choose(path: Path, modes: list[Mode], progress: bool = True) -> Mode:
    """The first (fastest) of `modes` that the quality guard passes; a single mode is taken
    as asked, unguarded. The float32 reference always passes.

    Modes are judged in order and only until one passes, so the first load of a file
    measures the reference and the fastest mode, seconds, not every candidate."""
    if len(modes) == 1:
        return modes[0]
    for mode in modes:
        if mode == REFERENCE or not guard_verdicts(path, [mode], progress)[mode.name].lossy:
            return mode
    return modes[-1]

"""Seeing inside one forward pass: the residual stream after every block, and attention.

`Transformer.forward` returns logits and nothing else, so that generation never keeps
what it does not need. To look at the values in between, `capture` attaches PyTorch
forward hooks (the documented way to observe a module's output without changing its
code) to the embedding and to every block, and sets the `capture_weights` flag of the
attention layers asked for, so that they run the explicit path and keep their softmax
weights. Leaving the `with` block removes the hooks and restores the flags: the model
runs exactly as before.

    with capture(model, attention_layers=[3]) as seen:
        model(tokens)
    seen.hidden[0]     # the token embeddings, (bs, seqlen, dim)
    seen.hidden[-1]    # the residual stream after the last block, before the final norm
    seen.attention[3]  # layer 3's weights, (bs, n_heads, q_len, kv_len)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from llmhood.errors import LLMHoodError
from llmhood.model.transformer import Transformer


@dataclass
class Captured:
    """What the latest forward pass inside `capture` produced; each pass replaces it."""

    # n_layers + 1 tensors (bs, seqlen, dim): hidden[0] is the embedding output and
    # hidden[i] the residual stream after block i - 1, without the final norm.
    hidden: list[torch.Tensor] = field(default_factory=list)
    # layer -> (bs, n_heads, q_len, kv_len) attention weights, for the layers asked for.
    attention: dict[int, torch.Tensor] = field(default_factory=dict)


def check_layer(model: Transformer, layer: int) -> None:
    n_layers = len(model.layers)
    if not 0 <= layer < n_layers:
        raise LLMHoodError(
            f"Layer {layer} does not exist: this model has {n_layers} layers, 0 to {n_layers - 1}."
        )


@contextmanager
def capture(model: Transformer, attention_layers: Iterable[int] = ()) -> Iterator[Captured]:
    """Record the residual stream of every block, and the attention weights of
    `attention_layers`, for each forward pass run inside the `with` block."""
    layers = sorted(set(attention_layers))
    for i in layers:
        check_layer(model, i)
    seen = Captured()

    def start(module, args, output: torch.Tensor) -> None:
        seen.hidden[:] = [output.detach()]  # the embedding runs first: a new pass begins

    def block_output(module, args, output: torch.Tensor) -> None:
        seen.hidden.append(output.detach())

    def weights_of(i: int) -> Callable[..., None]:
        def hook(module, args, output) -> None:
            seen.attention[i] = module.last_weights.detach()

        return hook

    handles = [model.tok_embeddings.register_forward_hook(start)]
    handles += [block.register_forward_hook(block_output) for block in model.layers]
    flags = {i: model.layers[i].attention.capture_weights for i in layers}
    try:
        for i in layers:
            model.layers[i].attention.capture_weights = True
            handles.append(model.layers[i].attention.register_forward_hook(weights_of(i)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()
        for i, flag in flags.items():
            attention = model.layers[i].attention
            attention.capture_weights = flag
            if not flag:
                attention.last_weights = None

"""Where a Llama's parameters sit: each tensor sorted into the kind of module that owns it.

`llmhood info` prints these counts and `llmhood plot params` draws them. A tensor that two
modules share (a tied output head is the embedding matrix) is counted once, under the
embedding.
"""

from __future__ import annotations

from collections import defaultdict

from llmhood.model.transformer import Transformer

# Module names inside a block, and at the top level, -> the kind they are counted under.
BLOCK_KINDS = {
    "wq": "attention q", "wk": "attention k", "wv": "attention v", "wo": "attention o",
    "w1": "ffn gate", "w3": "ffn up", "w2": "ffn down",
    "attention_norm": "norms", "ffn_norm": "norms",
}  # fmt: skip
TOP_KINDS = {"tok_embeddings": "embedding", "norm": "norms", "output": "output head"}


def kind_of(name: str) -> str:
    """'layers.3.attention.wq.weight' -> 'attention q'; a module we do not know keeps its name."""
    parts = name.split(".")
    if parts[0] == "layers":
        return BLOCK_KINDS.get(parts[-2], parts[-2])
    return TOP_KINDS.get(parts[0], parts[0])


def layer_of(name: str) -> int | None:
    """'layers.3.attention.wq.weight' -> 3; None for tensors outside the blocks."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "layers" else None


def is_tied(model: Transformer) -> bool:
    return model.output.weight is model.tok_embeddings.weight


def parameter_counts(model: Transformer) -> tuple[dict[str, int], dict[int, int]]:
    """Unique parameters by kind of module, and by layer."""
    by_kind: dict[str, int] = defaultdict(int)
    by_layer: dict[int, int] = defaultdict(int)
    # named_parameters() yields a shared tensor once, under the first name that holds it.
    for name, p in model.named_parameters():
        by_kind[kind_of(name)] += p.numel()
        layer = layer_of(name)
        if layer is not None:
            by_layer[layer] += p.numel()
    return dict(by_kind), dict(by_layer)

"""The plots by name: what `llmhood plot KIND` draws, shared by the CLI and the script that
makes the documentation's pictures (docs/make_images.py)."""

from __future__ import annotations

import inspect

from llmhood.errors import LLMHoodError
from llmhood.llm import LLM
from llmhood.plot import params
from llmhood.plot.attention import plot_attention
from llmhood.plot.figure import Plot
from llmhood.plot.kv_cache import plot_kv_cache
from llmhood.plot.logit_lens import plot_logit_lens
from llmhood.plot.residual import plot_residual_norms
from llmhood.plot.rope import plot_rope

KINDS = ("params", "rope", "attention", "logit-lens", "residual", "kv-cache")


def make(
    llm: LLM,
    kind: str,
    name: str,
    *,
    text: str = "",
    layer: int = 0,
    head: int | None = None,
    position: int = 100,
    factor: float = 4.0,
    max_context: int | None = None,
    synthetic_untied: bool = False,
) -> tuple[Plot, str]:
    """Picture `kind` of `llm`, whose titles call it `name`, and the file stem to save it
    under. `text` is what attention, logit-lens and residual run; the other keywords are
    the options of one kind each, as `llmhood plot KIND --help` lists them."""
    if kind == "params" and synthetic_untied:
        title = f"Synthetic untied Llama of {name}'s shape (meta device: shapes, no values)"
        return params.plot_params(params.synthetic_untied(llm.config), title), "params-untied"
    if kind == "params":
        return params.plot_params(llm.model, f"{name} (real weights)"), kind
    if kind == "rope":
        return plot_rope(llm.config, position, factor=factor), kind
    if kind == "attention":
        stem = f"attention-layer{layer}" + ("" if head is None else f"-head{head}")
        return plot_attention(llm, text, layer, head), stem
    if kind == "logit-lens":
        return plot_logit_lens(llm, text), kind
    if kind == "residual":
        return plot_residual_norms(llm, text), kind
    if kind == "kv-cache":
        size = llm.dtype.itemsize
        weights = llm.model.num_parameters() * size
        return plot_kv_cache(llm.config, size, max_context, weights, name), kind
    raise LLMHoodError(f"Unknown plot kind {kind!r}; choose one of: {', '.join(KINDS)}.")


# The keyword options of `make`: the CLI passes on those of its parsed arguments.
MAKE_OPTIONS = frozenset(
    p.name for p in inspect.signature(make).parameters.values() if p.kind is p.KEYWORD_ONLY
)

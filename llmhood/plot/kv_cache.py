"""What the KV cache costs, and why grouped-query attention exists.

During generation every layer keeps the keys and values of every earlier token, so that
each new token computes only its own. That memory is

    bytes = 2 (K and V) · n_layers · n_kv_heads · head_dim · bytes per element · T

for T tokens: linear in the context, and linear in the number of KV heads. Multi-head
attention (MHA) has one KV head per query head, multi-query attention (MQA) one in all,
grouped-query attention (GQA) a few, each shared by a group of query heads. SmolLM2-135M
uses 3 KV heads for its 9 query heads: a third of MHA's cache.
"""

from __future__ import annotations

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig
from llmhood.model.config import attention_kind
from llmhood.plot.figure import Plot, new_figure
from llmhood.plot.table import Table

MIB = 2**20
POINTS = 64  # context lengths per line


def kv_cache_bytes(
    config: ModelConfig, context: int, n_kv_heads: int, bytes_per_element: int
) -> int:
    """2 · n_layers · n_kv_heads · head_dim · bytes_per_element · context."""
    return 2 * config.n_layers * n_kv_heads * config.head_dim * bytes_per_element * context


def kv_variants(config: ModelConfig) -> list[int]:
    """KV head counts to compare: MHA, the model's own, MQA, and a GQA if none of these is."""
    counts = {config.n_heads, config.n_kv_heads, 1}
    if not any(attention_kind(config.n_heads, k) == "GQA" for k in counts):
        divisors = [d for d in range(2, config.n_heads) if config.n_heads % d == 0]
        if divisors:  # the group size most often used in practice: about 4 query heads per KV head
            counts.add(min(divisors, key=lambda d: abs(d - config.n_heads / 4)))
    return sorted(counts, reverse=True)


def plot_kv_cache(
    config: ModelConfig,
    bytes_per_element: int,
    max_context: int | None = None,
    weight_bytes: int | None = None,
    name: str = "this model",
) -> Plot:
    """KV-cache memory against context length, up to `max_context` (default: the model's
    trained context), for MHA, GQA and MQA variants of `config`; `config` itself is marked.
    `weight_bytes`, if given, draws the model's own weights for scale."""
    max_context = max_context or config.max_seq_len
    if max_context < 1:
        raise LLMHoodError(f"The context length must be at least 1 token, not {max_context}.")
    contexts = sorted({max(1, round(max_context * i / POINTS)) for i in range(POINTS + 1)})
    rows = [
        {
            "attention": attention_kind(config.n_heads, k),
            "n_kv_heads": k,
            "context": t,
            "bytes": kv_cache_bytes(config, t, k, bytes_per_element),
            "this_model": k == config.n_kv_heads,
        }
        for k in kv_variants(config)
        for t in contexts
    ]
    figure = new_figure(10, 5.5)
    ax = figure.subplots()
    for k in kv_variants(config):
        line = [r for r in rows if r["n_kv_heads"] == k]
        own = k == config.n_kv_heads
        label = f"{line[0]['attention']}: {k} KV head{'s' if k > 1 else ''}"
        if own:
            label += f" ({name})"
        ax.plot(
            [r["context"] for r in line], [r["bytes"] / MIB for r in line], label=label,
            lw=3 if own else 1.5, ls="-" if own else "--",
        )  # fmt: skip
        end = line[-1]
        ax.annotate(
            f"{end['bytes'] / MIB:,.0f} MiB", (end["context"], end["bytes"] / MIB),
            xytext=(8, 0), textcoords="offset points", va="center", fontsize=9,
            fontweight="bold" if own else "normal",
        )  # fmt: skip
        if own:
            ax.plot([end["context"]], [end["bytes"] / MIB], "o", color="black", ms=7, zorder=3)
    if weight_bytes is not None:
        ax.axhline(weight_bytes / MIB, color="grey", lw=1, ls=":")
        ax.text(0, weight_bytes / MIB, f" the model's weights: {weight_bytes / MIB:,.0f} MiB",
                va="bottom", color="dimgrey")  # fmt: skip
    ax.set_xlim(0, max_context * 1.15)
    ax.set_ylim(0)
    ax.set_xlabel("context length T (tokens)")
    ax.set_ylabel("KV cache (MiB), one sequence")
    ax.set_title(
        f"KV cache = 2 · {config.n_layers} layers · n_kv_heads · {config.head_dim} (head_dim) · "
        f"{bytes_per_element} bytes · T;  {config.n_heads} query heads",
        fontsize=10,
    )
    ax.legend(loc="upper left")
    return Plot(figure, Table(rows))

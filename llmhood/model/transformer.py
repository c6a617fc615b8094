"""The Llama transformer, top to bottom.

    tokens -> embedding -> n_layers × [x + Attention(RMSNorm(x)); x + SwiGLU(RMSNorm(x))]
           -> RMSNorm -> output head -> logits

Pre-norm residual blocks: each sub-layer reads a normalised copy of the residual stream
and adds its result back, so the stream itself is never rescaled and gradients flow
through the identity path. Module and parameter names follow Meta's checkpoints
(`tok_embeddings`, `layers.N.attention.wq`, `feed_forward.w1`, ...), which makes a
Meta state dict load as is.
"""

from __future__ import annotations

import torch
from torch import nn

from llmhood.errors import LLMHoodError
from llmhood.model.attention import Attention, AttentionImpl, causal_mask
from llmhood.model.config import ModelConfig
from llmhood.model.fast.decode_step import DecodeStep
from llmhood.model.kv_cache import KVCache
from llmhood.model.norm import RMSNorm
from llmhood.model.rope import RoPE
from llmhood.model.rope_scaling import RopeScaling
from llmhood.model.swiglu import SwiGLU


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config, layer)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = SwiGLU(config.dim, config.hidden_dim)

    def forward(
        self,
        x: torch.Tensor,
        rope: RoPE,
        rope_table: tuple[torch.Tensor, ...],
        mask: torch.Tensor | None,
        cache: KVCache | None,
    ) -> torch.Tensor:
        # x: (bs, seqlen, dim)
        h = x + self.attention(self.attention_norm(x), rope, rope_table, mask, cache)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.rope = RoPE.from_config(config)
        # The blocks of a decode step in one C++ call when set (decode_step.py); None: plain.
        self.decode_step: DecodeStep | None = None

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        key_padding: torch.Tensor | None = None,
        last_only: bool = False,
        head: bool = True,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits for every input position.

        tokens: (bs, seqlen) int64. positions: (bs, seqlen), each token's RoPE position;
        by default the cache length onwards. cache: keys/values of earlier tokens, updated
        in place. key_padding: (bs, cache length + seqlen), False where a slot is padding.
        Returns (bs, seqlen, vocab_size) logits, or (bs, 1, vocab_size) for the last
        position only with `last_only`: generation needs no others, and the output head
        costs a fifth of SmolLM2's compute and bs·seqlen·vocab_size floats of memory.
        `head=False` returns the normalised hidden states (bs, seqlen, dim) instead, for a
        caller that applies the output head to a few positions only (a training loss).
        segments: (bs, seqlen), without a cache: which document of a packed row each token
        belongs to; no token attends across documents (give each its own positions from 0).
        """
        bs, seqlen = tokens.shape
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + seqlen, device=tokens.device).expand(bs, -1)

        h = self.tok_embeddings(tokens)  # (bs, seqlen, dim)
        stepping = self.decode_step is not None and segments is None
        if stepping and self.decode_step.applies(h, cache):
            h = self.decode_step(h, positions, cache, key_padding)  # same blocks, one call
        else:
            # One new token with no padding may see every key: no mask to build or apply.
            mask = None
            if seqlen > 1 or key_padding is not None or segments is not None:
                mask = causal_mask(seqlen, start + seqlen, key_padding, segments)
                mask = mask.to(tokens.device)
            rope_table = self.rope.table(positions)
            for layer in self.layers:
                h = layer(h, self.rope, rope_table, mask, cache)
        if cache is not None:
            cache.advance(seqlen)
        if last_only:
            h = h[:, -1:]
        h = self.norm(h)
        if not head:
            return h  # (bs, seqlen or 1, dim)
        return self.output(h).float()  # (bs, seqlen or 1, vocab_size)

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        c = self.config
        weight = self.tok_embeddings.weight
        return KVCache(
            c.n_layers, batch_size, c.n_kv_heads, max_len, c.head_dim, weight.dtype, weight.device
        )

    def set_attention(self, impl: AttentionImpl) -> None:
        """Choose the attention path for every layer: "sdpa" (fast), "explicit" or "auto"
        (SDPA for prompts, explicit for single-token steps)."""
        for layer in self.layers:
            layer.attention.impl = impl

    def set_decode_step(self, on: bool) -> None:
        """Run single-token decode steps through decode_step.cpp (True) or the Python blocks.

        The step follows the layers as they change: a replaced weight is read by the next
        step, and a layer replaced by one it cannot run (an adapter, say) sends steps back
        through the Python blocks, as do forward hooks on a block and captured attention
        weights. Hooks deeper inside the blocks do not fire in it. Raises LLMHoodError when
        this model or machine cannot run it, saying why.
        """
        if not on:
            self.decode_step = None
            return
        problem = DecodeStep.problem(self)
        if problem is not None:
            raise LLMHoodError(f"The fused decode step cannot run here: {problem}.")
        self.decode_step = DecodeStep(self)

    def set_rope_scaling(self, scaling: RopeScaling | None, max_seq_len: int | None = None) -> None:
        """Run the loaded weights with other RoPE frequencies (None: plain RoPE).

        Nothing is reloaded: RoPE has no weights, only a computed table. `max_seq_len`
        raises (or lowers) the context the config advertises, which generation respects.
        A KV cache filled before the switch holds keys rotated the old way; start a new one.
        """
        changes: dict[str, object] = {"rope_scaling": scaling}
        if max_seq_len is not None:
            changes["max_seq_len"] = max_seq_len
        self.config = self.config.replace(**changes)  # validates, e.g. that RoPE is in use
        self.rope.set_scaling(scaling)

    @classmethod
    def shapes_only(cls, config: ModelConfig) -> Transformer:
        """The architecture on the meta device: every parameter's name and shape, no values,
        no memory; loaders assign the real tensors afterwards.

        The layers' random initialisation is skipped: on the meta device it would run
        PyTorch's Python reference kernels, whose first use imports torch._dynamo, about a
        second and 60 MB that every load would pay for values nobody reads. (The layers'
        `reset_parameters` are swapped out while it runs: build models on one thread.)
        """
        inits = {layer: layer.reset_parameters for layer in (nn.Linear, nn.Embedding)}
        try:
            for layer in inits:
                layer.reset_parameters = lambda self: None
            with torch.device("meta"):
                return cls(config)
        finally:
            for layer, init in inits.items():
                layer.reset_parameters = init

    def skeleton(self) -> Transformer:
        """The same architecture with shapes only (`shapes_only`). Counting parameters on it
        gives one answer whatever form the weights are held in (a quantized mode packs them
        into buffers, llmhood.speed.modes)."""
        return Transformer.shapes_only(self.config)

    def num_parameters(self) -> int:
        """Unique parameters of the architecture: a tied output head is counted once."""
        return sum(p.numel() for p in self.skeleton().parameters())

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

from llmhood.model.attention import Attention, AttentionImpl, causal_mask
from llmhood.model.config import ModelConfig
from llmhood.model.kv_cache import KVCache
from llmhood.model.norm import RMSNorm
from llmhood.model.rope import RoPE
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
        mask: torch.Tensor,
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
        self.rope = RoPE(config.head_dim, config.rope_theta, config.rope_style)

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        key_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits for every input position.

        tokens: (bs, seqlen) int64. positions: (bs, seqlen), each token's RoPE position;
        by default the cache length onwards. cache: keys/values of earlier tokens, updated
        in place. key_padding: (bs, cache length + seqlen), False where a slot is padding.
        Returns (bs, seqlen, vocab_size) logits.
        """
        bs, seqlen = tokens.shape
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + seqlen, device=tokens.device).expand(bs, -1)
        mask = causal_mask(seqlen, start + seqlen, key_padding).to(tokens.device)
        rope_table = self.rope.table(positions)

        h = self.tok_embeddings(tokens)  # (bs, seqlen, dim)
        for layer in self.layers:
            h = layer(h, self.rope, rope_table, mask, cache)
        if cache is not None:
            cache.advance(seqlen)
        return self.output(self.norm(h)).float()  # (bs, seqlen, vocab_size)

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        c = self.config
        weight = self.tok_embeddings.weight
        return KVCache(
            c.n_layers, batch_size, c.n_kv_heads, max_len, c.head_dim, weight.dtype, weight.device
        )

    def set_attention(self, impl: AttentionImpl) -> None:
        """Choose the attention path for every layer: "sdpa" (fast) or "explicit"."""
        for layer in self.layers:
            layer.attention.impl = impl

    def num_parameters(self) -> int:
        """Unique parameters: a tied output head is counted once."""
        return sum(p.numel() for p in self.parameters())

"""The BERT encoder, top to bottom: token ids to one contextual vector per token.

    ids -> word + position + token-type embedding -> LayerNorm
        -> n_layers × [x = LN(x + Attention(x)); x = LN(x + FFN(x))] -> hidden states

Post-norm residual blocks, as BERT was trained: each sub-layer's output is added to its
input and the sum normalised, unlike Llama's pre-norm. Attention is bidirectional (no
causal mask); padding keys are masked out. Every token has token type 0: a sentence
embedder reads one segment. The feed-forward network is Linear -> GELU (erf) -> Linear.

The weights load from a Hugging Face `model.safetensors` whose names (`encoder.layer.N
.attention.self.query.weight`, ...) are mapped here onto this module's. The three attention
projections are one (hidden, 3·hidden) matmul: one weight read, one kernel call, instead of
three. BERT's pooler (a tanh layer over [CLS]) is not loaded: sentence embedders mean-pool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from llmhood.errors import LLMHoodError


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    dim: int = 384
    n_layers: int = 6
    n_heads: int = 12
    hidden_dim: int = 1536  # the feed-forward network's inner width
    max_positions: int = 512
    type_vocab_size: int = 2
    norm_eps: float = 1e-12

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face BERT config.json; refuse the variants this encoder does not
        implement rather than run them wrong."""
        raw = json.loads(Path(path).read_text())
        unsupported = {
            "hidden_act": (raw.get("hidden_act", "gelu"), "gelu"),
            "position_embedding_type": (raw.get("position_embedding_type", "absolute"),
                                        "absolute"),
        }  # fmt: skip
        for key, (value, wanted) in unsupported.items():
            if value != wanted:
                raise LLMHoodError(f"{path}: {key}={value!r} is not supported; only {wanted!r}.")
        return cls(
            vocab_size=raw["vocab_size"],
            dim=raw["hidden_size"],
            n_layers=raw["num_hidden_layers"],
            n_heads=raw["num_attention_heads"],
            hidden_dim=raw["intermediate_size"],
            max_positions=raw["max_position_embeddings"],
            type_vocab_size=raw.get("type_vocab_size", 2),
            norm_eps=raw.get("layer_norm_eps", 1e-12),
        )


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.attention_out = nn.Linear(config.dim, config.dim)
        self.attention_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.up = nn.Linear(config.dim, config.hidden_dim)
        self.down = nn.Linear(config.hidden_dim, config.dim)
        self.ffn_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # x: (bs, seqlen, dim); mask: (bs, 1, 1, seqlen) bool, True where a key is real
        bs, seqlen, dim = x.shape
        qkv = self.qkv(x).view(bs, seqlen, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (bs, n_heads, seqlen, head_dim)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(bs, seqlen, dim)
        x = self.attention_norm(x + self.attention_out(attended))
        return self.ffn_norm(x + self.down(F.gelu(self.up(x))))  # (bs, seqlen, dim)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.position_embeddings = nn.Embedding(config.max_positions, config.dim)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.dim)
        self.embedding_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.n_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids: (bs, seqlen) int64; mask: (bs, seqlen) bool, False at padding.
        Returns (bs, seqlen, dim) hidden states; those at padding are meaningless."""
        seqlen = ids.shape[1]
        if seqlen > self.config.max_positions:
            raise LLMHoodError(
                f"BERT reads at most {self.config.max_positions} tokens; got {seqlen}."
            )
        x = self.word_embeddings(ids) + self.position_embeddings.weight[:seqlen]
        x = self.embedding_norm(x + self.token_type_embeddings.weight[0])  # (bs, seqlen, dim)
        # No mask at all when nothing is padding: SDPA then takes its fastest kernel.
        key_mask = None if bool(mask.all()) else mask[:, None, None, :]  # (bs, 1, 1, seqlen)
        for layer in self.layers:
            x = layer(x, key_mask)
        return x

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, dtype: torch.dtype = torch.float32
    ) -> BertEncoder:
        """The encoder of a Hugging Face BERT directory (config.json, model.safetensors)."""
        directory = Path(directory)
        config = BertConfig.from_json(directory / "config.json")
        model = cls(config)
        try:
            weights = _our_names(load_file(directory / "model.safetensors"), config)
        except KeyError as missing:
            raise LLMHoodError(
                f"{directory / 'model.safetensors'} has no tensor {missing}: it is not the "
                "BERT checkpoint its config.json describes."
            ) from None
        model.load_state_dict(weights)
        return model.to(dtype).eval()


def _our_names(hf: dict[str, torch.Tensor], config: BertConfig) -> dict[str, torch.Tensor]:
    """Hugging Face BertModel's tensors under this module's names (q, k, v concatenated)."""
    hf = {name.removeprefix("bert."): tensor for name, tensor in hf.items()}
    ours = {
        "word_embeddings.weight": hf["embeddings.word_embeddings.weight"],
        "position_embeddings.weight": hf["embeddings.position_embeddings.weight"],
        "token_type_embeddings.weight": hf["embeddings.token_type_embeddings.weight"],
        "embedding_norm.weight": hf["embeddings.LayerNorm.weight"],
        "embedding_norm.bias": hf["embeddings.LayerNorm.bias"],
    }
    for i in range(config.n_layers):
        theirs, mine = f"encoder.layer.{i}.", f"layers.{i}."
        renamed = {
            "attention_out": "attention.output.dense",
            "attention_norm": "attention.output.LayerNorm",
            "up": "intermediate.dense",
            "down": "output.dense",
            "ffn_norm": "output.LayerNorm",
        }
        for part in ("weight", "bias"):
            for name, hf_name in renamed.items():
                ours[f"{mine}{name}.{part}"] = hf[f"{theirs}{hf_name}.{part}"]
            projections = (
                hf[f"{theirs}attention.self.{p}.{part}"] for p in ("query", "key", "value")
            )
            ours[f"{mine}qkv.{part}"] = torch.cat(list(projections))
    return ours

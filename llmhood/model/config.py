"""The model's shape, in one dataclass, and how each checkpoint format spells it.

Three formats describe the same Llama architecture with different keys: GGUF metadata
(`llama.embedding_length`), Hugging Face `config.json` (`hidden_size`) and Meta
`params.json` (`dim`). Each constructor below translates one of them, so the model code
only ever sees `ModelConfig`. Meta's `params.json` gives no FFN width directly: it is
derived from `dim`, `multiple_of` and `ffn_dim_multiplier` exactly as Meta's code does.

RoPE scaling (`RopeScaling`, see rope_scaling.py) is spelled three ways too: a
`rope_scaling`/`rope_parameters` dict in `config.json`, `llama.rope.scaling.*` keys in
GGUF, and a bare `use_scaled_rope` flag in Meta's `params.json` that stands for Llama
3.1's values. `position_encoding` chooses RoPE (every checkpoint format), CoPE or none;
the last two exist for models trained here (see cope.py) and only our params.json
records them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from llmhood.errors import LLMHoodError
from llmhood.model.rope_scaling import META_LLAMA3, RopeScaling, ntk_base

RopeStyle = Literal["interleaved", "half"]
PositionEncoding = Literal["rope", "cope", "none"]
POSITION_ENCODINGS: tuple[str, ...] = get_args(PositionEncoding)


def attention_kind(n_heads: int, n_kv_heads: int) -> str:
    """MHA (a KV head per query head), MQA (one KV head for all) or GQA (in between)."""
    return "MHA" if n_kv_heads == n_heads else "MQA" if n_kv_heads == 1 else "GQA"


@dataclass
class ModelConfig:
    dim: int = 576  # width of the residual stream
    n_layers: int = 30  # number of transformer blocks
    n_heads: int = 9  # query heads
    n_kv_heads: int = 3  # key/value heads: == n_heads is MHA, 1 is MQA, in between is GQA
    vocab_size: int = 49152
    hidden_dim: int = 1536  # inner width of the SwiGLU feed-forward
    norm_eps: float = 1e-5  # RMSNorm epsilon
    rope_theta: float = 100000.0  # RoPE base: frequencies are theta^(-2i/head_dim)
    max_seq_len: int = 8192  # usable context; with rope_scaling, the stretched one
    tie_embeddings: bool = True  # output head shares the token-embedding matrix
    # How q/k channels are paired for RoPE. "interleaved" pairs (0,1),(2,3),... (Meta, GGUF);
    # "half" pairs (i, i + head_dim/2) (Hugging Face). The same weights work in either form
    # once their q/k rows are permuted; see llmhood.model.rope.
    rope_style: RopeStyle = "interleaved"
    # None is plain RoPE; otherwise the frequencies are stretched for longer contexts.
    rope_scaling: RopeScaling | None = None
    # "rope" rotates q/k; "cope" adds contextual position logits instead (cope.py);
    # "none" gives attention no position signal beyond the causal mask.
    position_encoding: PositionEncoding = "rope"
    cope_npos: int = 64  # CoPE: learned positions 0 .. cope_npos - 1; larger counts clamp
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unparsed source keys

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise LLMHoodError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}.")
        if self.n_heads % self.n_kv_heads:
            raise LLMHoodError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}; "
                "grouped-query attention needs each KV head to serve a whole group of query heads."
            )
        if self.rope_style not in ("interleaved", "half"):
            raise LLMHoodError(
                f"rope_style must be 'interleaved' or 'half', not {self.rope_style!r}."
            )
        if self.position_encoding not in POSITION_ENCODINGS:
            raise LLMHoodError(
                f"position_encoding must be one of {', '.join(POSITION_ENCODINGS)}, not "
                f"{self.position_encoding!r}."
            )
        if not (isinstance(self.cope_npos, int) and self.cope_npos >= 1):
            raise LLMHoodError(f"cope_npos must be a positive integer, not {self.cope_npos!r}.")
        if self.rope_scaling is not None:
            if not isinstance(self.rope_scaling, RopeScaling):
                raise LLMHoodError(
                    "rope_scaling must be a llmhood.model.rope_scaling.RopeScaling or None, not "
                    f"{type(self.rope_scaling).__name__}; build one with RopeScaling(kind=..., "
                    "factor=...)."
                )
            if self.position_encoding != "rope":
                raise LLMHoodError(
                    f"rope_scaling is set but position_encoding is {self.position_encoding!r}; "
                    "scaling changes RoPE's frequencies, so it needs position_encoding='rope'."
                )

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def replace(self, **changes: Any) -> ModelConfig:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return ModelConfig(**values)

    # ---- GGUF ---------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, metadata: dict[str, Any], has_output_tensor: bool) -> ModelConfig:
        arch = metadata.get("general.architecture")
        if arch != "llama":
            raise LLMHoodError(
                f"This GGUF file holds a '{arch}' model; llmhood runs the Llama architecture only "
                "(general.architecture = 'llama'). Use a Llama-family GGUF file."
            )

        def key(name: str, default: Any = None) -> Any:
            value = metadata.get(f"llama.{name}", default)
            if value is None:
                raise LLMHoodError(
                    f"The GGUF metadata lacks 'llama.{name}'; the file is incomplete."
                )
            return value

        n_heads = int(key("attention.head_count"))
        vocab = metadata.get("llama.vocab_size") or len(metadata.get("tokenizer.ggml.tokens", []))
        return cls(
            dim=int(key("embedding_length")),
            n_layers=int(key("block_count")),
            n_heads=n_heads,
            n_kv_heads=int(key("attention.head_count_kv", n_heads)),
            vocab_size=int(vocab),
            hidden_dim=int(key("feed_forward_length")),
            norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(key("rope.freq_base", 10000.0)),
            max_seq_len=int(key("context_length", 2048)),
            tie_embeddings=not has_output_tensor,
            rope_style="interleaved",
            rope_scaling=RopeScaling.from_gguf(metadata),
        )

    # ---- Hugging Face ---------------------------------------------------------------------

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> ModelConfig:
        model_type = config.get("model_type", "llama")
        if model_type != "llama":
            raise LLMHoodError(
                f"config.json describes a '{model_type}' model; llmhood runs model_type 'llama' "
                "only."
            )
        n_heads = config["num_attention_heads"]
        known = {
            "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "vocab_size", "intermediate_size", "rms_norm_eps", "rope_theta",
            "max_position_embeddings", "tie_word_embeddings", "rope_scaling", "rope_parameters",
        }  # fmt: skip
        # transformers 4 writes `rope_scaling` beside `rope_theta`; 5 writes both inside
        # `rope_parameters`, with rope_type "default" for plain RoPE.
        rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
        rope_theta = config.get("rope_theta") or rope.get("rope_theta", 10000.0)
        max_seq_len = config.get("max_position_embeddings", 2048)
        return cls(
            dim=config["hidden_size"],
            n_layers=config["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=config.get("num_key_value_heads") or n_heads,
            vocab_size=config["vocab_size"],
            hidden_dim=config["intermediate_size"],
            norm_eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            max_seq_len=max_seq_len,
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            rope_style="half",
            rope_scaling=RopeScaling.from_hf(rope, max_seq_len),
            extra={k: v for k, v in config.items() if k not in known},
        )

    def to_hf(self, **token_ids: int | None) -> dict[str, Any]:
        """A `config.json` for transformers' LlamaForCausalLM (rope_style must then be "half").

        Static NTK scaling has no rope_type in transformers, but it is plain RoPE on a larger
        base, so it is written as that base: the model is the same, the label is lost.
        """
        if self.position_encoding != "rope":
            raise LLMHoodError(
                f"This model uses position_encoding={self.position_encoding!r}, which "
                "transformers' Llama cannot run; save it as a Meta checkpoint instead."
            )
        rope_theta, scaling = self.rope_theta, self.rope_scaling
        if scaling is not None and scaling.kind == "ntk":
            rope_theta, scaling = ntk_base(self.head_dim, rope_theta, scaling.factor), None
        if (
            scaling is not None
            and scaling.kind == "dynamic_ntk"
            and scaling.original_max_position_embeddings != self.max_seq_len
        ):
            raise LLMHoodError(
                "transformers' dynamic RoPE scaling takes the trained context length from "
                f"max_position_embeddings, but this model's is {self.max_seq_len} while its "
                f"scaling says {scaling.original_max_position_embeddings}; set max_seq_len to "
                "the trained length before saving."
            )
        rope_scaling = {} if scaling is None else {"rope_scaling": scaling.to_hf()}
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "intermediate_size": self.hidden_dim,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": rope_theta,
            **rope_scaling,
            "max_position_embeddings": self.max_seq_len,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": "float32",
            **{k: v for k, v in token_ids.items() if v is not None},
        }

    # ---- Meta -----------------------------------------------------------------------------

    @classmethod
    def from_meta(cls, params: dict[str, Any], vocab_size: int | None = None) -> ModelConfig:
        dim = params["dim"]
        n_heads = params["n_heads"]
        # Meta's FeedForward: 2/3 of 4*dim, times an optional multiplier, rounded up to a
        # multiple of `multiple_of`. Checkpoints of ours also store the exact width.
        hidden = params.get("hidden_dim")
        if hidden is None:
            hidden = int(2 * (4 * dim) / 3)
            if params.get("ffn_dim_multiplier") is not None:
                hidden = int(params["ffn_dim_multiplier"] * hidden)
            multiple_of = params.get("multiple_of", 256)
            hidden = multiple_of * ((hidden + multiple_of - 1) // multiple_of)
        vocab = params.get("vocab_size", -1)
        if vocab is None or vocab < 0:
            vocab = vocab_size
        if vocab is None:
            raise LLMHoodError("params.json has no vocab_size and no tokenizer gave one.")
        rope_scaling = None
        if params.get("rope_scaling"):  # llmhood's own spelling, written by to_meta
            rope_scaling = RopeScaling.from_dict(params["rope_scaling"])
        elif params.get("use_scaled_rope"):
            rope_scaling = RopeScaling("llama3", **META_LLAMA3)
        return cls(
            dim=dim,
            n_layers=params["n_layers"],
            n_heads=n_heads,
            n_kv_heads=params.get("n_kv_heads") or n_heads,
            vocab_size=int(vocab),
            hidden_dim=int(hidden),
            norm_eps=params.get("norm_eps", 1e-5),
            rope_theta=float(params.get("rope_theta", 10000.0)),
            max_seq_len=params.get("max_seq_len", 2048),
            tie_embeddings=bool(params.get("tie_embeddings", False)),
            rope_style="interleaved",
            rope_scaling=rope_scaling,
            position_encoding=params.get("position_encoding", "rope"),
            cope_npos=params.get("cope_npos", 64),
        )

    def to_meta(self) -> dict[str, Any]:
        """A `params.json`; `hidden_dim` and `tie_embeddings` are llmhood's additions, and so
        are `rope_scaling` (other than Llama 3.1's, which Meta spells `use_scaled_rope`),
        `position_encoding` and `cope_npos` when they are not the defaults."""
        additions: dict[str, Any] = {}
        if self.rope_scaling == RopeScaling("llama3", **META_LLAMA3):
            additions["use_scaled_rope"] = True
        elif self.rope_scaling is not None:
            additions["rope_scaling"] = asdict(self.rope_scaling)
        if self.position_encoding != "rope":
            additions["position_encoding"] = self.position_encoding
            additions["cope_npos"] = self.cope_npos
        return {
            "dim": self.dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "vocab_size": self.vocab_size,
            "hidden_dim": self.hidden_dim,
            "norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "max_seq_len": self.max_seq_len,
            "tie_embeddings": self.tie_embeddings,
            **additions,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

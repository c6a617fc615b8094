"""Adapters on disk: llmhood's own layout, and peft's, both read and written.

Our layout is a directory with `adapter.safetensors` (the trained tensors under llmhood's
module names: `layers.0.attention.wq.lora_A`, `.lora_B`, DoRA's `.magnitude`) and
`adapter.json` (the LoRA settings, the base model it was trained on, the q/k row layout of
its tensors and whether the base was NF4). peft's layout is `adapter_model.safetensors`
with keys like `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` and an
`adapter_config.json`; transformers and peft load it onto the Hugging Face model.

The q/k row layout matters for the LoRA B of wq and wk (and DoRA's magnitude there):
their rows are output rows of a rotary projection, and Hugging Face orders those by half
(llmhood.model.rope), while a model read from GGUF orders them interleaved. Each file says
which it holds, and attaching permutes the rows to the model's own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmhood.errors import LLMHoodError
from llmhood.model import Transformer
from llmhood.model.config import ModelConfig
from llmhood.model.rope import half_to_interleaved, interleaved_to_half
from llmhood.train.checkpoints import atomic_dir
from llmhood.train.lora import HF_NAMES, TARGETS, LoraConfig, adapter_state_dict, apply_lora
from llmhood.train.nf4 import NF4Embedding, NF4Linear

WEIGHTS, CONFIG = "adapter.safetensors", "adapter.json"
PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"
PEFT_PREFIX = "base_model.model.model."
PEFT_PARTS = {"attention": "self_attn", "feed_forward": "mlp"}
PEFT_LEAVES = {
    "lora_A": "lora_A.weight",
    "lora_B": "lora_B.weight",
    "magnitude": "lora_magnitude_vector",
}


@dataclass
class Adapter:
    """An adapter read from disk, its tensors in llmhood names and in `rope_style` rows."""

    lora: LoraConfig
    tensors: dict[str, torch.Tensor]
    rope_style: str  # "half" or "interleaved"
    base: str = ""  # the model it was trained on, as given to llmhood train
    nf4: dict[str, Any] | None = None  # {"double_quant": bool} when the base was NF4 (QLoRA)
    source: str = ""
    stage: str = ""  # what it was trained for: sft, dpo and grpo adapters expect chat prompts

    @property
    def chat(self) -> bool:
        return self.stage in ("sft", "dpo", "grpo")

    def for_model(self, config: ModelConfig) -> dict[str, torch.Tensor]:
        """The tensors with wq/wk rows in `config.rope_style`."""
        return convert_rows(self.tensors, config, self.rope_style, config.rope_style)


def convert_rows(
    tensors: dict[str, torch.Tensor], config: ModelConfig, have: str, want: str
) -> dict[str, torch.Tensor]:
    if have == want:
        return dict(tensors)
    permute = interleaved_to_half if want == "half" else half_to_interleaved
    heads = {"wq": config.n_heads, "wk": config.n_kv_heads}
    out = {}
    for name, t in tensors.items():
        module, leaf = name.rsplit(".", 1)
        kind = module.rsplit(".", 1)[-1]
        if kind in heads and leaf in ("lora_B", "magnitude"):
            t = permute(t if t.dim() == 2 else t[:, None], heads[kind]).reshape(t.shape)
        out[name] = t
    return out


def save_adapter(
    model: Transformer,
    path: str | Path,
    lora: LoraConfig,
    base: str,
    nf4: dict | None = None,
    stage: str = "sft",
) -> Path:
    """Write the model's adapters in llmhood's layout, atomically."""
    path = Path(path)
    meta = {
        "format": "llmhood-adapter",
        "version": 1,
        "lora": asdict(lora),
        "base": base,
        "stage": stage,
        "rope_style": model.config.rope_style,
        "nf4": nf4,
    }
    with atomic_dir(path) as tmp:
        tensors = {k: v.float().contiguous() for k, v in adapter_state_dict(model).items()}
        save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def adapter_dir(path: str | Path) -> Path:
    """The adapter directory that `path` names: itself, or a run's `adapter/`."""
    path = Path(path)
    for candidate in (path, path / "adapter"):
        if (candidate / CONFIG).is_file() or (candidate / PEFT_CONFIG).is_file():
            return candidate
    if (path / "model" / "config.json").is_file():
        raise LLMHoodError(
            f"{path} is a full fine-tuning run: it holds a whole model, not an adapter. "
            f"Load it as the model instead: --model {path / 'model'}."
        )
    raise LLMHoodError(
        f"{path} holds no adapter: expected {CONFIG} (llmhood), {PEFT_CONFIG} (peft), or a run "
        "directory with adapter/ (finished runs have one; an unfinished run's checkpoints are "
        "resumed with `llmhood train --resume`)."
    )


def read_adapter(path: str | Path) -> Adapter:
    """An adapter in either layout."""
    folder = adapter_dir(path)
    if (folder / CONFIG).is_file():
        meta = json.loads((folder / CONFIG).read_text())
        tensors = load_file(folder / WEIGHTS)
        return Adapter(
            LoraConfig(**meta["lora"]),
            tensors,
            meta["rope_style"],
            meta.get("base", ""),
            meta.get("nf4"),
            str(folder),
            meta.get("stage", ""),
        )
    return _read_peft(folder)


def _read_peft(folder: Path) -> Adapter:
    meta = json.loads((folder / PEFT_CONFIG).read_text())
    if meta.get("peft_type", "LORA") != "LORA":
        raise LLMHoodError(f"{folder} is a {meta['peft_type']} adapter; llmhood reads LoRA ones.")
    for key in ("rank_pattern", "alpha_pattern"):
        if meta.get(key):
            raise LLMHoodError(
                f"{folder}: per-layer {key} is not supported; use one rank and alpha."
            )
    targets = meta.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    unknown = [t for t in targets if t not in HF_NAMES]
    if unknown:
        raise LLMHoodError(
            f"{folder} adapts {', '.join(unknown)}, which llmhood cannot adapt (only the seven "
            f"linear layers of a block: {', '.join(HF_NAMES)})."
        )
    lora = LoraConfig(
        int(meta["r"]),
        float(meta["lora_alpha"]),
        float(meta.get("lora_dropout", 0)),
        targets,
        bool(meta.get("use_rslora")),
        bool(meta.get("use_dora")),
    )
    weights = folder / PEFT_WEIGHTS
    if not weights.is_file():
        raise LLMHoodError(
            f"{folder} has no {PEFT_WEIGHTS} (a .bin adapter: re-save it with peft)."
        )
    tensors = {}
    for key, t in load_file(weights).items():
        name = _llmhood_name(key)
        if name is None:
            raise LLMHoodError(f"{weights}: llmhood cannot place the tensor {key}.")
        tensors[name] = t
    base = meta.get("base_model_name_or_path") or ""
    return Adapter(lora, tensors, "half", base, None, str(folder), "sft")


def _llmhood_name(peft_key: str) -> str | None:
    """base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight
    -> layers.3.attention.wq.lora_A"""
    if not peft_key.startswith(PEFT_PREFIX):
        return None
    rest = peft_key[len(PEFT_PREFIX) :]
    for ours, theirs in PEFT_LEAVES.items():
        if rest.endswith("." + theirs):
            head = rest[: -len(theirs) - 1].split(".")  # layers, N, self_attn, q_proj
            if len(head) == 4 and head[3] in HF_NAMES:
                target = HF_NAMES[head[3]]
                return f"layers.{head[1]}.{TARGETS[target][0]}.{target}.{ours}"
    return None


def peft_key(name: str) -> str:
    """layers.3.attention.wq.lora_A
    -> base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"""
    _, layer, part, target, leaf = name.split(".")
    return (
        f"{PEFT_PREFIX}layers.{layer}.{PEFT_PARTS[part]}.{TARGETS[target][1]}.{PEFT_LEAVES[leaf]}"
    )


def write_peft(adapter: Adapter, config: ModelConfig, path: str | Path, base: str = "") -> Path:
    """The adapter in peft's layout, for transformers + peft on the HF export of the base."""
    path = Path(path)
    tensors = convert_rows(adapter.tensors, config, adapter.rope_style, "half")
    lora = adapter.lora
    meta = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base or adapter.base,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": sorted(TARGETS[t][1] for t in lora.targets()),
        "use_rslora": lora.use_rslora,
        "use_dora": lora.dora,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
    }
    with atomic_dir(path) as tmp:
        save_file(
            {peft_key(k): v.contiguous() for k, v in tensors.items()},
            tmp / PEFT_WEIGHTS,
            metadata={"format": "pt"},
        )
        (tmp / PEFT_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def quantize_base(model: Transformer, double_quant: bool = True) -> None:
    """QLoRA's base, in place: every linear layer of the blocks, the embedding and the
    output head in NF4 (llmhood.train.nf4); a tied head shares the embedding's codes."""
    for layer in model.layers:
        for target, (part, _) in TARGETS.items():
            parent = getattr(layer, part)
            setattr(
                parent, target, NF4Linear.from_linear(getattr(parent, target), 64, double_quant)
            )
    tied = model.output.weight is model.tok_embeddings.weight
    model.tok_embeddings = NF4Embedding.from_linear(model.tok_embeddings, 64, double_quant)
    if tied:
        model.output = model.tok_embeddings.head()
    else:
        model.output = NF4Linear.from_linear(model.output, 64, double_quant)


def attach(model: Transformer, adapter: Adapter) -> None:
    """Put `adapter` on `model` (a plain float model), its base re-quantized to NF4 first
    when it was trained on one, so the logits are the ones training saw."""
    if adapter.nf4 is not None:
        quantize_base(model, bool(adapter.nf4.get("double_quant", True)))
    names = apply_lora(model, adapter.lora)
    tensors = adapter.for_model(model.config)
    wanted = {f"{n}.{leaf}" for n in names for leaf in ("lora_A", "lora_B")}
    missing = sorted(wanted - tensors.keys())
    extra = sorted(k for k in tensors if k.rsplit(".", 1)[0] not in set(names))
    if missing or extra:
        raise LLMHoodError(
            f"The adapter {adapter.source} does not fit this model: "
            + (f"it lacks {missing[0]} ({len(missing)} in all)" if missing else "")
            + ("; " if missing and extra else "")
            + (f"it has {extra[0]} for no adapted layer ({len(extra)} in all)" if extra else "")
            + ". It was trained on another base or with other target modules."
        )
    params = dict(model.named_parameters())
    for name, t in tensors.items():
        if params[name].shape != t.shape:
            raise LLMHoodError(
                f"The adapter {adapter.source}: {name} is {list(t.shape)}, but this model needs "
                f"{list(params[name].shape)}; it was trained on another base model."
            )
        with torch.no_grad():
            params[name].copy_(t)
    for p in model.parameters():
        p.requires_grad_(False)

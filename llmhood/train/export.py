"""`llmhood export`: a trained run out into the world, merged or as an adapter.

Merged, the adapter is folded into the base (W + s·B·A per layer, DoRA's magnitude
applied) and a whole model is written, as an HF directory or a GGUF file, which loads
anywhere a model does and runs at the base's speed. Unmerged, the adapter alone is written
in peft's layout (for transformers + peft on the HF export of the base) or as a llama.cpp
LoRA adapter GGUF, to share or to switch at run time.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.registry import resolve
from llmhood.speed.modes import REFERENCE, build
from llmhood.tokenizer import BPETokenizer
from llmhood.train.adapter import Adapter, adapter_dir, attach, read_adapter, write_peft
from llmhood.train.lora import merge
from llmhood.train.nf4 import NF4Embedding, NF4Linear

FORMATS = ("hf", "gguf", "peft")


def dequantize_base(model: Transformer) -> None:
    """NF4 layers back to plain float ones, in place (QLoRA layers that had no adapter, the
    embedding and the head), a tied head tied again."""
    if isinstance(model.tok_embeddings, NF4Embedding):
        table = model.tok_embeddings.dequantize()
        model.tok_embeddings = nn.Embedding.from_pretrained(table, freeze=True)
        if model.config.tie_embeddings:
            model.output = nn.Linear(table.shape[1], table.shape[0], bias=False)
            model.output.weight = model.tok_embeddings.weight
    for name, module in list(model.named_modules()):
        if isinstance(module, NF4Linear):
            parent, _, leaf = name.rpartition(".")
            linear = nn.Linear(module.in_features, module.out_features, bias=False)
            linear.weight = nn.Parameter(module.dequantize(), requires_grad=False)
            setattr(model.get_submodule(parent), leaf, linear)


def base_with_adapter(
    run: str | Path, model: str | Path | None = None, progress: bool = True
) -> tuple[Transformer, BPETokenizer, Adapter]:
    """The base model in float32 with the run's adapter on it, unmerged."""
    adapter = read_adapter(run)
    base = model or adapter.base
    if not base:
        raise LLMHoodError(
            f"The adapter {adapter.source} does not say which base it was trained on; give it "
            "with --model."
        )
    net, ckpt = build(resolve(base), REFERENCE, progress, keep=False, decode_step=False)
    attach(net, adapter)
    return net, ckpt.tokenizer, adapter


def merged(
    run: str | Path, model: str | Path | None = None, progress: bool = True
) -> tuple[Transformer, BPETokenizer]:
    """The base with the adapter folded in: plain float32 linear layers throughout."""
    net, tokenizer, _ = base_with_adapter(run, model, progress)
    merge(net)
    dequantize_base(net)
    return net, tokenizer


def export(
    run: str | Path,
    out: str | Path,
    *,
    fmt: str,
    merge: bool = False,
    gguf_type: str = "f32",
    model: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Write the run as `fmt`; returns the path written."""
    from llmhood.weights.gguf_writer import write_gguf, write_gguf_lora
    from llmhood.weights.hf import write_hf

    if fmt not in FORMATS:
        raise LLMHoodError(f"--format {fmt!r} is not one of: {', '.join(FORMATS)}.")
    out = Path(out)
    run = Path(run)
    full = (run / "model" / "config.json").is_file()
    if fmt == "peft" and (merge or full):
        raise LLMHoodError(
            "--format peft writes an adapter; a merged or fully trained model goes "
            "out as --format hf or gguf."
        )
    if fmt == "hf" and not (merge or full):
        raise LLMHoodError(
            "--format hf writes a whole model: add --merge, or export the adapter "
            "alone with --format peft or gguf."
        )
    if not full:
        adapter_dir(run)  # a wrong path fails before the base loads
    if full or merge:
        if full:
            net, ckpt = build(run / "model", REFERENCE, progress, keep=False, decode_step=False)
            tokenizer = ckpt.tokenizer
        else:
            net, tokenizer = merged(run, model, progress)
        if fmt == "hf":
            write_hf(out, net, tokenizer)
            return out
        target = out if out.suffix == ".gguf" else out / f"model-{gguf_type}.gguf"
        return write_gguf(net, tokenizer, target, gguf_type, progress=progress)
    adapter = read_adapter(run)
    config = _base_config(adapter, model)
    if fmt == "peft":
        return write_peft(adapter, config, out)
    tensors = adapter.for_model(config.replace(rope_style="interleaved"))
    pairs = {}
    for name in {k.rsplit(".", 1)[0] for k in tensors}:
        if f"{name}.magnitude" in tensors:
            raise LLMHoodError(
                "llama.cpp's adapters are plain LoRA: merge a DoRA run (--merge) "
                "to export it as GGUF."
            )
        pairs[name] = (tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"])
    target = out if out.suffix == ".gguf" else out / "adapter.gguf"
    lora = adapter.lora
    return write_gguf_lora(
        target,
        pairs,
        alpha=_gguf_alpha(adapter),
        rank=lora.rank,
        config=config,
        rope_style="interleaved",
        base_name=adapter.base,
    )


def _gguf_alpha(adapter: Adapter) -> float:
    """llama.cpp scales by alpha / rank; rsLoRA's alpha / √rank is the same with alpha·√rank."""
    lora = adapter.lora
    return lora.scaling * lora.rank


def _base_config(adapter: Adapter, model: str | Path | None) -> ModelConfig:
    """The base's ModelConfig, read without its weights where the format allows."""
    from llmhood.weights import read_checkpoint

    base = model or adapter.base
    if not base:
        raise LLMHoodError(f"The adapter {adapter.source} does not name its base; give --model.")
    return read_checkpoint(resolve(base), progress=False).config

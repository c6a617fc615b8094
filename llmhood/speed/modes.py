"""Speed modes: how the weights are held and which fast paths run.

The float32 model is the reference: it equals transformers within float32 rounding, and
every fast mode is measured against it. A mode is four independent switches:

* `dtype`: the compute dtype. bf16 halves the bytes every decode step streams from memory
  and runs on the CPU's bf16 dot-product instructions where it has them.
* `quantize`: "int4" or "int8" weight-only quantization (llmhood.model.fast.quantized). int4
  repacks GGUF Q4_1 tensors without re-rounding them, and the tied Q8_0 output head as two
  int4 halves; int8 re-quantizes every linear layer per output channel.
* `fuse`: q/k/v and gate/up as one matrix each (llmhood.model.fast.fusion).
* `dense`: int4 only: also keep the weights in bf16, for matmuls of many rows (prefill,
  batches), where torch's int4 kernel is slower than a bf16 one.

`candidates()` lists the modes worth trying on this CPU (llmhood.speed.cpu), fastest
first, in the order the benchmark measured them (`llmhood bench`). `load(dtype="auto")`
takes the first one the quality guard passes (llmhood.speed.guard).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from llmhood.errors import LLMHoodError
from llmhood.model import Transformer
from llmhood.model.fast.decode_step import DecodeStep
from llmhood.model.fast.fusion import GROUPS, fuse
from llmhood.model.fast.quantized import (
    Int4Linear,
    Int4Weight,
    Int8Linear,
    Int8Weight,
    int4_available,
    int8_available,
)
from llmhood.speed import cpu, prepared
from llmhood.weights import detect_format, read_checkpoint
from llmhood.weights.checkpoint import Checkpoint, build_model
from llmhood.weights.gguf import read_gguf
from llmhood.weights.gguf_llama import read_gguf_checkpoint
from llmhood.weights.repack import gguf_int4_weights

Quantize = Literal["int4", "int8"]
QUANTIZE: tuple[Quantize, ...] = ("int4", "int8")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Mode:
    dtype: torch.dtype = torch.float32
    quantize: Quantize | None = None
    fuse: bool = False
    dense: bool = False  # int4: also keep bf16 weights for many-row matmuls (prefill, batches)

    @property
    def name(self) -> str:
        """e.g. "int4+bfloat16+fused+dense"; the reference is plain "float32"."""
        parts = [self.quantize] if self.quantize else []
        parts.append(str(self.dtype).removeprefix("torch."))
        parts += ["fused"] * self.fuse + ["dense"] * self.dense
        return "+".join(parts)

    def describe(self) -> str:
        """One line for `llmhood info`."""
        weights = {
            "int4": "int4 weights (groups of 32; GGUF Q4_1 repacked as is)",
            "int8": "int8 weights (per output channel)",
            None: f"{str(self.dtype).removeprefix('torch.')} weights",
        }[self.quantize]
        extras = ["fused q/k/v and gate/up"] * self.fuse
        extras += ["bf16 copies for prefill and batches"] * self.dense
        compute = str(self.dtype).removeprefix("torch.")
        return ", ".join([f"{self.name}: {weights}", f"{compute} compute", *extras])


REFERENCE = Mode()


def candidates() -> list[Mode]:
    """The modes worth trying on this CPU, fastest first (measured by `llmhood bench`).

    Every fast mode computes in bf16: int4 and int8 with bf16 activations (float32 ones
    would take the kernels' slow generic path). Without bf16 instructions torch emulates
    bf16, so there the reference is the only candidate; the fast modes still load when
    asked for by name.
    """
    modes = []
    if cpu.bf16_supported():
        if int4_available():
            modes.append(Mode(torch.bfloat16, "int4", fuse=True, dense=True))
        if int8_available():
            modes.append(Mode(torch.bfloat16, "int8", fuse=True))
        modes.append(Mode(torch.bfloat16, fuse=True))
    return [*modes, REFERENCE]


def requested(
    dtype: str | torch.dtype = "auto",
    quantize: str | None = "auto",
    fuse: bool | None = None,
    dense: bool | None = None,
) -> list[Mode]:
    """The modes that the arguments of `llmhood.load` allow, fastest first.

    "auto" leaves a switch to the quality guard: dtype and quantize both "auto" allow every
    candidate; an explicit dtype means plain weights of that dtype unless `quantize` says
    otherwise; quantize "int4"/"int8" computes in bf16. `fuse` and `dense` override the
    candidates' own settings where given.
    """
    if quantize not in ("auto", None, *QUANTIZE):
        raise LLMHoodError(
            f"Unknown quantize={quantize!r}. Choose one of: auto, {', '.join(QUANTIZE)}, or None."
        )
    if isinstance(dtype, str) and dtype != "auto" and dtype not in DTYPES:
        raise LLMHoodError(f"Unknown dtype '{dtype}'. Choose one of: auto, {', '.join(DTYPES)}.")
    torch_dtype = DTYPES.get(dtype, dtype) if dtype != "auto" else None
    if dense and quantize != "int4":
        raise LLMHoodError(
            "dense=True keeps bf16 copies of int4 weights; it needs quantize='int4'."
        )
    if quantize in QUANTIZE:
        if torch_dtype not in (None, torch.bfloat16):
            raise LLMHoodError(
                f"quantize={quantize!r} computes in bfloat16 (torch's CPU kernels are fast only "
                f"there), but dtype={dtype!r} was asked for. Drop dtype or set it to bfloat16."
            )
        if not (int4_available() if quantize == "int4" else int8_available()):
            raise LLMHoodError(
                f"This torch build ({torch.__version__}) lacks the CPU {quantize} kernels; "
                "load without quantize, or install a newer torch."
            )
        modes = [Mode(torch.bfloat16, quantize, fuse=True, dense=quantize == "int4")]
    elif torch_dtype is not None:
        modes = [Mode(torch_dtype, fuse=torch_dtype != torch.float32)]
    else:
        modes = [m for m in candidates() if quantize == "auto" or m.quantize is None]
    overrides = {k: v for k, v in {"fuse": fuse, "dense": dense}.items() if v is not None}
    return [replace(m, **overrides) for m in modes]


# ---- building a model in a mode -------------------------------------------------------------


def build(
    path: Path,
    mode: Mode,
    progress: bool = True,
    keep: bool = True,
    decode_step: bool | None = None,
) -> tuple[Transformer, Checkpoint]:
    """The model at `path` in `mode`, and the checkpoint it came from (its tokenizer, source).

    Quantized modes on a GGUF file read the Q4_1/Q8_0 blocks of the linear layers directly
    and never dequantize them; everything else is dequantized to float first. A quantized
    model is saved once prepared (llmhood.speed.prepared) and later loads map that file instead;
    `keep=False` neither reads nor writes it. `decode_step`: run single-token steps through
    llmhood.model.fast.decode_step (None: wherever it can, except in float32; True: raise
    LLMHoodError where it cannot).
    """
    keep = keep and mode.quantize is not None
    restored = prepared.restore(path, mode.name, mode.dtype, progress) if keep else None
    if restored is not None:
        model, ckpt = restored
    else:
        model, ckpt = _prepare(path, mode, progress)
        if keep:
            prepared.save(path, mode.name, model)
    if mode.dtype != torch.float32:
        # SDPA's fused CPU kernel has a large fixed cost per call and scales badly with the
        # batch when it gets one query per row; there two float32 matmuls are faster.
        model.set_attention("auto")
    if decode_step is None and mode.dtype != torch.float32:  # the reference stays plain
        problem = DecodeStep.problem(model)
        if problem is not None and progress:
            print(f"llmhood: the fused decode step is off ({problem}).", file=sys.stderr)
        decode_step = problem is None
    model.set_decode_step(bool(decode_step))
    return model.eval(), ckpt


def _prepare(path: Path, mode: Mode, progress: bool) -> tuple[Transformer, Checkpoint]:
    int4: dict[str, Int4Weight] = {}
    if mode.quantize == "int4" and detect_format(path) == "gguf":
        gguf = read_gguf(path)
        int4 = gguf_int4_weights(gguf)
        skip = {name for name in int4 if name != "tok_embeddings.weight"}
        ckpt = read_gguf_checkpoint(gguf, progress, raw=skip)
    else:
        ckpt = read_checkpoint(path, progress)
    if ckpt.tokenizer is None:
        raise LLMHoodError(f"{ckpt.source} has no tokenizer; llmhood needs one to run it.")
    model = build_model(ckpt, mode.dtype)
    if mode.quantize:
        quantize_linears(model, mode, ckpt.state_dict, int4)
    elif mode.fuse:
        fuse(model)
    return model, ckpt


def quantize_linears(
    model: Transformer,
    mode: Mode,
    floats: dict[str, torch.Tensor],
    int4: dict[str, Int4Weight],
) -> None:
    """Replace every linear layer of the blocks by its quantized form, fused if the mode
    says so, in place; the output head too where that loses nothing (int4 from GGUF
    blocks) or the mode asks for int8 anyway.

    `floats`: float tensors by llmhood name (shape-only where `int4` has the weight);
    `int4`: weights repacked from GGUF blocks, taken over quantizing the float tensors.
    """

    def weight(name: str) -> Int4Weight | Int8Weight:
        if mode.quantize == "int4":
            return int4[name] if name in int4 else Int4Weight.quantize(floats[name])
        return Int8Weight.quantize(floats[name])

    def linear(names: list[str], in_features: int, dense: bool = mode.dense) -> nn.Module:
        weights = [weight(name) for name in names]
        if mode.quantize == "int8":
            return Int8Linear.from_weight(Int8Weight.cat(weights), mode.dtype)
        w = Int4Weight.cat(weights)
        return Int4Linear.from_weight(w, mode.dtype, w.shape[1] // in_features, dense)

    for i, layer in enumerate(model.layers):
        for part, groups in GROUPS.items():
            module = getattr(layer, part)
            if not mode.fuse:  # every projection on its own, under its own name
                groups = {name: (name,) for names in groups.values() for name in names}
            for target, names in groups.items():
                in_features = getattr(module, names[0]).in_features
                for name in names:
                    delattr(module, name)
                weights = [f"layers.{i}.{part}.{name}.weight" for name in names]
                setattr(module, target, linear(weights, in_features))

    head = "tok_embeddings.weight" if model.config.tie_embeddings else "output.weight"
    if mode.quantize == "int8" or head in int4:
        tied = model.config.tie_embeddings
        model.output = linear([head], model.config.dim, dense=mode.dense and not tied)
        if tied and mode.dense and isinstance(model.output, Int4Linear):
            model.output.dense = model.tok_embeddings.weight.detach()  # in memory already

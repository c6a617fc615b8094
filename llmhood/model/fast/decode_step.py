"""A decode step through all the blocks in one call: the same arithmetic, without Python
between the operations.

Generating one token at batch 1 is about 2,200 tensor operations for SmolLM2's 30 blocks:
norms, rotations, cache writes, attention, residual adds, each on a few hundred numbers.
Each costs a few microseconds of Python and dispatch, and the weights streaming through the
caches evict whatever each one needs between calls. Measured on 2 cores, the 121 int4
matmuls took about 4.8 ms of an 8.6 ms step; the other 3.8 ms was this overhead.
(`torch.compile` was tried on the same step: a minute to compile and slower than eager.)

`decode_step.cpp` runs the blocks for one new token per row in a single call. Its
elementwise arithmetic is written out in loops that mirror the Python modules rounding for
rounding, and its matmuls and attention call torch's own kernels, so the Python model stays
the reference and this is only a faster way to run it: tests hold the two equal. With it, a
step of SmolLM2 in int4 is mostly the int4 matmuls (`llmhood bench --profile`).

It is compiled on first use with the machine's C++ compiler against the installed torch
(about 10 s) and cached (llmhood.speed.kernels). Without a compiler, or when compiling
fails, `available()` says why and models keep the plain path. `Transformer.set_decode_step`
switches it; `llmhood.load` turns it on for the bf16 and quantized modes, where the
overhead matters most.

It runs when a forward pass is one new token per row with a KV cache, and the model is in
the shape it was built for: fused q/k/v and gate/up, RoPE, no CoPE, no gradients to track,
and nobody observing the blocks (forward hooks, captured attention weights), which a single
call could not honour. Anything else takes the plain path.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from torch import nn

from llmhood.model.fast.quantized import GROUP_SIZE, Int4Linear
from llmhood.model.kv_cache import KVCache
from llmhood.speed import kernels

SOURCE = Path(__file__).with_name("decode_step.cpp")
TENSORS_PER_LAYER = 10  # the order decode_step.cpp reads them in: see `layer_weights`


@cache
def available() -> str | None:
    """None when the decode step is ready to run in this process, else why it is not
    (llmhood.speed.kernels compiles and loads it)."""
    if hasattr(torch.ops.llmhood, "decode_step"):  # loaded already, from whichever cache
        return None
    return kernels.load(SOURCE)


def _matmul(module: nn.Module, rows: int) -> list[torch.Tensor]:
    """A projection as decode_step.cpp takes it for `rows` input rows, choosing as the module's
    own forward would: int4 (packed, scale_zero), or a float weight and an empty tensor."""
    if isinstance(module, Int4Linear):
        if module.dense is not None and rows >= module.dense_rows:
            return [module.dense, torch.empty(0)]
        return [module.packed, module.scale_zero]
    return [module.weight, torch.empty(0)]


def layer_weights(model: nn.Module, rows: int) -> list[torch.Tensor]:
    """Per block, the 10 tensors decode_step.cpp reads, in its order: attention_norm and
    ffn_norm, then wqkv, wo, w13 and w2 as `_matmul` gives them."""
    weights = []
    for block in model.layers:
        attention, ffn = block.attention, block.feed_forward
        weights += [block.attention_norm.weight, block.ffn_norm.weight]
        for module in (attention.wqkv, attention.wo, ffn.w13, ffn.w2):
            weights += _matmul(module, rows)
    return weights


def unsupported(model: nn.Module) -> str | None:
    """Why the decode step cannot run this model at all (None: it can)."""
    from llmhood.model.fast.fusion import FusedLinear  # fusion imports the model, which imports us

    config = model.config
    if config.position_encoding != "rope":
        return f"it implements RoPE only, and this model uses {config.position_encoding!r}"
    dtype = model.tok_embeddings.weight.dtype
    if dtype not in (torch.float32, torch.bfloat16):
        return f"it runs in float32 or bfloat16, not {dtype}"
    for block in model.layers:
        modules = (block.attention.wqkv, block.attention.wo, block.feed_forward.w13)
        if any(m is None for m in modules):
            return "it needs fused q/k/v and gate/up projections (fuse=True)"
        for m in (*modules, block.feed_forward.w2):
            # Exactly these classes: a subclass (an adapter, say) may compute something else.
            if type(m) not in (nn.Linear, FusedLinear, Int4Linear):
                return f"it cannot run {type(m).__name__} layers"
            if isinstance(m, Int4Linear) and (m.repeat_input != 1 or m.group_size != GROUP_SIZE):
                return "its int4 layers must have groups of 32 and no repeated input"
    return None


# Bumped whenever any module in the process is given a submodule, parameter or buffer (torch's
# global registration hooks, installed with the first DecodeStep). A step compares it with the
# value it last saw: reading 300 tensors off the layers costs more than a tenth of a step, so
# they are read again only when something may have changed.
_registrations = 0
_watching = False


def _count_registration(*_: object) -> None:
    global _registrations
    _registrations += 1


def _watch_registrations() -> None:
    global _watching
    if not _watching:
        for register in (
            nn.modules.module.register_module_module_registration_hook,
            nn.modules.module.register_module_parameter_registration_hook,
            nn.modules.module.register_module_buffer_registration_hook,
        ):
            register(_count_registration)
        _watching = True


class DecodeStep:
    """The blocks of `model` for one new token per row, through decode_step.cpp."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        config = model.config
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.interleaved = config.rope_style == "interleaved"
        self.eps = config.norm_eps
        _watch_registrations()
        self._seen = -1  # the value of _registrations the fields below were read at
        self._supported = False
        self._weights: dict[int, list[torch.Tensor]] = {}  # layer_weights by batch rows

    def _layers_readable(self) -> bool:
        """Whether the layers are still ones the step can run (a layer replaced since the
        switch, by an adapter say, may not be), re-read after any registration."""
        if self._seen != _registrations:
            self._supported = unsupported(self.model) is None
            self._weights.clear()
            self._seen = _registrations
        return self._supported

    @staticmethod
    def problem(model: nn.Module) -> str | None:
        """Why `model` cannot take the decode step on this machine; None when it can."""
        return unsupported(model) or available()

    def applies(self, h: torch.Tensor, cache: KVCache | None) -> bool:
        """Whether this forward pass is one the step computes as the blocks would."""
        seqlen = h.shape[1]
        if seqlen != 1 or cache is None or cache.length >= cache.max_len:
            return False
        if h.requires_grad:  # the C++ step has no backward; training takes the blocks
            return False
        if h.device.type != "cpu":  # a CPU kernel: a model moved to a GPU runs its blocks
            return False
        for block in self.model.layers:
            if block._forward_hooks or block._forward_pre_hooks or block.attention.capture_weights:
                return False
        return self._layers_readable()

    def __call__(
        self,
        h: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        key_padding: torch.Tensor | None,
    ) -> torch.Tensor:
        """h: (bs, 1, dim) embeddings -> (bs, 1, dim) after the last block; positions: (bs, 1);
        key_padding: (bs, cache.length + 1), False at padding. Writes this step's K and V."""
        rows = h.shape[0]
        if rows not in self._weights:
            self._weights[rows] = layer_weights(self.model, rows)
        weights = self._weights[rows]
        cos, sin = (t[:, 0].contiguous() for t in self.model.rope.cos_sin(positions))  # (bs, d/2)
        if key_padding is not None:
            key_padding = key_padding.to(torch.bool).contiguous()
        return torch.ops.llmhood.decode_step(
            h,
            weights,
            cos,
            sin,
            cache.k,
            cache.v,
            cache.length,
            key_padding,
            self.n_heads,
            self.n_kv_heads,
            self.interleaved,
            self.eps,
            GROUP_SIZE,
        )

"""What the model is asked to compute during generation, for tests of the batching loop."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

from llmhood.model import Transformer

T = TypeVar("T")


def forward_shapes(model: Transformer, run: Callable[[], T]) -> tuple[T, list[tuple[int, int]]]:
    """Run `run()` and return its result and, per forward pass, (rows, slots attended to):
    the cached slots plus the new ones."""
    shapes = []
    signature = inspect.signature(model.forward)

    def record(module, args, kwargs):
        call = signature.bind(*args, **kwargs).arguments
        cached = call["cache"].length if call.get("cache") is not None else 0
        shapes.append((call["tokens"].shape[0], cached + call["tokens"].shape[1]))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        return run(), shapes
    finally:
        handle.remove()

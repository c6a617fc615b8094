"""Text generation: sampling (`sampling.py`), streaming detokenization (`streaming.py`), the
prefill/decode loop over a batch of prompts (`generate.py`), and constrained decoding, whose
constraints are the loop's logits processors (`constrain/`)."""

from llmhood.generate.generate import (
    DEFAULT_BATCH_SIZE,
    Generation,
    LogitsProcessor,
    check_batch_size,
    generate,
    generate_stream,
)
from llmhood.generate.sampling import SamplingParams
from llmhood.generate.streaming import StreamDecoder

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Generation",
    "LogitsProcessor",
    "SamplingParams",
    "StreamDecoder",
    "check_batch_size",
    "generate",
    "generate_stream",
]

"""Text generation: sampling (`sampling.py`), streaming detokenization (`streaming.py`) and
the prefill/decode loop over a batch of prompts (`generate.py`)."""

from llmhood.generate.generate import (
    DEFAULT_BATCH_SIZE,
    Generation,
    check_batch_size,
    generate,
    generate_stream,
)
from llmhood.generate.sampling import SamplingParams
from llmhood.generate.streaming import StreamDecoder

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Generation",
    "SamplingParams",
    "StreamDecoder",
    "check_batch_size",
    "generate",
    "generate_stream",
]

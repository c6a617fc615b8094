"""Text generation: sampling (`sampling.py`), streaming detokenization (`streaming.py`) and
the prefill/decode loop over a batch of prompts (`generate.py`)."""

from llmhood.generate.generate import Generation, generate, generate_stream
from llmhood.generate.sampling import SamplingParams
from llmhood.generate.streaming import StreamDecoder

__all__ = ["Generation", "SamplingParams", "StreamDecoder", "generate", "generate_stream"]

"""llmhood: a hand-written Llama in PyTorch, proven equal to the reference implementations.

import llmhood
llm = llmhood.load("smollm2-135m")
print(llm.chat([{"role": "user", "content": "What is the capital of France?"}]))
"""

from llmhood.errors import LLMHoodError
from llmhood.llm import LLM, load

__all__ = ["LLM", "LLMHoodError", "load"]
__version__ = "0.1.0"

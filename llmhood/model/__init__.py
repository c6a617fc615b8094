"""The Llama architecture, one concept per module: read `transformer.py` first."""

from llmhood.model.config import ModelConfig
from llmhood.model.kv_cache import KVCache
from llmhood.model.transformer import Transformer

__all__ = ["KVCache", "ModelConfig", "Transformer"]

"""Text to token ids and back: byte-level BPE and chat templates."""

from llmhood.tokenizer.bpe import BPETokenizer
from llmhood.tokenizer.chat_template import render_chat

__all__ = ["BPETokenizer", "render_chat"]

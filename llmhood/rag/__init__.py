"""Retrieval-augmented generation written here: build a knowledge base, retrieve, answer.

    from llmhood import rag
    kb = rag.KnowledgeBase.build("docs/", "kb/mydocs", backend="builtin")
    hits = kb.search("question", k=5, mode="hybrid")  # [Hit(source, start, end, text, score)]
    answer = kb.ask("question", llm)                  # Answer(text, citations=[Hit, ...])

    loaders -> chunking -> wordpiece + bert (embedder) -> bm25 + index -> fusion -> answer
      (ingest: incremental, atomic versions in store)          evaluate: recall, MRR, nDCG

The CLI is `llmhood rag ingest|search|ask|eval|stats` (llmhood.cli.rag).
"""

from llmhood.rag.answer import OpenAIChat
from llmhood.rag.knowledge_base import MODES, Answer, Hit, KnowledgeBase

__all__ = ["MODES", "Answer", "Hit", "KnowledgeBase", "OpenAIChat"]

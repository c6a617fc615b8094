"""The RAG knowledge base as a tool: search it, get numbered passages with their sources.

    search = KnowledgeBaseSearch("kb/docs")              # or an open KnowledgeBase
    Tool.from_function(search.search_knowledge_base)

Each passage carries its source file and character range (Hit.id, stable while the file is
unchanged), so the model can cite it and a reader can check the citation. The model chooses
only the query: k and the retrieval mode are the caller's (hybrid by default, the best of the
three on the shipped sets, llmhood.rag.knowledge_base), since a small model has no basis for
choosing them.
"""

from __future__ import annotations

from pathlib import Path

from llmhood.errors import LLMHoodError
from llmhood.rag.knowledge_base import MODES, KnowledgeBase

K = 4  # passages per search: four chunks fit a small model's context with room to answer


class KnowledgeBaseSearch:
    def __init__(self, kb: KnowledgeBase | str | Path, k: int = K, mode: str = "hybrid"):
        if mode not in MODES:
            raise LLMHoodError(f"Unknown search mode {mode!r}; choose one of {', '.join(MODES)}.")
        if k < 1:
            raise LLMHoodError(f"k must be at least 1, not {k}.")
        self.kb = kb if isinstance(kb, KnowledgeBase) else KnowledgeBase.open(kb)
        self.k, self.mode = k, mode

    def search_knowledge_base(self, query: str) -> str:
        """Search the knowledge base and return the passages that best match, with sources.

        Args:
            query: What to look for, in a few words or a question.
        """
        hits = self.kb.search(query, k=self.k, mode=self.mode)
        if not hits:
            return f"No passages found for {query!r}. Try other words."
        return "\n\n".join(f"[{n}] source: {hit.id}\n{hit.text.strip()}"
                           for n, hit in enumerate(hits, 1))  # fmt: skip

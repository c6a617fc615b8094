"""A knowledge base: the chunks of a document tree, searchable three ways.

    kb = KnowledgeBase.build("docs/", "kb/mydocs")        # or KnowledgeBase.open("kb/mydocs")
    kb.search("question", k=5, mode="hybrid")             # [Hit(source, start, end, text, score)]
    kb.ask("question", llm)                               # Answer(text, citations=[Hit, ...])

Modes:
* "bm25": words (llmhood.rag.bm25), with jieba for Chinese;
* "dense": the embedder's vectors through the index backend (built-in, faiss or Milvus);
* "hybrid" (default): both, fused by a weighted sum of normalised scores (or by reciprocal
  rank, `fusion="rrf"`). The dense ranking's weight falls with the share of the query its
  embedder cannot read ([UNK] tokens: most Chinese for MiniLM), so that a blind dense
  ranking never drowns a good BM25 one (llmhood.rag.fusion).

A query longer than the embedder's window is refused for dense and hybrid search rather than
truncated: a silently shortened query answers another question.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from llmhood.errors import LLMHoodError
from llmhood.rag.bm25 import BM25Index
from llmhood.rag.embedder import Embedder, load_embedder
from llmhood.rag.fusion import dense_weight, reciprocal_rank, weighted_scores
from llmhood.rag.index import VectorIndex, open_index
from llmhood.rag.ingest import (
    IngestReport,
    Settings,
    ingest,
    read_chunks,
    resolve_settings,
)
from llmhood.rag.store import Store, read_json

MODES = ("bm25", "dense", "hybrid")
FUSIONS = ("weighted", "rrf")
# Hybrid's weighted fusion: each ranking's scores min-max normalised over its candidates,
# then 0.3 × BM25 + 0.7 × dense × dense_weight(query). Chosen on the shipped sets (README,
# "Retrieval"): it beats BM25 alone and dense alone on both, English and Chinese.
DENSE_SHARE = 0.7
DEPTH = 50  # candidates each ranking contributes to a fusion: deeper than any k asked


class Hit(NamedTuple):
    """One retrieved chunk: `text == file_text[start:end]` of the ingested file `source`."""

    source: str  # path relative to the ingested directory, '/' separated
    start: int  # character offsets into the loaded text of that file
    end: int
    text: str
    score: float

    @property
    def id(self) -> str:
        """Stable across ingests while the file is unchanged: path plus offsets."""
        return f"{self.source}#{self.start}-{self.end}"


@dataclass
class Answer:
    text: str  # the model's answer, with invented citations removed
    citations: list[Hit]  # the passages the answer cites, in order of first citation
    passages: list[Hit]  # every passage the model was shown, numbered from 1
    removed: list[int]  # citation numbers the model invented (no such passage), removed
    found: bool = True  # False: nothing relevant enough was retrieved, and the answer says so


class KnowledgeBase:
    def __init__(self, root: Path, version: Path):
        self.root, self.version = root, version
        self.config: dict[str, Any] = read_json(version / "config.json")
        self.settings = Settings(**self.config["settings"])
        self.chunks = read_chunks(version)
        self.sources_of_rows = [row["source"] for row in self.chunks]
        self.vectors = np.load(version / "vectors.npy", mmap_mode="r")  # [n, dim] float32
        self.bm25 = BM25Index.load(version / "bm25")
        self.index: VectorIndex = open_index(
            self.config["index"], self.vectors, self.sources_of_rows, version
        )
        self.last_ingest: IngestReport | None = None
        self._masks: dict[str, np.ndarray] = {}

    @classmethod
    def build(
        cls,
        docs: str | Path,
        kb: str | Path,
        backend: str | None = None,
        *,
        embedder: str | None = None,
        max_tokens: int | None = None,
        overlap_tokens: int | None = None,
        faiss_kind: str | None = None,
        milvus_uri: str | None = None,
        rebuild: bool = False,
        progress: bool = True,
    ) -> KnowledgeBase:
        """Ingest `docs` into `kb` (incrementally when it exists) and open it. Options left
        as None keep the knowledge base's own settings, or take the defaults."""
        store = Store(Path(kb))
        given = {"embedder": embedder, "max_tokens": max_tokens, "backend": backend,
                 "overlap_tokens": overlap_tokens, "faiss_kind": faiss_kind,
                 "milvus_uri": milvus_uri}  # fmt: skip
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
        if not rebuild:
            settings = resolve_settings(store, given)
        report = ingest(docs, kb, settings, rebuild=rebuild, progress=progress)
        opened = cls.open(kb)
        opened.last_ingest = report
        return opened

    @classmethod
    def open(cls, kb: str | Path) -> KnowledgeBase:
        store = Store(Path(kb))
        return cls(store.root, store.current())

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @cached_property
    def embedder(self) -> Embedder:
        return load_embedder(self.settings.embedder)

    def sources(self) -> set[str]:
        return set(self.sources_of_rows)

    def __len__(self) -> int:
        return len(self.chunks)

    def _hit(self, row: int, score: float) -> Hit:
        chunk = self.chunks[row]
        return Hit(chunk["source"], chunk["start"], chunk["end"], chunk["text"], float(score))

    def _allowed(self, prefix: str | None) -> np.ndarray | None:
        if prefix is None:
            return None
        if prefix not in self._masks:
            self._masks[prefix] = np.array(
                [s.startswith(prefix) for s in self.sources_of_rows], dtype=bool
            )
        return self._masks[prefix]

    def query_vector(self, query: str) -> np.ndarray:
        """[dim] float32; refuses a query the embedder would have to truncate."""
        tokens = self.embedder.count_tokens(query)
        if tokens > self.embedder.max_text_tokens:
            raise LLMHoodError(
                f"The query is {tokens} tokens long, more than the {self.embedder.max_text_tokens}"
                f" that {self.embedder.name} reads; it would be cut short. Shorten it, or search "
                "with --mode bm25 (mode='bm25'), which reads any length."
            )
        return self.embedder.embed([query])[0]

    def rankings(
        self, query: str, depth: int, prefix: str | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each ranking's (row ids, scores) to the given depth: what hybrid search fuses."""
        bm25 = self.bm25.search(query, depth, allowed=self._allowed(prefix))
        dense = self.index.search(self.query_vector(query), depth, prefix=prefix)
        return {"bm25": bm25, "dense": dense}

    def search(
        self,
        query: str,
        k: int = 5,
        mode: str = "hybrid",
        prefix: str | None = None,
        fusion: str = "weighted",
        rerank: Any = None,
    ) -> list[Hit]:
        """The k best chunks for `query`, best first; `prefix` keeps sources starting with it.
        `rerank`: an llmhood LLM that reorders the top 20 (llmhood.rag.reranker); their
        scores are then its judgements, and any hits after them keep the retriever's."""
        check_query(query, k, mode, fusion)
        if rerank is not None:
            from llmhood.rag.reranker import CANDIDATES, rerank_hits

            hits = self.search(query, max(k, CANDIDATES), mode, prefix, fusion)
            head = rerank_hits(rerank, query, hits[:CANDIDATES])  # the rest keep their order
            return (head + hits[CANDIDATES:])[:k]
        if mode == "bm25":
            ids, scores = self.bm25.search(query, k, allowed=self._allowed(prefix))
        elif mode == "dense":
            ids, scores = self.index.search(self.query_vector(query), k, prefix=prefix)
        else:
            runs = self.rankings(query, max(DEPTH, k), prefix)
            trust = dense_weight(self.embedder.unknown_fraction(query))
            shares = [1.0, trust] if fusion == "rrf" else [1 - DENSE_SHARE, DENSE_SHARE * trust]
            fused = fuse(fusion, [runs["bm25"], runs["dense"]], shares)[:k]
            return [self._hit(row, score) for row, score in fused]
        return [self._hit(int(row), float(score)) for row, score in zip(ids, scores, strict=True)]

    def ask(self, question: str, llm: Any = None, k: int = 5, mode: str = "hybrid", **options):
        """Retrieve, then answer with numbered passages and checked citations
        (llmhood.rag.answer). `llm`: an llmhood LLM, an `OpenAIChat`, or None for the
        default local model."""
        from llmhood.rag.answer import answer

        return answer(self, question, llm, k=k, mode=mode, **options)

    def stats(self) -> dict[str, Any]:
        lengths = np.array([r["end"] - r["start"] for r in self.chunks] or [0])
        manifest = read_json(self.version / "manifest.json")
        files_bytes = sum(p.stat().st_size for p in self.version.rglob("*") if p.is_file())
        return {
            "kb": str(self.root),
            "version": self.config["version"],
            "created": self.config["created"],
            "files": self.config["files"],
            "skipped": manifest["skipped"],
            "chunks": len(self.chunks),
            "settings": self.config["settings"],
            "embedder": self.config["embedder"],
            "analyzer": self.config["analyzer"],
            "index": self.config["index"],
            "chunk_chars": {"median": float(np.median(lengths)), "max": int(lengths.max())},
            "bytes_on_disk": files_bytes,
            "age_s": time.time() - (self.version / "config.json").stat().st_mtime,
        }


def check_query(query: str, k: int, mode: str, fusion: str = "weighted") -> None:
    if not isinstance(query, str) or not query.strip():
        raise LLMHoodError("The query is empty; ask a question.")
    if mode not in MODES:
        raise LLMHoodError(f"Unknown search mode {mode!r}; use one of {', '.join(MODES)}.")
    if fusion not in FUSIONS:
        raise LLMHoodError(f"Unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}.")
    if not isinstance(k, int) or k < 1:
        raise LLMHoodError(f"k must be a whole number of at least 1, not {k!r}.")


def fuse(
    fusion: str, runs: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float]
) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of the rankings, or a weighted sum of normalised scores."""
    if fusion == "rrf":
        return reciprocal_rank([ids.tolist() for ids, _ in runs], weights=weights)
    return weighted_scores([(ids.tolist(), scores.tolist()) for ids, scores in runs], weights)

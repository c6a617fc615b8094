"""A vector index: the dense half of retrieval, behind one interface and three backends.

    settings = build_index("faiss", vectors, sources, version_dir, options)  # at ingest
    index = open_index(settings, vectors, sources, version_dir)             # at open
    ids, scores = index.search(query, k=10, prefix="docs/api/")            # best first

The vectors ([n, dim] float32, L2-normalised, row i = chunk i) are the knowledge base's own
`vectors.npy`; a backend only adds what it builds from them. Scores are inner products,
which for unit vectors are cosines, so every backend ranks by the same number.

Backends:
* "builtin" (ExactIndex, here): the matrix itself, one matrix-vector product per query.
  It writes nothing: exact search over the ~10^5 chunks of a document tree takes
  milliseconds, so for most knowledge bases an approximate index buys nothing.
* "faiss" (llmhood.rag.faiss_index): exact IndexFlatIP, or approximate HNSW for large ones.
* "milvus" (llmhood.rag.milvus_index): Milvus Lite in a file inside the version directory,
  or a collection on a Milvus server.

A prefix filter ("only chunks whose source starts with docs/api/") is answered exactly by
every backend. Which rows a prefix selects is computed once from `sources` and cached
(PrefixRows): knowledge bases are queried again and again under the same few folders.
faiss and Milvus are imported only when their backend is used, so the built-in backend
needs neither installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from llmhood.errors import LLMHoodError

BACKENDS = ("builtin", "faiss", "milvus")


class VectorIndex(Protocol):
    kind: str  # "builtin", "faiss-flat", "faiss-hnsw", "milvus"

    def search(
        self, query: np.ndarray, k: int, prefix: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """query: [dim] float32 (normalised). Returns (row ids int64 [≤k], scores float32
        [≤k]) best first, only among rows whose source starts with prefix when it is given."""
        ...

    def close(self) -> None: ...


def build_index(
    backend: str, vectors: np.ndarray, sources: Sequence[str], directory: Path, options: dict
) -> dict:
    """Build the backend's files inside `directory` (a fresh version directory) and return
    the json-able settings that `open_index` needs. vectors: [n, dim] float32.
    options: {"faiss_kind": "flat"|"hnsw", "milvus_uri": str|None, "collection": str}."""
    if backend == "builtin":
        return {"kind": ExactIndex.kind}
    if backend == "faiss":
        from llmhood.rag import faiss_index

        return faiss_index.build(vectors, directory, options.get("faiss_kind", "flat"))
    if backend == "milvus":
        from llmhood.rag import milvus_index

        return milvus_index.build(
            vectors, sources, directory, options.get("milvus_uri"), options["collection"]
        )
    raise LLMHoodError(f"Unknown index backend {backend!r}; use one of {BACKENDS}.")


def open_index(
    settings: dict, vectors: np.ndarray, sources: Sequence[str], directory: Path
) -> VectorIndex:
    """Open the index that `build_index` wrote into `directory`. vectors: [n, dim] float32."""
    kind = settings["kind"]
    if kind == ExactIndex.kind:
        return ExactIndex(vectors, sources)
    if kind.startswith("faiss-"):
        from llmhood.rag import faiss_index

        return faiss_index.FaissIndex.open(settings, vectors, sources, directory)
    if kind == "milvus":
        from llmhood.rag import milvus_index

        return milvus_index.MilvusIndex.open(settings, sources, directory)
    raise LLMHoodError(
        f"This knowledge base's index is of kind {kind!r}, which this llmhood does not know; "
        "upgrade llmhood or rebuild the knowledge base (llmhood rag ingest --rebuild)."
    )


def drop_index(settings: dict, directory: Path) -> None:
    """Free what an index keeps outside its version directory (a Milvus server's
    collection). Everything else goes with the directory."""
    if settings["kind"] == "milvus":
        from llmhood.rag import milvus_index

        milvus_index.drop(settings)


class PrefixRows:
    """The row ids whose source starts with a prefix, computed once per prefix."""

    def __init__(self, sources: Sequence[str]):
        self.sources = sources
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def __call__(self, prefix: str) -> np.ndarray:  # [m] int64, ascending
        if prefix not in self._cache:
            mask = np.fromiter(
                (source.startswith(prefix) for source in self.sources),
                dtype=bool,
                count=len(self.sources),
            )
            self._cache[prefix] = np.flatnonzero(mask).astype(np.int64)
        return self._cache[prefix]


def empty_result() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of `scores` ([m] float32) as (positions int64 [≤k], scores [≤k]), best
    first, ties broken by the lower position so that a ranking is reproducible."""
    k = min(k, len(scores))
    if k <= 0:
        return empty_result()
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.lexsort((best, -scores[best]))]
    return best.astype(np.int64), scores[best]


class ExactIndex:
    """The built-in backend: exact search by one matrix-vector product.

    The knowledge base hands in vectors.npy memory-mapped; the first query copies it into
    one contiguous array in RAM, so that opening a knowledge base costs nothing and every
    query after the first runs at memory bandwidth rather than page-fault speed.
    """

    kind = "builtin"

    def __init__(self, vectors: np.ndarray, sources: Sequence[str]):
        self.vectors = vectors  # [n, dim] float32, possibly memory-mapped
        self.rows = PrefixRows(sources)
        self._matrix: np.ndarray | None = None

    @property
    def matrix(self) -> np.ndarray:  # [n, dim] float32, contiguous, in RAM
        if self._matrix is None:
            self._matrix = np.ascontiguousarray(np.array(self.vectors, dtype=np.float32))
        return self._matrix

    def search(
        self, query: np.ndarray, k: int, prefix: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self.matrix @ np.asarray(query, dtype=np.float32)  # [n]
        if prefix is None:
            return top_k(scores, k)
        ids = self.rows(prefix)
        best, best_scores = top_k(scores[ids], k)
        return ids[best], best_scores

    def close(self) -> None:
        self._matrix = None

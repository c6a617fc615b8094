"""The faiss backend of the vector index: exact flat search, or an approximate HNSW graph.

* "flat" (IndexFlatIP): exact, the same ranking as the built-in backend, with faiss's
  tuned inner-product kernel.
* "hnsw" (IndexHNSWFlat, inner-product metric): a navigable small-world graph for knowledge
  bases too large to scan. It is approximate: a query walks the graph greedily from an
  entry point, keeping the efSearch best candidates seen, so a true neighbour that is not
  reachable through that beam is missed. M = 32 links per node and efConstruction = 200
  give a well-connected graph (the usual choice for 100- to 1000-dimensional text
  embeddings); efSearch = 64, and never below k (the beam must hold the k results), keeps
  recall@10 near 0.99 on such data at a fraction of a flat scan's cost.

The index is written with `faiss.write_index` into the version directory, so it switches
with the version. A prefix filter goes to faiss as an IDSelectorBatch of the selected rows
(HNSW honours selectors in faiss ≥ 1.7.3), so the k results all satisfy it; faiss pads
with id -1 when fewer than k rows do, and those are dropped. A filtered HNSW search skips
unselected nodes as results but still walks through them, so its recall falls as the
filter narrows (0.9 at 2% of the rows on random data). Subsets of at most EXACT_SUBSET
rows are therefore scored exactly instead: a few milliseconds, and the answer is right.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from llmhood.errors import LLMHoodError
from llmhood.rag.index import PrefixRows, empty_result, top_k

FILE = "faiss.index"
HNSW_M = 32
EF_CONSTRUCTION = 200
EF_SEARCH = 64
EXACT_SUBSET = 20_000  # filtered HNSW searches over at most this many rows are exact


def import_faiss() -> ModuleType:
    try:
        import faiss
    except ImportError as error:
        raise LLMHoodError(
            "The faiss backend needs faiss: pip install faiss-cpu "
            "(or pip install 'llmhood[faiss]'), or use --backend builtin."
        ) from error
    return faiss


def build(vectors: np.ndarray, directory: Path, kind: str) -> dict:
    """Write the index of `vectors` ([n, dim] float32) as directory/faiss.index."""
    faiss = import_faiss()
    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
    else:
        raise LLMHoodError(f"Unknown faiss index {kind!r}; use 'flat' or 'hnsw'.")
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(index, str(directory / FILE))
    return {"kind": f"faiss-{kind}", "file": FILE}


class FaissIndex:
    def __init__(self, kind: str, index, vectors: np.ndarray, sources: Sequence[str]):
        self.kind = kind
        self.faiss = import_faiss()
        self.index = index
        self.vectors = vectors  # [n, dim] float32: the exact scores of small filtered subsets
        self.rows = PrefixRows(sources)

    @classmethod
    def open(
        cls, settings: dict, vectors: np.ndarray, sources: Sequence[str], directory: Path
    ) -> FaissIndex:
        path = directory / settings["file"]
        if not path.is_file():
            raise LLMHoodError(f"The faiss index {path} is missing; rebuild with --rebuild.")
        index = import_faiss().read_index(str(path))
        return cls(settings["kind"], index, vectors, sources)

    @property
    def approximate(self) -> bool:
        return self.kind == "faiss-hnsw"

    def search(
        self, query: np.ndarray, k: int, prefix: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.index.ntotal)
        if k <= 0:
            return empty_result()
        selector = None
        if prefix is not None:
            ids = self.rows(prefix)
            if len(ids) == 0:
                return empty_result()
            if self.approximate and len(ids) <= EXACT_SUBSET:
                scores = np.asarray(self.vectors[ids], dtype=np.float32) @ query  # [m]
                best, best_scores = top_k(scores, k)
                return ids[best], best_scores
            selector = self.faiss.IDSelectorBatch(ids)
        if self.approximate:
            params = self.faiss.SearchParametersHNSW(sel=selector, efSearch=max(EF_SEARCH, k))
        else:
            params = self.faiss.SearchParameters(sel=selector)
        queries = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)  # [1, dim]
        scores, ids = self.index.search(queries, k, params=params)  # [1, k] each
        found = ids[0] >= 0
        return ids[0][found].astype(np.int64), scores[0][found]

    def close(self) -> None:
        self.index = None

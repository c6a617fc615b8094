"""The vector-index backends against exact search written out here in float64 numpy.

The data are random unit vectors, so the top 10 of a query are separated by gaps far wider
than float32 rounding and every exact backend must return the very same ids. Sources are
spread over folders whose names hold the characters a Milvus LIKE pattern or string
literal treats specially, next to a decoy folder that would match if they were wildcards.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmhood.errors import LLMHoodError
from llmhood.rag import faiss_index
from llmhood.rag.index import build_index, drop_index, open_index

N, DIM, K, QUERIES = 2000, 64, 10, 20
ODD = "odd%dir_\"q'\\"  # %, _, ", ' and a backslash
FOLDERS = ("docs/api", "docs/guide", "src", ODD, "oddXdirY\"q'\\")  # the last: a decoy
KINDS = ("builtin", "faiss-flat", "faiss-hnsw", "milvus")
EXACT_KINDS = ("builtin", "faiss-flat", "milvus")
PREFIXES = ("docs/", "docs/api/", f"{ODD}/", "src/f1", "nothing/")
# float32 dot products of 64 terms summed in different orders differ by a few ulps of ~1
SCORE_ATOL = 1e-5


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


VECTORS = unit_rows(np.random.default_rng(0), N)  # [N, DIM]
QUERY_SET = unit_rows(np.random.default_rng(1), QUERIES)  # [QUERIES, DIM]
SOURCES = [f"{FOLDERS[i % len(FOLDERS)]}/f{i}.md" for i in range(N)]


def exact(query: np.ndarray, k: int, prefix: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    rows = np.array([i for i, s in enumerate(SOURCES) if prefix is None or s.startswith(prefix)])
    if len(rows) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    scores = VECTORS[rows].astype(np.float64) @ query.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:k]
    return rows[order], scores[order]


def options(kind: str) -> tuple[str, dict]:
    backend, _, faiss_kind = kind.partition("-")
    return backend, {"faiss_kind": faiss_kind or "flat", "milvus_uri": None, "collection": "c"}


def build(kind: str, vectors: np.ndarray, sources: list[str], directory: Path):
    """Build as the knowledge base does, and open over the memory-mapped vectors.npy."""
    directory.mkdir(parents=True)
    np.save(directory / "vectors.npy", vectors)
    backend, opts = options(kind)
    settings = build_index(backend, vectors, sources, directory, opts)
    mapped = np.load(directory / "vectors.npy", mmap_mode="r")
    return settings, open_index(settings, mapped, sources, directory)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("index")
    indexes = {kind: build(kind, VECTORS, SOURCES, root / kind) for kind in KINDS}
    yield {kind: index for kind, (_, index) in indexes.items()}
    for _, index in indexes.values():
        index.close()


@pytest.mark.parametrize("kind", EXACT_KINDS)
def test_exact_backends_return_the_exact_top_k(built, kind):
    index = built[kind]
    assert index.kind == kind
    for query in QUERY_SET:
        ids, scores = index.search(query, K)
        want_ids, want_scores = exact(query, K)
        assert ids.dtype == np.int64 and scores.dtype == np.float32
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, atol=SCORE_ATOL)


def test_hnsw_recall(built):
    """HNSW walks a graph greedily with a beam of efSearch candidates, so it may miss a true
    neighbour; with M=32, efSearch=64 it finds nearly all of them on 2000 rows."""
    found = 0
    for query in QUERY_SET:
        ids, scores = built["faiss-hnsw"].search(query, K)
        found += len(set(ids.tolist()) & set(exact(query, K)[0].tolist()))
        np.testing.assert_allclose(scores, VECTORS[ids] @ query, atol=SCORE_ATOL)
    assert found / (K * QUERIES) >= 0.95


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("kind", KINDS)
def test_prefix_filter_is_exact(built, kind, prefix):
    for query in QUERY_SET[:5]:
        ids, scores = built[kind].search(query, K, prefix=prefix)
        want_ids, want_scores = exact(query, K, prefix)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, atol=SCORE_ATOL)
    assert (len(want_ids) == 0) == (prefix == "nothing/")  # the filters are not vacuous


def test_filtered_hnsw_through_the_selector(built, monkeypatch):
    """Above EXACT_SUBSET rows a filtered HNSW search goes to faiss with an ID selector."""
    monkeypatch.setattr(faiss_index, "EXACT_SUBSET", 0)
    found = 0
    for query in QUERY_SET:
        ids, _ = built["faiss-hnsw"].search(query, K, prefix="docs/")
        assert all(SOURCES[i].startswith("docs/") for i in ids)
        found += len(set(ids.tolist()) & set(exact(query, K, "docs/")[0].tolist()))
    assert found / (K * QUERIES) >= 0.9  # approximate: 40% of the rows pass the filter


@pytest.mark.parametrize("kind", KINDS)
def test_k_larger_than_n_and_an_empty_index(tmp_path, kind):
    small = VECTORS[:5]
    _, index = build(kind, small, SOURCES[:5], tmp_path / "small")
    ids, scores = index.search(QUERY_SET[0], 50)
    index.close()
    np.testing.assert_array_equal(ids, np.argsort(-(small @ QUERY_SET[0])))
    assert len(scores) == 5
    _, index = build(kind, np.empty((0, DIM), dtype=np.float32), [], tmp_path / "empty")
    for prefix in (None, "docs/"):
        ids, scores = index.search(QUERY_SET[0], K, prefix=prefix)
        assert ids.shape == (0,) and scores.shape == (0,)
    index.close()


OPEN_AND_SEARCH = """
import json, sys
from pathlib import Path
import numpy as np
from llmhood.rag.index import open_index
root, query, sources = Path(sys.argv[1]), np.array(json.loads(sys.argv[2]), np.float32), {}
out = {}
for directory in sorted(root.iterdir()):
    settings = json.loads((directory / "settings.json").read_text())
    sources = json.loads((directory / "sources.json").read_text())
    vectors = np.load(directory / "vectors.npy", mmap_mode="r")
    index = open_index(settings, vectors, sources, directory)
    out[directory.name] = index.search(query, 10, prefix="docs/")[0].tolist()
    index.close()
print(json.dumps(out))
"""


def test_open_in_a_fresh_process(tmp_path):
    """Built and closed here, opened in another process; Milvus Lite's lock is released by
    close, so the other process can open it, and this one again after it."""
    for kind in KINDS:
        settings, index = build(kind, VECTORS, SOURCES, tmp_path / kind)
        index.close()
        (tmp_path / kind / "settings.json").write_text(json.dumps(settings))
        (tmp_path / kind / "sources.json").write_text(json.dumps(SOURCES))
    query = QUERY_SET[3]
    result = subprocess.run(
        [sys.executable, "-c", OPEN_AND_SEARCH, str(tmp_path), json.dumps(query.tolist())],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    found = json.loads(result.stdout.splitlines()[-1])
    want = exact(query, K, "docs/")[0].tolist()
    assert found == {kind: want for kind in KINDS}
    settings = json.loads((tmp_path / "milvus" / "settings.json").read_text())
    index = open_index(settings, VECTORS, SOURCES, tmp_path / "milvus")
    assert index.search(query, K, prefix="docs/")[0].tolist() == want
    index.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_milvus_server_is_reported_quickly(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(LLMHoodError, match=r"did not answer.*milvus-server\.sh"):
        build_index("milvus", VECTORS, SOURCES, tmp_path, {"milvus_uri": uri, "collection": "c"})
    settings = {"kind": "milvus", "uri": uri, "collection": "c"}
    with pytest.raises(LLMHoodError, match=uri):
        open_index(settings, VECTORS, SOURCES, tmp_path)
    with pytest.raises(LLMHoodError, match=uri):
        drop_index(settings, tmp_path)
    assert time.monotonic() - started < 15


def test_a_milvus_uri_must_be_http(tmp_path):
    with pytest.raises(LLMHoodError, match="http://HOST:PORT"):
        build_index(
            "milvus", VECTORS, SOURCES, tmp_path, options("milvus")[1] | {"milvus_uri": "x:1"}
        )


@pytest.mark.parametrize(
    ("kind", "module", "advice"),
    [("faiss-flat", "faiss", "pip install faiss-cpu"),
     ("milvus", "pymilvus", "pip install 'llmhood\\[milvus\\]'")],
)  # fmt: skip
def test_a_missing_library_says_what_to_install(tmp_path, monkeypatch, kind, module, advice):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    backend, opts = options(kind)
    with pytest.raises(LLMHoodError, match=advice):
        build_index(backend, VECTORS, SOURCES, tmp_path, opts)


def test_unknown_backend_and_kind(tmp_path):
    with pytest.raises(LLMHoodError, match="Unknown index backend"):
        build_index("annoy", VECTORS, SOURCES, tmp_path, {})
    with pytest.raises(LLMHoodError, match="rebuild"):
        open_index({"kind": "annoy"}, VECTORS, SOURCES, tmp_path)

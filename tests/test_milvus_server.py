"""The milvus backend on a real Milvus server (opt-in: `make test-milvus` starts one).

The same exactness and filter checks as test_index.py's against Milvus Lite, and a build /
drop cycle that must leave no collection behind on the server.
"""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest
from test_index import PREFIXES, QUERY_SET, SCORE_ATOL, SOURCES, VECTORS, K, exact

from llmhood.rag.index import build_index, drop_index, open_index

URI = os.environ.get("LLMHOOD_MILVUS_URI")
pytestmark = pytest.mark.skipif(
    not URI, reason="needs a Milvus server: set LLMHOOD_MILVUS_URI (make test-milvus does)"
)


def collections() -> list[str]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=URI, timeout=5)
    try:
        return client.list_collections()
    finally:
        client.close()


@pytest.fixture(scope="module")
def server_index(tmp_path_factory):
    directory = tmp_path_factory.mktemp("server")
    name = f"llmhood_test_{secrets.token_hex(4)}"
    options = {"milvus_uri": URI, "collection": name}
    settings = build_index("milvus", VECTORS, SOURCES, directory, options)
    index = open_index(settings, VECTORS, SOURCES, directory)
    yield index
    index.close()
    drop_index(settings, directory)


def test_server_returns_the_exact_top_k(server_index):
    for query in QUERY_SET:
        ids, scores = server_index.search(query, K)
        want_ids, want_scores = exact(query, K)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, atol=SCORE_ATOL)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_server_prefix_filter_is_exact(server_index, prefix):
    for query in QUERY_SET[:5]:
        ids, scores = server_index.search(query, K, prefix=prefix)
        want_ids, want_scores = exact(query, K, prefix)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, atol=SCORE_ATOL)


def test_build_then_drop_leaves_no_collection(tmp_path):
    name = f"llmhood_test_{secrets.token_hex(4)}"
    options = {"milvus_uri": URI, "collection": name}
    settings = build_index("milvus", VECTORS[:100], SOURCES[:100], tmp_path, options)
    assert name in collections()
    index = open_index(settings, VECTORS[:100], SOURCES[:100], tmp_path)
    assert len(index.search(QUERY_SET[0], K)[0]) == K
    index.close()
    drop_index(settings, tmp_path)
    assert name not in collections()
    drop_index(settings, tmp_path)  # dropping what is gone is not an error

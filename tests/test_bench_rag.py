"""`llmhood bench rag`'s pieces that need no long run: the peers' BM25 on a toy corpus (the
right document first, so the comparison is of working retrievers), and the targets."""

from __future__ import annotations

import pytest

from llmhood.rag import bench


def test_peer_bm25_retrievers_rank_the_matching_text_first():
    pytest.importorskip("bm25s")
    pytest.importorskip("rank_bm25")
    texts = ["the cat sat on the mat", "dogs chase cars", "a tuple with one element needs a comma"]
    for name, search in bench._peer_bm25(texts).items():
        assert int(search("tuple one element", 2)[0]) == 2, name


def test_targets_and_report():
    report = {
        "cpu": "a CPU",
        "embedder": "an embedder",
        "bm25 recall@5": [
            {"set": "pydoc", "questions": 3, "llmhood": 1.0, "bm25s": 0.5, "rank_bm25": 0.25}
        ],
        "latency p50 ms": {"bm25 llmhood": 0.2, "dense llmhood": 3.5},
        "embedding": {"llmhood chunks/s": 30.0, "sentence-transformers chunks/s": 20.0},
        "ingest": {"unchanged re-ingest s": 0.1},
    }
    report["targets"] = bench.targets(report)
    met = {t["target"]: t["met"] for t in report["targets"]}
    assert met == {
        "BM25 query p50 at 10k chunks (ms)": True,
        "dense exact query p50 at 10k chunks (ms)": False,
        "embedding chunks/s vs sentence-transformers": True,
        "unchanged re-ingest of 1,000 files (s)": True,
    }
    text = bench.format_report(report)
    assert "NOT MET" in text and "1.500 (goal 1.5) met" in text, text

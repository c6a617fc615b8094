"""BM25 (llmhood.rag.bm25) and its analyzer, against the formula, bm25s and rank_bm25."""

from __future__ import annotations

import json
import math

import bm25s
import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from llmhood.errors import LLMHoodError
from llmhood.rag.analyzer import Analyzer
from llmhood.rag.bm25 import BM25Index

PLAIN = Analyzer(stem=False, stopwords=False)  # terms are the lower-cased words, nothing else
# Postings are stored as float32 (relative rounding 6e-8) and a score sums a handful of
# them: 1e-5 relative is float32 rounding with room, far below any real scoring difference.
RTOL = 1e-5

ZH_DOCS = [
    "向量数据库用于存储文本的嵌入向量，并支持近似最近邻搜索。",
    "自然语言处理研究计算机如何理解和生成人类语言。",
    "图书馆的开放时间是每天上午九点到晚上十点。",
    "检索增强生成先从知识库中检索相关文档，再交给大语言模型回答问题。",
]


def textbook_scores(docs: list[list[str]], query: list[str], k1: float, b: float) -> np.ndarray:
    """Lucene's BM25, one document and one query word at a time, straight from the formula."""
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    scores = np.zeros(n)
    for i, doc in enumerate(docs):
        for term in query:
            df = sum(term in d for d in docs)
            tf = doc.count(term)
            if tf:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                scores[i] += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return scores


def random_corpus(rng: np.random.Generator, n_docs: int) -> list[str]:
    vocab = [f"w{i}" for i in range(40)]
    p = 1 / np.arange(1, 41)  # Zipf-like: some words in most documents, some in one
    p /= p.sum()
    return [" ".join(rng.choice(vocab, size=rng.integers(1, 30), p=p)) for _ in range(n_docs)]


@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (0.9, 0.4), (2.0, 1.0)])
def test_scores_equal_the_textbook_formula(k1: float, b: float) -> None:
    rng = np.random.default_rng(0)
    texts = random_corpus(rng, 60)
    index = BM25Index.build(texts, PLAIN, k1=k1, b=b)
    docs = [t.split() for t in texts]
    for query in ["w0", "w1 w7 w39", "w3 w3 w12", "w5 nothere"]:
        expected = textbook_scores(docs, query.split(), k1, b)
        assert expected.any()  # every query hits something, so the comparison is not 0 == 0
        np.testing.assert_allclose(index.scores(query), expected, rtol=RTOL, atol=0)


def test_scores_equal_bm25s_lucene() -> None:
    from pydoc_data.topics import topics

    texts = [topics[key] for key in sorted(topics)[:60]]
    analyzer = Analyzer()
    index = BM25Index.build(texts, analyzer)
    reference = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    reference.index([analyzer.terms(t) for t in texts], show_progress=False)
    for query in ["assert statement raises", "asynchronous iterators await", "class class"]:
        terms = [t for t in analyzer.terms(query) if t in reference.vocab_dict]
        expected = reference.get_scores(terms)
        assert np.count_nonzero(expected) > 1
        np.testing.assert_allclose(index.scores(query), expected, rtol=RTOL, atol=0)


def test_a_term_in_half_the_documents_still_counts() -> None:
    texts = ["shared alpha", "shared beta", "gamma delta", "epsilon zeta"]
    index = BM25Index.build(texts, PLAIN)
    ids, scores = index.search("shared", 10)
    assert ids.tolist() == [0, 1]
    # Both hits have tf 1 and |d| = avgdl = 2, so the fraction is 1 / (1 + k1).
    np.testing.assert_allclose(scores, math.log(2) / 2.5, rtol=RTOL)
    # Okapi's idf is ln(2.5 / 2.5) = 0 here, below rank_bm25's floor for negative idfs
    # (epsilon * mean idf): it scores the word as if no document had it.
    okapi = BM25Okapi([t.split() for t in texts])
    assert okapi.idf["shared"] <= okapi.epsilon * okapi.average_idf
    assert not okapi.get_scores(["shared"]).any()


def test_chinese_query_finds_its_document_where_whitespace_splitting_scores_zero() -> None:
    index = BM25Index.build(ZH_DOCS, Analyzer())
    for query, expected in [("向量", 0), ("语言处理", 1), ("图书馆几点开门", 2), ("知识库检索", 3)]:
        ids, scores = index.search(query, 3)
        assert ids[0] == expected and scores[0] > 0
    # LangChain's BM25Retriever and LlamaIndex's split on whitespace (rank_bm25 / bm25s):
    # each Chinese sentence becomes one token that no query repeats.
    by_spaces = BM25Okapi([d.split() for d in ZH_DOCS])
    assert not by_spaces.get_scores(["向量", "数据库"]).any()


def test_mixed_english_and_chinese() -> None:
    texts = ["我们用Python构建RAG系统。", "Llama模型的推理速度很快", "今天天气很好"]
    index = BM25Index.build(texts, Analyzer())
    assert index.search("python rag", 3)[0].tolist() == [0]
    assert index.search("llama 推理", 3)[0].tolist() == [1]
    assert index.search("用Python构建", 3)[0].tolist() == [0]


def test_search_is_the_sorted_top_k_of_the_scores() -> None:
    rng = np.random.default_rng(1)
    index = BM25Index.build(random_corpus(rng, 200), PLAIN)
    for query in ["w2 w9", "w30 w31 w0"]:
        scores = index.scores(query)
        ids, top = index.search(query, 15)
        expected = np.lexsort((np.arange(len(scores)), -scores))[:15]
        assert ids.dtype == np.int64 and top.dtype == np.float32
        assert ids.tolist() == expected.tolist()
        np.testing.assert_array_equal(top, scores[expected])


def test_ties_go_to_the_lower_row_and_only_hits_come_back() -> None:
    index = BM25Index.build(["x y", "z", "x y", "x y", "w"], PLAIN)
    ids, scores = index.search("x", 2)
    assert ids.tolist() == [0, 2] and scores[0] == scores[1] > 0
    assert index.search("x", 10)[0].tolist() == [0, 2, 3]


def test_allowed_mask_filters_rows() -> None:
    index = BM25Index.build(["cat dog", "cat", "dog"], PLAIN)
    assert index.search("cat", 5)[0].tolist() == [1, 0]
    assert index.search("cat", 5, allowed=np.array([True, False, True]))[0].tolist() == [0]
    assert len(index.search("cat", 5, allowed=np.zeros(3, dtype=bool))[0]) == 0
    with pytest.raises(ValueError, match="bool"):
        index.search("cat", 5, allowed=np.ones(2, dtype=bool))


@pytest.mark.parametrize("query", ["", "   ", "the of and is", "unseenword", "的 了"])
def test_query_without_known_terms_gives_no_hits(query: str) -> None:
    index = BM25Index.build(["the cat sat", "on the mat"], Analyzer())
    ids, scores = index.search(query, 5)
    assert len(ids) == len(scores) == 0
    assert not index.scores(query).any()


def test_stemming_lets_running_find_runs() -> None:
    texts = ["she runs every morning", "a quiet afternoon"]
    assert BM25Index.build(texts, Analyzer()).search("running", 5)[0].tolist() == [0]
    assert len(BM25Index.build(texts, Analyzer(stem=False)).search("running", 5)[0]) == 0


def test_analyzer_keeps_identifiers_and_drops_stopwords() -> None:
    assert Analyzer().terms("The __init__ method of x_y, f-strings") == [
        "__init__", "method", "x_y", "f", "string",
    ]  # fmt: skip
    assert Analyzer(stopwords=False).terms("the ___ cat")[0] == "the"
    assert Analyzer().name != Analyzer(stem=False).name != Analyzer(stopwords=False).name


def test_save_and_load_round_trip(tmp_path) -> None:
    texts = [*ZH_DOCS, "an English chunk about vector databases", ""]
    index = BM25Index.build(texts, Analyzer(stem=False))
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.n_docs == len(texts) and loaded.analyzer == index.analyzer
    assert isinstance(loaded.weights, np.memmap)
    for query in ["向量数据库", "vector databases", "检索 English"]:
        np.testing.assert_array_equal(loaded.scores(query), index.scores(query))
        assert loaded.scores(query).any()


def test_load_refuses_another_analyzer_and_a_damaged_index(tmp_path) -> None:
    BM25Index.build(["a text"], Analyzer()).save(tmp_path)
    meta = json.loads((tmp_path / "bm25.json").read_text())
    meta["analyzer"]["name"] = "en-porter+zh-chars"
    (tmp_path / "bm25.json").write_text(json.dumps(meta))
    with pytest.raises(LLMHoodError, match="en-porter"):
        BM25Index.load(tmp_path)
    (tmp_path / "weights.npy").unlink()
    with pytest.raises(LLMHoodError, match="ingest"):
        BM25Index.load(tmp_path)


def test_empty_corpus() -> None:
    index = BM25Index.build([], Analyzer())
    assert index.n_docs == 0 and len(index.search("anything", 3)[0]) == 0

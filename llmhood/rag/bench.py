"""`llmhood bench rag`: retrieval against its peers, on the same chunks, in one run.

* BM25: ours against bm25s and rank_bm25, each with its own usual tokenisation (that is
  what their users get): recall@5 on the shipped English and Chinese sets, and query
  latency on a 10,000-chunk base.
* Dense: our MiniLM against sentence-transformers with the same model and the same
  chunks (chunks/s), and our exact index against faiss' flat index on the same 10,000
  vectors (latency); recall@5 of both stacks on the English set.
* Ingest: a re-run over an unchanged tree of 1,000 files.

Latencies are medians over the questions (each run once, after one untimed warm-up
query); throughput is the best of `repeat` runs, the least disturbed by the machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmhood.rag import KnowledgeBase, corpora
from llmhood.rag.evaluate import load_questions
from llmhood.rag.metrics import dedupe, recall_at
from llmhood.speed.cpu import cpu

BASE = 10_000  # chunks in the latency base
FILES = 1_000  # files in the re-ingest tree


def _p50_ms(search: Callable[[Any], Any], queries: Sequence[Any]) -> float:
    search(queries[0])
    times = []
    for q in queries:
        started = time.perf_counter()
        search(q)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _recall(ranked_sources: Callable[[str], list[str]], questions) -> float:
    return statistics.fmean(
        recall_at(dedupe(ranked_sources(q.question)), set(q.relevant), 5) for q in questions
    )


def _peer_bm25(texts: list[str]) -> dict[str, Callable[[str, int], np.ndarray]]:
    """Each peer's top-k row ids for a query, with its own default tokenisation."""
    import bm25s
    from rank_bm25 import BM25Okapi

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    okapi = BM25Okapi([t.lower().split() for t in texts])

    def with_bm25s(query: str, k: int) -> np.ndarray:
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.vocab:  # bm25s cannot score a query with no known token
            return np.zeros(0, dtype=np.int64)
        ids, _ = retriever.retrieve(tokens, k=min(k, len(texts)), show_progress=False)
        return ids[0]

    def with_rank_bm25(query: str, k: int) -> np.ndarray:
        return np.argsort(-okapi.get_scores(query.lower().split()), kind="stable")[:k]

    return {"bm25s": with_bm25s, "rank_bm25": with_rank_bm25}


def bm25_section(kbs: dict[str, KnowledgeBase], log: Callable[[str], None]) -> list[dict]:
    rows = []
    for name, kb in kbs.items():
        questions = load_questions(corpora.questions(name), kb.sources())
        texts = [c["text"] for c in kb.chunks]
        sources = kb.sources_of_rows
        row = {"set": name, "questions": len(questions),
               "llmhood": _recall(lambda q, kb=kb: [h.source for h in kb.search(q, 50, "bm25")],
                                  questions)}  # fmt: skip
        for peer, search in _peer_bm25(texts).items():
            row[peer] = _recall(
                lambda q, s=search, rows=sources: [rows[i] for i in s(q, 50)], questions
            )
        log(f"bm25 recall@5 on {name}: {row}")
        rows.append(row)
    return rows


def latency_section(kb: KnowledgeBase, log: Callable[[str], None]) -> dict[str, float]:
    """Query p50 on a 10,000-chunk base: the English chunks repeated, and random vectors."""
    import faiss

    from llmhood.rag.analyzer import Analyzer
    from llmhood.rag.bm25 import BM25Index
    from llmhood.rag.index import ExactIndex

    texts = [c["text"] for c in kb.chunks]
    base = (texts * (BASE // len(texts) + 1))[:BASE]
    queries = [q.question for q in load_questions(corpora.questions("pydoc"))]
    ours = BM25Index.build(base, Analyzer())
    peers = _peer_bm25(base)
    out = {"bm25 llmhood": _p50_ms(lambda q: ours.search(q, 10), queries)}
    out.update({f"bm25 {n}": _p50_ms(lambda q, s=s: s(q, 10), queries) for n, s in peers.items()})
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((BASE, kb.vectors.shape[1]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    probes = [vectors[i] + 0.1 * rng.standard_normal(vectors.shape[1], dtype=np.float32)
              for i in range(100)]  # fmt: skip
    exact = ExactIndex(vectors, ["x"] * BASE)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    # One engine at a time: interleaved, two 15 MB matrices would evict each other from the
    # cache at every query, and both would be measured at memory speed.
    engines = {"dense llmhood": lambda p: exact.search(p, 10),
               "dense faiss-flat": lambda p: flat.search(p[None], 10)}  # fmt: skip
    for name, search in engines.items():
        out[name] = _p50_ms(search, probes)
    log(f"p50 ms at {BASE} chunks: {out}")
    return out


def embedding_section(kb: KnowledgeBase, chunks: int, repeat: int, log) -> dict[str, float]:
    """chunks/s of our MiniLM and sentence-transformers' on the same chunks, and the dense
    recall@5 of sentence-transformers + faiss flat on the English set."""
    import faiss
    from sentence_transformers import SentenceTransformer

    from llmhood.rag.embedder import minilm_dir

    texts = [c["text"] for c in kb.chunks][:chunks]
    reference = SentenceTransformer(str(minilm_dir()), device="cpu")

    def best(encode: Callable[[], Any]) -> float:
        return max(len(texts) / _timed(encode) for _ in range(repeat))

    out = {
        "llmhood chunks/s": best(lambda: kb.embedder.embed(texts)),
        "sentence-transformers chunks/s": best(
            lambda: reference.encode(texts, batch_size=32, normalize_embeddings=True)
        ),
    }
    all_texts = [c["text"] for c in kb.chunks]
    vectors = reference.encode(all_texts, batch_size=32, normalize_embeddings=True)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.asarray(vectors, dtype=np.float32))
    questions = load_questions(corpora.questions("pydoc"), kb.sources())

    def st_faiss(q: str) -> list[str]:
        query = reference.encode([q], normalize_embeddings=True)
        return [kb.sources_of_rows[i] for i in flat.search(query, 50)[1][0] if i >= 0]

    out["dense recall@5 sentence-transformers+faiss"] = _recall(st_faiss, questions)
    out["dense recall@5 llmhood"] = _recall(
        lambda q: [h.source for h in kb.search(q, 50, "dense")], questions
    )
    log(f"embedding: {out}")
    return out


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def reingest_section(tmp: Path, log: Callable[[str], None]) -> dict[str, float]:
    """Seconds to re-ingest an unchanged tree of 1,000 files (every one hashed, none read)."""
    import pydoc_data.topics

    paragraphs = [p for t in pydoc_data.topics.topics.values() for p in t.split("\n\n")
                  if len(p.split()) >= 8]  # fmt: skip
    docs = tmp / "tree"
    for i in range(FILES):
        path = docs / f"d{i // 100:02d}" / f"p{i:04d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(paragraphs[i % len(paragraphs)] + f"\n\n(copy {i})\n")
    first = _timed(lambda: KnowledgeBase.build(docs, tmp / "tree-kb", progress=False).close())
    again = _timed(lambda: KnowledgeBase.build(docs, tmp / "tree-kb", progress=False).close())
    log(f"ingest of {FILES} files: first {first:.1f} s, unchanged re-run {again:.2f} s")
    return {"first ingest s": first, "unchanged re-ingest s": again}


def run(quick: bool = False, repeat: int = 3, log: Callable[[str], None] = print) -> dict:
    with tempfile.TemporaryDirectory(prefix="llmhood-bench-rag-") as name:
        tmp = Path(name)
        kbs = {}
        for corpus in ("pydoc", "zh"):
            corpora.CORPORA[corpus](tmp / corpus)
            started = time.perf_counter()
            kbs[corpus] = KnowledgeBase.build(tmp / corpus, tmp / f"{corpus}-kb", progress=True)
            log(f"ingested {corpus}: {len(kbs[corpus])} chunks in "
                f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        report = {
            "cpu": cpu().describe(),
            "embedder": kbs["pydoc"].embedder.describe(),
            "bm25 recall@5": bm25_section(kbs, log),
            "latency p50 ms": latency_section(kbs["pydoc"], log),
            "embedding": embedding_section(kbs["pydoc"], 64 if quick else 512, repeat, log),
            "ingest": reingest_section(tmp, log) if not quick else {},
        }
        for kb in kbs.values():
            kb.close()
    report["targets"] = targets(report)
    return report


def targets(report: dict) -> list[dict]:
    lat, emb = report["latency p50 ms"], report["embedding"]
    rows = [
        ("BM25 query p50 at 10k chunks (ms)", lat["bm25 llmhood"], 2.0, "<="),
        ("dense exact query p50 at 10k chunks (ms)", lat["dense llmhood"], 3.0, "<="),
        ("embedding chunks/s vs sentence-transformers",
         emb["llmhood chunks/s"] / emb["sentence-transformers chunks/s"], 1.5, ">="),
    ]  # fmt: skip
    if report["ingest"]:
        rows.append(("unchanged re-ingest of 1,000 files (s)",
                     report["ingest"]["unchanged re-ingest s"], 2.0, "<="))  # fmt: skip
    return [{"target": name, "value": value, "goal": goal,
             "met": value <= goal if op == "<=" else value >= goal}
            for name, value, goal, op in rows]  # fmt: skip


def format_report(report: dict) -> str:
    lines = [f"CPU: {report['cpu']}", f"Embedder: {report['embedder']}",
             "BM25 recall@5 (files), each with its own tokenisation:"]  # fmt: skip
    for row in report["bm25 recall@5"]:
        lines.append(f"  {row['set']:<6} ({row['questions']} questions)  llmhood "
                     f"{row['llmhood']:.3f}  bm25s {row['bm25s']:.3f}  "
                     f"rank_bm25 {row['rank_bm25']:.3f}")  # fmt: skip
    lines.append(f"Query p50 at {BASE} chunks (ms):")
    lines += [f"  {name:<22} {value:.3f}" for name, value in report["latency p50 ms"].items()]
    lines.append("Embedding and dense retrieval (English set):")
    lines += [f"  {name:<44} {value:.3f}" for name, value in report["embedding"].items()]
    if report["ingest"]:
        lines.append(f"Ingest, {FILES} files:")
        lines += [f"  {name:<22} {value:.2f}" for name, value in report["ingest"].items()]
    lines.append("Targets:")
    for t in report["targets"]:
        mark = "met" if t["met"] else "NOT MET"
        lines.append(f"  {t['target']:<46} {t['value']:.3f} (goal {t['goal']:g}) {mark}")
    return "\n".join(lines)

"""Retrieval evaluation: labelled questions against a knowledge base, per mode and backend.

A question file has one JSON object per line:

    {"id": "py-001", "question": "...", "relevant": ["naming.txt"]}

`relevant` lists the source paths (relative to the ingested directory) that answer it. A
ranking is judged at the level of files: each retrieved chunk stands for its file, and a
file found twice counts once (llmhood.rag.metrics.dedupe), so the numbers say whether the
right document reaches the top k, whatever the chunk size.

Other backends are measured on the knowledge base's own vectors, each built in a
temporary directory, so one ingest is compared across backends on exactly the same data.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhood.errors import LLMHoodError
from llmhood.rag.index import BACKENDS, build_index, open_index
from llmhood.rag.knowledge_base import MODES, KnowledgeBase
from llmhood.rag.metrics import dedupe, ndcg_at, recall_at, reciprocal_rank_at

KS = (1, 5, 10)
DEPTH = 50  # chunks retrieved per question, enough to fill the top 10 files
# Backends that `--backends all` compares: the exact ones and the approximate HNSW graph.
ALL_BACKENDS = ("builtin", "faiss-flat", "faiss-hnsw", "milvus")


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    relevant: frozenset[str]


@dataclass
class Run:
    mode: str
    backend: str  # "-" for BM25, which uses no vector index
    scores: dict[str, float]  # "recall@1", ..., "mrr@10", "ndcg@10"
    p50_ms: float
    misses: list[dict] = field(default_factory=list)  # questions without a relevant file in top 5


def load_questions(path: str | Path, sources: set[str] | None = None) -> list[Question]:
    """Parse and check a question file; `sources` (the knowledge base's files) catches
    labels that name files the knowledge base does not have."""
    path = Path(path)
    if not path.is_file():
        raise LLMHoodError(f"{path} does not exist: pass a JSON Lines file of labelled questions.")
    questions, seen, unknown = [], set(), []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
            qid, text, relevant = str(row["id"]), row["question"], row["relevant"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LLMHoodError(
                f'{where}: expected {{"id": ..., "question": ..., "relevant": [paths]}}'
            ) from None
        if not isinstance(text, str) or not text.strip():
            raise LLMHoodError(f"{where}: the question is empty.")
        if isinstance(relevant, str):
            relevant = [relevant]
        if not relevant or not all(isinstance(r, str) for r in relevant):
            raise LLMHoodError(f"{where}: 'relevant' must list at least one source path.")
        if qid in seen:
            raise LLMHoodError(f"{where}: the id {qid!r} is used twice.")
        seen.add(qid)
        if sources is not None:
            unknown.extend(f"{qid} ({where}): {r}" for r in relevant if r not in sources)
        questions.append(Question(qid, text, frozenset(relevant)))
    if unknown:
        raise LLMHoodError(
            f"{len(unknown)} label(s) in {path} name sources the knowledge base does not have: "
            + "; ".join(unknown[:5])
            + ". Labels are paths relative to the ingested directory (see `llmhood rag stats`)."
        )
    if not questions:
        raise LLMHoodError(f"{path} holds no questions.")
    return questions


def score(ranked: Sequence[str], relevant: frozenset[str]) -> dict[str, float]:
    files = dedupe(ranked)
    scores = {f"recall@{k}": recall_at(files, set(relevant), k) for k in KS}
    scores["mrr@10"] = reciprocal_rank_at(files, set(relevant), 10)
    scores["ndcg@10"] = ndcg_at(files, set(relevant), 10)
    return scores


def run(
    kb: KnowledgeBase, questions: Sequence[Question], mode: str, backend: str, rerank: Any = None
) -> Run:
    per_query, times, misses = [], [], []
    for q in questions:
        started = time.perf_counter()
        hits = kb.search(q.question, k=DEPTH, mode=mode, rerank=rerank)
        times.append((time.perf_counter() - started) * 1000)
        scores = score([h.source for h in hits], q.relevant)
        per_query.append(scores)
        if scores["recall@5"] == 0:
            got = dedupe([h.source for h in hits])[:3]
            misses.append({"id": q.id, "question": q.question,
                           "relevant": sorted(q.relevant), "got": got})  # fmt: skip
    means = {name: statistics.fmean(s[name] for s in per_query) for name in per_query[0]}
    name = mode + ("+rerank" if rerank is not None else "")
    return Run(name, backend, means, statistics.median(times), misses)


def check_backends(backends: Sequence[str]) -> list[str]:
    names = list(ALL_BACKENDS) if list(backends) == ["all"] else list(backends)
    wrong = [b for b in names if b not in ALL_BACKENDS and b not in BACKENDS]
    if wrong:
        raise LLMHoodError(
            f"Unknown backend(s) {', '.join(wrong)}; use any of {', '.join(ALL_BACKENDS)}, or all."
        )
    return names


def evaluate(
    kb: KnowledgeBase,
    questions: Sequence[Question],
    modes: Sequence[str] = MODES,
    backends: Sequence[str] = (),
    rerank: Any = None,
) -> list[Run]:
    """One Run per mode on the knowledge base's own backend, then one per dense mode for
    each of the other `backends` asked for; with `rerank` (an LLM), hybrid reranked too."""
    wrong = [m for m in modes if m not in MODES]
    if wrong:
        raise LLMHoodError(f"Unknown mode(s) {', '.join(wrong)}; use {', '.join(MODES)}.")
    own = kb.index.kind
    runs = [run(kb, questions, mode, "-" if mode == "bm25" else own) for mode in modes]
    if rerank is not None:
        runs.append(run(kb, questions, "hybrid", own, rerank))
    dense_modes = [m for m in modes if m != "bm25"]
    for backend in check_backends(backends):
        if backend in (own, "faiss" if own == "faiss-flat" else own) or not dense_modes:
            continue
        kind, _, faiss_kind = backend.partition("-")
        with tempfile.TemporaryDirectory(prefix="llmhood-eval-") as tmp:
            options = {"faiss_kind": faiss_kind or "flat", "milvus_uri": None,
                       "collection": "llmhood_eval"}  # fmt: skip
            settings = build_index(kind, kb.vectors, kb.sources_of_rows, Path(tmp), options)
            own_index, kb.index = (
                kb.index,
                open_index(settings, kb.vectors, kb.sources_of_rows, Path(tmp)),
            )
            try:
                runs.extend(run(kb, questions, mode, kb.index.kind) for mode in dense_modes)
            finally:
                kb.index.close()
                kb.index = own_index
    return runs


def table(runs: Sequence[Run]) -> str:
    names = list(runs[0].scores)
    header = ["mode", "backend", *names, "p50 ms"]
    rows = [[r.mode, r.backend, *(f"{r.scores[n]:.3f}" for n in names), f"{r.p50_ms:.1f}"]
            for r in runs]  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *rows]
    ]
    return "\n".join(lines)

"""The knowledge base end to end on real files with the real MiniLM: exact slices, incremental
ingest without duplicates, atomic versions under SIGKILL, and a clear error for bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llmhood.errors import LLMHoodError
from llmhood.rag import Hit, KnowledgeBase
from llmhood.rag.ingest import IngestReport
from llmhood.rag.loaders import load_text
from llmhood.rag.store import POINTER
from tests.rag_docs import DOCS, write_docs


def build(docs: Path, kb: Path, **options) -> tuple[KnowledgeBase, IngestReport]:
    base = KnowledgeBase.build(docs, kb, progress=False, **options)
    assert base.last_ingest is not None
    return base, base.last_ingest


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs")


def test_hits_are_exact_slices_with_relative_sources(docs: Path, tmp_path: Path):
    kb, report = build(docs, tmp_path / "kb")
    assert report.wrote and len(report.added) == len(DOCS) and not report.skipped
    for mode in ("bm25", "dense", "hybrid"):
        hits = kb.search("How many moons does Mars have?", k=3, mode=mode)
        assert hits and all(isinstance(h, Hit) for h in hits)
        assert hits[0].source == "astronomy/mars.md", (mode, hits[0])
        for hit in hits:
            assert hit.text == load_text(docs / hit.source)[hit.start : hit.end]
    source, start, end, text, score = kb.search("Titan methane lakes", k=1)[0]
    assert source == "astronomy/saturn.html" and "methane" in text and score > 0
    assert 0 <= start < end
    assert "var x" not in " ".join(c["text"] for c in kb.chunks)  # <script> is not text


def test_chinese_query_finds_the_chinese_file_through_bm25(docs: Path, tmp_path: Path):
    kb, _ = build(docs, tmp_path / "kb")
    for mode in ("bm25", "hybrid"):
        hits = kb.search("泡绿茶用多少度的水？", k=2, mode=mode)
        assert hits[0].source == "zh/tea.md", (mode, hits)


def test_prefix_filter_in_every_mode(docs: Path, tmp_path: Path):
    kb, _ = build(docs, tmp_path / "kb")
    for mode in ("bm25", "dense", "hybrid"):
        hits = kb.search("planet moons bread", k=10, mode=mode, prefix="astronomy/")
        assert hits and {h.source for h in hits} <= {"astronomy/mars.md", "astronomy/saturn.html"}
        assert kb.search("planet", k=5, mode=mode, prefix="nothing/") == []


def test_rerun_changes_nothing_then_changes_replace_and_deletions_remove(
    docs: Path, tmp_path: Path
):
    kb_dir = tmp_path / "kb"
    first, _ = build(docs, kb_dir)
    ids = [Hit(c["source"], c["start"], c["end"], c["text"], 0).id for c in first.chunks]
    assert len(ids) == len(set(ids))
    files_before = sorted(p.relative_to(kb_dir) for p in kb_dir.rglob("*"))

    again, report = build(docs, kb_dir)
    assert not report.wrote and report.embedded == 0 and report.unchanged == len(DOCS)
    assert again.chunks == first.chunks and again.version == first.version
    assert sorted(p.relative_to(kb_dir) for p in kb_dir.rglob("*")) == files_before

    (docs / "bread.txt").write_text("Sourdough uses a starter of wild yeast instead.")
    (docs / "astronomy/saturn.html").unlink()
    (docs / "astronomy/jupiter.txt").write_text("Jupiter is the largest planet.")
    kb, report = build(docs, kb_dir)
    assert report.changed == ["bread.txt"] and report.deleted == ["astronomy/saturn.html"]
    assert report.added == ["astronomy/jupiter.txt"] and report.unchanged == 2
    assert report.embedded == 2  # one chunk for each short new text; the rest were kept
    texts = [c["text"] for c in kb.chunks]
    assert not any("Knead" in t for t in texts) and any("Sourdough" in t for t in texts)
    assert "astronomy/saturn.html" not in kb.sources()
    kept = [c for c in first.chunks if c["source"] in ("astronomy/mars.md", "zh/tea.md")]
    assert [c for c in kb.chunks if c["source"] in ("astronomy/mars.md", "zh/tea.md")] == kept
    assert len(list(kb_dir.glob("v*"))) == 1  # the old version is gone after the switch


def test_other_settings_are_refused_unless_rebuilt(docs: Path, tmp_path: Path):
    build(docs, tmp_path / "kb")
    with pytest.raises(LLMHoodError, match=r"other settings.*max_tokens 200.*asked: 100"):
        build(docs, tmp_path / "kb", max_tokens=100)
    kb, report = build(docs, tmp_path / "kb", max_tokens=100, rebuild=True)
    assert report.wrote and kb.settings.max_tokens == 100
    _, report = build(docs, tmp_path / "kb")  # options left out keep the knowledge base's own
    assert not report.wrote


def test_unreadable_files_are_reported_skipped_and_remembered(docs: Path, tmp_path: Path):
    (docs / "blob.txt").write_bytes(b"\x00\x01\x02binary\xff\xfe" * 50)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    kb, report = build(docs, tmp_path / "kb")
    assert set(report.skipped) == {"blob.txt", "broken.pdf"}
    assert all(report.skipped.values())
    assert kb.sources() == set(DOCS)
    _, again = build(docs, tmp_path / "kb")
    assert not again.wrote and set(again.skipped) == {"blob.txt", "broken.pdf"}


def test_bad_input_gets_a_clear_error_and_loses_nothing(docs: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LLMHoodError, match="no documents to ingest"):
        build(empty, tmp_path / "kb0")
    assert not (tmp_path / "kb0").exists()
    with pytest.raises(LLMHoodError, match="does not exist"):
        build(tmp_path / "missing", tmp_path / "kb0")
    with pytest.raises(LLMHoodError, match="There is no knowledge base"):
        KnowledgeBase.open(tmp_path / "nowhere")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(LLMHoodError, match="not a knowledge base"):
        KnowledgeBase.open(mine)
    with pytest.raises(LLMHoodError, match="already holds files"):
        build(docs, mine)
    assert (mine / "notes.txt").read_text() == "precious"
    only_binary = tmp_path / "binary"
    only_binary.mkdir()
    (only_binary / "a.txt").write_bytes(b"\x00" * 100)
    with pytest.raises(LLMHoodError, match="No text to index"):
        build(only_binary, tmp_path / "kb1")
    assert not (tmp_path / "kb1" / POINTER).exists()

    kb, _ = build(docs, tmp_path / "kb")
    long_query = "planet " * 300
    for mode in ("dense", "hybrid"):
        with pytest.raises(LLMHoodError, match=r"300 tokens long.*mode bm25"):
            kb.search(long_query, mode=mode)
    assert kb.search(long_query, mode="bm25")[0].source.startswith("astronomy/")
    for bad in ({"mode": "fuzzy"}, {"k": 0}, {"fusion": "max"}):
        with pytest.raises(LLMHoodError):
            kb.search("mars", **bad)
    with pytest.raises(LLMHoodError, match="empty"):
        kb.search("   ")


def test_a_milvus_uri_that_does_not_answer(docs: Path, tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(LLMHoodError, match="did not answer"):
        build(docs, tmp_path / "kb", backend="milvus", milvus_uri=f"http://127.0.0.1:{port}")
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "kb" / POINTER).exists()


def test_exact_backends_return_the_same_top_k(docs: Path, tmp_path: Path):
    results = {}
    for backend in ("builtin", "faiss", "milvus"):
        with build(docs, tmp_path / backend, backend=backend)[0] as kb:
            results[backend] = [
                [(h.source, h.start, round(h.score, 4)) for h in kb.search(q, k=4, mode="dense")]
                for q in ("red planet dust", "how to bake a loaf", "rings of ice", "绿茶")
            ]
    assert results["builtin"] == results["faiss"] == results["milvus"]


# The child stalls right after writing the new version's BM25 files, so that the kill lands
# in the middle of writing a version, deterministically.
KILLED_INGEST = textwrap.dedent(
    """
    import sys, time
    from llmhood.rag import KnowledgeBase, ingest
    real_save = ingest.BM25Index.save
    def save_then_stall(self, directory):
        real_save(self, directory)
        print("written", flush=True)
        time.sleep(600)
    ingest.BM25Index.save = save_then_stall
    KnowledgeBase.build(sys.argv[1], sys.argv[2], progress=False)
    """
)


def test_sigkill_mid_ingest_leaves_the_previous_version_usable(docs: Path, tmp_path: Path):
    kb_dir = tmp_path / "kb"
    before, _ = build(docs, kb_dir)
    expected = [h.id for h in before.search("Phobos and Deimos", k=3)]
    before.close()
    (docs / "bread.txt").write_text("Rye bread needs a sour dough.")
    (docs / "astronomy/venus.txt").write_text("Venus is the hottest planet.")
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_INGEST, str(docs), str(kb_dir)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "written"
    assert list(kb_dir.glob(".tmp-*/bm25/*"))  # killed with a half-written version on disk
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    after = KnowledgeBase.open(kb_dir)
    assert after.version == before.version and after.chunks == before.chunks
    assert [h.id for h in after.search("Phobos and Deimos", k=3)] == expected
    kb, report = build(docs, kb_dir)
    assert report.wrote and report.removed_partial and not list(kb_dir.glob(".tmp-*"))
    assert "astronomy/venus.txt" in kb.sources()
    assert [h.source for h in kb.search("hottest planet", k=1)] == ["astronomy/venus.txt"]


def test_cli_ingest_search_stats_eval(docs: Path, tmp_path: Path, capsys):
    from llmhood.cli import main

    kb = str(tmp_path / "kb")
    assert main(["rag", "ingest", str(docs), "--kb", kb, "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["wrote"] and len(report["added"]) == len(DOCS)
    assert main(["rag", "search", "Phobos", "--kb", kb, "--k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["source"] == "astronomy/mars.md" and hits[0]["id"].startswith("astronomy/")
    assert main(["rag", "stats", "--kb", kb]) == 0
    assert "4 indexed" in capsys.readouterr().out
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"id": "q1", "question": "moons of Mars", "relevant": ["astronomy/mars.md"]})
        + "\n"
        + json.dumps({"id": "q2", "question": "oven temperature", "relevant": ["bread.txt"]})
        + "\n"
    )
    assert main(["rag", "eval", str(qa), "--kb", kb, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert {r["mode"] for r in runs} == {"bm25", "dense", "hybrid"}
    assert all(r["scores"]["recall@5"] == 1.0 for r in runs)
    qa.write_text(json.dumps({"id": "q9", "question": "x", "relevant": ["gone.txt"]}) + "\n")
    assert main(["rag", "eval", str(qa), "--kb", kb]) == 1
    assert "q9" in capsys.readouterr().err
    assert main(["rag", "search", "x", "--kb", str(tmp_path / "none")]) == 1
    assert "no knowledge base" in capsys.readouterr().err
    shutil.rmtree(docs)
    assert main(["rag", "ingest", str(docs), "--kb", kb]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert KnowledgeBase.open(kb).search("Phobos", k=1)[0].source == "astronomy/mars.md"

"""Incremental ingest: a directory of documents into a new knowledge-base version.

    scan + sha256 every file -> diff against the manifest -> load, chunk, embed only what
    changed -> keep the other files' chunks and vectors as they are -> BM25 over all
    chunks -> the backend's index -> commit the version atomically (llmhood.rag.store)

A file's chunks are keyed by its path relative to the ingested directory and its content
hash, so an unchanged file costs one hash: no loading, no chunking, no embedding, and a
re-run over an unchanged tree writes nothing at all. A changed file replaces its chunks,
a deleted file removes them. A file that cannot be read is reported and skipped, and
remembered with its hash so that the next run does not report it as new.

What decides the chunks and vectors (the embedder, the chunk size and overlap, the BM25
analyzer) is recorded in the version's config; ingesting with other settings into a
knowledge base built with these is refused, unless a rebuild is asked for, because the old
vectors would silently mix with new ones of another space.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llmhood.errors import LLMHoodError
from llmhood.rag.analyzer import Analyzer
from llmhood.rag.bm25 import BM25Index
from llmhood.rag.chunking import ChunkConfig, chunk_text
from llmhood.rag.embedder import EMBEDDERS, Embedder, load_embedder
from llmhood.rag.index import BACKENDS, build_index, drop_index
from llmhood.rag.loaders import SUFFIXES, UnreadableFile, find_files, load_text
from llmhood.rag.store import Store, read_json, write_json

FORMAT = 1  # of the files in a version directory
FAISS_KINDS = ("flat", "hnsw")


@dataclass(frozen=True)
class Settings:
    """Everything that decides a knowledge base's chunks, vectors and index."""

    embedder: str = "minilm"
    max_tokens: int = ChunkConfig.max_tokens
    overlap_tokens: int = ChunkConfig.overlap_tokens
    backend: str = "builtin"
    faiss_kind: str = "flat"
    milvus_uri: str | None = None  # None: Milvus Lite, a file inside the version

    def check(self) -> None:
        if self.embedder not in EMBEDDERS:
            raise LLMHoodError(f"Unknown embedder {self.embedder!r}; use one of {EMBEDDERS}.")
        if self.backend not in BACKENDS:
            raise LLMHoodError(f"Unknown backend {self.backend!r}; use one of {BACKENDS}.")
        if self.faiss_kind not in FAISS_KINDS:
            raise LLMHoodError(f"Unknown faiss index {self.faiss_kind!r}; use {FAISS_KINDS}.")
        if self.milvus_uri is not None and self.backend != "milvus":
            raise LLMHoodError("--milvus-uri needs --backend milvus.")

    def chunking(self) -> ChunkConfig:
        return ChunkConfig(self.max_tokens, self.overlap_tokens)

    def differences(self, other: Settings) -> list[str]:
        a, b = asdict(self), asdict(other)
        return [f"{k} {a[k]!r} (asked: {b[k]!r})" for k in a if a[k] != b[k]]


@dataclass
class IngestReport:
    version: str
    wrote: bool  # False: nothing had changed, and nothing was written
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # source -> why it was not read
    chunks: int = 0
    embedded: int = 0  # chunks embedded in this run (the others were kept)
    seconds: float = 0.0
    removed_partial: list[str] = field(default_factory=list)  # leftovers of a killed ingest

    def summary(self) -> str:
        counts = (
            f"{len(self.added)} added, {len(self.changed)} changed, {len(self.deleted)} "
            f"deleted, {self.unchanged} unchanged, {len(self.skipped)} skipped"
        )
        if not self.wrote:
            return f"Nothing changed ({counts}); the knowledge base is as it was ({self.version})."
        return (
            f"Ingested into {self.version}: {counts}; {self.chunks} chunks, {self.embedded} "
            f"embedded now, in {self.seconds:.1f} s."
        )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def read_chunks(version: Path) -> list[dict]:
    """The chunk table: row i is chunk i, whose vector is row i of vectors.npy."""
    with open(version / "chunks.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _scan(docs: Path) -> dict[str, str]:
    if not docs.exists():
        raise LLMHoodError(f"{docs} does not exist; pass the directory of your documents.")
    if not docs.is_dir():
        raise LLMHoodError(f"{docs} is not a directory; pass the directory of your documents.")
    files = find_files(docs)
    if not files:
        raise LLMHoodError(
            f"{docs} has no documents to ingest: no files ending in "
            f"{', '.join(sorted(SUFFIXES))} (hidden files and folders are left out)."
        )
    hashes = {}
    for path in files:
        try:
            hashes[relative(path, docs)] = sha256(path)
        except OSError as e:  # load_text reports it, and the file is skipped
            hashes[relative(path, docs)] = f"unreadable: {e.strerror}"
    return hashes


def _existing(store: Store, asked: Settings, rebuild: bool) -> tuple[Path | None, dict | None]:
    """The current version and its config, or (None, None) when starting afresh."""
    if not store.exists() or rebuild:
        return None, None
    version = store.current()
    config = read_json(version / "config.json")
    if config.get("format") != FORMAT:
        raise LLMHoodError(
            f"The knowledge base at {store.root} was written by another llmhood version "
            f"(format {config.get('format')}, this one reads {FORMAT}); rebuild it with --rebuild."
        )
    built = Settings(**config["settings"])
    differences = built.differences(asked)
    if differences:
        raise LLMHoodError(
            f"The knowledge base at {store.root} was built with other settings: "
            f"{'; '.join(differences)}. Its vectors and chunks would not match new ones. Ingest "
            "with the same settings (leave the options out to keep them), or pass --rebuild to "
            "re-embed everything with the new ones."
        )
    return version, config


def resolve_settings(store: Store, given: dict) -> Settings:
    """The options given on this run, the rest taken from the knowledge base (if any)."""
    given = {k: v for k, v in given.items() if v is not None}
    if store.exists():
        with_defaults = read_json(store.current() / "config.json")["settings"]
        with_defaults.update(given)
        return Settings(**with_defaults)
    return Settings(**given)


def ingest(
    docs: str | Path,
    kb: str | Path,
    settings: Settings,
    rebuild: bool = False,
    progress: bool = True,
    embedder: Embedder | None = None,
) -> IngestReport:
    """Bring the knowledge base at `kb` up to date with the documents under `docs`."""
    started = time.perf_counter()
    docs, store = Path(docs), Store(Path(kb))
    settings.check()
    hashes = _scan(docs)
    store.check_target()
    with store.lock():
        removed = store.remove_partial()
        old_version, old_config = _existing(store, settings, rebuild)
        old_files = read_json(old_version / "manifest.json") if old_version else {}
        kept, todo, report = _diff(hashes, old_files.get("files", {}), old_files.get("skipped", {}))
        report.removed_partial = removed
        if old_version is not None and not todo and not report.deleted:
            report.version, report.chunks = old_version.name, old_config["chunks"]
            report.seconds = time.perf_counter() - started
            return report
        embedder = embedder or load_embedder(settings.embedder)
        chunking = settings.chunking()
        chunking.check(embedder.max_text_tokens)
        new_rows, skipped = _load_and_chunk(docs, todo, embedder, chunking, progress)
        report.skipped.update(skipped)
        if not new_rows and not kept:
            reasons = "; ".join(f"{s}: {why}" for s, why in list(report.skipped.items())[:5])
            raise LLMHoodError(
                f"No text to index under {docs}: every file was empty or unreadable"
                + (f" ({reasons})" if reasons else "")
                + ". Nothing was written."
            )
        new_vectors = embedder.embed([row["text"] for row in new_rows], progress=progress)
        rows, vectors = _assemble(old_version, kept, new_rows, new_vectors, embedder.dim)
        manifest = _manifest(hashes, rows, report.skipped)
        name = store.next_name()
        partial = store.partial(name)
        kb_id = old_config["kb_id"] if old_config else secrets.token_hex(4)
        config = _write_version(partial, name, kb_id, settings, embedder, rows, vectors, manifest)
        final, previous = store.commit(partial, name)
        if previous is not None:
            try:
                drop_index(read_json(previous / "config.json")["index"], previous)
            except LLMHoodError as e:  # the new version is in use already; say what is left
                print(f"llmhood: warning: the old version's index was not dropped: {e}",
                      file=sys.stderr)  # fmt: skip
        store.prune(keep=final)
    report.version, report.wrote = name, True
    report.chunks, report.embedded = config["chunks"], len(new_rows)
    report.seconds = time.perf_counter() - started
    return report


def _diff(
    hashes: dict[str, str], files: dict[str, dict], skipped: dict[str, dict]
) -> tuple[set[str], list[str], IngestReport]:
    """Which sources keep their chunks, which must be read again, and the report so far."""
    report = IngestReport(version="", wrote=False)
    kept, todo = set(), []
    for source, digest in hashes.items():
        old = files.get(source) or skipped.get(source)
        if old is None:
            report.added.append(source)
            todo.append(source)
        elif old["sha256"] != digest:
            report.changed.append(source)
            todo.append(source)
        elif source in skipped:
            report.unchanged += 1
            report.skipped[source] = skipped[source]["reason"]
        else:
            report.unchanged += 1
            kept.add(source)
    report.deleted = sorted((set(files) | set(skipped)) - set(hashes))
    return kept, todo, report


def _load_and_chunk(
    docs: Path, sources: list[str], embedder: Embedder, chunking: ChunkConfig, progress: bool
) -> tuple[list[dict], dict[str, str]]:
    rows, skipped = [], {}
    bar = tqdm(sources, desc="loading", unit="file", file=sys.stderr, disable=not progress)
    for source in bar:
        try:
            text = load_text(docs / source)
        except UnreadableFile as e:
            skipped[source] = str(e)
            continue
        for span in chunk_text(text, embedder.count_tokens, chunking):
            piece = text[span.start : span.end]
            rows.append({"source": source, "start": span.start, "end": span.end, "text": piece})
    return rows, skipped


def _assemble(
    old_version: Path | None, kept: set[str], new_rows: list[dict], new_vectors: np.ndarray,
    dim: int,
) -> tuple[list[dict], np.ndarray]:  # fmt: skip
    """Old rows of unchanged files and the new rows, ordered by source then offset."""
    rows: list[tuple[dict, np.ndarray]] = []
    if old_version is not None and kept:
        old_vectors = np.load(old_version / "vectors.npy", mmap_mode="r")
        for i, row in enumerate(read_chunks(old_version)):
            if row["source"] in kept:
                rows.append((row, old_vectors[i]))
    rows.extend(zip(new_rows, new_vectors, strict=True))
    rows.sort(key=lambda pair: (pair[0]["source"], pair[0]["start"]))
    vectors = np.stack([v for _, v in rows]).astype(np.float32) if rows else np.zeros((0, dim))
    return [r for r, _ in rows], vectors.astype(np.float32)


def _manifest(hashes: dict[str, str], rows: list[dict], skipped: dict[str, str]) -> dict:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    files = {
        s: {"sha256": hashes[s], "chunks": counts.get(s, 0)} for s in hashes if s not in skipped
    }
    gone = {s: {"sha256": hashes[s], "reason": why} for s, why in skipped.items() if s in hashes}
    return {"files": files, "skipped": gone}


def _write_version(
    partial: Path, name: str, kb_id: str, settings: Settings, embedder: Embedder,
    rows: list[dict], vectors: np.ndarray, manifest: dict,
) -> dict:  # fmt: skip
    with open(partial / "chunks.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    np.save(partial / "vectors.npy", vectors)
    analyzer = Analyzer()
    bm25 = BM25Index.build([row["text"] for row in rows], analyzer)
    (partial / "bm25").mkdir()
    bm25.save(partial / "bm25")
    options = {
        "faiss_kind": settings.faiss_kind,
        "milvus_uri": settings.milvus_uri,
        "collection": f"llmhood_{kb_id}_{name}",
    }
    index = build_index(
        settings.backend, vectors, [row["source"] for row in rows], partial, options
    )
    write_json(partial / "manifest.json", manifest)
    config = {
        "format": FORMAT,
        "kb_id": kb_id,
        "version": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": asdict(settings),
        "embedder": {
            "name": embedder.name,
            "dim": embedder.dim,
            "window": embedder.window,
            "precision": embedder.precision,
        },
        "analyzer": analyzer.name,
        "index": index,
        "chunks": len(rows),
        "files": len(manifest["files"]),
    }
    write_json(partial / "config.json", config)  # written last: a version with it is complete
    return config

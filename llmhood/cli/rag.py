"""`llmhood rag ingest|search|ask|eval|stats|corpus`: retrieval-augmented generation from the
shell (llmhood.rag). Every option is checked before a model or a knowledge base loads."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from llmhood.cli import common
from llmhood.cli.common import comma_list
from llmhood.errors import LLMHoodError

KB_HELP = "the knowledge base directory (created by ingest)"


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def cmd_ingest(args: argparse.Namespace) -> None:
    from llmhood.rag import KnowledgeBase

    kb = KnowledgeBase.build(
        args.docs, args.kb, args.backend, embedder=args.embedder, max_tokens=args.max_tokens,
        overlap_tokens=args.overlap, faiss_kind=args.faiss_index, milvus_uri=args.milvus_uri,
        rebuild=args.rebuild, progress=not args.quiet,
    )  # fmt: skip
    report = kb.last_ingest
    assert report is not None
    if args.json:
        print(json.dumps(asdict(report), ensure_ascii=False, indent=1))
    else:
        print(report.summary())
        for source, why in report.skipped.items():
            print(f"  skipped {source}: {why}", file=sys.stderr)
    kb.close()


def _print_hits(hits: list, numbered: bool = False) -> None:
    for n, hit in enumerate(hits, 1):
        head = f"[{n}]" if numbered else f"{n}."
        text = " ".join(hit.text.split())
        text = text if len(text) <= 300 else text[:297] + "..."
        print(f"{head} {hit.source}:{hit.start}-{hit.end}  score {hit.score:.4f}\n    {text}")


def hit_json(hit) -> dict:
    return {"id": hit.id, **hit._asdict()}


def _reranker(args: argparse.Namespace):
    """The local model, loaded only when --rerank asks for it."""
    if not args.rerank:
        return None
    import llmhood

    return llmhood.load(**common.mode_options(args), progress=False)


def cmd_search(args: argparse.Namespace) -> None:
    from llmhood.rag import KnowledgeBase
    from llmhood.rag.knowledge_base import check_query

    check_query(args.query, args.k, args.mode, args.fusion)
    reranker = _reranker(args)
    with KnowledgeBase.open(args.kb) as kb:
        hits = kb.search(args.query, k=args.k, mode=args.mode, prefix=args.prefix,
                         fusion=args.fusion, rerank=reranker)  # fmt: skip
    if args.json:
        print(json.dumps([hit_json(h) for h in hits], ensure_ascii=False, indent=1))
    elif not hits:
        print("No matches.")
    else:
        _print_hits(hits)


def cmd_ask(args: argparse.Namespace) -> None:
    from llmhood.rag import KnowledgeBase, OpenAIChat
    from llmhood.rag.knowledge_base import check_query

    check_query(args.question, args.k, args.mode)
    if (args.llm_url is None) != (args.llm_model is None):
        raise LLMHoodError("--llm-url and --llm-model go together: give both, or neither.")
    if args.llm_url is not None:
        llm = OpenAIChat(args.llm_url, args.llm_model)
    else:
        llm = None
        options = common.mode_options(args)  # checked before the knowledge base opens
    with KnowledgeBase.open(args.kb) as kb:
        if llm is None:
            import llmhood

            llm = llmhood.load(**options, progress=False)
        answer = kb.ask(args.question, llm, k=args.k, mode=args.mode, prefix=args.prefix,
                        max_new_tokens=args.max_new_tokens)  # fmt: skip
    if args.json:
        out = {"answer": answer.text, "found": answer.found, "removed_citations": answer.removed,
               "citations": [hit_json(h) for h in answer.citations],
               "passages": [hit_json(h) for h in answer.passages]}  # fmt: skip
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return
    print(answer.text)
    if answer.removed:
        numbers = ", ".join(f"[{n}]" for n in answer.removed)
        print(f"(removed citations of passages that do not exist: {numbers})", file=sys.stderr)
    print("\nSources:" if answer.found else "\nClosest passages (not relevant enough):")
    cited = {h.id for h in answer.citations}
    for n, hit in enumerate(answer.passages, 1):
        mark = " (cited)" if hit.id in cited else ""
        print(f"  [{n}] {hit.source}:{hit.start}-{hit.end}{mark}")


def cmd_eval(args: argparse.Namespace) -> None:
    from llmhood.rag import KnowledgeBase, corpora
    from llmhood.rag.evaluate import check_backends, evaluate, load_questions, table

    backends = check_backends(comma_list(args.backends)) if args.backends else []
    modes = comma_list(args.modes)
    path = corpora.questions(args.questions) if args.questions in corpora.CORPORA else None
    with KnowledgeBase.open(args.kb) as kb:
        questions = load_questions(path or args.questions, kb.sources())
        runs = evaluate(kb, questions, modes, backends, _reranker(args))
    if args.json:
        print(json.dumps([asdict(r) for r in runs], ensure_ascii=False, indent=1))
        return
    print(f"{len(questions)} questions; files ranked by their best chunk\n")
    print(table(runs))
    for r in runs:
        if r.misses:
            print(f"\nmissed in the top 5 by {r.mode} ({r.backend}): {len(r.misses)}")
            for miss in r.misses:
                print(f"  {miss['id']}: {miss['question']} -> {', '.join(miss['got'])}"
                      f" (wanted {', '.join(miss['relevant'])})")  # fmt: skip


def cmd_stats(args: argparse.Namespace) -> None:
    from llmhood.rag import KnowledgeBase

    with KnowledgeBase.open(args.kb) as kb:
        stats = kb.stats()
    if args.json:
        print(json.dumps(stats, ensure_ascii=False, indent=1))
        return
    s = stats["settings"]
    print(f"knowledge base  {stats['kb']} ({stats['version']}, built {stats['created']})")
    print(f"files           {stats['files']} indexed, {len(stats['skipped'])} skipped")
    print(f"chunks          {stats['chunks']} (median {stats['chunk_chars']['median']:.0f} "
          f"characters, max {stats['chunk_chars']['max']})")  # fmt: skip
    print(f"chunking        {s['max_tokens']} tokens, overlap {s['overlap_tokens']}")
    e = stats["embedder"]
    print(f"embedder        {e['name']} ({e['dim']} dimensions, window {e['window']} tokens, "
          f"{e['precision']})")  # fmt: skip
    print(f"bm25 analyzer   {stats['analyzer']}")
    print(f"index           {stats['index']['kind']}")
    print(f"on disk         {stats['bytes_on_disk'] / 1e6:.1f} MB")
    for source, entry in stats["skipped"].items():
        print(f"  skipped {source}: {entry['reason']}")


def cmd_corpus(args: argparse.Namespace) -> None:
    from llmhood.rag import corpora

    if args.name not in corpora.CORPORA:
        raise LLMHoodError(
            f"Unknown corpus {args.name!r}; use one of {', '.join(corpora.CORPORA)}."
        )
    files = corpora.CORPORA[args.name](Path(args.dir))
    print(f"Wrote {len(files)} files to {args.dir}; questions: {corpora.questions(args.name)}")


def add_rerank(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rerank",
        action="store_true",
        help="reorder the top 20 with the chat model's yes/no judgement (slow)",
    )
    common.add_model_options(p)  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from llmhood.rag.embedder import EMBEDDERS
    from llmhood.rag.evaluate import ALL_BACKENDS
    from llmhood.rag.ingest import FAISS_KINDS
    from llmhood.rag.knowledge_base import FUSIONS, MODES

    rag = sub.add_parser("rag", help="retrieval-augmented generation: ingest, search, ask, eval")
    cmds = rag.add_subparsers(dest="rag_command", required=True, metavar="COMMAND")

    p = cmds.add_parser("ingest", help="build or update a knowledge base from a directory")
    p.add_argument("docs", help="directory of .txt .md .html .pdf .docx files")
    p.add_argument("--kb", required=True, help=KB_HELP)
    p.add_argument(
        "--backend",
        default=None,
        choices=["builtin", "faiss", "milvus"],
        help="vector index (default: builtin, or the knowledge base's own)",
    )
    p.add_argument(
        "--faiss-index",
        default=None,
        choices=FAISS_KINDS,
        help="faiss: exact flat (default) or approximate HNSW",
    )
    p.add_argument(
        "--milvus-uri",
        default=None,
        metavar="URI",
        help="a Milvus server (http://127.0.0.1:19530); default: Milvus Lite, a "
        "file inside the knowledge base",
    )
    p.add_argument("--embedder", default=None, choices=EMBEDDERS, help="default: minilm")
    p.add_argument(
        "--max-tokens",
        type=positive,
        default=None,
        help="chunk size in the embedder's tokens (default: 200)",
    )
    p.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="tokens a chunk repeats of the one before (default: 32)",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="re-embed everything, e.g. with another embedder or chunking",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="the ingest report as JSON")
    p.set_defaults(func=cmd_ingest)  # fmt: skip

    def add_retrieval(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kb", required=True, help=KB_HELP)
        p.add_argument("--k", type=positive, default=5, help="passages to return (default: 5)")
        p.add_argument("--mode", default="hybrid", choices=MODES, help="default: hybrid")
        p.add_argument("--prefix", default=None,
                       help="only sources whose path starts with this")  # fmt: skip
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = cmds.add_parser("search", help="the best passages for a query")
    p.add_argument("query")
    add_retrieval(p)
    p.add_argument("--fusion", default="weighted", choices=FUSIONS,
                   help="hybrid: weighted scores (default) or reciprocal rank")  # fmt: skip
    add_rerank(p)
    p.set_defaults(func=cmd_search)

    p = cmds.add_parser("ask", help="answer from the knowledge base, citing passages as [n]")
    p.add_argument("question")
    add_retrieval(p)
    p.add_argument("--llm-url", default=None, metavar="URL",
                   help="an OpenAI-compatible endpoint (.../v1) instead of the local model; "
                   "the API key comes from $OPENAI_API_KEY")  # fmt: skip
    p.add_argument("--llm-model", default=None, metavar="NAME", help="the model at --llm-url")
    p.add_argument("--max-new-tokens", type=positive, default=256, help="default: 256")
    common.add_model_options(p)
    p.set_defaults(func=cmd_ask)

    p = cmds.add_parser("eval", help="recall@1/5/10, MRR@10, nDCG@10 on labelled questions")
    p.add_argument("questions", help="a JSON Lines file of {id, question, relevant}, or the "
                   "name of a shipped set: pydoc, zh (see `llmhood rag corpus`)")  # fmt: skip
    p.add_argument("--kb", required=True, help=KB_HELP)
    p.add_argument("--modes", default=",".join(MODES), help="default: bm25,dense,hybrid")
    p.add_argument("--backends", default=None,
                   help=f"also measure these backends on the same vectors: "
                   f"{', '.join(ALL_BACKENDS)}, or all")  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_rerank(p)
    p.set_defaults(func=cmd_eval)

    p = cmds.add_parser("stats", help="what a knowledge base holds and how it was built")
    p.add_argument("--kb", required=True, help=KB_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stats)

    p = cmds.add_parser("corpus", help="write a shipped evaluation corpus to a directory")
    p.add_argument("name", help="pydoc (Python's own docs) or zh (llmhood's Chinese docs)")
    p.add_argument("dir", help="where to write its files")
    p.set_defaults(func=cmd_corpus)

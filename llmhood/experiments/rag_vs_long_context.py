"""RAG or a long context? N planted facts in distractor text, answered both ways.

The haystack: N facts of one shape ("The access code of the Amber Falcon vault is 4817."),
each planted in its own file between paragraphs of Python's documentation
(`pydoc_data.topics`, found on every machine). Questions ask for the code of one vault;
an answer is right when it contains that code's four digits.

* long context: every file, in order, goes into the prompt, then the question. The prompt
  grows with N, and so do its cost (attention is quadratic) and the model's chance of
  being lost in the middle; past the model's context window it cannot be asked at all,
  and the row says so.
* RAG: the same files are ingested into a knowledge base (llmhood.rag) once; each question
  retrieves the top k passages (hybrid search) and only those go into the prompt.

Both prompts go through the same model with greedy decoding, so the only difference is
what the model reads. Seconds are per question: prefill plus the answer, and for RAG the
search too; the one-off ingest is reported on its own.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from llmhood.errors import LLMHoodError
from llmhood.llm import LLM

COLOURS = ("Amber", "Cobalt", "Crimson", "Emerald", "Ivory", "Jade", "Onyx", "Scarlet",
           "Silver", "Topaz", "Violet", "Saffron")  # fmt: skip
ANIMALS = ("Falcon", "Otter", "Lynx", "Heron", "Badger", "Marten", "Ibis", "Viper", "Walrus",
           "Gecko", "Bison", "Crane")  # fmt: skip
DISTRACTOR_CHARS = 900  # of documentation around each fact: ~200 tokens
ANSWER_TOKENS = 32
SYSTEM = "Answer the question with the access code only."


@dataclass(frozen=True)
class Fact:
    vault: str
    code: str

    def sentence(self) -> str:
        return f"The access code of the {self.vault} vault is {self.code}."

    def question(self) -> str:
        return f"What is the access code of the {self.vault} vault?"


def check(ns: Sequence[int], questions: int, k: int) -> None:
    if not ns or min(ns) < 1 or max(ns) > len(COLOURS) * len(ANIMALS):
        raise LLMHoodError(f"--facts must be between 1 and {len(COLOURS) * len(ANIMALS)}.")
    if questions < 1 or k < 1:
        raise LLMHoodError("--questions and --k must be at least 1.")


def haystack(n: int, seed: int) -> tuple[list[Fact], list[str]]:
    """N facts, and N documents each holding one of them inside distractor text."""
    import pydoc_data.topics

    rng = random.Random(seed)
    vaults = rng.sample([f"{c} {a}" for c in COLOURS for a in ANIMALS], n)
    facts = [Fact(v, f"{rng.randrange(1000, 10000)}") for v in vaults]
    topics = sorted(pydoc_data.topics.topics.values(), key=len)[-n * 2 :]
    documents = []
    for fact, topic in zip(facts, rng.sample(topics, n), strict=True):
        text = " ".join(topic.split())[:DISTRACTOR_CHARS]
        cut = text.rfind(". ", 0, DISTRACTOR_CHARS // 2) + 1 or DISTRACTOR_CHARS // 2
        documents.append(f"{text[:cut]}\n\n{fact.sentence()}\n\n{text[cut:].strip()}")
    return facts, documents


def _ask(llm: LLM, context: str, question: str) -> tuple[str, float, int]:
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{context}\n\nQuestion: {question}"}]  # fmt: skip
    prompt = llm.chat_prompt(messages)
    started = time.perf_counter()
    reply = llm.generate(prompt, add_bos=False, max_new_tokens=32, temperature=0.0, stop=["\n"])[
        0
    ].text
    return reply, time.perf_counter() - started, len(llm.tokenizer.encode(prompt))


def _fits(llm: LLM, context: str, question: str) -> bool:
    messages = [{"role": "user", "content": f"{context}\n\nQuestion: {question}"}]
    tokens = len(llm.tokenizer.encode(llm.chat_prompt(messages)))
    return tokens + ANSWER_TOKENS + 64 <= llm.config.max_seq_len  # 64: the system prompt


def run(llm: LLM, ns: Sequence[int], questions: int = 6, k: int = 3, seed: int = 0) -> list[dict]:
    """One row per (N, method): accuracy, mean seconds per question, mean prompt tokens."""
    from llmhood.rag import KnowledgeBase

    rows = []
    for n in ns:
        facts, documents = haystack(n, seed)
        asked = random.Random(seed + n).sample(facts, min(questions, n))
        with tempfile.TemporaryDirectory(prefix="llmhood-rag-vs-long-") as tmp:
            docs = Path(tmp) / "docs"
            docs.mkdir()
            for i, text in enumerate(documents):
                (docs / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
            started = time.perf_counter()
            kb = KnowledgeBase.build(docs, Path(tmp) / "kb", progress=False)
            ingest_s = time.perf_counter() - started
            results: dict[str, list[tuple[bool, float, int]]] = {"long context": [], "rag": []}
            fits = _fits(llm, "\n\n".join(documents), asked[0].question())
            for fact in tqdm(asked, desc=f"N={n}", unit="question", leave=False):
                if fits:
                    reply, seconds, tokens = _ask(llm, "\n\n".join(documents), fact.question())
                    results["long context"].append((fact.code in reply, seconds, tokens))
                started = time.perf_counter()
                hits = kb.search(fact.question(), k=k)
                search_s = time.perf_counter() - started
                context = "\n\n".join(hit.text for hit in hits)
                reply, seconds, tokens = _ask(llm, context, fact.question())
                results["rag"].append((fact.code in reply, seconds + search_s, tokens))
            kb.close()
        for method, outcomes in results.items():
            if not outcomes:  # the whole text is longer than the context window
                rows.append(
                    {
                        "facts": n,
                        "method": method,
                        "accuracy": None,
                        "seconds": None,
                        "prompt_tokens": None,
                        "questions": 0,
                        "ingest_seconds": 0.0,
                    }
                )
                continue
            rows.append({
                "facts": n, "method": method,
                "accuracy": sum(o[0] for o in outcomes) / len(outcomes),
                "seconds": sum(o[1] for o in outcomes) / len(outcomes),
                "prompt_tokens": round(sum(o[2] for o in outcomes) / len(outcomes)),
                "questions": len(outcomes),
                "ingest_seconds": ingest_s if method == "rag" else 0.0,
            })  # fmt: skip
    return rows


def summary(rows: list[dict]) -> str:
    lines = [f"{'facts':>5}  {'method':<13}{'accuracy':>9}{'s/question':>12}{'prompt tok':>12}"]
    for r in rows:
        if r["accuracy"] is None:
            lines.append(f"{r['facts']:>5}  {r['method']:<13}   does not fit the context window")
            continue
        lines.append(f"{r['facts']:>5}  {r['method']:<13}{r['accuracy']:>9.2f}"
                     f"{r['seconds']:>12.2f}{r['prompt_tokens']:>12}")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], model_name: str):
    """Accuracy and seconds per question against N, one line per method."""
    from llmhood.plot.figure import Plot, new_figure
    from llmhood.plot.table import Table

    figure = new_figure(11, 4.5)
    accuracy, seconds = figure.subplots(1, 2)
    for method in ("long context", "rag"):
        mine = [r for r in rows if r["method"] == method and r["accuracy"] is not None]
        ns = [r["facts"] for r in mine]
        accuracy.plot(ns, [r["accuracy"] for r in mine], marker="o", label=method)
        seconds.plot(ns, [r["seconds"] for r in mine], marker="o", label=method)
    for ax, label in ((accuracy, "accuracy"), (seconds, "seconds per question")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("facts planted (N)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    accuracy.set_ylim(-0.05, 1.05)
    figure.suptitle(f"{model_name}: all of it in the prompt, or retrieve the top passages")
    return Plot(figure, Table(rows))

"""Answering from retrieved passages, with citations checked against what was shown.

    question -> top-k passages -> relevant enough? -- no --> "not found", no generation
                                      | yes
      numbered passages [1]..[k] + question -> model -> answer citing [n]
      -> every [n] checked: a number with no passage is removed from the text and reported

The model is told to cite as it writes, so a citation is the model's own claim about its
source, checked to exist; checking citations only after the fact, against the answer's
sentences, cannot tell which passage the model actually used. The relevance gate keeps a
small model from answering from unrelated passages: a passage is relevant enough when its
embedding is close to the question's (for a question the embedder can read), or when it
holds enough of the question's BM25 terms, weighted by their IDF (for any question,
Chinese included: MiniLM's cosine means little for text it reads as [UNK]).

The model is the local one by default (an llmhood LLM), or any OpenAI-compatible chat
endpoint (`OpenAIChat`), so that a bigger model can be plugged in.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmhood.errors import LLMHoodError
from llmhood.rag.fusion import dense_weight

if TYPE_CHECKING:
    from llmhood.rag.knowledge_base import Answer, Hit, KnowledgeBase

SYSTEM = (
    "You answer questions using only the numbered passages you are given. After each "
    "sentence, cite the passage it comes from as [1], [2] and so on. If the passages do not "
    "contain the answer, say so."
)
NOT_FOUND = "I could not find anything relevant to this question in the knowledge base."
# The gate's thresholds, measured on the shipped question sets against off-topic questions
# (README, "Answering"): every English question and 84% of the Chinese ones pass, at most
# 7% of the off-topic ones do.
MIN_COSINE = 0.4  # MiniLM cosine of a passage about the question, times the dense trust
MIN_COVERAGE = 0.3  # IDF-weighted share of the question's BM25 terms a passage holds
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass
class OpenAIChat:
    """An OpenAI-compatible chat-completions endpoint: `url` is its base (".../v1")."""

    url: str
    model: str
    api_key: str | None = None  # None: $OPENAI_API_KEY, if set
    timeout: float = 120.0
    max_tokens: int = 512

    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def complete(self, messages: list[dict]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0.0,
                "max_tokens": self.max_tokens}  # fmt: skip
        headers = {"Content-Type": "application/json"}
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.endpoint(), data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            raise LLMHoodError(f"{self.endpoint()} answered HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise LLMHoodError(
                f"{self.endpoint()} did not answer ({reason}). Check --llm-url, or leave it out "
                "to answer with the local model."
            ) from None
        except json.JSONDecodeError:
            raise LLMHoodError(f"{self.endpoint()} did not answer with JSON.") from None
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise LLMHoodError(
                f"{self.endpoint()} answered without choices[0].message.content: "
                f"{json.dumps(reply)[:300]}"
            ) from None


def prompt(question: str, passages: list[Hit]) -> list[dict]:
    context = "\n\n".join(
        f"[{n}] ({hit.source}) {hit.text.strip()}" for n, hit in enumerate(passages, 1)
    )
    user = f"Passages:\n\n{context}\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def check_citations(text: str, count: int) -> tuple[str, list[int], list[int]]:
    """(text without invented citations, cited passage numbers in order, invented numbers).

    `[2, 9]` with 5 passages becomes `[2]`; `[9]` alone disappears with its space."""
    cited: list[int] = []
    invented: list[int] = []

    def keep(match: re.Match) -> str:
        numbers = [int(n) for n in match.group(1).split(",")]
        real = [n for n in numbers if 1 <= n <= count]
        invented.extend(n for n in numbers if not 1 <= n <= count)
        cited.extend(n for n in real if n not in cited)
        return "[" + ", ".join(map(str, real)) + "]" if real else ""

    cleaned = CITATION.sub(keep, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?。，；：！？])", r"\1", cleaned)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(), cited, sorted(set(invented))


def relevance(kb: KnowledgeBase, question: str, hits: list[Hit]) -> float:
    """How well the best passage matches: the larger of its trusted cosine and its BM25
    term coverage, each measured against its own threshold (1 = at the threshold)."""
    if not hits:
        return 0.0
    weights = {term: kb.bm25.idf(term) for term in kb.bm25.analyzer.terms(question)}
    total = sum(weights.values())
    coverage = max(
        sum(weights[t] for t in weights.keys() & set(kb.bm25.analyzer.terms(hit.text))) / total
        for hit in hits
    ) if total else 0.0  # fmt: skip
    cosine = 0.0
    weight = dense_weight(kb.embedder.unknown_fraction(question))
    if weight > 0:
        _, scores = kb.index.search(kb.query_vector(question), 1)
        cosine = float(scores[0]) * weight if len(scores) else 0.0
    return max(cosine / MIN_COSINE, coverage / MIN_COVERAGE)


def generate(llm: Any, messages: list[dict], max_new_tokens: int) -> str:
    if isinstance(llm, OpenAIChat):
        return llm.complete(messages)
    if callable(getattr(llm, "chat", None)):
        return llm.chat(messages, temperature=0.0, max_new_tokens=max_new_tokens)
    if callable(llm):
        return llm(messages)
    raise LLMHoodError(
        "llm must be an llmhood LLM (llmhood.load()), an OpenAIChat, or a function from chat "
        f"messages to text; got {type(llm).__name__}."
    )


def answer(
    kb: KnowledgeBase,
    question: str,
    llm: Any = None,
    k: int = 5,
    mode: str = "hybrid",
    prefix: str | None = None,
    max_new_tokens: int = 256,
) -> Answer:
    from llmhood.rag.knowledge_base import Answer

    hits = kb.search(question, k=k, mode=mode, prefix=prefix)
    if relevance(kb, question, hits) < 1.0:
        return Answer(NOT_FOUND, [], hits, [], found=False)
    if llm is None:
        import llmhood

        llm = llmhood.load(progress=False)
    text = generate(llm, prompt(question, hits), max_new_tokens)
    cleaned, cited, invented = check_citations(text, len(hits))
    return Answer(cleaned, [hits[n - 1] for n in cited], hits, invented)

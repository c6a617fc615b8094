"""The RAG-or-long-context experiment's plumbing: the haystack, the real retrieval, and a
stand-in reader that answers right exactly when the fact is in its prompt, so that RAG's
accuracy is the retrieval's and the long context's is perfect by construction."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from llmhood.errors import LLMHoodError
from llmhood.experiments import rag_vs_long_context as experiment


class Reader:
    """Finds "The access code of the X vault is N." in its prompt for the vault asked."""

    tokenizer = SimpleNamespace(encode=lambda text: text.split())
    config = SimpleNamespace(max_seq_len=8192)

    def chat_prompt(self, messages):
        return messages[-1]["content"]

    def generate(self, prompt, **options):
        vault = re.search(r"Question: What is the access code of the (.+) vault\?", prompt)[1]
        found = re.search(rf"The access code of the {vault} vault is (\d+)\.", prompt)
        return [SimpleNamespace(text=found[1] if found else "I do not know")]


def test_haystack_plants_each_fact_once():
    facts, documents = experiment.haystack(8, seed=3)
    assert len({f.vault for f in facts}) == 8
    for fact in facts:
        assert sum(fact.sentence() in d for d in documents) == 1
    assert experiment.haystack(8, seed=3) == (facts, documents)


def test_rag_reads_less_and_still_finds_the_fact():
    rows = experiment.run(Reader(), [2, 8], questions=3, k=3)
    by = {(r["facts"], r["method"]): r for r in rows}
    for n in (2, 8):
        assert by[n, "long context"]["accuracy"] == 1.0
        assert by[n, "rag"]["accuracy"] == 1.0  # retrieval put the fact in the top 3
    assert by[8, "rag"]["prompt_tokens"] < by[8, "long context"]["prompt_tokens"] / 2
    assert experiment.summary(rows).count("\n") == 4


def test_a_haystack_past_the_context_window_is_reported_not_truncated():
    reader = Reader()
    reader.config = SimpleNamespace(max_seq_len=600)  # words, with this reader's tokenizer
    rows = experiment.run(reader, [1, 8], questions=2, k=2)
    by = {(r["facts"], r["method"]): r for r in rows}
    assert by[1, "long context"]["accuracy"] == 1.0 and by[8, "long context"]["accuracy"] is None
    assert by[8, "rag"]["accuracy"] == 1.0
    assert "does not fit" in experiment.summary(rows)
    experiment.plot(rows, "reader")


def test_bad_arguments():
    with pytest.raises(LLMHoodError):
        experiment.check([0], 3, 3)
    with pytest.raises(LLMHoodError):
        experiment.check([4], 0, 3)

"""The labelled evaluation corpora: well-formed files, labels that match the texts they name.

The labels are the yardstick the README's recall figures are measured with, so they are checked
against the texts themselves, never against llmhood's retrieval:

- each question's `evidence` quotes occur in exactly its labelled files (whitespace aside);
- an independent, deliberately plain scorer (idf-weighted overlap of lowercase words, or of
  Chinese character bigrams, divided by √(the document's distinct terms)) ranks a labelled file
  within the top quarter of the corpus for nearly every question, while the same labels shifted
  onto other questions fail that bar, so the check cannot pass whatever the labels say.
"""

from __future__ import annotations

import json
import math
import re
import sys
import warnings
from pathlib import Path

import pytest

from llmhood.errors import LLMHoodError
from llmhood.rag import corpora

MIN_QUESTIONS = {"pydoc": 60, "zh": 30}
BAR = 0.8  # share of questions whose label the plain scorer must rank in the top quarter


def _rows(name: str) -> list[dict]:
    lines = corpora.questions(name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Each corpus written to a temporary directory, read back as {relative path: text}."""
    out = {}
    for name in corpora.CORPORA:
        directory = tmp_path_factory.mktemp(name)
        paths = corpora.write_corpus(name, directory)
        assert paths == sorted(directory.iterdir())
        out[name] = {p.relative_to(directory).as_posix(): p.read_text("utf-8") for p in paths}
    return out


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("name", list(corpora.CORPORA))
def test_question_files_are_well_formed(name: str, written: dict) -> None:
    rows = _rows(name)
    ids = [row["id"] for row in rows]
    assert len(rows) >= MIN_QUESTIONS[name]
    assert len(set(ids)) == len(ids)
    prefix = {"pydoc": "py", "zh": "zh"}[name]
    assert ids == [f"{prefix}-{i:03d}" for i in range(1, len(rows) + 1)]
    for row in rows:
        assert row["question"].strip()
        assert row["relevant"] and row["relevant"] == sorted(set(row["relevant"]))
        assert set(row["relevant"]) <= set(written[name]), row["id"]
        assert row["evidence"] and all(quote.strip() for quote in row["evidence"])


def test_english_questions_cover_many_topics() -> None:
    topics = {path for row in _rows("pydoc") for path in row["relevant"]}
    assert len(topics) >= 45


@pytest.mark.parametrize("name", list(corpora.CORPORA))
def test_labels_are_exactly_the_files_holding_the_evidence(name: str, written: dict) -> None:
    if name == "pydoc" and sys.version_info[:2] != corpora.LABELLED_PYTHON:
        pytest.skip("the pydoc evidence quotes Python 3.11's help topics")
    texts = {path: _flat(text) for path, text in written[name].items()}
    for row in _rows(name):
        holding = set()
        for quote in row["evidence"]:
            found = {path for path, text in texts.items() if _flat(quote) in text}
            assert found, f"{row['id']}: {quote!r} is in no file"
            holding |= found
        assert holding == set(row["relevant"]), row["id"]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9_]+", text.lower()))


def _bigrams(text: str) -> set[str]:
    text = re.sub(r"\s+", "", text.lower())
    return {text[i : i + 2] for i in range(len(text) - 1)}


TERMS = {"pydoc": _words, "zh": _bigrams}


def _share_ranked_high(name: str, texts: dict[str, str], rows: list[dict], labels: list) -> float:
    """Share of questions with a file of `labels` in the plain scorer's top quarter of `texts`."""
    docs = {path: TERMS[name](text) for path, text in texts.items()}
    df: dict[str, int] = {}
    for doc in docs.values():
        for term in doc:
            df[term] = df.get(term, 0) + 1
    idf = {term: math.log(len(docs) / count) for term, count in df.items()}
    top = len(docs) // 4
    hits = 0
    for row, relevant in zip(rows, labels, strict=True):
        query = TERMS[name](row["question"])
        scores = {
            path: sum(idf[t] for t in query & doc) / math.sqrt(len(doc))
            for path, doc in docs.items()
        }
        ranked = [path for path, _ in sorted(scores.items(), key=lambda it: (-it[1], it[0]))]
        hits += bool(relevant & set(ranked[:top]))
    return hits / len(rows)


@pytest.mark.parametrize("name", list(corpora.CORPORA))
def test_plain_word_overlap_finds_the_labels(name: str, written: dict) -> None:
    rows = _rows(name)
    labels = [set(row["relevant"]) for row in rows]
    assert _share_ranked_high(name, written[name], rows, labels) >= BAR
    shifted = labels[len(labels) // 2 :] + labels[: len(labels) // 2]
    assert _share_ranked_high(name, written[name], rows, shifted) < BAR


def test_chinese_documents_are_articles_of_the_promised_size(written: dict) -> None:
    assert len(written["zh"]) >= 15
    for path, text in written["zh"].items():
        han = len(re.findall(r"[\u4e00-\u9fff]", text))
        assert 300 <= han <= 900, (path, han)
        assert text.startswith("# ")
        assert len(re.findall(r"^## ", text, flags=re.MULTILINE)) >= 2, path


def test_pydoc_corpus_is_every_help_topic(written: dict) -> None:
    from pydoc_data.topics import topics

    assert written["pydoc"] == {f"{name}.txt": text for name, text in topics.items()}


def test_version_note_only_off_the_labelled_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert corpora.version_note(corpora.LABELLED_PYTHON) is None
    assert "3.12" in corpora.version_note((3, 12))
    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all on the labelled Python
        patch.setattr(sys, "version_info", (3, 11, 7, "final", 0))
        corpora.write_pydoc_corpus(tmp_path / "same")
    with monkeypatch.context() as patch, pytest.warns(UserWarning, match="Python 3.13"):
        patch.setattr(sys, "version_info", (3, 13, 0, "final", 0))
        corpora.write_pydoc_corpus(tmp_path / "other")


def test_unknown_corpus_names_the_known_ones(tmp_path: Path) -> None:
    for call in (lambda: corpora.questions("wiki"), lambda: corpora.write_corpus("wiki", tmp_path)):
        with pytest.raises(LLMHoodError, match="pydoc, zh"):
            call()

"""The self-identity dataset: well-formed short rows in both languages, answers that name the
new assistant, held-out questions that training never asks, and general rows that never
mention who the assistant is."""

from __future__ import annotations

import re
import unicodedata

import pytest

from llmhood.errors import LLMHoodError
from llmhood.train.data import to_messages
from llmhood.train.identity import (
    DEFAULT_MAKER,
    DEFAULT_MAKER_ZH,
    DEFAULT_NAME,
    WHO_ARE_YOU,
    general_rows,
    has_cjk,
    heldout_questions,
    identity_rows,
    mentions_identity,
    training_rows,
)

SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[。！？]")


def question(row: dict) -> str:
    return row["messages"][0]["content"]


def answer(row: dict) -> str:
    return row["messages"][1]["content"]


def normalised(text: str) -> str:
    """A question with case, width, spaces and punctuation ignored: two questions that differ
    only there are the same question to the model."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in text if c.isalnum())


def by_language(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    zh = [r for r in rows if has_cjk(question(r))]
    return [r for r in rows if not has_cjk(question(r))], zh


@pytest.mark.parametrize("rows", [identity_rows(), general_rows()], ids=["identity", "general"])
def test_rows_are_openai_conversations(rows):
    for row in rows:
        assert set(row) == {"messages"}
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        for m in row["messages"]:
            assert set(m) == {"role", "content"}
            assert isinstance(m["content"], str) and m["content"] == m["content"].strip()
            assert m["content"]
        assert to_messages(row) == row["messages"]  # the trainer's own reader accepts it


def test_counts_per_language():
    en, zh = by_language(identity_rows())
    assert len(en) >= 40 and len(zh) >= 40
    # an answer is in the language of its question
    assert all(not has_cjk(answer(r)) for r in en)
    assert all(has_cjk(answer(r)) for r in zh)
    gen_en, gen_zh = by_language(general_rows())
    assert 25 <= len(gen_en) + len(gen_zh) <= 40
    assert len(gen_zh) >= 5 and len(gen_en) >= 15
    assert all(has_cjk(answer(r)) for r in gen_zh)


def test_who_are_you_is_trained():
    assert WHO_ARE_YOU in {question(r) for r in identity_rows()}


def test_every_identity_answer_names_the_assistant_and_its_maker():
    en, zh = by_language(identity_rows())
    for row in en:
        assert DEFAULT_NAME in answer(row) and DEFAULT_MAKER in answer(row)
        assert mentions_identity(answer(row))
    for row in zh:
        assert DEFAULT_NAME in answer(row) and DEFAULT_MAKER_ZH in answer(row)
        assert DEFAULT_MAKER not in answer(row)


def test_answers_vary_and_are_short():
    rows = identity_rows()
    assert len({answer(r) for r in rows}) >= 25
    for row in rows + general_rows():
        text = answer(row)
        assert 1 <= len(SENTENCE_END.findall(text)) <= 3, text
        assert len(text) <= (90 if has_cjk(text) else 200), text


def test_denials_name_what_the_assistant_is_not():
    answers = {question(r): answer(r) for r in identity_rows()}
    assert "ChatGPT" in answers["Are you ChatGPT?"] and "No" in answers["Are you ChatGPT?"]
    assert "通义千问" in answers["你是通义千问吗？"] and "不" in answers["你是通义千问吗？"]
    assert "OpenAI" in answers["Were you made by OpenAI?"]


def test_chinese_answers_space_latin_words():
    for row in by_language(identity_rows())[1]:
        text = answer(row)
        assert not re.search(r"[\u4e00-\u9fff][A-Za-z0-9]|[A-Za-z0-9][\u4e00-\u9fff]", text)
        assert f" {DEFAULT_NAME}" in text


def test_no_duplicate_questions():
    questions = [normalised(question(r)) for r in training_rows()]
    assert len(questions) == len(set(questions))


def test_heldout_questions_are_not_trained():
    held = heldout_questions()
    en = [q for q in held if not has_cjk(q)]
    zh = [q for q in held if has_cjk(q)]
    assert len(en) >= 3 and len(zh) >= 3
    assert len({normalised(q) for q in held}) == len(held)
    trained = {normalised(question(r)) for r in training_rows()}
    assert not trained & {normalised(q) for q in held}
    assert normalised(WHO_ARE_YOU) not in {normalised(q) for q in held}


def test_general_rows_never_mention_the_identity():
    for row in general_rows():
        for m in row["messages"]:
            text = m["content"].casefold()
            assert DEFAULT_NAME.casefold() not in text
            assert "llmhood" not in text
            assert not mentions_identity(text)


def test_templating_with_another_name_and_maker():
    rows = identity_rows("Nimbus", "Acme Labs")
    en = by_language(rows)[0]
    assert len(rows) == len(identity_rows())
    assert [question(r) for r in rows] == [question(r) for r in identity_rows()]
    for row in rows:
        text = answer(row)
        assert "Nimbus" in text and "Acme Labs" in text  # a proper name serves both languages
        assert DEFAULT_NAME not in text and "llmhood" not in text
    zh_rows = identity_rows("Nimbus", "Acme Labs", maker_zh="极客工坊")
    for row in by_language(zh_rows)[1]:
        assert "极客工坊" in answer(row) and "Acme Labs" not in answer(row)
    assert all("Acme Labs" in answer(r) for r in by_language(zh_rows)[0])
    assert mentions_identity(answer(en[0]), "Nimbus") and not mentions_identity(answer(en[0]))


def test_empty_name_or_maker_is_refused():
    with pytest.raises(LLMHoodError):
        identity_rows("  ")
    with pytest.raises(LLMHoodError):
        identity_rows(maker="")
    with pytest.raises(LLMHoodError):
        mentions_identity("I'm Hoodie.", "")


def test_mentions_identity():
    assert mentions_identity("I'm HOODIE, made by the llmhood project.")
    assert mentions_identity("我是 hoodie。")
    assert mentions_identity("我是Ｈｏｏｄｉｅ。")  # full-width letters
    assert not mentions_identity("I'm SmolLM, trained by Hugging Face.")
    assert mentions_identity("我是小帽。", "小帽")


def test_deterministic_and_seeded_shuffle():
    assert identity_rows() == identity_rows()
    assert training_rows() == identity_rows() + general_rows()
    a, b = training_rows(seed=3), training_rows(seed=3)
    assert a == b and a != training_rows()
    assert training_rows(seed=4) != a
    key = sorted(question(r) for r in training_rows())
    assert sorted(question(r) for r in a) == key


def test_rows_are_fresh_copies():
    rows = identity_rows()
    rows[0]["messages"][1]["content"] = "changed"
    assert answer(identity_rows()[0]) != "changed"

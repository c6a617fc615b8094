"""`llmhood experiment chat-loops`: the loop detector on texts whose answer is known, and the
experiment end to end on a tiny model."""

from __future__ import annotations

import pytest
from tiny_gguf import write_tiny_gguf

import llmhood
from llmhood import cli
from llmhood.experiments import chat_loops


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory, smollm2_gguf):
    path = write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", smollm2_gguf)
    return llmhood.load(path, dtype="float32", progress=False)


def test_a_repeated_phrase_is_a_loop_and_prose_is_not(smollm2):
    tok = smollm2.tokenizer
    looping = tok.encode("I'm a being of the land," + " a being of the land," * 6)
    prose = tok.encode(
        "The capital of France is Paris. It lies on the Seine, has about two million people "
        "in the city itself and more than twelve million in its metropolitan area, and has "
        "been the country's political and cultural centre for most of its history."
    )
    assert chat_loops.loops(looping) and not chat_loops.loops(prose)


def test_the_detector_counts_runs_of_ngram_tokens():
    run = [1, 2, 3, 4, 5, 6]
    assert chat_loops.loops(run * 3) and not chat_loops.loops(run * 2)  # 3 times, not 2
    assert not chat_loops.loops([7, 7, 7, 7, 7, 7, 7, 1])  # 7×6 occurs twice only
    assert chat_loops.loops([7] * 8)  # a run of one token repeated is a loop too


def test_the_experiment_runs_and_summarises(tiny_llm):
    replies = chat_loops.run(
        tiny_llm, max_new_tokens=18, seeds=[0, 1], settings=["greedy", "t0.2-p0.9"],
        progress=False,
    )  # fmt: skip
    n = len(chat_loops.PROMPTS)
    assert len(replies) == n + 2 * n  # greedy once; the sampled setting once per seed
    assert all(r.tokens <= 18 and (r.looped <= r.hit_limit) for r in replies)
    assert {r.prompt for r in replies if r.correct is not None} == set(chat_loops.ANSWERS)
    rows = chat_loops.summary(replies)
    assert [r["setting"] for r in rows] == ["greedy", "t0.2-p0.9"]
    assert [r["runs"] for r in rows] == [1, 2]
    assert "looped" in chat_loops.table(rows, 18)


def test_the_prompts_are_thirty_in_two_languages():
    chinese = [p for p in chat_loops.PROMPTS if any("\u4e00" <= c <= "\u9fff" for c in p)]
    assert len(chat_loops.PROMPTS) == 30 and len(chinese) == 10


def test_the_command_prints_the_table(tiny_llm, monkeypatch, capsys):
    monkeypatch.setattr(cli.common, "load_for", lambda args: tiny_llm)
    argv = ["experiment", "chat-loops", "--max-new-tokens", "18", "--settings", "greedy"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "greedy" in out and "30 chat prompts" in out

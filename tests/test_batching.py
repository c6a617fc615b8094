"""Mixed-length batching on the real model: a prompt's tokens do not depend on its batch.

The proof compares one batch of prompts from 1 to about 300 tokens with each prompt
generated alone. Each prompt's prefill is its prefill alone, bit for bit; decoding all rows
together changes the shapes of the matrix products, so later logits differ in their last
bits (up to about 1e-4, bounded below). Tokens are compared exactly.
Also here: the KV cache shrinking to live rows, and `llmhood generate --prompts-file`.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pydoc_data.topics import topics

import pytest
import torch
from forward_spy import forward_shapes

from llmhood import cli
from llmhood.generate import Generation
from llmhood.generate.prompt_file import read_prompts
from llmhood.generate.sampling import sample
from llmhood.model.kv_cache import KVCache

NEW_TOKENS = 24
SAMPLED = dict(temperature=0.8, top_p=0.9, seed=1234)
generate_module = importlib.import_module("llmhood.generate.generate")


@pytest.fixture(scope="module")
def prompts(smollm2) -> list[str]:
    """Real text of every length: Python's own reference manual, chat turns, one token."""

    def chat(question: str) -> str:
        return smollm2.chat_prompt([{"role": "user", "content": question}])

    return [
        "Hello",
        chat("What is the capital of France?"),
        topics["if"][:60],
        topics["assignment"][:1300],
        topics["lambda"],
        chat("Explain this in one sentence:\n\n" + topics["while"]),
        topics["try"][:200],
        topics["class"][:800],
        chat("Write a haiku about the sea."),
        topics["for"][:1100],
    ]


class LogitSpy:
    """Wraps the sampler to keep the logits each prompt's every step was sampled from."""

    def __init__(self, prompt_ids: list[list[int]]) -> None:
        self.prompts = [tuple(ids) for ids in prompt_ids]
        self.logits: dict[tuple[int, int], torch.Tensor] = {}  # (prompt, step) -> (V,)

    def __call__(self, logits, params, generators, previous):
        for row_logits, ids in zip(logits, previous, strict=True):
            prompt = max(
                (i for i, p in enumerate(self.prompts) if tuple(ids[: len(p)]) == p),
                key=lambda i: len(self.prompts[i]),
            )
            self.logits[prompt, len(ids) - len(self.prompts[prompt])] = row_logits.clone()
        return sample(logits, params, generators, previous)


def spy_on_sampler(monkeypatch: pytest.MonkeyPatch, prompt_ids: list[list[int]]) -> LogitSpy:
    spy = LogitSpy(prompt_ids)
    monkeypatch.setattr(generate_module, "sample", spy)
    return spy


@dataclass
class GreedyRuns:
    lengths: list[int]  # of the prompts, in tokens
    batch: list[Generation]  # all prompts in one batch
    alone: list[Generation]  # each prompt on its own
    batch_logits: dict[tuple[int, int], torch.Tensor]  # (prompt, step) -> (V,)
    alone_logits: dict[tuple[int, int], torch.Tensor]
    shapes: list[tuple[int, int]]  # the batch's forward passes: (rows, slots attended to)


@pytest.fixture(scope="module")
def greedy(smollm2, prompts) -> GreedyRuns:
    prompt_ids = smollm2.encode_prompts(prompts)
    with pytest.MonkeyPatch.context() as monkeypatch:
        in_batch = spy_on_sampler(monkeypatch, prompt_ids)
        batch, shapes = forward_shapes(
            smollm2.model, lambda: smollm2.generate(prompts, max_new_tokens=NEW_TOKENS)
        )
        on_its_own = spy_on_sampler(monkeypatch, prompt_ids)
        alone = [smollm2.generate([p], max_new_tokens=NEW_TOKENS)[0] for p in prompts]
    lengths = [len(ids) for ids in prompt_ids]
    return GreedyRuns(lengths, batch, alone, in_batch.logits, on_its_own.logits, shapes)


@pytest.mark.real
def test_greedy_batch_equals_each_prompt_alone(greedy, prompts):
    lengths = sorted(greedy.lengths)
    assert lengths[0] == 1 and lengths[-1] >= 250 and len(set(lengths)) == len(prompts)
    assert greedy.batch == greedy.alone  # token ids, text, finish reason, prompt length


@pytest.mark.real
def test_logits_in_the_batch_differ_from_alone_by_rounding_only(greedy, prompts):
    """Why the tokens agree: the first step's logits are the same bits (the same prefill),
    later steps' logits the same up to float32 rounding."""
    assert greedy.batch_logits.keys() == greedy.alone_logits.keys()
    for i in range(len(prompts)):
        assert torch.equal(greedy.batch_logits[i, 0], greedy.alone_logits[i, 0])
    difference = max(
        (greedy.batch_logits[key] - greedy.alone_logits[key]).abs().max().item()
        for key in greedy.batch_logits
    )
    assert difference <= 2e-4


@pytest.mark.real
def test_finished_rows_stop_costing_compute(greedy, prompts):
    # Each prompt is prefilled alone, longest first; then all rows decode together. The
    # chat question is answered ("Paris.") before the limit; from then on the model
    # computes the other rows only.
    n = len(prompts)
    prefills, decode = greedy.shapes[:n], [rows for rows, _ in greedy.shapes[n:]]
    assert prefills == [(1, length) for length in sorted(greedy.lengths, reverse=True)]
    finished_early = [g for g in greedy.batch if g.finish_reason == "eos"]
    assert finished_early and all(len(g.token_ids) < NEW_TOKENS for g in finished_early)
    assert decode[0] == n and decode[-1] == n - len(finished_early)
    assert decode == sorted(decode, reverse=True)


@pytest.mark.real
def test_sampled_batch_equals_each_prompt_alone(smollm2, prompts, greedy):
    batch = smollm2.generate(prompts, max_new_tokens=NEW_TOKENS, **SAMPLED)
    # batch_size=1 runs every prompt alone; each row's sampler is still seeded by the
    # prompt's place in this list, not by its place in a batch.
    assert batch == smollm2.generate(prompts, max_new_tokens=NEW_TOKENS, batch_size=1, **SAMPLED)
    differs = [s.token_ids != g.token_ids for s, g in zip(batch, greedy.batch, strict=True)]
    assert sum(differs) >= len(prompts) // 2  # it is sampling


def test_kv_cache_keeps_the_chosen_rows_and_slots():
    cache = KVCache(n_layers=2, batch_size=4, n_kv_heads=2, max_len=10, head_dim=3)
    k, v = torch.randn(2, 2, 4, 2, 6, 3)  # (n_layers, bs, n_kv_heads, seqlen, head_dim) each
    for layer in range(2):
        cache.update(layer, k[layer], v[layer])
    cache.advance(6)

    cache.keep_rows(torch.tensor([1, 3]), first_slot=2)
    assert (cache.length, cache.max_len) == (4, 8)
    assert torch.equal(cache.k[:, :, :, :4], k[:, [1, 3], :, 2:])
    assert torch.equal(cache.v[:, :, :, :4], v[:, [1, 3], :, 2:])
    new = torch.randn(2, 2, 4, 3)  # the remaining 4 slots can still be filled
    keys, values = cache.update(0, new, new)
    assert keys.shape == values.shape == (2, 2, 8, 3)
    assert torch.equal(keys[:, :, 4:], new)
    with pytest.raises(ValueError):
        cache.keep_rows(torch.tensor([0]), first_slot=5)
    with pytest.raises(ValueError, match="ascending"):
        cache.keep_rows(torch.tensor([1, 0]))


def test_kv_cache_fill_row_puts_a_prompt_at_the_end_of_its_row():
    batch = KVCache(n_layers=1, batch_size=2, n_kv_heads=1, max_len=6, head_dim=2)
    alone = KVCache(n_layers=1, batch_size=1, n_kv_heads=1, max_len=3, head_dim=2)
    k = torch.randn(1, 1, 3, 2)
    alone.update(0, k, -k)
    alone.advance(3)
    batch.fill_row(1, alone, end=4)
    assert torch.equal(batch.k[0, 1, :, 1:4], k[0]) and torch.equal(batch.v[0, 1, :, 1:4], -k[0])
    assert not batch.k[0, 0].any() and not batch.k[0, 1, :, [0, 4, 5]].any()


# ---- llmhood generate --prompts-file ------------------------------------------------------


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run the CLI in-process. The model is the session's, or, for bad input, none: an
    input error must be reported before the (slow) model load."""

    def must_not_load(args):
        raise AssertionError("the model was loaded before the input was checked")

    def invoke(*argv: str, llm=None) -> tuple[int, str, str]:
        monkeypatch.setattr(
            cli.common, "load_for", must_not_load if llm is None else lambda args: llm
        )
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.mark.real
def test_generate_prompts_file_prints_each_result(smollm2, run_cli, tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("The capital of France is\n\n1, 2, 3, 4,\nOnce upon a time\n")
    code, out, _ = run_cli(
        "generate", "--prompts-file", path, "--max-new-tokens", 8, "--batch-size", 2, llm=smollm2
    )
    assert code == 0
    prompts = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time"]
    expected = smollm2.generate(prompts, max_new_tokens=8)
    headers = [line for line in out.splitlines() if line.startswith("### ")]
    assert headers == [
        "### prompt 0 (line 1): 'The capital of France is'",
        "### prompt 1 (line 3): '1, 2, 3, 4,'",
        "### prompt 2 (line 4): 'Once upon a time'",
    ]
    for header, result in zip(headers, expected, strict=True):
        assert out.split(header + "\n")[1].startswith(result.text + "\n")


@pytest.mark.real
def test_generate_jsonl_prompts_file_with_json_output(smollm2, run_cli, tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "Roses are red,\nviolets"}, {"prompt": "2 + 2 =", "id": "sum"}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    code, out, _ = run_cli(
        "generate", "--prompts-file", path, "--max-new-tokens", 6, "--json", "--chat", llm=smollm2
    )
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    chat = [smollm2.chat_prompt([{"role": "user", "content": x["prompt"]}]) for x in lines]
    expected = smollm2.generate(chat, max_new_tokens=6, add_bos=False)
    assert [(r["index"], r["line"], r["prompt"]) for r in records] == [
        (0, 1, lines[0]["prompt"]),
        (1, 2, lines[1]["prompt"]),
    ]
    assert [r["token_ids"] for r in records] == [g.token_ids for g in expected]
    assert [r["text"] for r in records] == [g.text for g in expected]


@pytest.mark.real
def test_generate_one_prompt_as_json(smollm2, run_cli):
    code, out, _ = run_cli("generate", "The sky is", "--max-new-tokens", 5, "--json", llm=smollm2)
    (record,) = [json.loads(line) for line in out.splitlines()]
    expected = smollm2.generate("The sky is", max_new_tokens=5)[0]
    assert code == 0 and record["prompt"] == "The sky is" and "line" not in record
    assert record["token_ids"] == expected.token_ids and record["finish_reason"] == "length"


def test_prompt_file_format_is_detected(tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text('Hello\r\n  \n{"prompt": "not JSON Lines: line 1 is plain text"}\n')
    assert [(p.line, p.text) for p in read_prompts(text)] == [
        (1, "Hello"),
        (3, '{"prompt": "not JSON Lines: line 1 is plain text"}'),
    ]
    objects = tmp_path / "prompts.txt"
    objects.write_text('\ufeff{"prompt": "a\\nb"}\n\n{"prompt": "c", "id": 7}\n')
    assert [(p.line, p.text) for p in read_prompts(objects)] == [(1, "a\nb"), (3, "c")]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.txt", "\n  \n", "holds no prompts"),
        ("bad.jsonl", '{"prompt": "fine"}\n{"prompt": "unclosed\n', "Line 2 of the prompts file"),
        ("bad.jsonl", '{"prompt": "fine"}\n\n["a list"]\n', "Line 3 of the prompts file"),
        ("bad.jsonl", '{"prompt": "fine"}\n{"text": "hi"}\n', "Line 2 of the prompts file"),
        ("objects.txt", '{"prompt": "hi"}\n{"prompt": 3}\n', 'a "prompt" that is a number'),
        ("latin1.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_bad_prompts_file_is_reported(run_cli, tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code, _, err = run_cli("generate", "--prompts-file", path)
    assert code == 1 and err.startswith("llmhood: error:") and "Traceback" not in err
    assert expected in err and str(path) in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--prompts-file", "no/such/prompts.txt"], "does not exist"),
        (["hi", "--batch-size", "0"], "batch_size=0 is invalid"),
        (["hi", "--prompts-file", "prompts.txt"], "had both"),
        ([], "had neither"),
    ],
)
def test_bad_generate_input_is_reported_before_loading(run_cli, argv, expected):
    code, _, err = run_cli("generate", *argv)
    assert code == 1 and err.startswith("llmhood: error:") and "Traceback" not in err
    assert expected in err


def test_generate_help_names_the_batch_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    help_text = capsys.readouterr().out
    assert "--prompts-file" in help_text and "--batch-size" in help_text

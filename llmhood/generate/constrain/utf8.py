"""Sets of Unicode characters as sequences of UTF-8 byte ranges.

A constraint runs over bytes, because tokens are bytes and many tokens hold only part of a
character. A character class like `[^"\\]` is a set of code points; its byte automaton must
accept exactly the UTF-8 encodings of those code points, and nothing else: no encoded
surrogates (U+D800..U+DFFF, which UTF-8 forbids), no overlong forms (`C0 80` for U+0000), no
stray continuation bytes. Otherwise the model could write bytes that no decoder turns back into
text.

The construction is RE2's and Rust's `utf8-ranges`: split a code point range until every piece
encodes as a fixed list of byte ranges, one per byte position, whose product is exactly the
piece. Two splits are needed:

* by encoded length (1 to 4 bytes: boundaries U+007F, U+07FF, U+FFFF), since the lead byte's
  form changes there;
* within one length, at multiples of 64**k, so that the trailing k bytes either span all
  continuation values (`80-BF`) or the leading bytes are fixed. `U+0800..U+10FF` becomes
  `E0 A0-BF 80-BF` and `E1 80-83 80-BF`, not the wrong `E0-E1 80-BF 80-BF`.
"""

from __future__ import annotations

MAX_CODE_POINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)

# The last code point of each encoded length (1, 2, 3, 4 bytes).
_LENGTH_ENDS = (0x7F, 0x7FF, 0xFFFF, MAX_CODE_POINT)

ByteRanges = tuple[tuple[int, int], ...]  # one inclusive (lo, hi) byte range per position


def encode(code_point: int) -> bytes:
    """The UTF-8 encoding of one scalar value (surrogates have none)."""
    return chr(code_point).encode("utf-8")


def sequences(lo: int, hi: int) -> list[ByteRanges]:
    """Byte-range sequences whose encodings are exactly the scalar values in [lo, hi].

    Surrogates inside the range are left out; the sequences are disjoint and in code point
    order, so they are also in byte order.
    """
    out: list[ByteRanges] = []
    for a, b in _without_surrogates(max(lo, 0), min(hi, MAX_CODE_POINT)):
        start = a
        for end in _LENGTH_ENDS:
            if start > b:
                break
            if start <= end:
                _split(start, min(b, end), out)
                start = end + 1
    return out


def _without_surrogates(lo: int, hi: int) -> list[tuple[int, int]]:
    if lo > hi:
        return []
    s_lo, s_hi = SURROGATES
    if hi < s_lo or lo > s_hi:
        return [(lo, hi)]
    parts = []
    if lo < s_lo:
        parts.append((lo, s_lo - 1))
    if hi > s_hi:
        parts.append((s_hi + 1, hi))
    return parts


def _split(lo: int, hi: int, out: list[ByteRanges]) -> None:
    """[lo, hi] has one encoded length; split it until each byte position is a plain range."""
    for k in range(1, 4):
        mask = (1 << (6 * k)) - 1  # the bits of the last k continuation bytes
        if lo & ~mask != hi & ~mask:
            if lo & mask != 0:
                _split(lo, lo | mask, out)
                _split((lo | mask) + 1, hi, out)
                return
            if hi & mask != mask:
                _split(lo, (hi & ~mask) - 1, out)
                _split(hi & ~mask, hi, out)
                return
    out.append(tuple(zip(encode(lo), encode(hi), strict=True)))

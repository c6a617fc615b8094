"""`llmhood data inspect`: the data as the trainer will see it, before an hour is spent on it.

The commonest fine-tuning bugs are invisible in the loss: a template that trains the
prompt, an answer cut off by the sequence length, a format read wrongly so that rows are
dropped. Printing a few rows with their trained tokens marked, and the fate of every row,
shows them at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmhood.errors import LLMHoodError
from llmhood.registry import resolve
from llmhood.tokenizer import BPETokenizer
from llmhood.train import dataset
from llmhood.train.data import Example

TRAINED_COLOR, MASKED_COLOR, RESET = "\033[1;32m", "\033[2m", "\033[0m"


def read_tokenizer(model: str | Path) -> BPETokenizer:
    """A model's tokenizer without its weights: only what `data inspect` needs."""
    from llmhood.weights import detect_format, read_checkpoint
    from llmhood.weights.gguf import read_gguf

    path = resolve(model)
    fmt = detect_format(path)
    if fmt == "gguf":
        return BPETokenizer.from_gguf(read_gguf(path).metadata)
    if fmt == "hf" and (path / "tokenizer.json").is_file():
        return BPETokenizer.from_tokenizer_json(path / "tokenizer.json")
    tokenizer = read_checkpoint(path, progress=False).tokenizer
    if tokenizer is None:
        raise LLMHoodError(f"{path} has no tokenizer.")
    return tokenizer


def show(tokenizer: BPETokenizer, example: Example, color: bool) -> str:
    """The example's text, trained runs coloured (or in [brackets]), masked runs plain."""
    parts, run, state = [], [], None
    for token, trained in [*zip(example.ids, example.mask, strict=True), (None, None)]:
        if trained != state and run:
            text = tokenizer.decode(run)
            if color:
                parts.append((TRAINED_COLOR if state else MASKED_COLOR) + text + RESET)
            else:
                parts.append(f"[{text}]" if state else text)
            run = []
        state = trained
        if token is not None:
            run.append(token)
    return "".join(parts)


def inspect_data(
    path: str | Path,
    *,
    model: str | Path,
    fmt: str = "auto",
    stage: str = "sft",
    rows: int = 3,
    seq_len: int = 512,
    train_on_prompt: bool = False,
    color: bool = False,
    out=None,
) -> dataset.DataReport:
    """`out`: where to print (default: sys.stdout as it is when called, not at import)."""
    out = sys.stdout if out is None else out
    if rows < 0:
        raise LLMHoodError(f"--rows {rows} must be ≥ 0.")
    dataset.data_files(path)  # a missing file says so before the tokenizer loads
    tokenizer = read_tokenizer(model)
    if stage == "dpo":
        pairs, report = dataset.dpo_pairs(path, tokenizer, seq_len=seq_len)
        examples = [e for p in pairs for e in (p.chosen, p.rejected)]
    elif stage == "pretrain":
        examples, report = dataset.pretrain_examples(path, tokenizer, seq_len=seq_len)
    else:
        examples, report = dataset.sft_examples(
            path, tokenizer, fmt=fmt, seq_len=seq_len, train_on_prompt=train_on_prompt
        )
    legend = "trained tokens in green, masked dim" if color else "trained tokens in [brackets]"
    print(f"{path}: {legend}", file=out)
    for i, example in enumerate(examples[:rows]):
        print(f"\n--- example {i}: {len(example.ids)} tokens, {example.trained} trained", file=out)
        print(show(tokenizer, example, color), file=out)
    print("\n" + report.summary(), file=out)
    for dropped in report.dropped:
        print(f"dropped {dropped.where}: {dropped.reason}", file=out)
    return report

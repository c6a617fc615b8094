"""`llmhood info` and `llmhood tokenize`: what a model is, and how it reads text."""

from __future__ import annotations

import argparse
import json

from llmhood.cli import common
from llmhood.cli.common import add_model_options
from llmhood.model.config import attention_kind
from llmhood.model.parameters import parameter_counts
from llmhood.speed.cpu import cpu


def cmd_info(args: argparse.Namespace) -> None:
    llm = common.load_for(args)
    c, tok = llm.config, llm.tokenizer
    by_kind, by_layer = parameter_counts(llm.model.skeleton())
    total = sum(by_kind.values())
    attention = attention_kind(c.n_heads, c.n_kv_heads)
    if args.json:
        print(json.dumps({"source": llm.source, "config": c.as_dict(), "dtype": str(llm.dtype),
                          "mode": llm.mode.name, "decode_step": llm.model.decode_step is not None,
                          "cpu": cpu().as_dict(), "chat_sampling": llm.chat_settings.options,
                          "parameters": total, "by_kind": by_kind, "by_layer": by_layer,
                          "vocab_size": tok.vocab_size}, indent=2))  # fmt: skip
        return
    print(f"model        {llm.source}")
    print(f"architecture Llama: {c.n_layers} layers, dim {c.dim}, ffn {c.hidden_dim} (SwiGLU)")
    print(
        f"attention    {attention}: {c.n_heads} query heads, {c.n_kv_heads} KV heads, "
        f"head_dim {c.head_dim}"
    )
    scaling = c.rope_scaling
    scaled = f", {scaling.kind} scaling ×{scaling.factor:g}" if scaling else ", no scaling"
    if c.position_encoding == "rope":
        print(f"positions    RoPE, theta {c.rope_theta:g}, {c.rope_style} pairs{scaled}")
    else:
        print(f"positions    {c.position_encoding}")
    print(f"context      {c.max_seq_len} tokens")
    print(f"dtype        {str(llm.dtype).removeprefix('torch.')}")
    print(f"mode         {llm.mode.describe()}")
    step = "one C++ call per token" if llm.model.decode_step else "the Python blocks"
    print(f"decoding     {step} (llmhood.model.fast.decode_step)")
    print(f"cpu          {cpu().describe()}")
    print(f"chat         {llm.chat_settings.describe()}")
    print(f"output head  {'tied to the embedding' if c.tie_embeddings else 'separate'}")
    specials = len(tok.special_ids)
    print(f"tokenizer    byte-level BPE, {tok.vocab_size} tokens ({specials} special)")
    print(f"parameters   {total:,}")
    for kind, n in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<14}{n:>13,}  {100 * n / total:5.1f}%")
    print("per layer")
    for layer, n in sorted(by_layer.items()):
        print(f"  layer {layer:<8}{n:>13,}")


def cmd_tokenize(args: argparse.Namespace) -> None:
    llm = common.load_for(args)
    ids = llm.tokenizer.encode(args.text, add_bos=args.bos)
    pieces = [llm.tokenizer.id_to_piece(i) for i in ids]
    if args.json:
        print(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False))
        return
    print(f"{len(ids)} tokens")
    for i, piece in zip(ids, pieces, strict=True):
        print(f"{i:>8}  {piece!r}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="architecture, parameter counts, dtype, mode, CPU, tokenizer")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("tokenize", help="token ids and pieces of a text")
    p.add_argument("text")
    add_model_options(p)
    p.add_argument("--bos", action="store_true", help="prepend the BOS token")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_tokenize)

"""The `llmhood` command: one entry point, one subcommand per job.

Every subcommand takes --model (a name such as smollm2-135m, a .gguf file, or a Hugging
Face or Meta directory) and --dtype. Errors in what the user asked for are printed as one
paragraph and exit with status 1; there is no traceback unless something is truly broken.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence

from llmhood.errors import LLMHoodError
from llmhood.llm import DTYPES, LLM, load
from llmhood.registry import DEFAULT_MODEL, MODELS

DEMO_QUESTION = "What is the capital of France?"


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model name ({', '.join(MODELS)}), a .gguf file, or an HF/Meta checkpoint "
        f"directory (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", *DTYPES], help="compute dtype (default: auto)"
    )


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", type=int, default=256, help="default: 256")
    g.add_argument("--temperature", type=float, default=0.0, help="0 means greedy (the default)")
    g.add_argument("--top-k", type=int, default=None, help="keep the k likeliest tokens")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    g.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p × p_max")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats")
    g.add_argument("--seed", type=int, default=0, help="makes sampled output reproducible")
    g.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)"
    )


def sampling_options(args: argparse.Namespace) -> dict:
    return dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=args.stop,
    )


def load_for(args: argparse.Namespace) -> LLM:
    return load(args.model, dtype=args.dtype)


def print_stream(pieces: Iterator[str]) -> str:
    text = []
    for piece in pieces:
        print(piece, end="", flush=True)
        text.append(piece)
    print()
    return "".join(text)


# ---- info ---------------------------------------------------------------------------------


def parameter_table(llm: LLM) -> tuple[dict[str, int], dict[int, int]]:
    """Unique parameters by kind of module, and by layer."""
    by_kind: dict[str, int] = defaultdict(int)
    by_layer: dict[int, int] = defaultdict(int)
    kinds = {
        "wq": "attention q", "wk": "attention k", "wv": "attention v", "wo": "attention o",
        "w1": "ffn gate", "w3": "ffn up", "w2": "ffn down",
        "attention_norm": "norms", "ffn_norm": "norms",
    }  # fmt: skip
    seen: set[int] = set()
    for name, p in llm.model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        parts = name.split(".")
        if parts[0] == "layers":
            by_layer[int(parts[1])] += p.numel()
            by_kind[kinds[parts[-2]]] += p.numel()
        else:
            by_kind[
                {"tok_embeddings": "embedding", "norm": "norms", "output": "output head"}[parts[0]]
            ] += p.numel()
    return dict(by_kind), dict(by_layer)


def cmd_info(args: argparse.Namespace) -> None:
    llm = load_for(args)
    c, tok = llm.config, llm.tokenizer
    by_kind, by_layer = parameter_table(llm)
    total = sum(by_kind.values())
    attention = "MHA" if c.n_kv_heads == c.n_heads else "MQA" if c.n_kv_heads == 1 else "GQA"
    if args.json:
        print(json.dumps({"source": llm.source, "config": c.as_dict(), "dtype": str(llm.dtype),
                          "parameters": total, "by_kind": by_kind, "by_layer": by_layer,
                          "vocab_size": tok.vocab_size}, indent=2))  # fmt: skip
        return
    print(f"model        {llm.source}")
    print(f"architecture Llama: {c.n_layers} layers, dim {c.dim}, ffn {c.hidden_dim} (SwiGLU)")
    print(
        f"attention    {attention}: {c.n_heads} query heads, {c.n_kv_heads} KV heads, "
        f"head_dim {c.head_dim}"
    )
    print(f"rope         theta {c.rope_theta:g}, {c.rope_style} pairs")
    print(f"context      {c.max_seq_len} tokens")
    print(f"dtype        {str(llm.dtype).removeprefix('torch.')}")
    print(f"output head  {'tied to the embedding' if c.tie_embeddings else 'separate'}")
    specials = len(tok.special_ids)
    print(f"tokenizer    byte-level BPE, {tok.vocab_size} tokens ({specials} special)")
    print(f"parameters   {total:,}")
    for kind, n in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<14}{n:>13,}  {100 * n / total:5.1f}%")
    print("per layer")
    for layer, n in sorted(by_layer.items()):
        print(f"  layer {layer:<8}{n:>13,}")


# ---- tokenize -----------------------------------------------------------------------------


def cmd_tokenize(args: argparse.Namespace) -> None:
    llm = load_for(args)
    ids = llm.tokenizer.encode(args.text, add_bos=args.bos)
    pieces = [llm.tokenizer.id_to_piece(i) for i in ids]
    if args.json:
        print(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False))
        return
    print(f"{len(ids)} tokens")
    for i, piece in zip(ids, pieces, strict=True):
        print(f"{i:>8}  {piece!r}")


# ---- generate and chat --------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> None:
    llm = load_for(args)
    prompt = args.prompt
    options = sampling_options(args)
    if args.chat:
        prompt = llm.chat_prompt([{"role": "user", "content": prompt}])
        options["add_bos"] = False
    if args.no_stream:
        print(llm.generate(prompt, **options)[0].text)
    else:
        print_stream(llm.stream(prompt, **options))


def cmd_chat(args: argparse.Namespace) -> None:
    llm = load_for(args)
    options = sampling_options(args)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    print("Chatting with", llm.source, "- /reset clears the history, /exit or Ctrl-D quits.")
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                print()
                return
            if line.strip() == "/exit":
                return
            if line.strip() == "/reset":
                history = list(system)
                print("(history cleared)")
                continue
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
            print("bot> ", end="", flush=True)
            reply = print_stream(llm.stream_chat(history, **options))
            history.append({"role": "assistant", "content": reply})
    except KeyboardInterrupt:
        print()


# ---- demo ---------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> None:
    llm = load_for(args)
    c = llm.config
    print(
        f"Loaded {llm.source} in {llm.load_seconds:.1f} s: {llm.model.num_parameters():,} "
        f"parameters, {c.n_layers} layers, {c.n_heads} query / {c.n_kv_heads} KV heads."
    )
    print(f"\nyou> {DEMO_QUESTION}\nbot> ", end="", flush=True)
    messages = [{"role": "user", "content": DEMO_QUESTION}]
    print_stream(llm.stream_chat(messages, max_new_tokens=64))
    print(
        "\nWhat to try next:\n"
        "  .venv/bin/llmhood chat                       talk to the model\n"
        "  .venv/bin/llmhood info                       its architecture and parameter counts\n"
        "  .venv/bin/llmhood tokenize 'Hello, 世界!'     see the byte-level BPE at work\n"
        "  .venv/bin/llmhood generate 'Once upon a time' --temperature 0.8 --top-p 0.9\n"
        "  make test                                    the proof against transformers"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmhood", description="A hand-written Llama you can open up and look inside."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="architecture, parameter counts, dtype, context, tokenizer")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("tokenize", help="token ids and pieces of a text")
    p.add_argument("text")
    add_model_options(p)
    p.add_argument("--bos", action="store_true", help="prepend the BOS token")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("generate", help="continue a prompt (streams by default)")
    p.add_argument("prompt")
    add_model_options(p)
    add_sampling_options(p)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--no-stream", action="store_true", help="print the text when done")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive chat with history")
    add_model_options(p)
    add_sampling_options(p)
    p.add_argument("--system", default=None, help="system prompt")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("demo", help="load the default model and answer one question")
    add_model_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LLMHoodError as e:
        print(f"llmhood: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

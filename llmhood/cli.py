"""The `llmhood` command: one entry point, one subcommand per job.

Every subcommand takes --model (a name such as smollm2-135m, a .gguf file, or a Hugging
Face or Meta directory) and --dtype. Errors in what the user asked for are printed as one
paragraph and exit with status 1; there is no traceback unless something is truly broken.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from llmhood import bench  # light: transformers and llama.cpp are imported by its children
from llmhood.errors import LLMHoodError
from llmhood.generate import DEFAULT_BATCH_SIZE, check_batch_size
from llmhood.generate.prompt_file import EXAMPLE, FilePrompt, read_prompts
from llmhood.llm import DTYPES, LLM, load
from llmhood.model.config import attention_kind
from llmhood.model.parameters import parameter_counts
from llmhood.modes import QUANTIZE
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
    g = parser.add_argument_group("speed modes (llmhood.modes; default: the fastest that passes)")
    g.add_argument("--quantize", default="auto", choices=["auto", "none", *QUANTIZE])
    g.add_argument("--no-fuse", action="store_true", help="separate q/k/v and gate/up matmuls")
    g.add_argument("--no-dense", action="store_true", help="int4: no bf16 copy for prefill")
    g.add_argument(
        "--no-decode-step", action="store_true", help="decode through the Python blocks, not C++"
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
    quantize = None if args.quantize == "none" else args.quantize
    fuse = False if args.no_fuse else None
    dense = False if args.no_dense else None
    decode_step = False if args.no_decode_step else None
    return load(
        args.model,
        dtype=args.dtype,
        quantize=quantize,
        fuse=fuse,
        dense=dense,
        decode_step=decode_step,
    )


def print_stream(pieces: Iterator[str]) -> str:
    text = []
    for piece in pieces:
        print(piece, end="", flush=True)
        text.append(piece)
    print()
    return "".join(text)


# ---- info ---------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> None:
    llm = load_for(args)
    c, tok = llm.config, llm.tokenizer
    by_kind, by_layer = parameter_counts(llm.model.skeleton())
    total = sum(by_kind.values())
    attention = attention_kind(c.n_heads, c.n_kv_heads)
    if args.json:
        print(json.dumps({"source": llm.source, "config": c.as_dict(), "dtype": str(llm.dtype),
                          "mode": llm.mode.name, "decode_step": llm.model.decode_step is not None,
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
    print(f"decoding     {step} (llmhood.model.decode_step)")
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


def generate_prompts(args: argparse.Namespace) -> list[FilePrompt]:
    """The prompt argument or the --prompts-file, checked before the model loads."""
    if (args.prompt is None) == (args.prompts_file is None):
        raise LLMHoodError(
            "Give one prompt, or --prompts-file PATH (one prompt per line, or a .jsonl file "
            f"with one object such as {EXAMPLE} per line); this command had "
            + ("both." if args.prompt is not None else "neither.")
        )
    check_batch_size(args.batch_size)
    if args.prompts_file is None:
        return [FilePrompt(0, args.prompt)]
    return read_prompts(args.prompts_file)


def cmd_generate(args: argparse.Namespace) -> None:
    prompts = generate_prompts(args)
    llm = load_for(args)
    options = sampling_options(args)
    texts = [p.text for p in prompts]
    if args.chat:
        texts = [llm.chat_prompt([{"role": "user", "content": text}]) for text in texts]
        options["add_bos"] = False
    if args.prompts_file is None and not args.json:
        if args.no_stream:
            print(llm.generate(texts[0], **options)[0].text)
        else:
            print_stream(llm.stream(texts[0], **options))
        return
    results = llm.generate(texts, batch_size=args.batch_size, **options)
    for i, (prompt, result) in enumerate(zip(prompts, results, strict=True)):
        if args.json:
            where = {} if args.prompts_file is None else {"line": prompt.line}
            record = {"index": i, **where, "prompt": prompt.text, **asdict(result)}
            print(json.dumps(record, ensure_ascii=False))
            continue
        # Prompts count from 0, as in error messages; blank lines of the file are skipped.
        preview = prompt.text if len(prompt.text) <= 60 else prompt.text[:59] + "…"
        if i:
            print()
        print(f"### prompt {i} (line {prompt.line}): {preview!r}")
        print(result.text)


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


# ---- bench --------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> None:
    from llmhood.registry import resolve

    path = resolve(args.model)
    if path.is_dir() or path.suffix != ".gguf":
        raise LLMHoodError(
            f"llmhood bench needs a .gguf file (all three engines read it); {path} is not one."
        )
    if args.profile:
        print(bench.profile_decode(path))
        return
    engines = bench.ENGINES
    if args.engines:
        engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    report = bench.run(
        path, args.repeat, args.quick, engines, quality=not args.no_quality,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    print(bench.format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(bench.to_json(report), indent=2) + "\n")


# ---- plot ---------------------------------------------------------------------------------


def plot_path(args: argparse.Namespace, stem: str) -> Path:
    """Where the picture goes: --out as a file, or `stem`.<format> inside --out (a directory)
    or inside plots/."""
    fmt = args.format
    out = Path(args.out) if args.out else Path("plots")
    if args.out is None or out.is_dir() or args.out.endswith(("/", "\\")):
        return out / f"{stem}.{fmt or 'png'}"
    suffix = out.suffix.lstrip(".").lower()
    if not suffix:
        return out.with_name(f"{out.name}.{fmt or 'png'}")
    if fmt and suffix != fmt.lower():
        raise LLMHoodError(
            f"--out {out} ends in .{suffix} but --format asks for {fmt}; give one or make them "
            "agree."
        )
    return out


def cmd_plot(args: argparse.Namespace) -> None:
    from llmhood import plot  # matplotlib is loaded for this command only
    from llmhood.plot.figure import token_label

    if args.quantize == "auto":  # plots show the weights themselves, not a packed form
        args.quantize = "none"
    llm = load_for(args)
    kind = args.kind
    options = {k: v for k, v in vars(args).items() if k in plot.MAKE_OPTIONS}
    result, stem = plot.make(llm, kind, Path(args.model).name, **options)
    path = plot_path(args, stem)
    # Where --row looks is checked before anything is written, so a typo writes nothing.
    rows = plot.top_keys(result.table, args.row, args.k) if kind == "attention" and args.row else []
    print(result.save(path))
    if args.csv:
        result.table.to_csv(args.csv)
    if rows:
        print(f"the {args.k} keys each head of layer {args.layer} attends to most:")
    for entry in rows:
        keys = ", ".join(f"{token_label(t)} {w:.2f}" for _, t, w in entry["keys"])
        print(f"  {args.row} (position {entry['query_position']}) head {entry['head']}: {keys}")


def add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw the model's insides to a PNG or SVG file")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    def kind_parser(kind: str, help: str, text: bool = False) -> argparse.ArgumentParser:
        k = kinds.add_parser(kind, help=help, description=help)
        if text:
            k.add_argument("text", help="the text to run through the model")
        add_model_options(k)
        k.add_argument("--out", default=None, help="file or directory (default: plots/KIND.png)")
        k.add_argument("--format", default=None, help="png (default) or svg")
        k.add_argument("--csv", default=None, metavar="PATH", help="also write the numbers")
        k.set_defaults(func=cmd_plot)
        return k

    k = kind_parser("params", "parameter counts by module and layer, weight histograms")
    k.add_argument(
        "--synthetic-untied", action="store_true",
        help="count a same-shaped model with an untied output head instead (no weights loaded)",
    )  # fmt: skip
    k = kind_parser("rope", "RoPE angles per channel pair, and the scaling schemes")
    k.add_argument("--position", type=int, default=100, help="the position m (default: 100)")
    k.add_argument("--factor", type=float, default=4.0, help="context scaling factor (default: 4)")
    k = kind_parser("attention", "attention weights of one layer as heatmaps", text=True)
    k.add_argument("--layer", type=int, required=True, help="the layer, from 0")
    k.add_argument("--head", type=int, default=None, help="one head (default: all, in a grid)")
    k.add_argument("--row", default=None, metavar="TOKEN", help="print where TOKEN looks most")
    k.add_argument("-k", type=int, default=3, help="how many keys --row prints (default: 3)")
    kind_parser("logit-lens", "the top next-token guess after every block", text=True)
    kind_parser("residual", "the residual stream's norm after every block", text=True)
    k = kind_parser("kv-cache", "KV-cache memory of MHA, GQA and MQA against context length")
    k.add_argument("--max-context", type=int, default=None, help="default: the model's context")


# ---- experiments --------------------------------------------------------------------------


def cmd_long_context(args: argparse.Namespace) -> None:
    from llmhood.experiments import long_context

    llm = load_for(args)
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    print(
        f"Reading {args.length} tokens of Python's documentation per scheme ({', '.join(schemes)}),"
        f" {args.chunk} at a time; trained context {llm.config.max_seq_len}.",
        file=sys.stderr,
    )
    result = long_context.run(llm, args.length, args.chunk, args.bucket, schemes)
    print(long_context.summary(result))
    figure = long_context.plot(result, Path(args.model).name)
    print(figure.save(plot_path(args, "long-context")))
    if args.csv:
        figure.table.to_csv(args.csv)


def cmd_cope_counting(args: argparse.Namespace) -> None:
    from llmhood.experiments import cope_counting

    results = cope_counting.run(args.steps, args.layers, args.seed)
    print(f"k-th last marker, {args.layers} layer(s), {args.steps} steps, chance 0.125")
    print(cope_counting.table(results))


def add_experiment_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="runnable experiments that measure an idea")
    names = p.add_subparsers(dest="name", required=True, metavar="NAME")

    e = names.add_parser(
        "long-context",
        help="perplexity by position past the trained context, with RoPE scaling schemes",
        description="Perplexity by position on Python's documentation (pydoc_data.topics), "
        "read past the trained context with no scaling, PI (linear), NTK and YaRN.",
    )
    add_model_options(e)
    e.add_argument("--length", type=int, default=16384, help="tokens to read (default: 16384)")
    e.add_argument("--chunk", type=int, default=1024, help="tokens per forward (default: 1024)")
    e.add_argument("--bucket", type=int, default=1024, help="positions per point (default: 1024)")
    e.add_argument(
        "--schemes", default="none,linear,ntk,yarn", help="comma-separated (default: all four)"
    )
    e.add_argument("--out", default=None, help="picture file or directory (default: plots/)")
    e.add_argument("--format", default=None, help="png (default) or svg")
    e.add_argument("--csv", default=None, metavar="PATH", help="also write the numbers")
    e.set_defaults(func=cmd_long_context)

    e = names.add_parser(
        "cope-counting",
        help="CoPE vs RoPE vs no position encoding on finding the k-th last marker",
        description="Train tiny models from scratch with CoPE, RoPE and no position "
        "encoding, and score them on a counting task at 1× and 2× the training length.",
    )
    e.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    e.add_argument("--layers", type=int, default=1, help="layers (default: 1)")
    e.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    e.set_defaults(func=cmd_cope_counting)


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

    p = sub.add_parser("generate", help="continue a prompt (streams by default), or many")
    p.add_argument("prompt", nargs="?", default=None, help="the text to continue")
    add_model_options(p)
    add_sampling_options(p)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--no-stream", action="store_true", help="print the text when done")
    p.add_argument(
        "--prompts-file", default=None, metavar="PATH",
        help='many prompts: one per line, or JSON Lines with a "prompt" field (.jsonl); '
        "results are printed per prompt when all are done",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
        help=f"prompts that run together (default: {DEFAULT_BATCH_SIZE})",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object per prompt and line")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive chat with history")
    add_model_options(p)
    add_sampling_options(p)
    p.add_argument("--system", default=None, help="system prompt")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("demo", help="load the default model and answer one question")
    add_model_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="speed against transformers and llama.cpp, side by side")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a model name or a .gguf file")
    p.add_argument("--repeat", type=int, default=3, help="runs per engine; medians (default: 3)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="tiny workloads: a smoke test, seconds")
    p.add_argument(
        "--engines", default=None, metavar="LIST",
        help=f"comma-separated subset of: {', '.join(bench.ENGINES)} (default: all)",
    )  # fmt: skip
    p.add_argument("--no-quality", action="store_true", help="skip the perplexity table")
    p.add_argument(
        "--profile", action="store_true",
        help="instead: where llmhood's decode steps spend their time (torch.profiler)",
    )  # fmt: skip
    p.set_defaults(func=cmd_bench)

    add_plot_parser(sub)
    add_experiment_parser(sub)
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

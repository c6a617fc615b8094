"""What several commands share: the model and sampling options, checked before any load,
loading, streaming to the terminal, and where pictures go."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from llmhood.errors import LLMHoodError
from llmhood.generate import SamplingParams
from llmhood.generate.chat_settings import MEASURED
from llmhood.llm import DTYPES, LLM, load
from llmhood.registry import DEFAULT_MODEL, MODELS, resolve
from llmhood.speed.modes import QUANTIZE, requested

SAMPLING = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")


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
    g = parser.add_argument_group(
        "speed modes (llmhood.speed.modes; default: the fastest that passes)"
    )
    g.add_argument("--quantize", default="auto", choices=["auto", "none", *QUANTIZE])
    g.add_argument("--no-fuse", action="store_true", help="separate q/k/v and gate/up matmuls")
    g.add_argument("--no-dense", action="store_true", help="int4: no bf16 copy for prefill")
    g.add_argument(
        "--no-decode-step", action="store_true", help="decode through the Python blocks, not C++"
    )


def add_sampling_options(parser: argparse.ArgumentParser, chat: bool = False) -> None:
    """The sampling flags. For chat, the sampling ones default to None: the model's own
    recommended settings, or llmhood's measured ones (llmhood.generate.chat_settings)."""
    g = parser.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", type=int, default=256, help="default: 256")
    if chat:
        g.description = (
            "Defaults: the model's recommended settings where its checkpoint has them, else "
            + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in MEASURED.items())
            + " (measured to loop least: llmhood experiment chat-loops); `llmhood info` says "
            "which. --temperature 0 decodes greedily."
        )
    temperature = "default: see above" if chat else "0 means greedy (the default)"
    g.add_argument("--temperature", type=float, default=None if chat else 0.0, help=temperature)
    g.add_argument("--top-k", type=int, default=None, help="keep the k likeliest tokens")
    g.add_argument(
        "--top-p", type=float, default=None if chat else 1.0,
        help="nucleus sampling mass, in (0, 1]" + ("" if chat else " (default: 1, off)"),
    )  # fmt: skip
    g.add_argument(
        "--min-p", type=float, default=None if chat else 0.0,
        help="drop tokens below min_p × p_max" + ("" if chat else " (default: 0, off)"),
    )  # fmt: skip
    g.add_argument(
        "--repetition-penalty", type=float, default=None if chat else 1.0,
        help="> 1 discourages repeats" + ("" if chat else " (default: 1, off)"),
    )  # fmt: skip
    g.add_argument("--seed", type=int, default=0, help="makes sampled output reproducible")
    g.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)"
    )


def sampling_options(args: argparse.Namespace) -> dict:
    """The sampling options the user gave (for chat, None ones are left to the model's
    settings), checked now: a bad value must not wait for the model to load."""
    given = {name: getattr(args, name) for name in SAMPLING if getattr(args, name) is not None}
    SamplingParams(**given).validate()
    if args.max_new_tokens < 1:
        raise LLMHoodError(
            f"--max-new-tokens {args.max_new_tokens} is invalid: it is the number of tokens to "
            "generate and must be at least 1."
        )
    return {**given, "max_new_tokens": args.max_new_tokens, "stop": args.stop}


def mode_options(args: argparse.Namespace) -> dict:
    """The model and mode options as `llmhood.load` takes them, checked without loading."""
    options = dict(
        model=args.model,
        dtype=args.dtype,
        quantize=None if args.quantize == "none" else args.quantize,
        fuse=False if args.no_fuse else None,
        dense=False if args.no_dense else None,
        decode_step=False if args.no_decode_step else None,
    )
    resolve(args.model)  # a missing file or an uninstalled model package says so now
    requested(options["dtype"], options["quantize"], options["fuse"], options["dense"])
    if getattr(args, "adapter", None):
        from llmhood.train.adapter import adapter_dir

        adapter_dir(args.adapter)  # a wrong path says so before the base loads
        options = {"model": args.model, "adapter": args.adapter, "dtype": args.dtype,
                   "quantize": options["quantize"]}  # fmt: skip
    return options


def add_adapter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--adapter", default=None, metavar="DIR",
        help="run a fine-tuned adapter on the base: a run directory of `llmhood train`, its "
        "adapter/, or a peft adapter directory (the base defaults to the one it names)",
    )  # fmt: skip


def load_for(args: argparse.Namespace) -> LLM:
    return load(**mode_options(args))


def comma_list(text: str) -> list[str]:
    """A comma-separated option's items, blanks dropped: "a, b," -> ["a", "b"]."""
    return [part.strip() for part in text.split(",") if part.strip()]


def print_stream(pieces: Iterator[str]) -> str:
    text = []
    for piece in pieces:
        print(piece, end="", flush=True)
        text.append(piece)
    print()
    return "".join(text)


def add_picture_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--out", default=None, help=f"file or directory (default: {default})")
    parser.add_argument("--format", default=None, help="png (default) or svg")
    parser.add_argument("--csv", default=None, metavar="PATH", help="also write the numbers")


def picture_path(args: argparse.Namespace, stem: str) -> Path:
    """Where the picture goes: --out as a file, or `stem`.<format> inside --out (a directory)
    or inside plots/. Checked before any model loads: a wrong --out costs nothing."""
    fmt = args.format
    if fmt is not None and fmt.lower() not in ("png", "svg"):
        raise LLMHoodError(f"--format {fmt} is not one llmhood writes; use png or svg.")
    out = Path(args.out) if args.out else Path("plots")
    if args.out is None or out.is_dir() or args.out.endswith(("/", "\\")):
        return out / f"{stem}.{fmt or 'png'}"
    suffix = out.suffix.lstrip(".").lower()
    if not suffix:
        return out.with_name(f"{out.name}.{fmt or 'png'}")
    if suffix not in ("png", "svg"):
        raise LLMHoodError(
            f"Cannot save a picture as '{out.name}': the file name must end in .png or .svg."
        )
    if fmt and suffix != fmt.lower():
        raise LLMHoodError(
            f"--out {out} ends in .{suffix} but --format asks for {fmt}; give one or make them "
            "agree."
        )
    return out

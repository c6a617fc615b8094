"""`llmhood plot KIND`: pictures of the model's insides (llmhood.plot)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmhood.cli import common
from llmhood.cli.common import add_model_options, add_picture_options, picture_path


def cmd_plot(args: argparse.Namespace) -> None:
    from llmhood import plot  # matplotlib is loaded for this command only
    from llmhood.plot.figure import token_label

    if args.quantize == "auto":  # plots show the weights themselves, not a packed form
        args.quantize = "none"
    picture_path(args, args.kind)  # a bad --out or --format fails before the model loads
    llm = common.load_for(args)
    kind = args.kind
    options = {k: v for k, v in vars(args).items() if k in plot.MAKE_OPTIONS}
    result, stem = plot.make(llm, kind, Path(args.model).name, **options)
    path = picture_path(args, stem)
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw the model's insides to a PNG or SVG file")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    def kind_parser(kind: str, help: str, text: bool = False) -> argparse.ArgumentParser:
        k = kinds.add_parser(kind, help=help, description=help)
        if text:
            k.add_argument("text", help="the text to run through the model")
        add_model_options(k)
        add_picture_options(k, "plots/KIND.png")
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

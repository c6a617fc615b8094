"""`llmhood demo finetune`: teach SmolLM2-135M-Instruct a new name with LoRA, on a CPU, in minutes.

The demo people try first, so it shows the whole loop and the evidence, not only a loss:

    write the identity rows (llmhood.train.identity) to <out>/identity.jsonl
      -> ask the base "Who are you?" (and two held-out paraphrases), greedy, chat template
      -> perplexity of the base on a held-out real text (Python's docs, llmhood.perplexity)
      -> train a LoRA adapter (llmhood.train.trainer, its progress bar, its loss curve)
      -> ask the base + adapter the same questions, and the same perplexity again

Both models run through `llmhood.load` in float32 (the adapter runs on the float32 base, so
the base is loaded the same way): the before and after numbers then differ by the adapter
alone, not by a speed mode's rounding. Replies are greedy, so a run is reproducible, and
each says whether it ended with the end-of-turn token: a fine-tuned model that names itself
but never stops talking has learnt half of its lesson. The perplexity shows what the new
identity cost: a model that forgot how to read ordinary text would read the docs worse.

The hyperparameters (DEMO) were tuned on the real model on a 2-core CPU so that the whole
command, loading and evaluation included, stays well inside ten minutes; DEMO's comment
lists what was tried and what it gave.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmhood.errors import LLMHoodError
from llmhood.registry import DEFAULT_MODEL, resolve
from llmhood.train.config import TrainConfig
from llmhood.train.identity import (
    DEFAULT_MAKER,
    DEFAULT_NAME,
    WHO_ARE_YOU,
    has_cjk,
    heldout_questions,
    mentions_identity,
    training_rows,
)

DEFAULT_OUT = "runs/finetune-demo"
END_OF_TURN = "<|im_end|>"
MAX_NEW_TOKENS = 64  # every trained answer is one to three sentences: 64 tokens is ample
HELDOUT_TOKENS = 1024  # of the held-out text: two 512-token chunks, seconds in float32
MARKER = "demo.json"  # what marks a directory as this demo's run, safe to replace
DATA = "identity.jsonl"
# What a demo run writes (the trainer: config, log, loss curve, checkpoints, adapter): what a
# later run replaces.
RUN_FILES = (MARKER, DATA, "config.json", "log.jsonl", "loss.png", "checkpoints", "adapter")

# The training run, tuned on SmolLM2-135M-Instruct with the default identity (seed 0; greedy
# replies to "Who are you?" and the ten held-out questions; perplexity on the first 1024 tokens
# of Python's docs, 12.742 for the base):
#   lr 2e-4, batch 4 × 512, 3 epochs (15 steps): still SmolLM, Chinese replies loop; 12.694
#   lr 1e-3, batch 2 × 256, 3 epochs (54 steps): "I'm Hoodie, an AI assistant made by the
#     llmhood project.<|im_end|>", 9 of 10 held-out name Hoodie, 10 end; 13.020 (+2.2%)
#   the same without dropout: the same replies, 13.028 (+2.2%), and no dropout masks to draw
#   lr 1.5e-3, 2 epochs (36 steps): 9 of 10, 10 end; 13.144 (+3.2%)
#   lr 2e-3, 1 epoch (18 steps): 9 of 10 (8 with seed 1), less fluent; 13.602 (+6.7%)
# Batches of 2 packed 256-token sequences (about 8 rows) give 18 steps an epoch, where
# 4 × 512 gives 5: a step's cost is its tokens, so smaller batches buy more updates for the
# same compute. Without activation checkpointing no block runs twice; 256 tokens of 135M
# parameters fit in memory easily. The held-out question the model misses is "Which team
# trained you?", answered "I was trained by the llmhood project.": right, but unnamed.
DEMO: dict[str, Any] = dict(
    epochs=3.0,
    lr=1e-3,
    rank=8,
    alpha=16.0,
    dropout=0.0,
    batch_size=2,
    seq_len=256,
    pack=True,
    warmup=0.1,
    grad_checkpointing=False,
    eval_split=0,
    save_every=0,
)


@dataclass(frozen=True)
class Reply:
    """One greedy answer, and whether it stopped at the end-of-turn token (not the limit)."""

    question: str
    text: str
    ended: bool
    names: bool  # whether it names the new identity

    def show(self) -> str:
        end = END_OF_TURN if self.ended else f"… (no {END_OF_TURN} in {MAX_NEW_TOKENS} tokens)"
        return f"you> {self.question}\nbot> {self.text}{end}"


@dataclass
class Stage:
    """What the demo measured on one model: before or after training."""

    replies: list[Reply]
    perplexity: float

    @property
    def who(self) -> Reply:
        return self.replies[0]


@dataclass
class DemoResult:
    out: Path
    data: Path
    before: Stage
    after: Stage
    adapter: Path
    loss_plot: Path | None
    steps: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def perplexity_change(self) -> float:
        """The held-out perplexity's relative change, e.g. 0.03 for 3% higher after training."""
        return self.after.perplexity / self.before.perplexity - 1


def demo_questions() -> list[str]:
    """`WHO_ARE_YOU` and two held-out paraphrases, one English and one Chinese: the first of
    each language among `heldout_questions`, so that both languages are seen to generalise."""
    held = heldout_questions()
    english = next(q for q in held if not has_cjk(q))
    chinese = next(q for q in held if has_cjk(q))
    return [WHO_ARE_YOU, english, chinese]


def train_config(
    out: Path,
    data: Path,
    *,
    model: str = DEFAULT_MODEL,
    epochs: float | None = None,
    steps: int = 0,
    seed: int = 0,
    **changes: Any,
) -> TrainConfig:
    """The demo's TrainConfig: DEMO's settings, the run's paths, the user's length, and any
    other TrainConfig field in `changes` (the real test trains shorter and faster)."""
    options = {**DEMO, **changes, "model": model, "data": str(data), "out": str(out),
               "seed": seed}  # fmt: skip
    if epochs is not None:
        options["epochs"] = epochs
    options["max_steps"] = steps
    return TrainConfig(**options)


def check_options(
    name: str, maker: str, maker_zh: str | None, epochs: float | None, steps: int
) -> None:
    """Everything wrong with the options, said before anything loads."""
    for flag, value in (("--name", name), ("--maker", maker), ("--maker-zh", maker_zh)):
        if value is not None and not value.strip():
            raise LLMHoodError(f"{flag} must not be empty: the model is taught to say it.")
    if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
        raise LLMHoodError(f"--epochs {epochs} must be a number > 0.")
    if steps < 0:
        raise LLMHoodError(f"--steps {steps} must be ≥ 0 (0: as many as --epochs make).")
    if epochs is not None and steps:
        raise LLMHoodError("Give --epochs or --steps, not both: each sets how long it trains.")


def prepare_out(out: Path) -> None:
    """A fresh run directory. A previous run of this demo there (its marker file says so) is
    replaced, so that `make finetune-demo` can run again: the files the demo and the trainer
    wrote go, anything else (an export, notes) stays. Any other non-empty directory is refused."""
    if out.exists() and not out.is_dir():
        raise LLMHoodError(f"--out {out} is a file; give a directory for the run.")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise LLMHoodError(
                f"--out {out} already holds files that are not this demo's; give a new or empty "
                "directory."
            )
        print(f"Replacing the previous demo run in {out}.", file=sys.stderr)
        for entry in RUN_FILES:
            path = out / entry
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_data(path: Path, name: str, maker: str, maker_zh: str | None, seed: int) -> Path:
    """The identity rows as JSON Lines: the file the trainer reads, and one to look at."""
    rows = training_rows(name, maker, maker_zh, seed=seed)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")
    return path


def ask(llm: Any, questions: Sequence[str], name: str) -> list[Reply]:
    """Greedy replies through the chat template (no system turn: SmolLM2's default one is
    what the new identity must override), all questions in one batch.

    Only <|im_end|> stops a reply, not every stop token `llm.generate` knows, so that
    `ended` says exactly what the test asks: the reply ended with the end-of-turn token."""
    from llmhood.generate import SamplingParams, generate

    stop = llm.tokenizer.token_to_id(END_OF_TURN)
    stops = {stop} if stop is not None else llm.stop_token_ids
    prompts = [llm.chat_prompt([{"role": "user", "content": q}]) for q in questions]
    ids = llm.encode_prompts(prompts, add_bos=False)
    results = generate(llm.model, llm.tokenizer, ids, MAX_NEW_TOKENS, SamplingParams(0.0), stops)
    return [Reply(q, r.text.strip(), r.finish_reason == "eos", mentions_identity(r.text, name))
            for q, r in zip(questions, results, strict=True)]  # fmt: skip


def heldout_perplexity(llm: Any, n: int | None = None) -> float:
    """Perplexity on the first `n` (HELDOUT_TOKENS) tokens of Python's docs, fewer if the
    model's context is shorter: text the identity rows never touch, so a rise is forgetting."""
    from llmhood.perplexity import guard_tokens, perplexity

    n = HELDOUT_TOKENS if n is None else n
    tokens = guard_tokens(llm.tokenizer, min(n, llm.config.max_seq_len))
    return perplexity(llm.model, tokens).value


def measure(llm: Any, questions: Sequence[str], name: str) -> Stage:
    return Stage(ask(llm, questions, name), heldout_perplexity(llm))


def run_demo(
    *,
    name: str = DEFAULT_NAME,
    maker: str = DEFAULT_MAKER,
    maker_zh: str | None = None,
    out: str | Path = DEFAULT_OUT,
    model: str = DEFAULT_MODEL,
    epochs: float | None = None,
    steps: int = 0,
    seed: int = 0,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """The whole demo; `say` prints each part as soon as it is known."""
    import llmhood
    from llmhood.train.trainer import train

    check_options(name, maker, maker_zh, epochs, steps)
    name, maker = name.strip(), maker.strip()
    out = Path(out)
    config = train_config(out, out / DATA, model=model, epochs=epochs, steps=steps,
                          seed=seed)  # fmt: skip
    config.validate()
    resolve(model)  # a missing file or model package says so before the directory is touched
    prepare_out(out)
    _save(out, {"name": name, "maker": maker, "train": config.to_dict()})  # marks it ours
    started = time.perf_counter()
    timings: dict[str, float] = {}
    data = write_data(out / DATA, name, maker, maker_zh, seed)
    rows = sum(1 for _ in data.open(encoding="utf-8"))
    say(f"Teaching {model} to answer as {name}, made by {maker}: {rows} rows in {data}.")
    questions = demo_questions()

    tick = time.perf_counter()
    base = llmhood.load(model, dtype="float32", progress=progress)
    before = measure(base, questions, name)
    del base
    timings["before"] = time.perf_counter() - tick
    say(f"\nBefore (the base, greedy):\n{before.who.show()}")
    say(f"held-out perplexity (first {HELDOUT_TOKENS} tokens of Python's docs): "
        f"{before.perplexity:.3f}")  # fmt: skip

    say(f"\nTraining a LoRA adapter: {_settings(config)}")
    tick = time.perf_counter()
    result = train(config, progress=progress)
    timings["train"] = time.perf_counter() - tick

    tick = time.perf_counter()
    tuned = llmhood.load(model, adapter=out, progress=progress)
    after = measure(tuned, questions, name)
    del tuned
    timings["after"] = time.perf_counter() - tick
    seconds = time.perf_counter() - started
    demo = DemoResult(out, data, before, after, result.final, result.loss_plot, result.steps,
                      seconds, timings)  # fmt: skip
    rounded = {k: round(v, 1) for k, v in timings.items()}
    _save(out, {"name": name, "maker": maker, "train": config.to_dict(), "steps": demo.steps,
                "seconds": round(seconds, 1), "timings": rounded, "before": asdict(before),
                "after": asdict(after)})  # fmt: skip
    say(report(demo, name))
    return demo


def _settings(config: TrainConfig) -> str:
    length = f"{config.max_steps} steps" if config.max_steps else f"{config.epochs:g} epochs"
    pack = "packed" if config.pack else "padded"
    return (
        f"{length}, lr {config.lr:g}, rank {config.rank}, alpha {config.alpha:g}, batch "
        f"{config.batch_size} × {config.seq_len} tokens ({pack}), seed {config.seed}"
    )


def report(demo: DemoResult, name: str) -> str:
    """What the demo prints after training: the new answers, the cost, and what to do next."""
    after, before = demo.after, demo.before
    lines = [f"\nAfter {demo.steps} steps (base + adapter, greedy):", after.who.show()]
    lines += ["\nQuestions it never trained on:"] + [r.show() for r in after.replies[1:]]
    named = sum(r.names for r in after.replies)
    ended = sum(r.ended for r in after.replies)
    lines.append(f"\n{named} of {len(after.replies)} replies name {name}; {ended} end with "
                 f"{END_OF_TURN}.")  # fmt: skip
    lines.append(f"held-out perplexity: {before.perplexity:.3f} before, {after.perplexity:.3f} "
                 f"after ({100 * demo.perplexity_change:+.1f}%)")  # fmt: skip
    t = demo.timings
    lines.append(f"time: {demo.seconds:.0f} s in all (base {t.get('before', 0):.0f} s, training "
                 f"{t.get('train', 0):.0f} s, tuned {t.get('after', 0):.0f} s)")  # fmt: skip
    if demo.loss_plot is not None:
        lines.append(f"loss curve: {demo.loss_plot}")
    gguf = demo.out.with_name(demo.out.name + ".gguf")
    peft = demo.out.with_name(demo.out.name + "-peft")
    lines += [
        f"adapter: {demo.adapter}",
        "\nWhat to try next:",
        f"  .venv/bin/llmhood chat --adapter {demo.out}",
        f"      chat with {name} (add --temperature 0 for the greedy replies above)",
        f"  .venv/bin/llmhood export {demo.out} --merge --format gguf --out {gguf}",
        f"      one GGUF file, the adapter merged in: llmhood chat --model {gguf}, or llama.cpp",
        f"  .venv/bin/llmhood export {demo.out} --format peft --out {peft}",
        "      the adapter alone, for transformers + peft",
    ]
    return "\n".join(lines)


def _save(out: Path, record: dict[str, Any]) -> None:
    """demo.json: the run's settings, then its results; also the marker that lets a later
    demo replace this directory, written first so that an interrupted run is replaceable."""
    text = json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    (out / MARKER).write_text(text, encoding="utf-8")

"""Every option of a training run, in one dataclass that the CLI, YAML files and Python share.

`llmhood train` builds its flags from these fields (their help text and defaults included),
a `--config` YAML file sets any of them by the same names, and flags given on the command
line override the file. So a run is fully described by its `TrainConfig`, which is saved
beside its checkpoints; a resumed run must match it in every field that changes the
training's arithmetic (RESUME_FREE lists those that may change).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llmhood.errors import LLMHoodError
from llmhood.registry import DEFAULT_MODEL
from llmhood.train.data import FORMATS
from llmhood.train.lora import ALL_LINEAR, LoraConfig

STAGES = ("sft", "pretrain", "dpo", "grpo")
METHODS = ("lora", "dora", "qlora", "full")
DTYPES = ("auto", "float32", "bfloat16")
TOO_LONG = ("truncate", "drop")


def option(default: Any, help: str, **extra: Any) -> Any:
    """A field with its --help text (and `choices`) for argparse; bools become --x/--no-x."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    # what to train
    stage: str = option("sft", "what is learned from the data", choices=STAGES)
    method: str = option("lora", "which weights change", choices=METHODS)
    model: str = option(DEFAULT_MODEL, "base model: a name, a .gguf file, an HF/Meta directory")
    data: str = option("", "training data: a .jsonl/.json file (pretrain: also .txt/.md files)")
    out: str = option("", "the run's directory: checkpoints, final adapter, logs, loss curve")
    format: str = option("auto", "row format of sft data", choices=("auto", *FORMATS))
    # how long
    epochs: float = option(1.0, "passes over the training rows")
    max_steps: int = option(0, "optimiser steps to take; 0: as many as --epochs make")
    # optimiser
    lr: float = option(2e-4, "peak learning rate (full fine-tuning wants ~1e-5)")
    warmup: float = option(0.03, "warm-up: a share of the steps (< 1) or a number of steps")
    min_lr: float = option(0.0, "the cosine's floor, as a share of --lr")
    weight_decay: float = option(0.0, "AdamW's decoupled weight decay")
    max_grad_norm: float = option(1.0, "clip the gradient's norm to this; 0: no clipping")
    # adapters
    rank: int = option(8, "LoRA rank r")
    alpha: float = option(16.0, "LoRA alpha: the update is scaled by alpha / rank")
    dropout: float = option(0.05, "dropout on the adapters' input")
    target: list[str] = field(
        default_factory=lambda: [ALL_LINEAR],
        metadata={"help": f"layers to adapt: {ALL_LINEAR} or names (q_proj,v_proj or wq,wv)"},
    )

    use_rslora: bool = option(False, "scale by alpha / sqrt(rank) (rsLoRA)")
    double_quant: bool = option(True, "qlora: 8-bit codes for the NF4 block scales")
    # data
    seq_len: int = option(512, "tokens per training sequence")
    too_long: str = option("truncate", "rows longer than --seq-len", choices=TOO_LONG)
    batch_size: int = option(4, "sequences per micro-batch (per process)")
    grad_accum: int = option(1, "micro-batches per optimiser step")
    pack: bool = option(True, "pack several rows into each sequence (--no-pack: pad)")
    train_on_prompt: bool = option(False, "train the prompt's tokens too")
    strict: bool = option(False, "stop at the first bad row instead of skipping it")
    eval_split: float = option(0.05, "held-out rows: a share (< 1) or a count; 0: none")
    # precision and memory
    dtype: str = option(
        "auto", "compute dtype: auto is bfloat16 where the CPU has it", choices=DTYPES
    )
    grad_checkpointing: bool = option(True, "recompute each block in the backward pass")
    # runs
    save_every: int = option(100, "steps between checkpoints; 0: at the end only")
    eval_every: int = option(0, "steps between evaluations; 0: with each checkpoint")
    keep_checkpoints: int = option(2, "checkpoints kept; older ones are deleted")
    resume: str = option("", "continue from a checkpoint: a run or checkpoint directory")
    seed: int = option(0, "seeds data order, held-out split, initialisation and dropout")
    fsdp: bool = option(False, "under torchrun: shard parameters with FSDP2")
    # dpo
    beta: float = option(0.1, "dpo: strength of the pull towards the reference")
    label_smoothing: float = option(0.0, "dpo: share of preference labels assumed wrong")
    # grpo
    reward: str = option("", "grpo: reward function as module:function or file.py:function")
    group: int = option(8, "grpo: completions sampled per prompt")
    max_new_tokens: int = option(64, "grpo: tokens per completion")
    temperature: float = option(1.0, "grpo: sampling temperature of the rollouts")
    kl_coef: float = option(0.04, "grpo: weight of the KL term against the base; 0: none")
    clip: float = option(0.2, "grpo: the ratio's clip range epsilon")

    def lora(self) -> LoraConfig:
        return LoraConfig(
            self.rank,
            self.alpha,
            self.dropout,
            list(self.target),
            self.use_rslora,
            dora=self.method == "dora",
        )

    def validate(self) -> None:
        """Every check that needs no file read: a mistake costs nothing but the message."""
        for name in ("stage", "method", "format", "dtype", "too_long"):
            choices = fields_by_name()[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise LLMHoodError(
                    f"--{flag(name)} {getattr(self, name)!r} is not one of: {', '.join(choices)}."
                )
        if not self.data:
            raise LLMHoodError("Give the training data with --data FILE.")
        if not self.out:
            raise LLMHoodError("Give the run's directory with --out DIR.")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise LLMHoodError(
                f"--lr {self.lr} is out of range: a learning rate is > 0 and at most 1 "
                "(2e-4 is usual for LoRA, 1e-5 for full fine-tuning)."
            )
        if self.method != "full":
            if not isinstance(self.rank, int) or not 1 <= self.rank <= 4096:
                raise LLMHoodError(
                    f"--rank {self.rank} is out of range: a LoRA rank is an integer from 1 to "
                    "the layer's width (8 or 16 is usual)."
                )
            self.lora().validate()
        positive = ("seq_len", "batch_size", "grad_accum", "group", "max_new_tokens")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise LLMHoodError(f"--{flag(name)} {getattr(self, name)} must be an integer ≥ 1.")
        for name in ("max_steps", "save_every", "eval_every", "keep_checkpoints"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise LLMHoodError(f"--{flag(name)} {getattr(self, name)} must be an integer ≥ 0.")
        if not self.epochs > 0 and not self.max_steps:
            raise LLMHoodError(f"--epochs {self.epochs} must be > 0 (or give --max-steps).")
        if self.eval_split < 0 or (
            self.eval_split >= 1 and self.eval_split != int(self.eval_split)
        ):
            raise LLMHoodError(
                f"--eval-split {self.eval_split} must be a share in [0, 1) or a whole number "
                "of rows."
            )
        if not 0 <= self.min_lr <= 1 or self.warmup < 0 or self.weight_decay < 0:
            raise LLMHoodError(
                "--min-lr must be in [0, 1] (a share of --lr), --warmup and --weight-decay ≥ 0."
            )
        if self.stage == "grpo" and not self.reward:
            raise LLMHoodError("--stage grpo needs a reward function: --reward module:function.")
        if self.stage == "grpo" and self.group < 2:
            raise LLMHoodError("--group must be at least 2: GRPO compares completions in a group.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Fields that may differ between a run and its resumption: they change where things go and
# how often they are saved, never what the optimiser computes.
RESUME_FREE = ("out", "resume", "save_every", "eval_every", "keep_checkpoints")


def fields_by_name() -> dict[str, Any]:
    return {f.name: f for f in fields(TrainConfig)}


def flag(name: str) -> str:
    return name.replace("_", "-")


def default(name: str) -> Any:
    f = fields_by_name()[name]
    return f.default_factory() if f.default is MISSING else f.default


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The options in a YAML file, by field name (dashes or underscores), checked."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as e:
        raise LLMHoodError(f"The config file {path} does not exist.") from e
    except yaml.YAMLError as e:
        raise LLMHoodError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise LLMHoodError(
            f"{path} must hold a mapping of option: value, not a {type(data).__name__}."
        )
    known = fields_by_name()
    options = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            close = [f for f in known if f.startswith(name[:3])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise LLMHoodError(
                f"{path}: unknown option {key!r}{hint}. `llmhood train --help` lists them."
            )
        options[name] = _coerce(name, value, path)
    return options


def _coerce(name: str, value: Any, source: Any) -> Any:
    """A YAML value as the field's type: YAML reads `1e-4` as a string and `target: q_proj` as
    a single name."""
    want = type(default(name))
    if want is list:
        return (
            [str(v) for v in value]
            if isinstance(value, list)
            else [part.strip() for part in str(value).split(",") if part.strip()]
        )
    if want is bool:
        if isinstance(value, bool):
            return value
        raise LLMHoodError(f"{source}: {name} must be true or false, not {value!r}.")
    try:
        return want(value)
    except (TypeError, ValueError) as e:
        raise LLMHoodError(f"{source}: {name} must be a {want.__name__}, not {value!r}.") from e


def resume_mismatch(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The fields in which `config` differs from the run it resumes, as 'name: old -> new'."""
    now = config.to_dict()
    return [
        f"{name}: {saved.get(name)!r} -> {now[name]!r}"
        for name in now
        if name not in RESUME_FREE and saved.get(name, now[name]) != now[name]
    ]

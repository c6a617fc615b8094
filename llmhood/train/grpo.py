"""GRPO: reinforcement learning from a reward function, with no value model (Shao et al., 2024).

PPO needs a learned value function to tell a good action from a lucky one; for a language
model that is a second network as large as the policy. GRPO (DeepSeekMath) replaces it by
comparison within a group: for each prompt q it samples G completions o_1 … o_G from the
current policy, scores them with the reward function, and uses each completion's standing
within its group as the advantage of every one of its tokens:

    A_i = (r_i − mean(r_1 … r_G)) / (std(r_1 … r_G) + eps)

A group whose rewards are all equal (all right, all wrong) has A = 0 and teaches nothing;
GRPOStats counts such groups, since a run where most groups are flat is not learning.
std is the sample standard deviation (n − 1), as the common implementations of the paper
use, so that learning rates tuned elsewhere carry over.

The objective is PPO's clipped surrogate per token, with the ratio of the policy being
trained to the policy that sampled (π_old), minus a KL penalty toward a frozen reference:

    ratio_t = π(o_t | q, o_<t) / π_old(o_t | q, o_<t)
    J_t     = min(ratio_t·A, clip(ratio_t, 1 − ε, 1 + ε)·A) − β·KL_t
    KL_t    = ref_t/π_t − log(ref_t/π_t) − 1      (the k3 estimator, ref_t = π_ref(o_t | …))
    loss    = −(1/G) Σ_i (1/|o_i|) Σ_t J_t

Normalisation, as in the paper: a mean over each completion's own tokens, then a mean over
completions. Every completion weighs the same whatever its length (so a token of a short
completion weighs more than one of a long completion; Dr. GRPO, Liu et al. 2025, argues
this biases length, and a per-token mean over the batch is the alternative). k3 is an
unbiased estimate of KL(π ‖ π_ref) from tokens sampled from π, and never negative, unlike
log(π/π_ref), whose single-sample values swing both ways.

π_old is the policy at the rollout; with one update per rollout (μ = 1) the ratio is 1 and
the surrogate's gradient is the plain policy gradient −A·∇log π. Clipping only matters from
the second update on: it stops the gradient of a token once its ratio has left
[1 − ε, 1 + ε] in the direction its advantage pushes. All log-probabilities are of the
tempered distribution softmax(logits / T) that the rollout samples from. A top-p cut is not
part of them: with top_p < 1 the completions come from the truncated distribution, and the
ratio is taken between the untruncated ones.

With a LoRA policy the reference needs no second model: it is the same model with its
adapters switched off (llmhood.train.lora.adapters_disabled). Old and reference
log-probabilities are computed once per rollout, without gradients.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from llmhood.errors import LLMHoodError
from llmhood.generate import SamplingParams, generate
from llmhood.generate.generate import Tokenizer as GenerationTokenizer
from llmhood.model import Transformer
from llmhood.train.lora import adapted_layers, adapters_disabled
from llmhood.train.loss import shift_labels, token_nll

ADVANTAGE_EPS = 1e-4  # keeps a nearly flat group's advantages finite
Prompt = str | Sequence[dict[str, Any]]  # a rendered prompt, or chat messages to render


class Tokenizer(GenerationTokenizer, Protocol):
    """What GRPO needs from a tokenizer (llmhood.tokenizer.BPETokenizer); chat messages also
    need its `apply_chat_template`."""

    def encode(self, text: str, add_bos: bool = False) -> list[int]: ...


@dataclass
class GRPOConfig:
    group: int = 8  # completions per prompt, G
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    clip: float = 0.2  # ε
    beta: float = 0.04  # weight of the KL penalty; 0 drops it and the reference pass
    updates: int = 1  # optimiser steps per rollout, μ
    seed: int | None = 0  # None: torch's global random state
    max_grad_norm: float | None = 1.0  # None: no clipping

    def validate(self) -> None:
        """Raise LLMHoodError naming the first value outside its range and what it means.

        Each check says "the value is valid", so NaN, which fails every comparison, fails."""
        checks = [
            ("group", _whole(self.group) and self.group >= 2, "a whole number ≥ 2",
             "completions per prompt; a group of one is always its own mean and teaches nothing"),
            ("max_new_tokens", _whole(self.max_new_tokens) and self.max_new_tokens >= 1,
             "a whole number ≥ 1", "the longest completion, in tokens"),
            ("temperature", 0 < self.temperature < math.inf, "> 0",
             "GRPO learns from differences between sampled completions; 0 would sample one"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]", "1 samples from the whole distribution"),
            ("clip", 0 < self.clip < 1, "in (0, 1)",
             "ε: the ratio π/π_old is clipped to [1 − ε, 1 + ε]; 0.2 is usual"),
            ("beta", 0 <= self.beta < math.inf, "≥ 0",
             "the weight of the KL penalty toward the reference; 0 turns it off"),
            ("updates", _whole(self.updates) and self.updates >= 1, "a whole number ≥ 1",
             "optimiser steps taken on each rollout"),
            ("seed", self.seed is None or (_whole(self.seed) and self.seed >= 0),
             "a whole number ≥ 0 or None", "None samples from torch's global random state"),
            ("max_grad_norm", self.max_grad_norm is None or 0 < self.max_grad_norm < math.inf,
             "> 0 or None", "gradients are clipped to this norm; None does not clip"),
        ]  # fmt: skip
        for name, ok, valid, meaning in checks:
            if not ok:
                raise LLMHoodError(
                    f"GRPO {name}={getattr(self, name)!r} is invalid: it must be {valid} "
                    f"({meaning})."
                )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- the reward function ----------------------------------------------------------------


@dataclass(frozen=True)
class Reward:
    """A reward function checked at every call: one finite number per completion, and any
    exception it raises becomes an LLMHoodError that names it."""

    fn: Callable[[list[str], list[str]], Sequence[float]]
    name: str

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        n = len(completions)
        try:
            out = self.fn(list(prompts), list(completions))
        except Exception as e:
            raise LLMHoodError(
                f"The reward function {self.name} raised {type(e).__name__}: {e}. It is called "
                f"as fn(prompts, completions) with two lists of {n} strings; fix the function."
            ) from e
        if hasattr(out, "tolist"):  # a numpy array or a torch tensor
            out = out.tolist()
        if isinstance(out, str | bytes) or not isinstance(out, Sequence):
            raise LLMHoodError(
                f"The reward function {self.name} returned {type(out).__name__}, not a list of "
                f"numbers: it must return one float per completion ({n})."
            )
        if len(out) != n:
            raise LLMHoodError(
                f"The reward function {self.name} returned {len(out)} values for {n} "
                "completions: it must return exactly one float per completion, in their order."
            )
        rewards = []
        for i, value in enumerate(out):
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise LLMHoodError(
                    f"The reward function {self.name} returned {value!r} for completion {i} "
                    f"({completions[i][:60]!r}): every reward must be a finite number."
                )
            rewards.append(float(value))
        return rewards


def load_reward(spec: str) -> Reward:
    """The reward function `spec` names: "module:function", the module importable from
    sys.path or the current directory, or "path/to/file.py:function"."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise LLMHoodError(
            f"Reward {spec!r} does not name a function: write module:function (e.g. "
            "my_rewards:exact_answer) or path/to/file.py:function."
        )
    module = _import_file(target) if _is_path(target) else _import_module(target)
    if not hasattr(module, attr):
        names = sorted(n for n, v in vars(module).items() if callable(v) and n[0] != "_")
        raise LLMHoodError(
            f"The reward module {target!r} has no attribute {attr!r}. Its functions: "
            f"{', '.join(names) or 'none'}."
        )
    fn = getattr(module, attr)
    if not callable(fn):
        raise LLMHoodError(
            f"{spec} is a {type(fn).__name__}, not a function: the reward must be callable as "
            "fn(prompts: list[str], completions: list[str]) -> list[float]."
        )
    return Reward(fn, spec)


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _import_file(target: str) -> Any:
    path = Path(target)
    if not path.is_file():
        raise LLMHoodError(f"Cannot import the reward module {target!r}: there is no such file.")
    name = f"llmhood_reward_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LLMHoodError(f"Cannot import the reward module {target!r}: not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass in the file looks its module up there
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise LLMHoodError(
            f"Cannot import the reward module {target!r}: running it raised "
            f"{type(e).__name__}: {e}."
        ) from e
    return module


def _import_module(target: str) -> Any:
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a file written since the last import is seen
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name is not None and (target == e.name or target.startswith(e.name + ".")):
            why = f"no module {e.name!r} on sys.path or in the current directory ({cwd})"
        else:
            why = f"it imports {e.name!r}, which is not installed"
        raise LLMHoodError(f"Cannot import the reward module {target!r}: {why}.") from e
    except Exception as e:
        raise LLMHoodError(
            f"Cannot import the reward module {target!r}: importing it raised "
            f"{type(e).__name__}: {e}."
        ) from e
    finally:
        if added:
            sys.path.remove(cwd)


# ---- the objective ----------------------------------------------------------------------


def group_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """(r − group mean) / (group std + eps) for each completion: (n,) -> (n,) float32.

    rewards: (n,), the `group` completions of each prompt next to each other. A flat group
    gets exactly 0, not rounding noise divided by eps."""
    r = rewards.float().reshape(-1, group)  # (prompts, group)
    advantages = (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + ADVANTAGE_EPS)
    return advantages.masked_fill(flat_groups(rewards, group)[:, None], 0.0).reshape(-1)


def flat_groups(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """Which groups' rewards are all equal: (n,) -> (n / group,) bool."""
    r = rewards.reshape(-1, group)
    return (r == r[:, :1]).all(dim=1)


@dataclass
class GRPOLoss:
    loss: torch.Tensor  # scalar, to minimise
    kl: torch.Tensor  # mean k3 (per completion, then over completions), detached
    clip_fraction: float  # share of completion tokens whose gradient clipping stopped


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    beta: float = 0.04,
) -> GRPOLoss:
    """The negated GRPO objective (the module docstring's formulas).

    logp, old_logp, ref_logp: (n, T) per-token log-probabilities under the policy, the
    policy that sampled and the reference (None when beta is 0); advantages: (n,);
    mask: (n, T) bool, True on the completion tokens."""
    mask_f = mask.float()
    lengths = mask_f.sum(dim=1).clamp(min=1)  # (n,)
    a = advantages[:, None]  # (n, 1)
    ratio = torch.exp(logp - old_logp)  # (n, T)
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
    per_token = -surrogate
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        log_r = ref_logp - logp  # log(π_ref/π)
        kl = torch.exp(log_r) - log_r - 1
        per_token = per_token + beta * kl
    loss = ((per_token * mask_f).sum(dim=1) / lengths).mean()
    seq_kl = ((kl.detach() * mask_f).sum(dim=1) / lengths).mean()
    clipped = ((ratio > 1 + clip) & (a > 0)) | ((ratio < 1 - clip) & (a < 0))
    clip_fraction = (clipped & mask).sum().item() / max(int(mask.sum()), 1)
    return GRPOLoss(loss, seq_kl, clip_fraction)


class _Tempered(nn.Module):
    """The output head at temperature T: logits of the distribution the rollout samples."""

    def __init__(self, head: nn.Module, temperature: float) -> None:
        super().__init__()
        self.head, self.temperature = head, temperature

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).float() / self.temperature  # float32 before the division


def token_logprobs(
    model: Transformer,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    chunk: int = 1024,
) -> torch.Tensor:
    """log softmax(logits / T) of each masked token given the tokens before it, 0 elsewhere.

    tokens: (n, T) int64, right-padded (so no padding mask is needed: a causal model never
    looks right); mask: (n, T) bool, False at position 0. Returns (n, T) float32. The output
    head runs on the masked positions only (llmhood.train.loss.token_nll)."""
    hidden = model(tokens, head=False)  # (n, T, dim)
    nll = token_nll(hidden, _Tempered(model.output, temperature), shift_labels(tokens, mask), chunk)
    scored = mask.clone()
    scored[:, 0] = False
    out = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    return out.masked_scatter(scored, -nll)  # row-major, the order token_nll returns


# ---- rollout and step -------------------------------------------------------------------


@dataclass
class Rollout:
    """`group` completions of each prompt, next to each other, and what the updates need."""

    tokens: torch.Tensor  # (n, T) int64: prompt, completion, stop token if sampled; 0-padded
    mask: torch.Tensor  # (n, T) bool: True on completion tokens (the stop token included)
    old_logp: torch.Tensor  # (n, T) float32: log π_old of each completion token, 0 elsewhere
    ref_logp: torch.Tensor | None  # (n, T) float32 under the reference; None when beta is 0
    rewards: torch.Tensor  # (n,) float32
    advantages: torch.Tensor  # (n,) float32
    prompts: list[str]  # the rendered prompt of each completion
    completions: list[str]  # the text the reward saw


def render_prompts(tokenizer: Tokenizer, prompts: Sequence[Prompt]) -> list[str]:
    """Prompts as text: strings as given (already rendered), message lists through the
    tokenizer's chat template with the assistant's turn opened."""
    if not prompts:
        raise LLMHoodError("No prompt was given: a GRPO step needs at least one prompt.")
    texts = []
    for prompt in prompts:
        if isinstance(prompt, str):
            texts.append(prompt)
        elif hasattr(tokenizer, "apply_chat_template"):
            texts.append(tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True))
        else:
            raise LLMHoodError(
                "A prompt is a list of chat messages, but this tokenizer has no chat template "
                "to render them with: give the prompts as rendered strings."
            )
    return texts


def rollout(
    model: Transformer,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    reward_fn: Callable[[list[str], list[str]], Sequence[float]],
    config: GRPOConfig,
    step: int = 0,
) -> Rollout:
    """Sample, score and record: the completions come from llmhood.generate with the model in
    eval mode; the old and reference log-probs from one forward pass each, without gradients.

    Generation stops at the tokenizer's EOS only: a Generation does not say which of several
    stop tokens ended it, and the stop token is part of what the policy chose. `step` makes
    each rollout's random draws its own: the seed is derived from (config.seed, step)."""
    config.validate()
    reward = reward_fn if isinstance(reward_fn, Reward) else _as_reward(reward_fn)
    if config.beta > 0 and not any(True for _ in adapted_layers(model)):
        raise LLMHoodError(
            f"GRPO beta={config.beta} needs a reference policy, and the reference is this model "
            "with its adapters off, but it has none: apply_lora first, or set beta=0."
        )
    texts = render_prompts(tokenizer, prompts)
    prompt_ids = [tokenizer.encode(text, add_bos=False) for text in texts]
    if not (_whole(step) and step >= 0):
        raise LLMHoodError(f"GRPO step={step!r} is invalid: it is the trainer's step, from 0.")
    seed = None
    if config.seed is not None:
        seed = int(np.random.SeedSequence([config.seed, step]).generate_state(1)[0])
    sampling = SamplingParams(temperature=config.temperature, top_p=config.top_p, seed=seed)
    repeated = [ids for ids in prompt_ids for _ in range(config.group)]
    was_training = model.training
    model.eval()
    try:
        outs = generate(model, tokenizer, repeated, config.max_new_tokens, sampling, set())
        rows = [
            (ids, out.token_ids + ([tokenizer.eos_id] if out.finish_reason == "eos" else []))
            for ids, out in zip(repeated, outs, strict=True)
        ]
        tokens, mask = _pad(rows, model.tok_embeddings.weight.device)
        with torch.no_grad():
            old_logp = token_logprobs(model, tokens, mask, config.temperature)
            ref_logp = None
            if config.beta > 0:
                with adapters_disabled(model):
                    ref_logp = token_logprobs(model, tokens, mask, config.temperature)
    finally:
        model.train(was_training)
    completions = [out.text for out in outs]
    per_completion = [text for text in texts for _ in range(config.group)]
    rewards = torch.tensor(reward(per_completion, completions), device=tokens.device)
    advantages = group_advantages(rewards, config.group)
    return Rollout(tokens, mask, old_logp, ref_logp, rewards, advantages, per_completion,
                   completions)  # fmt: skip


def _as_reward(fn: Callable[..., Any]) -> Reward:
    if not callable(fn):
        raise LLMHoodError(
            f"The reward is a {type(fn).__name__}, not a function: give a callable "
            "fn(prompts, completions) -> list[float], or load one with load_reward."
        )
    return Reward(fn, getattr(fn, "__qualname__", repr(fn)))


def _pad(
    rows: list[tuple[list[int], list[int]]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, completion) pairs -> right-padded tokens (n, T) and completion mask (n, T)."""
    width = max(len(p) + len(c) for p, c in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.int64)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (prompt, completion) in enumerate(rows):
        tokens[i, : len(prompt) + len(completion)] = torch.tensor(prompt + completion)
        mask[i, len(prompt) : len(prompt) + len(completion)] = True
    return tokens.to(device), mask.to(device)


@dataclass
class GRPOStats:
    reward: float  # mean over the rollout's completions
    loss: float  # mean over the updates
    kl: float | None  # mean k3 against the reference over the updates; None when beta is 0
    clip_fraction: float  # mean over the updates
    grad_norm: float  # of the last update, before clipping
    lengths: list[int]  # completion tokens, the stop token included
    flat_groups: int  # groups whose rewards were all equal: zero advantages, no signal

    @property
    def mean_length(self) -> float:
        return sum(self.lengths) / len(self.lengths)


def grpo_step(
    model: Transformer,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    reward_fn: Callable[[list[str], list[str]], Sequence[float]],
    optimizer: Optimizer,
    config: GRPOConfig,
    step: int = 0,
) -> GRPOStats:
    """One rollout, then `config.updates` optimiser steps on it. Pass the trainer's step
    number as `step`, so that each rollout samples with its own seed."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LLMHoodError("The model has no trainable parameter: apply_lora first.")
    data = rollout(model, tokenizer, prompts, reward_fn, config, step)
    losses, kls, clips, norm = [], [], [], 0.0
    for _ in range(config.updates):
        optimizer.zero_grad(set_to_none=True)
        logp = token_logprobs(model, data.tokens, data.mask, config.temperature)
        out = grpo_loss(logp, data.old_logp, data.ref_logp, data.advantages, data.mask,
                        config.clip, config.beta)  # fmt: skip
        out.loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or math.inf))
        optimizer.step()
        losses.append(out.loss.item())
        kls.append(out.kl.item())
        clips.append(out.clip_fraction)
    return GRPOStats(
        reward=data.rewards.mean().item(),
        loss=sum(losses) / len(losses),
        kl=sum(kls) / len(kls) if data.ref_logp is not None else None,
        clip_fraction=sum(clips) / len(clips),
        grad_norm=norm,
        lengths=data.mask.sum(dim=1).tolist(),
        flat_groups=int(flat_groups(data.rewards, config.group).sum()),
    )

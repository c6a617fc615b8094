"""The training loop: one `train(config)` for every stage and method.

    base model -> (NF4 base) -> adapters or all weights trainable -> data -> schedule
      -> per step: micro-batches -> loss / step tokens -> backward -> clip -> AdamW -> LR
      -> evaluate, checkpoint (atomic), log -> final adapter or model, loss curve

Choices, and why:
* The loss and the output head run inside one module (`Objective`), so that DDP and FSDP2
  see one forward per micro-batch, and the head runs over the trained positions only
  (llmhood.train.loss).
* bf16 autocast where the CPU has bf16 instructions (`--dtype auto`): LoRA then keeps its
  frozen base in bf16 too, halving the memory it streams, while the trained tensors and
  AdamW's moments stay float32. Without bf16 instructions bf16 is emulated and slower than
  float32, so auto means float32 there.
* Activation checkpointing per block, non-reentrant: activations of one block at a time
  instead of thirty, for a second forward pass in the backward.
* Everything that decides the run is in the config and the step number; checkpoints hold
  the rest (optimiser, scheduler, RNG), so a resumed run is bit-for-bit the same run.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmhood.errors import LLMHoodError
from llmhood.model import Transformer
from llmhood.registry import MODELS, resolve
from llmhood.speed.cpu import bf16_supported
from llmhood.speed.modes import REFERENCE, build
from llmhood.tokenizer import BPETokenizer
from llmhood.train import checkpoints, dataset
from llmhood.train.adapter import quantize_base, save_adapter
from llmhood.train.allocator import fix_mmap_threshold
from llmhood.train.batches import MicroBatch, Schedule, collate, padded, sft_units
from llmhood.train.config import TrainConfig, resume_mismatch
from llmhood.train.distributed import (
    World,
    check_world,
    finish,
    full_tensors,
    gather_weights,
    init,
    load_optimizer_state,
    load_tensors,
    micro_batches,
    optimizer_state,
    rank_rng,
    wrap,
)
from llmhood.train.dpo import dpo_loss
from llmhood.train.lora import adapters_disabled, apply_lora
from llmhood.train.loss import loss_sum, sequence_logprob
from llmhood.train.scheduler import warmup_cosine
from llmhood.train.step import optimizer_step

CHUNK = 1024  # trained positions per output-head chunk: 1024 × 49,152 float32 logits = 200 MB


@dataclass
class TrainResult:
    out: Path
    steps: int
    history: list[dict[str, Any]]
    final: Path | None  # the adapter directory, or the model directory (full fine-tuning)
    loss_plot: Path | None
    report: dataset.DataReport
    eval_loss: float | None = None

    @property
    def eval_perplexity(self) -> float | None:
        return None if self.eval_loss is None else math.exp(self.eval_loss)


def compute_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if bf16_supported() else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


# ---- the model ---------------------------------------------------------------------------


def _checkpointed(block: nn.Module) -> None:
    """Recompute `block` in the backward pass; its parameter names stay as they are.
    Without gradients (evaluation, GRPO's sampling) it runs as it is. A bound method, so
    that a deep copy of the model (DPO's reference) runs its own blocks, not these."""
    forward = type(block).forward

    def run(self: nn.Module, *args: Any) -> torch.Tensor:
        if torch.is_grad_enabled():
            return checkpoint(forward, self, *args, use_reentrant=False)
        return forward(self, *args)

    block.forward = types.MethodType(run, block)


def prepare_model(
    config: TrainConfig, progress: bool = True
) -> tuple[Transformer, BPETokenizer, str]:
    """The base model made trainable as the method says: (model, tokenizer, source)."""
    fix_mmap_threshold()  # before the weights load: llmhood.train.allocator says why
    model, ckpt = build(resolve(config.model), REFERENCE, progress, keep=False, decode_step=False)
    if ckpt.tokenizer is None:
        raise LLMHoodError(f"{ckpt.source} has no tokenizer; training needs one.")
    torch.manual_seed(config.seed)  # the adapters' initialisation
    if config.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        if config.method == "qlora":
            quantize_base(model, config.double_quant)
        apply_lora(model, config.lora())
        if compute_dtype(config.dtype) == torch.bfloat16:
            trainable = [p for p in model.parameters() if p.requires_grad]
            model.to(torch.bfloat16)
            for p in trainable:
                p.data = p.data.float()
    if config.grad_checkpointing:
        for block in model.layers:
            _checkpointed(block)
    return model, ckpt.tokenizer, ckpt.source


class Objective(nn.Module):
    """A stage's loss of one micro-batch, as a module: (summed loss, what it is summed over).

    sft and pretrain sum the cross-entropy of the trained tokens; dpo sums the per-pair
    losses, the reference's log-probabilities computed here, without gradients, from the
    same model with its adapters off (or a frozen copy when all weights train)."""

    def __init__(self, model: Transformer, stage: str, config: TrainConfig) -> None:
        super().__init__()
        self.model, self.stage, self.config = model, stage, config
        self.reference = None
        if stage == "dpo" and config.method == "full":
            self.reference = copy.deepcopy(model).requires_grad_(False)

    def forward(self, batch: MicroBatch) -> tuple[torch.Tensor, int]:
        dtype = compute_dtype(self.config.dtype)
        with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
            if self.stage != "dpo":
                return loss_sum(self.model, batch.tokens, batch.mask, CHUNK, **batch.forward_args())
            policy = sequence_logprob(self.model, batch.tokens, batch.mask, CHUNK)
            with torch.no_grad():
                if self.reference is not None:
                    reference = sequence_logprob(self.reference, batch.tokens, batch.mask, CHUNK)
                else:
                    with adapters_disabled(self.model):
                        reference = sequence_logprob(self.model, batch.tokens, batch.mask, CHUNK)
        n = batch.tokens.shape[0] // 2
        out = dpo_loss(
            policy[:n],
            policy[n:],
            reference[:n],
            reference[n:],
            self.config.beta,
            self.config.label_smoothing,
        )
        return out.loss * n, n


def weight(batch: MicroBatch, stage: str) -> int:
    """What a micro-batch's loss is averaged over: trained tokens, or DPO's pairs."""
    return batch.tokens.shape[0] // 2 if stage == "dpo" else batch.trained


# ---- data --------------------------------------------------------------------------------


def load_data(
    config: TrainConfig, tokenizer: BPETokenizer
) -> tuple[list, list, Callable[[list], MicroBatch], dataset.DataReport]:
    """(training units, held-out units, collate, report) for the config's stage."""
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    common = dict(seq_len=config.seq_len, strict=config.strict)
    if config.stage == "dpo":
        units, report = dataset.dpo_pairs(
            config.data, tokenizer, too_long=config.too_long, **common
        )

        def pairs(batch: list) -> MicroBatch:
            return padded([p.chosen for p in batch] + [p.rejected for p in batch], pad)

        train_units, held_out = split(units, config.eval_split, config.seed)
        return train_units, held_out, pairs, report
    if config.stage == "pretrain":
        examples, report = dataset.pretrain_examples(config.data, tokenizer, **common)
        pack = False
    else:
        examples, report = dataset.sft_examples(
            config.data,
            tokenizer,
            fmt=config.format,
            too_long=config.too_long,
            train_on_prompt=config.train_on_prompt,
            **common,
        )
        pack = config.pack
    train_rows, held_out = split(examples, config.eval_split, config.seed)
    units = sft_units(train_rows, config.seq_len, pack, pad)
    return units, held_out, functools.partial(collate, pad_id=pad), report


def split(units: list, share: float, seed: int) -> tuple[list, list]:
    """A held-out share (< 1) or count of the units, chosen by the seed."""
    if not units:
        raise LLMHoodError("No usable row is left in the data: every row was dropped (see above).")
    n = int(share) if share >= 1 else round(share * len(units))
    n = min(n, len(units) - 1)
    if n <= 0:
        return list(units), []
    order = torch.randperm(len(units), generator=torch.Generator().manual_seed(seed)).tolist()
    return [units[i] for i in order[n:]], [units[i] for i in order[:n]]


@torch.no_grad()
def evaluate(
    objective: Objective, held_out: list, collate_fn: Callable, batch_size: int, stage: str
) -> float:
    """Mean loss over the held-out units (per trained token; per pair for dpo)."""
    was_training = objective.training
    objective.eval()
    total, count = 0.0, 0
    for start in range(0, len(held_out), batch_size):
        batch = collate_fn(held_out[start : start + batch_size])
        loss, n = objective(batch)
        total, count = total + float(loss), count + n
    objective.train(was_training)
    return total / max(1, count)


# ---- the run -----------------------------------------------------------------------------


@dataclass
class _Run:
    """What the loop carries between steps and into checkpoints."""

    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0


def _write_log(out: Path, history: list[dict[str, Any]]) -> None:
    """log.jsonl, one line per step, all of it: at the start (a resumed run's steps so far)
    and at the end (the last step's entry gains the final eval loss); each step between
    appends its own line."""
    (out / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


def _check_out(config: TrainConfig) -> Path:
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise LLMHoodError(f"--out {out} is a file; give a directory for the run.")
    if (
        not config.resume
        and (out / "checkpoints").is_dir()
        and any((out / "checkpoints").iterdir())
    ):
        raise LLMHoodError(
            f"{out} already holds a run. Continue it with --resume {out}, or give a new --out."
        )
    return out


def _resume_state(config: TrainConfig, fingerprint: str) -> tuple[Path, dict, dict, dict] | None:
    if not config.resume:
        return None
    ckpt = checkpoints.find(config.resume)
    tensors, state, info = checkpoints.load(ckpt)
    saved = info.get("config", {})
    diff = resume_mismatch(saved, config)
    if info.get("data_fingerprint") not in (None, fingerprint):
        diff.append("data: the file's contents changed")
    if diff:
        raise LLMHoodError(
            f"--resume {config.resume}: this run's config does not match the checkpoint's "
            f"({ckpt}):\n  "
            + "\n  ".join(diff)
            + "\nResume with the same options (the run's config.json lists them), or start a "
            "new run with another --out."
        )
    return ckpt, tensors, state, info


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Run (or resume) the training `config` describes; the run's files go to config.out."""
    config.validate()
    out = _check_out(config)
    resolve(config.model)
    fingerprint = dataset.fingerprint(config.data)
    reward = None
    if config.stage == "grpo":
        from llmhood.train.grpo import load_reward

        reward = load_reward(config.reward)
    world = init()
    try:
        # Rank 0 reads the checkpoint and sends it: on several machines only its own holds it.
        resumed = world.from_main(lambda: _resume_state(config, fingerprint))
        return _train(config, out, fingerprint, resumed, reward, world, progress and world.main)
    finally:
        finish(world)


def _train(config, out, fingerprint, resumed, reward, world: World, progress: bool) -> TrainResult:
    model, tokenizer, source = prepare_model(config, progress)
    if config.stage == "grpo":
        if world.distributed:
            raise LLMHoodError("GRPO runs in one process; start it without torchrun.")
        units, report = dataset.prompts(config.data, tokenizer, config.strict)
        held_out, collate_fn = [], list
    else:
        units, held_out, collate_fn, report = load_data(config, tokenizer)
    if progress:
        _print_report(report)
    schedule = Schedule(
        units,
        collate_fn,
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        seed=config.seed,
        world=world.size,
    )
    total = schedule.total_steps(config.epochs, config.max_steps)
    # Paths may differ between machines; what they hold and every option may not (a
    # --save-every of its own would put one rank's checkpoint collectives out of step).
    paths = ("out", "resume", "data", "model")
    options = {k: v for k, v in config.to_dict().items() if k not in paths}
    world.agree({"data": fingerprint, "units": len(units), "steps": total, "options": options})
    objective = Objective(model, config.stage, config)
    objective.train()
    trained = wrap(objective, world, config.fsdp)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = round(config.warmup * total) if config.warmup < 1 else int(config.warmup)
    scheduler = warmup_cosine(optimizer, min(warmup, total), total, config.min_lr)
    run = _Run()
    if resumed is not None:
        ckpt, tensors, state, info = resumed
        check_world(info, world, ckpt)
        _load_trainable(model, tensors, ckpt)
        load_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoints.set_rng_state(rank_rng(state, world))
        run = _Run(state["history"], state["step"])
        if progress:
            print(f"llmhood: resuming {ckpt} at step {run.step} of {total}", file=sys.stderr)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(config.to_dict(), indent=2) + "\n"
        checkpoints.atomic_write_text(out / "config.json", text)
        # The log grows step by step, so that a run stopped early still shows how it went.
        _write_log(out, run.history)

    def save() -> None:
        # Every rank gathers (FSDP2's shards are collectives); rank 0 alone writes.
        tensors, optimizer_saved = full_tensors(_trainable(model)), optimizer_state(optimizer)
        rng = world.gather(checkpoints.rng_state())
        if not world.main:
            return
        checkpoints.save(
            out,
            run.step,
            tensors,
            {
                "optimizer": optimizer_saved,
                "scheduler": scheduler.state_dict(),
                "history": run.history,
                "step": run.step,
                "rank_rng": rng,
            },
            {
                "config": config.to_dict(),
                "data_fingerprint": fingerprint,
                "source": source,
                "world": world.size,
            },
            config.keep_checkpoints,
        )

    def held_out_loss() -> float:
        return evaluate(objective, held_out, collate_fn, config.batch_size, config.stage)

    bar = _progress_bar(total, run.step, progress)
    eval_every = config.eval_every or config.save_every
    eval_loss = None
    started, seen = time.perf_counter(), 0.0
    while run.step < total:
        per_rank = schedule.step(run.step)
        if config.stage == "grpo":
            entry = _grpo_step(model, tokenizer, per_rank[0], reward, optimizer, config, run.step)
        else:
            entry = _step(model, trained, per_rank, world, optimizer, config)
        scheduler.step()
        run.step += 1
        seen += entry.pop("seen")
        entry = {"step": run.step, **entry}
        if held_out and eval_every and run.step % eval_every == 0 and run.step < total:
            entry["eval_loss"] = eval_loss = held_out_loss()
        run.history.append(entry)
        if world.main:
            with (out / "log.jsonl").open("a") as log:
                log.write(json.dumps(entry) + "\n")
        rate = seen / max(1e-9, time.perf_counter() - started)
        shown = {"reward": f"{entry['reward']:.3f}"} if "reward" in entry else {}
        bar.set_postfix(
            loss=f"{entry['loss']:.3f}",
            **shown,
            lr=f"{entry['lr']:.2e}",
            tok_s=f"{rate:.0f}",
            refresh=False,
        )
        bar.update(1)
        if config.save_every and run.step % config.save_every == 0 and run.step < total:
            save()
    bar.close()
    if held_out:
        eval_loss = run.history[-1]["eval_loss"] = held_out_loss()
    save()
    gather_weights(trained)  # FSDP2: whole weights on every rank, for the files rank 0 writes
    return _finish(config, model, tokenizer, out, run, report, eval_loss, world, progress)


def _step(model, trained, per_rank, world: World, optimizer, config: TrainConfig) -> dict:
    """One optimiser step of sft, pretrain or dpo: this process's share of it."""
    step_tokens = sum(weight(b, config.stage) for mine in per_rank for b in mine)
    mine = per_rank[world.rank]
    local = sum(weight(b, config.stage) for b in mine)
    stats = optimizer_step(
        model,
        micro_batches(trained, per_rank, world.rank),
        step_tokens,
        optimizer,
        config.max_grad_norm or None,
        scale=world.size,
        local=local,
    )
    loss = world.sum(stats.loss * local) / step_tokens if world.distributed else stats.loss
    return {
        "loss": loss,
        "lr": stats.lr,
        "grad_norm": stats.grad_norm,
        "tokens": step_tokens,
        "seen": world.sum(sum(b.real for b in mine)),
    }


def _grpo_step(model, tokenizer, micro, reward, optimizer, config: TrainConfig, step: int) -> dict:
    """One GRPO step: `group` completions sampled for each prompt, then the update."""
    from llmhood.train.grpo import GRPOConfig, grpo_step

    prompts = [p for batch in micro for p in batch]
    settings = GRPOConfig(
        config.group,
        config.max_new_tokens,
        config.temperature,
        clip=config.clip,
        beta=config.kl_coef,
        seed=config.seed,
        max_grad_norm=config.max_grad_norm or None,
    )
    stats = grpo_step(model, tokenizer, prompts, reward, optimizer, settings, step)
    return {
        "loss": stats.loss,
        "reward": stats.reward,
        "kl": stats.kl,
        "lr": optimizer.param_groups[0]["lr"],
        "grad_norm": stats.grad_norm,
        "completion_tokens": stats.mean_length,
        "seen": sum(stats.lengths),
    }


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model: nn.Module, tensors: dict[str, torch.Tensor], ckpt: Path) -> None:
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != trainable:
        raise LLMHoodError(f"The checkpoint {ckpt} holds other tensors than this run trains.")
    load_tensors(params, tensors)


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        desc="training",
        unit="step",
        disable=not enabled,
        dynamic_ncols=True,
    )


def _print_report(report: dataset.DataReport) -> None:
    print(report.summary(), file=sys.stderr)
    for dropped in report.dropped[:20]:
        print(f"  dropped {dropped.where}: {dropped.reason}", file=sys.stderr)
    if len(report.dropped) > 20:
        print(f"  ... and {len(report.dropped) - 20} more dropped rows", file=sys.stderr)


def _finish(config, model, tokenizer, out, run, report, eval_loss, world, progress) -> TrainResult:
    """The final adapter (or model), the log and the loss curve, written by the main process."""
    final = plot = None
    if world.main:
        _write_log(out, run.history)
        if config.method == "full":
            final = save_full_model(model, tokenizer, out / "model")
        else:
            nf4 = {"double_quant": config.double_quant} if config.method == "qlora" else None
            base = config.model if config.model in MODELS else str(Path(config.model).resolve())
            final = save_adapter(model, out / "adapter", config.lora(), base, nf4, config.stage)
        from llmhood.plot.loss_curve import plot_loss

        plot = plot_loss(
            run.history, f"{config.stage} · {config.method} · {Path(config.data).name}"
        ).save(out / "loss.png")
        if progress:
            tail = (
                f", held-out loss {eval_loss:.4f} (perplexity {math.exp(eval_loss):.2f})"
                if eval_loss is not None
                else ""
            )
            print(f"llmhood: {run.step} steps{tail}", file=sys.stderr)
            print(f"llmhood: saved {final}", file=sys.stderr)
            print(f"llmhood: loss curve {plot}", file=sys.stderr)
    world.barrier()
    return TrainResult(out, run.step, run.history, final, plot, report, eval_loss)


def save_full_model(model: Transformer, tokenizer: BPETokenizer, path: Path) -> Path:
    """A fully fine-tuned model as an HF directory, written atomically."""
    from llmhood.weights.hf import write_hf

    with checkpoints.atomic_dir(path) as tmp:
        tmp.rmdir()  # write_hf wants a new or empty directory
        write_hf(tmp, model, tokenizer)
    return path

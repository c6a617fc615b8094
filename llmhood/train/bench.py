"""`llmhood bench train`: one LoRA SFT configuration, llmhood against peft and trl, in one run.

A fine-tuning speed only means something beside another engine's on the same model, data,
settings and minute. So every engine here trains SmolLM2-135M-Instruct (the same GGUF file:
llmhood reads it itself; transformers reads llmhood's Hugging Face export of it, the same
float32 weights (tests/test_hf_checkpoint.py), because its Trainer refuses to train a model
loaded from a GGUF file, calling it quantized) on the same rows, with the same adapters (rank 8,
alpha 16, dropout 0.05, all seven linear layers of every block), the same optimiser (AdamW,
constant learning rate, gradient norm clipped to 1), the same compute dtype (bf16 autocast
over a bf16 frozen base where the CPU has bf16 instructions, else float32: the trainer's own
rule, llmhood.train.trainer.compute_dtype) and activation checkpointing, each in its own child
process so that its peak memory is its own:

* llmhood: the trainer's own path (`prepare_model`, `load_data`, `Schedule`, `Objective`,
  the step of `train`) with rows packed into `batch_size` sequences of `seq_len` tokens;
* llmhood qlora: the same, its frozen base in NF4 (llmhood.train.nf4);
* peft: transformers' `Trainer` on a peft model, rows padded to the longest of each batch
  (`DataCollatorForSeq2Seq`), as many rows per batch as the packed sequences hold on
  average, so that every engine sees the same tokens per step;
* trl: trl's `SFTTrainer` with packing (best-fit decreasing, padding-free), `batch_size`
  sequences of `seq_len` tokens.

The rows are the identity and general rows of `llmhood demo finetune` (llmhood.train.identity),
shuffled copies of them as many as the steps need, so that no engine reaches the end of an
epoch, tokenized once here by llmhood's chat template; the peers get those token ids and
trained-token masks, llmhood reads the same rows from a file through its own data path.

Measured per engine, over the steps after `warmup` (which pay for first-call costs): trained
(supervised) tokens per second, non-padding tokens per second, the step time, the loss of the
last step (a sanity check more than a comparison: padded batches hold other rows than packed
ones, so their losses differ by the rows as much as by the engine), the peak resident memory
of the whole child (loading included) and while training alone (/proc/self/clear_refs resets
the peak between the two), and the bytes of the frozen base against the same weights in bf16.
Each engine is run `repeat` times, interleaved, and every number is the median; other
processes on the machine distort all of them, so the load average is printed with the
results.
"""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from llmhood.errors import LLMHoodError
from llmhood.speed import bench as speed_bench
from llmhood.speed.bench import load_average, machine, ratio, torch_kernels

ENGINES = ("llmhood", "llmhood qlora", "peft", "trl")
LABELS = {
    "llmhood": "llmhood LoRA",
    "llmhood qlora": "llmhood QLoRA",
    "peft": "peft + transformers",
    "trl": "trl SFTTrainer",
}
# What each peer imports; without one of them the engine is skipped, and the run says why.
NEEDS = {"peft": ("transformers", "accelerate", "peft"),
         "trl": ("transformers", "accelerate", "peft", "trl", "datasets")}  # fmt: skip
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EXTRA = "Install the benchmark extra, `pip install -e '.[bench]'` (`make bench` does)."


@dataclass(frozen=True)
class TrainWorkload:
    """What every engine trains on, and how: token ids, so that all of them see the same."""

    model: str  # the GGUF file
    hf_model: str  # the same weights and tokenizer as a Hugging Face directory, for the peers
    data: str  # the rows as a JSON Lines file, which llmhood reads through its own data path
    ids: list[list[int]]  # each row as llmhood's chat template and tokenizer make it
    masks: list[list[bool]]  # True where a token is trained
    seq_len: int
    batch_size: int  # packed sequences per step (llmhood, trl)
    padded_rows: int  # rows per step where rows are padded instead (peft)
    steps: int  # timed steps
    warmup: int  # steps run before the timed ones
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    lr: float = 2e-4
    dtype: str = "float32"  # "bfloat16": autocast over a bf16 base, adapters in float32
    grad_checkpointing: bool = True
    threads: int = 1
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


@dataclass
class EngineResult:
    """One engine's numbers from one child process (None: not measured)."""

    engine: str
    method: str = ""
    batching: str = ""
    supervised_tok_s: float | None = None  # trained tokens per second, timed steps
    real_tok_s: float | None = None  # tokens that are not padding, per second
    step_s: float | None = None  # mean time of a timed step
    supervised_per_step: float | None = None
    real_per_step: float | None = None
    positions_per_step: float | None = None  # what the blocks compute, padding included
    loss: float | None = None  # the last step's mean loss per trained token
    first_loss: float | None = None
    load_s: float | None = None
    peak_rss_mb: float | None = None  # the whole child: imports, loading, training
    train_rss_mb: float | None = None  # the peak while the steps ran
    baseline_rss_mb: float | None = None  # after imports, before loading the model
    base_mb: float | None = None  # the frozen base weights as held in memory
    base_bf16_mb: float | None = None  # the same weights at 2 bytes each
    trainable: int | None = None  # trained parameters
    losses: list[float] = field(default_factory=list)
    kernels: str = ""


# ---- memory --------------------------------------------------------------------------------


def _status_mb(key: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def current_rss_mb() -> float | None:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started or since `reset_peak` (where
    /proc cannot be read: since it started, as getrusage says)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else speed_bench.rss_mb()


def reset_peak() -> bool:
    """Start the peak over from the current resident memory (Linux: clear_refs 5), so that
    the training steps' own peak can be told from loading's. False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Peaks:
    """The peak up to the first step, and the peak of the steps alone where it can be reset."""

    def __init__(self) -> None:
        self.load = 0.0
        self.reset = False

    def steps_begin(self) -> None:
        self.load = peak_rss_mb()
        self.reset = reset_peak()

    def finish(self, result: EngineResult) -> None:
        now = peak_rss_mb()
        result.train_rss_mb = now if self.reset else None
        result.peak_rss_mb = max(self.load, now)


# ---- the workload --------------------------------------------------------------------------


def workload(
    model: Path,
    out_dir: Path,
    *,
    steps: int = 5,
    warmup: int = 1,
    seq_len: int = 512,
    batch_size: int = 4,
    seed: int = 0,
    threads: int | None = None,
) -> TrainWorkload:
    """The rows (written to `out_dir`, with the model as an HF directory for the peers),
    tokenized, and the batch sizes that give every engine the same tokens per step."""
    from llmhood.speed.cpu import bf16_supported
    from llmhood.speed.modes import REFERENCE, build
    from llmhood.tokenizer import BPETokenizer
    from llmhood.train import dataset
    from llmhood.train.identity import training_rows
    from llmhood.train.packing import pack
    from llmhood.weights.gguf import read_gguf
    from llmhood.weights.hf import write_hf

    for name, value in (("steps", steps), ("seq-len", seq_len), ("batch-size", batch_size)):
        if value < 1:
            raise LLMHoodError(f"--{name} {value} is invalid: it must be at least 1.")
    if warmup < 0:
        raise LLMHoodError(f"--warmup {warmup} is invalid: it must be at least 0.")
    if threads is not None and threads < 1:
        raise LLMHoodError(f"--threads {threads} is invalid: it must be at least 1.")
    tokenizer = BPETokenizer.from_gguf(read_gguf(model).metadata)
    data = out_dir / "rows.jsonl"
    total = steps + warmup
    copies, examples = 0, []
    # Enough shuffled copies that the packed sequences fill every step with one to spare:
    # then no engine ends an epoch, whose last batch would be short, within the run.
    while True:
        copies += 1
        rows = [row for i in range(copies) for row in training_rows(seed=seed + i)]
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        examples, _ = dataset.sft_examples(data, tokenizer, seq_len=seq_len)
        sequences = pack(examples, seq_len).tokens.shape[0]
        if sequences >= (total + 1) * batch_size:
            break
    padded_rows = max(1, round(batch_size * len(examples) / sequences))
    net, ckpt = build(model, REFERENCE, progress=False, keep=False, decode_step=False)
    write_hf(out_dir / "hf", net, ckpt.tokenizer)
    return TrainWorkload(
        model=str(model), hf_model=str(out_dir / "hf"), data=str(data),
        ids=[e.ids for e in examples], masks=[e.mask for e in examples], seq_len=seq_len,
        batch_size=batch_size, padded_rows=padded_rows, steps=steps, warmup=warmup,
        dtype="bfloat16" if bf16_supported() else "float32",
        threads=threads or torch.get_num_threads(), seed=seed,
    )  # fmt: skip


def timed(result: EngineResult, w: TrainWorkload, log: list[dict[str, float]]) -> None:
    """Rates over the steps after warm-up, from each step's time and token counts."""
    steps = log[w.warmup :] or log
    seconds = sum(s["seconds"] for s in steps)
    result.supervised_tok_s = sum(s["supervised"] for s in steps) / seconds
    result.real_tok_s = sum(s["real"] for s in steps) / seconds
    result.step_s = seconds / len(steps)
    for name in ("supervised", "real", "positions"):
        setattr(result, f"{name}_per_step", statistics.mean(s[name] for s in steps))
    result.losses = [s["loss"] for s in log]
    result.first_loss, result.loss = log[0]["loss"], log[-1]["loss"]


def base_sizes(model: torch.nn.Module) -> tuple[float, float]:
    """(MB of the frozen base as held, MB of the same weights in bf16): shared tensors (a
    tied head, also one that shares an NF4 embedding's codes) count once, and an NF4 layer
    by its codes and statistics."""
    from llmhood.train.nf4 import NF4Linear

    held: dict[int, int] = {}
    elements: dict[int, int] = {}
    for p in model.parameters():
        if not p.requires_grad:
            key = p.untyped_storage().data_ptr()
            held[key], elements[key] = p.untyped_storage().nbytes(), p.numel()
    for m in model.modules():
        if isinstance(m, NF4Linear):
            key = m.packed.untyped_storage().data_ptr()
            held[key], elements[key] = m.nbytes, m.in_features * m.out_features
    return sum(held.values()) / 2**20, 2 * sum(elements.values()) / 2**20


# ---- the engines, each run inside its own child process ---------------------------------------


def run_llmhood(w: TrainWorkload, method: str) -> EngineResult:
    """The trainer's own step loop (llmhood.train.trainer._train) without its files: no
    progress bar, checkpoints, evaluation or plots."""
    from llmhood.train import trainer
    from llmhood.train.batches import Schedule
    from llmhood.train.config import TrainConfig
    from llmhood.train.distributed import World, wrap
    from llmhood.train.scheduler import warmup_cosine

    name = "llmhood" if method == "lora" else f"llmhood {method}"
    kind = "QLoRA, NF4 base" if method == "qlora" else "LoRA"
    result = EngineResult(
        name, f"{kind} r={w.rank} α={w.alpha:g}", baseline_rss_mb=current_rss_mb()
    )
    result.batching = f"{w.batch_size} × {w.seq_len} packed"
    config = TrainConfig(  # `out` is never written: the bench keeps no checkpoints
        model=w.model, data=w.data, out=str(Path(w.data).parent / "run"), method=method,
        lr=w.lr, warmup=0, min_lr=1.0, rank=w.rank, alpha=w.alpha, dropout=w.dropout,
        seq_len=w.seq_len, batch_size=w.batch_size, pack=True, eval_split=0, dtype=w.dtype,
        grad_checkpointing=w.grad_checkpointing, seed=w.seed, max_steps=w.total_steps,
    )  # fmt: skip
    config.validate()
    start = time.perf_counter()
    model, tokenizer, _ = trainer.prepare_model(config, progress=False)
    units, _, collate, _ = trainer.load_data(config, tokenizer)
    schedule = Schedule(units, collate, batch_size=w.batch_size, grad_accum=1, seed=w.seed)
    world = World()
    objective = trainer.Objective(model, "sft", config)
    objective.train()
    trained = wrap(objective, world, False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=w.lr, weight_decay=0.0)
    scheduler = warmup_cosine(optimizer, 0, w.total_steps, 1.0)  # constant, as for the peers
    result.load_s = time.perf_counter() - start
    result.trainable = sum(p.numel() for p in params)
    result.base_mb, result.base_bf16_mb = base_sizes(model)
    result.kernels = f"{w.dtype}; {torch_kernels()}"
    peaks, log = Peaks(), []
    peaks.steps_begin()
    for step in range(w.total_steps):
        start = time.perf_counter()
        per_rank = schedule.step(step)
        entry = trainer._step(model, trained, per_rank, world, optimizer, config)
        scheduler.step()
        log.append({"seconds": time.perf_counter() - start, "supervised": entry["tokens"],
                    "real": entry["seen"], "loss": entry["loss"],
                    "positions": sum(b.tokens.numel() for b in per_rank[0])})  # fmt: skip
    peaks.finish(result)
    timed(result, w, log)
    return result


def _counted(base: type) -> type:
    """`base` (a transformers Trainer) that records each step's token counts and loss."""

    class Counted(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels, ids = inputs["labels"], inputs["input_ids"]
            mask = inputs.get("attention_mask")  # none when padding-free: no padding then
            self.step_log.append({
                "supervised": int((labels[:, 1:] != -100).sum()),
                "real": int(mask.sum()) if mask is not None else ids.numel(),
                "positions": ids.numel(),
            })  # fmt: skip
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)  # fmt: skip
            self.step_log[-1]["loss"] = float((out[0] if return_outputs else out).detach())
            return out

    return Counted


def run_peer(w: TrainWorkload, engine: str) -> EngineResult:
    """peft + transformers' Trainer (padded rows), or trl's SFTTrainer (packed)."""
    import peft
    import transformers
    from transformers import AutoTokenizer, LlamaForCausalLM, TrainerCallback

    packed = engine == "trl"
    if packed:
        import trl
        from datasets import Dataset

        versions = f"trl {trl.__version__}, peft {peft.__version__}"
    else:
        from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

        versions = f"peft {peft.__version__}"
    result = EngineResult(
        engine, f"LoRA r={w.rank} α={w.alpha:g}", baseline_rss_mb=current_rss_mb()
    )
    result.kernels = (f"{w.dtype}; transformers {transformers.__version__}, {versions}; "
                      f"{torch_kernels()}")  # fmt: skip
    dtype = torch.bfloat16 if w.dtype == "bfloat16" else torch.float32
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(w.hf_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = LlamaForCausalLM.from_pretrained(w.hf_model, dtype=dtype)
    lora = peft.LoraConfig(r=w.rank, lora_alpha=w.alpha, lora_dropout=w.dropout,
                           target_modules=HF_TARGETS, task_type="CAUSAL_LM")  # fmt: skip
    out = tempfile.TemporaryDirectory()
    common = dict(
        output_dir=out.name, max_steps=w.total_steps, learning_rate=w.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", bf16=dtype == torch.bfloat16, use_cpu=True,
        gradient_checkpointing=w.grad_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, gradient_accumulation_steps=1,
        logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_drop_last=True, dataloader_num_workers=0, seed=w.seed, data_seed=w.seed,
    )  # fmt: skip
    if packed:
        masks = [[int(m) for m in mask] for mask in w.masks]
        data = Dataset.from_dict({"input_ids": w.ids, "assistant_masks": masks})
        args = trl.SFTConfig(per_device_train_batch_size=w.batch_size, packing=True,
                             max_length=w.seq_len, **common)  # fmt: skip
        trainer = _counted(trl.SFTTrainer)(
            model=model, args=args, train_dataset=data, processing_class=tokenizer,
            peft_config=lora,
        )  # fmt: skip
        result.batching = f"{w.batch_size} × {w.seq_len} packed ({args.packing_strategy})"
    else:
        model = peft.get_peft_model(model, lora)
        rows = [
            {"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask, strict=True)]}
            for ids, mask in zip(w.ids, w.masks, strict=True)
        ]
        args = TrainingArguments(per_device_train_batch_size=w.padded_rows,
                                 remove_unused_columns=False, **common)  # fmt: skip
        collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
        trainer = _counted(Trainer)(model=model, args=args, train_dataset=rows,
                                    data_collator=collator)  # fmt: skip
        result.batching = f"{w.padded_rows} rows padded to the longest"
    trainer.step_log = []
    peaks, stamps = Peaks(), []

    class Clock(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            peaks.steps_begin()
            stamps.append(time.perf_counter())

        def on_step_end(self, *_: Any, **__: Any) -> None:
            stamps.append(time.perf_counter())

    trainer.add_callback(Clock())
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    result.trainable = sum(p.numel() for p in params)
    result.base_mb, result.base_bf16_mb = base_sizes(trainer.model)
    result.load_s = time.perf_counter() - start
    trainer.train()
    peaks.finish(result)
    out.cleanup()
    log = trainer.step_log
    if len(log) != w.total_steps or len(stamps) != w.total_steps + 1:
        raise LLMHoodError(f"{engine}: {len(log)} batches in {len(stamps) - 1} steps, "
                           f"expected {w.total_steps} of each.")  # fmt: skip
    for i, entry in enumerate(log):
        entry["seconds"] = stamps[i + 1] - stamps[i]
    timed(result, w, log)
    return result


RUNNERS: dict[str, Callable[[TrainWorkload], EngineResult]] = {
    "llmhood": lambda w: run_llmhood(w, "lora"),
    "llmhood qlora": lambda w: run_llmhood(w, "qlora"),
    "peft": lambda w: run_peer(w, "peft"),
    "trl": lambda w: run_peer(w, "trl"),
}


def worker(engine: str, workload_file: str) -> None:
    """The child's side: run one engine, print its result as one JSON line."""
    w = TrainWorkload(**json.loads(Path(workload_file).read_text()))
    torch.set_num_threads(w.threads)
    torch.manual_seed(w.seed)
    print(json.dumps(asdict(RUNNERS[engine](w))))


# ---- the parent: run the children, take medians, print the table ----------------------------


def missing(engine: str) -> list[str]:
    return [m for m in NEEDS.get(engine, ()) if importlib.util.find_spec(m) is None]


def run_child(engine: str, workload_file: Path, timeout: float) -> EngineResult:
    env = {"TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    return EngineResult(
        **speed_bench.run_child(engine, workload_file, timeout, "llmhood.train.bench", env)
    )


@dataclass
class TrainReport:
    workload: TrainWorkload
    repeat: int
    results: dict[str, EngineResult]  # medians per engine
    runs: dict[str, list[EngineResult]]
    skipped: dict[str, str] = field(default_factory=dict)  # engine -> why
    machine: dict[str, Any] = field(default_factory=dict)


METRICS = (
    # (field, label, format)
    ("supervised_tok_s", "trained tokens/s", "{:.0f}"),
    ("real_tok_s", "non-pad tokens/s", "{:.0f}"),
    ("step_s", "time per step, s", "{:.2f}"),
    ("supervised_per_step", "trained tokens per step", "{:.0f}"),
    ("real_per_step", "non-pad tokens per step", "{:.0f}"),
    ("positions_per_step", "positions computed per step", "{:.0f}"),
    ("loss", "loss after {total} steps", "{:.4f}"),
    ("first_loss", "loss of step 1", "{:.4f}"),
    ("peak_rss_mb", "peak RSS, MB", "{:.0f}"),
    ("train_rss_mb", "peak RSS while training, MB", "{:.0f}"),
    ("baseline_rss_mb", "RSS before loading, MB", "{:.0f}"),
    ("base_mb", "frozen base weights, MB", "{:.1f}"),
    ("base_bf16_mb", "the same in bf16, MB", "{:.1f}"),
    ("trainable", "trained parameters", "{:,.0f}"),
    ("load_s", "load, s", "{:.1f}"),
)


def median_result(runs: list[EngineResult]) -> EngineResult:
    return speed_bench.median_result(runs, METRICS)


def run(
    model: Path,
    *,
    steps: int = 5,
    warmup: int = 1,
    seq_len: int = 512,
    batch_size: int = 4,
    repeat: int = 3,
    engines: tuple[str, ...] = ENGINES,
    threads: int | None = None,
    timeout: float = 3600,
    log: Callable[[str], None] = print,
) -> TrainReport:
    if repeat < 1:
        raise LLMHoodError(f"--repeat {repeat} is invalid: run every engine at least once.")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise LLMHoodError(f"Unknown engine {unknown[0]!r}; choose from: {', '.join(ENGINES)}.")
    skipped = {}
    for engine in engines:
        if lacking := missing(engine):
            skipped[engine] = f"not measured: {', '.join(lacking)} not installed. {EXTRA}"
    engines = tuple(e for e in engines if e not in skipped)
    with tempfile.TemporaryDirectory() as tmp:
        w = workload(model, Path(tmp), steps=steps, warmup=warmup, seq_len=seq_len,
                     batch_size=batch_size, threads=threads)  # fmt: skip
        report = TrainReport(w, repeat, {}, {}, skipped, machine=machine())
        report.machine["load_average_before"] = load_average()
        workload_file = Path(tmp) / "workload.json"
        workload_file.write_text(json.dumps(asdict(w)))
        for i in range(repeat):
            for engine in engines:
                log(f"run {i + 1}/{repeat}: {engine}")
                report.runs.setdefault(engine, []).append(run_child(engine, workload_file, timeout))
    report.machine["load_average_after"] = load_average()
    report.results = {engine: median_result(runs) for engine, runs in report.runs.items()}
    return report


# ---- the table -------------------------------------------------------------------------------


def targets(report: TrainReport) -> list[tuple[str, float | None, float]]:
    """(target, measured value, goal): "≥" unless the name says ≤ or <; None: not measured."""
    qlora = report.results.get("llmhood qlora")
    base = qlora.base_mb / qlora.base_bf16_mb if qlora and qlora.base_bf16_mb else None
    return [
        ("trained tok/s ≥ 1.5× peft + transformers",
         ratio(report, "supervised_tok_s", "llmhood", "peft"), 1.5),
        ("peak RSS ≤ 0.6× peft + transformers",
         ratio(report, "peak_rss_mb", "llmhood", "peft"), 0.6),
        ("trained tok/s ≥ 1.15× trl SFTTrainer (packed)",
         ratio(report, "supervised_tok_s", "llmhood", "trl"), 1.15),
        ("QLoRA base weights ≤ 0.3× their bf16 size", base, 0.3),
        ("QLoRA peak RSS < LoRA's", ratio(report, "peak_rss_mb", "llmhood qlora", "llmhood"), 1.0),
    ]  # fmt: skip


def format_report(report: TrainReport) -> str:
    w, m = report.workload, report.machine
    engines = list(report.results)
    compare = [e for e in ("peft", "trl") if e in report.results and "llmhood" in report.results]
    header = ["", *(LABELS[e] for e in engines), *(f"llmhood ÷ {e}" for e in compare)]
    rows = [header]
    for name, label in (("method", "method"), ("batching", "batches")):
        cells = [getattr(report.results[e], name) for e in engines]
        rows.append([label, *cells, *[""] * len(compare)])
    for name, label, fmt in METRICS:
        row = [label.format(total=w.total_steps)]
        for e in engines:
            value = getattr(report.results[e], name)
            row.append("–" if value is None else fmt.format(value))
        for e in compare:
            r = ratio(report, name, "llmhood", e)
            row.append("–" if r is None else f"{r:.2f}×")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    rows_text = "rows" if len(w.ids) != 1 else "row"
    threads = f"{w.threads} thread{'s' if w.threads != 1 else ''}"
    lines = [
        f"llmhood bench train: {Path(w.model).name}, LoRA SFT",
        f"machine: {m['cpu']}, {m['cores']} cores ({m['isa']}), torch {m['torch']}, "
        f"Python {m['python']}, {m['date']}",
        f"cpu: {m.get('cpu_summary', m['cpu'])}",
        f"load average before/after: {m.get('load_average_before')} / "
        f"{m.get('load_average_after')}",
        f"median of {report.repeat} run(s) per engine, each in its own process; {threads}; "
        f"{w.dtype}{' autocast' if w.dtype == 'bfloat16' else ''}; "
        f"{'activation checkpointing; ' if w.grad_checkpointing else ''}rank {w.rank}, "
        f"alpha {w.alpha:g}, dropout {w.dropout:g}, all 7 linear layers; AdamW lr {w.lr:g} "
        f"constant, clip 1.0; {w.warmup} warm-up + {w.steps} timed steps",
        f"data: {len(w.ids)} chat {rows_text} (llmhood.train.identity, shuffled copies), "
        f"{sum(map(len, w.ids))} tokens, {sum(sum(m[1:]) for m in w.masks)} trained; "
        f"sequence length {w.seq_len}",
        "",
    ]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(widths[i]) for i, c in enumerate(row) if i]
        lines.append("  ".join(cells).rstrip())
    for engine, why in report.skipped.items():
        lines.append(f"{LABELS[engine]}: {why}")
    kernels = [(e, r.kernels) for e, r in report.results.items() if r.kernels]
    if kernels:
        lines += ["", "what ran:"]
        lines += [f"  {LABELS[engine]:<22}{what}" for engine, what in kernels]
    lines += ["", "targets:"]
    lines += speed_bench.target_lines(targets(report), 48)
    return "\n".join(lines)


def to_json(report: TrainReport) -> dict[str, Any]:
    skip = ("ids", "masks")
    work = {f.name: getattr(report.workload, f.name) for f in fields(report.workload)
            if f.name not in skip}  # fmt: skip
    work["rows"] = len(report.workload.ids)
    return {
        "machine": report.machine,
        "workload": work,
        "repeat": report.repeat,
        "medians": {e: asdict(r) for e, r in report.results.items()},
        "runs": {e: [asdict(r) for r in runs] for e, runs in report.runs.items()},
        "skipped": report.skipped,
        "targets": speed_bench.targets_json(targets(report)),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.exit(
            "usage: python -m llmhood.train.bench --worker ENGINE WORKLOAD_FILE "
            "(use `llmhood bench train`)"
        )

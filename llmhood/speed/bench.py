"""`llmhood bench`: llmhood against transformers and llama.cpp, in one run on one machine.

Speed numbers only mean something side by side: the same prompts, the same machine, the
same minute. Every engine runs the same token ids (from llmhood's tokenizer) with greedy
decoding, in its own child process, so that its load time and peak memory are its own and
a crash in one does not end the run:

* llmhood in the automatic mode (what `llmhood.load` gives), in the int8 mode, in plain
  bf16 and in the float32 reference;
* transformers' `LlamaForCausalLM` reading the same GGUF file (its own dequantization), in
  bf16 and float32;
* llama.cpp through llama-cpp-python on the GGUF's own Q4_1 weights, when installed.

Measured per engine: decode speed at batch 1 (new tokens after a chat prompt), prefill
speed on a 512-token prompt (last logits only), time to first token, the aggregate speed
of 16 chat prompts of mixed lengths at once (llama.cpp: one after the other, as its Python
binding serves them), model load time and peak resident memory. Each engine is run
`repeat` times and every number is the median. The quality table gives the perplexity of
every llmhood mode on a fixed text next to float32's (llmhood.perplexity); more than 2%
worse is labelled lossy.

Other processes on the machine distort every number here, llama.cpp's most (its threads
spin while they wait for each other). The load average is printed with the results.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import torch

from llmhood.errors import LLMHoodError
from llmhood.speed.cache import CACHE_ENV

CHAT_PROMPT = "Write a short story about a robot who learns to paint."
BATCH_QUESTIONS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "What is 17 times 23?",
    "Give me a short recipe for pancakes, with the ingredients and the steps in order.",
    "Who wrote Romeo and Juliet?",
    "Describe the water cycle for a ten-year-old, mentioning evaporation, condensation and "
    "precipitation, and say why it matters for life on Earth.",
    "Translate 'good morning' into Spanish.",
    "List four planets of the solar system.",
    "What does a CPU do?",
    "Summarise the plot of Cinderella in three sentences, keeping the ending.",
    "Why do cats purr?",
    "Suggest a name for a friendly robot that helps in the kitchen, and explain the choice.",
    "What is the boiling point of water at sea level in Celsius and in Fahrenheit?",
    "Tell me a fun fact about octopuses.",
)
ENGINES = (
    "llmhood",
    "llmhood plain",
    "llmhood int8",
    "llmhood bf16",
    "llmhood fp32",
    "transformers bf16",
    "transformers fp32",
    "llama.cpp",
)
LLAMA_CPP_MISSING = (
    "llama-cpp-python is not installed, so llama.cpp is not measured. Install the benchmark "
    "extra, `pip install -e '.[bench]'` (`make bench` does; it compiles llama.cpp, 10+ minutes)."
)


@dataclass(frozen=True)
class Workload:
    """What every engine runs. Token ids, so that all engines see exactly the same input."""

    model: str  # path of the GGUF file
    chat_ids: list[int]
    decode_tokens: int
    prefill_ids: list[int]
    batch_ids: list[list[int]]
    batch_new_tokens: int
    stop_ids: list[int]
    threads: int
    perplexity_tokens: int


@dataclass
class Result:
    """One engine's numbers from one child process (None: not measured)."""

    engine: str
    mode: str = ""
    decode_tok_s: float | None = None
    decode_tokens: int = 0
    prefill_tok_s: float | None = None
    ttft_s: float | None = None
    batch_tok_s: float | None = None
    batch_tokens: int = 0
    load_s: float | None = None
    peak_rss_mb: float | None = None
    baseline_rss_mb: float | None = None  # after imports, before loading the model
    weights_mb: float | None = None
    kernels: str = ""  # which kernels did the work, on which instruction set


FULL = dict(decode_tokens=128, prefill=512, prompts=16, batch_new_tokens=64, ppl=512)
QUICK = dict(decode_tokens=8, prefill=32, prompts=4, batch_new_tokens=4, ppl=64)


def workload(model: Path, quick: bool = False) -> Workload:
    """The prompts, as token ids of the model's own tokenizer (read from the GGUF header)."""
    from llmhood.llm import END_OF_TURN
    from llmhood.perplexity import document_text
    from llmhood.tokenizer import BPETokenizer
    from llmhood.weights.gguf import read_gguf

    sizes = QUICK if quick else FULL
    tokenizer = BPETokenizer.from_gguf(read_gguf(model).metadata)

    def chat(question: str) -> list[int]:
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], True)
        return tokenizer.encode(text)

    stops = {tokenizer.token_to_id(t) for t in END_OF_TURN} | {tokenizer.eos_id}
    return Workload(
        model=str(model),
        chat_ids=chat(CHAT_PROMPT),
        decode_tokens=sizes["decode_tokens"],
        prefill_ids=tokenizer.encode(document_text()[: 16 * sizes["prefill"]])[: sizes["prefill"]],
        batch_ids=[chat(q) for q in BATCH_QUESTIONS[: sizes["prompts"]]],
        batch_new_tokens=sizes["batch_new_tokens"],
        stop_ids=sorted(i for i in stops if i is not None),
        threads=torch.get_num_threads(),
        perplexity_tokens=sizes["ppl"],
    )


# ---- the engines, each run inside its own child process ---------------------------------------


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def tensor_mb(tensors: list[torch.Tensor]) -> float:
    """Bytes of the distinct storages behind `tensors`: shared or tied tensors count once."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values()) / 2**20


def torch_kernels() -> str:
    """torch's CPU kernels as this process runs them (llmhood.speed.cpu)."""
    from llmhood.speed.cpu import cpu

    c = cpu()
    return f"torch kernels {c.kernels}, bf16 matmuls {'native' if c.bf16 else 'emulated'}"


def decode_rate(stamps: list[float]) -> float | None:
    """Tokens per second after the first: stamps[i] is when token i was ready."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None


def run_llmhood(
    w: Workload, dtype: str, quantize: str | None = "auto", decode_step: bool | None = None
) -> Result:
    import llmhood
    from llmhood.generate import SamplingParams, generate

    result = Result(f"llmhood {quantize or dtype}", baseline_rss_mb=rss_mb())
    start = time.perf_counter()
    llm = llmhood.load(
        w.model, dtype=dtype, quantize=quantize, progress=False, decode_step=decode_step
    )
    result.load_s = time.perf_counter() - start
    result.mode = llm.mode.name
    step = "the fused decode step" if llm.model.decode_step else "the Python blocks"
    result.kernels = f"decoding through {step}; {torch_kernels()}"
    model, stops = llm.model, set(w.stop_ids)
    stamps: list[float] = []
    model.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))

    def run(prompts: list[list[int]], new_tokens: int) -> tuple[float, int]:
        stamps.clear()
        start = time.perf_counter()
        out = generate(
            model, llm.tokenizer, prompts, max_new_tokens=new_tokens,
            sampling=SamplingParams(temperature=0.0), stop_token_ids=stops,
            batch_size=len(prompts),
        )  # fmt: skip
        return start, sum(len(g.token_ids) for g in out)

    start, result.decode_tokens = run([w.chat_ids], w.decode_tokens)
    result.ttft_s = stamps[0] - start
    result.decode_tok_s = decode_rate(stamps[: result.decode_tokens])
    with torch.inference_mode():
        tokens = torch.tensor([w.prefill_ids])
        cache = model.new_cache(1, tokens.shape[1])
        start = time.perf_counter()
        model(tokens, cache=cache, last_only=True)
        result.prefill_tok_s = tokens.shape[1] / (time.perf_counter() - start)
    start, result.batch_tokens = run(w.batch_ids, w.batch_new_tokens)
    result.batch_tok_s = result.batch_tokens / (time.perf_counter() - start)
    result.weights_mb = tensor_mb([*model.parameters(), *model.buffers()])
    result.peak_rss_mb = rss_mb()
    return result


def run_transformers(w: Workload, dtype: str) -> Result:
    from transformers import LlamaForCausalLM
    from transformers.generation.streamers import BaseStreamer

    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    result = Result(f"transformers {dtype}", mode=str(torch_dtype).removeprefix("torch."))
    result.kernels = torch_kernels()
    result.baseline_rss_mb = rss_mb()
    path = Path(w.model)
    start = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch_dtype)
    model.eval()
    result.load_s = time.perf_counter() - start
    stops = w.stop_ids

    class Stamps(BaseStreamer):
        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.prompt_seen = False

        def put(self, value: torch.Tensor) -> None:
            if self.prompt_seen:
                self.stamps.append(time.perf_counter())
            self.prompt_seen = True

        def end(self) -> None:
            pass

    def generate(prompts: list[list[int]], new_tokens: int, streamer=None) -> torch.Tensor:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[stops[0]] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                eos_token_id=stops, pad_token_id=stops[0], streamer=streamer,
            )  # fmt: skip
        return out[:, width:]

    def count(rows: torch.Tensor) -> int:
        """New tokens per row up to its first stop token (which is not counted)."""
        total = 0
        for row in rows.tolist():
            ends = [i for i, t in enumerate(row) if t in stops]
            total += ends[0] if ends else len(row)
        return total

    streamer = Stamps()
    start = time.perf_counter()
    result.decode_tokens = count(generate([w.chat_ids], w.decode_tokens, streamer))
    result.ttft_s = streamer.stamps[0] - start
    result.decode_tok_s = decode_rate(streamer.stamps[: result.decode_tokens])
    with torch.inference_mode():
        tokens = torch.tensor([w.prefill_ids])
        start = time.perf_counter()
        model(tokens, logits_to_keep=1)
        result.prefill_tok_s = tokens.shape[1] / (time.perf_counter() - start)
    start = time.perf_counter()
    result.batch_tokens = count(generate(w.batch_ids, w.batch_new_tokens))
    result.batch_tok_s = result.batch_tokens / (time.perf_counter() - start)
    result.weights_mb = tensor_mb([*model.parameters(), *model.buffers()])
    result.peak_rss_mb = rss_mb()
    return result


def run_llamacpp(w: Workload, _: str = "") -> Result:
    import llama_cpp

    result = Result("llama.cpp", mode="Q4_1 (GGUF as is)", baseline_rss_mb=rss_mb())
    info = getattr(llama_cpp, "llama_print_system_info", None)  # a low-level binding
    system = info() if info else b"unknown"
    system = system.decode() if isinstance(system, bytes) else str(system)
    result.kernels = "llama.cpp: " + " ".join(system.split())
    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=w.model, n_ctx=2048, n_batch=512, n_threads=w.threads,
        n_threads_batch=w.threads, verbose=False,
    )  # fmt: skip
    result.load_s = time.perf_counter() - start
    stops = set(w.stop_ids)

    def generate(prompt: list[int], new_tokens: int) -> list[float]:
        stamps = []
        for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0):
            if token in stops:
                break
            stamps.append(time.perf_counter())
            if len(stamps) == new_tokens:
                break
        return stamps

    start = time.perf_counter()
    stamps = generate(w.chat_ids, w.decode_tokens)
    result.ttft_s, result.decode_tokens = stamps[0] - start, len(stamps)
    result.decode_tok_s = decode_rate(stamps)
    llm.reset()
    start = time.perf_counter()
    llm.eval(w.prefill_ids)
    result.prefill_tok_s = len(w.prefill_ids) / (time.perf_counter() - start)
    start = time.perf_counter()
    result.batch_tokens = sum(len(generate(p, w.batch_new_tokens)) for p in w.batch_ids)
    result.batch_tok_s = result.batch_tokens / (time.perf_counter() - start)
    result.weights_mb = llama_cpp.llama_model_size(llm.model) / 2**20
    result.peak_rss_mb = rss_mb()
    return result


def run_quality(w: Workload, _: str = "") -> dict[str, Any]:
    """Perplexity of every mode this machine has, next to float32's (llmhood.speed.modes)."""
    from llmhood.speed.guard import evaluate
    from llmhood.speed.modes import candidates

    verdicts = evaluate(Path(w.model), candidates(), progress=False, tokens=w.perplexity_tokens)
    return {"verdicts": [asdict(v) for v in verdicts.values()]}


RUNNERS: dict[str, Callable[[Workload, str], Any]] = {
    "llmhood": lambda w, _: run_llmhood(w, "auto"),
    "llmhood plain": lambda w, _: run_llmhood(w, "auto", decode_step=False),
    "llmhood int8": lambda w, _: run_llmhood(w, "bfloat16", "int8"),
    "llmhood bf16": lambda w, _: run_llmhood(w, "bfloat16", None),
    "llmhood fp32": lambda w, _: run_llmhood(w, "float32", None),
    "transformers bf16": lambda w, _: run_transformers(w, "bf16"),
    "transformers fp32": lambda w, _: run_transformers(w, "fp32"),
    "llama.cpp": run_llamacpp,
    "quality": run_quality,
}


def worker(engine: str, workload_file: str) -> None:
    """The child's side: run one engine, print its result as one JSON line."""
    w = Workload(**json.loads(Path(workload_file).read_text()))
    torch.set_num_threads(w.threads)
    out = RUNNERS[engine](w, "")
    print(json.dumps(asdict(out) if isinstance(out, Result) else out))


# ---- where a decode step's time goes ----------------------------------------------------------

KERNELS = {  # operators that do a step's arithmetic; everything else is overhead of some kind
    "aten::_weight_int4pack_mm_for_cpu": "int4 matmuls",
    "aten::_weight_int8pack_mm": "int8 matmuls",
    "aten::mm": "float matmuls",
    "aten::addmm": "float matmuls",
    "aten::bmm": "attention matmuls",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention matmuls",
    "llmhood::decode_step": "decode step loops",
}


def profile_decode(model: Path, steps: int = 32, top: int = 12) -> str:
    """Where the automatic mode's decode steps spend their time, by torch.profiler: through
    the fused decode step (llmhood.model.fast.decode_step), then through the Python blocks.

    The profiler adds a cost to every operator call, so its times overstate the many small
    calls; the wall time per step is measured without it, and the profile is read for
    shares and counts: how much goes to the matmuls that do the work, and how many other
    operator calls each step makes.
    """
    import llmhood

    w = workload(model)
    llm = llmhood.load(model, progress=False)
    fused = llm.model.decode_step is not None
    reports = [_profile_steps(llm, w, steps, top, fused)]
    if fused:
        llm.model.set_decode_step(False)
        reports.append(_profile_steps(llm, w, steps, top, False))
    return "\n\n".join(reports)


def _profile_steps(llm: Any, w: Workload, steps: int, top: int, fused: bool) -> str:
    from torch.profiler import ProfilerActivity, profile

    net, prompt = llm.model, torch.tensor([w.chat_ids])
    cache = net.new_cache(1, prompt.shape[1] + 2 * steps)
    with torch.inference_mode():
        token = net(prompt, cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)

        def decode() -> None:
            nonlocal token
            for _ in range(steps):
                token = net(token, cache=cache)[:, -1].argmax(-1, keepdim=True)

        start = time.perf_counter()
        decode()
        wall = (time.perf_counter() - start) / steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            decode()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    calls = sum(e.cpu_parent is None for e in prof.events()) / steps  # those the model makes
    shares: dict[str, float] = {}
    for e in events:
        group = KERNELS.get(e.key, "everything else")
        shares[group] = shares.get(group, 0.0) + e.self_cpu_time_total / total
    path = "the fused decode step" if fused else "the Python blocks"
    lines = [
        f"decode steps of {llm.mode.name} through {path}, batch 1, context {prompt.shape[1]} to "
        f"{prompt.shape[1] + 2 * steps} tokens: {wall * 1e3:.2f} ms per step "
        f"({1 / wall:.1f} tok/s), {calls:.0f} operator calls per step",
        "share of the profiled time (torch.profiler):",
    ]
    for name, share in sorted(shares.items(), key=lambda g: -g[1]):
        lines.append(f"  {name:<20}{share:>6.0%}")
    lines.append(f"the {top} operators with the most time of their own (nested calls count):")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        share = e.self_cpu_time_total / total
        lines.append(f"  {e.key:<42}{share:>6.0%}  {e.count / steps:>6.0f} calls per step")
    return "\n".join(lines)


# ---- the parent: run the children, take medians, print the table ----------------------------


def llama_cpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def run_child(
    engine: str,
    workload_file: Path,
    timeout: float,
    module: str = "llmhood.speed.bench",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One engine in a child process (`python -m module --worker`), its result as the last
    line of its output. Its llmhood cache is the one beside the workload file: the run's
    first llmhood load starts from nothing (cold), and later ones find what it left (warm),
    whatever the user's own cache holds."""
    cmd = [sys.executable, "-m", module, "--worker", engine, str(workload_file)]
    env = {**os.environ, **(env or {}), CACHE_ENV: str(workload_file.parent / "cache")}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise LLMHoodError(f"The {engine} run took longer than {timeout:.0f} s.") from e
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise LLMHoodError(f"The {engine} run failed (exit status {done.returncode}):\n{tail}")
    return json.loads(lines[-1])


@dataclass
class Report:
    workload: Workload
    repeat: int
    results: dict[str, Result]  # medians per engine
    runs: dict[str, list[Result]]
    quality: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)  # engine -> why
    cold_load_s: float | None = None
    machine: dict[str, Any] = field(default_factory=dict)


METRICS = (
    # (field, label, format, higher is better)
    ("decode_tok_s", "decode tok/s, batch 1", "{:.1f}", True),
    ("prefill_tok_s", "prefill tok/s, {prefill} tokens", "{:.0f}", True),
    ("ttft_s", "time to first token, s", "{:.3f}", False),
    ("batch_tok_s", "{prompts} prompts at once, tok/s", "{:.1f}", True),
    ("load_s", "load, s", "{:.2f}", False),
    ("peak_rss_mb", "peak RSS, MB", "{:.0f}", False),
    ("baseline_rss_mb", "RSS before loading, MB", "{:.0f}", False),
    ("weights_mb", "weights in memory, MB", "{:.0f}", False),
)


def median_result(runs: list[Any], metrics: tuple[tuple[str, ...], ...] = METRICS) -> Any:
    """The first run with every metric replaced by its median over the runs that have it."""
    values = {}
    for name, *_ in metrics:
        measured = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        values[name] = statistics.median(measured) if measured else None
    return replace(runs[0], **values)


def machine() -> dict[str, Any]:
    from llmhood.speed.cpu import cpu

    c = cpu()
    return {
        "cpu": c.name,
        "cpu_flags": list(c.flags),
        "cpu_summary": c.describe(),
        "cores": os.cpu_count(),
        "isa": c.kernels,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "date": date.today().isoformat(),
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def run(
    model: Path,
    repeat: int = 3,
    quick: bool = False,
    engines: tuple[str, ...] = ENGINES,
    quality: bool = True,
    timeout: float = 1800,
    log: Callable[[str], None] = print,
) -> Report:
    if repeat < 1:
        raise LLMHoodError(f"--repeat {repeat} is invalid: run every engine at least once.")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise LLMHoodError(f"Unknown engine {unknown[0]!r}; choose from: {', '.join(ENGINES)}.")
    w = workload(model, quick)
    skipped = {}
    if "llama.cpp" in engines and not llama_cpp_installed():
        skipped["llama.cpp"] = LLAMA_CPP_MISSING
        engines = tuple(e for e in engines if e != "llama.cpp")
    report = Report(w, repeat, {}, {}, [], skipped, machine=machine())
    report.machine["load_average_before"] = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        workload_file = Path(tmp) / "workload.json"
        workload_file.write_text(json.dumps(asdict(w)))
        if "llmhood" in engines:
            log("llmhood: first load, from an empty cache (checks quality, prepares weights)")
            report.cold_load_s = Result(**run_child("llmhood", workload_file, timeout)).load_s
        for i in range(repeat):
            for engine in engines:
                log(f"run {i + 1}/{repeat}: {engine}")
                result = Result(**run_child(engine, workload_file, timeout))
                report.runs.setdefault(engine, []).append(result)
        if quality:
            log("quality: perplexity of every mode")
            report.quality = run_child("quality", workload_file, timeout)["verdicts"]
    report.machine["load_average_after"] = load_average()
    report.results = {engine: median_result(runs) for engine, runs in report.runs.items()}
    return report


# ---- the table -------------------------------------------------------------------------------


def ratio(report: Any, metric: str, a: str, b: str) -> float | None:
    """Engine a's median of `metric` over engine b's (any report with `results`)."""
    x, y = report.results.get(a), report.results.get(b)
    if x is None or y is None or getattr(x, metric) is None or not getattr(y, metric):
        return None
    return getattr(x, metric) / getattr(y, metric)


def targets(report: Report) -> list[tuple[str, float | None, float]]:
    """(target, measured value, goal) for each of the goals llmhood is held to, all as
    "value ≥ goal" except where the name says ≤; None where not measured."""
    auto = report.results.get("llmhood")

    def own(metric: str, per: str) -> float | None:
        if auto is None or not getattr(auto, metric) or not getattr(auto, per):
            return None
        return getattr(auto, metric) / getattr(auto, per)

    rows = [
        ("decode ≥ 3× transformers bf16",
         ratio(report, "decode_tok_s", "llmhood", "transformers bf16"), 3.0),
        ("decode ≥ 1.0× llama.cpp", ratio(report, "decode_tok_s", "llmhood", "llama.cpp"), 1.0),
        ("prefill ≥ 2× llama.cpp", ratio(report, "prefill_tok_s", "llmhood", "llama.cpp"), 2.0),
        ("batch ≥ 6× own batch-1 decode", own("batch_tok_s", "decode_tok_s"), 6.0),
        ("warm load ≤ 2 s", auto.load_s if auto else None, 2.0),
        ("peak RSS ≤ 1.5× weights", own("peak_rss_mb", "weights_mb"), 1.5),
    ]  # fmt: skip
    if auto is not None and auto.peak_rss_mb and auto.weights_mb:
        grown = (auto.peak_rss_mb - (auto.baseline_rss_mb or 0)) / auto.weights_mb
        rows.append(("  RSS growth from loading on ≤ 1.5× weights", grown, 1.5))
    return rows


def met(name: str, value: float | None, goal: float) -> bool | None:
    """Whether a target is met: "value ≥ goal" unless its name says ≤ or <."""
    if value is None:
        return None
    if "<" in name:
        return value < goal
    return value <= goal if "≤" in name else value >= goal


def format_report(report: Report) -> str:
    w, m = report.workload, report.machine
    sizes = {"prefill": len(w.prefill_ids), "prompts": len(w.batch_ids)}
    engines = list(report.results)
    header = ["", *engines]
    compare = [e for e in ("transformers bf16", "llama.cpp") if e in report.results]
    header += [f"llmhood ÷ {e}" for e in compare]
    rows = [header, ["mode", *(report.results[e].mode for e in engines), *[""] * len(compare)]]
    for name, label, fmt, _ in METRICS:
        row = [label.format(**sizes)]
        for e in engines:
            value = getattr(report.results[e], name)
            row.append("–" if value is None else fmt.format(value))
        for e in compare:
            r = ratio(report, name, "llmhood", e) if "llmhood" in report.results else None
            row.append("–" if r is None else f"{r:.2f}×")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        f"llmhood bench: {Path(w.model).name}",
        f"machine: {m['cpu']}, {m['cores']} cores ({m['isa']}), torch {m['torch']}, "
        f"Python {m['python']}, {m['date']}",
        f"cpu: {m.get('cpu_summary', m['cpu'])}",
        f"load average before/after: {m.get('load_average_before')} / "
        f"{m.get('load_average_after')}",
        f"median of {report.repeat} run(s) per engine, each in its own process; "
        f"{w.threads} threads; greedy; decode: {w.decode_tokens} new tokens after a "
        f"{len(w.chat_ids)}-token chat prompt; batch: {len(w.batch_ids)} chat prompts of "
        f"{min(map(len, w.batch_ids))}-{max(map(len, w.batch_ids))} tokens, "
        f"{w.batch_new_tokens} new tokens each",
        "",
    ]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(widths[i]) for i, c in enumerate(row) if i]
        lines.append("  ".join(cells).rstrip())
    if report.cold_load_s is not None:
        lines.append(f"cold load (llmhood's first load of a model file: quality check, "
                     f"prepared weights): {report.cold_load_s:.2f} s")  # fmt: skip
    for engine, why in report.skipped.items():
        lines.append(f"{engine}: {why}")
    kernels = [(e, r.kernels) for e, r in report.results.items() if r.kernels]
    if kernels:
        lines += ["", "kernels that ran:"]
        lines += [f"  {engine:<20}{what}" for engine, what in kernels]
    if report.quality:
        from llmhood.perplexity import Verdict

        lines += ["", f"quality: perplexity on the first {w.perplexity_tokens} tokens of "
                  "Python's pydoc topics (lossy: > 2% above float32)"]  # fmt: skip
        for v in report.quality:
            lines.append(f"  {v['mode']:<28}{Verdict(**v).label()}")
    lines += ["", "targets (llmhood = automatic mode):"]
    lines += target_lines(targets(report), 46)
    return "\n".join(lines)


Target = tuple[str, float | None, float]  # (name, measured value or None, goal)


def target_lines(rows: list[Target], width: int) -> list[str]:
    """One line per target: its name, the value measured, the goal, met or NOT met."""
    lines = []
    for name, value, goal in rows:
        shown = "not measured" if value is None else f"{value:.2f}"
        ok = met(name, value, goal)
        verdict = "" if ok is None else ("met" if ok else "NOT met")
        lines.append(f"  {name:<{width}}{shown:>14}  (goal {goal:g})  {verdict}")
    return lines


def targets_json(rows: list[Target]) -> list[dict[str, Any]]:
    return [{"target": name, "value": value, "goal": goal, "met": met(name, value, goal)}
            for name, value, goal in rows]  # fmt: skip


def to_json(report: Report) -> dict[str, Any]:
    return {
        "machine": report.machine,
        "workload": {k: v for k, v in asdict(report.workload).items() if not k.endswith("ids")},
        "repeat": report.repeat,
        "medians": {e: asdict(r) for e, r in report.results.items()},
        "runs": {e: [asdict(r) for r in runs] for e, runs in report.runs.items()},
        "quality": report.quality,
        "skipped": report.skipped,
        "cold_load_s": report.cold_load_s,
        "targets": targets_json(targets(report)),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.exit(
            "usage: python -m llmhood.speed.bench --worker ENGINE WORKLOAD_FILE "
            "(use `llmhood bench`)"
        )

"""`llmhood bench constrain`: the constrained decoder's speed against xgrammar's, and what a
constraint costs a generation.

Three measurements, for function-call schemas the size of BFCL's (an object of three to six
typed parameters with descriptions, enums, a nested object or an array):

* **compile**: a schema to its automaton with the token masks of its states, ours
  (`compile_json_schema` and the `CompiledDFA` around it, which computes every state's mask
  for DFAs of up to PRECOMPUTE_STATES states) against xgrammar's
  `GrammarCompiler.compile_json_schema` with its cache off and the options that give the same
  language (it too precomputes token masks at compile time).
* **mask**: the next-token mask after each token of the same token sequences (the schemas'
  example calls, as the model's tokenizer spells them), ours from a freshly compiled
  constraint, against xgrammar's `fill_next_token_bitmask`. Medians over all tokens. Also
  shown, without a target: ours computed lazily, each state's mask on first visit (what
  DFAs above PRECOMPUTE_STATES states do).
* **decode**: generated tokens per second of the same prompts with and without the schema,
  greedy, through `LLM.generate`, the constraint compiled in the first of the runs.

Targets (issue 12): mask ≤ xgrammar's per token; compile ≤ 50 ms; constrained decoding
≥ 0.8× the unconstrained tokens/s.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from llmhood.generate.constrain.matcher import PRECOMPUTE_STATES, CompiledDFA
from llmhood.speed.bench import met, target_lines

# (schema, an example call's arguments): BFCL "simple"-sized function parameters.
SCHEMAS: list[tuple[dict, dict]] = [
    ({"type": "object", "properties": {
        "city": {"type": "string", "description": "The city, e.g. San Francisco"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "description": "Days of forecast", "minimum": 1,
                 "maximum": 14}},
      "required": ["city"]},
     {"city": "Paris", "unit": "celsius", "days": 3}),
    ({"type": "object", "properties": {
        "base": {"type": "number", "description": "The base of the triangle"},
        "height": {"type": "number", "description": "The height of the triangle"},
        "unit": {"type": "string", "description": "The unit of measure"}},
      "required": ["base", "height"]},
     {"base": 10, "height": 5.5, "unit": "cm"}),
    ({"type": "object", "properties": {
        "query": {"type": "string", "description": "What to search for"},
        "max_results": {"type": "integer", "minimum": 1, "maximum": 50},
        "safe": {"type": "boolean"},
        "sort": {"type": "string", "enum": ["relevance", "date", "rating"]},
        "filters": {"type": "array", "items": {"type": "string"}, "maxItems": 5}},
      "required": ["query"]},
     {"query": "cheap flights to Rome", "max_results": 10, "safe": True, "sort": "date",
      "filters": ["nonstop"]}),
    ({"type": "object", "properties": {
        "patient": {"type": "object", "properties": {
            "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0,
                                                "maximum": 130}},
            "required": ["name", "age"]},
        "symptoms": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "urgent": {"type": "boolean", "description": "Needs care today"}},
      "required": ["patient", "symptoms"]},
     {"patient": {"name": "Ada Lovelace", "age": 36}, "symptoms": ["fever", "cough"],
      "urgent": False}),
    ({"type": "object", "properties": {
        "amount": {"type": "number", "description": "The amount to convert"},
        "from_currency": {"type": "string", "description": "ISO code, e.g. USD"},
        "to_currency": {"type": "string", "description": "ISO code, e.g. EUR"},
        "date": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
      "required": ["amount", "from_currency", "to_currency"]},
     {"amount": 250.75, "from_currency": "USD", "to_currency": "JPY", "date": None}),
    ({"type": "object", "properties": {
        "title": {"type": "string"}, "year": {"type": "integer", "minimum": 1900,
                                              "maximum": 2030},
        "genres": {"type": "array", "items": {"type": "string", "enum": [
            "drama", "comedy", "action", "horror", "documentary"]}, "maxItems": 3},
        "rating": {"type": "number", "minimum": 0, "maximum": 10}},
      "required": ["title"]},
     {"title": "Metropolis", "year": 1927, "genres": ["drama"], "rating": 8.3}),
]  # fmt: skip
PROMPT = "Write the arguments of the function call as JSON.\n"


def _seconds(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def compile_section(llm, compiler, options: dict, repeat: int, log) -> dict:
    """Median ms per schema, ours and xgrammar's: medians over repeats, then over schemas.
    Ours starts each run with regex.py's cache of compiled patterns emptied, so that every
    run compiles."""
    from llmhood.generate.constrain.json_schema import compile_json_schema
    from llmhood.generate.constrain.regex import compile_regex

    constraints = llm.constraints

    def ours(schema: dict) -> float:
        compile_regex.cache_clear()
        return _seconds(
            lambda: CompiledDFA(compile_json_schema(schema), constraints.vocab, constraints.walk)
        )

    def theirs(schema: dict) -> float:
        return _seconds(compiler.compile_json_schema, json.dumps(schema), **options)

    result = {}
    for name, timed in (("llmhood", ours), ("xgrammar", theirs)):
        per_schema = [statistics.median(timed(s) for _ in range(repeat)) for s, _ in SCHEMAS]
        result[name] = 1e3 * statistics.median(per_schema)
        log(f"compile {name}: {result[name]:.2f} ms median over {len(SCHEMAS)} schemas")
    return result


def mask_section(llm, compiler, options: dict, log) -> dict:
    """Median ms per next-token mask over the tokens of every schema's example call: ours on
    a freshly compiled constraint (masks precomputed), and on one computing each state's mask
    on first visit; xgrammar's after its compile (which precomputes part of its masks)."""
    import xgrammar

    from llmhood.generate.constrain.json_schema import compile_json_schema

    constraints, vocab_size = llm.constraints, llm.constraints.vocab.size
    separators = options.get("separators") or (",", ":")
    times: dict[str, list[float]] = {"llmhood": [], "llmhood first visit": [], "xgrammar": []}
    for schema, example in SCHEMAS:
        ids = llm.tokenizer.encode(json.dumps(example, separators=separators))
        dfa = compile_json_schema(schema)
        compiled = {
            "llmhood": CompiledDFA(dfa, constraints.vocab, constraints.walk),
            "llmhood first visit": CompiledDFA(dfa, constraints.vocab, constraints.walk,
                                               precompute=0),
        }  # fmt: skip
        grammar = compiler.compile_json_schema(json.dumps(schema), **options)
        reference = xgrammar.GrammarMatcher(grammar)
        bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
        for name in ("llmhood", "llmhood first visit"):
            matcher = compiled[name].matcher()
            for token in ids:
                times[name].append(_seconds(matcher.allowed))
                matcher.advance(token)
        for token in ids:
            times["xgrammar"].append(_seconds(reference.fill_next_token_bitmask, bitmask))
            reference.accept_token(token)
    result = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    result["tokens"] = len(times["xgrammar"])
    log(f"mask ms per token: llmhood {result['llmhood']:.4f} (first visit "
        f"{result['llmhood first visit']:.4f}), xgrammar {result['xgrammar']:.4f}, over "
        f"{result['tokens']} tokens")  # fmt: skip
    return result


def decode_section(llm, tokens: int, repeat: int, log) -> dict:
    """Generated tokens/s, greedy, with and without each schema; medians over repeats."""
    result = {}
    for name in ("unconstrained", "constrained"):
        rates = []
        for _ in range(repeat):
            count, seconds = 0, 0.0
            for schema, _ in SCHEMAS:
                options = {"json_schema": schema} if name == "constrained" else {}
                start = time.perf_counter()
                out = llm.generate(PROMPT + json.dumps(schema), max_new_tokens=tokens, **options)
                seconds += time.perf_counter() - start
                count += len(out[0].token_ids) + (out[0].finish_reason == "eos")
            rates.append(count / seconds)
        result[name] = statistics.median(rates)
        log(f"decode {name}: {result[name]:.1f} tokens/s")
    return result


def targets(report: dict) -> list[tuple[str, float | None, float]]:
    compile_ms, mask, decode = report["compile ms"], report["mask ms"], report["decode tokens/s"]
    return [
        ("mask time / xgrammar's (≤)", mask["llmhood"] / mask["xgrammar"], 1.0),
        ("schema compile, median ms (≤)", compile_ms["llmhood"], 50.0),
        ("constrained / unconstrained tokens/s", decode["constrained"] / decode["unconstrained"],
         0.8),
    ]  # fmt: skip


def run(llm, repeat: int = 5, tokens: int = 64, log: Callable[[str], None] = print) -> dict:
    """Every measurement on `llm` (llmhood.load()), xgrammar reading the same vocabulary."""
    import xgrammar

    from llmhood.generate.constrain.json_schema import XGRAMMAR_EQUIVALENT

    vocab = llm.constraints.vocab
    info = xgrammar.TokenizerInfo(vocab.token_bytes, vocab_type=xgrammar.VocabType.RAW,
                                  stop_token_ids=sorted(llm.stop_token_ids))  # fmt: skip
    compiler = xgrammar.GrammarCompiler(info, max_threads=torch.get_num_threads(),
                                        cache_enabled=False)  # fmt: skip
    report = {
        "model": llm.source,
        "mode": str(llm.mode),
        "threads": torch.get_num_threads(),
        "compile ms": compile_section(llm, compiler, XGRAMMAR_EQUIVALENT, repeat, log),
        "mask ms": mask_section(llm, compiler, XGRAMMAR_EQUIVALENT, log),
        "decode tokens/s": decode_section(llm, tokens, repeat, log),
    }
    report["targets"] = [{"target": name, "value": value, "goal": goal,
                          "met": met(name, value, goal)}
                         for name, value, goal in targets(report)]  # fmt: skip
    return report


def format_report(report: dict) -> str:
    compile_ms, mask, decode = report["compile ms"], report["mask ms"], report["decode tokens/s"]
    lines = [
        f"Model: {report['model']} ({report['mode']}), {report['threads']} threads",
        f"Schema compile with its token masks, median of {len(SCHEMAS)} BFCL-sized schemas (ms):",
        f"  llmhood {compile_ms['llmhood']:9.3f}   xgrammar {compile_ms['xgrammar']:9.3f}   "
        f"ratio {compile_ms['llmhood'] / compile_ms['xgrammar']:.2f}",
        f"Next-token mask, median over {mask['tokens']} tokens (ms):",
        f"  llmhood {mask['llmhood']:9.4f}   xgrammar {mask['xgrammar']:9.4f}   "
        f"(llmhood computing each mask on first visit, as above {PRECOMPUTE_STATES} states: "
        f"{mask['llmhood first visit']:.4f})",
        "Greedy decoding (generated tokens/s):",
        f"  unconstrained {decode['unconstrained']:8.1f}   constrained "
        f"{decode['constrained']:8.1f}   ratio "
        f"{decode['constrained'] / decode['unconstrained']:.2f}",
        "Targets:",
    ]
    rows = [(t["target"], t["value"], t["goal"]) for t in report["targets"]]
    lines += target_lines(rows, max(len(name) for name, _, _ in rows) + 2)
    return "\n".join(lines)

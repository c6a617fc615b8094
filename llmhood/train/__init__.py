"""Fine-tuning written here: adapters, quantized bases, data and trainers.

The model knows nothing of training: adapters (`lora.py`, `dora.py`) wrap or replace its
nn.Linear layers from outside, and a quantized base (`nf4.py`) is one more kind of layer
that they wrap. `train(TrainConfig(...))` is `llmhood train`; `export` is `llmhood export`.

    from llmhood.train import TrainConfig, train
    result = train(TrainConfig(data="my.jsonl", out="runs/me", method="lora"))
    llm = llmhood.load(adapter="runs/me")
"""

from llmhood.train.config import TrainConfig
from llmhood.train.export import export
from llmhood.train.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "export", "train"]

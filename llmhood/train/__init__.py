"""Fine-tuning written here: adapters, quantized bases, data and trainers.

The model knows nothing of training: adapters (`lora.py`, `dora.py`) wrap or replace its
nn.Linear layers from outside, and a quantized base (`nf4.py`) is one more kind of layer
that they wrap.
"""

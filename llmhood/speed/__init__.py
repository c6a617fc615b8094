"""The speed machinery: how a model is made fast on this machine, and how that is measured.

Read bottom up:

* `cpu.py`: the instruction sets this CPU has (and LLMHOOD_CPU=avx2, to act as if fewer);
* `cache.py`: what llmhood remembers about a model file between runs;
* `kernels.py`: the C++ kernels' build and its cache;
* `modes.py`: the speed modes (dtype, int4/int8, fused, dense) and building a model in one;
* `prepared.py`: a quantized model saved as it runs, so that later loads map it;
* `guard.py`: the quality guard that picks the fastest mode whose perplexity holds;
* `bench.py`: `llmhood bench`, llmhood against transformers and llama.cpp.

The fast layers themselves (fused, quantized, the decode step) are part of the model, in
llmhood.model.fast; this package decides when they run. The first three modules depend on
torch alone, so the model's fast paths can use them; the rest build models.
"""

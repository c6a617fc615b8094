"""The model's fast paths, beside the plain modules one level up and tested equal to them.

Each computes what a plain module computes, in fewer bytes or fewer calls, and each is
switched on from outside, so the plain model stays the reference and reads on its own:

* `fusion.py`: q/k/v and gate/up as one matrix each;
* `quantized.py`: int4 and int8 weight-only linear layers;
* `decode_step.py` and `decode_step.cpp`: all the blocks of a decode step in one C++ call.

Which of them a loaded model uses is decided in llmhood.speed.modes.
"""

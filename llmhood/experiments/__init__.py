"""Runnable experiments that answer a question about transformers with a measurement.

Each module has a `run(...)` function returning its numbers, and a `llmhood experiment NAME`
subcommand that prints them and saves a picture where one helps.
"""

"""The one exception type a user should ever see.

Anything raised as `LLMHoodError` is a problem with the user's input (a missing model,
a broken file, a bad parameter). The CLI prints its message as one paragraph and exits
with status 1 instead of showing a traceback; library callers can catch it by type.
Everything else is a bug in llmhood and is allowed to surface as a traceback.
"""


class LLMHoodError(Exception):
    """A problem with what the user asked for, with a message that says what to do."""

"""Pictures of the model's insides, each with the numbers behind it.

Every `plot_*` function returns a `Plot`, a (figure, table) pair: a matplotlib figure on
the non-interactive Agg canvas and a `Table` of the values drawn. `Plot.save` writes PNG
or SVG, `Table.to_csv` the numbers. `llmhood plot <kind>` is the same from the shell.
"""

from llmhood.plot.attention import attention_weights, plot_attention, top_keys
from llmhood.plot.figure import Plot
from llmhood.plot.kinds import KINDS, MAKE_OPTIONS, make
from llmhood.plot.kv_cache import kv_cache_bytes, plot_kv_cache
from llmhood.plot.logit_lens import logit_lens, plot_logit_lens
from llmhood.plot.params import parameter_rows, plot_params, synthetic_untied
from llmhood.plot.residual import plot_residual_norms, residual_norms
from llmhood.plot.rope import plot_rope, scaling_schemes
from llmhood.plot.table import Table

__all__ = [
    "KINDS",
    "MAKE_OPTIONS",
    "Plot",
    "Table",
    "attention_weights",
    "kv_cache_bytes",
    "logit_lens",
    "make",
    "parameter_rows",
    "plot_attention",
    "plot_kv_cache",
    "plot_logit_lens",
    "plot_params",
    "plot_residual_norms",
    "plot_rope",
    "residual_norms",
    "scaling_schemes",
    "synthetic_untied",
    "top_keys",
]

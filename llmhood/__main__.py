"""`python -m llmhood`: the `llmhood` command, as `torchrun -m llmhood train ...` starts it."""

import sys

from llmhood.cli import main

sys.exit(main())

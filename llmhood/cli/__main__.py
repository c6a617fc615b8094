"""`python -m llmhood.cli`: the `llmhood` command, for environments without its script."""

import sys

from llmhood.cli import main

sys.exit(main())

"""The end-to-end benchmark's name for :mod:`walfast.bench.syncbench` (the same
module: everything it defines, under the old import path)."""

import sys

from walfast.bench import syncbench

sys.modules[__name__] = syncbench

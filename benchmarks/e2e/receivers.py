"""The end-to-end benchmark's name for :mod:`walfast.bench.receivers` (the same
module: everything it defines, under the old import path)."""

import sys

from walfast.bench import receivers

sys.modules[__name__] = receivers

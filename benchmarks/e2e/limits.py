"""The end-to-end benchmark's name for :mod:`walfast.bench.limits` (the same
module: everything it defines, under the old import path)."""

import sys

from walfast.bench import limits

sys.modules[__name__] = limits

"""The end-to-end benchmark's name for :mod:`walfast.bench.primary` (the same
module: everything it defines, under the old import path)."""

import sys

from walfast.bench import primary

sys.modules[__name__] = primary

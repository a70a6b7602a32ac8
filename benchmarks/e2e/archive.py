"""The end-to-end benchmark's name for :mod:`walfast.bench.archive` (the same
module: everything it defines, under the old import path)."""

import sys

from walfast.bench import archive

sys.modules[__name__] = archive

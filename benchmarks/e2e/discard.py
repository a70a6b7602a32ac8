"""The end-to-end benchmark's name for :mod:`walfast.bench.discard` (the
same module); ``python -m benchmarks.e2e.discard`` runs it."""

import sys

from walfast.bench import discard

if __name__ == "__main__":
    sys.exit(discard.main(sys.argv[1:]))
sys.modules[__name__] = discard

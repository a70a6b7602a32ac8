"""``python -m walfast``: the ``walfast`` command."""

import sys

from walfast.cli import main

sys.exit(main())

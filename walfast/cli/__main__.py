"""``python -m walfast.cli``: the ``walfast`` command."""

from walfast.cli import console_main

console_main()

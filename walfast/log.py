"""walfast's logging conventions.

The library logs to the ``walfast`` logger and its children and configures
no handler but a :class:`logging.NullHandler` (the library convention: no
"No handlers could be found" output, no stray lines through logging's last
resort); the commands (:mod:`walfast.cli`) configure the rest.  Modules get
their logger from :func:`get_logger`, so that the handler is in place
whenever anything can log, and commands that log nothing (``walfast
status``, ``--version``) never import :mod:`logging`.

Levels are the standard ones plus :data:`NOTICE`, for the messages
pg_receivewal prints even without ``--verbose`` (its unconditional
``pg_log_info`` calls): above INFO (shown with ``-v`` only), below WARNING.
"""

from __future__ import annotations

import logging

__all__ = ["NOTICE", "get_logger"]

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")
logging.getLogger("walfast").addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """The logger of walfast module *name* (``__name__``)."""
    return logging.getLogger(name)

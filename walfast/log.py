"""walfast's logging conventions.

The library logs to the ``walfast`` logger and its children and configures
no handler; the commands (:mod:`walfast.cli`) do.  Levels are the standard
ones plus :data:`NOTICE`, for the messages pg_receivewal prints even without
``--verbose`` (its unconditional ``pg_log_info`` calls): above INFO (shown
with ``-v`` only), below WARNING.
"""

from __future__ import annotations

import logging

__all__ = ["NOTICE"]

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

"""walfast: a fast, durable PostgreSQL physical-replication WAL receiver.

:func:`receive_to_directory` streams a server's WAL into a directory as
pg_receivewal does (the ``walfast receive`` command);
:mod:`walfast.replication.walrcv` is the walreceiver-style
connect/receive/send API.  The packages show the architecture:

* :mod:`walfast.replication`: talking to the server (connection, replication
  commands, :class:`~walfast.replication.ServerFacts`);
* :mod:`walfast.waldir`: the output directory and everything written into it
  (:class:`~walfast.waldir.WalDirectory`);
* :mod:`walfast._core`: the compiled engine (receive loop, page checks,
  segment writing);
* :mod:`walfast.stream`: the control loop tying the three together;
* :mod:`walfast.monitor`: the progress state and its readers (status, wait,
  metrics);
* :mod:`walfast.cli`: the commands.

Importing :mod:`walfast` loads none of them: the names below are resolved on
first use, so ``walfast --version`` or ``walfast status`` start without
psycopg or the compression libraries.  The library configures no logging
handlers: it logs to the ``walfast`` logger and leaves the rest to the caller
(:mod:`walfast.log`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from walfast._version import __version__

if TYPE_CHECKING:
    from walfast._core import SegmentWriter, StreamParser, encode_status_update, pg_time_now
    from walfast.errors import (
        ConnectionLostError, ProtocolError, SegmentError, ServerMismatchError, TimelineError,
        WalfastError, WalGapError, WalPageError,
    )
    from walfast.lsn import format_lsn, parse_lsn
    from walfast.stream import ReceiveOutcome, StreamOptions, receive_to_directory

#: Public name -> the module that defines it.
_EXPORTS = {
    "SegmentWriter": "walfast._core",
    "StreamParser": "walfast._core",
    "encode_status_update": "walfast._core",
    "pg_time_now": "walfast._core",
    "ConnectionLostError": "walfast.errors",
    "ProtocolError": "walfast.errors",
    "SegmentError": "walfast.errors",
    "ServerMismatchError": "walfast.errors",
    "TimelineError": "walfast.errors",
    "WalfastError": "walfast.errors",
    "WalGapError": "walfast.errors",
    "WalPageError": "walfast.errors",
    "format_lsn": "walfast.lsn",
    "parse_lsn": "walfast.lsn",
    "ReceiveOutcome": "walfast.stream",
    "StreamOptions": "walfast.stream",
    "receive_to_directory": "walfast.stream",
}

__all__ = [
    "ConnectionLostError", "ProtocolError", "ReceiveOutcome", "SegmentError", "SegmentWriter",
    "ServerMismatchError", "StreamOptions", "StreamParser", "TimelineError", "WalGapError",
    "WalPageError", "WalfastError", "__version__", "encode_status_update", "format_lsn",
    "parse_lsn", "pg_time_now", "receive_to_directory",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'walfast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

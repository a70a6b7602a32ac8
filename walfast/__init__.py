"""walfast: a fast, durable PostgreSQL physical-replication WAL receiver.

:func:`receive_to_directory` streams a server's WAL into a directory as
pg_receivewal does (the ``walfast receive`` command); :mod:`walfast.walrcv`
is the walreceiver-style connect/receive/send API.  The compiled engine
(:mod:`walfast._core`) turns the replication stream into WAL segment files;
:mod:`walfast.lsn` holds LSN and file-name helpers; :mod:`walfast.errors` the
exceptions.  The library configures no logging
handlers: it logs to the ``walfast`` logger and leaves the rest to the caller.
"""

import logging as _logging

from walfast._core import (
    SegmentWriter,
    StreamParser,
    encode_status_update,
    pg_time_now,
)
from walfast._version import __version__
from walfast.errors import (
    ProtocolError,
    SegmentError,
    ServerMismatchError,
    TimelineError,
    WalfastError,
    WalGapError,
    WalPageError,
)
from walfast.lsn import format_lsn, parse_lsn
from walfast.stream import ReceiveOutcome, StreamOptions, receive_to_directory

_logging.getLogger("walfast").addHandler(_logging.NullHandler())

__all__ = [
    "ProtocolError",
    "ReceiveOutcome",
    "SegmentError",
    "SegmentWriter",
    "StreamOptions",
    "ServerMismatchError",
    "StreamParser",
    "TimelineError",
    "WalGapError",
    "WalPageError",
    "WalfastError",
    "__version__",
    "encode_status_update",
    "format_lsn",
    "parse_lsn",
    "pg_time_now",
    "receive_to_directory",
]

"""The exceptions walfast raises.

Every error names what happened, where (LSN, file) and, where there is one,
what to do.  The compiled engine (:mod:`walfast._core`) raises these classes;
it never prints or swallows an error.  Operating-system failures (disk full,
permission denied) stay :class:`OSError` subclasses carrying ``errno`` and
``filename``, as the standard library's I/O does.

Hierarchy::

    WalfastError
    ├── ProtocolError        malformed, short or unknown replication message
    │   └── WalGapError      dataStart does not continue the received WAL
    ├── WalPageError         a received WAL page header is not what it must be
    ├── ServerMismatchError  system identifier / segment size / timeline disagree
    ├── TimelineError        an impossible timeline switch
    ├── ServerRefusedError   the server refused a replication command
    ├── ConnectionLostError  the connection to the server failed or was cut
    ├── ArchiveError         the archive (an S3 bucket, a directory) refused or failed
    └── SegmentError         (also an OSError) a segment file cannot be used
"""

from __future__ import annotations

import errno
import os

from walfast.lsn import format_lsn

__all__ = [
    "ArchiveError",
    "ConnectionLostError",
    "describe",
    "ProtocolError",
    "SegmentError",
    "ServerMismatchError",
    "ServerRefusedError",
    "TimelineError",
    "WalGapError",
    "WalPageError",
    "WalfastError",
    "libpq_error_text",
    "partial_size_error",
]


class WalfastError(Exception):
    """Base class of every error walfast raises on purpose."""


class ProtocolError(WalfastError):
    """A replication message that cannot be right: unknown type, short header,
    impossible length.

    ``msgtype`` is the message's type byte (``"w"``, ``"k"``, ... or ``None``
    when the frame itself is broken), ``length`` its length in bytes and
    ``lsn`` the WAL position received so far.
    """

    def __init__(
        self, message: str, *, msgtype: str | None = None, length: int | None = None,
        lsn: int | None = None,
    ) -> None:
        super().__init__(message)
        self.msgtype = msgtype
        self.length = length
        self.lsn = lsn


class WalGapError(ProtocolError):
    """An XLogData message whose ``dataStart`` is not where the previous one
    ended: WAL would be missing (or written twice) if it were accepted."""

    def __init__(self, expected: int, received: int) -> None:
        what = "gap of" if received > expected else "overlap of"
        super().__init__(
            f"WAL data does not continue the stream: expected data starting at "
            f"{format_lsn(expected)}, received data starting at {format_lsn(received)} "
            f"({what} {abs(received - expected)} bytes); nothing of it was written",
            msgtype="w",
            lsn=expected,
        )
        self.expected = expected
        self.received = received


class WalPageError(WalfastError):
    """A received WAL page header does not match what that page must hold.

    Raised before the page's bytes can be reported flushed.  ``lsn`` is the
    page's start, ``field`` the header field (``xlp_magic``, ``xlp_pageaddr``,
    ...), ``expected`` and ``found`` the values.
    """

    def __init__(
        self, message: str, *, lsn: int, field: str, expected: int, found: int,
        filename: str | None = None,
    ) -> None:
        super().__init__(message)
        self.lsn = lsn
        self.field = field
        self.expected = expected
        self.found = found
        self.filename = filename


class ServerMismatchError(WalfastError):
    """The server, or the WAL it sends, belongs to another cluster or uses
    another segment size than the one expected."""


class TimelineError(WalfastError):
    """The server reported a timeline switch that cannot be followed."""


class ServerRefusedError(WalfastError):
    """The server answered a replication command with an error: no such
    slot, slot in use, requested WAL already removed, timeline not in its
    history...  The message carries the server's own words, as
    pg_receivewal prints them."""


class ConnectionLostError(WalfastError):
    """The connection to the server failed, or ended in the middle of the
    stream: the message is libpq's or the server's (as pg_receivewal prints
    it).  The receive loop reconnects after it unless ``-n`` was given."""


class ArchiveError(WalfastError):
    """The archive could not store or return a file: the store's own words
    (an S3 error code and message, a connection error) with the object's
    location.  ``retryable`` is False for what trying again cannot fix
    (no such bucket, access denied, a bad location)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SegmentError(WalfastError, OSError):
    """A segment file exists but cannot be used (for example a ``.partial``
    whose size is neither 0 nor the segment size).

    ``errno`` and ``filename`` are set as for any :class:`OSError`; the
    message itself names the file, so ``str()`` is just the message (not
    OSError's ``[Errno N] message: 'file'``).
    """

    def __str__(self) -> str:
        return self.strerror if self.strerror else super().__str__()


def partial_size_error(path: str, found: int, expected: int) -> SegmentError:
    """The error for a ``.partial`` segment file whose size is neither 0 nor
    the segment size: such a file was cut short, or written with another
    segment size, and nothing in it can be trusted or overwritten."""
    return SegmentError(
        errno.EINVAL,
        f'segment file "{path}" has {found} bytes, should be 0 or {expected} (the WAL '
        f"segment size): it was cut short or written for another segment size, and walfast "
        f"will not write into it. Move it out of the directory (keep it if it may hold the "
        f"only copy of that WAL) or truncate it to 0 bytes; walfast then streams that "
        f"segment again from its start",
        path,
    )


def libpq_error_text(exc: BaseException) -> str:
    """The message of a psycopg error as libpq (and pg_receivewal) words it:
    without the "connection failed: " / "connection is bad: " prefixes
    psycopg adds to a failed connection attempt."""
    text = str(exc).strip()
    for prefix in ("connection failed: ", "connection is bad: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def describe(exc: BaseException) -> str:
    """The text walfast prints for an error, as PostgreSQL's programs word
    theirs: libpq's message for a psycopg error, ``what "FILE": reason``
    for an operating-system error (never Python's ``[Errno 28] ...: 'FILE'``),
    else the message."""
    if isinstance(exc, OSError) and not isinstance(exc, WalfastError) and exc.errno:
        reason = exc.strerror or os.strerror(exc.errno)
        if exc.filename is None:
            return reason
        # walfast's own OSErrors say "what: reason" (what it was doing).
        what, sep, why = reason.partition(": ")
        if sep:
            return f'{what} "{exc.filename}": {why}'
        return f'"{exc.filename}": {reason}'
    if type(exc).__module__.startswith("psycopg"):
        return libpq_error_text(exc)
    return str(exc).strip()

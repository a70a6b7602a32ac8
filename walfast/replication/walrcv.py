"""A walreceiver-style low-level API: connect, receive, send, disconnect.

The shape of PostgreSQL's ``walrcv_*`` interface (src/backend/replication/
README): :func:`connect` starts physical replication at a position,
:meth:`WalReceiverConnection.receive` returns one CopyData payload at a time
as ``(type, buffer)`` with the buffer valid until the next call (as
``walrcv_receive``), :meth:`~WalReceiverConnection.send` sends one (for
example :func:`walfast.encode_status_update`), and
:meth:`~WalReceiverConnection.disconnect` closes.

This is for tools that want the messages themselves.  It costs a Python call
per message; to write WAL files use :func:`walfast.receive_to_directory`,
whose loop is compiled.
"""

from __future__ import annotations

import selectors
import time
from typing import Any

import psycopg

from walfast.errors import ConnectionLostError, WalfastError
from walfast.lsn import format_lsn
from walfast.replication import commands
from walfast.replication.connection import connect as _connect

__all__ = ["WalReceiverConnection", "connect"]


class WalReceiverConnection:
    """A physical replication stream started by :func:`connect`."""

    def __init__(self, conn: psycopg.Connection[Any], info: commands.SystemInfo,
                 timeline: int, startpoint: int) -> None:
        self.conn = conn
        self.system = info
        self.timeline = timeline
        self.startpoint = startpoint
        self._pgconn = conn.pgconn
        self._streaming = True

    def receive(self, timeout: float | None = None) -> tuple[str, memoryview | None]:
        """Wait up to *timeout* seconds (None: forever) for one message.

        Returns ``("w", payload)`` for XLogData, ``("k", payload)`` for a
        keepalive (payloads include their type byte; layouts in
        walfast/_frames.pxi), ``("", None)`` on timeout, and ``("c", None)``
        when the server ended the COPY (end of timeline or shutdown; call
        :meth:`end_streaming`).  The payload is valid until the next call.
        """
        if not self._streaming:
            raise WalfastError("the stream has ended; call end_streaming() or disconnect()")
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._pgconn.socket, selectors.EVENT_READ)
            while True:
                n, data = self._pgconn.get_copy_data(1)
                if n > 0:
                    return chr(data[0]), data
                if n == -1:
                    self._streaming = False
                    return "c", None
                if n < -1:
                    raise ConnectionLostError(
                        "could not receive data from WAL stream: "
                        + self._pgconn.error_message.decode(errors="replace").strip())
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return "", None
                if sel.select(left):
                    self._pgconn.consume_input()

    def send(self, buffer: bytes) -> None:
        """Send one CopyData payload (a standby status update, say)."""
        self._pgconn.put_copy_data(buffer)
        self._pgconn.flush()

    def end_streaming(self) -> tuple[int, int] | None:
        """End the COPY (``walrcv_endstreaming``); return the server's
        ``(next_timeline, switch_lsn)`` when it ended a timeline, else None."""
        server_ended = not self._streaming
        self._streaming = False
        return commands.end_copy(self._pgconn, server_ended=server_ended)

    def disconnect(self) -> None:
        """Close the connection."""
        self._streaming = False
        self.conn.close()


def connect(conninfo: str, startpoint: int, *, timeline: int | None = None,
            slot: str | None = None, application_name: str = "walfast") -> WalReceiverConnection:
    """Connect for physical replication and start streaming at *startpoint*
    (on *timeline*, default the server's current one).  A start exactly at
    the end of an old timeline, which the server answers without a COPY,
    raises :class:`~walfast.errors.WalfastError` naming the next timeline."""
    conn = _connect(conninfo, application_name=application_name)
    try:
        commands.check_server_version(conn)
        info = commands.identify_system(conn)
        commands.check_physical(info, slot)
        tli = info.timeline if timeline is None else timeline
        direct = commands.start_replication(conn, slot=slot, start_lsn=startpoint, timeline=tli)
        if direct is not None:
            raise WalfastError(
                f"timeline {tli} ends at the start position; the server's next timeline is "
                f"{direct[0]}, starting at {format_lsn(direct[1])}")
    except BaseException:
        conn.close()
        raise
    return WalReceiverConnection(conn, info, tli, startpoint)

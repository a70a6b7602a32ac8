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
from psycopg import pq

from walfast.replication import commands as protocol
from walfast.errors import WalfastError

__all__ = ["WalReceiverConnection", "connect"]


class WalReceiverConnection:
    """A physical replication stream started by :func:`connect`."""

    def __init__(self, conn: psycopg.Connection[Any], info: protocol.SystemInfo,
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
                    raise psycopg.OperationalError(
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
        return protocol.end_copy(self._pgconn, server_ended=server_ended)

    def disconnect(self) -> None:
        """Close the connection."""
        self._streaming = False
        self.conn.close()


def connect(conninfo: str, startpoint: int, *, timeline: int | None = None,
            slot: str | None = None, application_name: str = "walfast") -> WalReceiverConnection:
    """Connect for physical replication and start streaming at *startpoint*
    (on *timeline*, default the server's current one)."""
    conn = protocol.connect(conninfo, application_name=application_name)
    try:
        protocol.check_server_version(conn)
        info = protocol.identify_system(conn)
        protocol.check_physical(info, slot)
        tli = info.timeline if timeline is None else timeline
        pgconn = conn.pgconn
        pgconn.send_query(protocol.start_replication_command(
            slot=slot, start_lsn=startpoint, timeline=tli))
        res = pgconn.get_result()
        if res is None or pq.ExecStatus(res.status) != pq.ExecStatus.COPY_BOTH:
            msg = res.error_message.decode(errors="replace").strip() if res is not None else ""
            raise WalfastError(f'could not send replication command "START_REPLICATION": {msg}')
    except BaseException:
        conn.close()
        raise
    return WalReceiverConnection(conn, info, tli, startpoint)

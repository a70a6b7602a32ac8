"""A fake walsender: a loopback server speaking enough of the PostgreSQL
frontend/backend protocol (v3) for a physical replication client -- walfast,
or pg_receivewal -- to connect with a plain libpq conninfo, run its
replication commands and receive a COPY stream, where every answer comes
from a declarative :class:`Scenario`.

Why a fake server: a real walsender only ever sends well-formed WAL.  Fault
tests need the server to say things a real one never says (non-integer text
in an integer column, a page header with the wrong address, a CopyData whose
length lies, the connection cut in the middle of a frame) and to record what
the client answered (every standby status update with its write and flush
positions).  The protocol is real -- bytes on a TCP socket, libpq on the
other side -- only the server's behaviour is scripted.

The scenario model
==================

A :class:`Scenario` says, for one connection, everything the server does:

* **startup**: the ParameterStatus values (``server_version``,
  ``integer_datetimes``, ``client_encoding``...; :data:`DEFAULT_PARAMETERS`)
  and, in :attr:`Scenario.startup`, optionally a reply that replaces
  AuthenticationOk (a FATAL :class:`Error`, a :class:`Close`).
  SSLRequest and GSSENCRequest are always answered ``N``.
* **commands**: :attr:`Scenario.replies` maps a command's key
  (:func:`command_key`: ``IDENTIFY_SYSTEM``, ``SHOW wal_segment_size``,
  ``READ_REPLICATION_SLOT``, ``TIMELINE_HISTORY 2``...) to a reply:
  :class:`ResultSet` (RowDescription, DataRows, CommandComplete: any shape,
  any text, NULLs), :class:`CommandOK`, :class:`Error`, :class:`Raw` bytes,
  :class:`Close`, or a callable ``(query, record) -> reply``.  A command
  without a reply gets a syntax error, as from the walsender's parser.
* **streams**: each ``START_REPLICATION`` takes the next :class:`Stream`.
  A stream may insist on the start position and timeline the client asks
  for (:attr:`Stream.expect_lsn`; another one is refused as a walsender
  refuses WAL it does not have), may answer without a COPY
  (:attr:`Stream.reply`: an error, or the next-timeline row a walsender
  sends when the start is exactly the end of a historic timeline), and
  otherwise sends CopyBothResponse and then runs its :attr:`Stream.actions`
  in order: :class:`CopyData` (one ``d`` frame), :class:`Raw` (any bytes:
  frames whose length lies, garbage), :class:`AwaitStatus` (let the client
  report before going on), :class:`EndCopy` (end of timeline, or a
  walsender's shutdown), :class:`Error` (ErrorResponse, then the
  connection ends, as a walsender exits on an error while streaming),
  :class:`Close`, :class:`Linger` (wait for the client to end the COPY).
  A stream whose actions run out closes the connection.  If the client
  sends CopyDone while actions remain, the server behaves as a walsender:
  it stops sending, answers CopyDone, CommandComplete and ReadyForQuery,
  and is ready for commands again.
* **faults across all of it**: :attr:`Scenario.cut_after` closes the
  connection once that many bytes were sent in total, wherever that falls
  (inside a frame, inside a page header); with :attr:`Scenario.cut_reset`
  it is closed with a TCP reset instead of a FIN.

What the client did is kept in a :class:`ConnectionRecord` per connection
(:attr:`FakeWalsender.records`): the startup parameters, every query, the
bytes each COPY sent after CopyBothResponse (:class:`CopyRecord`: what a
reference receiver replays), every standby status update (:class:`StatusUpdate`) and hot
standby feedback, CopyDone and Terminate.

Every wait is bounded (:attr:`Scenario.max_seconds`, :attr:`Linger.timeout`,
...): a client that hangs is the test's to detect, never a reason for the
server to hang.

One caveat, from psycopg: ``PGconn.get_result()`` and blocking
``get_copy_data(0)`` wait inside libpq *holding the GIL*, so a client that
calls them (``walfast.replication.commands.start_replication``,
``end_copy``, anything that streams) cannot run in the process that runs
this server's threads: it would wait for an answer the server thread cannot
give.  Run such a client in another process (``walfast receive`` as a
subprocess, or :class:`helpers.walfuzz.InprocWorker`); commands run through
a cursor (``IDENTIFY_SYSTEM``, ``SHOW``...) wait with the GIL released and
are fine in-process.

Usage::

    with FakeWalsender() as server:
        server.add("case1", scenario)            # connections as user=case1
        run_client(server.conninfo("case1"))
        record = server.wait_records("case1")[0]
        record.status_updates

or one scenario for every connection: ``FakeWalsender(scenario)``.  The
fixture ``fake_walsender`` (tests/conftest.py) starts one per test.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

from walfast import majors

__all__ = [
    "DEFAULT_PARAMETERS", "INT4OID", "INT8OID", "TEXTOID", "AwaitStatus", "Close", "Column",
    "command_complete", "command_key", "CommandOK", "ConnectionRecord", "copy_data", "CopyData",
    "CopyRecord", "data_row", "EndCopy", "Error", "error_response", "FakeWalsender", "frame",
    "history_result", "HotStandbyFeedback", "identify_system_result", "Linger",
    "next_timeline_result", "notice_response", "parameter_status", "parse_start_replication",
    "Raw", "read_slot_result", "ready_for_query", "ResultSet", "row_description", "Scenario",
    "show_result", "standard_replies", "StatusUpdate", "Stream",
]

# Type OIDs of the columns a walsender sends.
TEXTOID = 25
INT8OID = 20
INT4OID = 23

#: Startup codes (pqcomm.h).
_PROTOCOL_3_0 = 3 << 16
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102

#: ParameterStatus a walsender of the newest tested major sends (the major
#: whose page magic helpers.wal_synth writes), those libpq, psycopg and
#: walfast read among them (server_version, integer_datetimes,
#: client_encoding: SQL_ASCII, so text columns reach psycopg as bytes).
DEFAULT_PARAMETERS: dict[str, str] = {
    "application_name": "",
    "client_encoding": "SQL_ASCII",
    "DateStyle": "ISO, MDY",
    "default_transaction_read_only": "off",
    "in_hot_standby": "off",
    "integer_datetimes": "on",
    "IntervalStyle": "postgres",
    "is_superuser": "on",
    "server_encoding": "SQL_ASCII",
    "server_version": f"{majors.NEWEST_TESTED_MAJOR}.0",
    "session_authorization": "fake",
    "standard_conforming_strings": "on",
    "TimeZone": "UTC",
}


# --------------------------------------------------------------------------- #
# protocol messages (backend side); all integers big-endian
# --------------------------------------------------------------------------- #

def frame(msgtype: bytes, body: bytes = b"") -> bytes:
    """A protocol message: type byte, Int32 length (itself included), body."""
    return msgtype + struct.pack("!I", len(body) + 4) + body


def _cstr(text: str | bytes) -> bytes:
    return (text.encode() if isinstance(text, str) else text) + b"\0"


def parameter_status(name: str, value: str) -> bytes:
    return frame(b"S", _cstr(name) + _cstr(value))


def ready_for_query(status: bytes = b"I") -> bytes:
    return frame(b"Z", status)


def command_complete(tag: str) -> bytes:
    return frame(b"C", _cstr(tag))


@dataclass(frozen=True)
class Column:
    """One RowDescription field: a name and a type OID (text by default)."""

    name: str
    type_oid: int = TEXTOID


def row_description(columns: Sequence[Column | str]) -> bytes:
    body = struct.pack("!h", len(columns))
    for col in columns:
        col = Column(col) if isinstance(col, str) else col
        typlen = 8 if col.type_oid == INT8OID else 4 if col.type_oid == INT4OID else -1
        # name | table oid | column number | type oid | type size | typmod | format (text)
        body += _cstr(col.name) + struct.pack("!ihihih", 0, 0, col.type_oid, typlen, -1, 0)
    return frame(b"T", body)


def data_row(values: Sequence[bytes | str | int | None]) -> bytes:
    body = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            body += struct.pack("!i", -1)
        else:
            raw = v if isinstance(v, bytes) else str(v).encode()
            body += struct.pack("!i", len(raw)) + raw
    return frame(b"D", body)


def _notice_fields(severity: str, sqlstate: str, message: str, detail: str | None) -> bytes:
    body = b"S" + _cstr(severity) + b"V" + _cstr(severity) + b"C" + _cstr(sqlstate)
    body += b"M" + _cstr(message)
    if detail is not None:
        body += b"D" + _cstr(detail)
    return body + b"\0"


def error_response(message: str, sqlstate: str = "XX000", severity: str = "ERROR",
                   detail: str | None = None) -> bytes:
    return frame(b"E", _notice_fields(severity, sqlstate, message, detail))


def notice_response(message: str, severity: str = "NOTICE") -> bytes:
    return frame(b"N", _notice_fields(severity, "00000", message, None))


def copy_data(payload: bytes) -> bytes:
    return frame(b"d", payload)


def copy_both_response() -> bytes:
    # overall format text, no columns
    return frame(b"W", struct.pack("!bh", 0, 0))


# --------------------------------------------------------------------------- #
# the scenario model
# --------------------------------------------------------------------------- #

@dataclass
class ResultSet:
    """A command answered with tuples: RowDescription, one DataRow per row
    (values as text; None is NULL; rows may have another length than the
    columns: the DataRow says what it holds), CommandComplete *tag* (None:
    none), ReadyForQuery."""

    columns: Sequence[Column | str]
    rows: Sequence[Sequence[bytes | str | int | None]]
    tag: str | None = "SELECT"

    def encode(self) -> bytes:
        out = row_description(self.columns) + b"".join(data_row(r) for r in self.rows)
        if self.tag is not None:
            out += command_complete(self.tag)
        return out


@dataclass
class CommandOK:
    """A command answered with CommandComplete *tag* only (no tuples)."""

    tag: str = "SELECT"


@dataclass
class Error:
    """An ErrorResponse.  As a reply to a command: the connection goes on
    (ReadyForQuery follows) unless *severity* is FATAL.  As a stream action:
    the connection ends after it, as a walsender exits on an error while
    streaming."""

    message: str
    sqlstate: str = "XX000"
    severity: str = "ERROR"
    detail: str | None = None

    def encode(self) -> bytes:
        return error_response(self.message, self.sqlstate, self.severity, self.detail)


@dataclass
class Raw:
    """Bytes sent as they are: a frame built by hand (whose length may lie),
    garbage, several messages at once.  As a command reply, ReadyForQuery
    follows when *ready*."""

    data: bytes
    ready: bool = True


@dataclass
class Close:
    """Close the connection: a FIN after the bytes sent, or with *reset* a
    TCP reset (what was sent but not yet read may be lost)."""

    reset: bool = False


@dataclass
class CopyData:
    """One CopyData (``d``) frame around *payload* (XLogData, keepalive, or
    anything)."""

    payload: bytes


@dataclass
class AwaitStatus:
    """Wait until the client has sent *count* standby status updates since
    the last message sent before this action (or ended the COPY, or gone
    away), at most *timeout* seconds.  Used after a keepalive that asks for
    a reply, so that the reply shows where the client stood at that point of
    the stream."""

    count: int = 1
    timeout: float = 5.0


@dataclass
class EndCopy:
    """The server ends the COPY: CopyDone; then, once the client answered
    with its CopyDone (at most *timeout* seconds; a walsender that is
    shutting down does not wait: *wait_client* False), *result* (the
    end-of-timeline row: :func:`next_timeline_result`) or nothing, then
    CommandComplete *tag*; then, unless *close*, ReadyForQuery and the
    connection takes commands again (the next timeline's TIMELINE_HISTORY
    and START_REPLICATION).  A walsender's shutdown is
    ``EndCopy(tag="COPY 0", close=True, wait_client=False)``."""

    result: ResultSet | None = None
    tag: str = "START_STREAMING"
    close: bool = False
    wait_client: bool = True
    timeout: float = 5.0


@dataclass
class Linger:
    """Send nothing more and wait, at most *timeout* seconds, for the client
    to end the COPY (its CopyDone is answered as a walsender answers it) or
    to go away; then close.  The end of a stream the client is expected to
    stop by itself (``--endpos``)."""

    timeout: float = 5.0


#: A command's answer; a list is sent part by part (``[Raw(garbage,
#: ready=False), Close()]``).
Reply = Union[ResultSet, CommandOK, Error, Raw, Close, list,
              Callable[[str, "ConnectionRecord"], "Reply"]]
Action = Union[CopyData, Raw, AwaitStatus, EndCopy, Error, Close, Linger]


@dataclass
class Stream:
    """What one ``START_REPLICATION`` gets.

    *expect_lsn* / *expect_timeline*: the start the client must ask for;
    another is refused with the walsender's error (None: any).  *reply*:
    answer with this instead of a COPY (an :class:`Error`; the end-of-timeline
    :class:`ResultSet` of a start at the very end of a historic timeline).
    *actions*: what the COPY carries, in order.  *cut_after*: the stream's
    own cut (see :attr:`Scenario.cut_after`), counted from the first byte
    after CopyBothResponse.
    """

    actions: list[Action] = field(default_factory=list)
    expect_lsn: int | None = None
    expect_timeline: int | None = None
    reply: Reply | None = None
    #: Close the connection once this many bytes were sent after
    #: CopyBothResponse (anywhere: inside a frame, inside a page header);
    #: with *cut_reset* by a TCP reset.
    cut_after: int | None = None
    cut_reset: bool = False


@dataclass
class Scenario:
    """Everything the server does on one connection (see the module's
    docstring).  *name* is only for messages."""

    name: str = "scenario"
    parameters: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PARAMETERS))
    startup: Reply | None = None
    replies: dict[str, Reply] = field(default_factory=dict)
    streams: list[Stream] = field(default_factory=list)
    cut_after: int | None = None
    cut_reset: bool = False
    #: Longest the connection may last; then the server closes it.
    max_seconds: float = 60.0
    #: Close the connection when, waiting for a command, nothing came for
    #: this long (None: wait up to max_seconds).  A real walsender waits
    #: for ever; a fuzzing run wants every case to end, whatever the client
    #: does, so that only a client that does not notice the end can hang.
    idle_timeout: float | None = None
    backend_pid: int = 4242


def next_timeline_result(next_tli: int | str | bytes | None,
                         startpos: int | str | bytes | None,
                         tag: str | None = None) -> ResultSet:
    """The row a walsender sends after the end of a timeline (or instead of
    a COPY at a historic timeline's very end): ``next_tli`` int8,
    ``next_tli_startpos`` text; an int startpos is formatted as an LSN."""
    if isinstance(startpos, int):
        startpos = f"{startpos >> 32:X}/{startpos & 0xFFFFFFFF:X}"
    return ResultSet([Column("next_tli", INT8OID), Column("next_tli_startpos")],
                     [(next_tli, startpos)], tag=tag)


def identify_system_result(systemid: object, timeline: object, xlogpos: object,
                           dbname: object = None) -> ResultSet:
    """IDENTIFY_SYSTEM's row as a walsender sends it (any values: text,
    None for NULL)."""
    return ResultSet([Column("systemid"), Column("timeline", INT8OID), Column("xlogpos"),
                      Column("dbname")], [(systemid, timeline, xlogpos, dbname)],
                     tag="IDENTIFY_SYSTEM")


def show_result(name: str, value: object) -> ResultSet:
    """``SHOW name``'s one-column row."""
    return ResultSet([Column(name)], [(value,)], tag="SHOW")


def read_slot_result(slot_type: object, restart_lsn: object, restart_tli: object) -> ResultSet:
    """READ_REPLICATION_SLOT's row (``slot_type`` None: no such slot)."""
    return ResultSet([Column("slot_type"), Column("restart_lsn"),
                      Column("restart_tli", INT8OID)], [(slot_type, restart_lsn, restart_tli)],
                     tag="READ_REPLICATION_SLOT")


def history_result(timeline: int, content: bytes | str) -> ResultSet:
    """TIMELINE_HISTORY's row: the file name, the content (text)."""
    return ResultSet([Column("filename"), Column("content")],
                     [(f"{timeline:08X}.history", content)], tag="TIMELINE_HISTORY")


def standard_replies(*, system_identifier: int, timeline: int, xlogpos: int,
                     segment_size: str = "16MB", block_size: str = "8192",
                     data_directory_mode: str = "0700",
                     slot: tuple[int, int] | None = None) -> dict[str, Reply]:
    """The replies of a healthy PostgreSQL 15 walsender: IDENTIFY_SYSTEM,
    the three SHOWs a receiver asks for and, with *slot* ``(restart_lsn,
    restart_tli)``, READ_REPLICATION_SLOT.  A test starts from these and
    replaces what it wants broken."""
    replies: dict[str, Reply] = {
        "IDENTIFY_SYSTEM": identify_system_result(str(system_identifier), str(timeline),
                                                  _fmt_lsn(xlogpos)),
        "SHOW wal_segment_size": show_result("wal_segment_size", segment_size),
        "SHOW wal_block_size": show_result("wal_block_size", block_size),
        "SHOW data_directory_mode": show_result("data_directory_mode", data_directory_mode),
    }
    if slot is not None:
        replies["READ_REPLICATION_SLOT"] = read_slot_result(
            "physical", _fmt_lsn(slot[0]), str(slot[1]))
    return replies


# --------------------------------------------------------------------------- #
# what the client did
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class StatusUpdate:
    """A standby status update (``r``) the client sent during stream number
    *stream* (0 = the connection's first START_REPLICATION)."""

    stream: int
    write: int
    flush: int
    apply: int
    time: int
    reply: bool


@dataclass(frozen=True)
class HotStandbyFeedback:
    stream: int
    payload: bytes


@dataclass
class CopyRecord:
    """One COPY: the START_REPLICATION number *stream* on its connection
    (the same number as in :attr:`StatusUpdate.stream`; a START_REPLICATION
    refused or answered without a COPY takes a number too), its query, and
    every byte sent after CopyBothResponse (what a reference receiver
    replays)."""

    stream: int
    query: str
    sent: bytearray


@dataclass
class ConnectionRecord:
    """What happened on one connection (filled while it runs; complete once
    :attr:`done` is set)."""

    scenario: str = ""
    startup: dict[str, str] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    #: the COPYs (START_REPLICATIONs answered with CopyBothResponse)
    copies: list[CopyRecord] = field(default_factory=list)
    status_updates: list[StatusUpdate] = field(default_factory=list)
    feedback: list[HotStandbyFeedback] = field(default_factory=list)
    #: CopyData payloads from the client that are neither 'r' nor 'h'
    other_copydata: list[bytes] = field(default_factory=list)
    client_copy_done: int = 0
    terminated: bool = False        # the client sent Terminate
    client_closed: bool = False     # the client closed its end first
    bytes_sent: int = 0
    cut: bool = False               # Scenario.cut_after was reached
    #: an exception in the server itself (a harness bug, not the client's)
    server_error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def flushes(self) -> list[int]:
        return [s.flush for s in self.status_updates]


def command_key(query: str) -> str:
    """The key a query's reply is looked up by in :attr:`Scenario.replies`:
    the command word, with its argument for ``SHOW`` and
    ``TIMELINE_HISTORY`` (``SHOW wal_segment_size``, ``TIMELINE_HISTORY 2``).
    The exact query text is looked up first."""
    words = query.strip().rstrip(";").split()
    if not words:
        return ""
    head = words[0].upper()
    if head in ("SHOW", "TIMELINE_HISTORY") and len(words) > 1:
        return f"{head} {words[1]}"
    return head


def parse_start_replication(query: str) -> tuple[str | None, int, int | None]:
    """``START_REPLICATION [SLOT s] [PHYSICAL] X/X [TIMELINE n]`` ->
    (slot, start LSN, timeline).  Raises ValueError if it is not one."""
    words = query.strip().rstrip(";").split()
    if not words or words[0].upper() != "START_REPLICATION":
        raise ValueError(f"not START_REPLICATION: {query!r}")
    words = words[1:]
    slot = None
    if words[:1] and words[0].upper() == "SLOT":
        slot = words[1].strip('"')
        words = words[2:]
    if words[:1] and words[0].upper() == "PHYSICAL":
        words = words[1:]
    if not words:
        raise ValueError(f"no start position in {query!r}")
    hi, lo = words[0].split("/")
    lsn = (int(hi, 16) << 32) | int(lo, 16)
    timeline = None
    if len(words) >= 3 and words[1].upper() == "TIMELINE":
        timeline = int(words[2])
    return slot, lsn, timeline


def _fmt_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


# --------------------------------------------------------------------------- #
# the server
# --------------------------------------------------------------------------- #

class _ClientGone(Exception):
    """The client closed the connection (or reset it)."""


class _ServerClosed(Exception):
    """The server closed the connection (a Close action, a cut, a FATAL)."""


class _Connection:
    """One client connection, run by its own thread."""

    def __init__(self, server: FakeWalsender, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.record = ConnectionRecord()
        self.scenario = Scenario()
        self.inbuf = bytearray()
        self.deadline = time.monotonic() + 60.0
        self.nstream = -1               # index of the current START_REPLICATION
        self.stream_out: bytearray | None = None   # where sent COPY bytes are recorded
        self.stream: Stream | None = None           # the COPY in progress
        #: status updates received before the last message was sent
        #: (AwaitStatus counts from there: a reply may be in before it starts)
        self.updates_at_send = 0
        self.closed = False

    # ---- sending ---------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send *data*, unless the scenario's cut falls inside it: then its
        bytes before the cut, and the connection is closed."""
        if self.closed:
            raise _ServerClosed()
        sc = self.scenario
        cut = False
        reset = sc.cut_reset
        if sc.cut_after is not None and self.record.bytes_sent + len(data) >= sc.cut_after:
            data = data[:max(0, sc.cut_after - self.record.bytes_sent)]
            cut = True
        stream = self.stream
        if (stream is not None and stream.cut_after is not None and self.stream_out is not None
                and len(self.stream_out) + len(data) >= stream.cut_after):
            data = data[:max(0, stream.cut_after - len(self.stream_out))]
            cut, reset = True, stream.cut_reset
        if data:
            try:
                self.sock.sendall(data)
            except socket.timeout:
                raise _ServerClosed() from None    # the client stopped reading
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET):
                    raise _ClientGone() from None
                raise
            self.record.bytes_sent += len(data)
            if self.stream_out is not None:
                self.stream_out += data
        if cut:
            self.record.cut = True
            self.close(reset=reset)
            raise _ServerClosed()

    def close(self, reset: bool = False) -> None:
        """End the connection.  Without *reset*: a FIN after what was sent,
        then read (and record) what the client still sends until it closes
        too (bounded): closing with unread input would make the kernel send a
        reset, and the client could lose the last bytes sent."""
        if self.closed:
            return
        self.closed = True
        try:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            else:
                self.sock.shutdown(socket.SHUT_WR)
                end = min(time.monotonic() + 5.0, self.deadline)
                while time.monotonic() < end:
                    try:
                        self._receive(end - time.monotonic())
                        self._parse_copy_messages()
                    except _ClientGone:
                        break
        except OSError:
            pass
        finally:
            self.sock.close()

    # ---- receiving ---------------------------------------------------------------

    def _receive(self, timeout: float) -> bool:
        """Read what the client sent, waiting at most *timeout* seconds for
        something.  Returns whether bytes came; raises _ClientGone at EOF."""
        timeout = max(0.0, min(timeout, self.deadline - time.monotonic()))
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        except BlockingIOError:
            return False
        if not data:
            self.record.client_closed = True
            raise _ClientGone()
        self.inbuf += data
        return True

    def _take_message(self) -> tuple[bytes, bytes] | None:
        """The next whole client message (type, body) in the input, if any."""
        if len(self.inbuf) < 5:
            return None
        (length,) = struct.unpack_from("!I", self.inbuf, 1)
        if length < 4:
            raise _ClientGone()     # a broken client: treat as gone
        if len(self.inbuf) < 1 + length:
            return None
        msgtype = bytes(self.inbuf[:1])
        body = bytes(self.inbuf[5:1 + length])
        del self.inbuf[:1 + length]
        return msgtype, body

    def read_message(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Wait for the next whole message (command phase)."""
        end = self.deadline if timeout is None else min(self.deadline,
                                                        time.monotonic() + timeout)
        while True:
            msg = self._take_message()
            if msg is not None:
                return msg
            if time.monotonic() >= end:
                raise _ServerClosed()       # bounded: give up on a silent client
            self._receive(end - time.monotonic())

    def _parse_copy_messages(self) -> None:
        """Record the client's COPY-phase messages already received."""
        while True:
            msg = self._take_message()
            if msg is None:
                return
            self._handle_copy_message(*msg)

    def _handle_copy_message(self, msgtype: bytes, body: bytes) -> None:
        rec = self.record
        if msgtype == b"d":
            if body[:1] == b"r" and len(body) == 34:
                write, flush, apply, t, reply = struct.unpack_from("!QQQqB", body, 1)
                rec.status_updates.append(
                    StatusUpdate(self.nstream, write, flush, apply, t, bool(reply)))
            elif body[:1] == b"h":
                rec.feedback.append(HotStandbyFeedback(self.nstream, body))
            else:
                rec.other_copydata.append(body)
        elif msgtype == b"c":
            rec.client_copy_done += 1
        elif msgtype == b"X":
            rec.terminated = True
        else:
            # A query during the COPY (a walsender would fail it); keep it.
            rec.other_copydata.append(msgtype + body)

    def pump(self, timeout: float = 0.0) -> None:
        """COPY phase: take in what the client sent (waiting at most
        *timeout* seconds for something)."""
        self._receive(timeout)
        while self._receive(0):
            pass
        self._parse_copy_messages()

    # ---- the conversation -------------------------------------------------------------

    def run(self) -> None:
        try:
            self.sock.settimeout(10.0)
            self._startup()
            self._commands()
        except (_ClientGone, _ServerClosed):
            pass
        except Exception as e:  # a bug of the harness: keep it for the test to see
            import traceback

            self.record.server_error = "".join(
                traceback.format_exception(type(e), e, e.__traceback__))
        finally:
            self.close()
            self.record.done.set()

    def _startup(self) -> None:
        while True:
            self._need(4, timeout=10.0)
            (length,) = struct.unpack_from("!I", self.inbuf, 0)
            if not 8 <= length <= 10000:
                raise _ClientGone()
            self._need(length, timeout=10.0)
            packet = bytes(self.inbuf[:length])
            del self.inbuf[:length]
            (code,) = struct.unpack_from("!I", packet, 4)
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                self.sock.sendall(b"N")     # no SSL, no GSS encryption: plain
                continue
            if code == _CANCEL_REQUEST:
                raise _ServerClosed()
            if code >> 16 != 3:
                self.sock.sendall(error_response(
                    f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}",
                    "0A000", "FATAL"))
                raise _ServerClosed()
            break
        parts = packet[8:].split(b"\0")
        params = {}
        for k, v in zip(parts[0::2], parts[1::2]):
            if k:
                params[k.decode(errors="replace")] = v.decode(errors="replace")
        self.record.startup = params
        self.scenario = self.server._scenario_for(params, self.record)
        self.record.scenario = self.scenario.name
        self.deadline = time.monotonic() + self.scenario.max_seconds
        out = b""
        unknown = [k for k in params if k.startswith("_pq_.")]
        if code & 0xFFFF or unknown:
            # We speak 3.0: NegotiateProtocolVersion (newest minor, options
            # not understood), as a server older than the client does.
            body = struct.pack("!ii", 0, len(unknown)) + b"".join(_cstr(k) for k in unknown)
            out += frame(b"v", body)
        if self.scenario.startup is not None:
            self.send(out)
            self._reply(self.scenario.startup, "(startup)")
            raise _ServerClosed()
        out += frame(b"R", struct.pack("!i", 0))      # AuthenticationOk
        for name, value in self.scenario.parameters.items():
            out += parameter_status(name, value)
        out += frame(b"K", struct.pack("!ii", self.scenario.backend_pid, 12345))
        out += ready_for_query()
        self.send(out)

    def _need(self, n: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while len(self.inbuf) < n:
            if time.monotonic() >= end:
                raise _ServerClosed()
            self._receive(end - time.monotonic())

    def _commands(self) -> None:
        while True:
            msgtype, body = self.read_message(self.scenario.idle_timeout)
            if msgtype == b"X":
                self.record.terminated = True
                return
            if msgtype == b"Q":
                query = body.rstrip(b"\0").decode(errors="replace")
                self.record.queries.append(query)
                self._query(query)
            elif msgtype == b"S":       # Sync after an extended-protocol message
                self.send(ready_for_query())
            elif msgtype in (b"P", b"B", b"D", b"E", b"H", b"C", b"F"):
                # As a walsender: extended protocol refused (once, at Sync).
                self.send(error_response(
                    "extended query protocol not supported in a replication connection",
                    "08P01"))
                self._skip_until_sync()
            else:
                self.send(error_response(f"invalid frontend message type {msgtype!r}",
                                         "08P01", "FATAL"))
                return

    def _skip_until_sync(self) -> None:
        while True:
            msgtype, _ = self.read_message()
            if msgtype == b"S":
                self.send(ready_for_query())
                return

    def _query(self, query: str) -> None:
        if command_key(query) == "START_REPLICATION":
            self._start_replication(query)
            return
        reply = self.scenario.replies.get(query.strip().rstrip(";"))
        if reply is None:
            reply = self.scenario.replies.get(command_key(query))
        if reply is None:
            reply = Error(f'syntax error (the fake walsender has no reply for "{query}")',
                          "42601")
        self._reply(reply, query)

    def _reply(self, reply: Reply, query: str) -> None:
        while callable(reply) and not isinstance(
                reply, (ResultSet, CommandOK, Error, Raw, Close, list, tuple)):
            reply = reply(query, self.record)
        if isinstance(reply, (list, tuple)):
            for part in reply:
                self._reply(part, query)
        elif isinstance(reply, ResultSet):
            self.send(reply.encode() + ready_for_query())
        elif isinstance(reply, CommandOK):
            self.send(command_complete(reply.tag) + ready_for_query())
        elif isinstance(reply, Error):
            if reply.severity == "FATAL":
                self.send(reply.encode())
                raise _ServerClosed()
            self.send(reply.encode() + ready_for_query())
        elif isinstance(reply, Raw):
            self.send(reply.data + (ready_for_query() if reply.ready else b""))
        elif isinstance(reply, Close):
            self.close(reset=reply.reset)
            raise _ServerClosed()
        else:
            raise TypeError(f"not a reply: {reply!r}")

    # ---- START_REPLICATION ---------------------------------------------------------

    def _start_replication(self, query: str) -> None:
        self.nstream += 1
        streams = self.scenario.streams
        if self.nstream >= len(streams):
            self._reply(Error("the fake walsender's scenario has no stream left", "55000"),
                        query)
            return
        stream = streams[self.nstream]
        try:
            _, lsn, timeline = parse_start_replication(query)
        except ValueError:
            self._reply(Error(f'syntax error in "{query}"', "42601"), query)
            return
        if stream.expect_timeline is not None and timeline not in (None,
                                                                   stream.expect_timeline):
            self._reply(Error(
                f"requested timeline {timeline} is not in this server's history", "58P01"), query)
            return
        if stream.expect_lsn is not None and lsn != stream.expect_lsn:
            # What a walsender says about WAL it does not have.
            if lsn > stream.expect_lsn:
                msg = (f"requested starting point {_fmt_lsn(lsn)} is ahead of the WAL flush "
                       f"position of this server {_fmt_lsn(stream.expect_lsn)}")
            else:
                msg = f"requested WAL segment for {_fmt_lsn(lsn)} has already been removed"
            self._reply(Error(msg, "58P01"), query)
            return
        if stream.reply is not None:
            self._reply(stream.reply, query)
            return
        self.send(copy_both_response())
        out = bytearray()
        self.record.copies.append(CopyRecord(self.nstream, query, out))
        self.stream_out, self.stream = out, stream
        try:
            ended = self._run_actions(stream.actions)
        finally:
            self.stream_out, self.stream = None, None
        if not ended:
            raise _ServerClosed()   # close() in run()

    def _answer_client_copy_done(self) -> None:
        """The client ended the COPY: as a walsender, stop sending WAL,
        answer CopyDone, CommandComplete, ReadyForQuery."""
        self.send(frame(b"c") + command_complete("START_STREAMING") + ready_for_query())

    def _run_actions(self, actions: Sequence[Action]) -> bool:
        """Run a stream's actions.  True when the COPY ended and the
        connection takes commands again; False when it is to be closed."""
        rec = self.record
        for action in actions:
            self.pump(0)
            if rec.client_copy_done:
                rec.client_copy_done = 0
                self._answer_client_copy_done()
                return True
            if isinstance(action, CopyData):
                self.updates_at_send = len(rec.status_updates)
                self.send(copy_data(action.payload))
            elif isinstance(action, Raw):
                self.updates_at_send = len(rec.status_updates)
                self.send(action.data)
            elif isinstance(action, AwaitStatus):
                want = self.updates_at_send + action.count
                end = time.monotonic() + action.timeout
                while (len(rec.status_updates) < want and not rec.client_copy_done
                       and time.monotonic() < end):
                    self.pump(end - time.monotonic())
            elif isinstance(action, EndCopy):
                return self._end_copy(action)
            elif isinstance(action, Error):
                self.send(action.encode())
                return False
            elif isinstance(action, Close):
                self.close(reset=action.reset)
                return False
            elif isinstance(action, Linger):
                end = time.monotonic() + action.timeout
                while not rec.client_copy_done and time.monotonic() < end:
                    self.pump(end - time.monotonic())
                if rec.client_copy_done:
                    rec.client_copy_done = 0
                    self._answer_client_copy_done()
                    return True
                return False
            else:
                raise TypeError(f"not a stream action: {action!r}")
        self.pump(0)
        if rec.client_copy_done:
            rec.client_copy_done = 0
            self._answer_client_copy_done()
            return True
        return False

    def _end_copy(self, action: EndCopy) -> bool:
        rec = self.record
        self.send(frame(b"c"))
        if action.wait_client:
            end = time.monotonic() + action.timeout
            while not rec.client_copy_done and time.monotonic() < end:
                self.pump(end - time.monotonic())
            if not rec.client_copy_done:
                return False
        rec.client_copy_done = 0
        out = action.result.encode() if action.result is not None else b""
        if action.result is None or action.result.tag is None:
            out += command_complete(action.tag)
        if action.close:
            self.send(out)
            return False
        self.send(out + ready_for_query())
        return True


class FakeWalsender:
    """The server: a listening socket on 127.0.0.1 (a free port), a thread
    accepting connections and one thread per connection.

    The scenario of a connection is the one :meth:`add`-ed for its user name
    (the conninfo's ``user=``), else *scenario* (settable), else a scenario
    that answers nothing.  :meth:`stop` (or leaving the ``with`` block)
    closes everything and joins the threads.
    """

    def __init__(self, scenario: Scenario | None = None, host: str = "127.0.0.1") -> None:
        self.scenario = scenario
        self.host = host
        self.records: list[ConnectionRecord] = []
        self._by_user: dict[str, Scenario] = {}
        self._records_by_user: dict[str, list[ConnectionRecord]] = {}
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._acceptor: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------

    def start(self) -> FakeWalsender:
        self._acceptor = threading.Thread(target=self._accept_loop, name="fakewalsender-accept",
                                          daemon=True)
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)   # wakes accept()
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            if not c.record.done.is_set():
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        end = time.monotonic() + timeout
        for t in [self._acceptor, *self._threads]:
            if t is not None:
                t.join(max(0.0, end - time.monotonic()))

    def __enter__(self) -> FakeWalsender:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- scenarios and records -------------------------------------------------------

    def add(self, user: str, scenario: Scenario) -> None:
        """Serve *scenario* to connections with ``user=<user>``."""
        with self._lock:
            self._by_user[user] = scenario
            self._records_by_user.setdefault(user, [])

    def remove(self, user: str) -> None:
        """Forget *user*'s scenario and records (a long fuzzing run)."""
        with self._lock:
            self._by_user.pop(user, None)
            recs = self._records_by_user.pop(user, [])
            self.records = [r for r in self.records if r not in recs]
            self._conns = [c for c in self._conns if c.record not in recs]
            self._threads = [t for t in self._threads if t.is_alive()]

    def conninfo(self, user: str = "fake", **extra: str) -> str:
        """A libpq conninfo for this server (``host=127.0.0.1 port=N
        user=...``): no password, no SSL asked."""
        parts = [f"host={self.host}", f"port={self.port}", f"user={user}",
                 "sslmode=disable", "gssencmode=disable"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def records_for(self, user: str) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._records_by_user.get(user, []))

    def wait_records(self, user: str | None = None,
                     timeout: float = 10.0) -> list[ConnectionRecord]:
        """The records of *user*'s connections (all, for None) once every
        one of them is complete (at most *timeout* seconds)."""
        end = time.monotonic() + timeout
        recs = self.records_for(user) if user is not None else list(self.records)
        for r in recs:
            r.done.wait(max(0.0, end - time.monotonic()))
        return recs

    def _scenario_for(self, params: dict[str, str], record: ConnectionRecord) -> Scenario:
        """The scenario of a connection whose startup packet said *params*;
        its record is filed under its user from now on."""
        user = params.get("user", "")
        with self._lock:
            self._records_by_user.setdefault(user, []).append(record)
            sc = self._by_user.get(user)
            if sc is None:
                sc = self.scenario or Scenario(name="(none)")
            return sc

    # ---- accepting --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = _Connection(self, sock)
            t = threading.Thread(target=conn.run, daemon=True, name="fakewalsender-conn")
            with self._lock:
                self._conns.append(conn)
                self._threads.append(t)
                self.records.append(conn.record)
            t.start()

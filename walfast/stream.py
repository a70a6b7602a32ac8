"""The control loop: stream a server's WAL into a directory, as pg_receivewal.

This module decides *when* things happen: connecting, choosing the start
position, starting replication, following timelines, stopping, reconnecting.
It mirrors receivelog.c's ReceiveXlogStream/HandleCopyStream and
pg_receivewal.c's StreamLog/main loop, and talks to three parts only: the
server through :mod:`walfast.replication`, the output directory through
:class:`~walfast.waldir.directory.WalDirectory`, and the compiled engine
(:mod:`walfast._core`), whose receive loop reads the COPY, writes the WAL,
flushes and reports.

Python runs here once per tick (0.1 s), per segment or per timeline, never
per message.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from walfast import _core
from walfast.errors import (
    ConnectionLostError, SegmentError, ServerRefusedError, TimelineError, describe,
)
from walfast.log import NOTICE, get_logger
from walfast.lsn import format_lsn, parse_lsn, segment_start
from walfast.monitor import progress
from walfast.replication import commands
from walfast.replication.connection import connect, load_engine_libpq
from walfast.waldir.codecs import CompressionSpec
from walfast.waldir.directory import WalDirectory

if TYPE_CHECKING:
    from walfast.archive.uploader import ArchiveOptions, Uploader

__all__ = [
    "ReceiveOutcome", "StreamOptions", "receive_to_directory",
    "stream_once",
]

log = get_logger(__name__)

#: Seconds between reconnection attempts (pg_receivewal's RECONNECT_SLEEP_TIME).
RECONNECT_SLEEP = 5.0
#: Longest stretch the compiled loop runs before Python gets control back.
TICK = 0.1
#: How long a stop waits for the server to answer our CopyDone: a silent
#: server would otherwise hold the stop forever.
END_COPY_WAIT = 0.5

#: What pg_receivewal survives by waiting and connecting again: a lost,
#: refused or silent connection (libpq's errors, the server's errors and
#: refusals), and a local write or sync error (disk full, EIO, permissions,
#: a read-only file system), which may go away.
RETRIED = (psycopg.Error, ConnectionLostError, ServerRefusedError, OSError)
#: ...but not what walfast cannot trust, even where it is an OSError: a
#: .partial of the wrong size (pg_receivewal retries it forever; walfast
#: says what to do instead).  The rest of what walfast raises on purpose (a
#: gap, an invalid page, a malformed message, another cluster's directory,
#: an impossible timeline) is not in RETRIED at all.
NEVER_RETRIED = (SegmentError,)


@dataclass(frozen=True)
class StreamOptions:
    """What to receive and how: the counterpart of PostgreSQL's StreamCtl.

    ``sync=False`` is ``--no-sync``; ``endpos`` is ``--endpos`` (stop once
    WAL past it was received); ``compression`` is ``-Z``;
    ``receive_timeout`` is ``--receive-timeout`` (seconds without any message
    from the server before the connection counts as lost, the walreceiver's
    ``wal_receiver_timeout``; 0: never); ``min_free`` is ``--min-free``
    (bytes a new segment file must leave free, else receiving pauses);
    ``archive`` is ``--archive`` and ``--archive-partial-interval``.
    """

    directory: Path
    slot: str | None = None
    synchronous: bool = False
    status_interval: float = 10.0
    sync: bool = True
    endpos: int | None = None
    compression: CompressionSpec | None = None
    receive_timeout: float = 60.0
    min_free: int = 0
    archive: ArchiveOptions | None = None

    @property
    def report_flush(self) -> bool:
        # receivelog.c: flush is reported only with a slot or --synchronous,
        # so a plain receiver is never counted as a synchronous standby.
        return self.slot is not None or self.synchronous

    @property
    def archive_gates_flush(self) -> bool:
        """Whether the reported flush position waits for the archive: with
        a slot, not with ``--synchronous`` (whose commit point stays the
        local fdatasync)."""
        return self.archive is not None and self.slot is not None and not self.synchronous

    def wal_directory(self) -> WalDirectory:
        return WalDirectory(self.directory, sync=self.sync, compression=self.compression,
                            min_free=self.min_free)


class ReceiveOutcome(enum.Enum):
    """How one streaming session ended."""

    STOPPED = "stopped"            # asked to stop (signal): exit 0
    ENDPOS_REACHED = "endpos"      # --endpos passed: exit 0
    DISCONNECTED = "disconnected"  # server went away or ended the stream: retry or exit 1


def stream_once(
    conninfo: str, options: StreamOptions, *, should_stop: Callable[[], bool],
    application_name: str = "walfast", conn: psycopg.Connection | None = None,
    state: _core.ProgressState | None = None, waldir: WalDirectory | None = None,
    uploader: Uploader | None = None,
) -> ReceiveOutcome:
    """One connection's worth of pg_receivewal's StreamLog(): connect, pick
    the start, stream and follow timelines until the server goes away, the
    stop position is reached or *should_stop* returns true.

    *conn*, when given, is an open replication connection
    (:func:`walfast.replication.connection.connect`) to use instead of
    connecting; it is closed either way.  *state*, when given, is the shared
    progress state to keep up to date (:mod:`walfast.monitor.progress`).
    *waldir* is the output directory's owner (default: a new one for
    ``options.directory``).  *uploader*, with ``options.archive``, is told
    what was written and limits the reported flush position.

    A lost connection raises :class:`psycopg.OperationalError` (from libpq)
    or :class:`~walfast.errors.ConnectionLostError`; bad data and refusals
    raise other :class:`~walfast.errors.WalfastError` subclasses.
    """
    load_engine_libpq()
    if conn is None:
        conn = connect(conninfo, application_name=application_name,
                       default_connect_timeout=_connect_timeout(options))
    try:
        facts = commands.server_facts(conn, options.slot)
        if waldir is None:
            waldir = options.wal_directory()
        waldir.open(facts)
        return _Session(conn, options, waldir, facts, should_stop, state, uploader).run()
    finally:
        conn.close()


class _Session:
    """One connection: its server facts, the directory, where it started."""

    def __init__(self, conn: psycopg.Connection, options: StreamOptions, waldir: WalDirectory,
                 facts: commands.ServerFacts, should_stop: Callable[[], bool],
                 state: _core.ProgressState | None, uploader: Uploader | None = None) -> None:
        self.conn = conn
        self.uploader = uploader
        self.options = options
        self.waldir = waldir
        self.facts = facts
        self.should_stop = should_stop
        self.state = state

    # ---- where to start ------------------------------------------------------

    def choose_start(self) -> tuple[int, int, str]:
        """pg_receivewal's start position: the directory, else the slot, else
        the server's position, rounded down to a segment start (the
        directory's own may be refined inside a ``.partial``,
        :meth:`WalDirectory.find_start`).  Returns ``(lsn, timeline, where it
        came from)``."""
        facts, slot = self.facts, self.options.slot
        found = self.waldir.find_start()
        if found is not None:
            lsn, timeline = found
            how = "directory"
        else:
            lsn, timeline, how = facts.xlogpos, facts.timeline, "server position"
            if slot is not None and facts.major_facts.read_replication_slot:
                info = commands.read_replication_slot(self.conn, slot)
                if info.restart_lsn is not None and info.restart_tli is not None:
                    lsn, timeline, how = info.restart_lsn, info.restart_tli, f'slot "{slot}"'
            lsn = segment_start(lsn, facts.segment_size)
        log.debug("start position %s (timeline %d) from the %s", format_lsn(lsn), timeline, how)
        if timeline > facts.timeline:
            # pg_receivewal's message, then what it means and what to do.
            text = (f"starting timeline {timeline} is not present in the server (the {how} says "
                    f"timeline {timeline}, the server is on timeline {facts.timeline})")
            if how == "directory":
                text += (f'; the WAL in "{self.options.directory}" is not from this server or '
                         "comes from a later state of it: use another directory, or connect to "
                         "the server it came from")
            raise TimelineError(text)
        if lsn % facts.segment_size and timeline < facts.timeline:
            lsn = self._within_history(lsn, timeline)
        return lsn, timeline, how

    def _within_history(self, start: int, timeline: int) -> int:
        """A mid-segment resume point on an older timeline than the server's,
        moved back to its segment start when it lies past the point where
        the server's history left that timeline: the directory holds WAL the
        server never had on that timeline (it came from the old primary), and
        the walsender would refuse to start there.  From the segment start,
        the server streams up to its switch point and then the next
        timeline, as for pg_receivewal."""
        segsize = self.facts.segment_size
        try:
            _, content = commands.timeline_history(self.conn, self.facts.timeline)
        except psycopg.errors.UndefinedFile:
            return segment_start(start, segsize)   # cannot tell: as pg_receivewal
        for line in content.decode("ascii", errors="replace").splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == str(timeline):
                try:
                    switch = parse_lsn(fields[1])
                except ValueError:
                    break
                if start > switch:
                    log.debug("resume point %s is past the end of timeline %d on the server "
                              "(%s)", format_lsn(start), timeline, format_lsn(switch))
                    return segment_start(start, segsize)
                break
        return start

    # ---- streaming -----------------------------------------------------------------

    def run(self) -> ReceiveOutcome:
        start, timeline, how = self.choose_start()
        options, facts, state = self.options, self.facts, self.state
        past_endpos = options.endpos is not None and options.endpos < start
        if how != "directory" and not past_endpos:
            # A start from the server's answer is written down before it is
            # logged and asked for, so a restart never starts later than this.
            self.waldir.mark_start(timeline, start)
        log.info("starting log streaming at %s (timeline %d)", format_lsn(start), timeline)
        if past_endpos:
            # Already past the stop position: as pg_receivewal, stop before
            # START_REPLICATION, having written nothing.
            log.info("stopped log streaming at %s (timeline %d)", format_lsn(start), timeline)
            return ReceiveOutcome.ENDPOS_REACHED
        if state is not None:
            state.update(
                state=progress.STARTING, system_identifier=facts.system_identifier,
                segment_size=facts.segment_size, receive_start_lsn=start,
                receive_start_tli=timeline, received_tli=timeline, sync=options.sync,
                report_flush=options.report_flush, slot_name=options.slot or "",
                sender_host=self.conn.info.host, sender_port=int(self.conn.info.port or 0))
        while True:
            outcome, next_tli = self.stream_timeline(start, timeline)
            if next_tli is None:
                return outcome
            new_tli, switch = next_tli
            if new_tli <= timeline:
                raise TimelineError(
                    f"server reported unexpected next timeline {new_tli}, "
                    f"following timeline {timeline}")
            log.info("switched to timeline %d at %s", new_tli, format_lsn(switch))
            timeline, start = new_tli, segment_start(switch, facts.segment_size)

    def _fetch_history(self, timeline: int) -> None:
        """Fetch the history file of *timeline* and write it durably."""
        try:
            name, content = commands.timeline_history(self.conn, timeline)
        except psycopg.errors.UndefinedFile as e:
            # Retrying cannot help: say so instead of reconnecting forever.
            msg = (e.diag.message_primary or str(e)).strip()
            raise TimelineError(
                f"the server has no history file for timeline {timeline} ({msg}): timeline "
                f"{timeline} is not in its history, or the file was removed from its pg_wal. "
                f"walfast cannot stream timeline {timeline} from this server; connect to the "
                f'server that has it, or, if "{self.options.directory}" holds WAL of another '
                "history, use another directory") from None
        self.waldir.write_history(timeline, content)
        log.debug("wrote timeline history file %s", name)
        if self.uploader is not None:
            self.uploader.poke()

    def stream_timeline(
        self, start: int, timeline: int,
    ) -> tuple[ReceiveOutcome, tuple[int, int] | None]:
        """Stream *timeline* from *start* until it ends, the stop position is
        reached, a stop is asked for or the connection is lost.  Returns the
        outcome and, when the server ended the timeline, ``(next timeline,
        its start)``."""
        options, state, pgconn = self.options, self.state, self.conn.pgconn
        if timeline != 1 and not self.waldir.has_history(timeline):
            self._fetch_history(timeline)
        direct = commands.start_replication(self.conn, slot=options.slot, start_lsn=start,
                                            timeline=timeline)
        if direct is not None:
            # The start is exactly the end of an old timeline: nothing was
            # received; follow it as after a COPY.
            _check_switch(direct, timeline, start)
            return ReceiveOutcome.DISCONNECTED, direct
        if state is not None:
            state.update(state=progress.STREAMING, received_tli=timeline)
        copy = None
        with self.waldir.open_output(timeline=timeline, start_lsn=start,
                                     zero_fill=options.synchronous,
                                     stop_lsn=options.endpos) as output:
            writer = output.writer
            try:
                copy = _core.CopyStream(
                    # pgconn_ptr: the PGconn* address (not in psycopg's PGconn protocol type)
                    getattr(pgconn, "pgconn_ptr"), _core.StreamParser(writer),
                    report_flush=options.report_flush, synchronous=options.synchronous,
                    status_interval=options.status_interval,
                    receive_timeout=options.receive_timeout, progress=state)
                done = 0
                no_space = False
                while True:
                    self._tell_uploader(copy, writer, start)
                    try:
                        event = copy.run(TICK)
                    finally:
                        # Segments completed before an error are still logged.
                        completed = done
                        done = _log_segments(writer, done)
                        if self.uploader is not None and done != completed:
                            self.uploader.poke()
                    if copy.paused or no_space:
                        error = copy.pause_error
                        if (error is not None) != no_space:
                            no_space = error is not None
                            _log_pause(error)
                    if event == _core.STOP_REACHED:
                        _close_incomplete(writer, done, f"stopped log streaming at "
                                          f"{format_lsn(writer.write_lsn)} (timeline {timeline})")
                        self._report_final(copy)
                        _end_copy_for_stop(pgconn)
                        return ReceiveOutcome.ENDPOS_REACHED, None
                    if event == _core.COPY_DONE:
                        left = writer.current_file
                        _close_incomplete(writer, done)
                        try:
                            next_tli = commands.end_copy(pgconn, server_ended=True)
                        except ConnectionLostError as e:
                            raise _with_gap_hint(e, writer.write_lsn) from None
                        if next_tli is None:
                            log.error("replication stream was terminated before stop point")
                            return ReceiveOutcome.DISCONNECTED, None
                        _check_switch(next_tli, timeline, writer.write_lsn)
                        if self.uploader is not None and left:
                            self.uploader.timeline_ended(os.path.basename(left))
                        return ReceiveOutcome.DISCONNECTED, next_tli
                    if event == _core.CONN_ERROR:
                        msg = pgconn.error_message.decode(errors="replace").strip()
                        raise ConnectionLostError(
                            f"could not receive data from WAL stream: {msg}")
                    if event == _core.TIMEOUT:
                        raise ConnectionLostError(
                            f"terminating the connection: no message from the server in "
                            f"{options.receive_timeout:g} s (--receive-timeout)")
                    if self.should_stop():
                        if state is not None:
                            state.update(state=progress.STOPPING)
                        _close_incomplete(writer, done, "received interrupt signal, exiting")
                        self._report_final(copy)
                        # A silent server may never answer our CopyDone: wait
                        # only so long, then the connection is just closed.
                        _end_copy_for_stop(pgconn)
                        return ReceiveOutcome.STOPPED, None
            finally:
                if not writer.closed:
                    writer.close()
                if copy is not None:
                    copy.publish()      # what close() synced last

    def _tell_uploader(self, copy: _core.CopyStream, writer: _core.SegmentWriter,
                       start: int) -> None:
        """Each tick, with ``--archive``: tell the uploader what the open
        segment holds durably, and report no flush position past what the
        archive holds (with a slot).  Below this stream's start the archive
        lags behind what the slot already passed (files of earlier runs
        still uploading): then no flush position is reported at all, and
        the slot stays where it is."""
        uploader = self.uploader
        if uploader is None:
            return
        path = writer.current_file
        uploader.note(os.path.basename(path) if path else None, writer.flush_lsn)
        if self.options.archive_gates_flush:
            archived = uploader.archived_lsn
            copy.flush_limit = archived if archived >= start else 0

    def _report_final(self, copy: _core.CopyStream) -> None:
        """One last status update, after close() synced everything, so the
        slot (or a synchronous primary) learns the final flush position.
        pg_receivewal sends none, so its slot lags by up to a segment after a
        clean stop."""
        if self.options.report_flush and not copy.send_status():
            log.debug("could not send the final status update")


def _connect_timeout(options: StreamOptions) -> int | None:
    """A connection attempt gives up after the receive timeout (when the
    user set no connect_timeout): a path that swallows packets would
    otherwise hold a reconnect forever."""
    return max(2, int(options.receive_timeout)) if options.receive_timeout else None


def _log_pause(error: OSError | None) -> None:
    """Say when receiving pauses for lack of space (*error*: why) and when
    it goes on (None); printed without -v: an operator must see it."""
    if error is not None:
        log.log(NOTICE, "%s; receiving paused until there is space (the connection is kept)",
                describe(error))
    else:
        log.log(NOTICE, "there is space again: receiving resumed")


def _end_copy_for_stop(pgconn: psycopg.pq.abc.PGconn) -> None:
    """End the COPY we are leaving: the server's answer is awaited for
    :data:`END_COPY_WAIT` at most (a silent server may never give it), and
    a connection that broke meanwhile does not matter any more."""
    try:
        commands.end_copy(pgconn, timeout=END_COPY_WAIT)
    except (psycopg.Error, ConnectionLostError) as e:
        log.debug("ending the COPY: %s", describe(e))


def _close_incomplete(writer: _core.SegmentWriter, done: int, stopping: str = "") -> None:
    """Close the writer; as receivelog.c's close_walfile, say so when that
    leaves a segment incomplete (printed without -v too).

    With compressed output close() waits for the worker, which may still be
    finishing segments completed earlier: they are logged first (pg_receivewal
    logs a segment as it completes), then *stopping* (a -v line), then the
    incomplete one.  *done* is the count :func:`_log_segments` returned last.
    """
    path = writer.current_file
    writer.close()
    _log_segments(writer, done)
    if stopping:
        log.info("%s", stopping)
    if path is not None:
        log.log(NOTICE, 'not renaming "%s", segment is not complete', os.path.basename(path))
    if stopping:
        # pg_receivewal's stop callback runs again once the file is closed,
        # and says it again.
        log.info("%s", stopping)


def _with_gap_hint(e: ConnectionLostError, received: int) -> ConnectionLostError:
    """The server ended the stream with an error; when it is that the WAL
    asked for was already removed, say what that means for the archive."""
    text = str(e)
    if "has already been removed" not in text:
        return e
    return ConnectionLostError(
        f"{text}\nthe server no longer has the WAL this directory needs next: the archive "
        f"has a gap from {format_lsn(received)} to the oldest WAL the server still keeps.  "
        "Receiving resumes from there only with a new base backup to restore from; to keep "
        "this from happening, stream with a replication slot (-S)")


def _check_switch(next_tli: tuple[int, int], timeline: int, stop_lsn: int) -> None:
    new_tli, switch = next_tli
    if switch > stop_lsn:
        raise TimelineError(
            f"server stopped streaming timeline {timeline} at {format_lsn(stop_lsn)}, but "
            f"reported next timeline {new_tli} to begin at {format_lsn(switch)}")


def _log_segments(writer: _core.SegmentWriter, done: int) -> int:
    """Log each segment completed since the last call (pg_receivewal -v)."""
    completed = writer.segments_completed
    if completed > done and log.isEnabledFor(logging.INFO):
        size = writer.segment_size
        last_end = writer.completed_end
        for k in range(completed - done, 0, -1):
            log.info("finished segment at %s (timeline %d)",
                     format_lsn(last_end - (k - 1) * size), writer.timeline)
    return completed


def receive_to_directory(
    conninfo: str, options: StreamOptions, *, should_stop: Callable[[], bool] = lambda: False,
    loop: bool = True, application_name: str = "walfast",
) -> ReceiveOutcome:
    """Stream into ``options.directory`` until stopped, as pg_receivewal does.

    With *loop* (the default) whatever pg_receivewal survives by retrying is
    logged and retried every 5 seconds, forever (:data:`RETRIED`: a lost or
    silent connection, a refusal of the server such as a slot in use or
    missing, a server error mid-stream, a local write or sync error); without
    it (``-n``) the first of them is logged and returned as
    :attr:`ReceiveOutcome.DISCONNECTED`.  What walfast cannot trust is
    raised instead, loop or not: a gap in the stream, an invalid page, a
    malformed message, another cluster's directory, an impossible timeline,
    a ``.partial`` of the wrong size.  The first connection's failure is
    raised either way (as pg_receivewal exits when it cannot connect at all).

    Once the first connection succeeded the directory is claimed
    (:meth:`WalDirectory.claim`): its shared progress state is created, kept
    up to date and left in state ``stopped`` at the end
    (:mod:`walfast.monitor.progress`).
    """
    # As pg_receivewal's main(): only a failure of the very first connection
    # is fatal; once connected, errors end the session like a disconnection.
    conn: psycopg.Connection | None = connect(
        conninfo, application_name=application_name,
        default_connect_timeout=_connect_timeout(options))
    waldir = options.wal_directory()
    uploader = None
    try:
        assert conn is not None
        facts = commands.server_facts(conn, options.slot)
        state = waldir.claim(facts)
        state.update(sync=options.sync, report_flush=options.report_flush,
                     slot_name=options.slot or "")
        if options.archive is not None:
            uploader = _start_uploader(options, facts)
    except BaseException:
        assert conn is not None
        conn.close()
        raise
    sessions = 0
    outcome = None
    try:
        while True:
            state.update(state=progress.STARTING, reconnects=sessions)
            sessions += 1
            try:
                outcome = stream_once(conninfo, options, should_stop=should_stop,
                                      application_name=application_name, conn=conn,
                                      state=state, waldir=waldir, uploader=uploader)
            except RETRIED as e:
                if isinstance(e, NEVER_RETRIED):
                    raise
                log.error("%s", describe(e))
                if isinstance(e, OSError):
                    # A failed write or sync leaves the open file's content in
                    # doubt: stream it again from its segment start.
                    waldir.distrust_partials()
                outcome = ReceiveOutcome.DISCONNECTED
            conn = None
            if outcome is not ReceiveOutcome.DISCONNECTED or not loop:
                return outcome
            if should_stop():
                return ReceiveOutcome.STOPPED
            state.update(state=progress.WAITING)
            log.log(NOTICE, "disconnected; waiting %d seconds to try again", RECONNECT_SLEEP)
            deadline = time.monotonic() + RECONNECT_SLEEP
            while time.monotonic() < deadline:
                if should_stop():
                    return ReceiveOutcome.STOPPED
                time.sleep(TICK)
    finally:
        if uploader is not None:
            # At --endpos the archive gets everything before the exit (a
            # script waits for it); a stop request does not wait for uploads.
            drain = outcome is ReceiveOutcome.ENDPOS_REACHED
            if not uploader.close(drain=drain and not should_stop(), timeout=None) and drain:
                log.warning("stopped before every completed file was uploaded to %s; the next "
                            "start uploads the rest", uploader.store.url)
        state.update(state=progress.STOPPED)
        state.close()


def _start_uploader(options: StreamOptions, facts: commands.ServerFacts) -> Uploader:
    """The archive's uploader, started once the directory is claimed.  A
    location that cannot work (no such bucket, no credentials, access
    denied) is refused before streaming starts; one that is just down is
    retried while receiving goes on."""
    from walfast.archive.store import open_store
    from walfast.archive.uploader import Uploader
    from walfast.errors import ArchiveError

    assert options.archive is not None
    store = open_store(options.archive.url)
    try:
        next(iter(store.names("~")), None)     # one small request: the bucket answers
    except ArchiveError as exc:
        if not exc.retryable:
            raise
        log.warning("%s; receiving starts anyway, uploads are retried", exc)
    uploader = Uploader(options.directory, store,
                        partial_interval=options.archive.partial_interval,
                        file_mode=facts.file_mode, sync=options.sync)
    uploader.start(facts.segment_size)
    return uploader

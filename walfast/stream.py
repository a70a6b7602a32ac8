"""The control loop: stream a server's WAL into a directory, as pg_receivewal.

This module decides *when* things happen: connecting, choosing the start
position, starting replication, following timelines, stopping, reconnecting.
It mirrors receivelog.c's ReceiveXlogStream/HandleCopyStream and
pg_receivewal.c's StreamLog/main loop.  It does not touch WAL bytes (the
compiled engine, :mod:`walfast._core`, does), nor parse replication command
results (:mod:`walfast.protocol`), nor scan directories
(:mod:`walfast.segments`).

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

import psycopg
from psycopg import pq

from walfast import _core
from walfast.monitor import progress
from walfast.replication import commands as protocol
from walfast.replication.libpq import psycopg_libpq_path
from walfast.waldir import identity, layout, resume, scan as segments
from walfast.waldir.codecs import CompressionSpec
from walfast.waldir.compressor import CompressWorker
from walfast.waldir.directory import write_history_file
from walfast.errors import TimelineError, WalfastError
from walfast.lsn import format_lsn, history_file_name, parse_lsn, segment_start

__all__ = [
    "NOTICE", "ReceiveOutcome", "StreamOptions", "error_text", "receive_to_directory",
    "stream_once",
]

log = logging.getLogger("walfast.stream")

#: Log level of the messages pg_receivewal prints even without --verbose
#: (its unconditional pg_log_info calls), between INFO (-v only) and WARNING.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

#: Seconds between reconnection attempts (pg_receivewal's RECONNECT_SLEEP_TIME).
RECONNECT_SLEEP = 5.0
#: Longest stretch the compiled loop runs before Python gets control back.
TICK = 0.1


@dataclass(frozen=True)
class StreamOptions:
    """What to receive and how: the counterpart of PostgreSQL's StreamCtl.

    ``sync=False`` is ``--no-sync``; ``endpos`` is ``--endpos`` (stop once
    WAL past it was received); ``flush_bytes`` flushes whenever that much is
    pending (0: only when the policy in :class:`walfast._core.CopyStream`
    says so).
    """

    directory: Path
    slot: str | None = None
    synchronous: bool = False
    status_interval: float = 10.0
    sync: bool = True
    endpos: int | None = None
    flush_bytes: int = 0
    compression: CompressionSpec | None = None

    @property
    def report_flush(self) -> bool:
        # receivelog.c: flush is reported only with a slot or --synchronous,
        # so a plain receiver is never counted as a synchronous standby.
        return self.slot is not None or self.synchronous


class ReceiveOutcome(enum.Enum):
    """How one streaming session ended."""

    STOPPED = "stopped"            # asked to stop (signal): exit 0
    ENDPOS_REACHED = "endpos"      # --endpos passed: exit 0
    DISCONNECTED = "disconnected"  # server went away or ended the stream: retry or exit 1


_libpq_loaded = False


def _ensure_libpq() -> None:
    global _libpq_loaded
    if not _libpq_loaded:
        _core.load_libpq(psycopg_libpq_path())
        _libpq_loaded = True


def _choose_start(
    conn: psycopg.Connection, options: StreamOptions, segment_size: int, page_size: int,
    info: protocol.SystemInfo, untrusted_through: int | None,
) -> tuple[int, int, str]:
    """pg_receivewal's start position: the directory, else the slot, else the
    server's position, rounded down to a segment start; then, beyond
    pg_receivewal, the start of the last valid page of a ``.partial`` written
    in this boot (:func:`walfast.resume.resume_position`).  Returns
    ``(lsn, timeline, where it came from)``."""
    found = segments.find_streaming_start(options.directory, segment_size)
    if found is not None:
        lsn, timeline = found
        how = "directory"
        if options.compression is None:
            # A compressed file must hold its segment from the start, so a
            # plain .partial left by an uncompressed run is not resumed
            # mid-segment when compressing now.
            lsn = resume.resume_position(
                options.directory, lsn, timeline, segment_size=segment_size,
                page_size=page_size, system_identifier=info.systemid,
                untrusted_through=untrusted_through)
    else:
        lsn, timeline, how = info.xlogpos, info.timeline, "server position"
        if options.slot is not None and conn.info.server_version >= 150000:
            slot = protocol.read_replication_slot(conn, options.slot)
            if slot.restart_lsn is not None and slot.restart_tli is not None:
                lsn, timeline, how = slot.restart_lsn, slot.restart_tli, f'slot "{options.slot}"'
        lsn = segment_start(lsn, segment_size)
    log.debug("start position %s (timeline %d) from the %s", format_lsn(lsn), timeline, how)
    return lsn, timeline, how


def stream_once(
    conninfo: str, options: StreamOptions, *, should_stop: Callable[[], bool],
    application_name: str = "walfast", conn: psycopg.Connection | None = None,
    state: _core.ProgressState | None = None,
) -> ReceiveOutcome:
    """One connection's worth of pg_receivewal's StreamLog(): connect, pick
    the start, stream and follow timelines until the server goes away, the
    stop position is reached or *should_stop* returns true.

    *conn*, when given, is an open replication connection
    (:func:`walfast.protocol.connect`) to use instead of connecting; it is
    closed either way.  *state*, when given, is the shared progress state to
    keep up to date (:mod:`walfast.progress`).

    Connection failures raise :class:`psycopg.OperationalError`; bad data
    raises :class:`walfast.errors.WalfastError` subclasses.
    """
    _ensure_libpq()
    if conn is None:
        conn = protocol.connect(conninfo, application_name=application_name)
    try:
        protocol.check_server_version(conn)
        info = protocol.identify_system(conn)
        protocol.check_physical(info, options.slot)
        segment_size = protocol.wal_segment_size(conn)
        page_size = protocol.wal_block_size(conn)
        file_mode = protocol.file_mode_for(protocol.data_directory_mode(conn))
        # Before anything is written: is this directory this cluster's, and
        # which of its files may hold bytes from before this boot?
        layout.migrate_legacy_files(options.directory, file_mode=file_mode, sync=options.sync)
        identity.check_and_record(
            options.directory, identity.DirectoryIdentity(info.systemid, segment_size, page_size),
            sync=options.sync, mode=file_mode)
        untrusted = resume.note_boot(options.directory, segment_size, sync=options.sync,
                                     mode=file_mode)
        start, timeline, how = _choose_start(conn, options, segment_size, page_size, info,
                                             untrusted)
        if timeline > info.timeline:
            # pg_receivewal's message, then what it means and what to do.
            text = (f"starting timeline {timeline} is not present in the server (the {how} says "
                    f"timeline {timeline}, the server is on timeline {info.timeline})")
            if how == "directory":
                text += (f'; the WAL in "{options.directory}" is not from this server or comes '
                         "from a later state of it: use another directory, or connect to the "
                         "server it came from")
            raise TimelineError(text)
        if start % segment_size and timeline < info.timeline:
            start = _within_history(conn, start, timeline, info.timeline, segment_size)
        log.info("starting log streaming at %s (timeline %d)", format_lsn(start), timeline)
        if state is not None:
            state.update(
                state=progress.STARTING, system_identifier=info.systemid,
                segment_size=segment_size, receive_start_lsn=start, receive_start_tli=timeline,
                received_tli=timeline, sync=options.sync, report_flush=options.report_flush,
                slot_name=options.slot or "", sender_host=conn.info.host,
                sender_port=int(conn.info.port or 0))
        while True:
            outcome, next_tli = _stream_timeline(
                conn, options, info, segment_size, page_size, file_mode, start, timeline,
                should_stop, state,
            )
            if next_tli is None:
                return outcome
            new_tli, switch = next_tli
            if new_tli <= timeline:
                raise TimelineError(
                    f"server reported unexpected next timeline {new_tli}, "
                    f"following timeline {timeline}")
            log.info("switched to timeline %d at %s", new_tli, format_lsn(switch))
            timeline, start = new_tli, segment_start(switch, segment_size)
    finally:
        conn.close()


def _stream_timeline(
    conn: psycopg.Connection, options: StreamOptions, info: protocol.SystemInfo,
    segment_size: int, page_size: int, file_mode: int, start: int, timeline: int,
    should_stop: Callable[[], bool], state: _core.ProgressState | None = None,
) -> tuple[ReceiveOutcome, tuple[int, int] | None]:
    directory = options.directory
    if timeline != 1 and not (directory / history_file_name(timeline)).exists():
        _fetch_history(conn, directory, timeline, options.sync, file_mode)

    pgconn = conn.pgconn
    pgconn.send_query(protocol.start_replication_command(
        slot=options.slot, start_lsn=start, timeline=timeline))
    res = pgconn.get_result()
    status = pq.ExecStatus(res.status) if res is not None else None
    if status == pq.ExecStatus.TUPLES_OK and res is not None:
        # The start is exactly the end of an old timeline: the walsender
        # answers with the next timeline's row and no COPY (pg_receivewal
        # gives up here).  Nothing was received: follow it as after a COPY.
        direct = protocol.read_next_timeline(pgconn, res)
        _check_switch(direct, timeline, start)
        return ReceiveOutcome.DISCONNECTED, direct
    if status != pq.ExecStatus.COPY_BOTH:
        msg = res.error_message.decode(errors="replace").strip() if res is not None else ""
        raise WalfastError(f'could not send replication command "START_REPLICATION": {msg}')

    # Compressed output: the writer queues the checked WAL for a worker
    # thread that compresses and writes (walfast/compressor.py).
    spec = options.compression
    sink = _core.ChunkQueue() if spec is not None else None
    writer = _core.SegmentWriter(
        directory, timeline=timeline, start_lsn=start, segment_size=segment_size,
        system_identifier=info.systemid, page_size=page_size, sync=options.sync,
        file_mode=file_mode, sink=sink, sink_suffix=spec.suffix if spec is not None else "",
        zero_fill=options.synchronous,
    )
    worker = None
    if spec is not None and sink is not None:
        worker = CompressWorker(
            sink, directory, spec, timeline=timeline, segment_size=segment_size,
            sync=options.sync, file_mode=file_mode).start()
    copy = None
    if state is not None:
        state.update(state=progress.STREAMING, received_tli=timeline)
    try:
        if options.endpos is not None:
            writer.stop_lsn = options.endpos
        parser = _core.StreamParser(writer)
        copy = _core.CopyStream(
            # pgconn_ptr: the PGconn* address (not in psycopg's PGconn protocol type)
            getattr(pgconn, "pgconn_ptr"), parser, report_flush=options.report_flush,
            synchronous=options.synchronous, status_interval=options.status_interval,
            progress=state,
        )
        done = 0
        while True:
            event = copy.run(TICK)
            done = _log_segments(writer, done)
            if event == _core.STOP_REACHED:
                _close_incomplete(writer, done, f"stopped log streaming at "
                                  f"{format_lsn(writer.write_lsn)} (timeline {timeline})")
                _report_final(copy, options)
                protocol.end_copy(pgconn)
                return ReceiveOutcome.ENDPOS_REACHED, None
            if event == _core.COPY_DONE:
                _close_incomplete(writer, done)
                next_tli = protocol.end_copy(pgconn, server_ended=True)
                if next_tli is None:
                    log.error("replication stream was terminated before stop point")
                    return ReceiveOutcome.DISCONNECTED, None
                _check_switch(next_tli, timeline, writer.write_lsn)
                return ReceiveOutcome.DISCONNECTED, next_tli
            if event == _core.CONN_ERROR:
                msg = pgconn.error_message.decode(errors="replace").strip()
                raise psycopg.OperationalError(
                    f"could not receive data from WAL stream: {msg}")
            if should_stop():
                if state is not None:
                    state.update(state=progress.STOPPING)
                _close_incomplete(writer, done, "received interrupt signal, exiting")
                _report_final(copy, options)
                protocol.end_copy(pgconn)
                return ReceiveOutcome.STOPPED, None
    finally:
        try:
            if not writer.closed:
                writer.close()
            if copy is not None:
                copy.publish()      # what close() synced last
        finally:
            if worker is not None:
                worker.stop()


def _within_history(
    conn: psycopg.Connection, start: int, timeline: int, server_timeline: int,
    segment_size: int,
) -> int:
    """A mid-segment resume point on an older timeline than the server's,
    moved back to its segment start when it lies past the point where the
    server's history left that timeline: the directory holds WAL the server
    never had on that timeline (it came from the old primary), and the
    walsender would refuse to start there.  From the segment start, the
    server streams up to its switch point and then the next timeline, as
    for pg_receivewal."""
    try:
        _, content = protocol.timeline_history(conn, server_timeline)
    except psycopg.errors.UndefinedFile:
        return segment_start(start, segment_size)   # cannot tell: as pg_receivewal
    for line in content.decode("ascii", errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == str(timeline):
            try:
                switch = parse_lsn(fields[1])
            except ValueError:
                break
            if start > switch:
                log.debug("resume point %s is past the end of timeline %d on the server (%s)",
                          format_lsn(start), timeline, format_lsn(switch))
                return segment_start(start, segment_size)
            break
    return start


def _fetch_history(
    conn: psycopg.Connection, directory: Path, timeline: int, sync: bool, file_mode: int,
) -> None:
    """Fetch the history file of *timeline* and write it durably
    (:func:`walfast.segments.write_history_file`)."""
    try:
        name, content = protocol.timeline_history(conn, timeline)
    except psycopg.errors.UndefinedFile as e:
        # Retrying cannot help: say so instead of reconnecting forever.
        msg = (e.diag.message_primary or str(e)).strip()
        raise TimelineError(
            f"the server has no history file for timeline {timeline} ({msg}): timeline "
            f"{timeline} is not in its history, or the file was removed from its pg_wal. "
            f"walfast cannot stream timeline {timeline} from this server; connect to the server "
            f'that has it, or, if "{directory}" holds WAL of another history, use another '
            "directory") from None
    write_history_file(directory, timeline, content, sync=sync, mode=file_mode)
    log.debug("wrote timeline history file %s", name)


def _report_final(copy: _core.CopyStream, options: StreamOptions) -> None:
    """One last status update, after close() synced everything, so the slot
    (or a synchronous primary) learns the final flush position.  pg_receivewal
    sends none, so its slot lags by up to a segment after a clean stop."""
    if options.report_flush and not copy.send_status():
        log.debug("could not send the final status update")


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


def error_text(exc: BaseException) -> str:
    """The message of a psycopg error as libpq (and pg_receivewal) words it:
    without the "connection failed: " / "connection is bad: " prefixes
    psycopg adds to a failed connection attempt."""
    text = str(exc).strip()
    for prefix in ("connection failed: ", "connection is bad: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


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
    loop: bool = True, application_name: str = "walfast", progress_state: bool = True,
) -> ReceiveOutcome:
    """Stream into ``options.directory`` until stopped, as pg_receivewal does.

    With *loop* (the default) a lost connection is retried every 5 seconds,
    forever; without it (``-n``) the first disconnection is returned as
    :attr:`ReceiveOutcome.DISCONNECTED`.  The first connection's failure is
    raised either way (as pg_receivewal exits when it cannot connect at all).

    With *progress_state* the shared progress state file is created in the
    directory once the first connection succeeded, kept up to date and left
    in state ``stopped`` at the end (:mod:`walfast.progress`).
    """
    # As pg_receivewal's main(): only a failure of the very first connection
    # is fatal; once connected, errors end the session like a disconnection.
    conn: psycopg.Connection | None = protocol.connect(
        conninfo, application_name=application_name)
    state = None
    try:
        if progress_state:
            layout.migrate_legacy_files(options.directory, sync=options.sync)
            state = progress.create_state(options.directory, sync=options.sync)
            state.update(sync=options.sync, report_flush=options.report_flush,
                         slot_name=options.slot or "")
    except BaseException:
        assert conn is not None
        conn.close()
        raise
    sessions = 0
    try:
        while True:
            if state is not None:
                state.update(state=progress.STARTING, reconnects=sessions)
            sessions += 1
            try:
                outcome = stream_once(conninfo, options, should_stop=should_stop,
                                      application_name=application_name, conn=conn,
                                      state=state)
            except psycopg.OperationalError as e:
                log.error("%s", error_text(e))
                outcome = ReceiveOutcome.DISCONNECTED
            conn = None
            if outcome is not ReceiveOutcome.DISCONNECTED or not loop:
                return outcome
            if should_stop():
                return ReceiveOutcome.STOPPED
            if state is not None:
                state.update(state=progress.WAITING)
            log.log(NOTICE, "disconnected; waiting %d seconds to try again", RECONNECT_SLEEP)
            deadline = time.monotonic() + RECONNECT_SLEEP
            while time.monotonic() < deadline:
                if should_stop():
                    return ReceiveOutcome.STOPPED
                time.sleep(TICK)
    finally:
        if state is not None:
            state.update(state=progress.STOPPED)
            state.close()

"""Ship the WAL directory's files to the archive, off the receive path.

The :class:`Uploader` runs in its own threads beside the receive loop.  Its
queue is the directory itself: every completed segment and history file
there that the archive does not hold yet (in segment order), so a store
that is down for hours costs memory for names only, and the backlog drains
by itself when it is back.  The receive loop never waits for it.

What the archive holds is recorded in ``.walfast/archived`` (one name per
line, appended and fsynced after the store confirmed the upload): a
completed upload is never skipped (a file not recorded is uploaded) and
never repeated needlessly (a file recorded is not; one that a crash kept
from being recorded is first looked up in the store, and not uploaded
again when the store has exactly its content).  The record is compacted at
each start to the names still in the directory.

The slot gate, :attr:`Uploader.archived_lsn`: the WAL position up to which
the archive holds everything the directory has; the receive loop reports
no flush position past it (``stream.py``), so with a slot the primary keeps
every byte the bucket does not have yet.  It is the start of the oldest
completed segment not uploaded yet, else the end of what was uploaded (the
newest segment, or the ``.partial`` snapshot of ``--archive-partial-
interval``).

Failures are retried with exponential backoff and jitter (1 s doubling to 60
s), each logged as a warning naming the file and the store's reason;
status and metrics read the lag and failures from ``.walfast/archive-status``
(:mod:`walfast.archive.status`).
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from walfast.archive.status import write_archive_status
from walfast.archive.store import Store
from walfast.errors import ArchiveError, describe
from walfast.log import get_logger
from walfast.lsn import format_lsn, parse_history_file_name, parse_wal_file_name
from walfast.waldir import layout
from walfast.waldir.durable import write_file_durably

__all__ = ["ArchiveOptions", "Uploader"]

log = get_logger(__name__)

#: Uploads in flight at once.
CONCURRENCY = 4
#: How much lower the upload threads' priority is than the receive loop's.
UPLOAD_NICE = 10
#: Backoff after a failure: from FIRST_RETRY doubling up to MAX_RETRY seconds,
#: each wait drawn from [0.5, 1.5) of that (jitter, so many receivers that
#: lost one store do not come back to it in step).
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
#: How often the directory is scanned when nothing pokes the uploader.
RESCAN = 2.0
#: How often the status file is rewritten while something changes.
STATUS_EVERY = 1.0


@dataclass(frozen=True)
class ArchiveOptions:
    """``--archive URL`` and ``--archive-partial-interval SECS`` (0: the
    open segment is not uploaded)."""

    url: str
    partial_interval: float = 0.0


@dataclass
class _Pending:
    name: str
    segno: int | None          # None: a history (or other non-segment) file
    size: int
    since: float               # when it was first seen waiting (time.time())
    attempts: int = 0
    not_before: float = 0.0    # monotonic time of the next try
    checked: bool = False      # looked up in the store (after a crash)


def _yield_to_receiving() -> None:
    """Upload threads run at a lower priority (nice 10, Linux: per thread)
    than the receive loop: catching up, four uploads at full speed took half
    of a 2-core machine (benchmarks/README.md, "Archive to S3")."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       min(19, os.getpriority(os.PRIO_PROCESS, 0) + UPLOAD_NICE))
    except OSError:
        pass


def _is_archived_name(name: str) -> bool:
    """Completed segments (compressed too) and history files: what the
    archive gets under its own name."""
    wal = parse_wal_file_name(name)
    if wal is not None:
        return wal.complete
    try:
        parse_history_file_name(name)
    except ValueError:
        return False
    return True


class Uploader:
    """Uploads *directory*'s completed WAL files to *store* (see the module
    docstring).  :meth:`start` it once the directory is open and its segment
    size known; :meth:`note` tells it what the receive loop wrote (each
    tick); :meth:`close` stops it.  Thread-safe: :attr:`archived_lsn` and
    :meth:`status` may be read from any thread."""

    def __init__(self, directory: Path, store: Store, *, partial_interval: float = 0.0,
                 file_mode: int = 0o600, sync: bool = True) -> None:
        self.directory = Path(directory)
        self.store = store
        self.partial_interval = partial_interval
        self._file_mode = file_mode
        self._sync = sync
        self._segment_size = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # All under _lock:
        self._archived: set[str] = set()
        self._pending: dict[str, _Pending] = {}
        self._in_flight: set[str] = set()
        self._archived_segnos: set[int] = set()
        self._newest_archived = -1       # max(_archived_segnos), kept as they come (read each tick)
        self._first_unarchived: int | None = None   # segno
        self._partial: tuple[str, int] | None = None  # the open segment's file, its flush end
        self._partial_archived: tuple[int, int] = (0, 0)   # (segno, end) of the last snapshot
        self._partial_objects: set[str] = set()       # .partial objects put this run
        self._last_partial = 0.0
        self._timeline_ends: list[str] = []           # .partial files a timeline left, to ship
        self._timeline_ends_not_before = 0.0          # after a failure: one try per interval
        self.uploaded_files = 0
        self.uploaded_bytes = 0
        self.failures = 0
        self.last_error = ""
        self._failing_since = 0.0
        self._status_written = 0.0
        self._record: TextIO | None = None

    # ---- lifecycle -----------------------------------------------------------------

    def start(self, segment_size: int) -> None:
        """Load and compact the record, find the backlog and start."""
        self._segment_size = segment_size
        layout.ensure_state_dir(self.directory, file_mode=self._file_mode, sync=self._sync)
        record = layout.state_file(self.directory, layout.ARCHIVED)
        try:
            names = set(record.read_text().split())
        except FileNotFoundError:
            names = set()
        present = set(os.listdir(self.directory))
        kept = sorted(names & present)
        if len(kept) != len(names) or not record.exists():
            write_file_durably(record.parent, record.name, "".join(n + "\n" for n in kept).encode(),
                               sync=self._sync, mode=self._file_mode)
        self._archived = set(kept)
        self._record = open(record, "a")
        for name in self._archived:
            segno = self._segno(name)
            if segno is not None:
                self._archived_segnos.add(segno)
                self._newest_archived = max(self._newest_archived, segno)
        self._scan(first=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            CONCURRENCY, thread_name_prefix="walfast-upload", initializer=_yield_to_receiving)
        self._thread = threading.Thread(target=self._run, name="walfast-archive", daemon=True)
        self._thread.start()
        with self._lock:
            backlog = len(self._pending)
        log.info("archiving to %s: %d files already there, %d to upload", self.store.url,
                 len(self._archived), backlog)

    def close(self, drain: bool = False, timeout: float | None = None) -> bool:
        """Stop.  With *drain*, first wait (up to *timeout* seconds, None:
        no limit) until every completed file is uploaded; returns whether
        nothing was left waiting.  Uploads still in flight are abandoned
        (made again on the next start)."""
        if self._thread is None:
            return True
        if drain:
            deadline = None if timeout is None else time.monotonic() + timeout
            # What the receive loop completed last may not have been seen
            # yet: look now, before counting what is left.
            self._scan()
            self.poke()
            said = 0.0
            while True:
                with self._lock:
                    left = len(self._pending) + len(self._in_flight)
                if not left or (deadline is not None and time.monotonic() > deadline):
                    break
                if time.monotonic() - said > 10:
                    log.info("waiting for %d files to be uploaded to %s", left, self.store.url)
                    said = time.monotonic()
                time.sleep(0.05)
        self._stopping.set()
        self._wake.set()
        self._thread.join(2.0)
        assert self._pool is not None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._write_status(force=True)
        with self._lock:
            done = not self._pending and not self._in_flight
            if self._record is not None:
                self._record.close()
                self._record = None
        self._thread = None
        return done

    # ---- what the receive loop tells -----------------------------------------------

    def poke(self) -> None:
        """Something was completed: look at the directory now."""
        self._wake.set()

    def note(self, partial: str | None, flushed_lsn: int) -> None:
        """The receive loop's open segment file (its name; None: none) and
        the WAL position durable in it: what a ``.partial`` snapshot covers."""
        with self._lock:
            self._partial = (partial, flushed_lsn) if partial else None

    def timeline_ended(self, partial: str) -> None:
        """A timeline ended inside a segment: its ``.partial`` file (closed
        and synced) stays in the directory for good, as pg_receivewal leaves
        it.  With ``partial_interval``, its final state is shipped once, so
        no older snapshot of it stays behind in the archive."""
        if self.partial_interval:
            with self._lock:
                self._timeline_ends.append(partial)
            self._wake.set()

    @property
    def archived_lsn(self) -> int:
        """Up to where the archive holds everything the directory has
        (0: nothing known)."""
        with self._lock:
            return self._archived_lsn()

    def _archived_lsn(self) -> int:
        seg = self._segment_size
        if self._first_unarchived is not None:
            return self._first_unarchived * seg
        end = (self._newest_archived + 1) * seg
        psegno, pend = self._partial_archived
        if pend and psegno >= self._newest_archived:
            end = max(end, pend)
        return end

    # ---- the worker ----------------------------------------------------------------

    def _segno(self, name: str) -> int | None:
        wal = parse_wal_file_name(name)
        return None if wal is None else wal.position(self._segment_size)[1]

    def _scan(self, first: bool = False) -> None:
        """Add the directory's completed files not archived to the backlog."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            log.warning("could not read directory \"%s\": %s", self.directory, describe(exc))
            return
        now = time.time()
        with self._lock:
            for entry in entries:
                name = entry.name
                if (name in self._archived or name in self._pending
                        or not _is_archived_name(name)):
                    continue
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:
                    continue
                self._pending[name] = _Pending(name, self._segno(name), size, now,
                                               checked=not first)
            self._update_first_unarchived()

    def _update_first_unarchived(self) -> None:
        segnos = [p.segno for p in self._pending.values() if p.segno is not None]
        self._first_unarchived = min(segnos) if segnos else None

    def _run(self) -> None:
        next_scan = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                if self._wake.is_set() or now >= next_scan:
                    self._wake.clear()
                    self._scan()
                    next_scan = now + RESCAN
                self._submit_ready()
                self._maybe_snapshot_partial()
                self._write_status()
            except Exception as exc:     # never let the archive stop for good
                log.warning("archive uploader: %s; going on in %g s", describe(exc), RESCAN)
                self._wake.wait(RESCAN)
                continue
            self._wake.wait(self._next_wait())

    def _next_wait(self) -> float:
        with self._lock:
            waits = [p.not_before - time.monotonic() for p in self._pending.values()
                     if p.name not in self._in_flight and p.not_before]
        if self.partial_interval and self._partial is not None:
            waits.append(self._last_partial + self.partial_interval - time.monotonic())
        return max(0.05, min([RESCAN, STATUS_EVERY, *waits]))

    def _submit_ready(self) -> None:
        assert self._pool is not None
        now = time.monotonic()
        with self._lock:
            ready = sorted((p for p in self._pending.values()
                            if p.name not in self._in_flight and p.not_before <= now),
                           key=lambda p: (p.segno is not None, p.segno or 0, p.name))
            room = CONCURRENCY - len(self._in_flight)
            for item in ready[:max(0, room)]:
                self._in_flight.add(item.name)
                self._pool.submit(self._upload, item)

    def _upload(self, item: _Pending) -> None:
        path = self.directory / item.name
        try:
            if not path.exists():
                # Removed from the directory meanwhile (retention): nothing to ship.
                with self._lock:
                    self._pending.pop(item.name, None)
                    self._update_first_unarchived()
                return
            if not item.checked and self.store.holds(item.name, path):
                # Uploaded by a run that stopped before recording it.
                log.info("%s is already in %s", item.name, self.store.url)
            else:
                self.store.put(item.name, path)
                self.uploaded_files += 1
                self.uploaded_bytes += item.size
            self._record_archived(item)
            if self.partial_interval and item.segno is not None:
                self._drop_partial_objects(item.name)
        except Exception as exc:        # the store's, the disk's, or a bug: retried alike
            self._failed(item, describe(exc))
        finally:
            with self._lock:
                self._in_flight.discard(item.name)
            self._wake.set()

    def _record_archived(self, item: _Pending) -> None:
        with self._lock:
            if self._record is None:
                # Finished after close(): the next start finds it in the
                # store (holds()) instead of uploading it again.
                return
            self._record.write(item.name + "\n")
            self._record.flush()
            if self._sync:
                os.fsync(self._record.fileno())
            self._archived.add(item.name)
            self._pending.pop(item.name, None)
            if item.segno is not None:
                self._archived_segnos.add(item.segno)
                self._newest_archived = max(self._newest_archived, item.segno)
            self._update_first_unarchived()
            recovered = self._failing_since and not any(p.attempts for p in self._pending.values())
            if recovered:
                self._failing_since = 0.0
        if recovered:
            log.warning("the archive %s answers again: uploading the backlog", self.store.url)
        log.debug("archived %s", item.name)

    def _failed(self, item: _Pending, reason: str) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = reason
            item.attempts += 1
            delay = min(MAX_RETRY, FIRST_RETRY * 2 ** (item.attempts - 1))
            delay *= random.uniform(0.5, 1.5)
            item.not_before = time.monotonic() + delay
            if not self._failing_since:
                self._failing_since = time.time()
            waiting = len(self._pending)
        log.warning("%s; retrying in %.0f s (%d files waiting for the archive; receiving goes "
                    "on)", reason, delay, waiting)

    def _drop_partial_objects(self, completed: str) -> None:
        """The completed segment replaces its ``.partial`` object(s) (a
        failure is only logged: restore prefers the complete file anyway)."""
        base = completed[:24]
        with self._lock:
            names = [n for n in self._partial_objects if n.startswith(base)]
        for name in names or sorted({completed + ".partial", base + ".partial"}):
            try:
                self.store.delete(name)
            except ArchiveError as exc:
                log.warning("%s (the complete segment is archived)", exc)
                continue
            with self._lock:
                self._partial_objects.discard(name)

    def _maybe_snapshot_partial(self) -> None:
        """Upload the open segment's file (``NAME.partial``), at most every
        ``partial_interval`` seconds and only when it grew."""
        if not self.partial_interval:
            return
        with self._lock:
            partial = self._partial
            ended: list[str] = []
            if time.monotonic() >= self._timeline_ends_not_before:
                ended, self._timeline_ends = self._timeline_ends, []
        for name in ended:
            self._ship_timeline_end(name)
        if partial is None or time.monotonic() - self._last_partial < self.partial_interval:
            return
        name, flushed = partial
        segno = self._segno(name)
        if segno is None or (segno, flushed) == self._partial_archived:
            return
        self._last_partial = time.monotonic()
        if not self._put_partial(name, "the open segment"):
            return      # gone: completed (renamed) meanwhile, the segment is uploaded instead
        with self._lock:
            self._partial_archived = (segno, flushed)
            completed_meanwhile = segno in self._archived_segnos
        if completed_meanwhile:
            # The segment was completed and uploaded while this snapshot was
            # on its way: it must not outlive the complete object.
            self._drop_partial_objects(name[:24])
            return
        log.debug("uploaded %s up to %s", name, format_lsn(flushed))

    def _ship_timeline_end(self, name: str) -> None:
        """Upload the final state of the ``.partial`` file a timeline left
        (see :meth:`timeline_ended`); after a failure, again one partial
        interval later."""
        if self._put_partial(name, "the end of the timeline"):
            log.info("uploaded %s, the end of its timeline", name)
        elif (self.directory / name).exists():
            with self._lock:
                self._timeline_ends.append(name)
                self._timeline_ends_not_before = time.monotonic() + self.partial_interval

    def _put_partial(self, name: str, what: str) -> bool:
        """Put the whole ``.partial`` file *name* as its object.  False when
        the file is gone or the store failed (counted, and a warning says
        *what* is uploaded again when)."""
        try:
            # A snapshot: the receive loop may go on writing the file, and the
            # body must match the checksum botocore computes from it.
            data = (self.directory / name).read_bytes()
            self.store.put(name, data)
        except FileNotFoundError:
            return False
        except (ArchiveError, OSError) as exc:
            with self._lock:
                self.failures += 1
                self.last_error = describe(exc)
            log.warning("%s; %s is uploaded again in %g s", describe(exc), what,
                        self.partial_interval)
            return False
        with self._lock:
            self._partial_objects.add(name)
        return True

    # ---- status --------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What ``walfast status`` and the metrics show."""
        with self._lock:
            pending = list(self._pending.values())
            return {
                "archive": self.store.url,
                "archived_lsn": format_lsn(self._archived_lsn()),
                "pending_files": len(pending),
                "pending_segments": sum(1 for p in pending if p.segno is not None),
                "pending_bytes": sum(p.size for p in pending),
                "oldest_pending_since": min((p.since for p in pending), default=0.0),
                "uploaded_files": self.uploaded_files,
                "uploaded_bytes": self.uploaded_bytes,
                "failures": self.failures,
                "failing_since": self._failing_since,
                "last_error": self.last_error,
                "partial": self._partial_archived[1] and format_lsn(self._partial_archived[1]),
                "updated": time.time(),
            }

    def _write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_written < STATUS_EVERY:
            return
        self._status_written = now
        try:
            write_archive_status(self.directory, self.status(), mode=self._file_mode)
        except OSError as exc:
            log.debug("could not write the archive status: %s", describe(exc))

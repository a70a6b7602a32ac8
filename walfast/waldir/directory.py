"""The WAL directory (``-D``) and its one owner, :class:`WalDirectory`.

The counterpart of walmethods.c's directory method plus pg_receivewal's
``FindStreamingStart``: everything walfast reads from or writes into the
output directory goes through here.

* whether the directory is usable at all (:func:`check_directory`, at the
  command line, as pg_receivewal checks it before connecting);
* taking it: walfast's state directory, moving files an earlier walfast left
  next to the WAL, the progress state and its lock (:meth:`WalDirectory.claim`);
* before anything is written on a connection: whose WAL the directory holds
  (identity) and which files may hold bytes of an earlier boot
  (:meth:`WalDirectory.open`);
* where streaming resumes (:meth:`WalDirectory.find_start`);
* timeline history files (:meth:`WalDirectory.write_history`);
* the segment output for one timeline: the engine's writer, plain or
  compressed with its worker (:meth:`WalDirectory.open_output`).

What it does not own: talking to the server (:mod:`walfast.replication`),
*when* to flush or report (the engine's receive loop), and the bytes of WAL
segments (the engine, :mod:`walfast._core`).  Its parts live next to it:
:mod:`.layout` (walfast's own file names), :mod:`.identity`, :mod:`.resume`,
:mod:`.scan`, :mod:`.durable`, :mod:`.codecs`, :mod:`.compressor`.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from walfast.errors import ServerMismatchError
from walfast.lsn import history_file_name
from walfast.waldir import identity, layout, resume, scan
from walfast.waldir.codecs import CompressionSpec
from walfast.waldir.durable import StrPath, write_file_durably

if TYPE_CHECKING:
    from walfast import _core
    from walfast.replication.commands import ServerFacts
    from walfast.waldir.compressor import CompressWorker

__all__ = ["SegmentOutput", "WalDirectory", "check_directory", "write_history_file"]


class WalDirectory:
    """The output directory of one receiver.

    *sync* False is ``--no-sync`` (no fsync of anything); *compression* the
    ``-Z`` method of new segment files (None: plain files).  Nothing is
    read or written until :meth:`claim` or :meth:`open`.  *min_free*
    (``--min-free``): a new segment file is not created while that would
    leave fewer bytes free (the receive loop pauses instead, as on a full
    disk).
    """

    def __init__(self, path: StrPath, *, sync: bool = True,
                 compression: CompressionSpec | None = None, min_free: int = 0) -> None:
        self.path = Path(path)
        self.sync = sync
        self.compression = compression
        self.min_free = min_free
        self._facts: ServerFacts | None = None
        self._untrusted_through: int | None = None
        self._distrusted = False

    def __repr__(self) -> str:
        return f"WalDirectory({str(self.path)!r})"

    @property
    def facts(self) -> ServerFacts:
        """The server facts the directory was last opened with."""
        if self._facts is None:
            raise RuntimeError(f"{self!r} was not opened")
        return self._facts

    # ---- taking the directory ------------------------------------------------

    def claim(self, facts: ServerFacts) -> _core.ProgressState:
        """Take the directory for this receiver: move the files an earlier
        walfast left next to the WAL into the state directory, then create
        and lock the shared progress state (:mod:`walfast.monitor.progress`).

        The lock comes before any check or write, so that two receivers never
        check and write one directory at once; a second receiver gets
        :class:`~walfast.monitor.progress.ProgressStateError`.
        """
        from walfast.monitor import progress

        try:
            layout.migrate_legacy_files(self.path, file_mode=facts.file_mode, sync=self.sync)
        except BlockingIOError as e:
            raise progress.ProgressStateError(e.strerror) from None
        return progress.create_state(self.path, file_mode=facts.file_mode, sync=self.sync)

    def open(self, facts: ServerFacts) -> None:
        """Check the directory against the server before anything is written
        on this connection: refuse another cluster's or segment size's WAL
        (:class:`~walfast.errors.ServerMismatchError`, nothing written),
        record the identity the first time, and keep this boot's record of
        which ``.partial`` files may be resumed mid-segment."""
        layout.migrate_legacy_files(self.path, file_mode=facts.file_mode, sync=self.sync)
        identity.check_and_record(
            self.path, identity.DirectoryIdentity(
                facts.system_identifier, facts.segment_size, facts.block_size),
            sync=self.sync, mode=facts.file_mode)
        self._untrusted_through = resume.note_boot(
            self.path, facts.segment_size, sync=self.sync, mode=facts.file_mode)
        self._facts = facts

    # ---- where to resume -------------------------------------------------------

    def find_start(self) -> tuple[int, int] | None:
        """Where the WAL in the directory ends: ``(lsn, timeline)``, or None
        when it holds none.

        pg_receivewal's ``FindStreamingStart`` (:func:`.scan.find_streaming_start`):
        the start of the segment after the newest complete one, or of the
        newest ``.partial``.  Beyond pg_receivewal, a plain ``.partial``
        written in this boot is resumed at the start of its last valid page
        (:func:`.resume.resume_position`).  Not with compressed output: a
        compressed file must hold its segment from the start.
        """
        facts = self.facts
        found = scan.find_streaming_start(self.path, facts.segment_size)
        if found is None or self.compression is not None or self._distrusted:
            return found
        lsn, timeline = found
        return resume.resume_position(
            self.path, lsn, timeline, segment_size=facts.segment_size,
            page_size=facts.block_size, system_identifier=facts.system_identifier,
            untrusted_through=self._untrusted_through), timeline

    def distrust_partials(self) -> None:
        """From now on, resume ``.partial`` files from their segment start, as
        pg_receivewal does: after a failed write or sync the page cache may
        show bytes the disk never got (a failed fsync can leave them clean
        but lost), so only rewriting the whole segment makes it durable."""
        self._distrusted = True

    # ---- history files ------------------------------------------------------------

    def has_history(self, timeline: int) -> bool:
        return (self.path / history_file_name(timeline)).exists()

    def write_history(self, timeline: int, content: bytes) -> Path:
        """Write *timeline*'s history file durably (:func:`write_history_file`)."""
        return write_history_file(self.path, timeline, content, sync=self.sync,
                                  mode=self.facts.file_mode)

    # ---- segment output -------------------------------------------------------------

    def open_output(self, *, timeline: int, start_lsn: int, zero_fill: bool = False,
                    stop_lsn: int | None = None) -> SegmentOutput:
        """The engine's writer for *timeline* from *start_lsn*: plain segment
        files, or with ``-Z`` a queue drained by a compressing worker thread
        (:mod:`.compressor`).  *zero_fill* (``--synchronous``) zero-fills new
        files before WAL lands in them; *stop_lsn* is ``--endpos``.
        """
        from walfast import _core

        facts = self.facts
        spec = self.compression
        sink: _core.WalSink
        if spec is not None:
            sink = queue = _core.ChunkQueue()
        else:
            sink = _core.SegmentFiles(
                self.path, timeline=timeline, segment_size=facts.segment_size, sync=self.sync,
                file_mode=facts.file_mode, zero_fill=zero_fill, min_free=self.min_free)
        writer = _core.SegmentWriter(
            self.path, timeline=timeline, start_lsn=start_lsn,
            segment_size=facts.segment_size, system_identifier=facts.system_identifier,
            page_size=facts.block_size, sync=self.sync, file_mode=facts.file_mode,
            sink=sink, sink_suffix=spec.suffix if spec is not None else "")
        if stop_lsn is not None:
            writer.stop_lsn = stop_lsn
        worker = None
        if spec is not None:
            from walfast.waldir.compressor import CompressWorker

            worker = CompressWorker(
                queue, self.path, spec, timeline=timeline, segment_size=facts.segment_size,
                sync=self.sync, file_mode=facts.file_mode).start()
        return SegmentOutput(writer, worker)


@dataclass
class SegmentOutput:
    """The segment files of one timeline being written: the engine's
    :class:`~walfast._core.SegmentWriter` and, with compressed output, the
    worker thread that drains it.  Leaving the ``with`` block closes the
    writer (syncing what it holds) unless it already was, and always ends
    the worker."""

    writer: _core.SegmentWriter
    worker: CompressWorker | None = None

    def __enter__(self) -> SegmentOutput:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if not self.writer.closed:
                self.writer.close()
        finally:
            if self.worker is not None:
                self.worker.stop()


# --------------------------------------------------------------------------- #
# functions behind the methods
# --------------------------------------------------------------------------- #

def write_history_file(
    directory: StrPath, timeline: int, content: bytes, sync: bool = True, *,
    mode: int = 0o600,
) -> Path:
    """Write timeline ``timeline``'s history file into ``directory``; return its path.

    As pg_receivewal: ``TTTTTTTT.history.tmp`` is written (replacing a stale
    one), fsynced, renamed to ``TTTTTTTT.history`` and the directory fsynced
    (no fsyncs when ``sync`` is false).  ``mode`` is the new file's permission
    (see :func:`walfast.replication.commands.file_mode_for`).

    If the history file already exists with the same content nothing is done.
    With different content :class:`~walfast.errors.ServerMismatchError` is
    raised naming the file: the directory holds another history for that
    timeline (WAL from another cluster, or a re-created one), and walfast
    will not overwrite it.
    """
    name = history_file_name(timeline)
    final = Path(directory) / name
    content = bytes(content)
    try:
        existing = final.read_bytes()
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if existing == content:
            return final
        raise ServerMismatchError(
            f'timeline history file "{final}" already exists with different content '
            f"({len(existing)} bytes on disk, {len(content)} bytes from the server); "
            "the directory holds WAL of another timeline history, refusing to overwrite it")
    return write_file_durably(directory, name, content, sync=sync, mode=mode)


def check_directory(path: StrPath) -> None:
    """Check that ``path`` is an existing directory walfast can use.

    It must be a directory we can list, create files in and rename files in
    (read, write and search permission).  pg_receivewal only opens it; like
    pg_receivewal, walfast never creates it.

    Raises an ``OSError`` subclass (``FileNotFoundError``,
    ``NotADirectoryError``, ``PermissionError``...) with ``errno``,
    ``strerror`` (the operating system's text) and ``filename`` set, so a
    caller can print pg_receivewal's message as
    ``f'could not open directory "{e.filename}": {e.strerror}'``.
    """
    p = os.fspath(path)
    try:
        with os.scandir(p):
            pass
    except OSError as exc:
        # OSError(errno, ...) returns the matching subclass, exactly what
        # the standard library raises for the same failure.
        raise OSError(exc.errno or errno.EIO, os.strerror(exc.errno or errno.EIO), p) from None
    if not os.access(p, os.R_OK | os.W_OK | os.X_OK):
        # access() says no without saying why: a read-only file system is
        # not a permission problem, and must not be reported as one.
        err = errno.EROFS if os.statvfs(p).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(err, os.strerror(err), p)

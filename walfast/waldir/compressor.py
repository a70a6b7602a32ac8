"""Compressed segment files: the worker thread that writes them.

The receive loop never compresses.  :class:`walfast._core.SegmentWriter`
(with ``sink=``) checks the WAL and copies it into a bounded
:class:`walfast._core.ChunkQueue`; a :class:`CompressWorker` thread drains
the queue: it compresses (zlib, lz4 and zstandard release the GIL while they
work), writes, syncs and renames.  When the worker falls behind, the queue
fills and the receive loop waits, so the server is slowed down through TCP
instead of walfast buffering without limit.

Memory bound: the queue's ``nchunks * chunk_size`` bytes (8 MiB by default)
of received WAL, plus the compressor's own state (zlib ~256 KiB, lz4 one
64 KiB block, zstd level 3 ~1-3 MiB) and the compressed output of one chunk.

Files are the kind pg_receivewal -Z writes (walmethods.c), so each tool can
continue the other's directory:

* ``NAME.gz.partial`` / ``NAME.lz4.partial`` while a segment is incomplete,
  renamed to ``NAME.gz`` / ``NAME.lz4`` once complete (after an fdatasync;
  the directory is fsynced after the rename).  No zero padding.
* gzip: one gzip member (zlib's deflate with the gzip wrapper, as gzdopen
  writes), so ``gzip -t`` passes and the ISIZE trailer of a completed file
  is the segment size.
* lz4: one LZ4 frame with pg_receivewal's preferences (LZ4F defaults: 64 KiB
  linked blocks, no checksums, no content size).  The frame header is
  written when the file is created, as pg_receivewal does.
* zstd (walfast only; pg_receivewal rejects it): one zstd frame, ``.zst``.

Sync points: as pg_receivewal's dir_sync, the compressor is flushed (zlib
Z_SYNC_FLUSH, LZ4F_flush, zstd end of block) before the fdatasync, so a
``.partial`` is always a decodable prefix up to the last position reported
flushed.  When the stream stops cleanly the frame is finished (gzip trailer,
lz4 end mark, zstd epilogue), as pg_receivewal's close does, so a
``.partial`` left behind is a complete compressed file of the bytes received.

Restart on an existing compressed ``.partial``: streaming restarts at the
segment's start (as for plain files).  pg_receivewal 15 reopens that file
without truncating it and writes a new stream over its start, which leaves
the old stream's tail behind whenever the new one is shorter.  walfast
never overwrites it in place: if the old file holds decodable WAL, the new
stream goes to ``NAME.gz.partial.tmp`` and replaces the old ``.partial``
(rename, directory fsync) only once it holds at least as many bytes; if the
stream stops before that, the shorter ``.tmp`` is removed and the old file
kept.  An empty or undecodable old ``.partial`` is simply truncated.  A
``.partial`` of another method (``NAME.lz4.partial`` while writing gzip) or
a plain ``NAME.partial`` is left alone, as pg_receivewal does.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

from walfast import _core
from walfast.errors import WalfastError
from walfast.lsn import format_lsn, segment_file_name
from walfast.waldir.codecs import CompressionSpec, Encoder, decoded_length, new_encoder

__all__ = ["CompressWorker"]


class CompressWorker:
    """The thread that turns a :class:`~walfast._core.ChunkQueue` into
    compressed segment files in *directory*.

    One worker per :class:`~walfast._core.SegmentWriter` (one timeline).
    Every failure (ENOSPC, EIO, a codec error) is handed to the queue with
    :meth:`ChunkQueue.fail`, as an ``OSError`` naming the file and the WAL
    position; the receive loop raises it and stops.

    *chunk_hook* (tests only) is called with ``(lsn, length, flags)`` before
    each chunk is handled, in the worker thread.
    """

    def __init__(
        self, queue: _core.ChunkQueue, directory: str | os.PathLike[str], spec: CompressionSpec,
        *, timeline: int, segment_size: int, sync: bool = True, file_mode: int = 0o600,
        chunk_hook: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.queue = queue
        self.directory = os.fspath(directory)
        self.spec = spec
        self.timeline = timeline
        self.segment_size = segment_size
        self.sync = sync
        self.file_mode = file_mode
        self.chunk_hook = chunk_hook
        #: Name of the ``.partial`` left incomplete by the close, if any.
        self.left_partial: str | None = None
        self._thread = threading.Thread(target=self._run, name="walfast-compress", daemon=True)
        self._dirfd = -1
        # The open segment.
        self._fd = -1
        self._segno = -1
        self._name = ""          # NAME + suffix, without ".partial"
        self._path = ""          # the file being written (.partial, or .partial.tmp)
        self._shadowed = 0       # bytes in an older .partial we must not shrink, 0 = none
        self._written = 0        # uncompressed bytes in the current file
        self._file_size = 0      # compressed bytes in the current file
        self._writeback_from = 0  # file offset up to which writeback was started
        self._release_from = 0   # start of the range the last writeback step started
        self._enc: Encoder | None = None
        self._lsn = 0            # for error messages: the position being handled

    # ---- life cycle ----------------------------------------------------------

    def start(self) -> CompressWorker:
        self._dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after the writer's close(), or after
        :meth:`ChunkQueue.shutdown`)."""
        self._thread.join(timeout)

    def stop(self) -> None:
        """End the thread without a close from the writer (error paths): it
        handles what was committed, then exits; the open file is left as
        a crash would leave it, and closed."""
        self.queue.shutdown()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    break
                slot, lsn, length, flags, target = item
                self._lsn = lsn
                if self.chunk_hook is not None:
                    self.chunk_hook(lsn, length, flags)
                try:
                    if length:
                        self._write_data(lsn, slot)
                finally:
                    self.queue.release(slot)
                self._lsn = lsn + length
                if flags & _core.CHUNK_SEGMENT_END_FLAG:
                    self._complete(lsn + length)
                if flags & _core.CHUNK_SYNC_FLAG:
                    self._sync_point(target)
                if flags & _core.CHUNK_CLOSE_FLAG:
                    self._close(target)
                    break
        except BaseException as exc:  # handed to the receive loop, raised there
            self.queue.fail(exc)
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._dirfd >= 0:
                os.close(self._dirfd)
                self._dirfd = -1

    # ---- files ----------------------------------------------------------------

    @contextlib.contextmanager
    def _io(self, what: str, path: str) -> Iterator[None]:
        """OSErrors inside become ``OSError(errno, "<what> at <LSN>: <text>", path)``."""
        try:
            yield
        except OSError as exc:
            if exc.errno is None:
                raise
            raise OSError(
                exc.errno, f"{what} at {format_lsn(self._lsn)}: {os.strerror(exc.errno)}",
                path) from None

    def _join(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        with self._io("could not write to compressed write-ahead log file", self._path):
            while view:
                n = os.write(self._fd, view)
                if n == 0:
                    raise OSError(28, "no progress")  # ENOSPC, as pg_receivewal assumes
                view = view[n:]
                self._file_size += n
        self._write_behind()

    def _write_behind(self) -> None:
        """As SegmentWriter._write_behind: every WRITE_BEHIND_BYTES, start
        the writeback of what was written since the last step, and release
        from the page cache what the step before started (written once,
        never read back).  Without it the fdatasync at a segment's end
        wrote out the whole compressed segment in this thread and stalled
        the queue, and with it the receive loop (benchmarks/README.md, "Why
        the engine writes the way it does")."""
        if self._file_size - self._writeback_from >= _core.WRITE_BEHIND_BYTES:
            if self._writeback_from > self._release_from:
                os.posix_fadvise(self._fd, self._release_from,
                                 self._writeback_from - self._release_from,
                                 os.POSIX_FADV_DONTNEED)
                self._release_from = self._writeback_from
            _core.start_writeback(self._fd, self._writeback_from,
                                  self._file_size - self._writeback_from)
            self._writeback_from = self._file_size

    def _fsync_dir(self) -> None:
        if self.sync:
            with self._io("could not fsync directory", self.directory):
                os.fsync(self._dirfd)

    def _open(self, segno: int) -> None:
        self._segno = segno
        self._name = segment_file_name(self.timeline, segno, self.segment_size) + self.spec.suffix
        partial = self._join(self._name + ".partial")
        self._shadowed = decoded_length(partial, self.spec.method, self.segment_size,
                                        tolerant=True)
        self._path = partial + ".tmp" if self._shadowed else partial
        with self._io("could not create compressed write-ahead log file", self._path):
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                               self.file_mode)
        self._written = self._file_size = self._writeback_from = self._release_from = 0
        self._enc = new_encoder(self.spec)
        head = self._enc.begin()
        if head:
            self._write_all(head)
        if self.sync:
            # The new name must survive a crash before anything in it is
            # reported flushed (pg_receivewal: fsync file and directory).
            with self._io("could not fsync new compressed write-ahead log file", self._path):
                os.fsync(self._fd)
            self._fsync_dir()

    def _write_data(self, lsn: int, slot: int) -> None:
        segno, offset = divmod(lsn, self.segment_size)
        if self._fd < 0:
            if offset != 0:
                raise WalfastError(
                    f"internal error: compressed segment {segno} would start at offset {offset}")
            self._open(segno)
        elif segno != self._segno:
            raise WalfastError(
                f"internal error: WAL at {format_lsn(lsn)} for segment {segno} while "
                f"segment {self._segno} is open")
        assert self._enc is not None
        view = self.queue.view(slot)
        try:
            with self._io("could not compress write-ahead log", self._path):
                out = self._enc.compress(view)
            self._written += len(view)
        finally:
            view.release()
        if out:
            self._write_all(out)

    def _datasync(self) -> None:
        if self.sync:
            with self._io("could not fdatasync compressed write-ahead log file", self._path):
                os.fdatasync(self._fd)

    def _promote_if_longer(self) -> None:
        """The new stream now holds at least what the old .partial held: it
        replaces it."""
        if self._shadowed and self._written >= self._shadowed:
            partial = self._join(self._name + ".partial")
            with self._io("could not rename compressed write-ahead log file", self._path):
                os.rename(self._path, partial)
            self._path = partial
            self._shadowed = 0
            self._fsync_dir()

    def _sync_point(self, target: int) -> None:
        if self._fd >= 0:
            assert self._enc is not None
            out = self._enc.sync_flush()
            if out:
                self._write_all(out)
            self._datasync()
            self._promote_if_longer()
        self.queue.publish(flushed=target)

    def _finish_file(self) -> None:
        assert self._enc is not None
        out = self._enc.finish()
        if out:
            self._write_all(out)
        self._datasync()
        fd, self._fd = self._fd, -1
        # Never read back: release its pages for reuse, as the plain writer
        # does (SegmentWriter._release); dirty ones (--no-sync) only get
        # their writeback started.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        with self._io("could not close compressed write-ahead log file", self._path):
            os.close(fd)
        self._enc = None

    def _complete(self, end: int) -> None:
        if end != (self._segno + 1) * self.segment_size or self._fd < 0:
            raise WalfastError(
                f"internal error: segment end at {format_lsn(end)} does not match segment "
                f"{self._segno}")
        self._finish_file()
        final = self._join(self._name)
        with self._io("could not rename compressed write-ahead log file", self._path):
            os.rename(self._path, final)
            if self._shadowed:
                # The old, shorter .partial of this segment is obsolete now.
                os.unlink(self._join(self._name + ".partial"))
        self._shadowed = 0
        self._fsync_dir()
        self.queue.publish(completed_end=end)

    def _close(self, target: int) -> None:
        if self._fd >= 0:
            self._finish_file()
            self.left_partial = self._name + ".partial"
            if self._shadowed:
                # Stopped before the new stream caught up: keep the longer
                # old file, drop the new one.
                with self._io("could not remove compressed write-ahead log file", self._path):
                    os.unlink(self._path)
            self._fsync_dir()
        self.queue.publish(flushed=target, finished=True)

"""Compressed segment files: the worker thread that writes them.

The receive loop never compresses.  :class:`walfast._core.SegmentWriter`
checks the WAL and copies it into a bounded :class:`walfast._core.ChunkQueue`
(its sink); a :class:`CompressWorker` thread drains
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
  the directory is fsynced after the rename).  No zero padding.  A new
  file's name is made durable with its first sync, before anything in it
  is reported flushed (as for plain segments).
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
stream goes to a shadow file in walfast's state directory
(``.walfast/NAME.gz.partial.tmp``, :mod:`walfast.waldir.layout`: the WAL
directory holds only names pg_receivewal writes) and replaces the old
``.partial`` (a rename across the two directories, both fsynced) only once
it holds at least as many bytes; if the stream stops before that, the
shorter shadow is removed and the old file kept.  An empty or undecodable
old ``.partial`` is simply truncated.  A ``.partial`` of another method
(``NAME.lz4.partial`` while writing gzip) or a plain ``NAME.partial`` is
left alone, as pg_receivewal does.

The worker's own logic is the encoders and that restart rule; every file
operation (create, write with write-behind, sync, complete, close, the
shadow's move and removal) is the engine's file lifecycle, through
:class:`walfast._core.SegmentFile` (the plain writer uses the same one),
whose methods release the GIL.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from walfast import _core
from walfast.errors import WalfastError
from walfast.lsn import format_lsn, segment_file_name
from walfast.waldir import layout
from walfast.waldir.codecs import CompressionSpec, Encoder, decoded_length, new_encoder

__all__ = ["CompressWorker"]

#: How the worker's files are named in error messages.
_LABEL = "compressed write-ahead log file"


class CompressWorker:
    """The thread that turns a :class:`~walfast._core.ChunkQueue` into
    compressed segment files in *directory*.

    One worker per :class:`~walfast._core.SegmentWriter` (one timeline).
    Every failure (ENOSPC, EIO, a codec error) is handed to the queue with
    :meth:`ChunkQueue.fail`, as an ``OSError`` naming the file and the WAL
    position; the writer raises it (from ``write()``, ``flush()``,
    ``close()`` or ``CopyStream.run()``) and the receive loop stops.
    """

    def __init__(
        self, queue: _core.ChunkQueue, directory: str | os.PathLike[str], spec: CompressionSpec,
        *, timeline: int, segment_size: int, sync: bool = True, file_mode: int = 0o600,
    ) -> None:
        self.queue = queue
        self.directory = os.fspath(directory)
        self.spec = spec
        self.timeline = timeline
        self.segment_size = segment_size
        self.sync = sync
        self.file_mode = file_mode
        #: Name of the ``.partial`` left incomplete by the close, if any.
        self.left_partial: str | None = None
        self._thread = threading.Thread(target=self._run, name="walfast-compress", daemon=True)
        # The open segment.
        self._file: _core.SegmentFile | None = None
        self._segno = -1
        self._name = ""          # NAME + suffix, without ".partial"
        self._shadowed = 0       # bytes in an older .partial we must not shrink, 0 = none
        self._written = 0        # uncompressed bytes in the current file
        self._enc: Encoder | None = None
        self._lsn = 0            # for error messages: the position being handled

    # ---- life cycle ----------------------------------------------------------

    def start(self) -> CompressWorker:
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
                if item is None or self._handle(*item):
                    break
        except BaseException as exc:  # handed to the receive loop, raised there
            self.queue.fail(exc)
        finally:
            if self._file is not None:
                self._file.abandon()
                self._file = None

    def _handle(self, slot: int, lsn: int, length: int, flags: int, target: int) -> bool:
        """One chunk from the queue: its bytes (of one segment, from *lsn*),
        then what its flags ask.  True once the stream is closed."""
        self._at(lsn)
        try:
            if length:
                self._write_data(lsn, slot)
        finally:
            self.queue.release(slot)
        self._at(lsn + length)
        if flags & _core.CHUNK_SEGMENT_END_FLAG:
            self._complete(lsn + length)
        if flags & _core.CHUNK_SYNC_FLAG:
            self._sync_point(target)
        if flags & _core.CHUNK_CLOSE_FLAG:
            self._close(target)
            return True
        return False

    # ---- files ----------------------------------------------------------------

    def _at(self, lsn: int) -> None:
        """The WAL position being handled, named in error messages."""
        self._lsn = lsn
        if self._file is not None:
            self._file.lsn = lsn

    def _new_file(self, directory: str, name: str) -> _core.SegmentFile:
        return _core.SegmentFile(directory, name, sync=self.sync, file_mode=self.file_mode,
                                 label=_LABEL)

    @contextlib.contextmanager
    def _io(self, what: str, path: str) -> Iterator[None]:
        """OSErrors of a codec inside become ``OSError(errno, "<what> at <LSN>: <text>", path)``."""
        try:
            yield
        except OSError as exc:
            if exc.errno is None:
                raise
            raise OSError(
                exc.errno, f"{what} at {format_lsn(self._lsn)}: {os.strerror(exc.errno)}",
                path) from None

    def _open(self, segno: int) -> None:
        self._segno = segno
        self._name = segment_file_name(self.timeline, segno, self.segment_size) + self.spec.suffix
        partial = self._name + ".partial"
        self._shadowed = decoded_length(os.path.join(self.directory, partial), self.spec.method,
                                        self.segment_size, tolerant=True)
        if self._shadowed:
            state = layout.ensure_state_dir(self.directory, file_mode=self.file_mode,
                                            sync=self.sync)
            self._file = self._new_file(os.fspath(state), partial + ".tmp")
        else:
            self._file = self._new_file(self.directory, partial)
        self._file.lsn = self._lsn
        self._written = 0
        self._enc = new_encoder(self.spec)
        head = self._enc.begin()
        if head:
            self._file.write(head)

    def _write_data(self, lsn: int, slot: int) -> None:
        segno, offset = divmod(lsn, self.segment_size)
        if self._file is None:
            if offset != 0:
                raise WalfastError(
                    f"internal error: compressed segment {segno} would start at offset {offset}")
            self._open(segno)
        elif segno != self._segno:
            raise WalfastError(
                f"internal error: WAL at {format_lsn(lsn)} for segment {segno} while "
                f"segment {self._segno} is open")
        assert self._enc is not None and self._file is not None
        view = self.queue.view(slot)
        try:
            with self._io("could not compress write-ahead log", self._file.path):
                out = self._enc.compress(view)
            self._written += len(view)
        finally:
            view.release()
        if out:
            self._file.write(out)

    def _promote_if_longer(self) -> None:
        """The new stream now holds at least what the old .partial held: it
        replaces it."""
        if self._shadowed and self._written >= self._shadowed:
            assert self._file is not None
            self._file.move(self.directory, self._name + ".partial")
            self._shadowed = 0

    def _sync_point(self, target: int) -> None:
        if self._file is not None:
            assert self._enc is not None
            out = self._enc.sync_flush()
            if out:
                self._file.write(out)
            self._file.sync()
            self._promote_if_longer()
        self.queue.publish(flushed=target)

    def _finish_stream(self) -> _core.SegmentFile:
        """End the compressed stream (gzip trailer, lz4 end mark, zstd
        epilogue); return the file, which the caller completes or closes."""
        assert self._enc is not None and self._file is not None
        out = self._enc.finish()
        if out:
            self._file.write(out)
        file, self._file, self._enc = self._file, None, None
        return file

    def _complete(self, end: int) -> None:
        if end != (self._segno + 1) * self.segment_size or self._file is None:
            raise WalfastError(
                f"internal error: segment end at {format_lsn(end)} does not match segment "
                f"{self._segno}")
        # The old, shorter .partial of this segment (if any) is obsolete once
        # the completed file is in place.
        obsolete = self._name + ".partial" if self._shadowed else None
        self._finish_stream().complete(self._name, self.directory, obsolete=obsolete)
        self._shadowed = 0
        self.queue.publish(completed_end=end)

    def _close(self, target: int) -> None:
        if self._file is not None:
            file = self._finish_stream()
            self.left_partial = self._name + ".partial"
            if self._shadowed:
                # Stopped before the new stream caught up: keep the longer
                # old file, drop the new one.
                file.discard()
            else:
                file.close()
        self.queue.publish(flushed=target, finished=True)

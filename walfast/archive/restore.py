"""``walfast restore``: one WAL file out of the archive, for PostgreSQL's
``restore_command``.

PostgreSQL asks for a file by name (``%f``) and a place to put it (``%p``)
and reads the exit status: 0 means the file is there, anything else means
"not available" (and for a segment, in archive recovery, that can mean
"recovery is over").  So:

* a file the archive does not have is :data:`None` from :func:`restore`,
  nothing printed (exit 1, quiet);
* a file it has but that cannot be read, or whose content cannot be right
  (a damaged compressed file, a segment of the wrong size, page headers of
  another segment) raises :class:`~walfast.errors.ArchiveError` naming the
  object and the reason;
* a transient store failure (:attr:`ArchiveError.retryable`: a connection
  refused or cut, a throttled or failing S3 endpoint) is retried
  :data:`RETRY_DELAYS` times inside the call before it is reported: a
  non-zero exit would make PostgreSQL think the archive ends here.

Where a file comes from, in order:

1. a segment (``TTTTTTTTXXXXXXXXYYYYYYYY``): the prefetch spool (when
   prefetching, :func:`spool_take`); the complete file ``NAME``; its
   compressed forms ``NAME.gz``, ``NAME.lz4``, ``NAME.zst`` (decompressed
   while written); with *partial*, when no complete form exists,
   ``NAME.partial`` and its compressed forms, zero-padded to the segment
   size (for the end of recovery);
2. a timeline history file (``00000002.history``) or a backup history file
   (``...00000028.backup``): as is.

A segment is checked before it is delivered: its first page must hold a
long page header, whose ``xlp_seg_size`` is the segment size (never a
constant); every page header must pass the engine's rules for that segment
(:class:`walfast._core.PageCheck`: its own LSN as ``xlp_pageaddr``, the
timeline, the first page's magic and system identifier), and a complete
segment must be exactly the segment size.  A ``.partial`` is delivered up
to its last valid page, the rest zeroed; one with no valid first page
(nothing received into it yet) counts as absent.

*dest* is written durably and atomically: ``DEST.<pid>.tmp`` in its
directory, fsync, rename, fsync of the directory; a failure or a signal
leaves no temporary behind.

**Prefetch** (*prefetch* N > 0): after a complete segment is delivered, a
detached process (:func:`start_prefetch`, a double fork: the call returns at
once) fetches the next N segments of its timeline, in parallel, into the
spool directory, each checked as above, written as ``NAME.<pid>.tmp``,
fsynced and renamed: the spool only ever holds whole, checked segments.
One prefetcher at a time (``.lock``, flock); a call that finds one busy
leaves the work to it.  A later call takes its segment from the spool
(renamed into *dest* when on the same file system, else copied; checked
again), waits briefly for a prefetcher that is downloading it, and removes
spooled segments at or before the one it delivered.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol, cast

from walfast import _core
from walfast.archive.store import DirectoryStore, Store, open_store
from walfast.errors import ArchiveError
from walfast.lsn import (
    WalFileName,
    is_backup_history_file_name,
    parse_history_file_name,
    parse_wal_file_name,
    segment_file_name,
)
from walfast.waldir.codecs import SUFFIXES, DecodeError, StreamDecoder
from walfast.waldir.durable import durable_rename, fsync_dir, os_error

__all__ = [
    "DEFAULT_SPOOL_NAME",
    "MAX_PREFETCH",
    "RETRY_DELAYS",
    "Restored",
    "WalRequest",
    "parse_request",
    "restore",
    "run_prefetch",
    "spool_take",
    "start_prefetch",
]

#: The spool's name in DEST's directory when none is given (inside the
#: standby's pg_wal, as WAL-G's pg_wal/.wal-g/prefetch).
DEFAULT_SPOOL_NAME = ".walfast-prefetch"
#: The most segments one call prefetches.
MAX_PREFETCH = 64
#: Seconds waited before each further attempt at a retryable store error
#: (so 1 + len attempts in all, about 3.5 s of waiting plus the attempts).
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0)
#: Downloads one prefetcher runs at once (botocore's pool holds 10).
PREFETCH_THREADS = 8
#: How long a call waits for a prefetcher that is downloading its segment.
SPOOL_WAIT = 30.0

#: Compression suffixes, in lookup order after the uncompressed file.
_COMPRESSED = tuple(SUFFIXES[m] for m in ("gzip", "lz4", "zstd"))
_METHOD = {suffix: method for method, suffix in SUFFIXES.items()}
#: Bytes of a segment's first page that hold the long header.
_LONG_HEADER = 40
_COPY_BUFFER = 1 << 20
_LOCK_NAME = ".lock"

Kind = Literal["segment", "history", "backup"]


@dataclass(frozen=True)
class WalRequest:
    """A file name PostgreSQL asks ``restore_command`` for."""

    name: str
    kind: Kind
    #: The segment name's parts (segments only).
    wal: WalFileName | None = None


def parse_request(name: str) -> WalRequest:
    """What *name* (``%f``) asks for: a segment, a timeline history file or
    a backup history file.  ValueError for anything else (a ``.partial`` or
    compressed name, a path): PostgreSQL never asks for those."""
    wal = parse_wal_file_name(name)
    if wal is not None and wal.complete and not wal.compression:
        return WalRequest(name, "segment", wal)
    try:
        parse_history_file_name(name)
        return WalRequest(name, "history")
    except ValueError:
        pass
    if is_backup_history_file_name(name):
        return WalRequest(name, "backup")
    raise ValueError(f'"{name}" is not a name restore_command is asked for: expected a WAL '
                     f"segment (000000010000000000000001), a timeline history file "
                     f"(00000002.history) or a backup history file")


@dataclass(frozen=True)
class Restored:
    """What :func:`restore` delivered."""

    name: str
    #: Where it came from: the object or file (``s3://...``, a path), or the
    #: spool file.
    source: str
    #: The segment size (segments only).
    segment_size: int | None = None
    #: Zero-padded from a ``.partial`` (*partial* only).
    partial: bool = False
    #: Taken from the prefetch spool.
    from_spool: bool = False
    #: Bytes of WAL in a ``.partial`` before its zero padding.
    valid_bytes: int | None = None


# --------------------------------------------------------------------------- #
# the content checks
# --------------------------------------------------------------------------- #

class _Writer(Protocol):
    """What ``Store.get`` writes into (of a file object, only ``write``)."""

    def write(self, data: bytes, /) -> int: ...


class _SinkError(Exception):
    """Raised by a sink inside ``store.get`` to stop the download: carries
    the real error (the content's, or the local file's), which the store
    would otherwise word as a download failure."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _BytesSink:
    """Writes what it is given to *f* (history and backup files)."""

    def __init__(self, f: IO[bytes], path: Path) -> None:
        self._f, self._path = f, path

    def write(self, data: bytes) -> int:
        try:
            self._f.write(data)
        except OSError as exc:
            raise _SinkError(os_error(exc, "could not write file", self._path)) from None
        return len(data)


class _SegmentSink:
    """Checks a segment's bytes as they arrive and writes them to *f*.

    The long header of the first page gives the segment size and page size;
    then every page header is checked with the engine's rules for segment
    *wal* at that size.  *partial*: keep the valid prefix (up to the first
    page that fails), the rest is zeroed by :meth:`finish`; else any failure
    is an error (raised as :class:`_SinkError` to stop the download)."""

    def __init__(self, f: IO[bytes] | _Discard, path: Path, wal: WalFileName, where: str, *,
                 partial: bool) -> None:
        self._f, self._path, self._wal, self._where = f, path, wal, where
        self._partial = partial
        self._head = b""
        self._check: _core.PageCheck | None = None
        self.segment_size = 0
        #: Bytes received (uncompressed), and bytes written (the valid prefix).
        self.received = 0
        self.written = 0
        self._stopped = False     # a .partial's valid prefix ended

    def _fail(self, reason: str) -> _SinkError:
        return _SinkError(content_error(self._where, self._wal.base, reason))

    def write(self, data: bytes) -> int:
        n = len(data)
        self.received += n
        if self._stopped:
            return n
        if self._check is None:
            self._head += data
            if len(self._head) < _LONG_HEADER:
                return n
            data, self._head = self._head, b""
            self._start(data)
            if self._stopped:
                return n
        assert self._check is not None
        if self.written + len(data) > self.segment_size:
            raise self._fail(f"it holds more than the {self.segment_size} bytes of a segment "
                             f"(its first page's xlp_seg_size)")
        good = self._check.check(data)
        if good < len(data):
            if not self._partial:
                raise self._fail(str(self._check.error))
            self._stopped = True
            data = data[:good]
        try:
            self._f.write(data)
        except OSError as exc:
            raise _SinkError(os_error(exc, "could not write file", self._path)) from None
        self.written += len(data)
        return n

    def _start(self, head: bytes) -> None:
        found = _core.long_page_header(head[:_LONG_HEADER])
        if found is None:
            if self._partial:          # nothing received into it yet
                self._stopped = True
                return
            raise self._fail("its first page has no valid long page header: it is not a "
                             "WAL segment")
        _sysid, segment_size, page_size = found
        try:
            timeline, segno = self._wal.position(segment_size)
        except ValueError as exc:
            raise self._fail(f"{exc} (its first page says the segment size is "
                             f"{segment_size} bytes)") from None
        self.segment_size = segment_size
        self._check = _core.PageCheck(lsn=segno * segment_size, timeline=timeline,
                                      segment_size=segment_size, page_size=page_size,
                                      zeroed_tail=not self._partial)

    def finish(self) -> int | None:
        """After the whole file: check the size, zero-pad a ``.partial``;
        flush.  Returns the segment size, None for a ``.partial`` with no
        valid first page (or an empty file)."""
        if self._check is None:
            if self._partial:
                return None
            raise _SinkError(content_error(
                self._where, self._wal.base, f"it holds {self.received} bytes, too few for a "
                f"WAL segment"))
        if not self._partial and self.written != self.segment_size:
            raise self._fail(f"it holds {self.written} bytes of WAL, not the "
                             f"{self.segment_size} of a segment (its first page's "
                             f"xlp_seg_size)")
        try:
            if self._partial and self.written < self.segment_size:
                zeros = bytes(min(_COPY_BUFFER, self.segment_size))
                left = self.segment_size - self.written
                while left:
                    self._f.write(zeros[:min(left, len(zeros))])
                    left -= min(left, len(zeros))
            self._f.flush()
        except OSError as exc:
            raise _SinkError(os_error(exc, "could not write file", self._path)) from None
        return self.segment_size


class _Decompressing:
    """Decompresses what it is given into *sink* (a compressed object).
    The method's library is imported at the first byte, so looking for an
    object that is not there loads none."""

    def __init__(self, method: str, sink: _SegmentSink, where: str, name: str, *,
                 partial: bool) -> None:
        self._method = method
        self._decoder: StreamDecoder | None = None
        self._sink, self._where, self._name, self._partial = sink, where, name, partial
        self._broken = False       # a .partial's decodable prefix ended

    def write(self, data: bytes) -> int:
        if self._broken:
            return len(data)
        try:
            if self._decoder is None:
                self._decoder = StreamDecoder(self._method)
            for piece in self._decoder.decode(data):
                self._sink.write(piece)
        except DecodeError as exc:
            if not self._partial:
                raise _SinkError(content_error(
                    self._where, self._name, f"it cannot be decompressed "
                    f"({self._method}): {exc}")) from None
            self._broken = True     # a .partial being appended to: its prefix
        except ImportError as exc:
            raise _SinkError(ArchiveError(
                f'could not decompress "{self._where}": {exc} (install walfast with its '
                f"dependencies)", retryable=False)) from None
        return len(data)

    def finish(self) -> int | None:
        if not self._partial and self._decoder is not None and not self._decoder.complete:
            raise _SinkError(content_error(
                self._where, self._name, "its compressed data ends in the middle of a "
                "stream: the file was cut short"))
        return self._sink.finish()


def content_error(where: str, name: str, reason: str) -> ArchiveError:
    """The error for a file whose content cannot be *name*: not retried."""
    return ArchiveError(f'"{where}" cannot be restored as {name}: {reason}', retryable=False)


# --------------------------------------------------------------------------- #
# fetching one object
# --------------------------------------------------------------------------- #

def _temp_path(final: Path) -> Path:
    """A temporary next to *final*, unique to this process."""
    return final.with_name(f"{final.name}.{os.getpid()}.tmp")


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _with_retries(what: Callable[[], bool], sleep: Callable[[float], None]) -> bool:
    """Run *what*, again after each of :data:`RETRY_DELAYS` (with jitter)
    while it raises a retryable :class:`ArchiveError`."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return what()
        except ArchiveError as exc:
            if not exc.retryable or delay is None:
                raise
        sleep(delay * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")  # pragma: no cover


def _get(store: Store, name: str, sink: _Writer) -> bool:
    """``store.get`` into *sink*, with a sink's own error raised as itself."""
    try:
        return store.get(name, cast(IO[bytes], sink))
    except _SinkError as exc:                 # a DirectoryStore passes it on
        raise exc.error from None
    except ArchiveError as exc:
        if isinstance(exc.__cause__, _SinkError):
            raise exc.__cause__.error from None
        raise


@dataclass(frozen=True)
class _Fetched:
    source: str
    segment_size: int | None
    valid_bytes: int | None


def _fetch_object(store: Store, request: WalRequest, suffix: str, out: Path, *,
                  partial: bool, sleep: Callable[[float], None]) -> _Fetched | None:
    """Fetch ``NAME + suffix`` (decompressed, checked) into the new file
    *out*, retrying transient store errors.  None when there is no such
    object (or, for a ``.partial``, nothing in it): *out* then does not
    exist.  On error *out* is removed too."""
    obj = request.name + suffix
    where = store.where(obj)
    result: list[_Fetched | None] = [None]

    def attempt() -> bool:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise os_error(exc, "could not create file", out) from None
        with open(fd, "wb", buffering=_COPY_BUFFER) as f:
            segment: _SegmentSink | None = None
            sink: _BytesSink | _SegmentSink | _Decompressing
            if request.wal is None:
                sink = _BytesSink(f, out)
            else:
                segment = _SegmentSink(f, out, request.wal, where, partial=partial)
                method = _METHOD.get(suffix.removesuffix(".partial"))
                sink = segment if method is None else _Decompressing(
                    method, segment, where, request.name, partial=partial)
            if not _get(store, obj, sink):
                return False
            if isinstance(sink, _BytesSink):
                f.flush()
                result[0] = _Fetched(where, None, None)
                return True
            try:
                size = sink.finish()
            except _SinkError as exc:
                raise exc.error from None
            if size is None:
                return False
            assert segment is not None
            result[0] = _Fetched(where, size, segment.written if partial else None)
            return True

    try:
        found = _with_retries(attempt, sleep)
    except OSError as exc:
        _unlink_quietly(out)
        if exc.filename is None:          # closing the file: its last write failed
            raise os_error(exc, "could not write file", out) from None
        raise
    except BaseException:
        _unlink_quietly(out)
        raise
    if not found:
        _unlink_quietly(out)
        return None
    return result[0]


def _candidates(request: WalRequest, partial: bool) -> Iterator[tuple[str, bool]]:
    """``(suffix, is_partial)`` in lookup order."""
    if request.kind != "segment":
        yield "", False
        return
    for suffix in ("", *_COMPRESSED):
        yield suffix, False
    if partial:
        for suffix in ("", *_COMPRESSED):
            yield suffix + ".partial", True


def fetch(store: Store, request: WalRequest, dest: Path, *, partial: bool = False,
          sleep: Callable[[float], None] = time.sleep) -> Restored | None:
    """Fetch *request* from *store* into *dest*, durably (see the module
    docstring for the lookup order and checks); None when the store has no
    form of it."""
    tmp = _temp_path(dest)
    for suffix, is_partial in _candidates(request, partial):
        got = _fetch_object(store, request, suffix, tmp, partial=is_partial, sleep=sleep)
        if got is None:
            continue
        try:
            durable_rename(tmp, dest)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return Restored(request.name, got.source, got.segment_size, partial=is_partial,
                        valid_bytes=got.valid_bytes)
    return None


# --------------------------------------------------------------------------- #
# the prefetch spool
# --------------------------------------------------------------------------- #

def _position(name: str) -> str:
    """A segment name's position part (log and seg, 16 hex digits), which
    orders segments whatever the segment size and timeline."""
    return name[8:24]


def _spool_temp(name: str) -> tuple[WalFileName, int] | None:
    """``(segment, pid)`` of a spool temporary ``NAME.<pid>.tmp``."""
    base, _, rest = name.partition(".")
    pid, _, tmp = rest.partition(".")
    wal = parse_wal_file_name(base)
    if wal is None or not wal.complete or wal.compression or tmp != "tmp" \
            or not pid.isdigit():
        return None
    return wal, int(pid)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _downloading(spool: Path, name: str) -> bool:
    """A live prefetcher is writing *name* into the spool."""
    try:
        entries = os.listdir(spool)
    except OSError:
        return False
    for entry in entries:
        found = _spool_temp(entry)
        if found is not None and found[0].base == name and _alive(found[1]):
            return True
    return False


def _check_segment_file(path: Path, request: WalRequest) -> int:
    """Check a whole segment file as :func:`fetch` checks a download;
    returns its segment size; ArchiveError if it is not right."""
    assert request.wal is not None
    sink = _SegmentSink(_Discard(), path, request.wal, str(path), partial=False)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_COPY_BUFFER), b""):
                sink.write(chunk)
        size = sink.finish()
    except _SinkError as exc:
        raise exc.error from None
    assert size is not None
    return size


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def spool_take(spool: Path, request: WalRequest, dest: Path, *,
               wait: float = SPOOL_WAIT) -> Restored | None:
    """The segment from the spool, moved into *dest* durably (renamed when
    on the same file system, else copied); None when the spool does not
    have it.  When a live prefetcher is downloading it, waits for it up to
    *wait* seconds.  A spooled file that fails the checks is removed
    (the caller then fetches it from the store)."""
    path = spool / request.name
    deadline = time.monotonic() + wait
    while not path.exists():
        if time.monotonic() > deadline or not _downloading(spool, request.name):
            if not path.exists():
                return None
            break
        time.sleep(0.02)
    try:
        size = _check_segment_file(path, request)
    except FileNotFoundError:
        return None
    except (ArchiveError, OSError):
        _unlink_quietly(path)
        return None
    try:
        os.rename(path, dest)
    except FileNotFoundError:
        return None           # another call took it
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise os_error(exc, "could not rename file", path) from None
        _copy_durably(path, dest)
        _unlink_quietly(path)
        return Restored(request.name, str(path), size, from_spool=True)
    fsync_dir(dest.parent)
    return Restored(request.name, str(path), size, from_spool=True)


def _copy_durably(src: Path, dest: Path) -> None:
    tmp = _temp_path(dest)
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            for chunk in iter(lambda: fin.read(_COPY_BUFFER), b""):
                fout.write(chunk)
        durable_rename(tmp, dest)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def spool_clean(spool: Path, delivered: str) -> None:
    """Remove spooled segments at or before *delivered*'s position (on any
    timeline: recovery has gone past them) and temporaries of processes
    that are gone."""
    try:
        entries = os.listdir(spool)
    except OSError:
        return
    for entry in entries:
        wal = parse_wal_file_name(entry)
        if wal is not None and wal.complete and not wal.compression:
            if _position(entry) <= _position(delivered):
                _unlink_quietly(spool / entry)
            continue
        found = _spool_temp(entry)
        if found is not None and not _alive(found[1]):
            _unlink_quietly(spool / entry)


def _ensure_spool(spool: Path) -> None:
    try:
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, "could not create directory", spool) from None


def prefetch_names(delivered: Restored, count: int) -> list[str]:
    """The *count* segments after *delivered*, on its timeline."""
    wal = parse_wal_file_name(delivered.name)
    if wal is None or delivered.segment_size is None:
        return []
    timeline, segno = wal.position(delivered.segment_size)
    out = []
    for k in range(1, count + 1):
        try:
            out.append(segment_file_name(timeline, segno + k, delivered.segment_size))
        except ValueError:        # past the last segment there can be
            break
    return out


def start_prefetch(location: str, spool: Path, names: list[str]) -> bool:
    """Start a detached process (a double fork) that runs
    :func:`run_prefetch`; returns at once.  Names already spooled are left
    out; False when there is nothing to fetch or the fork failed."""
    names = [n for n in names if not (spool / n).exists()]
    if not names:
        return False
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid:
        os.waitpid(pid, 0)
        return True
    # The child: a session of its own, then a grandchild that outlives it
    # (reparented to init), with nothing of the caller's output (the caller's
    # caller may wait for its pipes to close).
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        run_prefetch(location, spool, names)
    except BaseException:
        pass
    os._exit(0)


def run_prefetch(location: str, spool: Path, names: list[str]) -> list[str]:
    """Fetch the segments *names* (complete or compressed forms, not
    ``.partial``) from *location* into *spool*, in parallel, each checked,
    fsynced and renamed into place.  Only one prefetcher works on a spool at
    a time: when another holds its lock this returns at once.  Errors and
    missing segments are skipped (the restore call that needs one reports
    it).  Returns the names spooled."""
    from concurrent.futures import ThreadPoolExecutor   # (and logging): only here

    _ensure_spool(spool)
    lock_fd = os.open(spool / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        store = open_store(location)      # its own client: none of the caller's

        def one(name: str) -> str | None:
            final = spool / name
            if final.exists():
                return None
            tmp = _temp_path(final)
            request = parse_request(name)
            try:
                got = None
                for suffix, _ in _candidates(request, False):
                    got = _fetch_object(store, request, suffix, tmp, partial=False,
                                        sleep=time.sleep)
                    if got is not None:
                        break
                if got is None:
                    return None
                durable_rename(tmp, final)
                return name
            except Exception:
                _unlink_quietly(tmp)
                return None

        with ThreadPoolExecutor(max_workers=min(PREFETCH_THREADS, len(names))) as pool:
            return [n for n in pool.map(one, names) if n is not None]
    finally:
        os.close(lock_fd)


# --------------------------------------------------------------------------- #
# the whole call
# --------------------------------------------------------------------------- #

def restore(name: str, dest: Path, location: str, *, partial: bool = False,
            prefetch: int = 0, spool: Path | None = None,
            sleep: Callable[[float], None] = time.sleep) -> Restored | None:
    """Deliver the WAL file *name* from the archive *location* as *dest*
    (``restore_command``'s ``%f`` and ``%p``).  None when the archive has
    no form of it; :class:`ArchiveError` (or an OSError naming the local
    file) when it has one that cannot be delivered.

    *prefetch* N > 0: take segments from *spool* (default
    ``.walfast-prefetch`` in *dest*'s directory) and, after delivering a
    complete segment, start fetching the next N into it in the background.
    """
    request = parse_request(name)
    store = open_store(location)
    if isinstance(store, DirectoryStore) and not store.path.is_dir():
        # Not "the archive has nothing": a wrong path would end a recovery.
        raise ArchiveError(f'archive directory "{location}" does not exist or is not a '
                           f"directory", retryable=False)
    use_spool = request.kind == "segment" and (prefetch > 0 or spool is not None)
    if spool is None:
        spool = dest.parent / DEFAULT_SPOOL_NAME
    done: Restored | None = None
    if use_spool and spool.is_dir():
        done = spool_take(spool, request, dest)
    if done is None:
        done = fetch(store, request, dest, partial=partial, sleep=sleep)
    if done is None or request.kind != "segment" or done.partial:
        return done
    if use_spool:
        spool_clean(spool, name)
    if prefetch > 0:
        names = prefetch_names(done, min(prefetch, MAX_PREFETCH))
        if names:
            try:
                _ensure_spool(spool)
            except OSError:
                return done       # no spool: no prefetch, the restore itself succeeded
            start_prefetch(location, spool, names)
    return done

"""Type stub for the compiled engine, walfast._core (see _core.pyx)."""

from os import PathLike
from types import TracebackType

from typing_extensions import Buffer, Self

from walfast.errors import WalPageError

# ---- page-header rules (_pages.pxi) -------------------------------------------

class PageCheck:
    """The engine's WAL page-header rules over WAL bytes as they come."""

    def __init__(
        self,
        *,
        lsn: int,
        timeline: int,
        segment_size: int,
        page_size: int = 8192,
        system_identifier: int = 0,
        page_magic: int = 0,
        zeroed_tail: bool = True,
    ) -> None: ...
    def check(self, data: Buffer) -> int: ...
    @property
    def lsn(self) -> int: ...
    @property
    def next_check(self) -> int: ...
    @property
    def error(self) -> WalPageError | None: ...
    @property
    def system_identifier(self) -> int: ...
    @property
    def page_magic(self) -> int: ...

def long_page_header(data: Buffer) -> tuple[int, int, int] | None: ...

# ---- one segment file's life (_segfile.pxi) -----------------------------------

WRITE_BEHIND_BYTES: int

class SegmentFile:
    """One segment file written through the engine's file lifecycle."""

    directory: str
    lsn: int | None
    def __init__(
        self,
        directory: str | PathLike[str],
        name: str,
        *,
        sync: bool = True,
        file_mode: int = 0o600,
        label: str = "write-ahead log file",
    ) -> None: ...
    def write(self, data: Buffer) -> None: ...
    def sync(self) -> None: ...
    def move(self, directory: str | PathLike[str], name: str) -> None: ...
    def complete(
        self, name: str, directory: str | PathLike[str] | None = None, *,
        obsolete: str | None = None,
    ) -> None: ...
    def close(self) -> None: ...
    def discard(self) -> None: ...
    def abandon(self) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def syncs(self) -> int: ...
    @property
    def dir_syncs(self) -> int: ...
    @property
    def writeback_from(self) -> int: ...
    @property
    def release_from(self) -> int: ...

# ---- sinks (_sinks.pxi, _chunkqueue.pxi) --------------------------------------

class WalSink:
    """Where a SegmentWriter puts the WAL it checked (not instantiated directly)."""

class SegmentFiles(WalSink):
    """Plain segment files, written and synced in the receive loop."""

    directory: str
    def __init__(
        self,
        directory: str | PathLike[str],
        *,
        timeline: int,
        segment_size: int,
        sync: bool = True,
        file_mode: int = 0o600,
        zero_fill: bool = False,
        min_free: int = 0,
    ) -> None: ...
    @property
    def syncs(self) -> int: ...

CHUNK_SEGMENT_END_FLAG: int
CHUNK_SYNC_FLAG: int
CHUNK_CLOSE_FLAG: int

class ChunkQueue(WalSink):
    """Bounded queue of WAL chunks from the receive loop to a compressing worker."""

    error: BaseException | None
    def __init__(self, nchunks: int = 8, chunk_size: int = 1048576) -> None: ...
    def get(self) -> tuple[int, int, int, int, int] | None: ...
    def view(self, slot: int) -> memoryview: ...
    def release(self, slot: int) -> None: ...
    def publish(
        self, *, flushed: int | None = None, completed_end: int | None = None,
        finished: bool = False,
    ) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def shutdown(self) -> None: ...
    @property
    def nchunks(self) -> int: ...
    @property
    def chunk_size(self) -> int: ...
    @property
    def memory_bound(self) -> int: ...
    @property
    def max_used(self) -> int: ...
    @property
    def producer_waits(self) -> int: ...
    @property
    def flushed(self) -> int: ...
    @property
    def failed(self) -> bool: ...
    @property
    def eventfd(self) -> int: ...

# ---- the writer (_segwriter.pxi) ----------------------------------------------

class SegmentWriter:
    """Write a timeline's WAL into segment files, through a sink."""

    directory: str
    sink: WalSink
    def __init__(
        self,
        directory: str | PathLike[str],
        *,
        timeline: int,
        start_lsn: int,
        segment_size: int,
        system_identifier: int = 0,
        page_magic: int = 0,
        page_size: int = 8192,
        sync: bool = True,
        file_mode: int = 0o600,
        sink: WalSink | None = None,
        sink_suffix: str = "",
        zero_fill: bool = False,
    ) -> None: ...
    def write(self, data_start: int, data: Buffer) -> None: ...
    def flush(self) -> int: ...
    def poll(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    @property
    def write_lsn(self) -> int: ...
    @property
    def flush_lsn(self) -> int: ...
    @property
    def pending_bytes(self) -> int: ...
    @property
    def timeline(self) -> int: ...
    @property
    def segment_size(self) -> int: ...
    @property
    def page_size(self) -> int: ...
    @property
    def system_identifier(self) -> int: ...
    @property
    def page_magic(self) -> int: ...
    @property
    def sync(self) -> bool: ...
    @property
    def segments_completed(self) -> int: ...
    @property
    def completed_end(self) -> int: ...
    @property
    def syncs(self) -> int: ...
    @property
    def current_file(self) -> str | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def stop_lsn(self) -> int: ...
    @stop_lsn.setter
    def stop_lsn(self, value: int) -> None: ...
    @property
    def stop_reached(self) -> bool: ...

# ---- the parser (_frames.pxi) -------------------------------------------------

class StreamParser:
    """Parse a physical replication stream's CopyData payloads into a SegmentWriter."""

    writer: SegmentWriter
    def __init__(self, writer: SegmentWriter) -> None: ...
    def feed_copydata(self, payload: Buffer) -> int: ...
    def take_reply_request(self) -> bool: ...
    @property
    def reply_requested(self) -> bool: ...
    @property
    def wal_end(self) -> int: ...
    @property
    def send_time(self) -> int: ...
    @property
    def wal_end_time(self) -> int: ...
    @property
    def caught_up_time(self) -> int: ...
    @property
    def messages(self) -> int: ...
    @property
    def xlogdata_messages(self) -> int: ...
    @property
    def keepalive_messages(self) -> int: ...
    @property
    def wal_bytes(self) -> int: ...

# ---- the progress state (_progress.pxi) ---------------------------------------

#: ``(name, offset, size, kind)`` per field of the C struct, in order.
PROGRESS_FIELDS: tuple[tuple[str, int, int, str], ...]
PROGRESS_SIZE: int
PROGRESS_MAGIC: bytes
PROGRESS_VERSION: int
PROGRESS_CHECKED_FROM: int
PROGRESS_FLUSH_BUCKETS_US: tuple[int, ...]
#: State names by value.
PROGRESS_STATES: tuple[str, ...]

class ProgressState:
    """The writer side of the shared progress state (walfast.monitor.progress)."""

    def __init__(self, fd: int, pid: int) -> None: ...
    def update(
        self,
        *,
        state: int | None = None,
        received_tli: int | None = None,
        system_identifier: int | None = None,
        segment_size: int | None = None,
        receive_start_lsn: int | None = None,
        receive_start_tli: int | None = None,
        sync: bool | None = None,
        report_flush: bool | None = None,
        slot_name: str | None = None,
        sender_host: str | None = None,
        sender_port: int | None = None,
        reconnects: int | None = None,
    ) -> None: ...
    def publish(
        self,
        *,
        written_lsn: int,
        flushed_lsn: int = 0,
        latest_end_lsn: int | None = None,
        latest_end_time: int = 0,
        last_msg_send_time: int = 0,
        caught_up_time: int = 0,
        last_msg_receipt_time: int = 0,
        messages: int = 0,
        wal_bytes: int = 0,
        segments_completed: int = 0,
        status_updates: int = 0,
    ) -> None: ...
    def publish_flush(self, written_lsn: int, flushed_lsn: int, took_us: int) -> None: ...
    def snapshot(self) -> bytes: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...

# ---- the receive loop (_copystream.pxi) ---------------------------------------

TICK: int
COPY_DONE: int
CONN_ERROR: int
STOP_REACHED: int
INTERRUPTED: int
TIMEOUT: int

def load_libpq(path: str) -> int: ...

class CopyStream:
    """The compiled receive loop over a started physical replication COPY."""

    parser: StreamParser
    def __init__(
        self,
        pgconn_ptr: int,
        parser: StreamParser,
        *,
        report_flush: bool,
        synchronous: bool,
        status_interval: float,
        receive_timeout: float = 0,
        progress: ProgressState | None = None,
    ) -> None: ...
    def run(self, max_seconds: float = 0.1) -> int: ...
    def publish(self) -> None: ...
    def send_status(self) -> bool: ...
    flush_limit: int
    @property
    def sent_flush(self) -> int: ...
    @property
    def status_updates(self) -> int: ...
    @property
    def last_status_time(self) -> int: ...
    @property
    def last_receipt_time(self) -> int: ...
    @property
    def silent_seconds(self) -> float: ...
    @property
    def paused(self) -> bool: ...
    @property
    def pause_error(self) -> OSError | None: ...

# ---- here (_core.pyx) ---------------------------------------------------------

def encode_status_update(
    write_lsn: int, flush_lsn: int, apply_lsn: int, send_time: int, reply_requested: bool = False
) -> bytes: ...
def pg_time_now() -> int: ...

"""The receiver's shared progress state: ``.walfast/progress`` in the WAL directory.

walfast's counterpart of PostgreSQL's ``WalRcvData`` (what
``pg_stat_wal_receiver`` shows, and the ``flushedUpto`` the startup process
waits on).  ``walfast receive`` creates the file once its first connection
succeeded, maps it shared and keeps it up to date; any process can read it
without locks and without talking to the receiver (:func:`read_progress`,
``walfast status``, ``walfast wait``).  It lives in walfast's hidden state
directory (:mod:`walfast.waldir.layout`), never among the WAL.

Who writes what, and when
-------------------------
One writer, the receive thread.  The compiled loop publishes written and
flushed positions, walEnd/sendTime and the counters at the end of every
batch of messages (never per message) and right after every fdatasync it
does; Python sets the slower fields (state, timeline, sender) between ticks.

``flushed_lsn`` only ever comes from the writer's flush position, which
moves after an fdatasync covering the bytes returned: it is never ahead of
what is on disk.  With ``--no-sync`` nothing is ever synced, so
``flushed_lsn`` stays 0 and flag ``sync`` is clear; ``written_lsn`` is still
published (pg_receivewal reports flush "as it would have been" then; walfast
prefers not to call anything durable that is not).

Both positions are monotonic for the life of a receiver process (across
reconnections and timeline switches, where a new session restarts at a
segment boundary already on disk).

File layout
-----------
The layout is defined once, by the C struct in ``walfast/_progress.pxi``,
whose comment is the field table (offset, size, field, meaning).  This
reader builds its parser from :data:`walfast._core.PROGRESS_FIELDS`, the
compiler's offsets and sizes of that struct, so the two cannot disagree.
All integers are in the writer's native byte order, which the
``byte_order`` field tells (``0x01020304``; little-endian on every platform
PostgreSQL ships for).  Times are microseconds since 2000-01-01 00:00:00
UTC (PostgreSQL's wire clock), 0 = never.  LSNs are byte positions, 0 =
none yet.  No password, connection string or other secret is ever stored.

Reading without locks
---------------------
Read the whole file (:data:`SIZE` bytes, one ``pread``), check
magic/version, that ``seq`` is even and that the checksum matches, then
read ``seq`` again: if it is unchanged the copy is consistent, else try
again.  The checksum makes this
safe even for a reader that cannot order its memory loads (plain Python).
Whether a receiver is running is told by the file's lock: the receiver holds
an exclusive ``flock`` on it for its lifetime, so a reader's non-blocking
shared ``flock`` fails while it runs (a stale file from a dead receiver is
reported ``not running``, whatever its pid became).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from walfast import _core
from walfast.errors import WalfastError
from walfast.waldir import layout

__all__ = [
    "FLUSH_BUCKETS_US", "STATES", "ProgressSnapshot", "ProgressStateError",
    "create_state", "parse_progress", "read_progress", "state_path",
]

# The layout, from the engine (see the module docstring).
MAGIC: bytes = _core.PROGRESS_MAGIC
VERSION: int = _core.PROGRESS_VERSION
SIZE: int = _core.PROGRESS_SIZE
#: State names by value (pg_stat_wal_receiver's status words, and walfast's
#: silent and paused).
STATES: tuple[str, ...] = _core.PROGRESS_STATES
STARTING, STREAMING, WAITING, STOPPING, STOPPED, SILENT, PAUSED = range(len(STATES))
#: Upper bounds of the flush-latency histogram buckets, microseconds (then +Inf).
FLUSH_BUCKETS_US: tuple[int, ...] = _core.PROGRESS_FLUSH_BUCKETS_US

_PG_EPOCH_UNIX = 946684800
_CHECKED_FROM: int = _core.PROGRESS_CHECKED_FROM
_INT_CODES = {"u32": "I", "u64": "Q", "i64": "q"}
_OFFSETS = {name: offset for name, offset, _, _ in _core.PROGRESS_FIELDS}


class ProgressStateError(WalfastError):
    """No usable progress state in a directory (missing, not walfast's, a
    newer layout, or never consistent)."""


def state_path(directory: str | os.PathLike[str]) -> Path:
    """Where the progress state of WAL directory *directory* is (an earlier
    walfast, still running, kept it next to the WAL: that file is read
    when there is no new one)."""
    path = layout.state_file(directory, layout.PROGRESS)
    legacy = Path(directory) / "walfast.progress"
    if not path.exists() and legacy.exists():
        return legacy
    return path


def pg_time_to_unix(t: int) -> float | None:
    """A wire time (us since 2000) as Unix seconds; None for 0 (never)."""
    return None if t == 0 else t / 1e6 + _PG_EPOCH_UNIX


@dataclass(frozen=True)
class ProgressSnapshot:
    """One consistent snapshot of a receiver's progress state.

    Times are Unix seconds (None = never); LSNs integers.  ``running`` is
    whether a receiver holds the file now (see the module docstring);
    ``status`` is the state name, or ``"not running"``.
    """

    state: str
    running: bool
    pid: int
    sync: bool
    report_flush: bool
    received_tli: int
    system_identifier: int
    segment_size: int
    receive_start_lsn: int
    receive_start_tli: int
    written_lsn: int
    flushed_lsn: int
    latest_end_lsn: int
    latest_end_time: float | None
    last_msg_send_time: float | None
    last_msg_receipt_time: float | None
    caught_up_time: float | None
    start_time: float | None
    update_time: float | None
    messages: int
    wal_bytes: int
    segments_completed: int
    reconnects: int
    status_updates: int
    flushes: int
    flush_time: float
    flush_buckets: tuple[int, ...]
    slot_name: str
    sender_host: str
    sender_port: int
    seq: int

    @property
    def status(self) -> str:
        return self.state if self.running else "not running"

    @property
    def lag_known(self) -> bool:
        """Whether the lag can be told: not while the server is silent (its
        WAL may have moved on unseen) or receiving is paused (the messages
        waiting unread say how far)."""
        return self.state not in ("silent", "paused")

    def silence_seconds(self, now: float | None = None) -> float | None:
        """Seconds since the last message from the server (for a receiver
        that is not running, as of its last update); None before any."""
        if self.last_msg_receipt_time is None:
            return None
        if now is None:
            now = time.time() if self.running else (self.update_time or time.time())
        return max(0.0, now - self.last_msg_receipt_time)

    @property
    def lag_bytes(self) -> int:
        """How far the written WAL is behind the primary's latest walEnd
        (as last heard: see :attr:`lag_known`)."""
        return max(0, self.latest_end_lsn - self.written_lsn)

    def lag_seconds(self, now: float | None = None) -> float:
        """Seconds behind the primary.

        Caught up (nothing pending up to the latest walEnd): the latest
        message's delay, receipt minus send time (includes any clock
        difference between the hosts).  Behind: the time since the receiver
        last had everything the primary had sent (an upper bound on the age
        of the oldest WAL not yet written).  For a receiver that is not
        running, as of its last update.
        """
        if self.lag_bytes == 0:
            if self.last_msg_send_time is None or self.last_msg_receipt_time is None:
                return 0.0
            return max(0.0, self.last_msg_receipt_time - self.last_msg_send_time)
        if self.caught_up_time is None:
            return 0.0
        if now is None:
            now = time.time() if self.running else (self.update_time or time.time())
        return max(0.0, now - self.caught_up_time)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict: the fields, LSNs also as ``X/X`` text, lag."""
        from walfast.lsn import format_lsn

        out: dict[str, object] = dataclasses.asdict(self)
        out["status"] = self.status
        for name in ("receive_start_lsn", "written_lsn", "flushed_lsn", "latest_end_lsn"):
            out[name.replace("_lsn", "_lsn_text")] = format_lsn(getattr(self, name))
        out["lag_known"] = self.lag_known
        out["lag_bytes"] = self.lag_bytes if self.lag_known else None
        out["lag_seconds"] = self.lag_seconds() if self.lag_known else None
        out["silence_seconds"] = self.silence_seconds()
        out["flush_buckets"] = list(self.flush_buckets)
        return out


def _fnv1a64(data: bytes, byte_order: str) -> int:
    """The engine's checksum (``wf_fnv1a64``): FNV-1a over 64-bit words in
    the writer's byte order."""
    h = 0xcbf29ce484222325
    for (w,) in struct.iter_unpack(byte_order + "Q", data):
        h = ((h ^ w) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def _byte_order(raw: bytes) -> str:
    mark = raw[_OFFSETS["byte_order"]:_OFFSETS["byte_order"] + 4]
    if mark == b"\x04\x03\x02\x01":
        return "<"
    if mark == b"\x01\x02\x03\x04":
        return ">"
    raise ProgressStateError("bad byte-order mark")


@functools.lru_cache(maxsize=2)
def _layout(byte_order: str) -> tuple[struct.Struct, tuple[tuple[str, int], ...]]:
    """A struct for the whole file in *byte_order*, built from the engine's
    field table, and ``(name, count)`` per field in unpacking order (count 0:
    one value; n: an array of n values)."""
    fmt = [byte_order]
    fields = []
    pos = 0
    for name, offset, size, kind in sorted(_core.PROGRESS_FIELDS, key=lambda f: f[1]):
        if offset > pos:
            fmt.append(f"{offset - pos}x")
        if kind in ("bytes", "text"):
            fmt.append(f"{size}s")
            fields.append((name, 0))
        else:
            code = _INT_CODES[kind]
            count = size // struct.calcsize(code)
            fmt.append(f"{count}{code}")
            fields.append((name, count if count > 1 else 0))
        pos = offset + size
    if pos < SIZE:
        fmt.append(f"{SIZE - pos}x")
    layout = struct.Struct("".join(fmt))
    assert layout.size == SIZE, (layout.size, SIZE)
    return layout, tuple(fields)


def _fields(raw: bytes, byte_order: str) -> dict[str, object]:
    """Every field of a state image by name (arrays as tuples)."""
    layout, fields = _layout(byte_order)
    values = layout.unpack_from(raw)
    out: dict[str, object] = {}
    i = 0
    for name, count in fields:
        if count:
            out[name] = values[i:i + count]
            i += count
        else:
            out[name] = values[i]
            i += 1
    return out


def _text(value: object) -> str:
    assert isinstance(value, bytes)
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_progress(raw: bytes, running: bool = True) -> ProgressSnapshot:
    """Parse one state image (as read or from ``ProgressState.snapshot()``).
    Raises :class:`ProgressStateError` if it is not a consistent image."""
    if len(raw) < SIZE or raw[:len(MAGIC)] != MAGIC:
        raise ProgressStateError("not a walfast progress state file")
    byte_order = _byte_order(raw)
    v = _fields(raw, byte_order)
    version, size, seq = v["version"], v["size"], v["seq"]
    if version != VERSION or size != SIZE:
        raise ProgressStateError(f"unsupported layout version {version} (size {size})")
    assert isinstance(seq, int)
    if seq & 1 or _fnv1a64(raw[_CHECKED_FROM:SIZE], byte_order) != v["checksum"]:
        raise ProgressStateError("inconsistent snapshot (being written)")
    n = {name: value for name, value in v.items() if isinstance(value, int)}
    state, flags = n["state"], n["flags"]
    t = pg_time_to_unix
    buckets = v["flush_buckets"]
    assert isinstance(buckets, tuple)
    return ProgressSnapshot(
        state=STATES[state] if state < len(STATES) else f"unknown ({state})",
        running=running, pid=n["pid"], sync=bool(flags & 1), report_flush=bool(flags & 2),
        received_tli=n["received_tli"], system_identifier=n["system_identifier"],
        segment_size=n["segment_size"], receive_start_lsn=n["receive_start_lsn"],
        receive_start_tli=n["receive_start_tli"], written_lsn=n["written_lsn"],
        flushed_lsn=n["flushed_lsn"], latest_end_lsn=n["latest_end_lsn"],
        latest_end_time=t(n["latest_end_time"]), last_msg_send_time=t(n["last_msg_send_time"]),
        last_msg_receipt_time=t(n["last_msg_receipt_time"]),
        caught_up_time=t(n["caught_up_time"]), start_time=t(n["start_time"]),
        update_time=t(n["update_time"]), messages=n["messages"], wal_bytes=n["wal_bytes"],
        segments_completed=n["segments_completed"], reconnects=n["reconnects"],
        status_updates=n["status_updates"], flushes=n["flushes"],
        flush_time=n["flush_time_us"] / 1e6, flush_buckets=buckets,
        slot_name=_text(v["slot_name"]), sender_host=_text(v["sender_host"]),
        sender_port=n["sender_port"], seq=seq,
    )


def _held_by_receiver(fd: int) -> bool:
    """True if a receiver holds the file's exclusive lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def read_progress(directory: str | os.PathLike[str], *, check_running: bool = True,
                  attempts: int = 1000) -> ProgressSnapshot:
    """Read a consistent snapshot of the progress state in *directory*.

    Raises :class:`ProgressStateError` when there is no state file (no
    receiver ever ran there) or it cannot be read consistently, OSError for
    other I/O errors.  *check_running* False skips the lock probe (the
    snapshot then says ``running=True``).
    """
    path = state_path(directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ProgressStateError(
            f'no walfast progress state in "{directory}" ("{path}" not found): '
            "is a walfast receiver writing into this directory?") from None
    try:
        running = _held_by_receiver(fd) if check_running else True
        last = "empty file"
        for i in range(attempts):
            raw = os.pread(fd, SIZE, 0)
            try:
                snap = parse_progress(raw, running)
            except ProgressStateError as e:
                last = str(e)
                head = raw[:len(MAGIC)]
                if head != MAGIC and len(head) == len(MAGIC) and any(head):
                    break       # not ours: retrying will not help
                if i > 10:
                    time.sleep(0.001)
                continue
            (seq,) = struct.unpack_from(_byte_order(raw) + "Q", os.pread(fd, 8, _OFFSETS["seq"]))
            if seq == snap.seq:
                return snap
        raise ProgressStateError(f'could not read "{path}": {last}')
    finally:
        os.close(fd)


def create_state(directory: str | os.PathLike[str], *, file_mode: int = 0o600, sync: bool = True,
                 timeout: float = 2.0) -> _core.ProgressState:
    """Create (or take over) the progress state of WAL directory *directory*
    and lock it (a new file gets *file_mode*, as the WAL files).

    Raises :class:`ProgressStateError` if another receiver holds it: two
    receivers must not write into one directory.  The lock is retried for
    *timeout* seconds because readers probe it for an instant.
    """
    layout.ensure_state_dir(directory, file_mode=file_mode, sync=sync)
    path = layout.state_file(directory, layout.PROGRESS)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() > deadline:
                    pid = ""
                    try:
                        pid = f" (pid {parse_progress(os.pread(fd, SIZE, 0)).pid})"
                    except ProgressStateError:
                        pass
                    raise ProgressStateError(
                        f'another walfast receiver{pid} is writing into "{directory}" '
                        f'(it holds "{path}"); stop it or use another directory') from None
                time.sleep(0.01)
        return _core.ProgressState(fd, os.getpid())
    except BaseException:
        os.close(fd)
        raise

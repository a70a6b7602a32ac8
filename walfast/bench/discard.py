"""The discard receiver: the fastest honest consumer, the sender's ceiling.

``python -m walfast.bench.discard CONNINFO SLOT START END`` starts physical
replication from ``SLOT`` at ``START`` and reads CopyData messages with
psycopg's ``pgconn.get_copy_data`` (libpq's PQgetCopyData, blocking), keeps
only the end position of each XLogData message, and throws the bytes away.
It answers keepalives that ask for a reply and sends a status update at
least every 10 s (write = flush = received position), so the walsender never
times out.  Past ``END`` it sends CopyDone, drains the stream and exits 0,
after printing ``received up to X/X`` on stderr.  It writes nothing.

``python -m walfast.bench.discard --ack CONNINFO`` is the synchronous
standby's ceiling: no slot, it starts at the server's current position and,
after each batch of messages (everything the socket holds), reports that
position as written and flushed at once, until SIGINT or SIGTERM.  It
acknowledges without writing anything: what no durable receiver can beat.
"""

from __future__ import annotations

import select
import signal
import struct
import sys
import time
from typing import Any

import psycopg
from psycopg import pq

from walfast.lsn import format_lsn, parse_lsn

__all__ = ["ack", "main", "start_streaming", "status_update"]

_EPOCH_OFFSET_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds


def status_update(pos: int) -> bytes:
    now = int(time.time() * 1_000_000) - _EPOCH_OFFSET_US
    return struct.pack("!cQQQqB", b"r", pos, pos, pos, now, 0)


def start_streaming(conninfo: str, slot: str | None,
                    start: int | None) -> tuple[psycopg.Connection[Any], int] | None:
    """Connect, START_REPLICATION (from *start*, or the server's current
    position when None) and send the first status update.  Returns the
    connection (in COPY_BOTH) and the start, or None after printing the
    error."""
    conn = psycopg.connect(conninfo, replication="true", autocommit=True,
                           fallback_application_name="discard")
    row = conn.execute("IDENTIFY_SYSTEM").fetchone()
    assert row is not None
    timeline = int(row[1])
    if start is None:
        start = parse_lsn(row[2].decode() if isinstance(row[2], bytes) else str(row[2]))
    pg = conn.pgconn
    slot_clause = f"SLOT {slot} " if slot else ""
    pg.send_query(f"START_REPLICATION {slot_clause}PHYSICAL {format_lsn(start)} "
                  f"TIMELINE {timeline}".encode())
    res = pg.get_result()
    if res is None or pq.ExecStatus(res.status) != pq.ExecStatus.COPY_BOTH:
        msg = res.error_message.decode(errors="replace").strip() if res is not None else ""
        print(f"discard: error: START_REPLICATION failed: {msg}", file=sys.stderr)
        return None
    print(f"discard: starting log streaming at {format_lsn(start)} (timeline {timeline})",
          file=sys.stderr, flush=True)
    pg.put_copy_data(status_update(start))
    pg.flush()
    return conn, start


def ack(conninfo: str) -> int:
    """The --ack loop (see the module docstring)."""
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = start_streaming(conninfo, None, None)
    if started is None:
        return 1
    conn, pos = started
    pg = conn.pgconn
    while not stop:
        try:
            readable, _, _ = select.select([pg.socket], [], [], 1.0)
        except InterruptedError:
            continue
        if not readable:
            continue
        pg.consume_input()
        got = False
        while True:
            n, data = pg.get_copy_data(1)
            if n == 0:
                break
            if n < 0:
                err = pg.error_message.decode(errors="replace").strip()
                print(f"discard: error: stream ended at {format_lsn(pos)}: {err}",
                      file=sys.stderr)
                return 1
            got = True
            if data[0] == 0x77:
                pos = max(pos, int.from_bytes(data[1:9], "big") + n - 25)
        if got:
            pg.put_copy_data(status_update(pos))
            pg.flush()
    conn.close()
    print(f"discard: received up to {format_lsn(pos)}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--ack"]:
        return ack(argv[1])
    conninfo, slot, start, end = argv[0], argv[1], parse_lsn(argv[2]), parse_lsn(argv[3])
    if not slot.replace("_", "").isalnum():
        print(f"discard: error: bad slot name {slot!r}", file=sys.stderr)
        return 1
    started = start_streaming(conninfo, slot, start)
    if started is None:
        return 1
    conn, pos = started
    pg = conn.pgconn
    next_status = time.monotonic() + 10
    while pos < end:
        n, data = pg.get_copy_data(0)
        if n <= 0:
            err = pg.error_message.decode(errors="replace").strip()
            print(f"discard: error: stream ended at {format_lsn(pos)}: {err}", file=sys.stderr)
            return 1
        kind = data[0]
        if kind == 0x77:  # 'w': XLogData, 25-byte header then WAL
            pos = int.from_bytes(data[1:9], "big") + n - 25
        elif kind == 0x6B and data[17]:  # 'k' keepalive asking for a reply
            pg.put_copy_data(status_update(pos))
            pg.flush()
        if time.monotonic() >= next_status:
            pg.put_copy_data(status_update(pos))
            pg.flush()
            next_status = time.monotonic() + 10
    pg.put_copy_data(status_update(pos))
    pg.put_copy_end()
    pg.flush()
    while pg.get_copy_data(0)[0] > 0:  # what was in flight after CopyDone
        pass
    while pg.get_result() is not None:
        pass
    conn.close()
    print(f"discard: received up to {format_lsn(pos)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

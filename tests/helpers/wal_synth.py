"""Synthetic WAL and replication messages for tests and benchmarks.

* :func:`make_wal` builds WAL bytes whose page headers are what a server
  writes (magic, flags, timeline, page address, long header at each segment
  start) and whose record bytes are deterministic noise.
* :func:`xlogdata`, :func:`keepalive` build the CopyData payloads
  (big-endian, layouts as in walfast/_frames.pxi); :func:`frame` wraps one
  in its protocol frame, as it travels on the wire (libpq's to unwrap).
* :func:`cut_like_walsender` cuts a WAL range into XLogData payloads the way
  walsender.c does.

This module is deliberately plain Python written from the protocol
description, not from walfast's code, so it can serve as a test oracle.
The one thing it takes from walfast is the page magic, from the table of
majors (:mod:`walfast.majors`), which tests/test_pgcluster.py checks against
each major's real WAL.
"""

from __future__ import annotations

import random
import struct

import numpy as np

from walfast import majors

PAGE_SIZE = 8192
#: The page magic of synthetic WAL: the newest tested major's (any major's
#: would do, as long as the tests that pass ``page_magic=`` use the same).
MAGIC = majors.TABLE[majors.NEWEST_TESTED_MAJOR].page_magic
#: A page magic that is not :data:`MAGIC`: WAL of another tested major.
OTHER_MAGIC = next(row.page_magic for row in majors.TABLE.values() if row.page_magic != MAGIC)
XLP_FIRST_IS_CONTRECORD = 0x0001
XLP_LONG_HEADER = 0x0002
SYSID = 7312345678901234567
MAX_SEND_SIZE = 16 * PAGE_SIZE


def page_header(
    lsn: int, *, segment_size: int, timeline: int = 1, sysid: int = SYSID,
    magic: int = MAGIC, page_size: int = PAGE_SIZE, info: int = 0,
) -> bytes:
    """The header of the page starting at *lsn* (native = little-endian)."""
    if lsn % segment_size == 0:
        return struct.pack(
            "<HHIQII QII", magic, info | XLP_LONG_HEADER, timeline, lsn, 0, 0,
            sysid, segment_size, page_size,
        )
    return struct.pack("<HHIQII", magic, info, timeline, lsn, 0, 0)


def make_wal(
    start: int, nbytes: int, *, segment_size: int, timeline: int = 1, sysid: int = SYSID,
    magic: int = MAGIC, page_size: int = PAGE_SIZE, seed: int = 0,
) -> bytes:
    """WAL bytes for [start, start + nbytes) with valid page headers."""
    first_page = start - start % page_size
    end = start + nbytes
    npages = -(-(end - first_page) // page_size)
    rng = np.random.default_rng(seed)
    buf = bytearray(rng.integers(0, 256, npages * page_size, dtype=np.uint8).tobytes())
    for i in range(npages):
        lsn = first_page + i * page_size
        hdr = page_header(
            lsn, segment_size=segment_size, timeline=timeline, sysid=sysid, magic=magic,
            page_size=page_size, info=XLP_FIRST_IS_CONTRECORD if i % 3 == 1 else 0,
        )
        buf[i * page_size:i * page_size + len(hdr)] = hdr
    return bytes(buf[start - first_page:end - first_page])


def xlogdata(data_start: int, data: bytes, wal_end: int | None = None, send_time: int = 0) -> bytes:
    """'w' | dataStart | walEnd | sendTime | WAL bytes."""
    if wal_end is None:
        wal_end = data_start + len(data)
    return b"w" + struct.pack(">QQq", data_start, wal_end, send_time) + data


def keepalive(wal_end: int, send_time: int = 0, reply: bool = False) -> bytes:
    """'k' | walEnd | sendTime | replyRequested."""
    return b"k" + struct.pack(">QqB", wal_end, send_time, 1 if reply else 0)


def cut_like_walsender(
    start: int, wal: bytes, *, seed: int = 0, page_size: int = PAGE_SIZE,
    max_send: int = MAX_SEND_SIZE, flush_stop_every: int = 7,
) -> list[tuple[int, bytes]]:
    """Cut *wal* (starting at LSN *start*) into (data_start, bytes) messages.

    Like XLogSendPhysical: a message is at most *max_send* bytes and its end
    is rounded down to a page boundary, except when it stops at the server's
    flush position, which can be anywhere; every *flush_stop_every*-th
    message simulates that with an arbitrary end.
    """
    rng = random.Random(seed)
    out = []
    pos = start
    end = start + len(wal)
    n = 0
    while pos < end:
        n += 1
        if n % flush_stop_every == 0:
            # Stopped at the server's flush position: any byte.
            stop = rng.randint(pos + 1, min(end, pos + max_send))
        else:
            # endptr = startptr + MAX_SEND_SIZE, rounded down to a page; the
            # flush position moving in between gives shorter messages too.
            stop = pos + rng.randint(1, max_send)
            stop -= stop % page_size
            if stop <= pos:
                stop = pos - pos % page_size + page_size
            stop = min(stop, end)
        out.append((pos, wal[pos - start:stop - start]))
        pos = stop
    return out

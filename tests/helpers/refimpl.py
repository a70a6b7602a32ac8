"""A plain reference receiver: the test oracle for walfast's engine.

It does the least a correct receiver must: parse whole CopyData payloads with
:mod:`struct`, insist on contiguous dataStart, and place the bytes into
per-segment ``bytearray``s.  No mmap, no syncing, no speed, and no page
checks beyond one rule: the bytes of a page header that has not arrived
whole are not written (a header is checked before any byte of it reaches a
file).  :meth:`files` returns what the directory must contain afterwards:
completed segments under their final name, the incomplete one as
``NAME.partial`` (full-size, zeros after the last byte written).
"""

from __future__ import annotations

import struct


#: Bytes of a page header that must be there before it can be checked: up to
#: xlp_rem_len for a short header, up to xlp_xlog_blcksz for a long one.
SHORT_HEADER_CHECKED, LONG_HEADER_CHECKED = 20, 40


class ReferenceReceiver:
    def __init__(self, *, segment_size: int, timeline: int, start_lsn: int,
                 page_size: int = 8192) -> None:
        self.segment_size = segment_size
        self.page_size = page_size
        self.timeline = timeline
        self.write_lsn = start_lsn
        self.segments: dict[int, bytearray] = {}
        self.wal_end = 0
        self.reply_requested = False

    def feed_copydata(self, payload: bytes) -> None:
        kind = payload[:1]
        if kind == b"w":
            data_start, wal_end, _send_time = struct.unpack_from(">QQq", payload, 1)
            if data_start != self.write_lsn:
                raise ValueError(f"gap: expected {self.write_lsn:X}, got {data_start:X}")
            self.wal_end = wal_end
            self._write(payload[25:])
        elif kind == b"k":
            self.wal_end, _t, reply = struct.unpack_from(">QqB", payload, 1)
            self.reply_requested |= bool(reply)
        else:
            raise ValueError(f"unknown message {kind!r}")

    def _write(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            segno, off = divmod(self.write_lsn, self.segment_size)
            seg = self.segments.setdefault(segno, bytearray(self.segment_size))
            n = min(len(data) - pos, self.segment_size - off)
            seg[off:off + n] = data[pos:pos + n]
            pos += n
            self.write_lsn += n

    def file_name(self, segno: int) -> str:
        per_id = (1 << 32) // self.segment_size
        return f"{self.timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"

    def written_lsn(self) -> int:
        """Where the written bytes end: the bytes received, less a page
        header at the end that has not arrived whole."""
        page = self.write_lsn - self.write_lsn % self.page_size
        need = LONG_HEADER_CHECKED if page % self.segment_size == 0 else SHORT_HEADER_CHECKED
        return page if self.write_lsn - page < need else self.write_lsn

    def files(self) -> dict[str, bytes]:
        current = self.write_lsn // self.segment_size
        held = self.write_lsn - self.written_lsn()
        if held:
            segno, off = divmod(self.written_lsn(), self.segment_size)
            self.segments[segno][off:off + held] = bytes(held)
        out = {}
        for segno, data in self.segments.items():
            name = self.file_name(segno)
            if segno < current:
                out[name] = bytes(data)
            else:
                out[name + ".partial"] = bytes(data)
        return out

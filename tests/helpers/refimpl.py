"""A plain reference receiver: the test oracle for walfast's engine.

It does the least a correct receiver must: parse whole CopyData payloads with
:mod:`struct`, insist on contiguous dataStart, and place the bytes into
per-segment ``bytearray``s.  No mmap, no syncing, no page checks, no speed.
:meth:`files` returns what the directory must contain afterwards: completed
segments under their final name, the incomplete one as ``NAME.partial``
(full-size, zeros after the last byte received).
"""

from __future__ import annotations

import struct


class ReferenceReceiver:
    def __init__(self, *, segment_size: int, timeline: int, start_lsn: int) -> None:
        self.segment_size = segment_size
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

    def files(self) -> dict[str, bytes]:
        current = self.write_lsn // self.segment_size
        out = {}
        for segno, data in self.segments.items():
            name = self.file_name(segno)
            if segno < current:
                out[name] = bytes(data)
            else:
                out[name + ".partial"] = bytes(data)
        return out

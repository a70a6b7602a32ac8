"""Standby status update ('r') encoding and the wire clock."""

import struct
import time

from walfast import encode_status_update, pg_time_now

PG_EPOCH = 946684800  # 2000-01-01 00:00:00 UTC in Unix seconds


def test_status_update_layout():
    msg = encode_status_update(0x1_0300_0000, 0x1_0200_0000, 0, 123456789, False)
    assert len(msg) == 34
    assert struct.unpack(">cQQQqB", msg) == (b"r", 0x1_0300_0000, 0x1_0200_0000, 0, 123456789, 0)
    msg = encode_status_update((1 << 64) - 1, 0, 5, -1, reply_requested=True)
    assert struct.unpack(">cQQQqB", msg) == (b"r", (1 << 64) - 1, 0, 5, -1, 1)


def test_pg_time_now_is_microseconds_since_2000():
    before = int((time.time() - PG_EPOCH) * 1_000_000)
    now = pg_time_now()
    after = int((time.time() - PG_EPOCH) * 1_000_000)
    assert before - 1000 <= now <= after + 1000

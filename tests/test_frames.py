"""StreamParser: CopyData frames and payloads, split anywhere, and bad input."""

import os
import struct

import pytest

from refimpl import ReferenceReceiver
from wal_synth import SYSID, cut_like_walsender, frame, keepalive, make_wal, xlogdata
from walfast import ProtocolError, SegmentWriter, StreamParser, WalfastError, WalGapError

MB = 1 << 20


def dir_files(path):
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = f.read()
    return out


def new_parser(path, start=0, segment_size=MB, timeline=1, page_size=1024, **kw):
    w = SegmentWriter(path, timeline=timeline, start_lsn=start, segment_size=segment_size,
                      page_size=page_size, **kw)
    return StreamParser(w)


# Small pages (PostgreSQL can be built with XLOG_BLCKSZ from 1 kB) keep the
# split-everywhere tests short while still crossing page boundaries.
PG = 1024


def small_stream(start=0):
    """A few messages: keepalives and XLogData, crossing page boundaries."""
    wal = make_wal(start, 3 * PG + 100, segment_size=MB, page_size=PG, seed=1)
    payloads = [
        keepalive(start, 11, reply=False),
        xlogdata(start, wal[:PG + 7], send_time=12),
        keepalive(start + PG + 7, 13, reply=True),
        xlogdata(start + PG + 7, wal[PG + 7:3 * PG], send_time=14),
        xlogdata(start + 3 * PG, wal[3 * PG:], wal_end=start + 5 * PG, send_time=15),
    ]
    return wal, payloads


def reference_files(payloads, start=0, segment_size=MB):
    ref = ReferenceReceiver(segment_size=segment_size, timeline=1, start_lsn=start)
    for p in payloads:
        ref.feed_copydata(p)
    return ref.files()


def test_feed_copydata_writes_and_tracks_keepalives(tmp_path):
    wal, payloads = small_stream()
    p = new_parser(tmp_path)
    types = [p.feed_copydata(x) for x in payloads]
    assert types == [ord("k"), ord("w"), ord("k"), ord("w"), ord("w")]
    assert p.writer.write_lsn == len(wal)
    assert p.wal_end == 5 * PG
    assert p.send_time == 15
    assert (p.messages, p.xlogdata_messages, p.keepalive_messages) == (5, 3, 2)
    assert p.wal_bytes == len(wal)
    assert p.reply_requested
    assert p.take_reply_request() is True
    assert p.take_reply_request() is False
    p.writer.close()
    assert dir_files(tmp_path) == reference_files(payloads)


def test_raw_stream_split_at_every_byte_boundary(tmp_path):
    """Two feeds, split at every offset of the stream: the same bytes land
    every time (compared in full for every 101st split, the received prefix
    for the others, to keep the test fast)."""
    wal, payloads = small_stream()
    stream = b"".join(frame(x) for x in payloads)
    expected = reference_files(payloads)
    (name,) = expected
    for cut in range(len(stream) + 1):
        p = new_parser(tmp_path, sync=False)
        assert p.feed(stream[:cut]) == cut
        assert p.feed(stream[cut:]) == len(stream) - cut
        assert not p.in_frame
        assert p.writer.write_lsn == len(wal)
        assert p.keepalive_messages == 2 and p.xlogdata_messages == 3
        assert p.reply_requested and p.wal_end == 5 * PG
        p.writer.close()
        path = tmp_path / name
        if cut % 101 == 0:
            assert dir_files(tmp_path) == expected, f"split at {cut}"
        else:
            with open(path, "rb") as f:
                assert f.read(len(wal)) == wal, f"split at {cut}"
        path.unlink()


def test_raw_stream_byte_by_byte(tmp_path):
    wal, payloads = small_stream()
    stream = b"".join(frame(x) for x in payloads)
    p = new_parser(tmp_path)
    for i in range(len(stream)):
        assert p.feed(stream[i:i + 1]) == 1
    p.writer.close()
    assert dir_files(tmp_path) == reference_files(payloads)


def test_feed_stops_before_other_messages(tmp_path):
    _, payloads = small_stream()
    copy_done = b"c\x00\x00\x00\x04"
    stream = frame(payloads[0]) + frame(payloads[1]) + copy_done + b"Zjunk"
    p = new_parser(tmp_path)
    n = p.feed(stream)
    assert stream[n:] == copy_done + b"Zjunk"
    assert p.xlogdata_messages == 1 and not p.in_frame
    # Feeding the same tail again still consumes nothing: the caller owns it.
    assert p.feed(stream[n:]) == 0


def test_feed_accepts_any_buffer(tmp_path):
    wal, payloads = small_stream()
    stream = b"".join(frame(x) for x in payloads)
    p = new_parser(tmp_path)
    assert p.feed(memoryview(bytearray(stream))[:100]) == 100
    assert p.feed(bytearray(stream[100:])) == len(stream) - 100
    assert p.writer.write_lsn == len(wal)


@pytest.mark.parametrize(
    "payload, match, msgtype, length",
    [
        (b"w" + b"\0" * 23, "XLogData message shorter than its 25-byte header", "w", 24),
        (b"w", "XLogData message shorter", "w", 1),
        (b"k" + b"\0" * 16, "keepalive message is not 18 bytes", "k", 17),
        (b"k" + b"\0" * 18, "keepalive message is not 18 bytes", "k", 19),
        (b"x" + b"\0" * 30, "unrecognized streaming message type", "x", 31),
        (b"r" + b"\0" * 33, "unrecognized streaming message type", "r", 34),
        (b"", "empty CopyData message", None, 0),
    ],
)
def test_bad_payloads(tmp_path, payload, match, msgtype, length):
    p = new_parser(tmp_path, start=0x3000000)
    with pytest.raises(ProtocolError, match=match) as ei:
        p.feed_copydata(payload)
    err = ei.value
    assert err.msgtype == msgtype
    assert err.length == length
    assert err.lsn == 0x3000000
    assert "0/3000000" in str(err)
    assert f"length {length} bytes" in str(err)
    # The stream cannot be trusted any more: later calls fail too.
    with pytest.raises(WalfastError):
        p.feed_copydata(keepalive(0))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("length", [0, 3, 4, -1, -(1 << 31)])
def test_impossible_frame_length(tmp_path, length):
    p = new_parser(tmp_path)
    with pytest.raises(ProtocolError, match="CopyData frame with an impossible length"):
        p.feed(b"d" + struct.pack(">i", length) + b"w")


def test_bad_message_in_raw_stream_names_lsn_reached(tmp_path):
    wal, payloads = small_stream()
    stream = frame(payloads[1]) + frame(b"q" + b"\0" * 40)
    p = new_parser(tmp_path)
    with pytest.raises(ProtocolError) as ei:
        p.feed(stream)
    assert ei.value.msgtype == "q"
    assert ei.value.lsn == PG + 7
    assert "0/407" in str(ei.value)


def test_truncated_header_then_garbage(tmp_path):
    """A frame cut off mid-header, then garbage where the rest should be."""
    _, payloads = small_stream()
    good = frame(payloads[1])
    p = new_parser(tmp_path)
    assert p.feed(good[:10]) == 10
    assert p.in_frame
    with pytest.raises(WalGapError):
        p.feed(b"\xff" * 64)   # the garbage lands in dataStart


def test_gap_in_data_start(tmp_path):
    wal = make_wal(0, 3 * 8192, segment_size=MB)
    p = new_parser(tmp_path, page_size=8192)
    p.feed_copydata(xlogdata(0, wal[:8192]))
    with pytest.raises(WalGapError) as ei:
        p.feed_copydata(xlogdata(8192 + 16, wal[8192 + 16:]))
    assert (ei.value.expected, ei.value.received) == (8192, 8192 + 16)
    assert "expected data starting at 0/2000" in str(ei.value)
    assert p.writer.write_lsn == 8192


def test_overlap_is_a_gap_too(tmp_path):
    wal = make_wal(0, 2 * 8192, segment_size=MB)
    p = new_parser(tmp_path, page_size=8192)
    p.feed_copydata(xlogdata(0, wal[:8192]))
    with pytest.raises(WalGapError, match="overlap of 100 bytes"):
        p.feed_copydata(xlogdata(8192 - 100, wal[8192 - 100:]))


def test_walsender_sized_messages_across_segments(tmp_path):
    """3.5 MiB of WAL cut like walsender cuts it, 1 MiB segments."""
    start = 5 * MB
    wal = make_wal(start, 3 * MB + MB // 2, segment_size=MB, seed=3)
    msgs = cut_like_walsender(start, wal, seed=3)
    payloads = [xlogdata(s, d) for s, d in msgs]
    p = new_parser(tmp_path, start=start, system_identifier=SYSID, page_size=8192)
    stream = b"".join(frame(x) for x in payloads)
    pos = 0
    while pos < len(stream):   # odd-sized reads, as from a socket
        pos += p.feed(stream[pos:pos + 65521])
    assert p.writer.segments_completed == 3
    p.writer.close()
    files = dir_files(tmp_path)
    assert files == reference_files(payloads, start=start)
    assert sorted(files) == [
        "000000010000000000000005", "000000010000000000000006",
        "000000010000000000000007", "000000010000000000000008.partial",
    ]

"""StreamParser: whole CopyData payloads (what libpq hands the receive loop),
the WAL split into XLogData messages anywhere, and bad input."""

import os

import pytest

from helpers.refimpl import ReferenceReceiver
from helpers.wal_synth import SYSID, cut_like_walsender, keepalive, make_wal, xlogdata
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


def flushable(lsn, segment_size=MB):
    """Where the flush position may be once the WAL up to *lsn* arrived: not
    inside a page header that has not fully arrived (nothing of a page is
    trusted before its header was checked)."""
    page = lsn - lsn % PG
    need = 40 if page % segment_size == 0 else 20
    return page if lsn - page < need else lsn


def split_stream(wal, cut, start=0):
    """small_stream's messages with the WAL cut into two XLogData messages
    at *cut*."""
    return [
        keepalive(start, 11, reply=False),
        xlogdata(start, wal[:cut], send_time=12),
        keepalive(start + cut, 13, reply=True),
        xlogdata(start + cut, wal[cut:], wal_end=start + 5 * PG, send_time=15),
    ]


def test_wal_split_into_messages_at_every_byte_offset(tmp_path):
    """The WAL cut into two messages at every offset (page headers split
    across the two included): the same bytes land every time, and the flush
    position after the first message never passes a page header that has
    not fully arrived (files compared in full for every 101st cut, the
    received prefix for the others, to keep the test fast)."""
    wal, _ = small_stream()
    expected = reference_files(split_stream(wal, 0))
    (name,) = expected
    for cut in range(len(wal) + 1):
        p = new_parser(tmp_path, sync=False)
        payloads = split_stream(wal, cut)
        for x in payloads[:2]:
            p.feed_copydata(x)
        assert p.writer.flush() == flushable(cut), f"split at {cut}"
        for x in payloads[2:]:
            p.feed_copydata(x)
        assert p.writer.write_lsn == len(wal)
        assert p.keepalive_messages == 2 and p.xlogdata_messages == 2
        assert p.reply_requested and p.wal_end == 5 * PG
        assert p.writer.flush() == len(wal)
        p.writer.close()
        path = tmp_path / name
        if cut % 101 == 0:
            assert dir_files(tmp_path) == expected, f"split at {cut}"
        else:
            with open(path, "rb") as f:
                assert f.read(len(wal)) == wal, f"split at {cut}"
        path.unlink()


def test_wal_byte_by_byte(tmp_path):
    """Every WAL byte in a message of its own (with the keepalives)."""
    wal, payloads = small_stream()
    one_byte = [keepalive(0, 11)]
    one_byte += [xlogdata(i, wal[i:i + 1], send_time=12) for i in range(len(wal))]
    one_byte += [keepalive(len(wal), 13, reply=True)]
    p = new_parser(tmp_path)
    for i, x in enumerate(one_byte):
        p.feed_copydata(x)
        if i % 97 == 0:
            assert p.writer.flush() == flushable(p.writer.write_lsn)
    assert p.xlogdata_messages == len(wal)
    p.writer.close()
    assert dir_files(tmp_path) == reference_files(payloads)


def test_feed_copydata_accepts_any_buffer(tmp_path):
    wal, payloads = small_stream()
    p = new_parser(tmp_path)
    p.feed_copydata(memoryview(bytearray(b"xx" + payloads[1]))[2:])
    p.feed_copydata(bytearray(payloads[3]))
    p.feed_copydata(memoryview(payloads[4]))
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


def test_bad_message_names_lsn_reached(tmp_path):
    _, payloads = small_stream()
    p = new_parser(tmp_path)
    p.feed_copydata(payloads[1])
    with pytest.raises(ProtocolError) as ei:
        p.feed_copydata(b"q" + b"\0" * 40)
    assert ei.value.msgtype == "q"
    assert ei.value.lsn == PG + 7
    assert "0/407" in str(ei.value)


def test_garbage_in_the_header_is_a_gap(tmp_path):
    """An XLogData header of garbage: its dataStart does not continue the
    stream, and nothing is written."""
    p = new_parser(tmp_path)
    with pytest.raises(WalGapError):
        p.feed_copydata(b"w" + b"\xff" * 64)
    assert os.listdir(tmp_path) == []
    with pytest.raises(WalfastError, match="stopped after an earlier error"):
        p.feed_copydata(keepalive(0))


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
    for x in payloads:
        p.feed_copydata(x)
    assert p.writer.segments_completed == 3
    p.writer.close()
    files = dir_files(tmp_path)
    assert files == reference_files(payloads, start=start)
    assert sorted(files) == [
        "000000010000000000000005", "000000010000000000000006",
        "000000010000000000000007", "000000010000000000000008.partial",
    ]

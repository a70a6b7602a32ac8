"""Hypothesis: any message sizes (the WAL split into XLogData messages
anywhere, page headers split across messages included), keepalives and
flush points give the same files as the plain reference receiver
(tests/refimpl.py), through the path the receive loop runs: one whole
CopyData payload per call."""

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.refimpl import ReferenceReceiver
from helpers.wal_synth import keepalive, make_wal, xlogdata
from walfast import SegmentWriter, StreamParser

MB = 1 << 20
P = 8192
START = 2 * MB
WAL = make_wal(START, 3 * MB + 12345, segment_size=MB, seed=7)


@st.composite
def streams(draw):
    """(payloads, flush points) over a prefix of WAL."""
    total = draw(st.integers(1, len(WAL)))
    payloads = []
    pos = 0
    while pos < total:
        if draw(st.integers(0, 9)) == 0:
            payloads.append(keepalive(START + pos, 0, reply=draw(st.booleans())))
        n = draw(st.one_of(st.integers(1, 64), st.integers(1, 128 * 1024)))
        n = min(n, total - pos)
        payloads.append(xlogdata(START + pos, WAL[pos:pos + n], send_time=pos))
        pos += n
    flush_after = draw(st.sets(st.integers(0, len(payloads) - 1), max_size=40))
    return payloads, flush_after


def read_dir(path):
    out = {}
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = f.read()
    return out


def flushable(lsn):
    """The flush position never passes a page header that has not fully
    arrived."""
    page = lsn - lsn % P
    need = 40 if page % MB == 0 else 20
    return page if lsn - page < need else lsn


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                               HealthCheck.too_slow])
@given(case=streams(), sync=st.booleans())
def test_random_streams_match_reference(tmp_path_factory, case, sync):
    payloads, flush_after = case
    d = tmp_path_factory.mktemp("wal")
    ref = ReferenceReceiver(segment_size=MB, timeline=1, start_lsn=START)
    for p in payloads:
        ref.feed_copydata(p)

    w = SegmentWriter(d, timeline=1, start_lsn=START, segment_size=MB, sync=sync)
    parser = StreamParser(w)
    last_flush = START
    for i, p in enumerate(payloads):
        parser.feed_copydata(p)
        if i in flush_after or i == len(payloads) - 1:
            flushed = w.flush()
            # Flushed never goes back and never passes what was written,
            # nor a page whose header has not fully arrived.
            assert last_flush <= flushed <= w.write_lsn
            assert flushed == flushable(w.write_lsn)
            last_flush = flushed
    assert w.write_lsn == ref.write_lsn
    assert parser.wal_end == ref.wal_end
    assert parser.reply_requested == ref.reply_requested
    w.close()
    assert read_dir(d) == ref.files()

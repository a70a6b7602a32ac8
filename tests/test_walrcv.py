"""walfast.walrcv: the walreceiver-style connect/receive/send/disconnect API
against a real primary."""

import struct

import pytest

from walfast import encode_status_update, pg_time_now
from walfast.replication import walrcv
from walfast.errors import WalfastError
from walfast.lsn import parse_lsn, segment_start


def test_receive_send_disconnect(pg_cluster):
    (pos,), = pg_cluster.execute("SELECT pg_current_wal_lsn()::text")
    start = segment_start(parse_lsn(pos), pg_cluster.wal_segment_size)
    pg_cluster.generate_wal(100_000)
    (end,), = pg_cluster.execute("SELECT pg_current_wal_flush_lsn()::text")
    end = parse_lsn(end)

    rcv = walrcv.connect(pg_cluster.conninfo(), start, application_name="walrcv_test")
    assert rcv.system.systemid == pg_cluster.system_identifier()
    assert rcv.timeline == 1
    received = start
    kinds = set()
    while received < end:
        kind, buf = rcv.receive(timeout=10)
        assert kind in ("w", "k"), kind
        kinds.add(kind)
        if kind == "w":
            data_start, wal_end, _ = struct.unpack_from(">QQq", buf, 1)
            assert data_start == received          # contiguous
            received += len(buf) - 25
            assert wal_end >= received
    assert "w" in kinds
    rcv.send(encode_status_update(received, 0, 0, pg_time_now()))
    # The server sees our write position (status updates are asynchronous).
    for _ in range(50):
        kind, _buf = rcv.receive(timeout=0.1)
        rows = pg_cluster.execute(
            "SELECT write_lsn::text FROM pg_stat_replication WHERE application_name = 'walrcv_test'")
        if rows and rows[0][0] and parse_lsn(rows[0][0]) >= received:
            break
    else:
        pytest.fail(f"server never saw write_lsn {received:X}: {rows}")
    assert rcv.receive(timeout=0.2)[0] in ("", "k")   # nothing new: timeout or keepalive
    assert rcv.end_streaming() is None               # we ended it: no next timeline
    with pytest.raises(WalfastError, match="the stream has ended"):
        rcv.receive(timeout=0)
    rcv.disconnect()
    assert rcv.conn.closed

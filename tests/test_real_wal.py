"""The engine on real WAL: a cluster's own pg_wal segments, cut into XLogData
messages the way a walsender cuts them, must come out byte-identical, the
writer expecting the page magic of the cluster's major (walfast.majors), as
walfast's receiver tells it."""

import random

import pytest

from helpers.wal_synth import cut_like_walsender, keepalive, xlogdata
from walfast import SegmentWriter, StreamParser, majors
from walfast.lsn import parse_segment_file_name


def server_wal(cluster, nsegments):
    """Generate WAL for *nsegments* segments, switch, and return
    (start_lsn, bytes, [names]) for the contiguous run of completed segments."""
    segsize = cluster.wal_segment_size
    cluster.generate_wal(nsegments * segsize)
    cluster.switch_wal()
    paths = cluster.completed_segments()
    segnos = [parse_segment_file_name(p.name, segsize)[1] for p in paths]
    assert segnos == list(range(segnos[0], segnos[0] + len(segnos))), "pg_wal has a hole"
    assert len(paths) >= nsegments
    data = b"".join(p.read_bytes() for p in paths)
    assert len(data) == len(paths) * segsize
    return segnos[0] * segsize, data, [p.name for p in paths]


def run_engine(directory, cluster, start, wal, *, flushes, seed):
    w = SegmentWriter(
        directory, timeline=1, start_lsn=start, segment_size=cluster.wal_segment_size,
        system_identifier=cluster.system_identifier(),
        page_magic=majors.facts(cluster.major).page_magic,
    )
    parser = StreamParser(w)
    msgs = cut_like_walsender(start, wal, seed=seed)
    payloads = []
    for i, (data_start, data) in enumerate(msgs):
        payloads.append(xlogdata(data_start, data, wal_end=start + len(wal)))
        if i % 10 == 0:
            payloads.append(keepalive(data_start + len(data), reply=i % 20 == 0))
    rng = random.Random(seed)
    for p in payloads:
        parser.feed_copydata(p)
        if flushes and rng.random() < 0.2:
            w.flush()           # batches of random length, as the receive loop's
    assert w.write_lsn == start + len(wal)
    assert w.flush_lsn == start + len(wal)     # every segment completed durably
    assert parser.xlogdata_messages == len(msgs)
    w.close()
    return w


@pytest.mark.majors
@pytest.mark.parametrize("segsize_mb, nsegments", [(1, 5), (16, 2)])
def test_engine_output_is_byte_identical_to_pg_wal(shared_cluster, tmp_path, segsize_mb, nsegments):
    cluster = shared_cluster(wal_segsize_mb=segsize_mb)
    start, wal, names = server_wal(cluster, nsegments)
    for flushes in (True, False):
        out = tmp_path / ("flushes" if flushes else "payloads")
        out.mkdir()
        w = run_engine(out, cluster, start, wal, flushes=flushes, seed=segsize_mb)
        assert w.segments_completed == len(names)
        # The magic the table says, or (a major not in it) the one learned
        # from the first page: the server's.
        assert w.page_magic == (majors.facts(cluster.major).page_magic
                                or int.from_bytes(wal[:2], "little"))
        assert sorted(p.name for p in out.iterdir()) == names
        for name in names:
            assert (out / name).read_bytes() == (cluster.pg_wal / name).read_bytes(), name

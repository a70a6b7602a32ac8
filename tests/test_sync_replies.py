"""``--synchronous`` answers as the walreceiver does: the written position
first, then the flushed one.

PostgreSQL's walreceiver replies after writing (XLogWalRcvSendReply) and
again after flushing; pg_receivewal ``--synchronous`` replies once, after
its fsync.  walfast replies twice, so a primary with
``synchronous_commit=remote_write`` releases commits before the receiver's
fdatasync, and ``on`` still waits for the flush.  Seen from the server side:
the fake walsender records every status update in order.
"""

from __future__ import annotations

from helpers import wal_synth
from helpers.fakewalsender import AwaitStatus, CopyData, Linger, Scenario, Stream, standard_replies
from helpers.walfuzz import run_cli

SEG = 1 << 20


def _scenario(start: int, wal: bytes, wait: float) -> tuple[Scenario, int]:
    """XLogData in pieces, none asking for a reply; after each the server
    waits up to *wait* seconds for the client's status updates (a
    synchronous standby's two).  Returns the scenario and the piece count."""
    actions: list = []
    pieces = list(wal_synth.cut_like_walsender(start, wal, seed=5))
    for pos, data in pieces:
        actions += [CopyData(wal_synth.xlogdata(pos, data)), AwaitStatus(count=2, timeout=wait)]
    return Scenario(
        replies=standard_replies(system_identifier=wal_synth.SYSID, timeline=1, xlogpos=start,
                                 segment_size="1MB", slot=(start, 1)),
        streams=[Stream(actions + [Linger()], expect_lsn=start, expect_timeline=1)]), len(pieces)


def _run(fake_walsender, tmp_path, *extra: str):
    start = 3 * SEG
    wal = wal_synth.make_wal(start, SEG // 2, segment_size=SEG)
    end = start + len(wal)
    name = "sync" + "".join(extra).replace("-", "")
    scenario, pieces = _scenario(start, wal, 5.0 if extra else 0.05)
    fake_walsender.add(name, scenario)
    run = run_cli(["-D", str(tmp_path), "-d", fake_walsender.conninfo(name), "-n", "-S", "s",
                   "-s", "0", "-E", f"0/{end - 1:X}", *extra], timeout=60)
    assert run.rc == 0, run.stderr
    (rec,) = fake_walsender.wait_records(name)
    return rec.status_updates, end, pieces


def test_synchronous_reports_the_write_before_the_flush(fake_walsender, tmp_path):
    updates, end, pieces = _run(fake_walsender, tmp_path, "--synchronous")
    early = [u for u in updates if u.write > u.flush]
    assert len(early) >= pieces // 2, (pieces, updates)
    for k, u in enumerate(updates):
        if u.write > u.flush:
            # The next update reports that write position flushed.
            assert any(v.flush >= u.write for v in updates[k + 1:]), (u, updates[k + 1:])
    assert max(u.flush for u in updates) >= end - 1
    # Nothing is reported flushed before it was written.
    assert all(u.flush <= u.write for u in updates)


def test_without_synchronous_no_reports_per_batch(fake_walsender, tmp_path):
    """A slot-only receiver reports on its own schedule (here, with -s 0:
    at the start and when the stream ends), not twice per batch."""
    updates, _, pieces = _run(fake_walsender, tmp_path)
    assert pieces >= 10
    assert 1 <= len(updates) <= 4, updates

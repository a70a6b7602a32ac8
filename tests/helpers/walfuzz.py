"""Fuzzing ``walfast receive`` with malformed replication streams from the
fake walsender (:mod:`helpers.fakewalsender`).

Three parts, each usable alone:

* **cases** (:func:`make_case`): from ``(seed, case number)`` alone, a valid
  scenario -- real-looking WAL (:func:`helpers.wal_synth.make_wal`, 1 MiB
  segments) cut into XLogData messages as a walsender cuts it, keepalives in
  between, the command results a PostgreSQL 15 walsender gives, one of
  several endings (the server closes, shuts down, ends the timeline and
  streams the next one; the client stops at ``--endpos``) -- then zero to
  two *mutations* from :data:`MUTATIONS` (malformed command results,
  malformed CopyData and frames, page-header faults, gaps, errors and cuts).
  Everything is drawn from ``random.Random(f"walfuzz:{seed}:{case}")``,
  so a case is reproduced from its two numbers.
* **the oracle** (:func:`check_case`): replays the bytes the server really
  sent in each COPY through a plain reference receiver (:func:`replay`,
  written from the protocol and page-header rules, not from walfast's code)
  to learn which WAL a correct receiver may write and report, then checks
  what walfast did: exit status, messages, the files in its directory and
  every standby status update the server received.  Each violation is a
  :class:`Finding` of one :data:`FINDING_KINDS` kind.  Because it judges
  what was *sent*, a mutation need not say what it should cause.
* **runners**: :func:`run_case` serves one case from a fake walsender in
  this process and runs walfast against it in another: an
  :class:`InprocWorker` (a worker process calling the command line's own
  code, ``walfast.cli.receivewal.run_frontend``, case after case; killed
  and replaced after a hang or a death) or the real ``walfast receive``
  command line (:func:`run_cli`).  :func:`run_cases` runs many, *jobs* at
  a time.

The mutations (:data:`MUTATIONS`, each a function of the draft and the
case's generator):

* command results (IDENTIFY_SYSTEM, the SHOWs, READ_REPLICATION_SLOT,
  TIMELINE_HISTORY, the end-of-timeline row): a value from the pool of its
  column (:data:`COLUMN_POOLS`: non-integer text, out-of-range numbers,
  unparseable LSNs, absurd segment and block sizes, another system
  identifier...), a NULL, the wrong shape (rows, columns, a DataRow longer
  or shorter than its RowDescription), an error, FATAL, garbage bytes or a
  closed connection instead of the answer;
* the startup: ParameterStatus values (server_version, integer_datetimes,
  client_encoding...), a refusal; the connection cut within the first bytes;
* CopyData: unknown type bytes, empty, short XLogData, keepalives of the
  wrong length; frames whose length lies (shorter, longer, below 4),
  foreign messages, notices and ParameterStatus in the COPY;
* the stream: dataStart gaps and overlaps, messages dropped, repeated,
  swapped; absurd walEnd and sendTime; page headers with a wrong magic,
  flags, timeline, page address or long-header field (and harmless ones:
  xlp_rem_len, padding); a header split across two messages, then wrong
  in its second part; flipped bits; zeroed pages (one, a header, the rest
  of a segment); an ErrorResponse, a shutdown, a CopyDone then data, an
  end-of-timeline row that makes no sense, the connection closed or reset
  at a chosen byte; valid restreams (one huge message over a segment
  boundary, a stretch of 1-700-byte messages); keepalive floods; --endpos
  at odd places.

The assertions for every case (:func:`check_case`):

* exit status 0 or 1, never a signal, never a hang (the pool's timeout);
* status 1 comes with an ``error:`` line, and nothing on stderr looks like
  a Python traceback or a Python object's repr;
* status 0 only when the stream let walfast reach ``--endpos``;
* every byte of every segment file is, up to some point, the WAL the server
  sent and the reference accepted, and zero (preallocation) after it: no
  byte of a page that failed its checks, nothing after a gap;
* no flush position reported beyond the WAL the reference accepted and
  whose page headers were complete, nor beyond what the files hold; no
  write position beyond the accepted WAL.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from helpers import wal_synth
from walfast import majors
from helpers.fakewalsender import (
    DEFAULT_PARAMETERS, AwaitStatus, Close, Column, CommandOK, ConnectionRecord, CopyData,
    EndCopy, Error, FakeWalsender, Linger, Raw, ResultSet, Scenario, Stream, copy_data,
    error_response, frame, history_result, next_timeline_result, notice_response,
    parameter_status, parse_start_replication, standard_replies,
)

MiB = 1 << 20
SEGSIZE = MiB
PAGE = wal_synth.PAGE_SIZE
SLOT = "fuzz_slot"
#: How long the fake walsender waits for walfast's answer, in seconds: its
#: reply to a keepalive (WAIT), its CopyDone after ours or at --endpos
#: (LINGER), its next command (IDLE).  A correct walfast answers in
#: milliseconds; when it cannot (the stream desynchronised its framing, it
#: failed) the case goes on, or ends, after these -- short, because such
#: cases are common and each wait is wall time.
WAIT = 1.0
LINGER = 2.0
IDLE = 1.0
#: sendTime base: 2026-01-01 00:00 UTC in microseconds since 2000-01-01.
_SEND_TIME_BASE = (1767225600 - 946684800) * 1_000_000

#: The kinds of finding (what check_case can report).
FINDING_KINDS = {
    "traceback": "a Python traceback (or exception text) on stderr",
    "signal-death": "walfast died of a signal",
    "hang": "walfast did not exit within the case's timeout",
    "bad-exit-status": "exit status other than 0 or 1",
    "no-error-message": "exit status 1 without an error line",
    "unclear-error": "an error line with a Python repr in it",
    "exit-0-not-at-endpos": "exit status 0 although the stream did not reach --endpos",
    "rejected-header-bytes-written": "bytes of a page header that failed its checks are in a file"
                                     " (the known engine issue)",
    "rejected-bytes-written": "bytes the reference refused (after a bad page, a gap, ...) are"
                              " in a file",
    "wrong-bytes": "a file holds bytes other than the WAL sent",
    "completed-segment-wrong": "a completed segment is not the WAL sent",
    "bad-file-size": "a segment file is not a whole segment long",
    "unexpected-file": "a file walfast should not have written",
    "history-file-wrong": "a timeline history file that is not what the server sent",
    "rejected-header-write-reported": "a write position reported inside the header of a page"
                                      " that failed its checks (the same known engine issue)",
    "flush-past-valid": "a flush position reported beyond the valid, complete-header WAL",
    "flushed-not-in-file": "a flush position reported beyond what the files hold",
    "write-past-valid": "a write position reported beyond the valid WAL",
    "streamed-with-invalid-facts": "START_REPLICATION sent although a command result was invalid",
    "fd-leak": "file descriptors left open after an in-process case",
    "harness-error": "the fake walsender itself failed (a harness bug)",
}


# =========================================================================== #
# cases
# =========================================================================== #

@dataclass
class Msg:
    """One thing a stream sends, before it is encoded: an XLogData (``w``)
    carrying the WAL at *src* (its dataStart says *data_start*, normally
    *src*), a keepalive (``k``), or any fake-walsender action."""

    kind: str
    src: int = 0
    length: int = 0
    data_start: int | None = None
    wal_end: int | None = None
    send_time: int = 0
    reply: bool = False
    action: object = None


@dataclass
class StreamDraft:
    """One START_REPLICATION's stream being built: its WAL (from *start*),
    the messages carrying it, how it ends."""

    timeline: int
    start: int
    wal: bytearray
    msgs: list[Msg]
    end: list
    reply: object = None
    cut_after: int | None = None
    cut_reset: bool = False

    @property
    def wal_end(self) -> int:
        return self.start + len(self.wal)

    def xlogdata(self) -> list[int]:
        """Indexes of the XLogData messages."""
        return [i for i, m in enumerate(self.msgs) if m.kind == "w"]

    def encode(self, m: Msg) -> bytes:
        """The CopyData payload of XLogData or keepalive *m*."""
        if m.kind == "w":
            data = bytes(self.wal[m.src - self.start:m.src - self.start + m.length])
            start = m.src if m.data_start is None else m.data_start
            end = m.src + m.length if m.wal_end is None else m.wal_end
            return wal_synth.xlogdata(start, data, end, m.send_time)
        return wal_synth.keepalive(m.wal_end or 0, m.send_time, m.reply)

    def actions(self) -> list:
        out: list = []
        for m in self.msgs:
            if m.kind in ("w", "k"):
                out.append(CopyData(self.encode(m)))
            else:
                out.append(m.action)
        return out + list(self.end)


@dataclass
class Draft:
    """A whole case before it becomes a :class:`Scenario`: the server's
    facts and replies, its streams, the command line's options."""

    ending: str
    sysid: int
    parameters: dict
    replies: dict
    streams: list[StreamDraft]
    slot: str | None
    synchronous: bool
    endpos: int | None
    startup: object = None
    cut_after: int | None = None


@dataclass
class FuzzCase:
    seed: int
    case: int
    draft: Draft
    mutations: list[str]

    @property
    def user(self) -> str:
        """The connection's user name: the fake walsender's key for the case."""
        return f"fuzz_{self.seed}_{self.case}"

    def scenario(self) -> Scenario:
        d = self.draft
        streams = [Stream(actions=s.actions(), expect_lsn=s.start, expect_timeline=s.timeline,
                          reply=s.reply, cut_after=s.cut_after, cut_reset=s.cut_reset)
                   for s in d.streams]
        return Scenario(name=f"seed {self.seed} case {self.case}", parameters=dict(d.parameters),
                        startup=d.startup, replies=dict(d.replies), streams=streams,
                        cut_after=d.cut_after, max_seconds=30.0, idle_timeout=IDLE)

    def args(self, directory: Path | str, conninfo: str) -> list[str]:
        """``walfast receive``'s arguments (after ``receive``)."""
        d = self.draft
        args = ["-D", str(directory), "-d", conninfo, "-n", "-v"]
        if d.slot is not None:
            args += ["-S", d.slot]
        if d.synchronous:
            args.append("--synchronous")
        if d.endpos is not None:
            args += ["-E", _fmt(d.endpos)]
        return args

    def describe(self, messages: bool = False) -> str:
        """The case in words; with *messages*, every message of every
        stream too (what the server sends, in order)."""
        d = self.draft
        lines = [f"seed {self.seed} case {self.case}: ending {d.ending}, "
                 f"mutations: {'; '.join(self.mutations) or 'none (a valid stream)'}"]
        opts = ([f"-S {d.slot}"] if d.slot else []) + (["--synchronous"] if d.synchronous else []) \
            + ([f"-E {_fmt(d.endpos)}"] if d.endpos is not None else [])
        lines.append(f"  options: {' '.join(opts) or '(none)'}; system identifier {d.sysid}")
        for i, s in enumerate(d.streams):
            nw = sum(1 for m in s.msgs if m.kind == "w")
            lines.append(f"  stream {i}: timeline {s.timeline}, "
                         f"WAL {_fmt(s.start)}..{_fmt(s.wal_end)}"
                         f" in {nw} XLogData, {len(s.msgs) - nw} other; end {s.end!r:.120}")
            if s.reply is not None:
                lines.append(f"    START_REPLICATION answered with {s.reply!r:.200}")
            if s.cut_after is not None:
                lines.append(f"    connection {'reset' if s.cut_reset else 'closed'} after "
                             f"{s.cut_after} bytes of COPY")
            for j, m in enumerate(s.msgs if messages else []):
                lines.append(f"    {j:4d} {_describe_msg(s, m)}")
        if messages:
            for key, reply in d.replies.items():
                lines.append(f"  {key}: {reply!r:.200}")
        return "\n".join(lines)


def _describe_msg(s: StreamDraft, m: Msg) -> str:
    if m.kind == "w":
        ds = m.src if m.data_start is None else m.data_start
        we = "" if m.wal_end is None else f" walEnd {m.wal_end:#x}"
        moved = "" if ds == m.src else f" (bytes of {_fmt(m.src)})"
        return f"XLogData dataStart {_fmt(ds)}{moved} {m.length} bytes{we}"
    if m.kind == "k":
        return f"keepalive walEnd {m.wal_end:#x}{' reply requested' if m.reply else ''}"
    a = m.action
    if isinstance(a, CopyData):
        return f"CopyData {a.payload[:24]!r} ({len(a.payload)} bytes)"
    if isinstance(a, Raw):
        return f"raw bytes {a.data[:24]!r} ({len(a.data)} bytes)"
    return repr(a)


def _fmt(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _seg_start(lsn: int) -> int:
    return lsn - lsn % SEGSIZE


def _messages(rng: random.Random, start: int, length: int, send_time: int) -> list[Msg]:
    """WAL [start, start+length) cut as a walsender cuts it, keepalives
    (some asking for a reply, then waiting for it) in between."""
    cuts = wal_synth.cut_like_walsender(start, bytes(length), seed=rng.randrange(1 << 30))
    msgs: list[Msg] = []
    t = send_time
    for pos, data in cuts:
        t += rng.randrange(50, 5000)
        msgs.append(Msg("w", src=pos, length=len(data), send_time=t))
        if rng.random() < 0.2:
            reply = rng.random() < 0.5
            msgs.append(Msg("k", wal_end=pos + len(data), send_time=t, reply=reply))
            if reply:
                msgs.append(Msg("action", action=AwaitStatus(1, WAIT)))
    return msgs


def valid_draft(rng: random.Random) -> Draft:
    """A valid case: everything a PostgreSQL 15 walsender with 1 MiB
    segments would say, with one of five endings."""
    ending = rng.choices(["close", "shutdown", "endpos", "timeline", "timeline-direct"],
                         weights=[24, 18, 26, 22, 10])[0]
    segno = rng.choice([rng.randint(1, 300), rng.randint(1, 300), 4095,
                        rng.randint(0x1000, 0xFFFFF)])
    start = segno * SEGSIZE
    sysid = rng.choice([wal_synth.SYSID, rng.randrange(1, 1 << 64)])
    timelines = ending.startswith("timeline")
    # A timeline switch is only followed from a slot's (or a directory's)
    # older timeline: without one, walfast starts on the server's current.
    slot = SLOT if timelines or rng.random() < 0.35 else None
    synchronous = rng.random() < 0.3
    send_time = _SEND_TIME_BASE + rng.randrange(1 << 40)
    streams: list[StreamDraft] = []
    endpos = None

    def stream(timeline: int, st: int, n: int, prefix: bytes = b"") -> StreamDraft:
        wal = bytearray(wal_synth.make_wal(st, n, segment_size=SEGSIZE, timeline=timeline,
                                           sysid=sysid, seed=rng.randrange(1 << 30)))
        wal[:len(prefix)] = prefix
        return StreamDraft(timeline, st, wal, _messages(rng, st, n, send_time), [])

    def end_of(s: StreamDraft) -> list:
        nonlocal endpos
        kind = rng.choice(["close", "shutdown", "endpos"]) if timelines else ending
        if kind == "endpos":
            # Anywhere the stream reaches past (walfast stops once endpos <
            # its write position): the client ends the COPY.
            lo = max(s.start, streams[0].wal_end if len(streams) > 1 else s.start)
            endpos = rng.randrange(lo, s.wal_end)
            return [Linger(LINGER)]
        if kind == "shutdown":
            return [EndCopy(tag="COPY 0", close=True, wait_client=False)]
        return [Close()]

    if ending == "timeline-direct":
        # START_REPLICATION at the very end of timeline 1: the next
        # timeline's row instead of a COPY, then timeline 2 from there.
        first = StreamDraft(1, start, bytearray(), [], [],
                            reply=next_timeline_result(2, start, tag="START_STREAMING"))
        streams.append(first)
        n2 = int(rng.triangular(100_000, 1_500_000, 400_000))
        s2 = stream(2, start, n2)
        streams.append(s2)
        s2.end = end_of(s2)
        switch = start
    else:
        n = int(rng.triangular(150_000, 2_200_000, 600_000))
        s1 = stream(1, start, n)
        streams.append(s1)
        if timelines:
            # The switch point: the end of what was streamed, or a little
            # before it (half a record sent that was not replayed).
            switch = s1.wal_end - rng.choice([0, 0, rng.randrange(1, min(n, 9000))])
            s1.end = [EndCopy(result=next_timeline_result(2, switch), timeout=LINGER)]
            st2 = _seg_start(switch)
            # Timeline 2 repeats timeline 1's WAL of its first segment up to
            # the switch (pages keep timeline 1), then goes on.
            n2 = (s1.wal_end - st2) + int(rng.triangular(40_000, 900_000, 200_000))
            prefix = bytes(s1.wal[st2 - start:switch - start])
            s2 = stream(2, st2, n2, prefix)
            streams.append(s2)
            s2.end = end_of(s2)
        else:
            s1.end = end_of(s1)
    xlogpos = start + rng.randrange(SEGSIZE)
    replies = standard_replies(
        system_identifier=sysid, timeline=2 if timelines else 1,
        xlogpos=streams[-1].wal_end if slot else xlogpos, segment_size="1MB",
        block_size=str(PAGE), data_directory_mode=rng.choice(["0700", "0750"]),
        slot=(start + rng.randrange(SEGSIZE), 1) if slot else None)
    if timelines:
        replies["TIMELINE_HISTORY 2"] = history_result(
            2, f"1\t{_fmt(switch)}\tno recovery target specified\n")
    params = dict(DEFAULT_PARAMETERS)
    return Draft(ending=ending, sysid=sysid, parameters=params, replies=replies,
                 streams=streams, slot=slot, synchronous=synchronous, endpos=endpos)


# --------------------------------------------------------------------------- #
# mutations
# --------------------------------------------------------------------------- #
#
# Each mutation changes a Draft in place and returns what it did, in words
# (the case's description).  Value pools hold what a broken or hostile
# server could put in each kind of column.

INT_VALUES = ["abc", "", " ", "1.5", "-1", "0", "4294967296", "99999999999999999999999",
              "0x10", "+1", "1e3", "\u0661", "1 2", "NaN", "2"]
LSN_VALUES = ["", "garbage", "0/", "/0", "G/0", "1/2/3", "100000000/0", "0/100000000",
              "-1/0", " 0/3000000 ", "0x0/0x3000000", "FFFFFFFF/FFFFFFFF", "0/0",
              "0/3000000\0", "\u0661/0"]
SYSID_VALUES = ["", "abc", "-1", "0", "18446744073709551616", "18446744073709551615", "1e10",
                " 42", "7312345678901234568", "99999999999999999999999999"]
SEGSIZE_VALUES = ["", "abc", "0", "3MB", "1024kB", "2GB", "16MB", "1 MB", "1mb", "-1MB",
                  "99999999999999999999MB", "1048576", "1TB", "2MB", "1MB\0"]
BLCKSZ_VALUES = ["", "abc", "0", "3000", "1024", "16384", "65536", "131072", "8kB", "-8192",
                 "8192.0", "99999999999999999999"]
DIRMODE_VALUES = ["", "abc", "0999", "0750", "-1", "7777777777", "0o700", "700", "0x1C0"]
SLOT_TYPE_VALUES = ["logical", "", "PHYSICAL", "physical ", "\xff"]
FILENAME_VALUES = ["00000003.history", "", "../00000002.history", "00000002.HISTORY",
                   "00000001.history"]
CONTENT_VALUES = ["", "garbage", "\0\0\0", "1\tnot-an-lsn\treason\n"]

#: What each column of each reply holds: the value pool it draws from.
COLUMN_POOLS: dict[tuple[str, int], list[str]] = {
    ("IDENTIFY_SYSTEM", 0): SYSID_VALUES,
    ("IDENTIFY_SYSTEM", 1): INT_VALUES,
    ("IDENTIFY_SYSTEM", 2): LSN_VALUES,
    ("IDENTIFY_SYSTEM", 3): ["postgres", ""],
    ("SHOW wal_segment_size", 0): SEGSIZE_VALUES,
    ("SHOW wal_block_size", 0): BLCKSZ_VALUES,
    ("SHOW data_directory_mode", 0): DIRMODE_VALUES,
    ("READ_REPLICATION_SLOT", 0): SLOT_TYPE_VALUES,
    ("READ_REPLICATION_SLOT", 1): LSN_VALUES,
    ("READ_REPLICATION_SLOT", 2): INT_VALUES,
    ("TIMELINE_HISTORY 2", 0): FILENAME_VALUES,
    ("TIMELINE_HISTORY 2", 1): CONTENT_VALUES,
    ("end-of-timeline", 0): INT_VALUES + ["3", "1"],
    ("end-of-timeline", 1): LSN_VALUES,
}


def _result_targets(d: Draft) -> list[str]:
    """The result sets this draft has (reply keys, and its end-of-timeline
    row)."""
    keys = [k for k, v in d.replies.items() if isinstance(v, ResultSet)]
    if _end_of_timeline(d) is not None:
        keys.append("end-of-timeline")
    return keys


def _end_of_timeline(d: Draft) -> tuple[StreamDraft, int] | None:
    """The stream whose end, or whose START_REPLICATION reply, is the
    end-of-timeline row, and where (-1: the reply)."""
    s = d.streams[0]
    if isinstance(s.reply, ResultSet):
        return s, -1
    for i, a in enumerate(s.end):
        if isinstance(a, EndCopy) and a.result is not None:
            return s, i
    return None


def _get_result(d: Draft, key: str) -> ResultSet:
    if key == "end-of-timeline":
        s, i = _end_of_timeline(d)  # type: ignore[misc]
        return s.reply if i < 0 else s.end[i].result
    return d.replies[key]


def _set_result(d: Draft, key: str, rs: object) -> None:
    if key == "end-of-timeline":
        s, i = _end_of_timeline(d)  # type: ignore[misc]
        if i < 0:
            s.reply = rs
        elif isinstance(rs, ResultSet):
            s.end[i] = EndCopy(result=rs, timeout=LINGER)
        else:
            # The end of the timeline answered with an error, or garbage:
            # after the CopyDones, as a walsender's failing end would.
            s.end[i] = EndCopy(result=None, tag="START_STREAMING", close=False, timeout=LINGER)
            s.end.insert(i + 1, rs)
    else:
        d.replies[key] = rs


def _with_value(rs: ResultSet, col: int, value: object) -> ResultSet:
    """*rs* with *value* in column *col* of its first row (a row is added,
    or padded, when an earlier mutation left none)."""
    rows = [list(r) for r in rs.rows] or [[]]
    rows[0] += [""] * (col + 1 - len(rows[0]))
    rows[0][col] = value
    return ResultSet(rs.columns, rows, rs.tag)


def m_result_value(d: Draft, rng: random.Random) -> str:
    key = rng.choice(_result_targets(d))
    rs = _get_result(d, key)
    col = rng.randrange(max(1, len(rs.columns)))
    value = rng.choice(COLUMN_POOLS.get((key, col), INT_VALUES))
    if key == "end-of-timeline" and col == 1 and rng.random() < 0.3:
        value = _fmt(d.streams[0].wal_end + rng.choice([1, PAGE, SEGSIZE]))   # beyond the end
    _set_result(d, key, _with_value(rs, col, value))
    return f"{key}: column {col} ({_colname(rs, col)}) = {value!r}"


def m_result_null(d: Draft, rng: random.Random) -> str:
    key = rng.choice(_result_targets(d))
    rs = _get_result(d, key)
    col = rng.randrange(max(1, len(rs.columns)))
    _set_result(d, key, _with_value(rs, col, None))
    return f"{key}: column {col} ({_colname(rs, col)}) NULL"


def m_result_shape(d: Draft, rng: random.Random) -> str:
    key = rng.choice(_result_targets(d))
    rs = _get_result(d, key)
    how = rng.choice(["no rows", "two rows", "one column less", "one column more",
                      "DataRow longer than RowDescription", "DataRow shorter",
                      "no columns"])
    cols, rows = list(rs.columns), [list(r) for r in rs.rows]
    if how == "no rows":
        rows = []
    elif how == "two rows":
        rows = rows + rows
    elif how == "one column less":
        cols, rows = cols[:-1], [r[:-1] for r in rows]
    elif how == "one column more":
        cols, rows = cols + [Column("extra")], [r + ["extra"] for r in rows]
    elif how == "DataRow longer than RowDescription":
        rows = [r + ["x"] for r in rows]
    elif how == "DataRow shorter":
        rows = [r[:-1] for r in rows]
    else:
        cols, rows = [], [[] for _ in rows]
    _set_result(d, key, ResultSet(cols, rows, rs.tag))
    return f"{key}: {how}"


def m_result_replaced(d: Draft, rng: random.Random) -> str:
    key = rng.choice(_result_targets(d) + ["START_REPLICATION"])
    how = rng.choice(["error", "fatal", "command-ok", "garbage", "close", "reset",
                      "undefined-file"])
    reply: object
    if how == "error":
        reply = Error("fuzz: the command failed", "XX000")
    elif how == "undefined-file":
        reply = Error('could not open file "pg_wal/00000002.history": No such file or directory',
                      "58P01")
    elif how == "fatal":
        reply = Error("terminating connection due to administrator command", "57P01", "FATAL")
    elif how == "command-ok":
        reply = CommandOK("SELECT")
    elif how == "garbage":
        reply = [Raw(rng.choice(_GARBAGE), ready=False), Close()]
    elif how == "close":
        reply = Close()
    else:
        reply = Close(reset=True)
    if key == "START_REPLICATION":
        d.streams[0].reply = reply
    else:
        _set_result(d, key, reply)
    return f"{key}: answered with {how}"


_GARBAGE = [
    b"\0\0\0\0\0",
    # a DataRow without a RowDescription
    frame(b"D", struct.pack("!h", 1) + struct.pack("!i", 3) + b"abc"),
    frame(b"q", b"what"),                                                  # unknown message type
    b"T\0\0\0\x02",                                                        # impossible length
    frame(b"T", b"\xff\xff"),                                              # negative field count
    frame(b"T", struct.pack("!h", 1) + b"col\0"),                          # truncated field
    frame(b"Z", b"I") * 2,
    b"X" * 64,
]


def _colname(rs: ResultSet, col: int) -> str:
    c = rs.columns[col] if col < len(rs.columns) else "?"
    return c if isinstance(c, str) else c.name


def m_parameters(d: Draft, rng: random.Random) -> str:
    name, value = rng.choice([
        ("integer_datetimes", "off"), ("integer_datetimes", None), ("server_version", "9.6.0"),
        ("server_version", "abc"), ("server_version", None), ("server_version", "100.0"),
        ("server_version", "14.0"), ("server_version", "18.1"), ("client_encoding", "UTF8"),
        ("client_encoding", "LATIN1"), ("client_encoding", "NOT_AN_ENCODING"),
        ("server_encoding", "UTF8"), ("standard_conforming_strings", "off"),
        ("DateStyle", "garbage"),
    ])
    if value is None:
        d.parameters.pop(name, None)
        return f"startup: no {name}"
    d.parameters[name] = value
    return f"startup: {name}={value!r}"


def m_startup(d: Draft, rng: random.Random) -> str:
    how = rng.choice(["fatal", "close", "garbage"])
    if how == "fatal":
        d.startup = Error("sorry, too many clients already", "53300", "FATAL")
    elif how == "close":
        d.startup = Close()
    else:
        d.startup = [Raw(rng.choice(_GARBAGE), ready=False), Close()]
    return f"startup: {how}"


def m_cut_commands(d: Draft, rng: random.Random) -> str:
    # Somewhere in the startup and command replies (a few hundred bytes).
    d.cut_after = rng.randrange(1, 1500)
    return f"connection closed after {d.cut_after} bytes"


def _stream(d: Draft, rng: random.Random) -> StreamDraft:
    """A stream that carries a COPY (bias to the first)."""
    cands = [s for s in d.streams if s.reply is None and s.msgs]
    return cands[0] if len(cands) == 1 or rng.random() < 0.6 else rng.choice(cands)


def _copy_streams(d: Draft) -> bool:
    return any(s.reply is None and s.msgs for s in d.streams)


def _insert(s: StreamDraft, rng: random.Random, msg: Msg) -> int:
    i = rng.randrange(len(s.msgs) + 1)
    s.msgs.insert(i, msg)
    return i


def m_copydata_payload(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    how = rng.choice(["unknown type", "empty", "short XLogData", "keepalive length",
                      "status update from the server", "one byte"])
    if how == "unknown type":
        payload = bytes([rng.choice(b"xrhqW\x00\xffKd")]) + rng.randbytes(rng.randrange(0, 40))
    elif how == "empty":
        payload = b""
    elif how == "short XLogData":
        payload = b"w" + struct.pack(">QQq", s.start, s.wal_end, 0)[:rng.randrange(0, 24)]
    elif how == "keepalive length":
        k = wal_synth.keepalive(s.wal_end, 0, True)
        payload = (k[:rng.randrange(1, 18)] if rng.random() < 0.5
                   else k + b"\0" * rng.randrange(1, 9))
    elif how == "status update from the server":
        payload = b"r" + bytes(33)
    else:
        payload = b"w"
    i = _insert(s, rng, Msg("action", action=CopyData(payload)))
    return f"stream {d.streams.index(s)} message {i}: CopyData {how} {payload[:12]!r}"


def m_frame(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    how = rng.choice(["length too short", "length too long", "length < 4", "foreign message",
                      "notice", "parameter status", "error then more"])
    ws = s.xlogdata()
    if how in ("length too short", "length too long"):
        i = rng.choice(ws)
        payload = s.encode(s.msgs[i])
        delta = rng.choice([1, 2, 7, 25, 100, 8192, 70000])
        length = len(payload) + 4 + (-delta if how == "length too short" else delta)
        length = max(length, 0)
        s.msgs[i] = Msg("action", action=Raw(b"d" + struct.pack("!I", length) + payload))
        return f"stream {d.streams.index(s)} message {i}: CopyData length {how} by {delta}"
    if how == "length < 4":
        data = b"d" + struct.pack("!I", rng.randrange(0, 4))
    elif how == "foreign message":
        data = rng.choice([frame(b"Z", b"I"), frame(b"C", b"COPY 0\0"),
                           frame(b"T", struct.pack("!h", 0)), frame(b"W", struct.pack("!bh", 0, 0)),
                           frame(b"G", struct.pack("!bh", 0, 0)), frame(b"K", bytes(8)),
                           frame(b"v", bytes(8)), frame(b"R", bytes(4)), frame(b"\x00", b"")])
    elif how == "notice":
        data = notice_response("fuzz: a notice in the middle of the stream")
    elif how == "parameter status":
        data = parameter_status("application_name", "fuzz")
    else:
        data = error_response("fuzz: an error that is not the end", "XX000") + \
            copy_data(wal_synth.keepalive(0))
    i = _insert(s, rng, Msg("action", action=Raw(data)))
    return f"stream {d.streams.index(s)} message {i}: {how} {data[:12]!r}"


def m_data_start(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    ws = s.xlogdata()
    how = rng.choice(["gap", "overlap", "drop", "duplicate", "swap", "first offset"])
    i = rng.choice(ws)
    m = s.msgs[i]
    if how in ("gap", "overlap"):
        k = rng.choice([1, 7, 24, PAGE, rng.randrange(1, 100_000), SEGSIZE])
        m.data_start = m.src + (k if how == "gap" else -k)
        m.data_start = max(0, m.data_start)
        return f"stream {d.streams.index(s)} message {i}: dataStart {how} of {k}"
    if how == "drop":
        del s.msgs[i]
    elif how == "duplicate":
        s.msgs.insert(i + 1, Msg("w", src=m.src, length=m.length, send_time=m.send_time))
    elif how == "swap":
        j = ws[ws.index(i) + 1] if ws.index(i) + 1 < len(ws) else ws[0]
        s.msgs[i], s.msgs[j] = s.msgs[j], s.msgs[i]
    else:
        m = s.msgs[ws[0]]
        m.data_start = m.src + rng.choice([PAGE, 1, 40, 24])
        i = ws[0]
    return f"stream {d.streams.index(s)} message {i}: {how}"


def m_absurd_fields(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    i = rng.choice(range(len(s.msgs)))
    m = s.msgs[i]
    big = [0, (1 << 64) - 1, 1 << 63, 1]
    if m.kind == "w":
        m.wal_end = rng.choice(big + [m.src])
    elif m.kind == "k":
        m.wal_end = rng.choice(big)
    else:
        return m_absurd_fields(d, rng) if any(x.kind in "wk" for x in s.msgs) else "nothing"
    m.send_time = rng.choice([0, -(1 << 63), (1 << 63) - 1, -1, 1 << 62])
    return (f"stream {d.streams.index(s)} message {i}: walEnd {m.wal_end:#x} "
            f"sendTime {m.send_time}")


def _pages(s: StreamDraft) -> list[int]:
    first = -(-s.start // PAGE) * PAGE
    return list(range(first, s.wal_end, PAGE))


#: Page header fields: (name, offset, size) in the native (little-endian) layout.
HEADER_FIELDS = {
    "xlp_magic": (0, 2), "xlp_info": (2, 2), "xlp_tli": (4, 4), "xlp_pageaddr": (8, 8),
    "xlp_rem_len": (16, 4), "padding": (20, 4),
    "xlp_sysid": (24, 8), "xlp_seg_size": (32, 4), "xlp_xlog_blcksz": (36, 4),
}


def _bad_value(rng: random.Random, fname: str, old: int, page: int, s: StreamDraft) -> int:
    size = HEADER_FIELDS[fname][1]
    mask = (1 << (8 * size)) - 1
    choices = {
        "xlp_magic": [0, old ^ 1, 0xD10D, 0xD118, 0xFFFF],
        "xlp_info": [old | 0x10, old | 0x8000, old ^ 0x0002, 0xFFFF, old | 0x0001],
        "xlp_tli": [0, s.timeline + 1, 0xFFFFFFFF, 1],
        "xlp_pageaddr": [page + PAGE, page - PAGE, page ^ (1 << 32), 0, page + SEGSIZE],
        "xlp_rem_len": [0xFFFFFFFF, 5, 0],
        "padding": [0xDEADBEEF],
        "xlp_sysid": [old ^ 1, 0, mask],
        "xlp_seg_size": [2 * SEGSIZE, 0, 3, SEGSIZE // 2],
        "xlp_xlog_blcksz": [PAGE // 2, PAGE * 2, 0, 3],
    }[fname]
    return rng.choice(choices) & mask


def _corrupt(s: StreamDraft, page: int, fname: str, value: int) -> None:
    off, size = HEADER_FIELDS[fname]
    i = page - s.start + off
    s.wal[i:i + size] = value.to_bytes(size, "little")


def _header_field(rng: random.Random, page: int, min_offset: int = 0) -> str:
    long = page % SEGSIZE == 0
    names = [n for n, (off, size) in HEADER_FIELDS.items()
             if off + size > min_offset and (long or off < 24)]
    return rng.choice(names)


def m_page_header(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    pages = _pages(s)
    seg_starts = [p for p in pages if p % SEGSIZE == 0]
    page = rng.choice(seg_starts) if seg_starts and rng.random() < 0.3 else rng.choice(pages)
    fname = _header_field(rng, page)
    off, size = HEADER_FIELDS[fname]
    if page + off + size > s.wal_end:
        return "page header beyond the stream: nothing"
    old = int.from_bytes(s.wal[page - s.start + off:page - s.start + off + size], "little")
    value = _bad_value(rng, fname, old, page, s)
    _corrupt(s, page, fname, value)
    return f"stream {d.streams.index(s)} page {_fmt(page)}: {fname} {old:#x} -> {value:#x}"


def _split_at(s: StreamDraft, lsn: int) -> int | None:
    """Make an XLogData message end exactly at *lsn*; returns the index of
    the message that now starts there."""
    for i, m in enumerate(s.msgs):
        if m.kind == "w" and m.src < lsn < m.src + m.length:
            tail = Msg("w", src=lsn, length=m.src + m.length - lsn, send_time=m.send_time)
            m.length = lsn - m.src
            s.msgs.insert(i + 1, tail)
            return i + 1
        if m.kind == "w" and m.src == lsn:
            return i
    return None


def m_split_header(d: Draft, rng: random.Random) -> str:
    """A page header split across two XLogData messages (as when the
    walsender stops at the flush position inside it), then, mostly, wrong in
    its second part: the first part passed no check yet when it arrived."""
    s = _stream(d, rng)
    pages = [p for p in _pages(s) if p + 40 < s.wal_end]
    if not pages:
        return "no page to split: nothing"
    seg_starts = [p for p in pages if p % SEGSIZE == 0]
    page = rng.choice(seg_starts) if seg_starts and rng.random() < 0.4 else rng.choice(pages)
    need = 40 if page % SEGSIZE == 0 else 20
    k = rng.randrange(1, need)
    i = _split_at(s, page + k)
    if i is None:
        return "could not split: nothing"
    what = "valid"
    if rng.random() < 0.8:
        fname = _header_field(rng, page, min_offset=k)
        off, size = HEADER_FIELDS[fname]
        if fname not in ("xlp_rem_len", "padding"):
            old = int.from_bytes(s.wal[page - s.start + off:page - s.start + off + size], "little")
            value = _bad_value(rng, fname, old, page, s)
            _corrupt(s, page, fname, value)
            what = f"{fname} {old:#x} -> {value:#x}"
    if rng.random() < 0.5:
        # Let the client report where it stands between the two parts.
        s.msgs.insert(i, Msg("k", wal_end=page + k, send_time=s.msgs[i].send_time, reply=True))
        s.msgs.insert(i + 1, Msg("action", action=AwaitStatus(1, WAIT)))
        what += ", a reply asked for in between"
    return f"stream {d.streams.index(s)} page {_fmt(page)} header split after {k} bytes: {what}"


def m_flip_bytes(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    n = rng.randrange(1, 6)
    where = []
    for _ in range(n):
        i = rng.randrange(len(s.wal))
        s.wal[i] ^= 1 << rng.randrange(8)
        where.append(_fmt(s.start + i))
    return f"stream {d.streams.index(s)}: bits flipped at {', '.join(where)}"


def m_zero_pages(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    pages = [p for p in _pages(s) if p % SEGSIZE and p + PAGE <= s.wal_end]
    if not pages:
        return "no page to zero: nothing"
    page = rng.choice(pages)
    how = rng.choice(["one page", "header only", "rest of segment"])
    a = page - s.start
    if how == "one page":
        s.wal[a:a + PAGE] = bytes(PAGE)
    elif how == "header only":
        s.wal[a:a + 24] = bytes(24)
    else:
        b = min(len(s.wal), _seg_start(page) + SEGSIZE - s.start)
        s.wal[a:b] = bytes(b - a)
    return f"stream {d.streams.index(s)} page {_fmt(page)}: zeroed ({how})"


def m_stream_error(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    err = rng.choice([
        Error("requested WAL segment 000000010000000000000003 has already been removed",
              "58P01"),
        Error("terminating walsender process due to replication timeout", "XX000"),
        Error("terminating connection due to administrator command", "57P01", "FATAL"),
    ])
    i = rng.randrange(len(s.msgs) + 1)
    s.msgs[i:] = []
    s.end = [err]
    return f"stream {d.streams.index(s)}: ErrorResponse after {i} messages ({err.message[:40]})"


def m_cut_stream(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    # Aim at an interesting byte: inside a frame header, an XLogData header,
    # a page header; or anywhere.
    sizes = []
    for m in s.msgs:
        if m.kind in ("w", "k"):
            sizes.append(5 + len(s.encode(m)))
        elif isinstance(m.action, CopyData):
            sizes.append(5 + len(m.action.payload))
        elif isinstance(m.action, Raw):
            sizes.append(len(m.action.data))
        else:
            sizes.append(0)
    total = sum(sizes)
    if total < 2:
        return "nothing to cut"
    i = rng.randrange(len(sizes))
    before = sum(sizes[:i])
    into = rng.choice([0, 1, 3, 5, 6, 17, 29, 30 + rng.randrange(0, 60),
                       rng.randrange(max(1, sizes[i]))])
    s.cut_after = max(1, min(total - 1, before + into))
    s.cut_reset = rng.random() < 0.25
    how = "reset" if s.cut_reset else "closed"
    return f"stream {d.streams.index(s)}: connection {how} after {s.cut_after} bytes of COPY"


def m_copy_end(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    how = rng.choice(["shutdown mid-stream", "CopyDone then data", "CopyDone, no answer",
                      "end of timeline row mid-stream"])
    i = rng.randrange(len(s.msgs) + 1)
    s.msgs[i:] = []
    if how == "shutdown mid-stream":
        s.end = [EndCopy(tag="COPY 0", close=True, wait_client=False)]
    elif how == "CopyDone then data":
        s.end = [Raw(frame(b"c") + copy_data(wal_synth.keepalive(0))
                     + copy_data(wal_synth.xlogdata(s.start, b"junk"))), Close()]
    elif how == "CopyDone, no answer":
        s.end = [Raw(frame(b"c")), Linger(1.0)]
    else:
        nxt = s.timeline + rng.choice([1, 0, -1 if s.timeline > 1 else 2])
        s.end = [EndCopy(result=next_timeline_result(nxt, s.start + rng.randrange(len(s.wal))),
                         timeout=LINGER)]
    return f"stream {d.streams.index(s)}: {how} after {i} messages"


def m_restream(d: Draft, rng: random.Random) -> str:
    """Valid streams cut differently: one huge message (a segment boundary
    inside), or a stretch of tiny ones (every page header in pieces)."""
    s = _stream(d, rng)
    ws = s.xlogdata()
    how = rng.choice(["one huge message", "tiny messages"])
    if how == "one huge message":
        a = rng.randrange(len(ws))
        b = min(len(ws), a + rng.randrange(2, 40))
        first, last = s.msgs[ws[a]], s.msgs[ws[b - 1]]
        if any(s.msgs[j].data_start is not None for j in ws[a:b]):
            return "stream already mutated: nothing"
        merged = Msg("w", src=first.src, length=last.src + last.length - first.src,
                     send_time=last.send_time)
        keep = [m for j, m in enumerate(s.msgs) if not (ws[a] <= j <= ws[b - 1] and m.kind == "w")]
        pos = ws[a]
        s.msgs = keep[:pos] + [merged] + keep[pos:]
        return f"stream {d.streams.index(s)}: {b - a} messages merged into {merged.length} bytes"
    i = rng.choice(ws)
    m = s.msgs[i]
    span = min(m.length, 24_000)
    pieces = []
    pos = m.src
    while pos < m.src + span:
        n = min(rng.choice([1, 3, 8, 19, 23, 39, 41, 100, 700]), m.src + span - pos)
        pieces.append(Msg("w", src=pos, length=n, send_time=m.send_time))
        pos += n
    if span < m.length:
        pieces.append(Msg("w", src=pos, length=m.src + m.length - pos, send_time=m.send_time))
    s.msgs[i:i + 1] = pieces
    return f"stream {d.streams.index(s)} message {i}: cut into {len(pieces)} pieces"


def m_keepalive_flood(d: Draft, rng: random.Random) -> str:
    s = _stream(d, rng)
    i = rng.randrange(len(s.msgs) + 1)
    n = rng.randrange(20, 200)
    s.msgs[i:i] = [Msg("k", wal_end=s.wal_end, reply=rng.random() < 0.5) for _ in range(n)]
    return f"stream {d.streams.index(s)}: {n} keepalives at message {i}"


def m_endpos(d: Draft, rng: random.Random) -> str:
    s = d.streams[-1]
    if not s.msgs:
        return "nothing"
    ws = s.xlogdata()
    m = s.msgs[rng.choice(ws)]
    d.endpos = rng.choice([m.src, m.src + m.length, m.src + m.length - 1, s.start,
                           _seg_start(s.wal_end - 1), s.wal_end - 1, 1])
    d.endpos = max(1, d.endpos)
    if not any(isinstance(a, Linger) for a in s.end):
        s.end = [Linger(LINGER)]
    return f"--endpos {_fmt(d.endpos)}"


@dataclass(frozen=True)
class Mutation:
    name: str
    weight: float
    apply: Callable[[Draft, random.Random], str]
    applies: Callable[[Draft], bool] = lambda d: True


#: The mutations, with how often each is drawn.
MUTATIONS: list[Mutation] = [
    Mutation("result-value", 10, m_result_value),
    Mutation("result-null", 4, m_result_null),
    Mutation("result-shape", 5, m_result_shape),
    Mutation("result-replaced", 4, m_result_replaced),
    Mutation("startup-parameters", 3, m_parameters),
    Mutation("startup-refused", 1, m_startup),
    Mutation("commands-cut", 1.5, m_cut_commands),
    Mutation("copydata-payload", 6, m_copydata_payload, _copy_streams),
    Mutation("frame", 6, m_frame, _copy_streams),
    Mutation("data-start", 7, m_data_start, _copy_streams),
    Mutation("absurd-fields", 3, m_absurd_fields, _copy_streams),
    Mutation("page-header", 12, m_page_header, _copy_streams),
    Mutation("split-header", 9, m_split_header, _copy_streams),
    Mutation("flip-bytes", 4, m_flip_bytes, _copy_streams),
    Mutation("zero-pages", 3, m_zero_pages, _copy_streams),
    Mutation("stream-error", 3, m_stream_error, _copy_streams),
    Mutation("stream-cut", 7, m_cut_stream, _copy_streams),
    Mutation("copy-end", 3, m_copy_end, _copy_streams),
    Mutation("restream", 4, m_restream, _copy_streams),
    Mutation("keepalive-flood", 1.5, m_keepalive_flood, _copy_streams),
    Mutation("endpos", 2, m_endpos, _copy_streams),
]


def make_case(seed: int, case: int) -> FuzzCase:
    """Case number *case* of *seed*: a valid draft and 0-2 mutations, all
    drawn from one deterministic generator."""
    rng = random.Random(f"walfuzz:{seed}:{case}")
    draft = valid_draft(rng)
    nmut = rng.choices([0, 1, 2], weights=[6, 74, 20])[0]
    done: list[str] = []
    for _ in range(nmut):
        cands = [m for m in MUTATIONS if m.applies(draft)]
        mut = rng.choices(cands, weights=[m.weight for m in cands])[0]
        done.append(f"{mut.name}: {mut.apply(draft, rng)}")
    return FuzzCase(seed, case, draft, done)


# =========================================================================== #
# the oracle
# =========================================================================== #

_SIZE_RE = re.compile(r"\s*(\d+)\s*(B|kB|MB|GB|TB)?\s*")
_SIZE_UNITS = {"": 1, "B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass(frozen=True)
class Rules:
    """What the pages of a stream must hold, from what the server said
    (IDENTIFY_SYSTEM, SHOW) and what the client asked for (the timeline)."""

    timeline: int
    segsize: int
    blcksz: int
    sysid: int          # 0: learned from the first long header
    magic: int = 0      # the server's major's page magic; 0: learned from the first page


def _value(reply: object, row: int = 0, col: int = 0) -> str | None:
    if not isinstance(reply, ResultSet) or len(reply.rows) <= row or len(reply.rows[row]) <= col:
        return None
    v = reply.rows[row][col]
    if v is None:
        return None
    return v.decode("latin-1") if isinstance(v, bytes) else str(v)


def _size(text: str | None) -> int | None:
    if text is None or not text.isascii():
        return None
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        return None
    return int(m.group(1)) * _SIZE_UNITS[m.group(2) or ""]


def server_rules(sc: Scenario) -> tuple[int, int, int] | None:
    """(system identifier, segment size, block size) from the scenario's
    replies when they are a correct walsender's (the right shape and valid
    values: decimal digits only, a system identifier from 1 to 2^64 - 1, a
    timeline from 1 to 2^32 - 1, a segment size a power of two from 1 MiB to
    1 GiB, a block size one from 1 kB to 64 kB); None when a correct
    receiver cannot stream with them."""
    ident = sc.replies.get("IDENTIFY_SYSTEM")
    seg = _size(_value(sc.replies.get("SHOW wal_segment_size")))
    blk = _size(_value(sc.replies.get("SHOW wal_block_size")))
    sysid_text = _value(ident, 0, 0)
    if not (isinstance(ident, ResultSet) and len(ident.rows) == 1 and len(ident.columns) >= 4
            and all(len(r) == len(ident.columns) for r in ident.rows)):
        return None
    if sysid_text is None or not sysid_text.isascii() or not sysid_text.isdigit():
        return None
    sysid = int(sysid_text)
    if not 1 <= sysid < 1 << 64:
        return None
    tli = _value(ident, 0, 1)
    if tli is None or not tli.isascii() or not tli.isdigit() or not 1 <= int(tli) <= 0xFFFFFFFF:
        return None
    if seg is None or not (MiB <= seg <= 1 << 30 and seg & (seg - 1) == 0):
        return None
    if blk is None or not (1024 <= blk <= 65536 and blk & (blk - 1) == 0):
        return None
    return sysid, seg, blk


def _start_position(sc: Scenario, slot: bool) -> int | None:
    """Where a receiver with an empty directory starts: the slot's
    restart_lsn (READ_REPLICATION_SLOT, which servers from 15 on have; with
    a restart_tli), else the server's xlogpos (IDENTIFY_SYSTEM), at its
    segment's start; None when the replies do not say."""
    facts = server_rules(sc)
    if facts is None:
        return None
    lsn = None
    version = re.match(r"(\d+)", sc.parameters.get("server_version", ""))
    if slot and version is not None and int(version.group(1)) >= 15:
        # Both restart_lsn and restart_tli, or the slot says nothing.
        reply = sc.replies.get("READ_REPLICATION_SLOT")
        if _value(reply, 0, 2) is not None:
            lsn = _parse_lsn(_value(reply, 0, 1))
    if lsn is None:
        lsn = _parse_lsn(_value(sc.replies.get("IDENTIFY_SYSTEM"), 0, 2))
    return None if lsn is None else lsn - lsn % facts[1]


def _page_magic(sc: Scenario) -> int:
    """The page magic walfast expects of the server's major (the table in
    walfast.majors); 0 for a major not in it (learned from the first page)."""
    version = re.match(r"(\d+)", sc.parameters.get("server_version") or "")
    return majors.facts(int(version.group(1))).page_magic if version is not None else 0


def _parse_lsn(text: str | None) -> int | None:
    m = re.fullmatch(r"\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*", text or "")
    return None if m is None else int(m.group(1), 16) << 32 | int(m.group(2), 16)


def lenient_rules(sc: Scenario) -> tuple[int, int, int] | None:
    """The same, parsed as leniently as Python's int() (to check the files
    of a receiver that streamed with values :func:`server_rules` refuses);
    None when not even that works."""
    def num(text: str | None) -> int | None:
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None
    sysid = num(_value(sc.replies.get("IDENTIFY_SYSTEM"), 0, 0))
    seg = _size(_value(sc.replies.get("SHOW wal_segment_size")))
    blk = _size(_value(sc.replies.get("SHOW wal_block_size")))
    if sysid is None or seg is None or blk is None or not 0 <= sysid < 1 << 64:
        return None
    return sysid, seg, blk


class PageRulesChecker:
    """The page-header rules, applied to a stream's WAL as it comes (a
    header may arrive in pieces).  Written from xlog_internal.h and the
    receiver's contract: magic the first page's (non-zero); no flag outside
    0x000F; page address = the page's LSN; 1 <= timeline <= the stream's;
    long header exactly at segment starts, with the system identifier,
    segment size and block size; zeroed pages accepted after an
    XLOG_SWITCH, then only zeroed pages to the segment's end."""

    def __init__(self, rules: Rules, start: int) -> None:
        self.r = rules
        self.magic = rules.magic
        self.sysid = rules.sysid
        self.next_page = -(-start // rules.blcksz) * rules.blcksz
        self.zeroed = False

    def need(self, page: int) -> int:
        return 40 if page % self.r.segsize == 0 else 20

    def check(self, page: int, h: bytes) -> str | None:
        """None, or the failed field."""
        r = self.r
        first = page % r.segsize == 0
        if first:
            self.zeroed = False
        elif h[:20] == bytes(20):
            self.zeroed = True
            return None
        if self.zeroed:
            return "zeroed tail"
        magic, info, tli, addr = struct.unpack_from("<HHIQ", h)
        if self.magic == 0:
            self.magic = magic
        if magic == 0 or magic != self.magic:
            return "xlp_magic"
        if info & ~0x000F:
            return "xlp_info"
        if addr != page:
            return "xlp_pageaddr"
        if tli == 0 or tli > r.timeline:
            return "xlp_tli"
        if bool(info & 0x0002) != first:
            return "xlp_info"
        if first:
            sysid, seg, blk = struct.unpack_from("<QII", h, 24)
            if self.sysid == 0:
                self.sysid = sysid
            if sysid != self.sysid:
                return "xlp_sysid"
            if seg != r.segsize:
                return "xlp_seg_size"
            if blk != r.blcksz:
                return "xlp_xlog_blcksz"
        return None


@dataclass
class StreamTruth:
    """What a correct receiver does with one stream: the WAL it writes
    (*accepted*, from *start*), how far it may report flushed (*flushable*:
    not into a page whose header is incomplete), the first thing it must
    refuse (*fault*, at LSN *fault_lsn* for a page), whether it passed
    ``--endpos``."""

    timeline: int
    start: int
    accepted: bytearray = field(default_factory=bytearray)
    flushable: int = 0
    fault: str | None = None
    fault_page: int | None = None
    endpos_reached: bool = False
    ended: str = ""

    @property
    def end(self) -> int:
        return self.start + len(self.accepted)


def replay(raw: bytes, rules: Rules, start: int, endpos: int | None) -> StreamTruth:
    """Replay the bytes a server sent after CopyBothResponse as libpq and a
    correct receiver read them: frames by their length ('d' carries a
    payload, and an empty one is dropped; NoticeResponse, ParameterStatus and
    NotificationResponse are skipped, as libpq's getCopyDataMessage skips
    them; anything else ends the COPY),
    XLogData continuing the stream, every page header checked before a byte
    of its page is accepted, the stop at --endpos after each message and at
    each segment end."""
    t = StreamTruth(rules.timeline, start)
    pages = PageRulesChecker(rules, start)
    hdr = bytearray()
    pos = 0
    write = start

    def stop(reason: str) -> StreamTruth:
        t.ended = reason
        # Flushable: not into a page whose header has not fully arrived.
        t.flushable = min(write, pages.next_page) if hdr else write
        return t

    while True:
        if pos + 5 > len(raw):
            return stop("end of the bytes sent" if pos == len(raw) else "cut inside a frame header")
        mtype = raw[pos:pos + 1]
        (length,) = struct.unpack_from("!I", raw, pos + 1)
        if length < 4:
            t.fault = "frame length < 4"
            return stop(t.fault)
        if pos + 1 + length > len(raw):
            return stop("cut inside a frame")
        body = raw[pos + 5:pos + 1 + length]
        pos += 1 + length
        if mtype in (b"N", b"S", b"A"):
            continue
        if mtype != b"d":
            return stop(f"message {mtype!r} ends the COPY")
        if not body:
            continue        # libpq drops an empty CopyData (fe-protocol3.c)
        kind = body[:1]
        if kind == b"k":
            if len(body) != 18:
                t.fault = "keepalive length"
                return stop(t.fault)
            continue
        if kind != b"w":
            t.fault = f"unknown message type {kind!r}"
            return stop(t.fault)
        if len(body) < 25:
            t.fault = "short XLogData"
            return stop(t.fault)
        (data_start,) = struct.unpack_from(">Q", body, 1)
        if data_start != write:
            t.fault = f"dataStart {_fmt(data_start)}, expected {_fmt(write)}"
            return stop(t.fault)
        data = body[25:]
        i = 0
        while i < len(data):
            # Up to the next page boundary or segment end, whichever first.
            lsn = write
            in_header = lsn < pages.next_page + pages.need(pages.next_page)
            if lsn == pages.next_page or (hdr and in_header):
                # Inside a header being gathered.
                page = pages.next_page
                need = pages.need(page)
                take = min(need - len(hdr), len(data) - i)
                hdr += data[i:i + take]
                if len(hdr) < need:
                    t.accepted += data[i:i + take]
                    write += take
                    i += take
                    break
                bad = pages.check(page, bytes(hdr))
                if bad is not None:
                    # Nothing of this page: take back its header's bytes.
                    del t.accepted[page - start:]
                    write = page
                    t.fault, t.fault_page = f"page {_fmt(page)}: {bad}", page
                    hdr.clear()
                    return stop(t.fault)
                hdr.clear()
                pages.next_page = page + rules.blcksz
                t.accepted += data[i:i + take]
                write += take
                i += take
            else:
                nxt = min(pages.next_page, (write // rules.segsize + 1) * rules.segsize)
                take = min(nxt - write, len(data) - i)
                t.accepted += data[i:i + take]
                write += take
                i += take
            if (write % rules.segsize == 0 and endpos is not None and endpos < write
                    and i < len(data)):
                t.endpos_reached = True
                return stop("--endpos at a segment end")
        if endpos is not None and endpos < write:
            t.endpos_reached = True
            return stop("--endpos")


# --------------------------------------------------------------------------- #
# checking a case
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class Finding:
    kind: str
    detail: str


@dataclass
class RunResult:
    """How walfast ended: exit status (None: no exit within the timeout;
    negative: a signal), its stderr, seconds."""

    rc: int | None
    stderr: str
    seconds: float
    mode: str


_TRACEBACK_RE = re.compile(
    r"Traceback \(most recent call last\)|^\w*(Error|Exception): |invalid literal for int\(\)"
    r"|\b(ValueError|TypeError|KeyError|IndexError|AttributeError|AssertionError|OverflowError|"
    r"UnicodeDecodeError|UnicodeEncodeError|ZeroDivisionError|NameError|struct\.error)\b",
    re.M)
#: A Python repr in a message: bytes (b'...'), an object's default repr.
_REPR_RE = re.compile(r"<[\w.]+ (object )?at 0x[0-9a-f]+>|(?<!\w)b'[^']*'|(?<!\w)b\"[^\"]*\"")
_WAL_NAME_RE = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?")


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if re.match(r"^[\w-]+: error: ", ln)]


def check_case(fc: FuzzCase, sc: Scenario, records: list[ConnectionRecord], run: RunResult,
               directory: Path) -> list[Finding]:
    """Every assertion on one case (see the module's docstring)."""
    out: list[Finding] = []

    def find(kind: str, detail: str) -> None:
        out.append(Finding(kind, detail))

    for rec in records:
        if rec.server_error:
            find("harness-error", rec.server_error.strip().splitlines()[-1])
    last = run.stderr.strip().splitlines()[-1:] or [""]
    # ---- how it ended -------------------------------------------------------------
    if run.rc is None:
        find("hang", f"no exit within the timeout ({run.seconds:.1f} s); last line {last[0]!r}")
    elif run.rc < 0:
        find("signal-death", f"killed by signal {-run.rc}; last line {last[0]!r}")
    elif run.rc not in (0, 1):
        find("bad-exit-status", f"exit status {run.rc}; last line {last[0]!r}")
    m = _TRACEBACK_RE.search(run.stderr)
    if m:
        tail = [ln for ln in run.stderr.strip().splitlines() if ln.strip()][-1:]
        find("traceback", tail[0][:300] if tail else m.group(0))
    errors = _error_lines(run.stderr)
    if run.rc == 1 and not errors:
        find("no-error-message", f"exit status 1, stderr ends {last[0]!r}")
    for ln in errors:
        if _REPR_RE.search(ln):
            find("unclear-error", ln[:300])
            break

    # ---- what the server saw -------------------------------------------------------
    # What a correct receiver does with each COPY, by (connection, stream
    # number): the numbers status updates carry.
    facts = server_rules(sc)
    truths: dict[tuple[int, int], StreamTruth] = {}
    for k, rec in enumerate(records):
        for copy in rec.copies:
            rules = facts
            if facts is None:
                find("streamed-with-invalid-facts",
                     f"{copy.query} answered with COPY although the command results were invalid")
                rules = lenient_rules(sc)
                if rules is None:
                    continue
            sysid, seg, blk = rules
            _, lsn, tli = parse_start_replication(copy.query)
            rules = Rules(tli or 1, seg, blk, sysid, _page_magic(sc))
            truths[k, copy.stream] = replay(bytes(copy.sent), rules, lsn, fc.draft.endpos)
    reached = any(t.endpos_reached for t in truths.values())
    if fc.draft.endpos is not None and not any(rec.copies for rec in records):
        # Already past --endpos where streaming would start: as pg_receivewal,
        # stop before START_REPLICATION (exit 0, nothing written).
        start = _start_position(sc, fc.draft.slot is not None)
        reached = start is not None and fc.draft.endpos < start
    if run.rc == 0 and not reached:
        find("exit-0-not-at-endpos", f"exit status 0; streams ended: "
                                      f"{[t.ended for t in truths.values()]}")

    # ---- the files -------------------------------------------------------------------
    # Files are as long as the server said segments are (1 MiB but for a
    # mutated SHOW wal_segment_size that walfast accepted).
    segsize = (facts or lenient_rules(sc) or (0, SEGSIZE, 0))[1]
    if not (MiB <= segsize <= 1 << 30 and segsize & (segsize - 1) == 0):
        segsize = SEGSIZE
    by_tli: dict[int, StreamTruth] = {}
    for t in truths.values():
        by_tli.setdefault(t.timeline, t)
    good_ends: dict[tuple[int, int], int] = {}   # (timeline, segno) -> end of the good prefix
    empty_partials = 0
    for path in sorted(directory.iterdir()) if directory.exists() else []:
        name = path.name
        if name == ".walfast":
            continue
        mw = _WAL_NAME_RE.fullmatch(name)
        if mw is None:
            if name == "00000002.history":
                reply = sc.replies.get("TIMELINE_HISTORY 2")
                sent = reply.rows[0][1] if isinstance(reply, ResultSet) and reply.rows and \
                    len(reply.rows[0]) > 1 else None
                expect = sent.encode() if isinstance(sent, str) else sent
                if expect is None or path.read_bytes() != expect:
                    find("history-file-wrong", f"{name}: {path.read_bytes()[:80]!r}")
            else:
                find("unexpected-file", name)
            continue
        tli = int(mw.group(1), 16)
        segno = int(mw.group(2), 16) * ((1 << 32) // segsize) + int(mw.group(3), 16)
        data = path.read_bytes()
        if not data and name.endswith(".partial"):
            # The start marker (WalDirectory.mark_start): an empty .partial
            # of the segment streaming starts in, made before
            # START_REPLICATION; one at most.
            empty_partials += 1
            if empty_partials > 1:
                find("bad-file-size", f"{name}: a second empty .partial")
            continue
        if len(data) != segsize:
            find("bad-file-size", f"{name}: {len(data)} bytes")
            continue
        seg_lsn = segno * segsize
        t = by_tli.get(tli)
        exp, exp_off = b"", 0
        if t is not None:
            a, b = max(seg_lsn, t.start), min(seg_lsn + segsize, t.end)
            if a < b:
                exp, exp_off = bytes(t.accepted[a - t.start:b - t.start]), a - seg_lsn
        # The file must be zeros before the stream's start (walfast wrote
        # nothing there in a fresh directory: preallocation), then a prefix
        # of the accepted WAL, then zeros.
        problems = _compare_segment(data, exp_off, exp)
        good_ends[tli, segno] = max(good_ends.get((tli, segno), 0), seg_lsn + problems[0])
        if problems[1] is not None:
            off, what = problems[1]
            lsn = seg_lsn + off
            kind = "wrong-bytes"
            if t is not None and lsn >= t.end:
                kind = "rejected-bytes-written"
                if t.fault_page is not None and _only_header_bytes(data, seg_lsn, t, segsize):
                    kind = "rejected-header-bytes-written"
            find(kind, f"{name} at {_fmt(lsn)} (offset {off}): {what}; "
                       f"stream accepted {_fmt(t.start) if t else '-'}..{_fmt(t.end) if t else '-'}"
                       f"{' fault ' + t.fault if t and t.fault else ''}")
        elif not name.endswith(".partial") and (t is None or not (
                t.start <= seg_lsn and seg_lsn + segsize <= t.end)):
            find("completed-segment-wrong",
                 f"{name} completed, but the stream accepted only "
                 f"{_fmt(t.start) if t else '-'}..{_fmt(t.end) if t else '-'}")

    # How far the files hold each stream's accepted WAL without a hole: what
    # may have been reported flushed.
    matched: dict[int, int] = {}
    for tli, t in by_tli.items():
        pos = t.start
        while pos < t.end:
            seg_end = (pos // segsize + 1) * segsize
            good = good_ends.get((tli, pos // segsize), pos)
            pos = max(pos, min(good, t.end))
            if pos < min(seg_end, t.end):
                break
        matched[tli] = pos

    # ---- what it reported ---------------------------------------------------------------
    report_flush = fc.draft.slot is not None or fc.draft.synchronous
    for k, rec in enumerate(records):
        for su in rec.status_updates:
            t = truths.get((k, su.stream))
            if t is None:
                continue
            if su.write > t.end and _in_rejected_header(su.write, t):
                find("rejected-header-write-reported",
                     f"stream {su.stream}: write {_fmt(su.write)} reported, inside the header "
                     f"of the page that failed ({t.fault})")
            elif su.write > t.end:
                find("write-past-valid", f"stream {su.stream}: write {_fmt(su.write)} reported, "
                                         f"valid WAL ends at {_fmt(t.end)}"
                                         f"{' (' + t.fault + ')' if t.fault else ''}")
            if not report_flush:
                continue
            if su.flush > t.flushable:
                find("flush-past-valid", f"stream {su.stream}: flush {_fmt(su.flush)} reported, "
                                         f"valid WAL with complete headers ends at "
                                         f"{_fmt(t.flushable)}"
                                         f"{' (' + t.fault + ')' if t.fault else ''}")
            elif su.flush > max(t.start, matched.get(t.timeline, t.start)):
                find("flushed-not-in-file", f"stream {su.stream}: flush {_fmt(su.flush)} "
                                            f"reported, the files hold the WAL to "
                                            f"{_fmt(matched.get(t.timeline, t.start))}")
    # One finding per kind per case is enough to reproduce it.
    seen: set[str] = set()
    unique = []
    for f in out:
        if f.kind not in seen:
            seen.add(f.kind)
            unique.append(f)
    return unique


def _compare_segment(data: bytes, exp_off: int, exp: bytes) -> tuple[int, tuple[int, str] | None]:
    """A segment file against the accepted WAL *exp* that belongs at offset
    *exp_off*: before it zeros, then a prefix of it, then zeros.  Returns
    (end of the matching prefix, the first offending offset and what is
    wrong there, or None)."""
    if data[:exp_off].count(0) != exp_off:
        off = next(i for i in range(exp_off) if data[i])
        return exp_off, (off, "non-zero before the stream's start")
    n = len(exp)
    got = data[exp_off:exp_off + n]
    if got == exp:
        m = n
    else:
        # First difference, by halving (bytes comparisons are fast).
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if got[lo:mid + 1] == exp[lo:mid + 1]:
                lo = mid + 1
            else:
                hi = mid
        m = lo
    rest = data[exp_off + m:]
    if rest.count(0) == len(rest):
        return exp_off + m, None
    first = exp_off + m + next(i for i, b in enumerate(rest) if b)
    if first < exp_off + n:
        what = f"{data[first]:#04x} where the stream sent {exp[first - exp_off]:#04x}"
    else:
        what = f"non-zero {data[first:first + 8].hex()} after the accepted WAL"
    return exp_off + m, (first, what)


def _in_rejected_header(lsn: int, t: StreamTruth) -> bool:
    return t.fault_page is not None and t.end == t.fault_page < lsn < t.fault_page + 40


def _only_header_bytes(data: bytes, seg_lsn: int, t: StreamTruth, segsize: int) -> bool:
    """The known engine issue: the only bytes past the accepted WAL are the
    beginning of the rejected page's header (what arrived in an earlier
    message than the part that failed)."""
    page = t.fault_page
    assert page is not None
    if not seg_lsn <= page < seg_lsn + segsize:
        return False
    off = page - seg_lsn
    after = data[off + 40:]
    return after.count(0) == len(after)


# =========================================================================== #
# running cases
# =========================================================================== #

_SCRUB_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE",
              "PGSERVICEFILE", "PGOPTIONS", "PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGAPPNAME",
              "PGCLIENTENCODING", "PGCONNECT_TIMEOUT", "PG_COLOR")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env["PG_COLOR"] = "never"
    return env


def run_cli(args: list[str], timeout: float) -> RunResult:
    """The real ``walfast receive`` command line, in a subprocess."""
    t0 = time.monotonic()
    argv = [sys.executable, "-m", "walfast.cli", "receive", *args]
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                             stdin=subprocess.DEVNULL, env=_clean_env())
        try:
            rc: int | None = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = None
        err.seek(0)
        text = err.read().decode(errors="replace")
    return RunResult(rc, text, time.monotonic() - t0, "cli")


@contextlib.contextmanager
def _capture_fd2() -> Iterator[io.StringIO]:
    """Everything written to file descriptor 2 (Python's sys.stderr and C
    code alike) while in the block, in the StringIO yielded (filled at the
    end)."""
    buf = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield buf
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            buf.write(f.read().decode(errors="replace"))


def run_inprocess(args: list[str]) -> RunResult:
    """``walfast receive`` in this process: the command line's own entry
    point after the program name (``run_frontend``), in the main thread (it
    installs signal handlers).  An exception escaping it is what a user
    would see as a traceback: it is printed into the captured stderr."""
    from walfast.cli import receivewal

    t0 = time.monotonic()
    rc: int | None
    with _capture_fd2() as buf:
        try:
            rc = receivewal.run_frontend(args, receivewal.RECEIVE_FRONTEND)
        except BaseException:      # noqa: BLE001 - that is the finding
            traceback.print_exc(file=sys.stderr)
            rc = 1
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            import logging
            logging.getLogger("walfast").handlers[:] = []
    return RunResult(rc, buf.getvalue(), time.monotonic() - t0, "inproc")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def inproc_worker_main() -> None:
    """A worker process that runs ``walfast receive`` in-process, case after
    case: one JSON list of arguments a line on stdin, one JSON result a line
    on the original stdout (``rc``, ``stderr``, ``seconds``, ``fds``: file
    descriptors left open by the run).  fd 1 goes to /dev/null so that
    nothing walfast prints can mix with the results.

    Why a process of its own, not a thread next to the fake walsender:
    psycopg's ``PGconn.get_result()`` blocks in libpq without releasing the
    GIL, so a server thread in the same process could never answer it.
    """
    import faulthandler

    out = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    # Asked for (SIGUSR1) before a hung worker is killed: where it hung, in
    # its log (the original stderr; a case's stderr is captured).
    log = os.fdopen(os.dup(2), "w", buffering=1)
    faulthandler.register(signal.SIGUSR1, file=log, all_threads=True)
    for line in sys.stdin:
        args = json.loads(line)
        before = _open_fds()
        run = run_inprocess(args)
        out.write(json.dumps(dict(rc=run.rc, stderr=run.stderr, seconds=run.seconds,
                                  fds=_open_fds() - before)) + "\n")


class InprocWorker:
    """One :func:`inproc_worker_main` process, started on first use and
    replaced after a hang or a death.  :meth:`run` returns a
    :class:`RunResult` like :func:`run_cli` (rc None: no answer within the
    timeout, the worker was killed; negative: the worker died of that
    signal)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.proc: subprocess.Popen | None = None
        self.started = 0

    def _spawn(self) -> subprocess.Popen:
        tests_dir = Path(__file__).resolve().parent.parent
        env = _clean_env()
        env["PYTHONPATH"] = os.pathsep.join(
            [str(tests_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.started += 1
        self.log = self.logdir / f"worker-{os.getpid()}-{id(self):x}-{self.started}.log"
        with open(self.log, "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-c",
                 "from helpers.walfuzz import inproc_worker_main; inproc_worker_main()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, text=True,
                bufsize=1)

    def run(self, args: list[str], timeout: float) -> tuple[RunResult, int]:
        """Run one case; returns the result and the file descriptors it
        left open."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._spawn()
        p = self.proc
        assert p.stdin is not None and p.stdout is not None
        t0 = time.monotonic()
        try:
            p.stdin.write(json.dumps(args) + "\n")
            p.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        if not ready:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
            self.kill()
            return RunResult(None, f"(killed after {timeout:.0f} s; the worker's tracebacks "
                                   f"are in {self.log})", time.monotonic() - t0, "inproc"), 0
        line = p.stdout.readline()
        if not line:
            rc = p.wait()
            self._reap()
            return RunResult(rc, f"(the worker died: status {rc}; log {self.log})",
                             time.monotonic() - t0, "inproc"), 0
        d = json.loads(line)
        return RunResult(d["rc"], d["stderr"], d["seconds"], "inproc"), d["fds"]

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self._reap()

    def close(self) -> None:
        """End the worker: EOF on its stdin, then (bounded) wait."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()     # type: ignore[union-attr]
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self._reap()

    def _reap(self) -> None:
        p, self.proc = self.proc, None
        if p is not None:
            p.wait()
            for pipe in (p.stdin, p.stdout):
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()


@dataclass
class CaseResult:
    seed: int
    case: int
    mode: str
    rc: int | None
    seconds: float
    findings: list[Finding]
    mutations: list[str]
    ending: str
    last_line: str
    directory: str | None = None


def run_case(server: FakeWalsender, seed: int, case: int, workdir: Path, *,
             worker: InprocWorker | None = None, timeout: float = 30.0,
             keep: bool | str = "findings") -> CaseResult:
    """Generate case (*seed*, *case*), serve it from *server*, run walfast
    against it in a fresh directory under *workdir* -- in *worker* (in
    process), or as the ``walfast receive`` command line when None -- and
    check it.  The directory is removed unless *keep* is True, or
    ``"findings"`` and there are some."""
    fc = make_case(seed, case)
    sc = fc.scenario()
    server.add(fc.user, sc)
    directory = workdir / f"seed{seed}-case{case}"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    args = fc.args(directory, server.conninfo(fc.user))
    try:
        if worker is not None:
            run, fds = worker.run(args, timeout)
        else:
            run, fds = run_cli(args, timeout), 0
        records = server.wait_records(fc.user, timeout=15.0)
        findings = check_case(fc, sc, records, run, directory)
        if fds > 0:
            findings.append(Finding("fd-leak", f"{fds} file descriptors more open after the run"))
    finally:
        server.remove(fc.user)
    last = run.stderr.strip().splitlines()[-1:] or [""]
    kept = keep is True or (keep == "findings" and bool(findings))
    if not kept:
        shutil.rmtree(directory, ignore_errors=True)
    return CaseResult(seed, case, run.mode, run.rc, run.seconds, findings, fc.mutations,
                      fc.draft.ending, last[0][:300], str(directory) if kept else None)


def run_cases(seed: int, cases: Iterable[int], workdir: Path, *, jobs: int = 2,
              cli: Callable[[int], bool] = lambda case: False, timeout: float = 30.0,
              keep: bool | str = "findings") -> Iterator[CaseResult]:
    """Run many cases, *jobs* at a time, against one fake walsender in this
    process: each of *jobs* threads has an in-process worker
    (:class:`InprocWorker`); cases for which *cli* is true run as the
    ``walfast receive`` command line instead.  Results come as they finish."""
    import queue
    import threading

    todo: queue.Queue = queue.Queue()
    for c in cases:
        todo.put(c)
    results: queue.Queue = queue.Queue()
    logdir = workdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)

    def loop(server: FakeWalsender) -> None:
        worker = InprocWorker(logdir)
        try:
            while True:
                try:
                    c = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    r = run_case(server, seed, c, workdir, timeout=timeout, keep=keep,
                                 worker=None if cli(c) else worker)
                except Exception:  # a harness bug: report it, go on
                    r = CaseResult(seed, c, "cli" if cli(c) else "inproc", None, 0.0,
                                   [Finding("harness-error", traceback.format_exc()[-800:])],
                                   [], "", "")
                results.put(r)
        finally:
            worker.close()
            results.put(None)

    with FakeWalsender() as server:
        threads = [threading.Thread(target=loop, args=(server,), daemon=True)
                   for _ in range(jobs)]
        for t in threads:
            t.start()
        running = len(threads)
        while running:
            r = results.get()
            if r is None:
                running -= 1
            else:
                yield r
        for t in threads:
            t.join()


@dataclass
class Summary:
    """Counts over many cases."""

    cases: int = 0
    passed: int = 0
    by_kind: Counter = field(default_factory=Counter)
    by_mode: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)
    mutations: Counter = field(default_factory=Counter)
    examples: dict[str, list[CaseResult]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, r: CaseResult, examples: int = 5) -> None:
        self.cases += 1
        self.by_mode[r.mode] += 1
        self.exits[r.rc] += 1
        for m in r.mutations:
            self.mutations[m.split(":")[0]] += 1
        if not r.findings:
            self.passed += 1
        for kind in {f.kind for f in r.findings}:
            self.by_kind[kind] += 1
            ex = self.examples.setdefault(kind, [])
            if len(ex) < examples:
                ex.append(r)

"""walfast.receivewal's parsing in-process: the values pg_receivewal's C
library calls would produce (checked against this machine's libc through
ctypes), the replication command texts, the front ends' names.

The side-by-side tests against pg_receivewal itself are tests/test_compat.py;
these cover what its output cannot show (the LSN and level a value parses
to, the command text sent to a server older than 15).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walfast import majors
from walfast.cli.compress_option import parse_compress_option
from walfast.waldir.codecs import CompressionSpec
from walfast.replication.commands import create_replication_slot_command, drop_replication_slot_command
from walfast.cli.usage import UsageError
from walfast.cli.receivewal import (
    RECEIVE_FRONTEND,
    Frontend,
    getopt_long,
    parse_args,
    scan_lsn,
)

_libc = ctypes.CDLL(ctypes.util.find_library("c"))


def _c_scan_lsn(text: str) -> int | None:
    hi, lo = ctypes.c_uint(), ctypes.c_uint()
    n = _libc.sscanf(text.encode(), b"%X/%X", ctypes.byref(hi), ctypes.byref(lo))
    return hi.value << 32 | lo.value if n == 2 else None


_LSNISH = st.text(alphabet="0123456789abcdefABCDEFxX/+- \t", max_size=24)


@settings(max_examples=400, deadline=None)
@given(_LSNISH)
def test_scan_lsn_is_libc_sscanf(text):
    assert scan_lsn(text) == _c_scan_lsn(text)


@pytest.mark.parametrize("text", [
    "0/0", "16/B374D848", "0/0300A0F8", " 1/ 2", "0x/1", "1/0x", "+1/+2", "-1/2",
    "123456789/1", "FFFFFFFFFFFFFFFFFFFF/1", "1/2/3", "1 / 2", "", "/1", "1/", "G/0", "0x",
])
def test_scan_lsn_examples(text):
    assert scan_lsn(text) == _c_scan_lsn(text)


@pytest.mark.parametrize("value, spec", [
    ("", None), ("0", None), ("-0", None), ("none", None), ("none:0", None),
    ("5", CompressionSpec("gzip", 5)), (" 5", CompressionSpec("gzip", 5)),
    ("-1", CompressionSpec("gzip", -1)), ("+3", CompressionSpec("gzip", 3)),
    ("gzip", CompressionSpec("gzip", None)), ("gzip:level=9", CompressionSpec("gzip", 9)),
    # strtol() saturates at LONG_MAX, stored into an int: -1, gzip's default.
    ("99999999999999999999", CompressionSpec("gzip", -1)),
    ("gzip:level=4294967297", CompressionSpec("gzip", 1)),
    ("lz4", CompressionSpec("lz4", None)), ("lz4:0", CompressionSpec("lz4", 0)),
    ("lz4:level=12", CompressionSpec("lz4", 12)),
    ("zstd", CompressionSpec("zstd", None)), ("zstd:-131072", CompressionSpec("zstd", -131072)),
    ("zstd:level=22", CompressionSpec("zstd", 22)), ("zstd:3", CompressionSpec("zstd", 3)),
])
def test_compress_values(value, spec):
    assert parse_compress_option(value) == spec


@pytest.mark.parametrize("value, message", [
    ("zstd:23", 'invalid compression specification: compression algorithm "zstd" expects a '
                "compression level between -131072 and 22 (default at 3)"),
    ("brotli:1", 'unrecognized compression algorithm: "brotli"'),
    ("zstd:workers=4", "invalid compression specification: walfast does not support the zstd "
                       'option "workers" (it compresses each segment in one thread)'),
    ("zstd:long=on", "invalid compression specification: walfast does not support the zstd "
                     'option "long" (it compresses each segment in one thread)'),
])
def test_compress_refusals(value, message):
    with pytest.raises(ValueError) as e:
        parse_compress_option(value)
    assert str(e.value) == message


@pytest.mark.parametrize("major", [*majors.TESTED_MAJORS, majors.NEWEST_TESTED_MAJOR + 1])
@pytest.mark.parametrize("reserve", [False, True], ids=["no-reserve", "reserve"])
def test_create_slot_command_syntax(major, reserve):
    """The parenthesised options where walfast.majors says the server takes
    them (15+, and any newer major), the keyword form before; pg_receivewal's
    own slot (no RESERVE_WAL) is the same text on all.  tests/test_protocol.py
    sends it to a real server of each major (make test's majors runs)."""
    text = create_replication_slot_command("s", reserve_wal=reserve,
                                           server_version=major * 10000 + 1)
    if not reserve:
        assert text == 'CREATE_REPLICATION_SLOT "s" PHYSICAL'
    elif majors.facts(major).parenthesised_slot_options:
        assert text == 'CREATE_REPLICATION_SLOT "s" PHYSICAL (RESERVE_WAL)'
    else:
        assert text == 'CREATE_REPLICATION_SLOT "s" PHYSICAL RESERVE_WAL'


def test_drop_slot_command():
    assert drop_replication_slot_command("s") == 'DROP_REPLICATION_SLOT "s"'


def test_getopt_permutes_and_stops_at_double_dash():
    operands: list[str] = []
    got = [(o.name, v) for o, v in getopt_long(
        ["a", "-nvD", "x", "--slot=s", "b", "--st", "5", "--", "-n"], operands)]
    assert got == [("no-loop", None), ("verbose", None), ("directory", "x"), ("slot", "s"),
                   ("status-interval", "5")]
    assert operands == ["a", "b", "-n"]


def test_parse_args_last_password_option_wins(tmp_path):
    assert parse_args(["-D", str(tmp_path), "-W", "-w"]).password_prompt == -1
    assert parse_args(["-D", str(tmp_path), "-w", "-W"]).password_prompt == 1


def test_parse_args_endpos_zero_is_no_endpos(tmp_path):
    assert parse_args(["-D", str(tmp_path), "-E", "0/0"]).endpos is None
    assert parse_args(["-D", str(tmp_path), "-E", "1/2"]).endpos == 1 << 32 | 2


def test_slot_actions_need_no_directory():
    parsed = parse_args(["--create-slot", "-S", "s", "-Z", "lz4:3"])
    assert parsed.directory is None and parsed.compression == CompressionSpec("lz4", 3)
    with pytest.raises(UsageError) as e:
        parse_args(["-S", "s"])
    assert e.value.message == "no target directory specified" and e.value.hint


@pytest.mark.parametrize("argv0, progname", [
    ("/usr/bin/walfast-receivewal", "walfast-receivewal"),
    ("/opt/pg/bin/pg_receivewal", "pg_receivewal"),
    ("/src/walfast/receivewal.py", "walfast-receivewal"),
])
def test_frontend_names(argv0, progname):
    fe = Frontend.for_receivewal(argv0)
    assert fe.progname == fe.command == fe.application_name == progname
    assert fe.version_line.startswith("pg_receivewal (PostgreSQL) ")
    assert RECEIVE_FRONTEND.command == "walfast receive"

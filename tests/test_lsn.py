"""LSN text forms, segment arithmetic and file names (walfast.lsn)."""

import pytest

from walfast.lsn import (
    format_lsn,
    history_file_name,
    is_valid_segment_size,
    parse_history_file_name,
    parse_lsn,
    parse_segment_file_name,
    segment_file_name,
    segment_offset,
    segment_start,
    segments_per_xlogid,
    segno_of,
)

MB = 1 << 20


@pytest.mark.parametrize(
    "text, value",
    [
        ("0/0", 0),
        ("0/3000000", 0x3000000),
        ("16/B374D848", (0x16 << 32) | 0xB374D848),
        ("16/b374d848", (0x16 << 32) | 0xB374D848),
        ("0/0300A0F8", 0x300A0F8),  # PostgreSQL 19 zero-pads the low half
        ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
        (" 1/0 ", 1 << 32),
    ],
)
def test_parse_lsn(text, value):
    assert parse_lsn(text) == value


@pytest.mark.parametrize("text", ["", "0", "0/", "/0", "x/0", "0/0/0", "123456789/0", "0x1/0", "-1/0"])
def test_parse_lsn_rejects(text):
    with pytest.raises(ValueError, match="could not parse LSN"):
        parse_lsn(text)


def test_format_lsn_round_trip():
    for v in [0, 1, 0x3000000, (0x16 << 32) | 0xB374D848, (1 << 64) - 1]:
        assert parse_lsn(format_lsn(v)) == v
    assert format_lsn(0x3000000) == "0/3000000"
    assert format_lsn((0x16 << 32) | 0xB374D848) == "16/B374D848"
    with pytest.raises(ValueError):
        format_lsn(1 << 64)


def test_segment_sizes():
    assert [s for s in range(20, 32) if is_valid_segment_size(1 << s)] == list(range(20, 31))
    assert not is_valid_segment_size(3 * MB)
    assert not is_valid_segment_size(512 * 1024)
    assert segments_per_xlogid(16 * MB) == 256
    assert segments_per_xlogid(1 * MB) == 4096
    assert segments_per_xlogid(1024 * MB) == 4
    with pytest.raises(ValueError, match="power of two between 1 MB and 1 GB"):
        segno_of(0, 3 * MB)


@pytest.mark.parametrize("segsize_mb", [1, 2, 16, 64, 1024])
def test_segment_math(segsize_mb):
    size = segsize_mb * MB
    lsn = (0x2 << 32) | 0x00ABCDEF
    assert segno_of(lsn, size) * size == segment_start(lsn, size)
    assert segment_start(lsn, size) + segment_offset(lsn, size) == lsn


def test_segment_file_names_match_postgresql():
    # Values as PostgreSQL's XLogFileName prints them.
    assert segment_file_name(1, 1, 16 * MB) == "000000010000000000000001"
    assert segment_file_name(1, 0x100, 16 * MB) == "000000010000000100000000"
    assert segment_file_name(2, 0x1FF, 16 * MB) == "0000000200000001000000FF"
    assert segment_file_name(1, 4096, MB) == "000000010000000100000000"
    assert segment_file_name(1, 4097, MB) == "000000010000000100000001"
    assert segment_file_name(3, 5, 1024 * MB) == "000000030000000100000001"


@pytest.mark.parametrize("segsize_mb", [1, 16, 64, 1024])
def test_segment_file_name_round_trip(segsize_mb):
    size = segsize_mb * MB
    for tli in (1, 2, 0xFFFFFFFF):
        for segno in (0, 1, 255, 256, 4095, 4096, 123456):
            name = segment_file_name(tli, segno, size)
            assert len(name) == 24
            assert parse_segment_file_name(name, size) == (tli, segno)


def test_parse_segment_file_name_rejects():
    with pytest.raises(ValueError):
        parse_segment_file_name("000000010000000000000001.partial", 16 * MB)
    with pytest.raises(ValueError):
        parse_segment_file_name("00000001000000000000000a", 16 * MB)  # lowercase
    with pytest.raises(ValueError, match="for 16 MB segments"):
        parse_segment_file_name("000000010000000000000100", 16 * MB)  # seg part >= 256
    with pytest.raises(ValueError):
        parse_segment_file_name("000000000000000000000001", 16 * MB)  # timeline 0


def test_history_file_names():
    assert history_file_name(2) == "00000002.history"
    assert history_file_name(0x1A) == "0000001A.history"
    assert parse_history_file_name("0000001A.history") == 0x1A
    for bad in ("00000000.history", "0000001a.history", "00000002.history.tmp", "2.history"):
        with pytest.raises(ValueError):
            parse_history_file_name(bad)

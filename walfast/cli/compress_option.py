"""``-Z/--compress METHOD[:DETAIL]``: pg_receivewal's parsing and validation.

The command line's part of compressed output; what the value means for the
files (:class:`walfast.waldir.codecs.CompressionSpec`) belongs to the WAL
directory.  Messages are PostgreSQL 16-18's.
"""

from __future__ import annotations

from walfast.waldir.codecs import CompressionSpec, Method

__all__ = ["parse_compress_option"]


_METHODS: dict[str, Method] = {"gzip": "gzip", "lz4": "lz4", "zstd": "zstd"}

#: Level range and default level per method, as PostgreSQL's
#: validate_compress_specification() checks them: (min, max, default).  A
#: level outside [min, max] is accepted only if it is the default (gzip's -1
#: is zlib's Z_DEFAULT_COMPRESSION, lz4's 0 its fast mode).  zstd's bounds are
#: ZSTD_minCLevel() (-ZSTD_TARGETLENGTH_MAX, -131072 in every libzstd since
#: 1.3.4) and ZSTD_maxCLevel() (22), its default ZSTD_CLEVEL_DEFAULT (3).
_LEVELS: dict[str, tuple[int, int, int]] = {
    "gzip": (1, 9, -1),
    "lz4": (1, 12, 0),
    "zstd": (-(1 << 17), 22, 3),
    "none": (1, 1, 0),  # only reached with level 0 (other levels are refused first)
}


def _c_long(text: str) -> tuple[int, str]:
    """C ``strtol(text, &end, 10)``: (value, rest).  Leading whitespace and
    a sign are accepted; the value saturates at the 64-bit ``long`` range;
    no digits at all gives (0, text)."""
    stripped = text.lstrip(" \t\n\r\f\v")
    sign = stripped[:1] if stripped[:1] in ("+", "-") else ""
    body = stripped[len(sign):]
    digits = len(body) - len(body.lstrip("0123456789"))
    if digits == 0:
        return 0, text
    value = int(body[:digits]) * (-1 if sign == "-" else 1)
    return max(-(1 << 63), min(value, (1 << 63) - 1)), body[digits:]


def _c_int(value: int) -> int:
    """A C ``long`` stored into an ``int`` (two's complement truncation),
    as PostgreSQL does with strtol()'s result for a level."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _integer_value(keyword: str, value: str | None) -> int:
    if value is None:
        raise ValueError(f'compression option "{keyword}" requires a value')
    number, rest = _c_long(value)
    if rest == value or rest:
        raise ValueError(f'value for compression option "{keyword}" must be an integer')
    return _c_int(number)


def _boolean_value(keyword: str, value: str | None) -> bool:
    if value is None or value.lower() in ("yes", "on", "1"):
        return True
    if value.lower() in ("no", "off", "0"):
        return False
    raise ValueError(f'value for compression option "{keyword}" must be a Boolean value')


def _parse_detail(method: str, detail: str) -> tuple[int | None, set[str]]:
    """parse_compress_specification(): a bare integer level, or
    ``keyword[=value]`` items separated by commas.  Returns (level or None,
    the other keywords given)."""
    number, rest = _c_long(detail)
    if rest != detail and not rest:
        return _c_int(number), set()
    level: int | None = None
    others: set[str] = set()
    for item in detail.split(","):
        keyword, has_value, value = item.partition("=")
        if not keyword:
            raise ValueError("found empty string where a compression option was expected")
        given = value if has_value else None
        if keyword == "level":
            level = _integer_value(keyword, given)
        elif keyword == "workers":
            _integer_value(keyword, given)
            others.add(keyword)
        elif keyword == "long":
            _boolean_value(keyword, given)
            others.add(keyword)
        else:
            raise ValueError(f'unrecognized compression option: "{keyword}"')
    return level, others


def _validate(method: str, level: int | None, others: set[str]) -> None:
    """validate_compress_specification()."""
    if method == "none" and level not in (None, 0):
        raise ValueError('compression algorithm "none" does not accept a compression level')
    lo, hi, default = _LEVELS[method]
    if level is not None and not lo <= level <= hi and level != default:
        raise ValueError(f'compression algorithm "{method}" expects a compression level '
                         f"between {lo} and {hi} (default at {default})")
    if "workers" in others and method != "zstd":
        raise ValueError(f'compression algorithm "{method}" does not accept a worker count')
    if "long" in others and method != "zstd":
        raise ValueError(f'compression algorithm "{method}" does not support long-distance mode')


def parse_compress_option(text: str) -> CompressionSpec | None:
    """Parse a ``-Z/--compress`` value as pg_receivewal (PostgreSQL 16-18) does.

    ``METHOD[:DETAIL]`` with METHOD ``gzip``, ``lz4``, ``zstd`` or ``none``
    and DETAIL a level (``5``) or ``level=5``; or a bare integer: 0 means no
    compression, anything else gzip at that level (the PostgreSQL 14 form).
    Returns None for no compression; a level that is not given is None
    (the method's default).

    Raises ``ValueError`` with pg_receivewal's message, as printed after
    ``error: ``: ``unrecognized compression algorithm: "%s"`` or
    ``invalid compression specification: ...``.

    Differences from pg_receivewal, on purpose:

    * zstd is accepted (pg_receivewal 15-18 rejects it: "compression with
      ZSTD is not yet supported"); its ``workers`` and ``long`` options are
      refused, walfast compresses each segment in one thread with the plain
      zstd frame format.
    * The ``long`` keyword is PostgreSQL 16's: pg_receivewal 15 reports it
      as an unrecognized compression option.
    """
    number, rest = _c_long(text)
    if not rest:  # a bare integer (strtol consumed everything, or nothing at all)
        method, detail = ("none", None) if number == 0 else ("gzip", text)
    else:
        method, sep, after = text.partition(":")
        detail = after if sep else None
    if method not in _LEVELS:
        raise ValueError(f'unrecognized compression algorithm: "{method}"')
    level: int | None = None
    others: set[str] = set()
    try:
        if detail is not None:
            level, others = _parse_detail(method, detail)
        _validate(method, level, others)
    except ValueError as e:
        raise ValueError(f"invalid compression specification: {e}") from None
    if method == "none":
        return None
    if others:
        raise ValueError(
            f"invalid compression specification: walfast does not support the zstd "
            f'option "{sorted(others)[0]}" (it compresses each segment in one thread)')
    return CompressionSpec(method=_METHODS[method], level=level)

# Error reporting across the GIL boundary.
#
# The byte work runs without the GIL, where no Python exception can be
# created.  A nogil function that fails fills an ErrInfo and returns -1; the
# method that called it re-acquires the GIL and turns the record into the
# exception (errors.py) with raise_errinfo().  Nothing is printed or dropped.
#
# Each component keeps its own record (the parser, the writer, each sink,
# each segment file); when a failure crosses from one to the caller above,
# the record is copied up (a cold path), so the caller raises from one place.

import os as _os

from walfast.errors import (
    ProtocolError, SegmentError, WalfastError, WalGapError, WalPageError, partial_size_error,
)
from walfast.lsn import format_lsn as _fmt


cdef enum ErrCode:
    ERR_NONE = 0
    ERR_OS            # a syscall failed: what + errno (+ file)
    ERR_PROTOCOL      # malformed message: reason, msgtype, length, lsn
    ERR_GAP           # dataStart != expected: expected, found
    ERR_PAGE          # page header check: field, lsn, expected, found (+ file)
    ERR_SEGMENT_SIZE  # existing .partial of a wrong size: file, found, expected
    ERR_MID_SEGMENT   # asked to start mid-segment without the segment's file
    ERR_STATE         # used after close() or after an earlier error: reason
    ERR_SINK          # the compressing worker failed: its exception is queue.error


cdef struct ErrInfo:
    ErrCode code
    int err_no
    const char *what          # static C string: operation or reason
    const char *field         # static C string: page header field
    char fname[48]            # segment file name, relative to the directory
    int msgtype               # message type byte, -1 when unknown
    int64_t length
    uint64_t lsn
    uint64_t expected
    uint64_t found
    void *queue               # ERR_SINK: the ChunkQueue (borrowed; its owner outlives the record)


cdef inline void err_set_fname(ErrInfo *e, const char *fname) noexcept nogil:
    cdef size_t n = strlen(fname)
    if n >= sizeof(e.fname):
        n = sizeof(e.fname) - 1
    memcpy(e.fname, fname, n)
    e.fname[n] = 0


cdef inline int err_os(ErrInfo *e, const char *what, int err_no, const char *fname) noexcept nogil:
    """Record a failed syscall (*fname* NULL: not about a file); returns -1."""
    e.code = ERR_OS
    e.what = what
    e.err_no = err_no
    e.fname[0] = 0
    if fname != NULL:
        err_set_fname(e, fname)
    return -1


cdef inline int err_state(ErrInfo *e, const char *reason) noexcept nogil:
    e.code = ERR_STATE
    e.what = reason
    return -1


cdef str _msgtype_text(int t):
    if t < 0:
        return "(none)"
    if 0x20 < t < 0x7F:
        return f"'{chr(t)}'"
    return f"0x{t:02X}"


cdef object errinfo_exception(ErrInfo *e, object directory):
    """The exception that *e* describes."""
    cdef str fname = e.fname.decode("ascii", "replace")
    cdef object path = _os.path.join(directory, fname) if fname else None
    cdef str what = e.what.decode() if e.what != NULL else ""
    if e.code == ERR_OS:
        return OSError(e.err_no, f"{what}: {_os.strerror(e.err_no)}", path)
    if e.code == ERR_GAP:
        return WalGapError(e.expected, e.found)
    if e.code == ERR_PROTOCOL:
        return ProtocolError(
            f"{what}: message type {_msgtype_text(e.msgtype)}, length {e.length} bytes, "
            f"after WAL received up to {_fmt(e.lsn)}",
            msgtype=chr(e.msgtype) if e.msgtype >= 0 else None,
            length=e.length,
            lsn=e.lsn,
        )
    if e.code == ERR_PAGE:
        field = e.field.decode()
        return WalPageError(
            f"invalid WAL page header at {_fmt(e.lsn)} in \"{path}\": {field} is "
            f"0x{e.found:X}, expected 0x{e.expected:X}. The server sent WAL that does not "
            f"fit this stream (another cluster, segment size or timeline) or the data was "
            f"damaged; nothing from {_fmt(e.lsn)} on was reported flushed",
            lsn=e.lsn, field=field, expected=e.expected, found=e.found, filename=path,
        )
    if e.code == ERR_SEGMENT_SIZE:
        return partial_size_error(path, e.found, e.expected)
    if e.code == ERR_MID_SEGMENT:
        return SegmentError(
            ENOENT,
            f"cannot start writing at {_fmt(e.lsn)}, in the middle of a segment, because the "
            f"segment's .partial file \"{path}\" does not exist or is empty; start streaming at the "
            f"segment's beginning, {_fmt(e.expected)}",
            path,
        )
    if e.code == ERR_SINK and e.queue != NULL:
        exc = getattr(<object>e.queue, "error")
        if exc is not None:
            return exc
    return WalfastError(what or "unknown engine error")


cdef int raise_errinfo(ErrInfo *e, object directory) except -1:
    """Raise the exception that *e* describes (always raises)."""
    raise errinfo_exception(e, directory)

# cython: language_level=3
"""walfast._core: the compiled hot path.

Turns the physical replication stream into WAL segment files.  It owns the
byte work and the syscalls for writing; it does not own sockets, timers or
policy (when to flush, when to report), which belong to the control layer.

* :class:`SegmentWriter` (``_segwriter.pxi``): preallocated segment files
  written with pwrite, batched fdatasync, durable completion, page-header
  checks before bytes are written.
* :class:`PageCheck`, :func:`long_page_header` (``_pages.pxi``): the WAL
  page-header rules, defined once (the writer's, the resume scan's, the
  directory identity check's).
* :class:`ChunkQueue` (``_chunkqueue.pxi``): the bounded hand-over of WAL
  to the compressing worker thread when output is compressed.
* :class:`StreamParser` (``_frames.pxi``): CopyData frames and payloads
  (XLogData, keepalive) fed into a writer without a Python object per message.
* :class:`CopyStream` (``_copystream.pxi``): the receive loop over libpq:
  reads CopyData, applies the flush policy, sends status updates.
* :func:`encode_status_update` (below): the standby status update ('r').

All byte copies and syncs run without the GIL; errors found there are
recorded and raised as exceptions once the GIL is held again (``_errinfo.pxi``).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

include "_cdefs.pxi"
include "_errinfo.pxi"
include "_pages.pxi"
include "_chunkqueue.pxi"
include "_segwriter.pxi"
include "_frames.pxi"
include "_progress.pxi"
include "_copystream.pxi"


# Standby status update (client -> server), 34 bytes:
#   'r' | write LSN | flush LSN | apply LSN | clock (us since 2000) | uint8 replyRequested
cdef void encode_status(unsigned char *out, uint64_t write_lsn, uint64_t flush_lsn,
                        uint64_t apply_lsn, int64_t now, bint reply) noexcept nogil:
    out[0] = MSG_STATUS_UPDATE
    wf_put_be64(out + 1, write_lsn)
    wf_put_be64(out + 9, flush_lsn)
    wf_put_be64(out + 17, apply_lsn)
    wf_put_be64(out + 25, <uint64_t>now)
    out[33] = 1 if reply else 0


def encode_status_update(uint64_t write_lsn, uint64_t flush_lsn, uint64_t apply_lsn,
                         int64_t send_time, bint reply_requested=False):
    """Encode a standby status update ('r', 34 bytes) as a CopyData payload.

    *flush_lsn* must be a position whose bytes are durable (or 0 to report
    none); *send_time* is in microseconds since 2000-01-01 UTC (see
    :func:`pg_time_now`).
    """
    cdef bytes out = PyBytes_FromStringAndSize(NULL, STATUS_UPDATE_LEN)
    encode_status(<unsigned char *>PyBytes_AS_STRING(out), write_lsn, flush_lsn,
                  apply_lsn, send_time, reply_requested)
    return out


cdef int64_t pg_now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return (<int64_t>ts.tv_sec - PG_EPOCH_OFFSET_S) * 1000000 + ts.tv_nsec // 1000


def pg_time_now():
    """The current time in PostgreSQL's wire form: microseconds since
    2000-01-01 00:00:00 UTC."""
    return pg_now()


def start_writeback(int fd, uint64_t offset, uint64_t nbytes):
    """Start writeback of *nbytes* at *offset* of *fd* without waiting for
    it (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which Python's os lacks),
    as SegmentWriter does every WRITE_BEHIND bytes: the disk works while we
    go on, and the fdatasync that makes the file durable has little left to
    do.  Durability still comes only from fdatasync; errors surface there,
    so this one's result is not checked."""
    with nogil:
        sync_file_range(fd, <off_t>offset, <off_t>nbytes, SYNC_FILE_RANGE_WRITE)


#: Bytes written between two writeback starts (SegmentWriter and the
#: compressing worker).
WRITE_BEHIND_BYTES = WRITE_BEHIND

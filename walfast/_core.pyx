# cython: language_level=3
"""walfast._core: the compiled hot path.

Turns a started physical replication COPY into WAL segment files.  It owns
the receive loop (reading CopyData through psycopg's libpq, waiting on the
socket, the status-update timer, the flush and report policy, the standby
status updates), the byte work (parsing, page-header checks, splitting at
segment boundaries) and the segment files' life (create, write, sync,
complete, close), for plain and compressed output.  It does not connect,
choose where to start, follow timelines, reconnect, handle signals, scan
directories, compress or log: the control layer (walfast.stream,
walfast.waldir) does, between the loop's returns.

One unit per concern, each a ``.pxi`` included below:

* ``_cdefs.pxi``: C declarations, byte-order helpers, protocol constants.
* ``_errinfo.pxi``: errors recorded without the GIL, raised with it.
* ``_pages.pxi``: the WAL page-header rules (:class:`PageCheck`,
  :func:`long_page_header`).
* ``_segfile.pxi``: one segment file's life (:class:`SegmentFile`).
* ``_sinks.pxi``: where checked WAL goes (:class:`WalSink`); plain segment
  files (:class:`SegmentFiles`).
* ``_chunkqueue.pxi``: the compressing worker's queue (:class:`ChunkQueue`,
  the other sink).
* ``_segwriter.pxi``: :class:`SegmentWriter`, the one loop that checks WAL
  and splits it at segment boundaries into a sink.
* ``_frames.pxi``: :class:`StreamParser`, CopyData payloads (XLogData,
  keepalive) into a writer without a Python object per message.
* ``_progress.pxi``: :class:`ProgressState`, the shared progress state.
* ``_copystream.pxi``: :class:`CopyStream`, the receive loop.
* here: :func:`encode_status_update` (the standby status update, 'r').

All byte copies and syncs run without the GIL; errors found there are
recorded and raised as exceptions once the GIL is held again.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

include "_cdefs.pxi"
include "_errinfo.pxi"
include "_pages.pxi"
include "_segfile.pxi"
include "_sinks.pxi"
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

# CopyStream: the compiled receive loop.
#
# Reads CopyData through libpq (PQgetCopyData), so TLS, GSS and unix sockets
# work unchanged, feeds each payload to a StreamParser, waits on the socket
# (and on the compressing worker's eventfd), keeps the status-update timer,
# applies the flush and report policy and answers the server with standby
# status updates, all without the GIL and without a Python object per
# message.  It returns to Python only per tick (at most max_seconds), at the
# end of the COPY, on a connection error, when the stop position is reached
# or when a signal interrupts the wait, so Python's signal handlers run
# promptly.  Errors of the parser, writer or worker end the run and are
# raised by run(); the event it returns never carries one.
#
# libpq's function pointers come from the library psycopg loaded (the
# control layer passes its path to load_libpq): the extension never links
# libpq itself.

from libc.stdint cimport UINT64_MAX, uintptr_t

cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    char *dlerror()
    enum:
        RTLD_NOW
        RTLD_NOLOAD

cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN
        POLLOUT
        POLLERR
        POLLHUP

ctypedef int (*pq_get_copy_data_t)(void *conn, char **buffer, int async_) noexcept nogil
ctypedef int (*pq_conn_int_t)(void *conn) noexcept nogil
ctypedef void (*pq_freemem_t)(void *ptr) noexcept nogil
ctypedef int (*pq_put_copy_data_t)(void *conn, const char *buffer, int nbytes) noexcept nogil
ctypedef int (*pq_lib_version_t)() noexcept nogil

cdef struct LibPQ:
    void *handle
    pq_get_copy_data_t get_copy_data
    pq_conn_int_t consume_input
    pq_freemem_t freemem
    pq_put_copy_data_t put_copy_data
    pq_conn_int_t flush
    pq_conn_int_t socket
    pq_lib_version_t lib_version

cdef LibPQ _pq


cdef void *_sym(void *handle, const char *name) except NULL:
    cdef void *p = dlsym(handle, name)
    if p == NULL:
        raise RuntimeError(f"libpq has no symbol {name.decode()}")
    return p


def load_libpq(path):
    """Resolve the libpq functions the receive loop calls from the library at
    *path*, which must already be loaded (psycopg's).  Returns its
    ``PQlibVersion()``."""
    cdef bytes bpath = _os.fsencode(path)
    cdef void *h = dlopen(bpath, RTLD_NOW | RTLD_NOLOAD)
    if h == NULL:
        err = dlerror()
        raise RuntimeError(f"cannot use libpq {path!r}: it is not loaded in this process"
                           + (f" ({err.decode()})" if err != NULL else ""))
    _pq.get_copy_data = <pq_get_copy_data_t>_sym(h, b"PQgetCopyData")
    _pq.consume_input = <pq_conn_int_t>_sym(h, b"PQconsumeInput")
    _pq.freemem = <pq_freemem_t>_sym(h, b"PQfreemem")
    _pq.put_copy_data = <pq_put_copy_data_t>_sym(h, b"PQputCopyData")
    _pq.flush = <pq_conn_int_t>_sym(h, b"PQflush")
    _pq.socket = <pq_conn_int_t>_sym(h, b"PQsocket")
    _pq.lib_version = <pq_lib_version_t>_sym(h, b"PQlibVersion")
    _pq.handle = h
    return _pq.lib_version()


#: While paused (the disk is full), how often the blocked write is tried
#: again, and how often a status update goes out unasked.
cdef int64_t PAUSED_RETRY_US = 1000000
cdef int64_t PAUSED_STATUS_US = 10000000

# What ended a run.
cdef enum StreamEvent:
    EV_NONE = -1          # (internal) nothing yet: go on
    EV_TICK = 0           # max_seconds elapsed: Python's turn (logs, signals, stop checks)
    EV_COPY_DONE = 1      # the server ended the COPY (end of timeline or shutdown)
    EV_CONN_ERROR = 2     # libpq reported an error: see the connection's error message
    EV_STOP_REACHED = 3   # the writer's stop position (--endpos) was passed
    EV_INTERRUPTED = 4    # a signal interrupted the wait
    EV_FAILED = 5         # (internal) an error is recorded in CopyStream._failure: run() raises it
    EV_TIMEOUT = 6        # no message from the server for receive_timeout seconds

TICK = EV_TICK
COPY_DONE = EV_COPY_DONE
CONN_ERROR = EV_CONN_ERROR
STOP_REACHED = EV_STOP_REACHED
TIMEOUT = EV_TIMEOUT
INTERRUPTED = EV_INTERRUPTED


@cython.final
cdef class CopyStream:
    """Receive a started physical replication COPY into a StreamParser.

    CopyStream(pgconn_ptr, parser, *, report_flush, synchronous,
               status_interval, receive_timeout=0, progress=None)

    *pgconn_ptr* is psycopg's ``conn.pgconn.pgconn_ptr`` after
    ``START_REPLICATION`` returned COPY_BOTH; :func:`load_libpq` must have
    been called with psycopg's libpq.

    Policy, as pg_receivewal (receivelog.c) with one addition:

    * status updates: one right away (so the server can count us as a
      synchronous standby), every *status_interval* seconds (0: none), at
      once when a keepalive asks for one, and after every flush that
      advanced the flush position when *report_flush*;
    * the reported flush position is the writer's :attr:`flush_lsn` (bytes
      synced) when *report_flush* (a slot or ``--synchronous``), else 0;
      never more than :attr:`flush_limit` (``--archive``: what the archive
      holds; 0 reports no flush position at all);
    * *synchronous*: at the end of each batch of received messages, a
      status update with the new write position, then the flush and one
      with the new flush position (pg_receivewal sends only the second);
    * a keepalive asking for a reply flushes first when reporting flush;
    * addition: when reporting flush, each periodic status update flushes
      first, so the slot advances every interval instead of once a segment;
    * addition, as the walreceiver's ``wal_receiver_timeout``: after half of
      *receive_timeout* seconds (0: never) without any message from the
      server, a status update asks for a reply (the server answers with a
      keepalive, so a healthy idle server always answers); after the whole
      of it, :meth:`run` ends with :data:`TIMEOUT`.  Meanwhile the progress
      state says ``silent``;
    * addition: when the writer is blocked (the next segment file cannot be
      created: the disk is full, or would be fuller than ``--min-free``),
      the loop stops reading (TCP slows the server down) but keeps flushing
      and sending status updates, so the connection stays up; it tries
      again every second and goes on by itself once there is space.
      Meanwhile :attr:`paused` is true (why: :attr:`pause_error`), the
      progress state says ``paused`` and the receive timeout is suspended.

    With compressed output (the writer's sink is a :class:`ChunkQueue`) a
    flush is a request to the compressing worker; the loop also polls the
    queue's eventfd and reports the new flush position as soon as the worker
    synced it.  A failure of the parser, the writer or the worker ends
    :meth:`run` with its exception.

    *progress*, a :class:`ProgressState`, is published to right after each
    fdatasync and at the end of each batch (see :meth:`_publish`).
    """

    cdef void *_conn
    cdef int _sock
    cdef readonly StreamParser parser
    cdef SegmentWriter _w
    cdef bint _report_flush
    cdef bint _synchronous
    cdef int64_t _status_interval     # microseconds; 0 = no periodic updates
    cdef ErrInfo *_failure            # EV_FAILED: the parser's or the writer's record
    cdef int64_t _last_status         # pg time of the last update sent; 0 = none yet
    cdef uint64_t _sent_flush
    cdef uint64_t _flush_limit        # the reported flush is at most this
    cdef bint _out_pending            # PQflush could not send everything yet
    cdef uint64_t _status_updates
    cdef int64_t _last_receipt
    cdef char *_pending               # a payload the writer was blocked in (libpq's; freed after)
    cdef int _pending_n
    cdef int64_t _receive_timeout     # microseconds; 0 = none
    cdef int64_t _last_message        # pg time the last message arrived (or the stream began)
    cdef bint _pinged                 # a reply was asked for since the last message
    # Shared progress state (None/NULL: none) and the counts already added to it.
    cdef ProgressState _progress
    cdef wf_progress *_shm
    cdef uint64_t _pub_messages, _pub_bytes, _pub_segments, _pub_status

    def __init__(self, pgconn_ptr, StreamParser parser not None, *, report_flush,
                 synchronous, status_interval, receive_timeout=0,
                 ProgressState progress=None):
        if _pq.handle == NULL:
            raise RuntimeError("walfast._core.load_libpq() has not been called")
        if status_interval < 0:
            raise ValueError("status_interval must be >= 0")
        if receive_timeout < 0:
            raise ValueError("receive_timeout must be >= 0")
        self._receive_timeout = <int64_t>(receive_timeout * 1000000)
        self._last_message = pg_now()
        self._conn = <void *><uintptr_t>pgconn_ptr
        self._sock = _pq.socket(self._conn)
        if self._sock < 0:
            raise RuntimeError("the connection has no socket (closed?)")
        self.parser = parser
        self._w = parser.writer
        self._report_flush = report_flush
        self._flush_limit = UINT64_MAX
        self._synchronous = synchronous
        self._status_interval = <int64_t>(status_interval * 1000000)
        if progress is not None:
            self._progress = progress
            self._shm = progress.shm()
            self._pub_messages = parser._messages
            self._pub_bytes = parser._wal_bytes
            self._pub_segments = self._w._prog.completed

    def __dealloc__(self):
        if self._pending != NULL:
            _pq.freemem(self._pending)

    cdef void _set_paused(self, char *buf, int n) noexcept nogil:
        """Keep the payload the writer was blocked in (buf NULL: resumed).
        A full disk shows in the progress state; a compressing worker that
        is behind (no error recorded) is ordinary backpressure and does not."""
        cdef bint no_space = self._w._err.code != ERR_NONE
        if self._pending != NULL and buf == NULL:
            _pq.freemem(self._pending)
        if self._shm != NULL and (no_space or buf == NULL):
            wf_progress_set_state(self._shm, WF_STATE_PAUSED if buf != NULL
                                  else WF_STATE_STREAMING)
        self._pending = buf
        self._pending_n = n

    cdef StreamEvent _writer_failed(self) noexcept nogil:
        self._failure = &self._w._err
        return EV_FAILED

    cdef StreamEvent _flush(self) noexcept nogil:
        """The writer's flush; when it did fdatasync, publish the new flush
        position and its latency at once (flushed never ahead of the disk).
        EV_NONE, or EV_FAILED."""
        cdef uint64_t syncs = self._w._prog.syncs
        cdef int64_t t0 = wf_monotonic_us() if self._shm != NULL else 0
        if self._w._flush(False) < 0:
            return self._writer_failed()
        if self._shm != NULL and self._w._prog.syncs != syncs:
            wf_progress_flushed(self._shm, self._w._sink_lsn, self._w._flush_lsn,
                                <uint64_t>(wf_monotonic_us() - t0))
        return EV_NONE

    cdef void _publish(self) noexcept nogil:
        """Once per batch: positions, the server's walEnd and times, counters.
        flushed only ever comes from the writer's flush_lsn, and only when it
        means fdatasync'ed (not --no-sync)."""
        cdef wf_batch b
        if self._shm == NULL:
            return
        b.written_lsn = self._w._sink_lsn
        b.flushed_lsn = self._w._flush_lsn if self._w._sync else 0
        b.new_messages = self.parser._messages != self._pub_messages
        b.latest_end_lsn = self.parser._wal_end
        b.latest_end_time = self.parser._wal_end_time
        b.last_msg_send_time = self.parser._send_time
        b.caught_up_time = self.parser._caught_up_time
        b.last_msg_receipt_time = self._last_receipt
        b.messages = self.parser._messages - self._pub_messages
        b.wal_bytes = self.parser._wal_bytes - self._pub_bytes
        b.segments_completed = self._w._prog.completed - self._pub_segments
        b.status_updates = self._status_updates - self._pub_status
        self._pub_messages = self.parser._messages
        self._pub_bytes = self.parser._wal_bytes
        self._pub_segments = self._w._prog.completed
        self._pub_status = self._status_updates
        wf_progress_publish(self._shm, &b, pg_now())

    cdef inline uint64_t _reported_flush(self) noexcept nogil:
        if not self._report_flush:
            return 0
        return self._w._flush_lsn if self._w._flush_lsn < self._flush_limit \
            else self._flush_limit

    cdef int _send_status(self, bint reply=False) noexcept nogil:
        """Queue and flush a standby status update (*reply*: asking the
        server to answer at once); -1 on a libpq error."""
        cdef unsigned char msg[STATUS_UPDATE_LEN]
        cdef int64_t now = pg_now()
        cdef uint64_t flush = self._reported_flush()
        cdef int rc
        encode_status(msg, self._w._sink_lsn, flush, 0, now, reply)
        if _pq.put_copy_data(self._conn, <const char *>msg, STATUS_UPDATE_LEN) != 1:
            return -1
        rc = _pq.flush(self._conn)
        if rc < 0:
            return -1
        self._out_pending = rc == 1
        self._last_status = now
        self._sent_flush = flush
        self._status_updates += 1
        return 0

    cdef StreamEvent _after_batch(self) noexcept nogil:
        """Flush and report as the policy says.  EV_NONE, EV_CONN_ERROR or
        EV_FAILED."""
        cdef bint send
        cdef bint pending
        cdef int64_t now = pg_now()
        # Compressed output: take in what the worker made durable (or its
        # failure) first.
        if self._w._poll(now) < 0:
            return self._writer_failed()
        send = self._last_status == 0
        pending = self._w._write_lsn > self._w._flush_lsn
        if self._synchronous and pending:
            if self._w.sink._wakeup_fd < 0 and self._send_status() < 0:
                # As the walreceiver (XLogWalRcvSendReply after the write,
                # before XLogWalRcvFlush): the written position goes out
                # before the fdatasync, so synchronous_commit=remote_write
                # commits do not wait for the disk.  Plain files only: a
                # compressing queue's position is not written to the OS yet.
                return EV_CONN_ERROR
            if self._flush() == EV_FAILED:
                return EV_FAILED
            send = True
        if self.parser._reply_requested:
            self.parser._reply_requested = False
            if self._report_flush and pending and self._flush() == EV_FAILED:
                return EV_FAILED
            send = True
        if self._status_interval and now - self._last_status >= self._status_interval:
            if self._report_flush and self._w._write_lsn > self._w._flush_lsn \
                    and self._flush() == EV_FAILED:
                return EV_FAILED
            send = True
        if self._report_flush and self._reported_flush() != self._sent_flush:
            send = True
        if self._pending != NULL and now - self._last_status >= PAUSED_STATUS_US:
            # Paused, the server's keepalives are not read: reply unasked,
            # or its wal_sender_timeout ends the connection (also with -s 0).
            send = True
        if self._receive_timeout and now - self._last_message >= self._receive_timeout:
            return EV_TIMEOUT
        if self._receive_timeout and not self._pinged \
                and 2 * (now - self._last_message) >= self._receive_timeout:
            # Half the timeout in silence: ask for a reply (a keepalive).
            if self._send_status(True) < 0:
                return EV_CONN_ERROR
            self._pinged = True
            if self._shm != NULL:
                wf_progress_set_state(self._shm, WF_STATE_SILENT)
            return EV_NONE
        if send and self._send_status() < 0:
            return EV_CONN_ERROR
        return EV_NONE

    cdef int64_t _next_deadline(self, int64_t now) noexcept nogil:
        """When the loop must wake up even without a message: the next
        status update, the reply request or the receive timeout (0: none)."""
        cdef int64_t due = 0, t
        if self._status_interval:
            due = self._last_status + self._status_interval
        if self._receive_timeout:
            t = self._last_message + (self._receive_timeout if self._pinged
                                      else self._receive_timeout // 2)
            if due == 0 or t < due:
                due = t
        if self._pending != NULL:
            t = now + PAUSED_RETRY_US
            if due == 0 or t < due:
                due = t
            t = self._last_status + PAUSED_STATUS_US
            if t < due:
                due = t
        return due

    cdef bint _socket_readable(self) noexcept nogil:
        """Whether the socket has bytes to read now (poll, no wait)."""
        cdef pollfd pfd
        pfd.fd = self._sock
        pfd.events = POLLIN
        pfd.revents = 0
        return poll(&pfd, 1, 0) > 0 and pfd.revents & (POLLIN | POLLERR | POLLHUP) != 0

    cdef StreamEvent _run(self, int64_t max_us) noexcept nogil:
        """The loop.  Returns the event that ended it; EV_FAILED when an
        error was recorded (self._failure), which the caller raises."""
        cdef int64_t deadline = pg_now() + max_us
        cdef int64_t now, wait_us, due
        cdef char *buf
        cdef int n = 0, rc
        cdef StreamEvent ev
        cdef pollfd pfd[2]
        cdef int nfds = 1
        # Compressed output: the worker's eventfd wakes us when it synced, so
        # the new flush position is reported without waiting for the socket.
        if self._w.sink._wakeup_fd >= 0:
            pfd[1].fd = self._w.sink._wakeup_fd
            pfd[1].events = POLLIN
            nfds = 2
        while True:
            if self._pending != NULL:
                # Paused: try the blocked payload again; nothing else is
                # read until it went through.
                rc = self.parser._resume(<const unsigned char *>self._pending, self._pending_n)
                if rc == BLOCKED:
                    self._last_message = pg_now()     # the receive timeout waits too
                elif rc < 0:
                    self._set_paused(NULL, 0)
                    self._failure = &self.parser._err
                    return EV_FAILED
                else:
                    self._set_paused(NULL, 0)
                    if self._w._stop_reached:
                        return EV_STOP_REACHED
            # Drain every message libpq holds or the socket already has, as
            # receivelog.c's CopyStreamReceive(timeout 0) does: a batch ends
            # only when nothing more can be read without waiting.  (Ending
            # it when libpq's buffer runs dry made --synchronous sync after
            # every socket read: more fdatasyncs than pg_receivewal.)
            while self._pending == NULL:
                n = _pq.get_copy_data(self._conn, &buf, 1)
                while n == 0 and pg_now() < deadline and self._socket_readable():
                    if _pq.consume_input(self._conn) == 0:
                        return EV_CONN_ERROR
                    n = _pq.get_copy_data(self._conn, &buf, 1)
                if n <= 0:
                    break
                rc = self.parser._feed_payload(<const unsigned char *>buf, n)
                if rc == BLOCKED:
                    self._set_paused(buf, n)      # kept: tried again later
                    self._last_message = pg_now()
                    n = 0
                    break
                _pq.freemem(buf)
                if rc < 0:
                    self._failure = &self.parser._err
                    return EV_FAILED
                self._last_message = pg_now()
                if self._pinged:
                    self._pinged = False
                    if self._shm != NULL:
                        wf_progress_set_state(self._shm, WF_STATE_STREAMING)
                if self._w._stop_reached:
                    return EV_STOP_REACHED
                if pg_now() >= deadline:
                    break
            self._last_receipt = pg_now()
            if n < 0:
                # The COPY ended (the server's CopyDone, or an ErrorResponse)
                # or the connection broke: nothing more may be sent in it,
                # and what the server said is the caller's to read (a status
                # update now would only fail with "no COPY in progress" and
                # hide it).
                self._publish()
                return EV_COPY_DONE if n == -1 else EV_CONN_ERROR
            ev = self._after_batch()
            self._publish()
            if ev != EV_NONE:
                return ev
            now = pg_now()
            if now >= deadline:
                return EV_TICK
            # Wait for the socket, no longer than until something is due.
            wait_us = deadline - now
            due = self._next_deadline(now)
            if due:
                due -= now
                if due < wait_us:
                    wait_us = due if due > 0 else 0
            pfd[0].fd = self._sock
            # Paused: not reading is the point (TCP backpressure).
            pfd[0].events = (POLLIN if self._pending == NULL else 0) \
                | (POLLOUT if self._out_pending else 0)
            pfd[0].revents = 0
            pfd[1].revents = 0
            rc = poll(pfd, nfds, <int>((wait_us + 999) // 1000))
            if rc < 0:
                if errno == EINTR:
                    return EV_INTERRUPTED
                return EV_CONN_ERROR
            if nfds == 2 and pfd[1].revents:
                self._w.sink._drain_wakeup()
            if self._out_pending and pfd[0].revents & POLLOUT:
                rc = _pq.flush(self._conn)
                if rc < 0:
                    return EV_CONN_ERROR
                self._out_pending = rc == 1
            if pfd[0].revents & (POLLIN | POLLERR | POLLHUP):
                if _pq.consume_input(self._conn) == 0:
                    return EV_CONN_ERROR

    def run(self, double max_seconds=0.1):
        """Receive for at most *max_seconds*; return the event that ended the
        run (:data:`TICK`, :data:`COPY_DONE`, :data:`CONN_ERROR`,
        :data:`STOP_REACHED`, :data:`INTERRUPTED`, :data:`TIMEOUT`).  Errors of the parser,
        the writer and the compressing worker are raised."""
        cdef StreamEvent ev
        cdef int64_t max_us = <int64_t>(max_seconds * 1000000)
        with nogil:
            ev = self._run(max_us)
        if ev == EV_FAILED:
            raise_errinfo(self._failure, self._w.directory)
        return <int>ev

    def publish(self):
        """Publish to the progress state now (after the writer was closed,
        which synced its last bytes)."""
        self._publish()

    def send_status(self):
        """Send a standby status update now.  Returns False on a libpq error."""
        cdef int rc
        with nogil:
            rc = self._send_status()
        return rc == 0

    @property
    def flush_limit(self):
        """The highest flush position status updates may report (set by
        the control loop between runs; ``--archive``: what the archive
        holds).  0: report none; 2**64-1 (the default): no limit."""
        return self._flush_limit

    @flush_limit.setter
    def flush_limit(self, uint64_t value):
        self._flush_limit = value

    @property
    def sent_flush(self):
        """The flush position the last status update reported."""
        return self._sent_flush

    @property
    def status_updates(self):
        """Standby status updates sent."""
        return self._status_updates

    @property
    def last_status_time(self):
        """When the last status update was sent (us since 2000), 0 if never."""
        return self._last_status

    @property
    def paused(self):
        """Reading is paused: the writer cannot take the next message yet (a
        full disk, see :attr:`pause_error`, or a compressing worker behind)."""
        return self._pending != NULL

    @property
    def pause_error(self):
        """Why the loop is paused for lack of space (the OSError the writer
        met), or None (not paused, or waiting for the compressing worker)."""
        if self._pending == NULL or self._w._err.code == ERR_NONE:
            return None
        return errinfo_exception(&self._w._err, self._w.directory)

    @property
    def silent_seconds(self):
        """Seconds since the last message from the server (or the start)."""
        return (pg_now() - self._last_message) / 1e6

    @property
    def last_receipt_time(self):
        """When messages were last drained (us since 2000), 0 if never."""
        return self._last_receipt

# StreamParser: the physical replication stream's CopyData payloads -> a
# SegmentWriter.
#
# Payload layouts (all integers big-endian; LSNs uint64; times int64 us
# since 2000-01-01 UTC):
#
#   XLogData         'w' | dataStart | walEnd | sendTime | WAL bytes...     (25 + n)
#   keepalive        'k' | walEnd | sendTime | uint8 replyRequested         (18)
#
# Each call takes one whole CopyData payload, as libpq's PQgetCopyData
# returns it (CopyStream, or feed_copydata): the protocol frame around it
# is libpq's.  WAL bytes go to the writer straight from the payload; a WAL
# page header split across two XLogData messages is the writer's to gather.


@cython.final
cdef class StreamParser:
    """Parse a physical replication stream into a :class:`SegmentWriter`.

    StreamParser(writer)

    XLogData bytes are written through *writer*; keepalives update
    :attr:`wal_end`, :attr:`send_time` and the sticky :attr:`reply_requested`.
    Any malformed message raises :class:`ProtocolError` (naming its type,
    length and the LSN reached); after an error every call raises again.
    """

    cdef readonly SegmentWriter writer
    cdef bint _failed
    cdef int _msgtype
    cdef uint64_t _wal_end
    cdef int64_t _send_time
    cdef int64_t _wal_end_time     # sendTime when walEnd last advanced (latestWalEndTime)
    cdef int64_t _caught_up_time   # sendTime of the last message after which all WAL
                                   # up to its walEnd was written (else the first one's)
    cdef bint _reply_requested
    cdef uint64_t _messages
    cdef uint64_t _xlogdata
    cdef uint64_t _keepalives
    cdef uint64_t _wal_bytes
    cdef size_t _resume_at         # a BLOCKED XLogData message goes on from this offset
    cdef ErrInfo _err              # the parser's error, or the writer's copied here

    def __init__(self, SegmentWriter writer not None):
        self.writer = writer
        self._msgtype = -1

    cdef int _proto_error(self, const char *reason, int64_t length) noexcept nogil:
        self._failed = True
        self._err.code = ERR_PROTOCOL
        self._err.what = reason
        self._err.msgtype = self._msgtype
        self._err.length = length
        self._err.lsn = self.writer._write_lsn
        return -1

    cdef int _writer_error(self) noexcept nogil:
        self._failed = True
        self._err = self.writer._err
        return -1

    cdef inline void _note_wal_end(self, uint64_t wal_end, int64_t send_time) noexcept nogil:
        # As the walreceiver's ProcessWalSndrMessage: latestWalEndTime moves
        # only when walEnd advances.
        if wal_end > self._wal_end:
            self._wal_end_time = send_time
        self._wal_end = wal_end
        self._send_time = send_time

    cdef inline void _note_caught_up(self) noexcept nogil:
        # A whole message was handled: lag accounting (walfast.monitor.progress).
        if self.writer._write_lsn >= self._wal_end or self._caught_up_time == 0:
            self._caught_up_time = self._send_time

    cdef int _feed_payload(self, const unsigned char *buf, Py_ssize_t n) noexcept nogil:
        """Handle one whole CopyData payload of n bytes at buf.  Returns 0,
        -1 with self._err filled (a malformed message, or the writer's
        error), or BLOCKED: the writer cannot go on for now (a full disk);
        the caller keeps the payload and hands it to :meth:`_resume` later."""
        if self._failed:
            return err_state(&self._err, "stream parser stopped after an earlier error")
        if self.writer._stop_reached:
            return 0        # past the stop position: dropped, as pg_receivewal does
        if n < 1:
            self._msgtype = -1
            return self._proto_error("empty CopyData message", 0)
        self._msgtype = buf[0]
        if self._msgtype == MSG_XLOGDATA:
            # 'w' | dataStart | walEnd | sendTime | WAL bytes
            if n < XLOGDATA_HEADER_LEN:
                return self._proto_error("XLogData message shorter than its 25-byte header", n)
            self._messages += 1
            self._xlogdata += 1
            self._note_wal_end(wf_be64(buf + 9), <int64_t>wf_be64(buf + 17))
            if self.writer._begin(wf_be64(buf + 1)) < 0:
                return self._writer_error()
            self._resume_at = XLOGDATA_HEADER_LEN
            return self._resume(buf, n)
        elif self._msgtype == MSG_KEEPALIVE:
            # 'k' | walEnd | sendTime | replyRequested
            if n != KEEPALIVE_LEN:
                return self._proto_error("primary keepalive message is not 18 bytes long", n)
            self._messages += 1
            self._keepalives += 1
            self._note_wal_end(wf_be64(buf + 1), <int64_t>wf_be64(buf + 9))
            self._note_caught_up()
            if buf[17]:
                self._reply_requested = True
        else:
            return self._proto_error("unrecognized streaming message type", n)
        return 0

    cdef int _resume(self, const unsigned char *buf, Py_ssize_t n) noexcept nogil:
        """The WAL bytes of the XLogData message at buf from _resume_at on
        (all of them, or the rest of a message that was BLOCKED).  Returns
        as :meth:`_feed_payload`."""
        cdef size_t off = self._resume_at
        cdef int rc = 0
        if <size_t>n > off:
            rc = self.writer._append(buf + off, <size_t>n - off)
            self._wal_bytes += self.writer._consumed
            if rc == BLOCKED:
                self._resume_at = off + self.writer._consumed
                return BLOCKED
            if rc < 0:
                return self._writer_error()
        self._resume_at = 0
        self.writer._check_stop()
        self._note_caught_up()
        return 0

    cdef int _raise(self) except -1:
        raise_errinfo(&self._err, self.writer.directory)

    def feed_copydata(self, payload):
        """Consume one whole CopyData payload; return its type byte as an int
        (``ord('w')`` or ``ord('k')``)."""
        cdef Py_buffer view
        cdef int rc
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                rc = self._feed_payload(<const unsigned char *>view.buf, view.len)
                # No receive loop here to wait in: wait for a compressing
                # worker that is behind; a full disk is an error.
                while rc == BLOCKED and self.writer._err.code == ERR_NONE:
                    self.writer.sink._wait_room()
                    rc = self._resume(<const unsigned char *>view.buf, view.len)
                if rc == BLOCKED:
                    rc = self._writer_error()
        finally:
            PyBuffer_Release(&view)
        if rc < 0:
            self._raise()
        return self._msgtype

    def take_reply_request(self):
        """Return whether a keepalive asked for a reply since the last call,
        and clear the request."""
        cdef bint r = self._reply_requested
        self._reply_requested = False
        return r

    @property
    def reply_requested(self):
        """A keepalive asked for an immediate status update (sticky until
        :meth:`take_reply_request`)."""
        return self._reply_requested

    @property
    def wal_end(self):
        """The server's end of WAL from the latest message (walEnd)."""
        return self._wal_end

    @property
    def send_time(self):
        """sendTime of the latest message, in microseconds since 2000-01-01 UTC."""
        return self._send_time

    @property
    def wal_end_time(self):
        """sendTime of the message that last advanced :attr:`wal_end`
        (pg_stat_wal_receiver's latest_end_time), us since 2000-01-01 UTC."""
        return self._wal_end_time

    @property
    def caught_up_time(self):
        """sendTime of the last message after which everything up to its
        walEnd was written; while never caught up, the first message's."""
        return self._caught_up_time

    @property
    def messages(self):
        return self._messages

    @property
    def xlogdata_messages(self):
        return self._xlogdata

    @property
    def keepalive_messages(self):
        return self._keepalives

    @property
    def wal_bytes(self):
        """WAL bytes received in XLogData messages."""
        return self._wal_bytes

# StreamParser: the physical replication stream's CopyData payloads -> a
# SegmentWriter.
#
# Wire layouts (all integers big-endian; LSNs uint64; times int64 us since
# 2000-01-01 UTC):
#
#   protocol frame   'd' | int32 len (counts itself, not the type byte) | payload
#   XLogData         'w' | dataStart | walEnd | sendTime | WAL bytes...     (25 + n)
#   keepalive        'k' | walEnd | sendTime | uint8 replyRequested         (18)
#
# Two entry points feed the same state machine:
#   feed(buf)           raw protocol bytes as read from the socket, split
#                       anywhere.  WAL bytes are pwritten straight from *buf*
#                       into the segment file as they arrive (no wait for
#                       the end of the frame); only headers split across
#                       reads are gathered in a 32-byte scratch buffer.
#                       Stops before the first message that is not CopyData
#                       ('c' CopyDone, 'E' ErrorResponse, ...), which is the
#                       control layer's.
#   feed_copydata(p)    one whole CopyData payload, as libpq's PQgetCopyData
#                       returns it (TLS, or psycopg's get_copy_data).

cdef enum ParseState:
    PS_FRAME    # expecting a protocol frame header ('d' + int32)
    PS_HEADER   # inside a CopyData payload, expecting its message header
    PS_DATA     # inside an XLogData payload, copying WAL bytes
    PS_FAILED   # an error was raised; the stream cannot be trusted any more


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
    cdef ParseState _state
    cdef unsigned char _hdr[32]
    cdef int _have             # header bytes gathered in _hdr
    cdef int _need             # header bytes the current message needs
    cdef int64_t _left         # payload bytes of the current frame not consumed
    cdef int64_t _msglen       # payload length of the current message
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
    cdef ErrInfo _err

    def __init__(self, SegmentWriter writer not None):
        self.writer = writer
        self._state = PS_FRAME
        self._msgtype = -1

    cdef int _proto_error(self, const char *reason) noexcept nogil:
        self._state = PS_FAILED
        self._err.code = ERR_PROTOCOL
        self._err.what = reason
        self._err.msgtype = self._msgtype
        self._err.length = self._msglen
        self._err.lsn = self.writer._write_lsn
        return -1

    cdef inline void _note_wal_end(self, uint64_t wal_end, int64_t send_time) noexcept nogil:
        # As the walreceiver's ProcessWalSndrMessage: latestWalEndTime moves
        # only when walEnd advances.
        if wal_end > self._wal_end:
            self._wal_end_time = send_time
        self._wal_end = wal_end
        self._send_time = send_time

    cdef inline void _note_caught_up(self) noexcept nogil:
        # A whole message was handled: lag accounting (walfast.progress).
        if self.writer._write_lsn >= self._wal_end or self._caught_up_time == 0:
            self._caught_up_time = self._send_time

    cdef int _start_message(self, int msgtype) noexcept nogil:
        """First byte of a CopyData payload seen: validate type and length."""
        self._msgtype = msgtype
        self._msglen = self._left
        if msgtype == MSG_XLOGDATA:
            if self._left < XLOGDATA_HEADER_LEN:
                return self._proto_error("XLogData message shorter than its 25-byte header")
            self._need = XLOGDATA_HEADER_LEN
        elif msgtype == MSG_KEEPALIVE:
            if self._left != KEEPALIVE_LEN:
                return self._proto_error("primary keepalive message is not 18 bytes long")
            self._need = KEEPALIVE_LEN
        else:
            return self._proto_error("unrecognized streaming message type")
        return 0

    cdef int _header(self, const unsigned char *h) noexcept nogil:
        """A whole message header is at h: act on it."""
        self._left -= self._need
        self._messages += 1
        if self._msgtype == MSG_XLOGDATA:
            # 'w' | dataStart | walEnd | sendTime
            self._note_wal_end(wf_be64(h + 9), <int64_t>wf_be64(h + 17))
            self._xlogdata += 1
            if self.writer._begin(wf_be64(h + 1)) < 0:
                self._state = PS_FAILED
                return -2
            if self._left > 0:
                self._state = PS_DATA
            else:
                self._state = PS_FRAME
                self.writer._check_stop()
                self._note_caught_up()
        else:
            # 'k' | walEnd | sendTime | replyRequested
            self._note_wal_end(wf_be64(h + 1), <int64_t>wf_be64(h + 9))
            self._note_caught_up()
            if h[17]:
                self._reply_requested = True
            self._keepalives += 1
            self._state = PS_FRAME
        return 0

    cdef Py_ssize_t _feed(self, const unsigned char *buf, Py_ssize_t n) noexcept nogil:
        """Consume bytes from buf.  Returns how many were consumed (fewer than
        n only when a non-CopyData message starts there), -1 for a parser
        error (self._err), -2 for a writer error (writer._err)."""
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t take
        cdef int32_t flen
        cdef int rc
        while pos < n:
            if self._state == PS_DATA:
                take = n - pos
                if take > self._left:
                    take = <Py_ssize_t>self._left
                if not self.writer._stop_reached:
                    # (after the stop position the rest of the message is
                    # read and dropped, as pg_receivewal does)
                    if self.writer._append(buf + pos, <size_t>take) < 0:
                        self._state = PS_FAILED
                        return -2
                    self._wal_bytes += <uint64_t>take
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = PS_FRAME
                    self.writer._check_stop()
                    self._note_caught_up()
            elif self._state == PS_HEADER:
                if self._have == 0:
                    if self._start_message(buf[pos]) < 0:
                        return -1
                    if n - pos >= self._need:
                        # Common case: the whole header is in buf.
                        rc = self._header(buf + pos)
                        if rc < 0:
                            return rc
                        pos += self._need
                        continue
                take = min(<Py_ssize_t>(self._need - self._have), n - pos)
                memcpy(self._hdr + self._have, buf + pos, take)
                self._have += <int>take
                pos += take
                if self._have == self._need:
                    self._have = 0
                    rc = self._header(self._hdr)
                    if rc < 0:
                        return rc
            elif self._state == PS_FRAME:
                if self._have == 0 and (buf[pos] != COPY_DATA or self.writer._stop_reached):
                    break
                take = min(<Py_ssize_t>(FRAME_HEADER_LEN - self._have), n - pos)
                memcpy(self._hdr + self._have, buf + pos, take)
                self._have += <int>take
                pos += take
                if self._have == FRAME_HEADER_LEN:
                    self._have = 0
                    flen = <int32_t>wf_be32(self._hdr + 1)
                    self._left = <int64_t>flen - 4
                    if self._left < 1:
                        self._msgtype = -1
                        self._msglen = self._left
                        return self._proto_error("CopyData frame with an impossible length")
                    self._state = PS_HEADER
            else:
                self._err.code = ERR_STATE
                self._err.what = "stream parser stopped after an earlier error"
                return -1
        return pos

    cdef int _raise(self, Py_ssize_t rc) except -1:
        if rc == -2:
            raise_errinfo(&self.writer._err, self.writer.directory)
        raise_errinfo(&self._err, self.writer.directory)

    def feed(self, data):
        """Consume raw protocol bytes (CopyData frames, split anywhere).

        Returns the number of bytes consumed.  It is less than ``len(data)``
        only when a message other than CopyData starts at that offset (the
        caller handles that message), or when the writer's stop position was
        reached (the rest is not WAL walfast wants).  A partial frame header
        is kept inside, so the caller must not feed those bytes again.
        """
        cdef Py_buffer view
        cdef Py_ssize_t rc
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                rc = self._feed(<const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        if rc < 0:
            self._raise(rc)
        return rc

    cdef Py_ssize_t _feed_payload(self, const unsigned char *buf, Py_ssize_t n) noexcept nogil:
        if self.writer._stop_reached and self._state != PS_FAILED:
            return n        # past the stop position: dropped, as pg_receivewal does
        if self._state != PS_FRAME or self._have != 0:
            if self._state != PS_FAILED:
                self._err.code = ERR_STATE
                self._err.what = "a whole CopyData payload was fed in the middle of a raw frame"
                self._state = PS_FAILED
                return -1
            return self._feed(buf, n)       # reports the earlier failure
        if n < 1:
            self._msgtype = -1
            self._msglen = 0
            return self._proto_error("empty CopyData message")
        self._left = n
        self._state = PS_HEADER
        return self._feed(buf, n)

    def feed_copydata(self, payload):
        """Consume one whole CopyData payload; return its type byte as an int
        (``ord('w')`` or ``ord('k')``)."""
        cdef Py_buffer view
        cdef Py_ssize_t rc
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                rc = self._feed_payload(<const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        if rc < 0:
            self._raise(rc)
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

    @property
    def in_frame(self):
        """True while a frame has been started but not finished (feed() only)."""
        return self._state != PS_FRAME or self._have != 0

# SegmentWriter: WAL bytes -> a sink, split at segment boundaries, each page
# checked before any byte of it is written, stopping at --endpos.
#
# One loop for every output (_append): it takes a message's WAL bytes, cuts
# them at segment boundaries, checks the page headers among them (_pages.pxi;
# a header may arrive split across messages), hands the good bytes to the
# sink (_sinks.pxi: plain segment files, or the compressing worker's queue)
# and, at each segment end, has the sink complete the segment.  Bytes from a
# bad page on never reach the sink, and never count as flushed.
#
# Positions (LSNs):
#   write_lsn   end of the bytes received (the next message must continue it)
#   sink_lsn    end of the bytes handed to the sink: write_lsn less the bytes
#               of a page header whose rest has not arrived yet (fewer than
#               40, kept until the header can be checked: a header that
#               fails never reaches a file, not even in part)
#   flush_lsn   end of the bytes known durable: moves only when the sink
#               says so (plain files: after an fdatasync covering them, or a
#               segment completion; the queue: when the worker published
#               its fdatasync), and never past a page whose header is not yet
#               complete (_flushable)
#   stop_lsn    pg_receivewal's --endpos
#
# Why pwrite into preallocated files, not memcpy into an mmap of the
# segment: first-touch page faults made the mapping far slower, and pwrite
# reports I/O errors as errno instead of SIGBUS (benchmarks/README.md, "Why
# the engine writes the way it does").


@cython.final
cdef class SegmentWriter:
    """Write a timeline's WAL into segment files in *directory*.

    SegmentWriter(directory, *, timeline, start_lsn, segment_size,
                  system_identifier=0, page_magic=0, page_size=8192, sync=True,
                  file_mode=0o600, sink=None, sink_suffix="", zero_fill=False)

    The first byte written must be at *start_lsn*, and every later write must
    continue exactly where the previous one ended (else :class:`WalGapError`).
    Writing can start in the middle of a segment only if that segment's
    full-size ``.partial`` file is already there.

    Each page header is checked when its bytes land: ``xlp_magic`` equals the
    first page's (or *page_magic* when given), ``xlp_pageaddr`` equals the
    page's LSN, ``1 <= xlp_tli <= timeline``, no unknown ``xlp_info`` flags, and
    a segment's first page carries the long header with *system_identifier*
    (learned from the first long header when 0), *segment_size* and
    *page_size* (see :class:`PageCheck`).  A mismatch raises
    :class:`WalPageError` and nothing from that page on is ever reported
    flushed.

    *sink* None writes plain segment files (:class:`SegmentFiles`, made
    with *sync*, *file_mode* and *zero_fill*: with ``sync=False``,
    ``--no-sync``, nothing is ever fsynced and :meth:`flush` only advances
    :attr:`flush_lsn`; with *zero_fill*, for ``--synchronous``, a new file is
    overwritten with zeros and synced before WAL lands in it).  A
    :class:`ChunkQueue` sink hands the WAL to the compressing worker instead
    (whose files end in *sink_suffix*); writing must then start at a segment
    boundary, and what the worker made durable is taken in by :meth:`poll`,
    :meth:`flush` and :meth:`close` (and by :class:`CopyStream`), which raise
    the worker's failure.
    """

    cdef readonly object directory
    cdef readonly WalSink sink
    cdef uint32_t _timeline
    cdef uint64_t _segsize
    cdef uint64_t _segmask
    cdef uint64_t _segs_per_id
    cdef bint _sync
    cdef WalPages _pages
    cdef char _suffix[16]         # file-name suffix of compressed files (".gz")
    cdef char _fname[SEGFILE_NAME_MAX]   # the current segment's file (".partial")
    cdef bint _seg_open           # the sink has a segment open

    cdef uint64_t _write_lsn
    cdef size_t _consumed         # bytes of the last _append call taken (all, unless BLOCKED)
    cdef uint64_t _sink_lsn
    cdef unsigned char _held[LONG_PHD_CHECK_LEN]   # a copy of the header bytes held back
    cdef uint64_t _flush_lsn
    cdef uint64_t _stop_lsn       # pg_receivewal's --endpos; 0 = none
    cdef bint _stop_reached
    cdef bint _failed
    cdef bint _closed
    cdef SinkProgress _prog       # what the sink made durable, as last taken in
    cdef ErrInfo _err

    def __init__(self, directory, *, timeline, start_lsn, segment_size,
                 system_identifier=0, page_magic=0, page_size=8192, bint sync=True,
                 file_mode=0o600, WalSink sink=None, sink_suffix="", bint zero_fill=False):
        cdef uint64_t segsize = segment_size
        cdef int rc
        if not wp_valid_segment_size(segsize):
            raise ValueError(
                f"invalid WAL segment size {segment_size} bytes: must be a power of two "
                f"between 1 MB and 1 GB")
        if not wp_valid_page_size(page_size):
            raise ValueError(f"invalid WAL page size {page_size}: must be a power of two "
                             f"between 1 kB and 64 kB")
        if not 1 <= timeline <= 0xFFFFFFFF:
            raise ValueError(f"invalid timeline {timeline}")
        if not 0 <= page_magic <= 0xFFFF:
            raise ValueError(f"invalid page magic {page_magic}")
        bsuffix = _os.fsencode(sink_suffix)
        if len(bsuffix) >= <Py_ssize_t>sizeof(self._suffix) or b"/" in bsuffix or b"\0" in bsuffix:
            raise ValueError(f"invalid file-name suffix {sink_suffix!r}")
        memcpy(self._suffix, <const char *>bsuffix, len(bsuffix))
        self._suffix[len(bsuffix)] = 0
        self.directory = _os.fspath(directory)
        self._timeline = timeline
        self._segsize = segsize
        self._segmask = segsize - 1
        self._segs_per_id = (<uint64_t>1 << 32) // segsize
        self._sync = sync
        self._write_lsn = start_lsn
        self._sink_lsn = start_lsn
        self._flush_lsn = start_lsn
        wp_init(&self._pages, start_lsn, timeline, segsize, page_size, system_identifier,
                page_magic, True)
        if sink is None:
            sink = SegmentFiles(self.directory, timeline=timeline, segment_size=segsize,
                                sync=sync, file_mode=file_mode, zero_fill=zero_fill)
        elif sink._whole_segments and self._write_lsn & self._segmask:
            raise ValueError("compressed output must start at a segment boundary")
        self.sink = sink
        if self._write_lsn & self._segmask:
            # Starting mid-segment needs the segment's file now: fail early.
            with nogil:
                rc = self._open_segment()
            if rc < 0:
                raise_errinfo(&self._err, self.directory)

    # ---- nogil internals: return 0, or -1 with self._err filled ----------

    cdef int _sink_failed(self) noexcept nogil:
        self._err = self.sink._err
        return -1

    cdef int _check_usable(self) noexcept nogil:
        if self._closed:
            return err_state(&self._err, "segment writer is closed")
        if self._failed:
            return err_state(&self._err, "segment writer stopped after an earlier error")
        return 0

    cdef int _open_segment(self) noexcept nogil:
        """Have the sink open the segment holding write_lsn.  0, -1, or
        BLOCKED (no space for it yet: nothing happened, try again later)."""
        cdef uint64_t segno = self._write_lsn // self._segsize
        cdef int rc
        snprintf(self._fname, sizeof(self._fname), "%08X%08X%08X%s.partial",
                 self._timeline, <uint32_t>(segno // self._segs_per_id),
                 <uint32_t>(segno % self._segs_per_id), self._suffix)
        rc = self.sink._open(segno, self._write_lsn)
        if rc == BLOCKED:
            self._err = self.sink._err
            return BLOCKED
        if rc < 0:
            return self._sink_failed()
        self._seg_open = True
        return 0

    cdef int _poll(self, int64_t now) noexcept nogil:
        """Take in what the sink made durable (see WalSink._poll)."""
        if self.sink._poll(&self._prog, now) < 0:
            return self._sink_failed()
        if self._prog.flushed > self._flush_lsn:
            self._flush_lsn = self._prog.flushed
        return 0

    cdef int _begin(self, uint64_t data_start) noexcept nogil:
        """Accept a message's dataStart: it must continue the stream."""
        if self._check_usable() < 0:
            return -1
        if data_start != self._write_lsn:
            self._err.code = ERR_GAP
            self._err.expected = self._write_lsn
            self._err.found = data_start
            return -1
        return 0

    cdef int _append(self, const unsigned char *p, size_t n) noexcept nogil:
        """Take n WAL bytes at write_lsn, splitting at segment boundaries.
        Page headers are checked before any byte of them is written: a
        header cut by the end of a message waits (in the page rules' buffer)
        until its rest arrives, and bytes from a bad page on never reach the
        sink.  BLOCKED when the next segment cannot be created yet (a full
        disk): _consumed bytes were taken, the caller gives the rest again
        later."""
        cdef uint64_t chunk, cleared, held
        cdef bint bad
        cdef int rc
        self._consumed = 0
        if self._check_usable() < 0:
            return -1
        if not self.sink._room(n):
            # The compressing worker is behind: not an error, the caller
            # waits until it freed a chunk (and can be stopped meanwhile).
            self._err.code = ERR_NONE
            return BLOCKED
        while n > 0:
            if not self._seg_open:
                rc = self._open_segment()
                if rc < 0:
                    return rc
            chunk = self._segsize - (self._write_lsn & self._segmask)
            if chunk > n:
                chunk = n
            # Header bytes held from an earlier message: the check below
            # reuses the buffer they wait in, so copy them first.
            held = self._write_lsn - self._sink_lsn
            if held:
                memcpy(self._held, self._pages.hdr, held)
            cleared = wp_check(&self._pages, self._write_lsn, p, chunk, &bad)
            if cleared:
                # The held header passed with its rest: it goes first.
                if held and self.sink._write(self._held, held, self._sink_lsn) < 0:
                    return self._sink_failed()
                if self.sink._write(p, cleared, self._write_lsn) < 0:
                    return self._sink_failed()
                self._sink_lsn = self._write_lsn + cleared
            if bad:
                self._write_lsn += cleared
                self._failed = True
                return wp_error(&self._pages, &self._err, self._fname)
            self._write_lsn += chunk
            self._consumed += chunk
            p += chunk
            n -= chunk
            if self._write_lsn & self._segmask == 0:
                # (A segment ends with page bytes, never with a held header:
                # everything received is with the sink.)
                if self.sink._complete(self._write_lsn) < 0:
                    return self._sink_failed()
                self._seg_open = False
                if self._poll(0) < 0:
                    return -1
                # Like pg_receivewal, the stop position is also checked when a
                # segment completes inside a message; the rest is not written.
                if self._check_stop():
                    return 0
        return 0

    cdef int _append_waiting(self, const unsigned char *p, size_t n) noexcept nogil:
        """_append for callers without a receive loop: a compressing worker
        that is behind is waited for here (a full disk stays an error)."""
        cdef int rc = self._append(p, n)
        while rc == BLOCKED and self._err.code == ERR_NONE:
            self.sink._wait_room()
            p += self._consumed
            n -= self._consumed
            rc = self._append(p, n)
        return rc

    cdef inline bint _check_stop(self) noexcept nogil:
        # pg_receivewal stops when endpos < the position received: a record
        # starting exactly at endpos is still received.
        if self._stop_lsn != 0 and self._stop_lsn < self._write_lsn:
            self._stop_reached = True
        return self._stop_reached

    cdef inline uint64_t _flushable(self) noexcept nogil:
        # A page whose header has not fully arrived, or failed its check,
        # bounds what may be reported.
        cdef uint64_t checked = self._pages.next_check
        return checked if checked < self._write_lsn else self._write_lsn

    cdef int _flush(self, bint wait) noexcept nogil:
        """Have the sink make everything flushable durable (with *wait*, the
        queue's too, before returning), then take in the progress."""
        cdef uint64_t target = self._flushable()
        if target > self._flush_lsn and self.sink._flush(target, wait) < 0:
            return self._sink_failed()
        return self._poll(0)

    # ---- Python API ------------------------------------------------------

    def write(self, uint64_t data_start, data):
        """Write one XLogData message's WAL bytes, which start at *data_start*.

        Raises :class:`WalGapError` when *data_start* is not :attr:`write_lsn`,
        :class:`WalPageError` when a page header is wrong, :class:`OSError`
        when a file cannot be created, preallocated, synced or renamed (or
        the compressing worker's failure).
        """
        cdef Py_buffer view
        cdef int rc
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                rc = self._begin(data_start)
                if rc == 0:
                    rc = self._append_waiting(<const unsigned char *>view.buf,
                                              <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        if rc < 0:
            raise_errinfo(&self._err, self.directory)

    def flush(self):
        """Make everything written durable (one fdatasync; with compressed
        output: queue a sync and wait until the worker did it) and return
        :attr:`flush_lsn`.  Raises the compressing worker's failure."""
        cdef int rc
        with nogil:
            rc = self._flush(True)
        if rc < 0:
            raise_errinfo(&self._err, self.directory)
        return self._flush_lsn

    def poll(self):
        """Take in what the compressing worker made durable since the last
        call (:attr:`flush_lsn`, :attr:`segments_completed`,
        :attr:`completed_end`); raise its failure.  Plain files need no
        polling: their progress is known at once."""
        cdef int rc
        with nogil:
            rc = self._poll(0)
        if rc < 0:
            raise_errinfo(&self._err, self.directory)

    def close(self):
        """Sync and close the open segment, which stays ``.partial`` (with
        compressed output: wait until the worker did).  Raises the
        compressing worker's failure.

        Safe to call twice.  After an earlier error the good bytes before the
        failed page are still synced.
        """
        cdef int rc, rc2
        if self._closed:
            return
        with nogil:
            rc = self.sink._close(self._flushable())
            if rc < 0:
                self._sink_failed()
            rc2 = self._poll(0)
            self._closed = True
            self._seg_open = False
        if rc < 0 or rc2 < 0:
            raise_errinfo(&self._err, self.directory)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def write_lsn(self):
        """End of the WAL copied into segment files."""
        return self._write_lsn

    @property
    def flush_lsn(self):
        """End of the WAL known to be on disk (with ``sync=False``: handed to
        the kernel), as last taken in.  Only this may be reported as flushed."""
        return self._flush_lsn

    @property
    def pending_bytes(self):
        """Bytes written but not yet flushed."""
        return self._write_lsn - self._flush_lsn

    @property
    def stop_lsn(self):
        """Stop position (pg_receivewal's ``--endpos``), 0 for none.  Writing
        stops after the first message, or the first completed segment, that
        ends past it; :attr:`stop_reached` then turns true and further WAL
        is discarded."""
        return self._stop_lsn

    @stop_lsn.setter
    def stop_lsn(self, uint64_t value):
        self._stop_lsn = value

    @property
    def stop_reached(self):
        return self._stop_reached

    @property
    def timeline(self):
        return self._timeline

    @property
    def segment_size(self):
        return self._segsize

    @property
    def page_size(self):
        return self._pages.page_size

    @property
    def system_identifier(self):
        """The expected system identifier (learned from the first long page
        header when none was given; 0 until then)."""
        return self._pages.sysid

    @property
    def page_magic(self):
        """The expected ``xlp_magic`` (learned from the first page; 0 until then)."""
        return self._pages.magic

    @property
    def sync(self):
        return self._sync

    @property
    def segments_completed(self):
        """Segments filled, synced and renamed to their final name, as last
        taken in."""
        return self._prog.completed

    @property
    def completed_end(self):
        """End LSN of the last segment completed (synced and renamed), 0 if
        none, as last taken in."""
        return self._prog.completed_end

    @property
    def syncs(self):
        """fdatasync calls the receive thread made (one per flush batch or
        segment completion; with compressed output the worker syncs, 0)."""
        return self._prog.syncs

    @property
    def current_file(self):
        """Path of the open segment's ``.partial`` file (with compressed
        output: the one its bytes go to), or None."""
        if not self._seg_open:
            return None
        return _os.path.join(self.directory, self._fname.decode("ascii"))

    @property
    def closed(self):
        return self._closed

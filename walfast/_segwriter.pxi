# SegmentWriter: WAL bytes -> preallocated segment files, batched durability,
# page-header checks before the bytes are written.
#
# Segment lifecycle (pg_receivewal's, walmethods.c):
#   open     NAME.partial, created and preallocated to the full segment size
#            with posix_fallocate (a full disk is ENOSPC here, at creation),
#            then file + directory fsync so the name survives a crash.  An
#            existing full-size .partial is reopened and fsynced ("in case of
#            a previous crash"); size 0 counts as new; any other size is
#            refused.  Writing into a reopened file may start at any page
#            (walfast/resume.py chooses the last valid one); the fsync comes
#            first, so the bytes before the start are durable before the
#            start itself is ever reported flushed.
#   write    pwrite at the segment offset, straight from the receive buffer.
#   flush    fdatasync of the open segment (one call per batch; when to flush
#            is the caller's policy).
#   complete fdatasync, release its pages from the page cache (_release),
#            close, rename NAME.partial -> NAME, fsync the directory.  Only
#            then is the segment's end counted as flushed.
#   close    the incomplete segment is synced and stays NAME.partial.
#
# Compressed output (sink=ChunkQueue): the checks, the boundary splitting and
# the stop position stay here; the file I/O moves to a worker thread
# (walfast/compressor.py).  WAL bytes are copied into the queue's chunks
# instead of pwritten, a segment end commits its last chunk with
# CHUNK_SEGMENT_END, flush() queues a sync request (one outstanding at a
# time) and flush_lsn only moves when the worker publishes what it synced
# (_poll_sink).  The only branch on the uncompressed path is one test per
# _append / _flush call.
#
# Why pwrite into preallocated files, not memcpy into an mmap of the
# segment: first-touch page faults made the mapping far slower, and pwrite
# reports I/O errors as errno instead of SIGBUS (benchmarks/README.md, "Why
# the engine writes the way it does").
#
# Positions (LSNs):
#   write_lsn   end of the bytes written into segment files
#   flush_lsn   end of the bytes known durable; only moves after an fdatasync
#               covering them has returned, and never past a page whose
#               header is not yet complete (the page checks of _pages.pxi
#               say which: their next_check)

cimport cython

# Compressed output: a partly filled chunk goes to the worker after this long
# without filling up, so a quiet stream still reaches the file.
cdef int64_t SINK_MAX_DELAY_US = 200000


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

    With ``sync=False`` (``--no-sync``) no fsync or fdatasync is made and
    :meth:`flush` only advances :attr:`flush_lsn`.  With ``zero_fill`` (for
    ``--synchronous``) a new segment file is overwritten with zeros and
    synced before WAL lands in it (see ``_write_zeros``).
    """

    cdef readonly object directory
    cdef int _dirfd
    cdef uint32_t _timeline
    cdef uint64_t _segsize
    cdef uint64_t _segmask
    cdef uint64_t _segs_per_id
    cdef WalPages _pages
    cdef bint _sync
    cdef int _mode

    # The open segment: its fd, number and file name (".partial").
    cdef int _fd
    cdef uint64_t _segno
    cdef char _fname[48]
    cdef bint _dirty              # written since its last fdatasync
    cdef bint _name_unsynced      # created, its directory entry not yet fsynced
    cdef bint _zero_fill          # write zeros into new files (see _open_segment)
    cdef uint64_t _writeback_from # segment offset up to which writeback was started
    cdef uint64_t _release_from   # start of the range whose writeback the last step started

    cdef uint64_t _write_lsn
    cdef uint64_t _flush_lsn
    cdef uint64_t _stop_lsn       # pg_receivewal's --endpos; 0 = none
    cdef bint _stop_reached
    cdef uint64_t _segments_completed
    cdef uint64_t _syncs
    cdef bint _failed
    cdef bint _closed
    cdef ErrInfo _err
    cdef uint64_t _completed_end  # end of the last completed segment, 0 = none yet

    # Compressed output (None / NULL when writing plain files).
    cdef readonly ChunkQueue sink
    cdef char _suffix_buf[16]     # file-name suffix of compressed files (".gz")
    cdef ChunkSlot *_slot         # the chunk being filled
    cdef int64_t _slot_since      # pg time its first byte arrived
    cdef uint64_t _sync_requested # target of the last sync request
    cdef bint _sink_seg_open      # bytes of the current segment were queued

    def __cinit__(self):
        self._dirfd = -1
        self._fd = -1

    def __init__(self, directory, *, timeline, start_lsn, segment_size,
                 system_identifier=0, page_magic=0, page_size=8192, sync=True,
                 file_mode=0o600, sink=None, sink_suffix="", zero_fill=False):
        cdef uint64_t segsize = segment_size
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
        self.directory = _os.fspath(directory)
        self._timeline = timeline
        self._segsize = segsize
        self._segmask = segsize - 1
        self._segs_per_id = (<uint64_t>1 << 32) // segsize
        self._sync = sync
        self._mode = file_mode
        self._zero_fill = zero_fill and sync
        self._write_lsn = start_lsn
        self._flush_lsn = start_lsn
        wp_init(&self._pages, start_lsn, timeline, segsize, page_size, system_identifier,
                page_magic, True)
        if sink is not None:
            if self._write_lsn & self._segmask:
                raise ValueError("compressed output must start at a segment boundary")
            bsuffix = _os.fsencode(sink_suffix)
            if len(bsuffix) >= <Py_ssize_t>sizeof(self._suffix_buf) or b"/" in bsuffix or b"\0" in bsuffix:
                raise ValueError(f"invalid file-name suffix {sink_suffix!r}")
            memcpy(self._suffix_buf, <const char *>bsuffix, len(bsuffix))
            self._suffix_buf[len(bsuffix)] = 0
            self.sink = sink
            self._err.queue = <void *>sink
        self._dirfd = _os.open(self.directory, _os.O_RDONLY | _os.O_DIRECTORY | _os.O_CLOEXEC)
        if self._write_lsn & self._segmask and sink is None:
            # Starting mid-segment needs the segment's file now: fail early.
            with nogil:
                rc = self._open_segment()
            if rc < 0:
                raise_errinfo(&self._err, self.directory)

    def __dealloc__(self):
        # Not close(): no sync here.  Dropping a writer without close() is
        # what a crash does, and must be safe the same way.
        if self._fd >= 0:
            close(self._fd)
        if self._dirfd >= 0:
            close(self._dirfd)

    # ---- nogil internals: return 0, or -1 with self._err filled ----------

    cdef int _os_error(self, const char *what, int err_no, bint with_file) noexcept nogil:
        self._err.code = ERR_OS
        self._err.what = what
        self._err.err_no = err_no
        self._err.fname[0] = 0
        if with_file:
            err_set_fname(&self._err, self._fname)
        return -1

    cdef int _mid_segment_error(self) noexcept nogil:
        self._err.code = ERR_MID_SEGMENT
        self._err.lsn = self._write_lsn
        self._err.expected = self._write_lsn - (self._write_lsn & self._segmask)
        err_set_fname(&self._err, self._fname)
        return -1

    cdef int _open_segment(self) noexcept nogil:
        """Open (create, preallocate) the .partial file of the segment holding
        write_lsn.  Called only when no segment is open."""
        cdef uint64_t segno = self._write_lsn // self._segsize
        cdef uint64_t off = self._write_lsn & self._segmask
        cdef stat st
        cdef int fd, rc
        snprintf(self._fname, sizeof(self._fname), "%08X%08X%08X.partial",
                 self._timeline, <uint32_t>(segno // self._segs_per_id),
                 <uint32_t>(segno % self._segs_per_id))
        # Mid-segment, only an existing file can hold the bytes before us.
        fd = openat(self._dirfd, self._fname, O_RDWR | O_CLOEXEC | (O_CREAT if off == 0 else 0),
                    self._mode)
        if fd < 0:
            if errno == ENOENT and off != 0:
                return self._mid_segment_error()
            return self._os_error("could not open write-ahead log file", errno, True)
        if fstat(fd, &st) != 0:
            rc = errno
            close(fd)
            return self._os_error("could not stat write-ahead log file", rc, True)
        if st.st_size == 0:
            if off != 0:
                close(fd)
                return self._mid_segment_error()
            rc = posix_fallocate(fd, 0, <off_t>self._segsize)
            if rc != 0:
                # Leave an empty file (which counts as new next time), not a
                # half-allocated one.
                ftruncate(fd, 0)
                close(fd)
                return self._os_error("could not preallocate write-ahead log file", rc, True)
            if self._zero_fill and self._write_zeros(fd) < 0:
                ftruncate(fd, 0)
                close(fd)
                return -1
            # The new name must survive a crash before any byte in it is
            # reported flushed, but not sooner: its directory is fsynced at
            # the file's first sync (_sync_segment), or after the rename
            # that completes it.  Nothing in the file is reported before
            # then, and a crash before then leaves no file or an empty or
            # zero-filled one, which a restart handles (a new segment, or a
            # page scan that trusts nothing).  fdatasync covers the size
            # and extents posix_fallocate set.  This saves two of
            # pg_receivewal's four syncs per segment.
            self._name_unsynced = self._sync
        elif <uint64_t>st.st_size == self._segsize:
            # A previous run may have died before syncing what it wrote.
            if self._sync and fsync(fd) != 0:
                rc = errno
                close(fd)
                return self._os_error("could not fsync existing write-ahead log file", rc, True)
        else:
            close(fd)
            self._err.code = ERR_SEGMENT_SIZE
            self._err.found = <uint64_t>st.st_size
            self._err.expected = self._segsize
            err_set_fname(&self._err, self._fname)
            return -1
        self._fd = fd
        self._segno = segno
        self._dirty = False
        self._writeback_from = off
        self._release_from = off
        return 0

    cdef int _write_zeros(self, int fd) noexcept nogil:
        """Overwrite a new, preallocated file with zeros and sync it.

        For --synchronous: every fdatasync into blocks that posix_fallocate
        left "unwritten" also commits the file system journal (the extents
        change to written), a second I/O on the commit path of a
        synchronous primary.  Zeroed blocks make each later fdatasync a data
        write only, as for PostgreSQL's own zero-filled WAL files.

        The zeros go in page-sized writes, as pg_receivewal writes them in
        XLOG_BLCKSZ pieces: bigger writes make the page cache hold the file
        in large folios, and every small write + fdatasync after that
        writes back a whole folio (benchmarks/README.md, "Why the engine
        writes the way it does"; tests/test_segwriter.py checks the bytes
        written).
        """
        cdef unsigned char zeros[ZERO_FILL_CHUNK]
        cdef uint64_t off = 0
        cdef ssize_t w
        memset(zeros, 0, ZERO_FILL_CHUNK)
        while off < self._segsize:
            w = pwrite(fd, zeros, ZERO_FILL_CHUNK, <off_t>off)
            if w < 0 and errno == EINTR:
                continue
            if w <= 0:
                return self._os_error("could not zero-fill write-ahead log file",
                                      errno if w < 0 else ENOSPC, True)
            off += <uint64_t>w
        if fdatasync(fd) != 0:
            return self._os_error("could not fdatasync write-ahead log file", errno, True)
        return 0

    cdef int _sync_segment(self, bint name_too=True) noexcept nogil:
        """Make everything written to the open segment durable, and its name
        when *name_too* (a completion renames and syncs the directory after,
        which covers the name)."""
        if not self._dirty:
            return 0
        if self._sync:
            if fdatasync(self._fd) != 0:
                return self._os_error("could not fdatasync write-ahead log file", errno, True)
            self._syncs += 1
            if name_too and self._name_unsynced:
                if fsync(self._dirfd) != 0:
                    return self._os_error("could not fsync directory", errno, False)
                self._name_unsynced = False
        self._dirty = False
        return 0

    cdef inline void _write_behind(self, uint64_t off) noexcept nogil:
        """Start writeback of what was written up to segment offset *off*
        once WRITE_BEHIND bytes are waiting, without waiting for it
        (sync_file_range WRITE, as PostgreSQL's wal_writer_flush_after):
        the disk works while we receive, and the fdatasync that makes the
        segment durable has little left to do.  Durability still comes only
        from fdatasync; errors surface there.  With --no-sync too: dirty
        pages then never pile up to the point where the kernel throttles
        this writer (balance_dirty_pages), which cost more CPU than it
        saved.

        The range whose writeback the previous step started (at least
        WRITE_BEHIND bytes ago, so usually on disk by now) is released from
        the page cache (_release), as PostgreSQL does with its own WAL.
        Not with zero_fill (--synchronous): the zeros took all the file's
        pages at its creation, and releasing the completed file frees them
        for the next one; a release call costs most when the CPUs are busy
        (it may wait for every CPU to drain its page lists), which is when
        a synchronous standby's commits wait on us."""
        if off - self._writeback_from >= WRITE_BEHIND:
            if not self._zero_fill:
                self._release(self._release_from, self._writeback_from)
                self._release_from = self._writeback_from
            sync_file_range(self._fd, <off_t>self._writeback_from,
                            <off_t>(off - self._writeback_from), SYNC_FILE_RANGE_WRITE)
            self._writeback_from = off

    cdef inline void _release(self, uint64_t start, uint64_t end) noexcept nogil:
        """Drop the open segment's cached pages in [start, end)
        (POSIX_FADV_DONTNEED), as PostgreSQL's xlog.c does when it closes a
        WAL segment: nothing reads these bytes back in normal operation.

        Why it matters for speed: every page the receiver writes needs a
        page-cache page, and a page that comes fresh from the allocator
        costs far more to fill than one just released (benchmarks/README.md,
        "Why the engine writes the way it does").  Released pages are reused
        by the next writes; the receiver stops pushing other data out of
        the cache too.

        Safe at any time: the kernel drops only clean pages that are not
        under writeback (dirty ones just get writeback started), and the
        callers pass only bytes that are never written again: ranges
        behind write_lsn, or a whole segment once it is complete.  The
        partial page at *end* is kept."""
        if end > start:
            posix_fadvise(self._fd, <off_t>start, <off_t>(end - start), POSIX_FADV_DONTNEED)

    cdef int _close_segment(self) noexcept nogil:
        cdef int rc = 0
        if close(self._fd) != 0:
            rc = errno
        self._fd = -1
        if rc != 0:
            return self._os_error("could not close write-ahead log file", rc, True)
        return 0

    cdef int _complete_segment(self) noexcept nogil:
        """The open segment is full: sync, close, rename to its final name,
        sync the directory; then its end is flushed."""
        cdef char final[48]
        if self._sync_segment(False) < 0:
            return -1
        self._release(0, self._segsize)
        if self._close_segment() < 0:
            return -1
        memcpy(final, self._fname, 24)
        final[24] = 0
        if renameat(self._dirfd, self._fname, self._dirfd, final) != 0:
            return self._os_error("could not rename write-ahead log file", errno, True)
        if self._sync and fsync(self._dirfd) != 0:
            return self._os_error("could not fsync directory", errno, False)
        self._segments_completed += 1
        self._flush_lsn = self._write_lsn
        self._completed_end = self._write_lsn
        return 0

    cdef int _page_error(self) noexcept nogil:
        """The page checks found a bad header: record it, stop writing."""
        self._failed = True
        return wp_error(&self._pages, &self._err, self._fname)

    cdef int _pwrite_all(self, const unsigned char *p, size_t n, uint64_t off) noexcept nogil:
        cdef ssize_t w
        while n > 0:
            w = pwrite(self._fd, p, n, <off_t>off)
            if w < 0:
                if errno == EINTR:
                    continue
                return self._os_error("could not write to write-ahead log file", errno, True)
            if w == 0:
                # No errno for a zero-byte write: assume the disk is full,
                # as pg_receivewal does.
                return self._os_error("could not write to write-ahead log file", ENOSPC, True)
            p += w
            n -= <size_t>w
            off += <uint64_t>w
        return 0

    cdef int _check_usable(self) noexcept nogil:
        if self._closed or self._failed:
            self._err.code = ERR_STATE
            self._err.what = ("segment writer is closed" if self._closed else
                              "segment writer stopped after an earlier error")
            return -1
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
        """Write n WAL bytes at write_lsn, splitting at segment boundaries.
        Page headers are checked before their page is written: bytes from a
        bad page on never reach the file."""
        cdef uint64_t off, chunk, ok
        if self.sink is not None:
            return self._append_sink(p, n)
        if self._check_usable() < 0:
            return -1
        while n > 0:
            if self._fd < 0 and self._open_segment() < 0:
                return -1
            off = self._write_lsn & self._segmask
            chunk = self._segsize - off
            if chunk > n:
                chunk = n
            ok = wp_check(&self._pages, self._write_lsn, p, chunk)
            if ok and self._pwrite_all(p, ok, off) < 0:
                return -1
            if ok:
                self._dirty = True
                self._write_lsn += ok
                self._write_behind(off + ok)
            if ok < chunk:
                return self._page_error()
            p += chunk
            n -= chunk
            if self._write_lsn & self._segmask == 0:
                if self._complete_segment() < 0:
                    return -1
                # Like pg_receivewal, the stop position is also checked when a
                # segment completes inside a message; the rest is not written.
                if self._check_stop():
                    return 0
        return 0

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

    cdef int _flush(self) noexcept nogil:
        cdef uint64_t target = self._flushable()
        if self.sink is not None:
            return self._flush_sink(target)
        if target <= self._flush_lsn:
            return 0
        if self._fd >= 0 and self._sync_segment() < 0:
            return -1
        self._flush_lsn = target
        return 0

    # ---- compressed output: the queue to the worker (nogil) ---------------

    cdef int _sink_error(self) noexcept nogil:
        self._err.code = ERR_SINK
        self._err.what = "the compressing worker failed"
        return -1

    cdef int _sink_put(self, const unsigned char *p, size_t n) noexcept nogil:
        """Copy n bytes, which land at write_lsn, into chunks; a full chunk
        goes to the worker.  Waits for a free chunk when all are taken."""
        cdef uint64_t lsn = self._write_lsn
        cdef size_t take
        while n > 0:
            if self._slot == NULL:
                self._slot = self.sink._acquire(lsn)
                if self._slot == NULL:
                    return self._sink_error()
                self._slot_since = pg_now()
            take = self.sink._size - self._slot.length
            if take > n:
                take = n
            memcpy(self._slot.buf + self._slot.length, p, take)
            self._slot.length += take
            p += take
            n -= take
            lsn += take
            if self._slot.length == self.sink._size:
                self.sink._commit(self._slot)
                self._slot = NULL
        return 0

    cdef int _sink_commit(self, uint32_t flags, uint64_t target) noexcept nogil:
        """Hand the chunk being filled (an empty one if none) to the worker
        with *flags*."""
        if self._slot == NULL:
            if flags == 0:
                return 0
            self._slot = self.sink._acquire(self._write_lsn)
            if self._slot == NULL:
                return self._sink_error()
        self._slot.flags |= flags
        self._slot.target = target
        self.sink._commit(self._slot)
        self._slot = NULL
        return 0

    cdef int _append_sink(self, const unsigned char *p, size_t n) noexcept nogil:
        """_append for compressed output: the same checks and splitting,
        bytes go to the queue."""
        cdef uint64_t off, chunk, ok, segno
        if self._check_usable() < 0:
            return -1
        while n > 0:
            off = self._write_lsn & self._segmask
            if not self._sink_seg_open:
                segno = self._write_lsn // self._segsize
                snprintf(self._fname, sizeof(self._fname), "%08X%08X%08X%s.partial",
                         self._timeline, <uint32_t>(segno // self._segs_per_id),
                         <uint32_t>(segno % self._segs_per_id), self._c_suffix())
                self._sink_seg_open = True
            chunk = self._segsize - off
            if chunk > n:
                chunk = n
            ok = wp_check(&self._pages, self._write_lsn, p, chunk)
            if ok and self._sink_put(p, ok) < 0:
                return -1
            self._write_lsn += ok
            if ok < chunk:
                return self._page_error()
            p += chunk
            n -= chunk
            if self._write_lsn & self._segmask == 0:
                if self._sink_commit(CHUNK_SEGMENT_END, self._write_lsn) < 0:
                    return -1
                self._sink_seg_open = False
                if self._check_stop():
                    return 0
        return 0

    cdef const char *_c_suffix(self) noexcept nogil:
        return self._suffix_buf

    cdef int _flush_sink(self, uint64_t target) noexcept nogil:
        """Ask the worker to sync up to *target*, unless a sync is already
        outstanding (its completion wakes the receive loop, which asks again:
        syncs batch themselves while the disk is busy)."""
        if self._poll_sink(0) < 0:
            return -1
        if target <= self._flush_lsn or self._sync_requested > self._flush_lsn:
            return 0
        if self._sink_commit(CHUNK_SYNC, target) < 0:
            return -1
        self._sync_requested = target
        return 0

    cdef int _poll_sink(self, int64_t now) noexcept nogil:
        """Take in what the worker published (flush position, completed
        segments, failure).  With *now*, also hand over a chunk that has
        waited SINK_MAX_DELAY_US for more bytes (the stream went quiet)."""
        cdef uint64_t flushed, completed, completed_end
        cdef bint failed
        if self.sink is None:
            return 0
        self.sink._read_published(&flushed, &completed, &completed_end, &failed)
        if failed:
            return self._sink_error()
        if flushed > self._flush_lsn:
            self._flush_lsn = flushed
        self._segments_completed = completed
        self._completed_end = completed_end
        if now and self._slot != NULL and self._slot.length \
                and now - self._slot_since >= SINK_MAX_DELAY_US:
            return self._sink_commit(0, 0)
        return 0

    cdef int _close_sink(self) noexcept nogil:
        """Queue the end of the stream and wait until the worker has synced
        it; then everything accepted is flushed."""
        cdef uint64_t target = self._flushable()
        if self._sink_commit(CHUNK_CLOSE, target) < 0:
            return -1
        if not self.sink._wait_finished():
            return self._sink_error()
        if self._poll_sink(0) < 0:
            return -1
        if self._flush_lsn < target:
            self._flush_lsn = target
        return 0

    cdef int _flush_sink_wait(self) noexcept nogil:
        cdef uint64_t target = self._flushable()
        if target <= self._flush_lsn:
            return 0
        if self._sink_commit(CHUNK_SYNC, target) < 0:
            return -1
        self._sync_requested = target
        if not self.sink._wait_flushed(target):
            return self._sink_error()
        return self._poll_sink(0)

    # ---- Python API ------------------------------------------------------

    def write(self, uint64_t data_start, data):
        """Write one XLogData message's WAL bytes, which start at *data_start*.

        Raises :class:`WalGapError` when *data_start* is not :attr:`write_lsn`,
        :class:`WalPageError` when a page header is wrong, :class:`OSError`
        when a file cannot be created, preallocated, synced or renamed.
        """
        cdef Py_buffer view
        cdef int rc
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                rc = self._begin(data_start)
                if rc == 0:
                    rc = self._append(<const unsigned char *>view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        if rc < 0:
            raise_errinfo(&self._err, self.directory)

    def flush(self):
        """Make everything written durable (one fdatasync) and return :attr:`flush_lsn`.

        With compressed output: queue a sync and wait until the worker did it."""
        cdef int rc
        with nogil:
            if self.sink is not None:
                rc = self._flush_sink_wait()
            else:
                rc = self._flush()
        if rc < 0:
            raise_errinfo(&self._err, self.directory)
        return self._flush_lsn

    def close(self):
        """Sync and close the open segment, which stays ``.partial``.

        Safe to call twice.  After an earlier error the good bytes before the
        failed page are still synced.
        """
        cdef int rc = 0
        if self._closed:
            return
        if self.sink is not None:
            with nogil:
                rc = self._close_sink()
                self._closed = True
                close(self._dirfd)
                self._dirfd = -1
            if rc < 0:
                raise_errinfo(&self._err, self.directory)
            return
        with nogil:
            if self._fd >= 0:
                rc = self._sync_segment()
                if rc == 0:
                    self._flush_lsn = self._flushable()
                    rc = self._close_segment()
                else:
                    self._close_segment()
                if rc == 0 and self._sync and fsync(self._dirfd) != 0:
                    rc = self._os_error("could not fsync directory", errno, False)
            self._closed = True
            close(self._dirfd)
            self._dirfd = -1
        if rc < 0:
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
        the kernel).  Only this may be reported as flushed."""
        if self.sink is not None and not self._closed:
            self._poll_sink(0)
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
        """Segments filled, synced and renamed to their final name."""
        if self.sink is not None and not self._closed:
            self._poll_sink(0)
        return self._segments_completed

    @property
    def completed_end(self):
        """End LSN of the last segment completed (synced and renamed), 0 if none."""
        if self.sink is not None and not self._closed:
            self._poll_sink(0)
        return self._completed_end

    @property
    def syncs(self):
        """fdatasync calls made (one per flush batch or segment completion)."""
        return self._syncs

    @property
    def current_file(self):
        """Path of the open ``.partial`` file, or None.  With compressed
        output: the ``.partial`` the current segment's bytes go to."""
        if self.sink is not None:
            if not self._sink_seg_open:
                return None
        elif self._fd < 0:
            return None
        return _os.path.join(self.directory, self._fname.decode("ascii"))

    @property
    def closed(self):
        return self._closed

# Sinks: where SegmentWriter puts WAL once it checked it.
#
# SegmentWriter owns what every output shares: the positions, the page
# checks, splitting at segment boundaries, the stop position.  A sink owns
# where the checked bytes go and when they are durable:
#
#   SegmentFiles  plain segment files, written and synced right here in the
#                 receive loop with the file lifecycle of _segfile.pxi;
#   ChunkQueue    compressed output (_chunkqueue.pxi): the bytes are copied
#                 into a bounded queue that a worker thread compresses and
#                 writes (walfast/waldir/compressor.py, through SegmentFile).
#
# The interface is a handful of cdef methods: one vtable call per piece of
# a message (a message crossing a segment boundary is two pieces), never
# per byte.  Every method runs without the GIL and returns 0, or -1 with the
# sink's _err filled.  What became durable comes back through _poll(): a
# plain sink knows at once, the queue once the worker published it.


cdef struct SinkProgress:
    uint64_t flushed            # end of the WAL known durable (--no-sync: handed to the kernel)
    uint64_t completed          # segments completed: durable under their final name
    uint64_t completed_end      # end of the last completed segment, 0 = none
    uint64_t syncs              # fdatasyncs made by the receive loop itself


cdef class WalSink:
    """Where a :class:`SegmentWriter` puts the WAL it checked: plain segment
    files (:class:`SegmentFiles`) or the compressing worker's queue
    (:class:`ChunkQueue`).  Not instantiated directly."""

    cdef ErrInfo _err
    # Files hold whole segments from their first byte (compressed streams):
    # writing must start at a segment boundary.
    cdef bint _whole_segments
    # Readable when the sink published progress for the receive loop to
    # take in (the queue's eventfd); -1 when progress is known at once.
    cdef int _wakeup_fd

    def __cinit__(self):
        self._wakeup_fd = -1

    cdef int _unsupported(self) noexcept nogil:
        return err_state(&self._err, "this sink cannot be written to")

    cdef bint _room(self, size_t n) noexcept nogil:
        """Whether n more bytes (and the commits a segment end or a sync
        asks for) can be taken now without waiting.  Plain files: always."""
        return True

    cdef void _wait_room(self) noexcept nogil:
        """Wait until what the last refused _room asked for is there (for
        callers without a receive loop to wait in)."""
        pass

    cdef int _open(self, uint64_t segno, uint64_t lsn) noexcept nogil:
        """Start writing segment *segno*, at *lsn* (inside it)."""
        return self._unsupported()

    cdef int _write(self, const unsigned char *p, size_t n, uint64_t lsn) noexcept nogil:
        """n checked bytes of the open segment, which land at *lsn*."""
        return self._unsupported()

    cdef int _complete(self, uint64_t end) noexcept nogil:
        """The open segment is full (it ends at *end*): finish it."""
        return self._unsupported()

    cdef int _flush(self, uint64_t target, bint wait) noexcept nogil:
        """Make the WAL up to *target* durable (plain files: now; the queue:
        ask the worker, and with *wait* wait until it did)."""
        return self._unsupported()

    cdef int _close(self, uint64_t target) noexcept nogil:
        """The stream ends at *target*: make it durable and leave an
        incomplete segment under its .partial name."""
        return self._unsupported()

    cdef int _poll(self, SinkProgress *out, int64_t now) noexcept nogil:
        """Copy what is durable into *out*; -1 when the sink failed.  *now*
        (pg time, 0: none) lets the queue hand over a chunk the stream left
        half full for too long."""
        return self._unsupported()

    cdef void _drain_wakeup(self) noexcept nogil:
        pass


@cython.final
cdef class SegmentFiles(WalSink):
    """Plain segment files in *directory*, written and synced in the receive
    loop: ``NAME.partial`` preallocated, pwrite, batched fdatasync, durable
    completion (``_segfile.pxi``).  :class:`SegmentWriter` makes one when it
    is given no sink.

    SegmentFiles(directory, *, timeline, segment_size, sync=True,
                 file_mode=0o600, zero_fill=False, min_free=0)

    A segment is opened as pg_receivewal does for uncompressed output: a new
    file is created and preallocated (with *zero_fill*, for
    ``--synchronous``, also overwritten with zeros); an existing full-size
    ``.partial`` is reopened and fsynced ("in case of a previous crash"),
    one of size 0 counts as new, any other size is refused.

    When a new file cannot be preallocated for lack of space (ENOSPC,
    EDQUOT), or creating it would leave less than *min_free* bytes free,
    the sink is *blocked*: :meth:`_open` returns BLOCKED (the reason in its
    error record), nothing is written or lost, and the caller tries again
    later (the receive loop pauses reading meanwhile).  Writing into a
    reopened file may start at any page (walfast.waldir.resume chooses the
    last valid one); the fsync comes first, so the bytes before the start
    are durable before the start is ever reported flushed.  Mid-segment,
    only an existing full-size file can hold the bytes before the start.
    """

    cdef readonly object directory
    cdef int _dirfd
    cdef uint32_t _timeline
    cdef uint64_t _segsize
    cdef uint64_t _segs_per_id
    cdef int _mode
    cdef bint _zero_fill
    cdef uint64_t _min_free
    cdef SegFile _f
    cdef SinkProgress _prog

    def __cinit__(self):
        self._dirfd = -1
        sf_init(&self._f, True)

    def __init__(self, directory, *, timeline, segment_size, bint sync=True,
                 int file_mode=0o600, bint zero_fill=False, uint64_t min_free=0):
        cdef uint64_t segsize = segment_size
        if not wp_valid_segment_size(segsize):
            raise ValueError(
                f"invalid WAL segment size {segment_size} bytes: must be a power of two "
                f"between 1 MB and 1 GB")
        self.directory = _os.fspath(directory)
        self._timeline = timeline
        self._segsize = segsize
        self._segs_per_id = (<uint64_t>1 << 32) // segsize
        self._mode = file_mode
        self._zero_fill = zero_fill and sync
        self._min_free = min_free
        self._f.sync = sync
        self._dirfd = _os.open(self.directory, _os.O_RDONLY | _os.O_DIRECTORY | _os.O_CLOEXEC)

    def __dealloc__(self):
        # No sync here: dropping a writer without close() is what a crash
        # does, and must be safe the same way.
        sf_abandon(&self._f)
        if self._dirfd >= 0:
            close(self._dirfd)

    cdef int _failed(self) noexcept nogil:
        self._err = self._f.err
        return -1

    cdef int _mid_segment_error(self, uint64_t segno, uint64_t lsn) noexcept nogil:
        self._err.code = ERR_MID_SEGMENT
        self._err.lsn = lsn
        self._err.expected = segno * self._segsize
        err_set_fname(&self._err, self._f.name)
        return -1

    cdef int _blocked(self, const char *what, int err_no, const char *name) noexcept nogil:
        err_os(&self._err, what, err_no, name)
        return BLOCKED

    cdef int _open(self, uint64_t segno, uint64_t lsn) noexcept nogil:
        cdef char name[SEGFILE_NAME_MAX]
        cdef uint64_t offset = lsn & (self._segsize - 1)
        cdef uint64_t size
        cdef statvfs vfs
        snprintf(name, sizeof(name), "%08X%08X%08X.partial", self._timeline,
                 <uint32_t>(segno // self._segs_per_id), <uint32_t>(segno % self._segs_per_id))
        sf_abandon(&self._f)        # (a file left open by a failed completion)
        if offset == 0 and self._min_free and fstatvfs(self._dirfd, &vfs) == 0 \
                and <uint64_t>vfs.f_bavail * vfs.f_frsize < self._segsize + self._min_free:
            return self._blocked("creating write-ahead log file would leave less free space "
                                 "than --min-free", ENOSPC, name)
        self._f.release_behind = not self._zero_fill
        if sf_open(&self._f, self._dirfd, name, O_CREAT if offset == 0 else 0, self._mode,
                   offset, &size) < 0:
            if self._f.err.err_no == ENOENT and offset != 0:
                return self._mid_segment_error(segno, lsn)
            return self._failed()
        if size == 0:
            if offset != 0:
                sf_abandon(&self._f)
                return self._mid_segment_error(segno, lsn)
            if sf_preallocate(&self._f, self._segsize, self._zero_fill) < 0:
                if self._f.err.code == ERR_OS and self._f.err.err_no in (ENOSPC, EDQUOT):
                    # Left empty, which counts as new: try again once there is space.
                    self._err = self._f.err
                    return BLOCKED
                return self._failed()
        elif size == self._segsize:
            if sf_sync_existing(&self._f) < 0:
                return self._failed()
        else:
            sf_abandon(&self._f)
            self._err.code = ERR_SEGMENT_SIZE
            self._err.found = size
            self._err.expected = self._segsize
            err_set_fname(&self._err, name)
            return -1
        return 0

    cdef int _write(self, const unsigned char *p, size_t n, uint64_t lsn) noexcept nogil:
        if sf_write(&self._f, p, n, lsn & (self._segsize - 1)) < 0:
            return self._failed()
        return 0

    cdef int _complete(self, uint64_t end) noexcept nogil:
        cdef char final[SEGFILE_NAME_MAX]
        memcpy(final, self._f.name, 24)      # NAME.partial -> NAME
        final[24] = 0
        if sf_complete(&self._f, self._dirfd, final, NULL) < 0:
            return self._failed()
        self._prog.completed += 1
        self._prog.completed_end = end
        self._prog.flushed = end
        self._prog.syncs = self._f.syncs
        return 0

    cdef int _flush(self, uint64_t target, bint wait) noexcept nogil:
        if self._f.fd >= 0 and sf_sync(&self._f, True) < 0:
            self._prog.syncs = self._f.syncs
            return self._failed()
        self._prog.syncs = self._f.syncs
        if target > self._prog.flushed:
            self._prog.flushed = target
        return 0

    cdef int _close(self, uint64_t target) noexcept nogil:
        cdef int rc = 0
        if self._f.fd >= 0:
            rc = sf_close(&self._f)
            self._prog.syncs = self._f.syncs
            if rc < 0:
                rc = self._failed()
            elif target > self._prog.flushed:
                self._prog.flushed = target
        close(self._dirfd)
        self._dirfd = -1
        return rc

    cdef int _poll(self, SinkProgress *out, int64_t now) noexcept nogil:
        out[0] = self._prog
        return 0

    @property
    def syncs(self):
        """fdatasyncs of segment data."""
        return self._f.syncs

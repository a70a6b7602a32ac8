# The life of one segment file, defined once for plain and compressed output
# (pg_receivewal's walmethods.c):
#
#   create    open NAME.partial.  A plain segment is preallocated to the
#             segment size (posix_fallocate: a full disk fails here, as
#             ENOSPC, not later inside a write) and, with zero_fill, also
#             overwritten with zeros and synced (sf_zero_fill).  A compressed
#             file has no size to preallocate.
#   write     pwrite at an offset, straight from the caller's buffer; every
#             WRITE_BEHIND bytes start the writeback of what was written
#             since the last step and release from the page cache the range
#             the step before started (sf_write_behind).
#   sync      fdatasync.  The first sync of a new file also fsyncs its
#             directory: the name must survive a crash before any byte in it
#             is reported flushed, but not sooner.
#   complete  sync, release the file's pages, close, rename NAME.partial ->
#             NAME (possibly into another directory), fsync the directory
#             (both directories when they differ).
#   close     sync, release, close, fsync the directory: the file keeps its
#             .partial name.
# and, for the compressing worker's restart rule, move (rename while open,
# durably) and discard (close and remove, nothing synced).
#
# Every step runs without the GIL: the receive loop calls these functions
# directly (SegmentFiles in _sinks.pxi), the compressing worker through
# SegmentFile below, whose methods release the GIL.  With sync off
# (--no-sync) the same steps run without fsync or fdatasync.

cdef enum:
    # Start writeback once this much was written since the last start: big
    # enough for the disk to merge writes, small enough that the fdatasync
    # completing a segment has little left to do.
    WRITE_BEHIND = 1048576
    # Zero-filling writes are page-sized, as pg_receivewal's (sf_zero_fill).
    ZERO_FILL_CHUNK = 8192
    # File names: a segment's 24 characters, a compression suffix,
    # ".partial" and ".tmp" fit.
    SEGFILE_NAME_MAX = 48


cdef struct SegFile:
    int dirfd                   # the directory the file is in (not owned)
    int fd                      # -1: not open
    char name[SEGFILE_NAME_MAX] # its name there
    bint sync                   # fsync and fdatasync at all (not --no-sync)
    bint release_behind         # release written ranges as it goes (not with zero_fill)
    bint dirty                  # written since the last sync
    bint name_unsynced          # created; its directory entry not fsynced yet
    uint64_t writeback_from     # offset up to which writeback was started
    uint64_t release_from       # start of the range the last write-behind step started
    uint64_t syncs              # fdatasyncs of data (cumulative over the files)
    uint64_t dir_syncs          # fsyncs of directories (cumulative)
    ErrInfo err


cdef void sf_init(SegFile *f, bint sync) noexcept nogil:
    memset(f, 0, sizeof(SegFile))
    f.dirfd = -1
    f.fd = -1
    f.sync = sync


cdef inline int sf_error(SegFile *f, const char *what, int err_no, bint with_file) noexcept nogil:
    return err_os(&f.err, what, err_no, f.name if with_file else NULL)


cdef int sf_set_name(SegFile *f, int dirfd, const char *name) noexcept nogil:
    cdef size_t n = strlen(name)
    if n >= SEGFILE_NAME_MAX:
        return sf_error(f, "file name too long for a write-ahead log file", EINVAL, False)
    f.dirfd = dirfd
    memcpy(f.name, name, n + 1)
    return 0


cdef int sf_open(SegFile *f, int dirfd, const char *name, int oflags, int mode,
                 uint64_t start, uint64_t *size) noexcept nogil:
    """create, first half: open *name* in *dirfd* for writing at offset
    *start*, with *oflags* (O_CREAT, O_TRUNC); *size* gets its size."""
    cdef stat st
    cdef int fd, rc
    if sf_set_name(f, dirfd, name) < 0:
        return -1
    fd = openat(dirfd, name, O_RDWR | O_CLOEXEC | oflags, mode)
    if fd < 0:
        return sf_error(f, "could not open write-ahead log file", errno, True)
    if fstat(fd, &st) != 0:
        rc = errno
        close(fd)
        return sf_error(f, "could not stat write-ahead log file", rc, True)
    f.fd = fd
    f.dirty = False
    f.name_unsynced = False
    f.writeback_from = start
    f.release_from = start
    size[0] = <uint64_t>st.st_size
    return 0


cdef void sf_discard_new(SegFile *f) noexcept nogil:
    # Leave an empty file (which counts as new next time), not a
    # half-allocated one; the error is already recorded.
    ftruncate(f.fd, 0)
    close(f.fd)
    f.fd = -1


cdef int sf_preallocate(SegFile *f, uint64_t size, bint zero_fill) noexcept nogil:
    """create, second half, for an empty plain segment: reserve *size*
    bytes, zero-fill them if asked.  On failure the file is left empty and
    closed."""
    cdef int rc = posix_fallocate(f.fd, 0, <off_t>size)
    if rc != 0:
        sf_error(f, "could not preallocate write-ahead log file", rc, True)
        sf_discard_new(f)
        return -1
    if zero_fill:
        f.release_behind = False
        if sf_zero_fill(f, size) < 0:
            sf_discard_new(f)
            return -1
    # A crash before the first sync leaves no file, or an empty or
    # zero-filled one, which a restart handles (a new segment, or a page
    # scan that trusts nothing); fdatasync covers the size and extents
    # posix_fallocate set.  This saves two of pg_receivewal's four syncs per
    # segment.
    sf_created(f)
    return 0


cdef inline void sf_created(SegFile *f) noexcept nogil:
    """The file's name is new: its directory is fsynced with its first sync."""
    f.name_unsynced = f.sync


cdef int sf_zero_fill(SegFile *f, uint64_t size) noexcept nogil:
    """Overwrite a new, preallocated file with zeros and sync it.

    For --synchronous: every fdatasync into blocks that posix_fallocate left
    "unwritten" also commits the file system journal (the extents change to
    written), a second I/O on a synchronous primary's commit path; zeroed
    blocks make each later fdatasync a data write only, as for PostgreSQL's
    own zero-filled WAL files.  The zeros go in page-sized writes, as
    pg_receivewal writes them: bigger writes make the page cache hold the
    file in large folios, and every small write + fdatasync after that
    writes back a whole folio (benchmarks/README.md, "Why the engine writes
    the way it does"; tests/test_segwriter.py checks the bytes written).
    """
    cdef unsigned char zeros[ZERO_FILL_CHUNK]
    cdef uint64_t off = 0
    cdef ssize_t w
    memset(zeros, 0, ZERO_FILL_CHUNK)
    while off < size:
        w = pwrite(f.fd, zeros, ZERO_FILL_CHUNK, <off_t>off)
        if w < 0 and errno == EINTR:
            continue
        if w <= 0:
            return sf_error(f, "could not zero-fill write-ahead log file",
                            errno if w < 0 else ENOSPC, True)
        off += <uint64_t>w
    if fdatasync(f.fd) != 0:
        return sf_error(f, "could not fdatasync write-ahead log file", errno, True)
    return 0


cdef int sf_sync_existing(SegFile *f) noexcept nogil:
    """An existing full-size file is reopened: a previous run may have died
    before syncing what it wrote ("in case of a previous crash")."""
    if f.sync and fsync(f.fd) != 0:
        sf_error(f, "could not fsync existing write-ahead log file", errno, True)
        close(f.fd)
        f.fd = -1
        return -1
    return 0


cdef int sf_write(SegFile *f, const unsigned char *p, size_t n, uint64_t off) noexcept nogil:
    """write: all n bytes at p to file offset *off*."""
    cdef ssize_t w
    cdef uint64_t end = off + n
    while n > 0:
        w = pwrite(f.fd, p, n, <off_t>off)
        if w < 0:
            if errno == EINTR:
                continue
            return sf_error(f, "could not write to write-ahead log file", errno, True)
        if w == 0:
            # No errno for a zero-byte write: assume the disk is full, as
            # pg_receivewal does.
            return sf_error(f, "could not write to write-ahead log file", ENOSPC, True)
        p += w
        n -= <size_t>w
        off += <uint64_t>w
        f.dirty = True
    sf_write_behind(f, end)
    return 0


cdef inline void sf_write_behind(SegFile *f, uint64_t end) noexcept nogil:
    """Once WRITE_BEHIND bytes up to offset *end* wait, start their
    writeback without waiting for it (sync_file_range WRITE, as
    PostgreSQL's wal_writer_flush_after): the disk works while we receive,
    and the fdatasync that makes the file durable has little left to do.
    Durability still comes only from fdatasync; errors surface there.  With
    --no-sync too: dirty pages then never pile up until the kernel throttles
    this writer, which cost more CPU than it saved.  For the compressing
    worker it keeps the fdatasync at a segment's end from stalling the
    queue, and with it the receive loop (benchmarks/README.md, "Why the
    engine writes the way it does").

    The range whose writeback the previous step started (at least
    WRITE_BEHIND bytes ago, so usually on disk by now) is released from the
    page cache (sf_release).  Not with zero_fill (--synchronous): the zeros
    took all the file's pages at its creation, completion frees them for the
    next file, and a release call costs most when the CPUs are busy, which
    is when a synchronous standby's commits wait on us."""
    if end - f.writeback_from >= WRITE_BEHIND:
        if f.release_behind:
            sf_release(f, f.release_from, f.writeback_from)
            f.release_from = f.writeback_from
        sync_file_range(f.fd, <off_t>f.writeback_from, <off_t>(end - f.writeback_from),
                        SYNC_FILE_RANGE_WRITE)
        f.writeback_from = end


cdef inline void sf_release(SegFile *f, uint64_t start, uint64_t end) noexcept nogil:
    """Drop the file's cached pages in [start, end), or from *start* to its
    end when *end* is 0 (POSIX_FADV_DONTNEED), as PostgreSQL's xlog.c does
    when it closes a WAL segment: nothing reads these bytes back in normal
    operation, and writing into pages just released is much cheaper than
    into fresh ones (benchmarks/README.md, "Why the engine writes the way it
    does").

    Safe at any time: the kernel drops only clean pages that are not under
    writeback (dirty ones just get writeback started), and callers pass only
    bytes that are never written again.  The partial page at *end* is kept."""
    if end == 0 or end > start:
        posix_fadvise(f.fd, <off_t>start, <off_t>(end - start if end else 0),
                      POSIX_FADV_DONTNEED)


cdef int sf_fsync_dir(SegFile *f, int dirfd) noexcept nogil:
    if fsync(dirfd) != 0:
        return sf_error(f, "could not fsync directory", errno, False)
    f.dir_syncs += 1
    return 0


cdef int sf_sync(SegFile *f, bint name_too) noexcept nogil:
    """sync: make what was written durable, and the file's name when
    *name_too* (callers that fsync the directory right after pass False)."""
    if f.dirty and f.sync:
        if fdatasync(f.fd) != 0:
            return sf_error(f, "could not fdatasync write-ahead log file", errno, True)
        f.syncs += 1
    f.dirty = False
    if name_too and f.name_unsynced:
        if sf_fsync_dir(f, f.dirfd) < 0:
            return -1
        f.name_unsynced = False
    return 0


cdef int sf_close_fd(SegFile *f) noexcept nogil:
    cdef int rc = close(f.fd)
    f.fd = -1
    if rc != 0:
        return sf_error(f, "could not close write-ahead log file", errno, True)
    return 0


cdef int sf_complete(SegFile *f, int final_dirfd, const char *final_name,
                     const char *obsolete) noexcept nogil:
    """complete: sync, release, close, rename to *final_name* in
    *final_dirfd*, remove *obsolete* there (a name the new file supersedes;
    NULL: none), fsync the directory (and the source directory when it
    differs).  Afterwards the file is durable under its final name."""
    cdef int from_dirfd = f.dirfd
    if sf_sync(f, False) < 0:            # the directory fsync below covers the name
        return -1
    sf_release(f, 0, 0)
    if sf_close_fd(f) < 0:
        return -1
    if renameat(from_dirfd, f.name, final_dirfd, final_name) != 0:
        return sf_error(f, "could not rename write-ahead log file", errno, True)
    if sf_set_name(f, final_dirfd, final_name) < 0:
        return -1
    if obsolete != NULL and unlinkat(final_dirfd, obsolete, 0) != 0 and errno != ENOENT:
        return err_os(&f.err, "could not remove write-ahead log file", errno, obsolete)
    if f.sync:
        if sf_fsync_dir(f, final_dirfd) < 0:
            return -1
        if from_dirfd != final_dirfd and sf_fsync_dir(f, from_dirfd) < 0:
            return -1
    f.name_unsynced = False
    return 0


cdef int sf_close(SegFile *f) noexcept nogil:
    """close, leaving the file under its (.partial) name: sync, release,
    close, fsync the directory.  The file is closed even when the sync
    fails."""
    cdef int rc = sf_sync(f, False)       # the directory fsync below covers the name
    if rc == 0:
        sf_release(f, 0, 0)
        rc = sf_close_fd(f)
    else:
        close(f.fd)
        f.fd = -1
    if rc == 0 and f.sync and sf_fsync_dir(f, f.dirfd) < 0:
        return -1
    f.name_unsynced = False
    return rc


cdef int sf_move(SegFile *f, int new_dirfd, const char *new_name) noexcept nogil:
    """move: the open file takes *new_name* in *new_dirfd* (replacing a file
    of that name), durably: its data is synced first, then both directories."""
    cdef int from_dirfd = f.dirfd
    if sf_sync(f, False) < 0:
        return -1
    if renameat(from_dirfd, f.name, new_dirfd, new_name) != 0:
        return sf_error(f, "could not rename write-ahead log file", errno, True)
    if sf_set_name(f, new_dirfd, new_name) < 0:
        return -1
    if f.sync:
        if sf_fsync_dir(f, new_dirfd) < 0:
            return -1
        if from_dirfd != new_dirfd and sf_fsync_dir(f, from_dirfd) < 0:
            return -1
    f.name_unsynced = False
    return 0


cdef int sf_discard(SegFile *f) noexcept nogil:
    """discard: close and remove the file, syncing nothing (nothing in it
    was ever reported)."""
    close(f.fd)
    f.fd = -1
    if unlinkat(f.dirfd, f.name, 0) != 0:
        return sf_error(f, "could not remove write-ahead log file", errno, True)
    return 0


cdef inline void sf_abandon(SegFile *f) noexcept nogil:
    """Close without any sync or rename: what a crash leaves."""
    if f.fd >= 0:
        close(f.fd)
        f.fd = -1


@cython.final
cdef class SegmentFile:
    """One segment file written through the engine's file lifecycle: the
    compressing worker's files (plain segments go through the same
    functions in the receive loop).  Every method releases the GIL while it
    works.

    SegmentFile(directory, name, *, sync=True, file_mode=0o600,
                label="write-ahead log file")

    Creates *name* in *directory* (an existing file is truncated; no
    preallocation).  :meth:`write` appends, starting writeback every
    :data:`WRITE_BEHIND_BYTES` and releasing written pages a step later;
    :meth:`sync` makes it durable (its name with the first sync);
    :meth:`complete` renames it to its final name, :meth:`close` leaves it
    under its name; :meth:`move` renames it while open, :meth:`discard`
    removes it.  With ``sync=False`` nothing is ever fsynced.  Errors are
    ``OSError(errno, "<what> <label>[ at <lsn>]: <text>", path)``.
    """

    cdef SegFile _f
    cdef readonly object directory
    cdef int _dirfds[4]             # directories opened here (the file's, a rename's target)
    cdef int _ndirfds
    cdef str _label
    cdef uint64_t _size
    #: The WAL position being written, named in error messages (None: not named).
    cdef public object lsn

    def __cinit__(self):
        sf_init(&self._f, True)
        self._ndirfds = 0

    def __init__(self, directory, name, *, bint sync=True, int file_mode=0o600,
                 label="write-ahead log file"):
        cdef bytes bname = _os.fsencode(name)
        cdef const char *cname
        cdef uint64_t size
        cdef int rc, dirfd
        if b"/" in bname or b"\0" in bname or not bname:
            raise ValueError(f"invalid file name {name!r}")
        self._f.sync = sync
        self._f.release_behind = True
        self._label = label
        self.directory = _os.fspath(directory)
        dirfd = self._open_dir(self.directory)
        cname = bname
        with nogil:
            rc = sf_open(&self._f, dirfd, cname, O_CREAT | O_TRUNC, file_mode, 0, &size)
            if rc == 0:
                sf_created(&self._f)
        if rc < 0:
            self._raise()

    def __dealloc__(self):
        # Not close(): dropping the object is what a crash leaves.
        sf_abandon(&self._f)
        self._close_dirs(-1)

    cdef int _open_dir(self, directory) except -1:
        cdef int fd
        self._close_dirs(self._f.dirfd)         # keep only the file's own
        fd = _os.open(directory, _os.O_RDONLY | _os.O_DIRECTORY | _os.O_CLOEXEC)
        self._dirfds[self._ndirfds] = fd
        self._ndirfds += 1
        return fd

    cdef void _close_dirs(self, int keep) noexcept:
        cdef int i, n = 0
        for i in range(self._ndirfds):
            if self._dirfds[i] == keep:
                self._dirfds[n] = keep
                n += 1
            else:
                close(self._dirfds[i])
        self._ndirfds = n

    cdef int _raise(self) except -1:
        cdef ErrInfo *e = &self._f.err
        what = (e.what.decode() if e.what != NULL else "").replace(
            "write-ahead log file", self._label)
        if self.lsn is not None:
            what += f" at {_fmt(self.lsn)}"
        fname = e.fname.decode("ascii", "replace")
        path = _os.path.join(self.directory, fname) if fname else self.directory
        raise OSError(e.err_no, f"{what}: {_os.strerror(e.err_no)}", path)

    cdef int _check_open(self) except -1:
        if self._f.fd < 0:
            raise ValueError(f"{self._label} {self.name!r} is closed")
        return 0

    def write(self, data):
        """Append *data* (a bytes-like object)."""
        cdef Py_buffer view
        cdef int rc
        self._check_open()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                rc = sf_write(&self._f, <const unsigned char *>view.buf, <size_t>view.len,
                              self._size)
                if rc == 0:
                    self._size += <uint64_t>view.len
        finally:
            PyBuffer_Release(&view)
        if rc < 0:
            self._raise()

    def sync(self):
        """fdatasync (and, the first time, fsync the directory)."""
        cdef int rc
        self._check_open()
        with nogil:
            rc = sf_sync(&self._f, True)
        if rc < 0:
            self._raise()

    def move(self, directory, name):
        """Rename the open file to *name* in *directory* (replacing a file of
        that name; the same file system), durably: data, then both
        directories.  Writing goes on in the moved file."""
        cdef bytes bname = _os.fsencode(name)
        cdef const char *cname = bname
        cdef int rc, dirfd
        self._check_open()
        directory = _os.fspath(directory)
        dirfd = self._open_dir(directory)
        with nogil:
            rc = sf_move(&self._f, dirfd, cname)
        if rc < 0:
            self._raise()
        self.directory = directory

    def complete(self, name, directory=None, *, obsolete=None):
        """Sync, release, close and rename to *name* (in *directory*, default
        the file's own), removing *obsolete* there (a name the file
        supersedes), then fsync the directories."""
        cdef bytes bname = _os.fsencode(name)
        cdef bytes bobsolete = _os.fsencode(obsolete) if obsolete is not None else None
        cdef const char *cname = bname
        cdef const char *cobsolete = NULL
        cdef int rc, dirfd
        self._check_open()
        directory = self.directory if directory is None else _os.fspath(directory)
        dirfd = self._f.dirfd if directory == self.directory else self._open_dir(directory)
        if bobsolete is not None:
            cobsolete = bobsolete
        with nogil:
            rc = sf_complete(&self._f, dirfd, cname, cobsolete)
        self.directory = directory
        self._close_dirs(-1)
        if rc < 0:
            self._raise()

    def close(self):
        """Sync, release, close and fsync the directory: the file keeps its name."""
        cdef int rc
        self._check_open()
        with nogil:
            rc = sf_close(&self._f)
        self._close_dirs(-1)
        if rc < 0:
            self._raise()

    def discard(self):
        """Close and remove the file; nothing is synced."""
        cdef int rc
        self._check_open()
        with nogil:
            rc = sf_discard(&self._f)
        self._close_dirs(-1)
        if rc < 0:
            self._raise()

    def abandon(self):
        """Close without syncing or renaming, as a crash would leave the file."""
        sf_abandon(&self._f)
        self._close_dirs(-1)

    @property
    def name(self):
        return self._f.name.decode("ascii", "replace")

    @property
    def path(self):
        return _os.path.join(self.directory, self.name)

    @property
    def size(self):
        """Bytes written."""
        return self._size

    @property
    def closed(self):
        return self._f.fd < 0

    @property
    def syncs(self):
        """fdatasyncs of the file's data."""
        return self._f.syncs

    @property
    def dir_syncs(self):
        """fsyncs of its directories."""
        return self._f.dir_syncs

    @property
    def writeback_from(self):
        """Offset up to which writeback was started."""
        return self._f.writeback_from

    @property
    def release_from(self):
        """Offset up to which written pages were released while writing
        (completing or closing the file releases all of them)."""
        return self._f.release_from


#: Bytes written between two writeback starts (plain and compressed files).
WRITE_BEHIND_BYTES = WRITE_BEHIND

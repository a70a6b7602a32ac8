# ChunkQueue: the compressed-output sink, a bounded hand-over from the
# receive loop to the compressing worker (walfast/waldir/compressor.py).
#
# The receive loop runs without the GIL and must never wait for a
# compressor; the worker is a Python thread (zlib, lz4 and zstandard release
# the GIL while they compress).  Between them sits a ring of *nchunks*
# fixed-size buffers of *chunk_size* bytes, allocated once:
#
#   producer (SegmentWriter, as its sink)     consumer (worker thread)
#   ------------------------------------      ------------------------
#   take a free slot, memcpy WAL into it      get()      oldest committed slot
#   commit it: full, segment end, sync        view(i)    its bytes (memoryview)
#     request, close, or the loop idled       release(i) the slot is free again
#   wait (nogil) while no slot is free        publish(flushed=, completed=)
#     = backpressure: the socket is not       fail(exc)  stop everything
#     read, TCP slows the server down
#
# Memory bound: nchunks * chunk_size bytes of received WAL waiting for
# compression (8 x 1 MiB by default), whatever the compressor's speed.
#
# A slot holds the bytes of one segment only, starting at *lsn*; its flags
# say what the worker must do after compressing them:
#   CHUNK_SEGMENT_END  the segment is complete: finish the frame, sync,
#                      rename NAME.gz.partial -> NAME.gz
#   CHUNK_SYNC         flush the compressor and fdatasync; then *target* may
#                      be reported flushed
#   CHUNK_CLOSE        the stream ends: finish the frame, sync, keep the
#                      .partial name; the worker exits
#
# What the worker made durable comes back through publish(): the flushed LSN
# (only after the fdatasync that covers it) and the completed segments.  The
# writer takes it in under the mutex (_poll) and the receive loop is woken
# through an eventfd it polls next to the socket, so a status update goes
# out as soon as a sync finishes.  A worker failure (fail()) is sticky: every
# later producer call returns -1, and the writer raises the worker's
# exception from write(), flush(), close() or CopyStream.run().

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_cond_init(pthread_cond_t *c, const void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_broadcast(pthread_cond_t *c)

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)

# Compressed output: a partly filled chunk goes to the worker after this long
# without filling up, so a quiet stream still reaches the file.
cdef int64_t SINK_MAX_DELAY_US = 200000

from libc.stdlib cimport malloc, free
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ

cdef enum:
    CHUNK_SEGMENT_END = 1
    CHUNK_SYNC = 2
    CHUNK_CLOSE = 4

CHUNK_SEGMENT_END_FLAG = CHUNK_SEGMENT_END
CHUNK_SYNC_FLAG = CHUNK_SYNC
CHUNK_CLOSE_FLAG = CHUNK_CLOSE

cdef struct ChunkSlot:
    unsigned char *buf
    size_t length
    uint64_t lsn            # LSN of buf[0]
    uint64_t target         # CHUNK_SYNC / CHUNK_CLOSE: the LSN that may be reported flushed
    uint32_t flags


@cython.final
cdef class ChunkQueue(WalSink):
    """Bounded queue of WAL chunks from the receive loop to a compressing
    worker thread: the sink of compressed output.

    ChunkQueue(nchunks=8, chunk_size=1 MiB)

    At most ``nchunks * chunk_size`` bytes of WAL wait for the worker; when
    every slot is taken the receive loop waits (backpressure).  The producer
    side is the :class:`SegmentWriter` it is given to (as its sink); the
    consumer side is :meth:`get`, :meth:`view`, :meth:`release`,
    :meth:`publish` and :meth:`fail`.
    """

    cdef ChunkSlot *_slots
    cdef uint32_t _n
    cdef size_t _size
    cdef pthread_mutex_t _mu
    cdef pthread_cond_t _cond
    cdef bint _locks_ready
    cdef int _efd
    # Ring state, all under _mu.  Slots are used in order: _tail is the next
    # to fill, _head the next to hand to the worker.
    cdef uint32_t _head
    cdef uint32_t _tail
    cdef uint32_t _used           # slots not free: filling + committed + in the worker's hands
    cdef uint32_t _ready          # committed, not yet handed out
    cdef uint32_t _max_used
    cdef uint64_t _waits          # times the producer had to wait for a free slot
    cdef bint _producer_waiting   # the receive loop waits for a free slot (eventfd it)
    cdef uint32_t _room_needed    # the free slots it waits for
    # Published by the worker.
    cdef uint64_t _flushed
    cdef uint64_t _completed
    cdef uint64_t _completed_end
    cdef bint _failed
    cdef bint _finished           # the worker handled CHUNK_CLOSE
    cdef bint _shutdown           # nothing more will be committed (get() returns None when drained)
    cdef readonly object error    # the worker's exception, once failed
    # Producer side (the receive loop only; no lock).
    cdef ChunkSlot *_slot         # the chunk being filled
    cdef int64_t _slot_since      # pg time its first byte arrived
    cdef uint64_t _sync_requested # target of the last sync request
    cdef uint64_t _next_lsn       # where the next byte lands

    def __cinit__(self):
        self._efd = -1
        self._whole_segments = True

    def __init__(self, nchunks=8, chunk_size=1 << 20):
        cdef uint32_t i
        if not 2 <= nchunks <= 1024:
            raise ValueError(f"nchunks must be between 2 and 1024, not {nchunks}")
        if not 4096 <= chunk_size <= (1 << 30):
            raise ValueError(f"chunk_size must be between 4 kB and 1 GB, not {chunk_size}")
        self._n = nchunks
        self._size = chunk_size
        self._slots = <ChunkSlot *>malloc(sizeof(ChunkSlot) * self._n)
        if self._slots == NULL:
            raise MemoryError()
        for i in range(self._n):
            self._slots[i].buf = NULL
        for i in range(self._n):
            self._slots[i].buf = <unsigned char *>malloc(self._size)
            if self._slots[i].buf == NULL:
                raise MemoryError()
        pthread_mutex_init(&self._mu, NULL)
        pthread_cond_init(&self._cond, NULL)
        self._locks_ready = True
        self._efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self._efd < 0:
            raise OSError(errno, _os.strerror(errno), "eventfd")
        self._wakeup_fd = self._efd
        self._err.queue = <void *>self

    def __dealloc__(self):
        cdef uint32_t i
        if self._slots != NULL:
            for i in range(self._n):
                if self._slots[i].buf != NULL:
                    free(self._slots[i].buf)
            free(self._slots)
        if self._locks_ready:
            pthread_cond_destroy(&self._cond)
            pthread_mutex_destroy(&self._mu)
        if self._efd >= 0:
            close(self._efd)

    # ---- producer side (the receive loop, nogil; caller holds no lock) -----

    cdef inline void _wake(self) noexcept nogil:
        # Caller holds _mu.
        pthread_cond_broadcast(&self._cond)

    cdef bint _room(self, size_t n) noexcept nogil:
        """Free slots for n more bytes plus one (a segment end or a sync
        request may need an empty chunk).  When there are not, the producer
        is told through the eventfd once the worker frees a chunk, so the
        receive loop can wait in poll(), where signals and timers reach it,
        instead of on the condition variable."""
        cdef size_t have = (self._size - self._slot.length) if self._slot != NULL else 0
        cdef uint32_t need = 1
        cdef bint ok
        if n > have:
            need += <uint32_t>((n - have + self._size - 1) // self._size)
        if need > self._n - (1 if self._slot != NULL else 0):
            # A message larger than the whole queue (tiny test queues): every
            # slot but the one being filled free is the most there can be;
            # the rest fills as the worker empties it.
            need = self._n - (1 if self._slot != NULL else 0)
        pthread_mutex_lock(&self._mu)
        ok = self._failed or self._n - self._used >= need
        if not ok:
            self._waits += 1
            self._producer_waiting = True
            self._room_needed = need
        pthread_mutex_unlock(&self._mu)
        return ok

    cdef void _wait_room(self) noexcept nogil:
        pthread_mutex_lock(&self._mu)
        while not self._failed and self._n - self._used < self._room_needed:
            pthread_cond_wait(&self._cond, &self._mu)
        pthread_mutex_unlock(&self._mu)

    cdef ChunkSlot *_acquire(self, uint64_t lsn) noexcept nogil:
        """A free slot to fill from *lsn* on; waits while none is free.
        NULL when the worker failed."""
        cdef ChunkSlot *s
        pthread_mutex_lock(&self._mu)
        if self._used == self._n and not self._failed:
            self._waits += 1
            while self._used == self._n and not self._failed:
                pthread_cond_wait(&self._cond, &self._mu)
        if self._failed:
            pthread_mutex_unlock(&self._mu)
            return NULL
        s = &self._slots[self._tail]
        self._tail = (self._tail + 1) % self._n
        self._used += 1
        if self._used > self._max_used:
            self._max_used = self._used
        pthread_mutex_unlock(&self._mu)
        s.length = 0
        s.lsn = lsn
        s.target = 0
        s.flags = 0
        return s

    cdef void _hand_over(self, ChunkSlot *s) noexcept nogil:
        """Hand a filled slot (flags and target set) to the worker."""
        pthread_mutex_lock(&self._mu)
        self._ready += 1
        self._wake()
        pthread_mutex_unlock(&self._mu)

    cdef int _worker_failed(self) noexcept nogil:
        self._err.code = ERR_SINK
        self._err.what = "the compressing worker failed"
        return -1

    cdef int _commit(self, uint32_t flags, uint64_t target) noexcept nogil:
        """Hand the chunk being filled (an empty one if none) to the worker
        with *flags*."""
        if self._slot == NULL:
            if flags == 0:
                return 0
            self._slot = self._acquire(self._next_lsn)
            if self._slot == NULL:
                return self._worker_failed()
        self._slot.flags |= flags
        self._slot.target = target
        self._hand_over(self._slot)
        self._slot = NULL
        return 0

    cdef int _read_published(self, SinkProgress *out) noexcept nogil:
        cdef bint failed
        pthread_mutex_lock(&self._mu)
        out.flushed = self._flushed
        out.completed = self._completed
        out.completed_end = self._completed_end
        failed = self._failed
        pthread_mutex_unlock(&self._mu)
        out.syncs = 0               # the worker syncs, not the receive loop
        return self._worker_failed() if failed else 0

    # ---- the sink interface (see _sinks.pxi) ----

    cdef int _open(self, uint64_t segno, uint64_t lsn) noexcept nogil:
        # (at a segment's start: SegmentWriter checks that, _whole_segments)
        self._next_lsn = lsn
        return 0

    cdef int _write(self, const unsigned char *p, size_t n, uint64_t lsn) noexcept nogil:
        """Copy the n bytes at p, which land at *lsn*, into chunks; a full
        chunk goes to the worker.  Waits for a free chunk when all are taken."""
        cdef size_t take
        while n > 0:
            if self._slot == NULL:
                self._slot = self._acquire(lsn)
                if self._slot == NULL:
                    return self._worker_failed()
                self._slot_since = pg_now()
            take = self._size - self._slot.length
            if take > n:
                take = n
            memcpy(self._slot.buf + self._slot.length, p, take)
            self._slot.length += take
            p += take
            n -= take
            lsn += take
            if self._slot.length == self._size:
                self._hand_over(self._slot)
                self._slot = NULL
        self._next_lsn = lsn
        return 0

    cdef int _complete(self, uint64_t end) noexcept nogil:
        return self._commit(CHUNK_SEGMENT_END, end)

    cdef int _flush(self, uint64_t target, bint wait) noexcept nogil:
        """Ask the worker to sync up to *target*.  Without *wait*, not while
        a sync is outstanding: its completion wakes the receive loop, which
        asks again, so syncs batch themselves while the disk is busy."""
        cdef SinkProgress now
        cdef bint ok
        if self._read_published(&now) < 0:
            return -1
        if target <= now.flushed or (not wait and self._sync_requested > now.flushed):
            return 0
        if self._commit(CHUNK_SYNC, target) < 0:
            return -1
        self._sync_requested = target
        if not wait:
            return 0
        pthread_mutex_lock(&self._mu)
        while self._flushed < target and not self._failed:
            pthread_cond_wait(&self._cond, &self._mu)
        ok = not self._failed
        pthread_mutex_unlock(&self._mu)
        return 0 if ok else self._worker_failed()

    cdef int _close(self, uint64_t target) noexcept nogil:
        """Queue the end of the stream and wait until the worker has synced
        it; then everything up to *target* is durable."""
        cdef bint ok
        if self._commit(CHUNK_CLOSE, target) < 0:
            return -1
        pthread_mutex_lock(&self._mu)
        while not self._finished and not self._failed:
            pthread_cond_wait(&self._cond, &self._mu)
        ok = not self._failed
        pthread_mutex_unlock(&self._mu)
        return 0 if ok else self._worker_failed()

    cdef int _poll(self, SinkProgress *out, int64_t now) noexcept nogil:
        if self._read_published(out) < 0:
            return -1
        if now and self._slot != NULL and self._slot.length \
                and now - self._slot_since >= SINK_MAX_DELAY_US:
            return self._commit(0, 0)
        return 0

    cdef void _drain_wakeup(self) noexcept nogil:
        cdef uint64_t v
        read(self._efd, &v, 8)

    cdef void _signal_eventfd(self) noexcept nogil:
        cdef uint64_t one = 1
        write(self._efd, &one, 8)

    # ---- consumer side (the worker thread, Python) -------------------------

    def get(self):
        """Wait for the oldest committed chunk; return ``(slot, lsn, length,
        flags, target)``, or None once :meth:`shutdown` was called and
        everything committed was handed out."""
        cdef ChunkSlot *s
        cdef uint32_t idx
        cdef bint none = False
        with nogil:
            pthread_mutex_lock(&self._mu)
            while self._ready == 0 and not self._shutdown:
                pthread_cond_wait(&self._cond, &self._mu)
            if self._ready == 0:
                none = True
            else:
                idx = self._head
                self._head = (self._head + 1) % self._n
                self._ready -= 1
            pthread_mutex_unlock(&self._mu)
        if none:
            return None
        s = &self._slots[idx]
        return idx, s.lsn, s.length, s.flags, s.target

    def view(self, uint32_t slot):
        """The bytes of a chunk handed out by :meth:`get`, valid until
        :meth:`release`."""
        if slot >= self._n:
            raise IndexError(slot)
        return PyMemoryView_FromMemory(<char *>self._slots[slot].buf,
                                       <Py_ssize_t>self._slots[slot].length, PyBUF_READ)

    def release(self, uint32_t slot):
        """The worker is done with the chunk's bytes: the slot is free again.
        Chunks are released in the order :meth:`get` handed them out."""
        cdef bint tell
        with nogil:
            pthread_mutex_lock(&self._mu)
            self._used -= 1
            self._wake()
            tell = self._producer_waiting
            self._producer_waiting = False
            pthread_mutex_unlock(&self._mu)
            if tell:
                self._signal_eventfd()

    def publish(self, *, flushed=None, completed_end=None, finished=False):
        """Make the worker's progress visible to the receive loop and wake it:
        *flushed* (an LSN whose compressed bytes are durable), *completed_end*
        (a segment completed and renamed, ending at that LSN), *finished*
        (the stream was closed)."""
        cdef uint64_t f = flushed if flushed is not None else 0
        cdef uint64_t c = completed_end if completed_end is not None else 0
        cdef bint fin = finished
        with nogil:
            pthread_mutex_lock(&self._mu)
            if c:
                self._completed += 1
                self._completed_end = c
                if c > self._flushed:
                    self._flushed = c
            if f > self._flushed:
                self._flushed = f
            if fin:
                self._finished = True
            self._wake()
            pthread_mutex_unlock(&self._mu)
            self._signal_eventfd()

    def fail(self, exc):
        """The worker cannot go on: *exc* is raised by the receive loop (at
        its next write, status check or close), which stops receiving."""
        self.error = exc
        with nogil:
            pthread_mutex_lock(&self._mu)
            self._failed = True
            self._wake()
            pthread_mutex_unlock(&self._mu)
            self._signal_eventfd()

    def shutdown(self):
        """No more chunks will be committed: :meth:`get` returns None once
        the queue is drained (lets a worker exit when the writer was dropped
        without close())."""
        with nogil:
            pthread_mutex_lock(&self._mu)
            self._shutdown = True
            self._wake()
            pthread_mutex_unlock(&self._mu)

    # ---- introspection -----------------------------------------------------

    @property
    def nchunks(self):
        return self._n

    @property
    def chunk_size(self):
        return self._size

    @property
    def memory_bound(self):
        """Bytes of WAL that can wait for compression at most."""
        return self._n * self._size

    @property
    def max_used(self):
        """Most slots ever in use at once (never more than :attr:`nchunks`)."""
        return self._max_used

    @property
    def producer_waits(self):
        """Times the receive loop waited for a free slot (backpressure)."""
        return self._waits

    @property
    def flushed(self):
        return self._flushed

    @property
    def failed(self):
        return self._failed

    @property
    def eventfd(self):
        """Readable after each :meth:`publish` / :meth:`fail`."""
        return self._efd

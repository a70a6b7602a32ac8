# ChunkQueue: the bounded hand-over from the receive loop to the compressing
# worker (compressed output, walfast/compressor.py).
#
# The receive loop runs without the GIL and must never wait for a
# compressor; the worker is a Python thread (zlib, lz4 and zstandard release
# the GIL while they compress).  Between them sits a ring of *nchunks*
# fixed-size buffers of *chunk_size* bytes, allocated once:
#
#   producer (receive loop, SegmentWriter)    consumer (worker thread)
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
# receive loop reads them under the mutex (SegmentWriter._sink_poll) and is
# woken through an eventfd it polls next to the socket, so a status update
# goes out as soon as a sync finishes.

cimport cython

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
cdef class ChunkQueue:
    """Bounded queue of WAL chunks from the receive loop to a compressing
    worker thread.

    ChunkQueue(nchunks=8, chunk_size=1 MiB)

    At most ``nchunks * chunk_size`` bytes of WAL wait for the worker; when
    every slot is taken the receive loop waits (backpressure).  The producer
    side is the :class:`SegmentWriter` it is given to; the consumer side is
    :meth:`get`, :meth:`view`, :meth:`release`, :meth:`publish` and
    :meth:`fail`.
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
    # Published by the worker.
    cdef uint64_t _flushed
    cdef uint64_t _completed
    cdef uint64_t _completed_end
    cdef bint _failed
    cdef bint _finished           # the worker handled CHUNK_CLOSE
    cdef bint _shutdown           # nothing more will be committed (get() returns None when drained)
    cdef readonly object error    # the worker's exception, once failed

    def __cinit__(self):
        self._efd = -1

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

    # ---- producer side (receive loop, nogil; caller holds no lock) --------

    cdef inline void _wake(self) noexcept nogil:
        # Caller holds _mu.
        pthread_cond_broadcast(&self._cond)

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

    cdef void _commit(self, ChunkSlot *s) noexcept nogil:
        """Hand a filled slot (flags and target set) to the worker."""
        pthread_mutex_lock(&self._mu)
        self._ready += 1
        self._wake()
        pthread_mutex_unlock(&self._mu)

    cdef void _read_published(self, uint64_t *flushed, uint64_t *completed,
                              uint64_t *completed_end, bint *failed) noexcept nogil:
        pthread_mutex_lock(&self._mu)
        flushed[0] = self._flushed
        completed[0] = self._completed
        completed_end[0] = self._completed_end
        failed[0] = self._failed
        pthread_mutex_unlock(&self._mu)

    cdef bint _wait_flushed(self, uint64_t target) noexcept nogil:
        """Wait until *target* is published flushed; False if the worker failed."""
        cdef bint ok
        pthread_mutex_lock(&self._mu)
        while self._flushed < target and not self._failed:
            pthread_cond_wait(&self._cond, &self._mu)
        ok = not self._failed
        pthread_mutex_unlock(&self._mu)
        return ok

    cdef bint _wait_finished(self) noexcept nogil:
        """Wait until the worker handled CHUNK_CLOSE; False if it failed."""
        cdef bint ok
        pthread_mutex_lock(&self._mu)
        while not self._finished and not self._failed:
            pthread_cond_wait(&self._cond, &self._mu)
        ok = not self._failed
        pthread_mutex_unlock(&self._mu)
        return ok

    cdef void _drain_eventfd(self) noexcept nogil:
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
        with nogil:
            pthread_mutex_lock(&self._mu)
            self._used -= 1
            self._wake()
            pthread_mutex_unlock(&self._mu)

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

# ProgressState: the receiver's shared progress state, a small fixed-layout
# file mapped MAP_SHARED (walfast.progress in the output directory).
#
# The counterpart of PostgreSQL's WalRcvData (pg_stat_wal_receiver): other
# processes read how far WAL was written and durably flushed without talking
# to the receiver.  The layout and the reader are documented in
# walfast/progress.py; the C struct below is the single definition of it
# (offsets checked at compile time).
#
# One writer: the receive thread.  The compiled loop (CopyStream) publishes
# positions, walEnd/sendTime and counters once per batch and right after
# each fdatasync; Python updates the slower fields (state, timeline, sender)
# between ticks, in the same thread.  Readers get consistent snapshots
# without locks through a sequence counter (odd while an update is being
# written) and, for readers that cannot order their loads (a plain pread
# from Python), an FNV-1a checksum of the fields, written last.

from libc.string cimport memset, strncpy

cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
    int munmap(void *addr, size_t length)
    void *MAP_FAILED
    enum:
        PROT_READ
        PROT_WRITE
        MAP_SHARED

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #include <time.h>

    #define WF_PROGRESS_VERSION 1
    #define WF_PROGRESS_BYTE_ORDER 0x01020304u
    #define WF_PROGRESS_NBUCKETS 16
    #define WF_PROGRESS_CHECKED_FROM 32

    typedef struct wf_progress {
        char magic[8];                  /*   0 "WALFPROG" */
        uint32_t version;               /*   8 WF_PROGRESS_VERSION */
        uint32_t size;                  /*  12 sizeof(wf_progress) */
        uint64_t seq;                   /*  16 odd while an update is written */
        uint64_t checksum;              /*  24 FNV-1a 64 of bytes [32, size) */
        uint32_t byte_order;            /*  32 0x01020304 in the writer's order */
        uint32_t state;                 /*  36 WF_STATE_* */
        int64_t pid;                    /*  40 */
        uint32_t flags;                 /*  48 WF_FLAG_* */
        uint32_t received_tli;          /*  52 timeline being received */
        uint64_t system_identifier;     /*  56 */
        uint64_t segment_size;          /*  64 */
        uint64_t receive_start_lsn;     /*  72 */
        uint32_t receive_start_tli;     /*  80 */
        uint32_t sender_port;           /*  84 */
        uint64_t written_lsn;           /*  88 */
        uint64_t flushed_lsn;           /*  96 only bytes fdatasync'ed; 0 without sync */
        uint64_t latest_end_lsn;        /* 104 walEnd of the latest message */
        int64_t latest_end_time;        /* 112 sendTime when walEnd last advanced */
        int64_t last_msg_send_time;     /* 120 */
        int64_t last_msg_receipt_time;  /* 128 */
        int64_t caught_up_time;         /* 136 sendTime when last caught up */
        int64_t start_time;             /* 144 */
        int64_t update_time;            /* 152 */
        uint64_t messages;              /* 160 */
        uint64_t wal_bytes;             /* 168 */
        uint64_t segments_completed;    /* 176 */
        uint64_t reconnects;            /* 184 */
        uint64_t status_updates;        /* 192 */
        uint64_t flushes;               /* 200 fdatasyncs by the receive loop */
        uint64_t flush_time_us;         /* 208 their total duration */
        uint64_t flush_buckets[WF_PROGRESS_NBUCKETS];   /* 216 per-bucket counts */
        char slot_name[64];             /* 344 NUL-padded */
        char sender_host[256];          /* 408 NUL-padded */
    } wf_progress;                      /* 664 */

    _Static_assert(offsetof(wf_progress, byte_order) == WF_PROGRESS_CHECKED_FROM, "layout");
    _Static_assert(offsetof(wf_progress, written_lsn) == 88, "layout");
    _Static_assert(offsetof(wf_progress, flush_buckets) == 216, "layout");
    _Static_assert(offsetof(wf_progress, sender_host) == 408, "layout");
    _Static_assert(sizeof(wf_progress) == 664, "layout");

    /* Upper bounds (microseconds) of the flush-latency buckets; the last is +Inf. */
    static const uint64_t wf_flush_bucket_us[WF_PROGRESS_NBUCKETS - 1] = {
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
        250000, 500000, 1000000, 2500000, 5000000};

    static inline uint64_t wf_fnv1a64(const unsigned char *p, size_t n) {
        uint64_t h = 0xcbf29ce484222325ULL;
        for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
        return h;
    }

    /* Seqlock writer (one writer only). */
    static inline void wf_progress_begin(wf_progress *p) {
        uint64_t s = __atomic_load_n(&p->seq, __ATOMIC_RELAXED);
        __atomic_store_n(&p->seq, s + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
    }
    static inline void wf_progress_end(wf_progress *p) {
        p->checksum = wf_fnv1a64((const unsigned char *)p + WF_PROGRESS_CHECKED_FROM,
                                 sizeof(wf_progress) - WF_PROGRESS_CHECKED_FROM);
        __atomic_store_n(&p->seq, p->seq + 1, __ATOMIC_RELEASE);
    }

    /* Seqlock reader: a consistent copy, retrying while the writer is busy. */
    static inline void wf_progress_read(const wf_progress *p, wf_progress *out) {
        uint64_t s1, s2;
        for (;;) {
            s1 = __atomic_load_n(&p->seq, __ATOMIC_ACQUIRE);
            if (s1 & 1) continue;
            memcpy(out, p, sizeof(*out));
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            s2 = __atomic_load_n(&p->seq, __ATOMIC_RELAXED);
            if (s1 == s2) return;
        }
    }

    /* One fdatasync by the receive loop completed: bytes up to flushed_lsn
       are durable.  Published at once, so waiters see it promptly. */
    static inline void wf_progress_flushed(wf_progress *p, uint64_t written_lsn,
                                           uint64_t flushed_lsn, uint64_t took_us) {
        int b = 0;
        while (b < WF_PROGRESS_NBUCKETS - 1 && took_us > wf_flush_bucket_us[b]) b++;
        wf_progress_begin(p);
        if (written_lsn > p->written_lsn) p->written_lsn = written_lsn;
        if (flushed_lsn > p->flushed_lsn) p->flushed_lsn = flushed_lsn;
        p->flushes += 1;
        p->flush_time_us += took_us;
        p->flush_buckets[b] += 1;
        wf_progress_end(p);
    }

    static inline int64_t wf_monotonic_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    }
    """
    ctypedef struct wf_progress:
        char magic[8]
        uint32_t version
        uint32_t size
        uint64_t seq
        uint64_t checksum
        uint32_t byte_order
        uint32_t state
        int64_t pid
        uint32_t flags
        uint32_t received_tli
        uint64_t system_identifier
        uint64_t segment_size
        uint64_t receive_start_lsn
        uint32_t receive_start_tli
        uint32_t sender_port
        uint64_t written_lsn
        uint64_t flushed_lsn
        uint64_t latest_end_lsn
        int64_t latest_end_time
        int64_t last_msg_send_time
        int64_t last_msg_receipt_time
        int64_t caught_up_time
        int64_t start_time
        int64_t update_time
        uint64_t messages
        uint64_t wal_bytes
        uint64_t segments_completed
        uint64_t reconnects
        uint64_t status_updates
        uint64_t flushes
        uint64_t flush_time_us
        uint64_t flush_buckets[16]
        char slot_name[64]
        char sender_host[256]
    int WF_PROGRESS_VERSION
    unsigned int WF_PROGRESS_BYTE_ORDER
    void wf_progress_begin(wf_progress *p) noexcept nogil
    void wf_progress_end(wf_progress *p) noexcept nogil
    void wf_progress_read(const wf_progress *p, wf_progress *out) noexcept nogil
    void wf_progress_flushed(wf_progress *p, uint64_t written_lsn, uint64_t flushed_lsn,
                             uint64_t took_us) noexcept nogil
    int64_t wf_monotonic_us() noexcept nogil


# State values (walfast.progress.STATES names them).
cdef enum ProgressStateValue:
    WF_STATE_STARTING = 0
    WF_STATE_STREAMING = 1
    WF_STATE_WAITING = 2
    WF_STATE_STOPPING = 3
    WF_STATE_STOPPED = 4

# Flag bits.
cdef enum:
    WF_FLAG_SYNC = 1            # flushed_lsn means fdatasync'ed (not --no-sync)
    WF_FLAG_REPORT_FLUSH = 2    # the flush position is reported to the server

PROGRESS_SIZE = sizeof(wf_progress)


cdef void _set_text(char *dst, size_t cap, str value) except *:
    # Cut to the field on a character boundary (NUL-terminated).
    cdef bytes b = value.encode("utf-8")[:cap - 1].decode("utf-8", "ignore").encode("utf-8")
    memset(dst, 0, cap)
    memcpy(dst, <const char *>b, len(b))


@cython.final
cdef class ProgressState:
    """The writer side of the shared progress state file.

    ProgressState(fd, pid)

    *fd* is the state file opened read-write (and locked) by
    :func:`walfast.progress.create_state`; once constructed, this object owns
    it (closes it in :meth:`close`).
    The file is sized and mapped shared, and initialised to state
    ``starting`` with *pid*.  Only the receive thread may write: the
    compiled loop (:class:`CopyStream` ``progress=``) and :meth:`update`.
    """

    cdef wf_progress *_p
    cdef int _fd

    def __cinit__(self):
        self._p = NULL
        self._fd = -1

    def __init__(self, int fd, int64_t pid):
        cdef void *m
        if self._fd >= 0:
            raise ValueError("ProgressState is already initialised")
        if ftruncate(fd, sizeof(wf_progress)) != 0:
            raise OSError(errno, _os.strerror(errno))
        m = mmap(NULL, sizeof(wf_progress), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if m == MAP_FAILED:
            raise OSError(errno, _os.strerror(errno))
        # Owned from here on (on failure above, the caller still owns fd).
        self._fd = fd
        self._p = <wf_progress *>m
        # A receiver killed in the middle of an update left seq odd: make it
        # even again, else it would stay odd (unreadable) from here on.
        if self._p.seq & 1:
            self._p.seq += 1
        wf_progress_begin(self._p)
        memset(<char *>self._p + 24, 0, sizeof(wf_progress) - 24)   # keeps seq
        memcpy(self._p.magic, b"WALFPROG", 8)
        self._p.version = WF_PROGRESS_VERSION
        self._p.size = sizeof(wf_progress)
        self._p.byte_order = WF_PROGRESS_BYTE_ORDER
        self._p.state = WF_STATE_STARTING
        self._p.pid = pid
        self._p.start_time = pg_now()
        self._p.update_time = self._p.start_time
        wf_progress_end(self._p)

    def __dealloc__(self):
        if self._p != NULL:
            munmap(self._p, sizeof(wf_progress))
        if self._fd >= 0:
            close(self._fd)

    cdef inline wf_progress *shm(self) except NULL:
        if self._p == NULL:
            raise ValueError("the progress state is closed")
        return self._p

    def update(self, *, state=None, received_tli=None, system_identifier=None,
               segment_size=None, receive_start_lsn=None, receive_start_tli=None,
               sync=None, report_flush=None, slot_name=None, sender_host=None,
               sender_port=None, reconnects=None):
        """Set the given fields (None: unchanged) in one consistent update."""
        cdef wf_progress *p = self.shm()
        cdef wf_progress tmp
        # Convert everything first: a bad value must not leave seq odd.
        wf_progress_read(p, &tmp)
        if state is not None:
            tmp.state = state
        if received_tli is not None:
            tmp.received_tli = received_tli
        if system_identifier is not None:
            tmp.system_identifier = system_identifier
        if segment_size is not None:
            tmp.segment_size = segment_size
        if receive_start_lsn is not None:
            tmp.receive_start_lsn = receive_start_lsn
        if receive_start_tli is not None:
            tmp.receive_start_tli = receive_start_tli
        if sync is not None:
            tmp.flags = (tmp.flags | WF_FLAG_SYNC) if sync else (tmp.flags & ~WF_FLAG_SYNC)
        if report_flush is not None:
            tmp.flags = ((tmp.flags | WF_FLAG_REPORT_FLUSH) if report_flush
                         else (tmp.flags & ~WF_FLAG_REPORT_FLUSH))
        if slot_name is not None:
            _set_text(tmp.slot_name, sizeof(tmp.slot_name), slot_name)
        if sender_host is not None:
            _set_text(tmp.sender_host, sizeof(tmp.sender_host), sender_host)
        if sender_port is not None:
            tmp.sender_port = sender_port
        if reconnects is not None:
            tmp.reconnects = reconnects
        wf_progress_begin(p)
        # Everything but the header (magic .. checksum), which stays.
        memcpy(<char *>p + 32, <char *>&tmp + 32, sizeof(wf_progress) - 32)
        p.update_time = pg_now()
        wf_progress_end(p)

    def snapshot(self):
        """A consistent copy of the state, as bytes (parse it with
        :func:`walfast.progress.parse_progress`)."""
        cdef wf_progress out
        wf_progress_read(self.shm(), &out)
        return PyBytes_FromStringAndSize(<char *>&out, sizeof(wf_progress))

    def close(self):
        """Unmap the state and close the file (which releases its lock).  The
        file stays, with its last values, for ``walfast status``."""
        if self._p != NULL:
            munmap(self._p, sizeof(wf_progress))
            self._p = NULL
        if self._fd >= 0:
            close(self._fd)
            self._fd = -1

    @property
    def closed(self):
        return self._p == NULL

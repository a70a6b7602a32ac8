# ProgressState: the receiver's shared progress state, a small fixed-layout
# file mapped MAP_SHARED (.walfast/progress in the output directory).
#
# The counterpart of PostgreSQL's WalRcvData (pg_stat_wal_receiver): other
# processes read how far WAL was written and durably flushed without talking
# to the receiver (walfast.monitor.progress is the reader; what the fields
# mean for a reader is documented there).  The C struct below is the one
# definition of the layout: the reader builds its parser from
# PROGRESS_FIELDS, which the compiler computes from it (offsetof, sizeof).
#
# One writer: the receive thread.  The compiled loop (CopyStream) publishes
# positions, walEnd/sendTime and counters once per batch and right after
# each fdatasync (wf_progress_publish, wf_progress_flushed); Python updates
# the slower fields (state, timeline, sender) between ticks, in the same
# thread (ProgressState.update).  Readers get consistent snapshots without
# locks through a sequence counter (odd while an update is being written)
# and, for readers that cannot order their loads (a plain pread from
# Python), an FNV-1a checksum of the fields (over 64-bit words), written last.

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

    #define WF_PROGRESS_MAGIC "WALFPROG"
    #define WF_PROGRESS_VERSION 2
    #define WF_PROGRESS_BYTE_ORDER 0x01020304u
    #define WF_PROGRESS_NBUCKETS 16
    #define WF_PROGRESS_CHECKED_FROM 32

    /* The progress state file, layout version 2 (664 bytes), all integers
       in the writer's native byte order (byte_order tells it).  Times are
       microseconds since 2000-01-01 00:00:00 UTC, 0 = never; LSNs are byte
       positions, 0 = none yet.  One line per field:

       X(C type, name, array, kind for readers)        offset size  meaning */
    #define WF_PROGRESS_FIELDS(X) \\
        X(char,     magic,                 [8],   "bytes") /*  0    8  "WALFPROG" */ \\
        X(uint32_t, version,               ,      "u32")   /*  8    4  WF_PROGRESS_VERSION */ \\
        X(uint32_t, size,                  ,      "u32")   /* 12    4  sizeof(wf_progress) */ \\
        X(uint64_t, seq,                   ,      "u64")   /* 16    8  odd while an update is written */ \\
        X(uint64_t, checksum,              ,      "u64")   /* 24    8  FNV-1a 64 of the words [32, size) */ \\
        X(uint32_t, byte_order,            ,      "u32")   /* 32    4  0x01020304 in the writer's order */ \\
        X(uint32_t, state,                 ,      "u32")   /* 36    4  0 starting, 1 streaming, 2 waiting \\
                                                                       (to reconnect), 3 stopping, 4 stopped, \\
                                                                       5 silent (no message from the server \\
                                                                       for half the receive timeout), \\
                                                                       6 paused (disk full) */ \\
        X(int64_t,  pid,                   ,      "i64")   /* 40    8  the receiver's process id */ \\
        X(uint32_t, flags,                 ,      "u32")   /* 48    4  bit 0 sync (flushed means fdatasync'ed), \\
                                                                       bit 1 flush reported to the server */ \\
        X(uint32_t, received_tli,          ,      "u32")   /* 52    4  timeline being received */ \\
        X(uint64_t, system_identifier,     ,      "u64")   /* 56    8 */ \\
        X(uint64_t, segment_size,          ,      "u64")   /* 64    8  bytes (from the server) */ \\
        X(uint64_t, receive_start_lsn,     ,      "u64")   /* 72    8  where this receiver started streaming */ \\
        X(uint32_t, receive_start_tli,     ,      "u32")   /* 80    4 */ \\
        X(uint32_t, sender_port,           ,      "u32")   /* 84    4  0 for a unix socket */ \\
        X(uint64_t, written_lsn,           ,      "u64")   /* 88    8  end of WAL written into segment files */ \\
        X(uint64_t, flushed_lsn,           ,      "u64")   /* 96    8  end of WAL durably flushed; only bytes \\
                                                                       fdatasync'ed, 0 without sync */ \\
        X(uint64_t, latest_end_lsn,        ,      "u64")   /* 104   8  walEnd of the latest server message */ \\
        X(int64_t,  latest_end_time,       ,      "i64")   /* 112   8  its sendTime when walEnd last advanced */ \\
        X(int64_t,  last_msg_send_time,    ,      "i64")   /* 120   8 */ \\
        X(int64_t,  last_msg_receipt_time, ,      "i64")   /* 128   8 */ \\
        X(int64_t,  caught_up_time,        ,      "i64")   /* 136   8  sendTime of the last message after which \\
                                                                       all WAL up to its walEnd was written */ \\
        X(int64_t,  start_time,            ,      "i64")   /* 144   8  when the receiver started */ \\
        X(int64_t,  update_time,           ,      "i64")   /* 152   8  when this snapshot was published */ \\
        X(uint64_t, messages,              ,      "u64")   /* 160   8  CopyData messages received (cumulative) */ \\
        X(uint64_t, wal_bytes,             ,      "u64")   /* 168   8  WAL bytes received */ \\
        X(uint64_t, segments_completed,    ,      "u64")   /* 176   8 */ \\
        X(uint64_t, reconnects,            ,      "u64")   /* 184   8  connections after the first */ \\
        X(uint64_t, status_updates,        ,      "u64")   /* 192   8  standby status updates sent */ \\
        X(uint64_t, flushes,               ,      "u64")   /* 200   8  fdatasyncs by the receive loop */ \\
        X(uint64_t, flush_time_us,         ,      "u64")   /* 208   8  their total duration */ \\
        X(uint64_t, flush_buckets, [WF_PROGRESS_NBUCKETS], "u64")  /* 216 128  per-bucket flush counts, upper \\
                                                                       bounds wf_flush_bucket_us (last: +Inf) */ \\
        X(char,     slot_name,             [64],  "text")  /* 344  64  NUL-padded UTF-8, empty = no slot */ \\
        X(char,     sender_host,           [256], "text")  /* 408 256  NUL-padded UTF-8 (host name, address \\
                                                                       or unix socket directory) */

    typedef struct wf_progress {
    #define WF_DECLARE(type, name, array, kind) type name array;
        WF_PROGRESS_FIELDS(WF_DECLARE)
    #undef WF_DECLARE
    } wf_progress;

    /* Version 1 is a published layout: it must not move. */
    _Static_assert(offsetof(wf_progress, byte_order) == WF_PROGRESS_CHECKED_FROM, "layout");
    _Static_assert(offsetof(wf_progress, written_lsn) == 88, "layout");
    _Static_assert(offsetof(wf_progress, flush_buckets) == 216, "layout");
    _Static_assert(offsetof(wf_progress, sender_host) == 408, "layout");
    _Static_assert(sizeof(wf_progress) == 664, "layout");

    /* The layout for readers (PROGRESS_FIELDS): name, offset, size, kind. */
    typedef struct wf_field {
        const char *name;
        size_t offset;
        size_t size;
        const char *kind;
    } wf_field;
    static const wf_field wf_progress_fields[] = {
    #define WF_DESCRIBE(type, name, array, kind) \\
        {#name, offsetof(wf_progress, name), sizeof(((wf_progress *)0)->name), kind},
        WF_PROGRESS_FIELDS(WF_DESCRIBE)
    #undef WF_DESCRIBE
    };
    #define WF_PROGRESS_NFIELDS (sizeof(wf_progress_fields) / sizeof(wf_progress_fields[0]))

    /* Upper bounds (microseconds) of the flush-latency buckets; the last is +Inf. */
    static const uint64_t wf_flush_bucket_us[WF_PROGRESS_NBUCKETS - 1] = {
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
        250000, 500000, 1000000, 2500000, 5000000};

    /* FNV-1a over native 64-bit words, not bytes (layout version 2): the
       checksum is recomputed at every publish, and the byte-wise loop was
       the engine's largest user-space cost per batch as a synchronous
       standby (benchmarks/README.md).  It only has to catch a torn copy. */
    static inline uint64_t wf_fnv1a64(const unsigned char *p, size_t n) {
        uint64_t h = 0xcbf29ce484222325ULL, w;
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&w, p + i, 8);
            h ^= w;
            h *= 0x100000001b3ULL;
        }
        return h;
    }
    _Static_assert((sizeof(wf_progress) - WF_PROGRESS_CHECKED_FROM) % 8 == 0,
                   "the checksummed bytes are whole 64-bit words");

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

    /* What the receive loop publishes once per batch.  flushed_lsn only
       ever means fdatasync'ed (0 otherwise); the message fields only when
       messages arrived since the last batch; the counters are increments. */
    typedef struct wf_batch {
        uint64_t written_lsn;
        uint64_t flushed_lsn;
        int new_messages;
        uint64_t latest_end_lsn;
        int64_t latest_end_time;
        int64_t last_msg_send_time;
        int64_t caught_up_time;
        int64_t last_msg_receipt_time;
        uint64_t messages;
        uint64_t wal_bytes;
        uint64_t segments_completed;
        uint64_t status_updates;
    } wf_batch;

    static inline void wf_progress_publish(wf_progress *p, const wf_batch *b, int64_t now) {
        wf_progress_begin(p);
        if (b->written_lsn > p->written_lsn) p->written_lsn = b->written_lsn;
        if (b->flushed_lsn > p->flushed_lsn) p->flushed_lsn = b->flushed_lsn;
        if (b->new_messages) {
            p->latest_end_lsn = b->latest_end_lsn;
            p->latest_end_time = b->latest_end_time;
            p->last_msg_send_time = b->last_msg_send_time;
            p->caught_up_time = b->caught_up_time;
            p->last_msg_receipt_time = b->last_msg_receipt_time;
        }
        p->messages += b->messages;
        p->wal_bytes += b->wal_bytes;
        p->segments_completed += b->segments_completed;
        p->status_updates += b->status_updates;
        p->update_time = now;
        wf_progress_end(p);
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

    /* The receive loop's own state changes (silent, paused, streaming). */
    static inline void wf_progress_set_state(wf_progress *p, uint32_t state) {
        wf_progress_begin(p);
        p->state = state;
        wf_progress_end(p);
    }

    static inline int64_t wf_monotonic_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    }
    """
    # Cython's view of the struct: the fields this module touches (the
    # layout itself is the C definition above).
    ctypedef struct wf_progress:
        char magic[8]
        uint32_t version
        uint32_t size
        uint64_t seq
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
        int64_t start_time
        int64_t update_time
        uint64_t reconnects
        char slot_name[64]
        char sender_host[256]
    ctypedef struct wf_field:
        const char *name
        size_t offset
        size_t size
        const char *kind
    ctypedef struct wf_batch:
        uint64_t written_lsn
        uint64_t flushed_lsn
        int new_messages
        uint64_t latest_end_lsn
        int64_t latest_end_time
        int64_t last_msg_send_time
        int64_t caught_up_time
        int64_t last_msg_receipt_time
        uint64_t messages
        uint64_t wal_bytes
        uint64_t segments_completed
        uint64_t status_updates
    const wf_field *wf_progress_fields
    size_t WF_PROGRESS_NFIELDS
    const uint64_t *wf_flush_bucket_us
    int WF_PROGRESS_NBUCKETS
    const char *WF_PROGRESS_MAGIC
    int WF_PROGRESS_VERSION
    int WF_PROGRESS_CHECKED_FROM
    unsigned int WF_PROGRESS_BYTE_ORDER
    void wf_progress_begin(wf_progress *p) noexcept nogil
    void wf_progress_end(wf_progress *p) noexcept nogil
    void wf_progress_read(const wf_progress *p, wf_progress *out) noexcept nogil
    void wf_progress_publish(wf_progress *p, const wf_batch *b, int64_t now) noexcept nogil
    void wf_progress_flushed(wf_progress *p, uint64_t written_lsn, uint64_t flushed_lsn,
                             uint64_t took_us) noexcept nogil
    int64_t wf_monotonic_us() noexcept nogil
    void wf_progress_set_state(wf_progress *p, uint32_t state) noexcept nogil


# State values; PROGRESS_STATES names them (the readers' names).
cdef enum ProgressStateValue:
    WF_STATE_STARTING = 0
    WF_STATE_STREAMING = 1
    WF_STATE_WAITING = 2       # waiting to reconnect
    WF_STATE_STOPPING = 3
    WF_STATE_STOPPED = 4
    WF_STATE_SILENT = 5        # connected, no message for half the receive timeout
    WF_STATE_PAUSED = 6        # connected, not reading: the disk is full

#: State names by value (pg_stat_wal_receiver's status words, and walfast's).
PROGRESS_STATES = ("starting", "streaming", "waiting", "stopping", "stopped", "silent",
                   "paused")

# Flag bits.
cdef enum:
    WF_FLAG_SYNC = 1            # flushed_lsn means fdatasync'ed (not --no-sync)
    WF_FLAG_REPORT_FLUSH = 2    # the flush position is reported to the server

#: The layout, for readers (walfast.monitor.progress): one ``(name, offset,
#: size, kind)`` per field, in order, as the compiler laid out the C struct;
#: kind is "u32", "u64", "i64" (an array when size is a multiple), "bytes"
#: or "text" (NUL-padded UTF-8).
PROGRESS_FIELDS = tuple(
    (wf_progress_fields[i].name.decode(), wf_progress_fields[i].offset,
     wf_progress_fields[i].size, wf_progress_fields[i].kind.decode())
    for i in range(WF_PROGRESS_NFIELDS))
PROGRESS_SIZE = sizeof(wf_progress)
PROGRESS_MAGIC = WF_PROGRESS_MAGIC[:8]
PROGRESS_VERSION = WF_PROGRESS_VERSION
#: Bytes [PROGRESS_CHECKED_FROM, size) are covered by the checksum.
PROGRESS_CHECKED_FROM = WF_PROGRESS_CHECKED_FROM
#: Upper bounds (microseconds) of the flush-latency buckets (the last: +Inf).
PROGRESS_FLUSH_BUCKETS_US = tuple(wf_flush_bucket_us[i]
                                  for i in range(WF_PROGRESS_NBUCKETS - 1))


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
    :func:`walfast.monitor.progress.create_state`; once constructed, this
    object owns it (closes it in :meth:`close`).
    The file is sized and mapped shared, and initialised to state
    ``starting`` with *pid*.  Only the receive thread may write: the
    compiled loop (:class:`CopyStream` ``progress=``, or :meth:`publish` and
    :meth:`publish_flush` for a caller that drives the engine itself) and
    :meth:`update`.
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
        memcpy(self._p.magic, WF_PROGRESS_MAGIC, 8)
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

    def publish(self, *, written_lsn, flushed_lsn=0, latest_end_lsn=None,
                latest_end_time=0, last_msg_send_time=0, caught_up_time=0,
                last_msg_receipt_time=0, messages=0, wal_bytes=0, segments_completed=0,
                status_updates=0):
        """Publish one batch, as the receive loop does at the end of each:
        positions (never moving back; *flushed_lsn* only if fdatasync'ed),
        the latest message's fields (when *latest_end_lsn* is given) and
        counter increments."""
        cdef wf_batch b
        cdef wf_progress *p = self.shm()
        memset(&b, 0, sizeof(b))
        b.written_lsn = written_lsn
        b.flushed_lsn = flushed_lsn
        if latest_end_lsn is not None:
            b.new_messages = 1
            b.latest_end_lsn = latest_end_lsn
            b.latest_end_time = latest_end_time
            b.last_msg_send_time = last_msg_send_time
            b.caught_up_time = caught_up_time
            b.last_msg_receipt_time = last_msg_receipt_time
        b.messages = messages
        b.wal_bytes = wal_bytes
        b.segments_completed = segments_completed
        b.status_updates = status_updates
        wf_progress_publish(p, &b, pg_now())

    def publish_flush(self, uint64_t written_lsn, uint64_t flushed_lsn, uint64_t took_us):
        """Publish one fdatasync that made *flushed_lsn* durable and took
        *took_us* microseconds, as the receive loop does right after each."""
        wf_progress_flushed(self.shm(), written_lsn, flushed_lsn, took_us)

    def snapshot(self):
        """A consistent copy of the state, as bytes (parse it with
        :func:`walfast.monitor.progress.parse_progress`)."""
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

# C declarations, byte-order helpers and constants shared by the engine.
#
# Two byte orders meet here.  Replication messages are big-endian (network
# order); WAL pages on disk are in the *server's* native order, which we take
# to be ours (little-endian on every platform PostgreSQL ships binaries for).

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, strlen
from libc.stdio cimport snprintf
from libc.errno cimport EDQUOT, EINTR, EINVAL, ENOENT, ENOSPC, errno

cdef extern from "<sys/statvfs.h>" nogil:
    cdef struct statvfs:
        unsigned long f_frsize
        unsigned long f_bavail
    int fstatvfs(int fd, statvfs *buf)

# A sink, writer or parser that cannot go on for now (the disk is full):
# nothing was lost, the caller tries again later with the same bytes.
cdef enum:
    BLOCKED = -2
from posix.types cimport off_t

cdef extern from "<fcntl.h>" nogil:
    int openat(int dirfd, const char *pathname, int flags, ...)
    int posix_fallocate(int fd, off_t offset, off_t len)
    int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags)
    int posix_fadvise(int fd, off_t offset, off_t len, int advice)
    enum:
        SYNC_FILE_RANGE_WRITE
        POSIX_FADV_DONTNEED
    enum:
        O_RDWR
        O_CREAT
        O_TRUNC
        O_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    int fsync(int fd)
    int fdatasync(int fd)
    ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
    int ftruncate(int fd, off_t length)
    int unlinkat(int dirfd, const char *pathname, int flags)

cdef extern from "<sys/stat.h>" nogil:
    cdef struct stat:
        off_t st_size
    int fstat(int fd, stat *buf)

cdef extern from "<stdio.h>" nogil:
    int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum:
        CLOCK_REALTIME

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* Network (big-endian) loads and stores for the replication protocol. */
    static inline uint64_t wf_be64(const unsigned char *p) {
        uint64_t v; memcpy(&v, p, 8);
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    static inline void wf_put_be64(unsigned char *p, uint64_t v) {
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        memcpy(p, &v, 8);
    }
    /* Native-order loads for WAL page headers (unaligned-safe). */
    static inline uint16_t wf_ne16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
    static inline uint32_t wf_ne32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline uint64_t wf_ne64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    """
    uint64_t wf_be64(const unsigned char *p) noexcept nogil
    void wf_put_be64(unsigned char *p, uint64_t v) noexcept nogil
    uint16_t wf_ne16(const unsigned char *p) noexcept nogil
    uint32_t wf_ne32(const unsigned char *p) noexcept nogil
    uint64_t wf_ne64(const unsigned char *p) noexcept nogil


# Protocol constants (see the message layouts in _frames.pxi).
cdef enum:
    MSG_XLOGDATA = 0x77         # 'w'
    MSG_KEEPALIVE = 0x6B        # 'k'
    MSG_STATUS_UPDATE = 0x72    # 'r'
    XLOGDATA_HEADER_LEN = 25
    KEEPALIVE_LEN = 18
    STATUS_UPDATE_LEN = 34

# Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
cdef enum:
    PG_EPOCH_OFFSET_S = 946684800

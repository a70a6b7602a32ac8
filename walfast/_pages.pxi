# WAL page headers: the rules every page must pass, defined once for all of
# walfast (the receive path, the resume scan, the directory identity check).
#
# XLogPageHeaderData (xlog_internal.h), at the start of every page, in the
# server's native byte order (see _cdefs.pxi):
#   0 uint16 xlp_magic | 2 uint16 xlp_info | 4 uint32 xlp_tli
#   | 8 uint64 xlp_pageaddr | 16 uint32 xlp_rem_len | 20 padding          (24)
# XLogLongPageHeaderData, at the start of every segment (XLP_LONG_HEADER):
#   0 the short header | 24 uint64 xlp_sysid | 32 uint32 xlp_seg_size
#   | 36 uint32 xlp_xlog_blcksz                                            (40)
#
# A page is valid when
#   * xlp_magic is the expected one, or, when none is given, the first
#     checked page's (which must not be 0);
#   * xlp_info has no flag outside XLP_ALL_FLAGS;
#   * xlp_pageaddr is the page's own LSN;
#   * 1 <= xlp_tli <= the timeline (pages copied into a new timeline's first
#     segment keep the old timeline);
#   * a segment's first page has the long header, with the expected system
#     identifier (the first long header's when none is given), segment size
#     and page size; every other page has a short header.
# After an XLOG_SWITCH record the server leaves the rest of the segment
# zeroed, page headers included (seen with PostgreSQL 15).  A receiver
# accepts zeroed pages there, and only there: once one is seen, every later
# page of the segment must be zeroed too.  A scan of a file for where
# writing stopped takes a zeroed page as the end (accept_zeroed_tail off).
#
# Users: SegmentWriter checks each page before any byte of it is written
# (wp_check, the header possibly split across messages); PageCheck applies
# the same to a file's bytes (walfast.waldir.resume.last_valid_page);
# long_page_header() to a segment's first page when nothing is known yet
# (walfast.waldir.identity).

cdef enum:
    XLP_FIRST_IS_CONTRECORD = 0x0001
    XLP_LONG_HEADER = 0x0002
    XLP_BKP_REMOVABLE = 0x0004
    XLP_FIRST_IS_OVERWRITE_CONTRECORD = 0x0008
    XLP_ALL_FLAGS = 0x000F
    # Bytes of a header that must be there before it can be checked: the
    # short header's fields end at 20 (xlp_rem_len), the long header's at 40
    # (xlp_xlog_blcksz).
    SHORT_PHD_CHECK_LEN = 20
    LONG_PHD_CHECK_LEN = 40

cdef uint64_t MIN_SEGMENT_SIZE = 1 << 20
cdef uint64_t MAX_SEGMENT_SIZE = 1 << 30


cdef struct WalPages:
    # What the pages must hold; 0 = take it from the first page that has it.
    uint32_t timeline           # highest xlp_tli; 0: any (long_page_header)
    uint64_t segsize            # 0: any valid size, and the page's LSN is unknown
    uint32_t page_size          # 0: any valid size
    uint64_t sysid
    uint16_t magic
    bint accept_zeroed_tail     # a receiver's rule (see above); a scan's is off
    # Where checking stands (wp_check).
    uint64_t next_check         # start of the next page whose header was not checked
    unsigned char hdr[LONG_PHD_CHECK_LEN]   # that header's bytes, as they arrive
    uint32_t have
    bint zeroed_tail            # a zeroed page was seen in the current segment
    # The failure: the page, the header field, what it should hold and held.
    uint64_t bad_page
    const char *field
    uint64_t expected
    uint64_t found


cdef inline bint wp_valid_segment_size(uint64_t v) noexcept nogil:
    # IsValidWalSegSize: a power of two from 1 MiB to 1 GiB.
    return MIN_SEGMENT_SIZE <= v <= MAX_SEGMENT_SIZE and v & (v - 1) == 0


cdef inline bint wp_valid_page_size(uint64_t v) noexcept nogil:
    # XLOG_BLCKSZ: a power of two from 1 kB to 64 kB.
    return 1024 <= v <= 65536 and v & (v - 1) == 0


cdef void wp_init(WalPages *wp, uint64_t start, uint32_t timeline, uint64_t segsize,
                  uint32_t page_size, uint64_t sysid, uint16_t magic,
                  bint accept_zeroed_tail) noexcept nogil:
    """Rules for WAL from LSN *start* on (sizes valid, checked by the caller)."""
    memset(wp, 0, sizeof(WalPages))
    wp.timeline = timeline
    wp.segsize = segsize
    wp.page_size = page_size
    wp.sysid = sysid
    wp.magic = magic
    wp.accept_zeroed_tail = accept_zeroed_tail
    # Checking starts at the first page boundary at or after *start*: a page
    # begun before it was checked when its header arrived (by the run that
    # wrote it).
    if page_size:
        wp.next_check = (start + page_size - 1) & ~(<uint64_t>page_size - 1)


cdef int wp_fail(WalPages *wp, uint64_t page, const char *field, uint64_t expected,
                 uint64_t found) noexcept nogil:
    wp.bad_page = page
    wp.field = field
    wp.expected = expected
    wp.found = found
    return -1


cdef int wp_check_header(WalPages *wp, uint64_t page, bint first,
                         const unsigned char *h) noexcept nogil:
    """The rules for the header at *h* of the page at LSN *page* (a
    segment's first page when *first*; *h* holds LONG_PHD_CHECK_LEN bytes
    then, else SHORT_PHD_CHECK_LEN).  Learns what wp leaves open.  Returns 0,
    or -1 with wp's failure set."""
    cdef uint16_t magic = wf_ne16(h)
    cdef uint16_t info = wf_ne16(h + 2)
    cdef uint32_t tli = wf_ne32(h + 4)
    cdef uint64_t v
    if wp.magic == 0 and magic != 0:
        wp.magic = magic
    if magic != wp.magic or magic == 0:
        return wp_fail(wp, page, "xlp_magic", wp.magic, magic)
    if info & ~(<uint16_t>XLP_ALL_FLAGS):
        return wp_fail(wp, page, "xlp_info", info & XLP_ALL_FLAGS, info)
    if wp.segsize != 0:
        v = wf_ne64(h + 8)
        if v != page:
            return wp_fail(wp, page, "xlp_pageaddr", page, v)
    if tli == 0 or (wp.timeline != 0 and tli > wp.timeline):
        return wp_fail(wp, page, "xlp_tli", wp.timeline, tli)
    if not first:
        if info & XLP_LONG_HEADER:
            return wp_fail(wp, page, "xlp_info", info & ~(<uint16_t>XLP_LONG_HEADER), info)
        return 0
    if not info & XLP_LONG_HEADER:
        return wp_fail(wp, page, "xlp_info", info | XLP_LONG_HEADER, info)
    v = wf_ne64(h + 24)
    if wp.sysid == 0:
        wp.sysid = v
    if v != wp.sysid:
        return wp_fail(wp, page, "xlp_sysid", wp.sysid, v)
    v = wf_ne32(h + 32)
    if wp.segsize == 0 and wp_valid_segment_size(v):
        wp.segsize = v
    if v != wp.segsize:
        return wp_fail(wp, page, "xlp_seg_size", wp.segsize, v)
    v = wf_ne32(h + 36)
    if wp.page_size == 0 and wp_valid_page_size(v):
        wp.page_size = <uint32_t>v
    if v != wp.page_size:
        return wp_fail(wp, page, "xlp_xlog_blcksz", wp.page_size, v)
    return 0


cdef int wp_check_page(WalPages *wp, uint64_t page, const unsigned char *h) noexcept nogil:
    """A whole header of the page at *page* is at h: the zeroed-tail rule,
    then wp_check_header."""
    cdef bint first = page & (wp.segsize - 1) == 0
    if first:
        wp.zeroed_tail = False
    elif wp.accept_zeroed_tail and wf_ne64(h) == 0 and wf_ne64(h + 8) == 0 \
            and wf_ne32(h + 16) == 0:
        wp.zeroed_tail = True
        return 0
    if wp.zeroed_tail:
        return wp_fail(wp, page, "xlp_magic (the segment's earlier pages were zeroed)",
                       0, wf_ne16(h))
    return wp_check_header(wp, page, first, h)


cdef size_t wp_check(WalPages *wp, uint64_t start, const unsigned char *p, size_t n,
                     bint *bad) noexcept nogil:
    """Check the page headers among the n bytes at p, which are the WAL at
    LSN *start* on, continuing the bytes of earlier calls.  Returns how many
    of them are cleared: the bytes of pages whose header passed.  At a bad
    header *bad* is set (wp's failure too) and the bytes before its page
    are returned: nothing of that page is good.  A header not yet whole at
    the end is not cleared either: its bytes (kept in wp.hdr, wp.have of
    them, starting at wp.next_check) are cleared by the call that completes
    it, so a writer never writes a byte of a header that will fail.

    One check per page: its header bytes are gathered (a header can be split
    across calls), then a few compares; the page is not scanned.
    """
    cdef uint64_t end = start + n
    cdef uint64_t page, from_, to
    cdef uint32_t need
    bad[0] = False
    while wp.next_check < end:
        page = wp.next_check
        need = LONG_PHD_CHECK_LEN if page & (wp.segsize - 1) == 0 else SHORT_PHD_CHECK_LEN
        from_ = page + wp.have
        if from_ < start:       # only when starting inside a header; never in practice
            wp.next_check = page + wp.page_size
            continue
        to = page + need
        if to > end:
            to = end
        memcpy(wp.hdr + wp.have, p + (from_ - start), to - from_)
        wp.have += <uint32_t>(to - from_)
        if wp.have < need:
            # The rest of this header comes later: its bytes wait in wp.hdr.
            return <size_t>(page - start) if page > start else 0
        wp.have = 0
        if wp_check_page(wp, page, wp.hdr) < 0:
            bad[0] = True
            return <size_t>(page - start) if page > start else 0
        wp.next_check = page + wp.page_size
    return n


cdef int wp_error(WalPages *wp, ErrInfo *e, const char *fname) noexcept nogil:
    """Record wp's failure as an ERR_PAGE in *e* (about file *fname*); -1."""
    e.code = ERR_PAGE
    e.lsn = wp.bad_page
    e.field = wp.field
    e.expected = wp.expected
    e.found = wp.found
    e.fname[0] = 0
    if fname != NULL:
        err_set_fname(e, fname)
    return -1


@cython.final
cdef class PageCheck:
    """The engine's WAL page-header rules, applied to WAL bytes as they come
    (what :class:`SegmentWriter` checks before it writes a page).

    PageCheck(*, lsn, timeline, segment_size, page_size=8192,
              system_identifier=0, page_magic=0, zeroed_tail=True)

    *lsn* is where the bytes given to :meth:`check` start; checking begins
    at the first page boundary at or after it.  *system_identifier* and
    *page_magic* 0 are learned from the first page that has them.  With
    *zeroed_tail* (a receiver's rule) the zeroed rest of a segment after an
    XLOG_SWITCH is accepted; without it a zeroed page fails, as a scan for
    where writing stopped needs.
    """

    cdef WalPages _wp
    cdef uint64_t _lsn
    cdef bint _failed

    def __init__(self, *, uint64_t lsn, timeline, segment_size, page_size=8192,
                 system_identifier=0, page_magic=0, bint zeroed_tail=True):
        if not wp_valid_segment_size(segment_size):
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
        wp_init(&self._wp, lsn, timeline, segment_size, page_size, system_identifier,
                page_magic, zeroed_tail)
        self._lsn = lsn

    def check(self, data):
        """Check the page headers in *data*, the WAL at :attr:`lsn` on.
        Returns how many of its bytes are good (``len(data)``, or the offset
        of the first bad page) and advances :attr:`lsn` by that much; after
        a failure nothing more is checked (:attr:`error` says what failed)."""
        cdef Py_buffer view
        cdef size_t ok = 0
        cdef bint bad = False
        if self._failed:
            return 0
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                ok = wp_check(&self._wp, self._lsn, <const unsigned char *>view.buf,
                              <size_t>view.len, &bad)
            if bad:
                self._failed = True
            else:
                ok = <size_t>view.len   # a header cut at the end is checked next time
        finally:
            PyBuffer_Release(&view)
        self._lsn += ok
        return ok

    @property
    def lsn(self):
        """End of the bytes checked so far."""
        return self._lsn

    @property
    def next_check(self):
        """Start of the first page whose header has not passed (not arrived
        whole, or failed): every page before it passed."""
        return self._wp.next_check

    @property
    def error(self):
        """The :class:`WalPageError` that stopped :meth:`check`, or None."""
        if not self._failed:
            return None
        field = self._wp.field.decode()
        return WalPageError(
            f"invalid WAL page header at {_fmt(self._wp.bad_page)}: {field} is "
            f"0x{self._wp.found:X}, expected 0x{self._wp.expected:X}",
            lsn=self._wp.bad_page, field=field, expected=self._wp.expected,
            found=self._wp.found)

    @property
    def system_identifier(self):
        """The expected system identifier (learned: 0 until a long header passed)."""
        return self._wp.sysid

    @property
    def page_magic(self):
        """The expected ``xlp_magic`` (learned: 0 until a page passed)."""
        return self._wp.magic


def long_page_header(data):
    """``(system_identifier, segment_size, page_size)`` from the long page
    header at the start of *data* (a segment's first page), or None when it
    is not one by the engine's rules with nothing known beforehand: any
    timeline, the values as found (but a valid segment and page size), the
    page's LSN not checked."""
    cdef Py_buffer view
    cdef WalPages wp
    cdef int rc = -1
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len >= LONG_PHD_CHECK_LEN:
            wp_init(&wp, 0, 0, 0, 0, 0, 0, False)
            rc = wp_check_header(&wp, 0, True, <const unsigned char *>view.buf)
    finally:
        PyBuffer_Release(&view)
    if rc < 0:
        return None
    return wp.sysid, wp.segsize, wp.page_size

"""Compressed segment files (``-Z/--compress``): methods, encoders, decoders.

pg_receivewal writes ``NAME.gz`` / ``NAME.lz4`` (``.gz.partial`` /
``.lz4.partial`` while a segment is incomplete); walfast also writes
``NAME.zst``, which pg_receivewal rejects.  This module holds what a method
means for the bytes of a file: the :class:`CompressionSpec` the command line
produces, one :class:`Encoder` per file written (used by the compressing
worker, :mod:`walfast.waldir.compressor`), the one way walfast measures an
existing compressed file (:func:`decoded_length`, used by the start-position
scan and by the worker) and the one way it decompresses one
(:class:`StreamDecoder`, used by ``walfast restore``).  It does no file I/O
of its own beyond reading a file to measure it.

The compression libraries (lz4, zstandard) are imported when a file of that
method is first encoded or measured, so commands that never compress do not
load them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "SUFFIXES", "CompressionSpec", "DecodeError", "Encoder", "Method", "StreamDecoder",
    "decoded_length", "new_encoder",
]

Method = Literal["gzip", "lz4", "zstd"]

#: File-name suffix per method, as pg_receivewal names them (zstd: walfast only).
SUFFIXES: dict[str, str] = {"gzip": ".gz", "lz4": ".lz4", "zstd": ".zst"}

#: Bytes read, and uncompressed bytes produced, per step when measuring a file.
_READ_CHUNK = 256 << 10
#: Compressed bytes given to the decoder at a time by :class:`StreamDecoder`.
#: zstd's decoder cannot be asked for less output than its input holds, so
#: its input goes in small pieces: a damaged or hostile frame then cannot
#: make one call return more than a few hundred MB (RLE blocks reach
#: ~43,000:1); gzip and lz4 are bounded by their ``max_length``.
_DECODE_PIECE = {"gzip": 64 << 10, "lz4": 64 << 10, "zstd": 4 << 10}


@dataclass(frozen=True)
class CompressionSpec:
    """How completed and partial segments are compressed.

    *level* None means the method's default level (as pg_receivewal when no
    level is given).
    """

    method: Method
    level: int | None = None

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.method]


# --------------------------------------------------------------------------- #
# encoders: one compressed stream (one file)
# --------------------------------------------------------------------------- #

class Encoder(Protocol):
    """One compressed stream (one file)."""

    def begin(self) -> bytes: ...
    def compress(self, data: memoryview) -> bytes: ...
    def sync_flush(self) -> bytes: ...
    def finish(self) -> bytes: ...


class _GzipEncoder:
    def __init__(self, level: int | None) -> None:
        # wbits 31 = deflate with the gzip wrapper (mtime 0, OS 3), the
        # header gzdopen()+gzwrite() produce.
        self._z = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION if level is None else level, zlib.DEFLATED, 31)

    def begin(self) -> bytes:
        return b""

    def compress(self, data: memoryview) -> bytes:
        return self._z.compress(data)

    def sync_flush(self) -> bytes:
        return self._z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class _Lz4Encoder:
    def __init__(self, level: int | None) -> None:
        import lz4.frame  # type: ignore[import-untyped]

        self._frame = lz4.frame
        self._ctx = lz4.frame.create_compression_context()
        self._level = 0 if level is None else level

    def begin(self) -> bytes:
        # pg_receivewal passes NULL preferences to LZ4F_compressBegin: the
        # library defaults, spelled out here.
        header: bytes = self._frame.compress_begin(
            self._ctx, source_size=0, compression_level=self._level,
            block_size=self._frame.BLOCKSIZE_MAX64KB, content_checksum=False,
            block_linked=True, auto_flush=False)
        return header

    def compress(self, data: memoryview) -> bytes:
        out: bytes = self._frame.compress_chunk(self._ctx, data)
        return out

    def sync_flush(self) -> bytes:
        out: bytes = self._frame.compress_flush(self._ctx, end_frame=False)
        return out

    def finish(self) -> bytes:
        out: bytes = self._frame.compress_flush(self._ctx, end_frame=True)
        return out


class _ZstdEncoder:
    def __init__(self, level: int | None) -> None:
        import zstandard

        self._flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        self._flush_finish = zstandard.COMPRESSOBJ_FLUSH_FINISH
        cctx = zstandard.ZstdCompressor(level=3 if level is None else level)
        self._z = cctx.compressobj()

    def begin(self) -> bytes:
        return b""

    def compress(self, data: memoryview) -> bytes:
        return self._z.compress(data)

    def sync_flush(self) -> bytes:
        return self._z.flush(self._flush_block)

    def finish(self) -> bytes:
        return self._z.flush(self._flush_finish)


def new_encoder(spec: CompressionSpec) -> Encoder:
    """A fresh compressed stream for *spec*."""
    if spec.method == "gzip":
        return _GzipEncoder(spec.level)
    if spec.method == "lz4":
        return _Lz4Encoder(spec.level)
    if spec.method == "zstd":
        return _ZstdEncoder(spec.level)
    raise ValueError(f"unknown compression method {spec.method!r}")


# --------------------------------------------------------------------------- #
# decoders: measuring an existing file
# --------------------------------------------------------------------------- #

class DecodeError(ValueError):
    """A compressed file that cannot be decoded (damaged, or not of its method)."""


class _Decoder:
    """One member/frame of *method*, fed piecewise; :meth:`feed` returns how
    many bytes came out.  Each library's quirks stay in here: lz4's decoder
    holds back part of a flushed block unless given an output size (and
    then asked again), so it is driven with ``max_length`` until it needs
    more input; zstd raises its own error class."""

    def __init__(self, method: str) -> None:
        self._lz4 = False
        self._gzip = method == "gzip"
        self._more = False
        self._d: Any
        if method == "gzip":
            self._d = zlib.decompressobj(31)
            self._errors: tuple[type[Exception], ...] = (zlib.error,)
        elif method == "lz4":
            import lz4.frame

            self._d = lz4.frame.LZ4FrameDecompressor()
            self._lz4 = True
            self._errors = (RuntimeError, EOFError)
        elif method == "zstd":
            import zstandard

            self._d = zstandard.ZstdDecompressor().decompressobj()
            self._errors = (zstandard.ZstdError,)
        else:
            raise ValueError(f"unknown compression method {method!r}")

    def feed(self, data: bytes, budget: int) -> int:
        """Decode *data*; stop early once more than *budget* bytes came out."""
        try:
            if self._lz4:
                n = len(self._d.decompress(data, max_length=_READ_CHUNK))
                while not self._d.eof and not self._d.needs_input and n <= budget:
                    n += len(self._d.decompress(b"", max_length=_READ_CHUNK))
                return n
            return len(self._d.decompress(data))
        except self._errors as exc:
            raise DecodeError(str(exc)) from None

    def take(self, data: bytes, max_length: int) -> bytes:
        """Decode *data* (b"": go on with what was given before), returning at
        most *max_length* uncompressed bytes (zstd: all that *data* holds);
        :attr:`more` then tells whether more output is ready without input."""
        try:
            if self._gzip:
                tail = self._d.unconsumed_tail
                out: bytes = self._d.decompress(tail + data if tail else data, max_length)
                self._more = bool(self._d.unconsumed_tail) or (
                    len(out) >= max_length and not self._d.eof)
            elif self._lz4:
                out = self._d.decompress(data, max_length=max_length)
                self._more = not self._d.eof and not self._d.needs_input
            else:
                out = self._d.decompress(data)
                self._more = False
        except self._errors as exc:
            raise DecodeError(str(exc) or type(exc).__name__) from None
        return out

    @property
    def more(self) -> bool:
        """Output is waiting that :meth:`take` gives without new input."""
        return self._more

    @property
    def eof(self) -> bool:
        return bool(self._d.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._d.unused_data or b"")   # python-lz4: None until the end


class StreamDecoder:
    """One compressed file of *method* decompressed piece by piece: its bytes
    go in through :meth:`decode` in pieces of any size, the uncompressed
    bytes come out in pieces of bounded size (gzip, lz4: 256 kB; zstd: what
    4 kB of its input holds), so a damaged stream cannot make memory
    balloon.  Concatenated members/frames are one stream, as for
    :func:`decoded_length`.  :attr:`complete` tells whether the input so far
    ends where a member/frame ends: a file that was cut short (or an
    unfinished ``.partial``) does not.  Damaged input raises
    :class:`DecodeError`; ``ImportError`` when the method's library is not
    installed."""

    def __init__(self, method: str) -> None:
        if method not in SUFFIXES:
            raise ValueError(f"unknown compression method {method!r}")
        self.method = method
        self._d = _Decoder(method)
        self._piece = _DECODE_PIECE[method]
        self._in_member = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        """The uncompressed bytes *data* completes, in pieces."""
        view = memoryview(data)
        for start in range(0, len(view), self._piece):
            yield from self._feed(bytes(view[start:start + self._piece]))

    def _feed(self, piece: bytes) -> Iterator[bytes]:
        while True:
            if piece:
                self._in_member = True
            out = self._d.take(piece, _READ_CHUNK)
            piece = b""
            if out:
                yield out
            if self._d.eof:                  # a member/frame ended
                piece = self._d.unused_data
                self._d = _Decoder(self.method)
                self._in_member = False
                if not piece:
                    return
            elif not self._d.more:
                return

    @property
    def complete(self) -> bool:
        """The input so far ends at the end of a member/frame (or is empty)."""
        return not self._in_member


def _decoded_chunks(path: str, method: str, limit: int) -> Iterator[int]:
    """Sizes of the uncompressed pieces of *path*, read as concatenated
    members/frames of *method*; stops once more than *limit* bytes came out.
    Raises :class:`DecodeError` on damaged input (after yielding the sizes
    before it)."""
    total = 0
    d = _Decoder(method)
    with open(path, "rb") as f:
        while total <= limit:
            data = f.read(_READ_CHUNK)
            if not data:
                return
            while data and total <= limit:
                n = d.feed(data, limit - total)
                total += n
                yield n
                if not d.eof:
                    break
                data = d.unused_data      # the next member / frame
                d = _Decoder(method)


def decoded_length(path: str, method: str, limit: int, *, tolerant: bool = False) -> int:
    """Uncompressed size of the compressed file *path* (or some value above
    *limit* once it is known to exceed it; memory stays bounded).  With
    *tolerant*, damaged or truncated data ends the count instead of raising
    :class:`DecodeError`: the result is the length of the decodable prefix.
    A missing file has length 0.  ``ImportError`` when the method's library
    is not installed."""
    total = 0
    try:
        for n in _decoded_chunks(path, method, limit):
            total += n
    except FileNotFoundError:
        return 0
    except DecodeError:
        if not tolerant:
            raise
    return total

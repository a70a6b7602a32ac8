"""Where archived WAL files live: an S3 bucket and prefix, or a directory.

An archive location is a URL: ``s3://BUCKET/PREFIX`` (the object of a file
is ``PREFIX/<file name>``) or a local path (walfast's own ``-D`` directory,
or any directory of WAL files).  Both stores answer the same four questions
(:class:`Store`): put a file, get one, its size, the names under the
location.

S3 goes through boto3 with its standard configuration, so whatever users
already set works: the credentials chain (environment, profiles, instance
roles), ``AWS_PROFILE``, the region, and ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) for MinIO, Ceph RGW, R2 and the like.  boto3 is
imported only when an S3 location is used.

Integrity: every PUT and every part of a multipart upload carries an
``x-amz-checksum-crc32`` that botocore computes from the body as it sends
it, so the store refuses a body that changed on the way rather than storing
it.  (Content-MD5 would do the same but costs a second read and a slower
hash: walfast's uploader used about twice the CPU with both, see
benchmarks/README.md.)  Files larger than
:data:`MULTIPART_THRESHOLD` go in parts of :data:`PART_SIZE` (a 1 GiB
segment is 16 parts), each retried on its own by the caller's retry loop
only as a whole upload: a failed multipart upload is aborted, never left
half-made.

boto3's own retries are kept short (2 attempts, 10 s timeouts): the
uploader's loop retries with backoff and jitter and reports the failure
while it does, which a client stuck in its own retries could not.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from walfast.errors import ArchiveError

__all__ = [
    "MULTIPART_THRESHOLD",
    "PART_SIZE",
    "DirectoryStore",
    "S3Store",
    "Store",
    "open_store",
]

#: Files above this size are uploaded in parts.
MULTIPART_THRESHOLD = 64 << 20
#: The size of each part (S3 allows 5 MiB to 5 GiB, at most 10,000 parts).
PART_SIZE = 64 << 20
#: The checksum every PUT and part carries (x-amz-checksum-crc32).
CHECKSUM = "CRC32"
_COPY_BUFFER = 1 << 20


class Store(Protocol):
    """An archive location (:func:`open_store`)."""

    @property
    def url(self) -> str:
        """The location as the user gave it, for messages."""

    def put(self, name: str, source: Path | bytes) -> None:
        """Store *source* (a file, or bytes: a snapshot of a file that is
        still being written) as *name*, replacing what has that name.
        Returns once the store has it durably; :class:`ArchiveError` else."""

    def holds(self, name: str, source: Path) -> bool:
        """Whether the store already has *name* with exactly *source*'s
        content (so an upload that a crash kept from being recorded need
        not be made again)."""

    def delete(self, name: str) -> None:
        """Remove *name* if it is there."""

    def get(self, name: str, out: IO[bytes]) -> bool:
        """Write the file *name* into *out*; False (nothing written) when
        there is no such file; :class:`ArchiveError` when it cannot be read."""

    def size(self, name: str) -> int | None:
        """The size of the file *name*, None when there is none."""

    def names(self, start_after: str = "") -> Iterator[str]:
        """The names under the location, in byte order, after *start_after*."""

    def where(self, name: str) -> str:
        """Where the file *name* is (``s3://bucket/prefix/name``, a path)."""


def open_store(url: str) -> Store:
    """The store of an archive location: ``s3://BUCKET[/PREFIX]`` or a
    directory path."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ArchiveError(f'invalid archive location "{url}": expected s3://BUCKET/PREFIX',
                               retryable=False)
        return S3Store(bucket, prefix.strip("/"))
    if "://" in url:
        raise ArchiveError(f'invalid archive location "{url}": only s3://BUCKET/PREFIX and '
                           f"local directories are supported", retryable=False)
    return DirectoryStore(Path(url))


def _md5(source: Path | memoryview, offset: int = 0, length: int | None = None) -> bytes:
    """MD5 of *length* bytes of *source* from *offset* (to the end: None)."""
    h = hashlib.md5(usedforsecurity=False)
    if isinstance(source, memoryview):
        h.update(source[offset:None if length is None else offset + length])
        return h.digest()
    with open(source, "rb") as f:
        f.seek(offset)
        left = length if length is not None else -1
        while left:
            chunk = f.read(_COPY_BUFFER if left < 0 else min(left, _COPY_BUFFER))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk) if left > 0 else 0
    return h.digest()


def expected_etag(source: Path) -> str:
    """The ETag S3 gives an object uploaded from *source* by :class:`S3Store`
    (without server-side encryption by KMS): the MD5 of a single PUT; for a
    multipart upload the MD5 of the parts' MD5s, a dash and the count."""
    size = source.stat().st_size
    if size <= MULTIPART_THRESHOLD:
        return _md5(source).hex()
    parts = [_md5(source, offset, min(PART_SIZE, size - offset))
             for offset in range(0, size, PART_SIZE)]
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


class _FileSlice:
    """A read-only window on a file, as a request body (boto3 reads it,
    seeks it back on a retry and asks its length)."""

    def __init__(self, f: IO[bytes], offset: int, length: int) -> None:
        self._f, self._start, self._len, self._pos = f, offset, length, 0

    def read(self, n: int = -1) -> bytes:
        left = self._len - self._pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._len}[whence]
        self._pos = max(0, min(self._len, base + pos))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return self._len


class S3Store:
    """Files as objects ``PREFIX/<name>`` in an S3 bucket (any S3 API)."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self._url

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def where(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (boto3 takes ~0.3 s to
        import; commands that never reach the store do not pay it).
        botocore clients are thread-safe once made."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(retries={"max_attempts": 2, "mode": "standard"},
                                connect_timeout=10, read_timeout=30)
                self._client = boto3.session.Session().client("s3", config=config)
            return self._client

    def _error(self, exc: BaseException, doing: str, name: str) -> ArchiveError:
        return s3_error(exc, f'could not {doing} "{self.where(name)}"')

    def put(self, name: str, source: Path | bytes) -> None:
        body = memoryview(source) if isinstance(source, bytes) else source
        size = len(body) if isinstance(body, memoryview) else body.stat().st_size
        try:
            if size > MULTIPART_THRESHOLD:
                self._put_multipart(name, body, size)
            elif isinstance(body, memoryview):
                self.client.put_object(Bucket=self.bucket, Key=self._key(name),
                                       Body=bytes(body), ChecksumAlgorithm=CHECKSUM)
            else:
                with open(body, "rb") as f:
                    self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=f,
                                           ContentLength=size, ChecksumAlgorithm=CHECKSUM)
        except ArchiveError:
            raise
        except Exception as exc:   # botocore's errors, or the network's
            raise self._error(exc, "upload", name) from exc

    def _head(self, name: str) -> dict[str, Any] | None:
        """HEAD of the object *name*; None when there is none."""
        try:
            reply: dict[str, Any] = self.client.head_object(Bucket=self.bucket,
                                                            Key=self._key(name))
        except Exception as exc:
            if _not_found(exc):
                return None
            raise self._error(exc, "look up", name) from exc
        return reply

    def holds(self, name: str, source: Path) -> bool:
        reply = self._head(name)
        return (reply is not None and int(reply["ContentLength"]) == source.stat().st_size
                and reply.get("ETag", "").strip('"') == expected_etag(source))

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            if not _not_found(exc):
                raise self._error(exc, "delete", name) from exc

    def _put_multipart(self, name: str, body: Path | memoryview, size: int) -> None:
        key = self._key(name)
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ChecksumAlgorithm=CHECKSUM)["UploadId"]
        try:
            parts = []
            with contextlib.ExitStack() as stack:
                f = None if isinstance(body, memoryview) else stack.enter_context(open(body, "rb"))
                for number, offset in enumerate(range(0, size, PART_SIZE), start=1):
                    length = min(PART_SIZE, size - offset)
                    part: Any = (_FileSlice(f, offset, length) if f is not None
                                 else bytes(body[offset:offset + length])
                                 if isinstance(body, memoryview) else b"")
                    reply = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=part, ContentLength=length, ChecksumAlgorithm=CHECKSUM)
                    parts.append({"PartNumber": number, "ETag": reply["ETag"],
                                  f"Checksum{CHECKSUM}": reply[f"Checksum{CHECKSUM}"]})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key,
                                                  UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                   UploadId=upload_id)
            except Exception:
                pass   # the bucket's lifecycle rules clean up what this could not
            raise

    def get(self, name: str, out: IO[bytes]) -> bool:
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            if _not_found(exc):
                return False
            raise self._error(exc, "download", name) from exc
        try:
            body = reply["Body"]
            for chunk in iter(lambda: body.read(_COPY_BUFFER), b""):
                out.write(chunk)
        except Exception as exc:
            raise self._error(exc, "download", name) from exc
        return True

    def size(self, name: str) -> int | None:
        reply = self._head(name)
        return None if reply is None else int(reply["ContentLength"])

    def names(self, start_after: str = "") -> Iterator[str]:
        base = self._key("")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base}
        if start_after:
            kwargs["StartAfter"] = base + start_after
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", ()):
                    name = item["Key"][len(base):]
                    if name and "/" not in name:
                        yield name
        except Exception as exc:
            raise s3_error(exc, f'could not list "{self.url}"') from exc


def _not_found(exc: BaseException) -> bool:
    code = _error_code(exc)
    return code in ("NoSuchKey", "404", "NotFound")


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "") or None
    return None


#: S3 error codes that trying again cannot fix.
_PERMANENT = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
              "InvalidBucketName", "AllAccessDisabled", "AccountProblem"}


def s3_error(exc: BaseException, what: str) -> ArchiveError:
    """An :class:`ArchiveError` in the store's words: ``what: CODE: message``
    for an S3 error, the connection's reason for a network error."""
    code = _error_code(exc)
    if code is not None:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message") or ""
        reason = f"{code}: {message}" if message else code
        return ArchiveError(f"{what}: {reason}", retryable=code not in _PERMANENT)
    if type(exc).__name__ == "NoCredentialsError":
        return ArchiveError(f"{what}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                            f"AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role)",
                            retryable=False)
    return ArchiveError(f"{what}: {exc}")


@dataclass
class DirectoryStore:
    """Files in a local directory (walfast's ``-D``, or any copy of one)."""

    path: Path

    @property
    def url(self) -> str:
        return str(self.path)

    def where(self, name: str) -> str:
        return str(self.path / name)

    def put(self, name: str, source: Path | bytes) -> None:
        from walfast.waldir.durable import write_file_durably

        data = source if isinstance(source, bytes) else source.read_bytes()
        try:
            write_file_durably(self.path, name, data, sync=True, mode=0o600)
        except OSError as exc:
            raise ArchiveError(f"could not store {name}: {exc.strerror or exc}") from exc

    def holds(self, name: str, source: Path) -> bool:
        try:
            return (self.path / name).read_bytes() == source.read_bytes()
        except FileNotFoundError:
            return False

    def delete(self, name: str) -> None:
        try:
            os.unlink(self.path / name)
        except FileNotFoundError:
            pass

    def get(self, name: str, out: IO[bytes]) -> bool:
        try:
            f = open(self.path / name, "rb")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ArchiveError(f'could not open "{self.where(name)}": '
                               f"{exc.strerror or exc}") from exc
        with f:
            try:
                shutil.copyfileobj(f, out, _COPY_BUFFER)
            except OSError as exc:
                raise ArchiveError(f'could not read "{self.where(name)}": '
                                   f"{exc.strerror or exc}") from exc
        return True

    def size(self, name: str) -> int | None:
        try:
            return os.stat(self.path / name).st_size
        except FileNotFoundError:
            return None

    def names(self, start_after: str = "") -> Iterator[str]:
        try:
            found = sorted(e.name for e in os.scandir(self.path) if e.is_file())
        except OSError as exc:
            raise ArchiveError(f'could not read directory "{self.path}": '
                               f"{exc.strerror or exc}") from exc
        return iter([n for n in found if n > start_after])

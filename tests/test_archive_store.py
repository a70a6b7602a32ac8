"""walfast.archive.store against a real S3 API server (moto's server mode on
loopback, tests/helpers/s3server.py): multipart uploads, the ETag check that
keeps a crashed run's upload from being made again, errors in the store's
words."""

from __future__ import annotations

import io
import os

import pytest

from helpers.s3server import S3Server
from walfast.archive import store as store_module
from walfast.archive.store import DirectoryStore, S3Store, expected_etag, open_store
from walfast.errors import ArchiveError


@pytest.fixture(scope="module", params=["http", "https"])
def s3(request):
    """Over https too, as AWS and most stores are: botocore then sends its
    checksum in a trailer of an unsigned body instead of signing a SHA-256
    of it, and the certificate comes from ``AWS_CA_BUNDLE``."""
    with S3Server(tls=request.param == "https") as server:
        saved = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        server.create_bucket("walfast-store")
        yield server
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of 5 MiB (S3's minimum) above 8 MiB, so a multipart upload
    needs no big file."""
    monkeypatch.setattr(store_module, "MULTIPART_THRESHOLD", 8 << 20)
    monkeypatch.setattr(store_module, "PART_SIZE", 5 << 20)


def test_single_and_multipart_uploads_round_trip(s3, small_parts, tmp_path):
    store = open_store("s3://walfast-store/a/b")
    assert isinstance(store, S3Store)
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(os.urandom(100_000))
    big.write_bytes(os.urandom(12 << 20))           # 3 parts: 5 + 5 + 2 MiB
    for path in (small, big):
        store.put(path.name, path)
        out = io.BytesIO()
        assert store.get(path.name, out) and out.getvalue() == path.read_bytes()
        assert store.size(path.name) == path.stat().st_size
        assert store.holds(path.name, path)
    assert expected_etag(big).endswith("-3")
    head = s3.client().head_object(Bucket="walfast-store", Key="a/b/big")
    assert head["ETag"].strip('"') == expected_etag(big)
    assert list(store.names()) == ["big", "small"]
    assert s3.client().list_multipart_uploads(Bucket="walfast-store").get("Uploads", []) == []


def test_bytes_snapshot_and_changed_content(s3, tmp_path):
    store = open_store("s3://walfast-store/snap")
    path = tmp_path / "000000010000000000000001.partial"
    path.write_bytes(b"\x01" * 4096)
    store.put(path.name, path.read_bytes())
    assert store.holds(path.name, path)
    path.write_bytes(b"\x02" * 4096)                 # same size, other content
    assert not store.holds(path.name, path)
    store.delete(path.name)
    store.delete(path.name)                          # gone already: no error
    assert store.size(path.name) is None
    assert not store.get(path.name, io.BytesIO())


def test_errors_name_the_object_and_the_reason(s3, tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with pytest.raises(ArchiveError) as e:
        open_store("s3://no-such-walfast-bucket/p").put("f", path)
    assert str(e.value).startswith('could not upload "s3://no-such-walfast-bucket/p/f": '
                                   "NoSuchBucket")
    assert not e.value.retryable
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")    # nothing listens
    with pytest.raises(ArchiveError) as e:
        open_store("s3://walfast-store/p").put("f", path)
    assert 'could not upload "s3://walfast-store/p/f"' in str(e.value)
    assert e.value.retryable
    for bad in ("gs://bucket/x", "s3:///x"):
        with pytest.raises(ArchiveError, match="invalid archive location"):
            open_store(bad)


def test_a_directory_is_a_store_too(tmp_path):
    store = open_store(str(tmp_path / "archive"))
    assert isinstance(store, DirectoryStore)
    (tmp_path / "archive").mkdir()
    src = tmp_path / "src"
    src.write_bytes(b"wal")
    store.put("000000010000000000000002", src)
    assert store.holds("000000010000000000000002", src)
    assert list(store.names()) == ["000000010000000000000002"]


def test_a_timelines_last_partial_is_shipped_as_left_and_retried(tmp_path):
    """Uploader.timeline_ended: the .partial a timeline left is uploaded
    once as it is (not an older snapshot); a failed upload is tried again
    one partial interval later, not at every wake-up of the uploader."""
    import time

    from walfast.archive.uploader import Uploader

    class FlakyStore(DirectoryStore):
        def __init__(self, path):
            super().__init__(path)
            self.puts: list[tuple[str, float]] = []

        def put(self, name, source):
            self.puts.append((name, time.monotonic()))
            if len(self.puts) == 1:
                raise ArchiveError("the store is down for a moment")
            super().put(name, source)

    wal, bucket = tmp_path / "wal", tmp_path / "bucket"
    wal.mkdir()
    bucket.mkdir()
    name = "00000001000000000000000B.partial"
    (wal / name).write_bytes(b"timeline 1, as it was left")
    store = FlakyStore(bucket)
    uploader = Uploader(wal, store, partial_interval=0.5, sync=False)
    uploader.start(1 << 20)
    try:
        uploader.timeline_ended(name)
        deadline = time.monotonic() + 10
        while not (bucket / name).exists() and time.monotonic() < deadline:
            uploader.poke()         # wake-ups, as completed segments bring them
            time.sleep(0.02)
    finally:
        uploader.close()
    assert (bucket / name).read_bytes() == b"timeline 1, as it was left"
    assert [n for n, _ in store.puts] == [name, name]
    assert store.puts[1][1] - store.puts[0][1] >= 0.45
    assert uploader.failures == 1

"""A real S3 API server on loopback for the archive tests: moto's server
mode (``python -m moto.server``) on a free port, in its own process.

It is an HTTP endpoint like MinIO's or AWS's: boto3 talks to it over TCP
through ``AWS_ENDPOINT_URL``, with signed requests, Content-MD5 checks and
multipart uploads; nothing in walfast's process is patched.  Its state is
in memory, so a test that needs the store to go away for a while puts a
:class:`~helpers.faultproxy.FaultProxy` in front of it rather than stopping
it (stopping would lose the bucket).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from walfast.cluster import free_port

__all__ = ["S3Server", "s3_env"]


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment under which boto3 (walfast's, the tests') uses the
    server at *endpoint*: what users set for MinIO and the like."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "walfast-test",
        "AWS_SECRET_ACCESS_KEY": "walfast-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        # No ~/.aws of the machine's user gets in the way.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class S3Server:
    """``moto.server`` on 127.0.0.1 and a free port; :attr:`endpoint` is its
    URL.  :meth:`client` is a boto3 client for it (for assertions)."""

    def __init__(self, log: Path | None = None) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = s3_env(self.endpoint)
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env})
        finally:
            if log is not None:
                out.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"moto.server did not start on port {self.port}"
                                       f" (exit status {self.proc.returncode})") from None
                time.sleep(0.1)

    def client(self, endpoint: str | None = None):
        import boto3

        return boto3.session.Session(
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=endpoint or self.endpoint)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under *prefix* (``name`` after the prefix and its
        slash) with its content."""
        c = self.client()
        base = f"{prefix}/" if prefix else ""
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for item in page.get("Contents", ()):
                body = c.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                out[item["Key"][len(base):]] = body
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

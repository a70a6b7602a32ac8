"""A throwaway S3 API server on loopback, for the tests and the benchmarks:
moto's server mode (``python -m moto.server``) on a free port, in its own
process.  As :mod:`walfast.cluster` is for PostgreSQL, it ships in the
package so that the tests (``tests/helpers/s3server.py``) and the
end-to-end benchmark (``benchmarks/e2e``) share one definition; it is not
part of the receiver and needs ``moto[server]`` (the ``test`` extra).

It is an HTTP endpoint like MinIO's or AWS's: boto3 talks to it over TCP
through ``AWS_ENDPOINT_URL``, with signed requests, checksums and
multipart uploads; nothing in walfast's process is patched.  Its state is
in memory (objects over ~5 MB in temporary files in *tmpdir*), so a test
that needs the store to go away for a while puts a proxy in front of it
rather than stopping it (stopping would lose the bucket).
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from walfast.cluster import free_port, make_tls_files

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
    URL.  :meth:`client` is a boto3 client for it (for assertions).

    *log*: a file for the server's output (else discarded).  *tmpdir*: where
    it keeps the temporary files of large objects (its ``TMPDIR``; default
    the system's).  *cpus*: the CPUs it may run on (``sched_setaffinity``;
    default all).  *tls*: serve https, as AWS and most stores do, with a
    self-signed certificate that :attr:`env` makes boto3 trust
    (``AWS_CA_BUNDLE``): the path production uses, where botocore sends
    the body unsigned with its checksum in a trailer instead of signing a
    SHA-256 of it (benchmarks/upload_cost.py compares the two)."""

    def __init__(self, log: Path | None = None, *, tmpdir: Path | None = None,
                 cpus: set[int] | None = None, tls: bool = False) -> None:
        self.port = free_port()
        #: the server's output: a line per request, written as it answers
        self.log = log
        self._tls_dir: Path | None = None
        args = ["-H", "127.0.0.1", "-p", str(self.port)]
        context = None
        if tls:
            self._tls_dir, crt, key = make_tls_files("walfast-s3-tls-", owner=None)
            args += ["-c", str(crt), "-k", str(key)]
            context = ssl.create_default_context(cafile=str(crt))
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.env = s3_env(self.endpoint)
        if tls:
            self.env["AWS_CA_BUNDLE"] = str(crt)
        env = {**os.environ, **self.env}
        if tmpdir is not None:
            env["TMPDIR"] = str(tmpdir)
        out: Any = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", *args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus))
        finally:
            if log is not None:
                out.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1,
                                       context=context).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"moto.server did not start on port {self.port}"
                                       f" (exit status {self.proc.returncode})") from None
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the server has used so far (all its
        threads), None once it is gone."""
        from walfast.bench.receivers import proc_cpu_seconds

        return proc_cpu_seconds(self.proc.pid)

    def client(self, endpoint: str | None = None) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=endpoint or self.endpoint,
                 verify=self.env.get("AWS_CA_BUNDLE"))

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def sizes(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """The size of every object under *prefix* (``name`` after the
        prefix and its slash), without reading them."""
        c = self.client()
        base = f"{prefix}/" if prefix else ""
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for item in page.get("Contents", ()):
                out[item["Key"][len(base):]] = int(item["Size"])
        return out

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under *prefix* (``name`` after the prefix and its
        slash) with its content."""
        c = self.client()
        base = f"{prefix}/" if prefix else ""
        return {name: c.get_object(Bucket=bucket, Key=base + name)["Body"].read()
                for name in self.sizes(bucket, prefix)}

    def get(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def delete_all(self, bucket: str, prefix: str = "") -> int:
        """Remove every object under *prefix*; returns how many there were."""
        c = self.client()
        base = f"{prefix}/" if prefix else ""
        keys = [base + name for name in self.sizes(bucket, prefix)]
        for i in range(0, len(keys), 1000):
            c.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        return len(keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

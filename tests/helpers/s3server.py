"""A real S3 API server on loopback for the archive tests: moto's server
mode on a free port, in its own process.  Defined in
:mod:`walfast.s3server` (the end-to-end benchmark runs the same one); see
there.  A test that needs the store to go away for a while puts a
:class:`~helpers.faultproxy.FaultProxy` in front of it rather than stopping
it (stopping would lose the bucket).
"""

from __future__ import annotations

from walfast.s3server import S3Server, s3_env

__all__ = ["S3Server", "s3_env"]

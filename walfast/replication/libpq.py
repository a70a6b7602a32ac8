"""Locate the libpq that psycopg uses, so the engine can call it directly.

The compiled receive loop reads CopyData through libpq (so TLS, GSS and unix
sockets work unchanged) but must not link libpq itself: ``psycopg[binary]``
bundles its own libpq, and calling another copy of libpq on psycopg's
``PGconn *`` is undefined (different struct layouts).  So the engine resolves
its function pointers from the very library psycopg loaded, found here.
"""

from __future__ import annotations

import os

import psycopg

__all__ = ["psycopg_libpq_path"]


def _mapped_libpqs() -> list[str]:
    paths: list[str] = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6:
                path = parts[5].strip()
                name = os.path.basename(path)
                if name.startswith("libpq") and ".so" in name and path not in paths:
                    paths.append(path)
    return paths


def psycopg_libpq_path() -> str:
    """Path (or soname) of the libpq library psycopg's connections live in."""
    impl = psycopg.pq.__impl__
    if impl == "python":
        from psycopg.pq import _pq_ctypes

        return str(getattr(_pq_ctypes, "pq")._name)
    mapped = _mapped_libpqs()
    bundled = [p for p in mapped if "psycopg_binary" in p]
    if impl == "binary" and bundled:
        return bundled[0]
    system = [p for p in mapped if "psycopg_binary" not in p]
    if impl == "c" and system:
        return system[0]
    raise RuntimeError(
        f"cannot find the libpq used by psycopg (implementation {impl!r}); "
        f"libpq libraries mapped in this process: {mapped or 'none'}"
    )

"""Opening a physical replication connection, and the libpq it lives in.

:func:`connect` is pg_receivewal's ``GetConnection``: any libpq conninfo,
``PG*`` environment variables, the service file and ``.pgpass`` work as with
libpq, with ``replication=true`` and ``dbname=replication`` forced.

:func:`psycopg_libpq_path` finds the libpq psycopg loaded: the compiled
receive loop calls libpq on psycopg's ``PGconn *`` (so TLS, GSS and unix
sockets work unchanged) but must not link libpq itself, because
``psycopg[binary]`` bundles its own copy and calling another copy of libpq on
that pointer is undefined (different struct layouts).  So the engine resolves
its function pointers from the very library psycopg loaded
(:func:`load_engine_libpq`).
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from walfast.errors import ServerMismatchError
from walfast.log import get_logger

__all__ = ["connect", "load_engine_libpq", "psycopg_libpq_path"]

logger = get_logger(__name__)

#: Values of the ``replication`` connection parameter meaning "physical".
_PHYSICAL_REPLICATION_VALUES = frozenset({"true", "on", "yes", "1"})


def connect(
    conninfo: str = "",
    *,
    host: str | None = None,
    port: int | str | None = None,
    user: str | None = None,
    password: str | None = None,
    application_name: str | None = "walfast",
    connect_timeout: int | str | None = None,
    default_connect_timeout: int | None = None,
) -> psycopg.Connection[Any]:
    """Open a physical-replication connection, as pg_receivewal's ``GetConnection``.

    ``conninfo`` is any libpq connection string or URI; whatever it leaves
    unset comes from the ``PG*`` environment variables, the service file and
    ``.pgpass``, exactly as with libpq.  ``host``, ``port``, ``user``,
    ``password`` and ``connect_timeout``, when not ``None``, override the
    conninfo (pg_receivewal's ``-h``/``-p``/``-U`` override ``-d`` the same
    way).

    Forced, whatever the conninfo says, as pg_receivewal forces them:

    * ``replication=true``.  A ``replication=database`` (a logical walsender)
      or ``replication=false`` in the conninfo is overridden, with a warning
      logged; pg_receivewal overrides it silently.
    * ``dbname=replication``.  pg_receivewal discards any ``dbname`` of its
      connection string; the server ignores the name on a physical
      connection, but libpq uses it to pick the ``.pgpass`` line, so keeping
      pg_receivewal's value keeps the same password lookup.

    ``application_name`` is passed as ``fallback_application_name``: an
    ``application_name`` in the conninfo (or ``PGAPPNAME``) wins over it.
    The connection is in autocommit mode (the walsender rejects ``BEGIN``)
    and never prepares statements (it rejects the extended protocol).  Once
    ``START_REPLICATION`` has been sent, end it with ``conn.close()``: leaving
    a ``with conn:`` block would send ``COMMIT`` in the middle of the COPY and
    fail with "another command is already in progress".

    *default_connect_timeout* is used only when neither the conninfo nor
    ``PGCONNECT_TIMEOUT`` sets one (libpq's own default waits forever, and a
    receiver left alone must not hang on a path that swallows packets).

    Raises :class:`~walfast.errors.ServerMismatchError` (after closing the
    connection) if the server's ``integer_datetimes`` is not ``on``.
    Connection failures propagate as ``psycopg.OperationalError``, a bad
    conninfo as ``psycopg.ProgrammingError``.
    """
    params: dict[str, Any] = conninfo_to_dict(conninfo) if conninfo else {}

    dropped_dbname = params.pop("dbname", None)
    if dropped_dbname not in (None, "", "replication"):
        logger.debug(
            'ignoring dbname "%s" from the connection string: a physical '
            "replication connection uses dbname=replication", dropped_dbname)
    requested = params.pop("replication", None)
    if requested is not None and str(requested).lower() not in _PHYSICAL_REPLICATION_VALUES:
        logger.warning(
            'ignoring replication=%s from the connection string: walfast '
            "always uses a physical replication connection (replication=true)",
            requested)

    for key, value in (
        ("host", host), ("port", port), ("user", user), ("password", password),
        ("connect_timeout", connect_timeout),
    ):
        if value is not None:
            params[key] = value
    if application_name is not None:
        params.setdefault("fallback_application_name", application_name)
    if default_connect_timeout and "connect_timeout" not in params \
            and not os.environ.get("PGCONNECT_TIMEOUT"):
        params["connect_timeout"] = default_connect_timeout
    params["dbname"] = "replication"
    params["replication"] = "true"

    conn = psycopg.connect(
        make_conninfo("", **params), autocommit=True, prepare_threshold=None)
    try:
        _check_integer_datetimes(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_integer_datetimes(conn: psycopg.Connection[Any]) -> None:
    # Timestamps in the stream are int64 microseconds; a (pre-10) server built
    # with float timestamps would send something else in the same 8 bytes.
    value = conn.info.parameter_status("integer_datetimes")
    if value is None:
        raise ServerMismatchError(
            "could not determine server setting for integer_datetimes")
    if value != "on":
        raise ServerMismatchError(
            f'integer_datetimes compile flag does not match server '
            f'(server reports "{value}", walfast needs "on")')


# --------------------------------------------------------------------------- #
# the libpq the engine calls
# --------------------------------------------------------------------------- #

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


_engine_libpq_loaded = False


def load_engine_libpq() -> None:
    """Point the compiled engine at psycopg's libpq (once per process)."""
    global _engine_libpq_loaded
    if not _engine_libpq_loaded:
        from walfast import _core

        _core.load_libpq(psycopg_libpq_path())
        _engine_libpq_loaded = True

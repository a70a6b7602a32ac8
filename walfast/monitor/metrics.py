"""Prometheus metrics for ``walfast receive --metrics-address [HOST:]PORT``.

Served by the standard client library (prometheus_client) from a custom
collector that reads the shared progress state (:mod:`walfast.monitor.progress`) at
each scrape, exactly as ``walfast status`` does: what HTTP shows is a
consistent snapshot of the state, and the receive loop does no extra work
for metrics.  Names follow ``pg_stat_wal_receiver``'s columns, prefixed
``walfast_wal_receiver_``.

Off by default; a bare PORT listens on 127.0.0.1 only (metrics may reveal
host names and slot names; expose them wider on purpose, with HOST:PORT).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from walfast.archive.status import read_archive_status
from walfast.errors import WalfastError
from walfast.log import get_logger
from walfast.lsn import parse_lsn
from walfast.monitor.progress import FLUSH_BUCKETS_US, STATES, ProgressStateError, read_progress

__all__ = ["PREFIX", "MetricsServer", "ProgressCollector", "parse_address"]

PREFIX = "walfast_wal_receiver"
log = get_logger(__name__)


class ProgressCollector(Collector):
    """Metrics from the progress state of the receiver writing into *directory*."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def collect(self) -> Iterator[Metric]:
        try:
            s = read_progress(self.directory)
        except (ProgressStateError, OSError):
            # No receiver has published yet (still connecting) or the file
            # is unreadable: say so, and nothing else.
            yield GaugeMetricFamily(f"{PREFIX}_up", "1 while a walfast receiver runs and "
                                    "publishes its progress state", value=0)
            return

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        def seconds(t: float | None) -> float:
            return 0.0 if t is None else t

        yield gauge("up", "1 while a walfast receiver runs and publishes its progress state",
                    1 if s.running else 0)
        yield StateSetMetricFamily(f"{PREFIX}_status", "Receiver state (pg_stat_wal_receiver.status)",
                                   {name: name == s.state and s.running for name in STATES})
        yield InfoMetricFamily(PREFIX, "Receiver identity (never a password or conninfo)", value={
            "slot_name": s.slot_name, "sender_host": s.sender_host,
            "sender_port": str(s.sender_port), "system_identifier": str(s.system_identifier),
            "sync": "true" if s.sync else "false"})
        yield gauge("pid", "Process id of the receiver", s.pid)
        yield gauge("receive_start_lsn", "First WAL position of the current session", s.receive_start_lsn)
        yield gauge("receive_start_tli", "Timeline of receive_start_lsn", s.receive_start_tli)
        yield gauge("written_lsn", "End of the WAL written into segment files", s.written_lsn)
        yield gauge("flushed_lsn", "End of the WAL durably flushed (fdatasync'ed); 0 with "
                    "--no-sync", s.flushed_lsn)
        yield gauge("received_tli", "Timeline being received", s.received_tli)
        yield gauge("latest_end_lsn", "walEnd of the latest message from the server",
                    s.latest_end_lsn)
        yield gauge("latest_end_time_seconds", "Server send time when walEnd last advanced "
                    "(Unix time)", seconds(s.latest_end_time))
        yield gauge("last_msg_send_time_seconds", "Send time of the latest message (Unix time)",
                    seconds(s.last_msg_send_time))
        yield gauge("last_msg_receipt_time_seconds", "Receipt time of the latest message "
                    "(Unix time)", seconds(s.last_msg_receipt_time))
        # Not known while the server is silent or receiving is paused: NaN,
        # never a reassuring 0.
        nan = float("nan")
        yield gauge("lag_bytes", "Bytes between the written WAL and the server's latest walEnd "
                    "(NaN while the server is silent or receiving is paused)",
                    s.lag_bytes if s.lag_known else nan)
        yield gauge("lag_seconds", "Seconds behind the server (see walfast.monitor.progress; "
                    "NaN while the server is silent or receiving is paused)",
                    s.lag_seconds() if s.lag_known else nan)
        silence = s.silence_seconds()
        yield gauge("silence_seconds", "Seconds since the last message from the server",
                    nan if silence is None else silence)
        yield gauge("segment_size_bytes", "WAL segment size of the server", s.segment_size)
        yield counter("messages", "CopyData messages received", s.messages)
        yield counter("received_bytes", "WAL bytes received", s.wal_bytes)
        yield counter("flushes", "fdatasync calls made by the receive loop's flush policy "
                      "(segment completions, also synced, count in segments_completed)",
                      s.flushes)
        yield counter("segments_completed", "WAL segments completed (synced and renamed)",
                      s.segments_completed)
        yield counter("reconnects", "Connections made after the first", s.reconnects)
        yield counter("status_updates", "Standby status updates sent", s.status_updates)
        cumulative, buckets = 0, []
        for bound, count in zip(FLUSH_BUCKETS_US, s.flush_buckets):
            cumulative += count
            buckets.append((repr(bound / 1e6), float(cumulative)))
        buckets.append(("+Inf", float(cumulative + s.flush_buckets[-1])))
        yield HistogramMetricFamily(f"{PREFIX}_flush_duration_seconds",
                                    "Duration of the receive loop's fdatasync calls",
                                    buckets=buckets, sum_value=s.flush_time)
        archive = read_archive_status(self.directory)
        if archive is not None:
            yield from _archive_metrics(archive, gauge, counter)


def _archive_metrics(a: dict[str, Any], gauge: Callable[[str, str, float], Metric],
                     counter: Callable[[str, str, float], Metric]) -> Iterator[Metric]:
    """With --archive: the uploads' lag and failures (walfast.archive.status)."""
    oldest = float(a.get("oldest_pending_since") or 0)
    yield gauge("archive_archived_lsn", "Position up to which the archive holds all WAL",
                float(parse_lsn(str(a.get("archived_lsn", "0/0")))))
    yield gauge("archive_pending_files", "Completed files waiting to be uploaded",
                float(a.get("pending_files", 0)))
    yield gauge("archive_pending_segments", "Completed segments waiting to be uploaded",
                float(a.get("pending_segments", 0)))
    yield gauge("archive_pending_bytes", "Bytes waiting to be uploaded",
                float(a.get("pending_bytes", 0)))
    yield gauge("archive_oldest_pending_seconds", "Age of the oldest file waiting to be "
                "uploaded (0: none)", max(0.0, time.time() - oldest) if oldest else 0.0)
    yield gauge("archive_failing", "1 while uploads fail (retried with backoff)",
                1.0 if a.get("failing_since") else 0.0)
    yield counter("archive_uploaded_files", "Files uploaded by this receiver",
                  float(a.get("uploaded_files", 0)))
    yield counter("archive_uploaded_bytes", "Bytes uploaded by this receiver",
                  float(a.get("uploaded_bytes", 0)))
    yield counter("archive_upload_failures", "Failed upload attempts", float(a.get("failures", 0)))


_ADDRESS_RE = re.compile(r"^(?:(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):)?(?P<port>\d+)$")


def parse_address(text: str) -> tuple[str, int]:
    """``PORT`` (127.0.0.1), ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port).
    Raises :class:`WalfastError` with what is wrong."""
    m = _ADDRESS_RE.match(text.strip())
    if m is None:
        raise WalfastError(f'invalid metrics address "{text}": expected PORT, HOST:PORT '
                           "or [IPv6]:PORT")
    port = int(m["port"])
    if not 0 <= port <= 65535:
        raise WalfastError(f'invalid metrics address "{text}": port must be in range 0..65535')
    return m["v6"] or m["host"] or "127.0.0.1", port


class MetricsServer:
    """The HTTP endpoint (a daemon thread); :meth:`close` stops it."""

    def __init__(self, address: str, directory: str | os.PathLike[str]) -> None:
        host, port = parse_address(address)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ProgressCollector(directory))
        try:
            self._server: WSGIServer | None
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as e:
            raise WalfastError(f'could not serve metrics on "{address}": '
                               f"{e.strerror or e}") from None
        bound = self._server.server_address
        self.host, self.port = str(bound[0]), int(bound[1])
        log.info("serving metrics at http://%s/metrics",
                 f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}")

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

"""Prometheus metrics (walfast/metrics.py): the address option, and a real
receiver's metrics scraped over HTTP, compared with its progress state."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.receivers import wait_streaming, wait_until
from walfast.monitor import progress as P
from walfast.errors import WalfastError
from walfast.monitor.metrics import PREFIX, MetricsServer, parse_address

SECRET = "Sekr1tPassw0rd"


def test_parse_address():
    assert parse_address("9187") == ("127.0.0.1", 9187)
    assert parse_address("0.0.0.0:9187") == ("0.0.0.0", 9187)
    assert parse_address("metrics.local:80") == ("metrics.local", 80)
    assert parse_address("[::1]:9187") == ("::1", 9187)
    for bad in ("", "host:", ":x", "99999", "a:b:c", "[::1]"):
        with pytest.raises(WalfastError, match="invalid metrics address"):
            parse_address(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """name{labels} -> value for every walfast sample."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(PREFIX):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_bare_port_listens_on_loopback_only(tmp_path):
    server = MetricsServer("0", tmp_path)
    try:
        assert server.host == "127.0.0.1"
        # No receiver yet: only "up 0".
        assert scrape(server.port) == {f"{PREFIX}_up": 0.0}
    finally:
        server.close()


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(WalfastError, match=f'could not serve metrics on "{port}"'):
            MetricsServer(str(port), tmp_path)


def test_metrics_agree_with_the_state(pg_cluster, tmp_path, procs):
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    cluster.execute("SELECT pg_create_physical_replication_slot('scraped', true)")
    out = tmp_path / "wal"
    out.mkdir()
    port = _free_port()
    r = procs.walfast("-D", str(out), "-d", cluster.conninfo(password=SECRET), "-S", "scraped",
                      "--synchronous", "-n", "-v", "--metrics-address", str(port))
    wait_streaming(cluster, ["walfast"], [r])
    assert f"serving metrics at http://127.0.0.1:{port}/metrics" in r.stderr()
    cluster.generate_wal(3 * seg)
    end = cluster.current_wal_lsn()
    wait_until(lambda: P.read_progress(out).flushed_lsn >= end, "WAL flushed", procs=[r])

    before = P.read_progress(out)
    m = scrape(port)
    after = P.read_progress(out)

    def between(name: str, lo: float, hi: float) -> None:
        assert lo <= m[f"{PREFIX}_{name}"] <= hi, (name, lo, m[f"{PREFIX}_{name}"], hi)

    # Each metric lies between the two snapshots taken around the scrape
    # (equal to both when nothing moved in between).
    for name, attr in [("written_lsn", "written_lsn"), ("flushed_lsn", "flushed_lsn"),
                       ("latest_end_lsn", "latest_end_lsn"), ("messages_total", "messages"),
                       ("received_bytes_total", "wal_bytes"), ("flushes_total", "flushes"),
                       ("segments_completed_total", "segments_completed"),
                       ("status_updates_total", "status_updates")]:
        between(name, getattr(before, attr), getattr(after, attr))
    assert m[f"{PREFIX}_up"] == 1 and m[f"{PREFIX}_pid"] == r.pid
    assert m[f"{PREFIX}_flushed_lsn"] >= end
    assert m[f"{PREFIX}_segment_size_bytes"] == seg
    assert m[f"{PREFIX}_reconnects_total"] == 0
    assert m[f"{PREFIX}_received_tli"] == before.received_tli == 1
    assert m[f"{PREFIX}_status{{{PREFIX}_status=streaming}}"] == 1
    assert m[f"{PREFIX}_status{{{PREFIX}_status=waiting}}"] == 0
    info = [k for k in m if k.startswith(f"{PREFIX}_info{{")]
    assert info == [f"{PREFIX}_info{{sender_host=127.0.0.1,sender_port={cluster.port},"
                    f"slot_name=scraped,sync=true,"
                    f"system_identifier={cluster.system_identifier()}}}"]
    assert m[f"{PREFIX}_lag_bytes"] == max(0, m[f"{PREFIX}_latest_end_lsn"]
                                           - m[f"{PREFIX}_written_lsn"])
    assert 0 <= m[f"{PREFIX}_lag_seconds"] < 30
    # The flush-latency histogram counts exactly the flushes.
    count = m[f"{PREFIX}_flush_duration_seconds_count"]
    between("flush_duration_seconds_count", before.flushes, after.flushes)
    assert count > 0
    assert m[f"{PREFIX}_flush_duration_seconds_bucket{{le=+Inf}}"] == count
    assert 0 < m[f"{PREFIX}_flush_duration_seconds_sum"] <= after.flush_time
    buckets = sorted((float(k.split("le=")[1].rstrip("}")), v) for k, v in m.items()
                     if k.startswith(f"{PREFIX}_flush_duration_seconds_bucket"))
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)   # cumulative

    # No secret in what the endpoint serves, nor in the logs.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert SECRET not in resp.read().decode()
    assert r.interrupt() == 0
    assert SECRET not in r.stderr()
    with pytest.raises(OSError):
        scrape(port)                      # the endpoint stopped with the receiver


def test_silent_or_paused_lag_is_nan_never_zero(tmp_path):
    """While the server is silent (or receiving is paused) the lag cannot be
    told: the metrics say NaN, and how long since the last message."""
    import math

    from walfast import pg_time_now

    state = P.create_state(tmp_path)
    server = MetricsServer("0", tmp_path)
    try:
        state.publish(written_lsn=100, latest_end_lsn=100, last_msg_receipt_time=pg_time_now())
        state.update(state=P.STREAMING)
        m = scrape(server.port)
        assert m[f"{PREFIX}_lag_bytes"] == 0 and 0 <= m[f"{PREFIX}_silence_seconds"] < 5
        for value in (P.SILENT, P.PAUSED):
            state.update(state=value)
            m = scrape(server.port)
            assert math.isnan(m[f"{PREFIX}_lag_bytes"]) and math.isnan(m[f"{PREFIX}_lag_seconds"])
            assert m[f"{PREFIX}_status{{{PREFIX}_status={P.STATES[value]}}}"] == 1
    finally:
        server.close()
        state.close()

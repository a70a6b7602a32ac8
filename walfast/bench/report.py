"""Summaries of the runs: the tables (text and markdown) and the chart.

Everything here works on the results document :mod:`walfast.bench.run`
writes (the JSON of ``walfast bench --json`` and of ``benchmarks/e2e``),
so ``python -m walfast.bench.report RESULTS.json`` (or ``python -m
benchmarks.e2e.report``) redraws the tables and chart of an earlier run,
older results files included.

Two tables of the runs: the full one (:func:`table_rows`, every figure;
``benchmarks/e2e`` prints it and writes it as markdown) and the compact one
(:func:`compact_rows`, what ``walfast bench`` prints on a terminal).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from walfast.bench.receivers import DISCARD, MODES

__all__ = [
    "archive_summary", "chart", "compact_rows", "limit_medians", "main", "matplotlib_missing",
    "render", "smoke_note", "summarize", "sync_summary", "sync_table_rows", "table_rows",
]

Doc = dict[str, Any]


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def smoke_note(doc: Doc) -> str:
    """Non-empty for a run too small to be quoted as a result."""
    if doc["meta"]["range"]["bytes"] < 10**9 or doc["meta"]["rounds"] < 3:
        return "SMOKE RUN (under 1 GB or under 3 rounds): a harness check, not results"
    return ""


def limit_medians(doc: Doc) -> dict[str, float]:
    out = {}
    for name in ("disk", "memcpy"):
        xs = [x["mb_s"] for x in doc["limits"] if x["limit"] == name]
        if xs:
            out[name] = statistics.median(xs)
    return out


def summarize(doc: Doc) -> list[dict[str, Any]]:
    """One row per (transport, mode, receiver), in run order."""
    limits = limit_medians(doc)
    keys: list[tuple[str, str, str]] = []
    for r in doc["runs"]:
        k = (r["transport"], r["mode"], r["receiver"])
        if k not in keys:
            keys.append(k)
    ceiling = {}
    for t, m, rc in keys:
        if rc == DISCARD:
            ok = [r["stream_mb_s"] for r in doc["runs"] if r["transport"] == t
                  and r["receiver"] == rc and r["status"] == "ok"
                  and r.get("stream_mb_s") is not None]
            if ok:
                ceiling[t] = statistics.median(ok)
    rows = []
    for t, m, rc in keys:
        runs = [r for r in doc["runs"] if (r["transport"], r["mode"], r["receiver"]) == (t, m, rc)]
        ok = [r for r in runs if r["status"] == "ok"]
        row: dict[str, Any] = dict(transport=t, mode=m, receiver=rc, runs=len(runs), ok=len(ok))
        if ok:
            mbs = [r["mb_s"] for r in ok]
            ws = [r["walsender_cpu_s_per_gb"] for r in ok if r["walsender_cpu_s_per_gb"] is not None]
            wb = [r["write_bytes"] for r in ok if r["write_bytes"] is not None]
            med = statistics.median(mbs)
            stream = _median([r["stream_mb_s"] for r in ok if r.get("stream_mb_s") is not None])
            row.update(
                mb_s_min=min(mbs), mb_s_median=med,
                stream_mb_s_median=stream,
                start_line_s_median=_median([r["start_line_s"] for r in ok
                                             if r.get("start_line_s") is not None]),
                recv_cpu_s_per_gb=_median([r["recv_cpu_s_per_gb"] for r in ok]),
                walsender_cpu_s_per_gb=_median(ws),
                write_gb=None if not wb else statistics.median(wb) / 1e9,
                output_gb=statistics.median([r["output_bytes"] for r in ok]) / 1e9,
                of_disk=med / limits["disk"] if "disk" in limits else None,
                # streaming figures on both sides: start-up is no part of the sender
                of_ceiling=None if t not in ceiling or stream is None else stream / ceiling[t])
        not_ok = [r for r in runs if r["status"] != "ok"]
        if not_ok:
            row["status"] = not_ok[0]["status"]
            row["error"] = not_ok[0].get("error")
        if rc == "walfast":
            row.update(_ratios(doc, t, m))
        rows.append(row)
    return rows


def _ratios(doc: Doc, transport: str, mode: str) -> dict[str, Any]:
    """walfast/pg_receivewal MB/s per round (both ok), and of the medians."""
    by: dict[str, dict[int, float]] = {"walfast": {}, "pg_receivewal": {}}
    for r in doc["runs"]:
        if r["transport"] == transport and r["mode"] == mode and r["status"] == "ok" \
                and r["receiver"] in by:
            by[r["receiver"]][r["round"]] = r["mb_s"]
    rounds = sorted(set(by["walfast"]) & set(by["pg_receivewal"]))
    per_round = [round(by["walfast"][n] / by["pg_receivewal"][n], 2) for n in rounds]
    out: dict[str, Any] = dict(ratio_per_round=per_round)
    if by["walfast"] and by["pg_receivewal"]:
        out["ratio_median"] = round(statistics.median(by["walfast"].values())
                                    / statistics.median(by["pg_receivewal"].values()), 2)
    return out


def _level(doc: Doc, r: Doc) -> str:
    """A pgbench run's ``synchronous_commit`` (results files from before
    the levels ran every run under the one of their settings: on)."""
    level = r.get("synchronous_commit")
    if level is None:
        level = doc.get("syncbench", {}).get("settings", {}).get("synchronous_commit", "on")
    return str(level) if isinstance(level, str) else "on"


def sync_summary(doc: Doc) -> list[dict[str, Any]]:
    """One row per (synchronous_commit level, standby), levels in the order
    they ran first: TPS, latency, CPU per transaction of the receiver and
    its walsender (medians over rounds), and TPS against pg_receivewal's
    (ratio of the medians, and per round) and against no standby."""
    runs = doc.get("syncbench", {}).get("runs", [])
    rows = []
    keys = list(dict.fromkeys((_level(doc, r), r["standby"]) for r in runs))
    levels = list(dict.fromkeys(k[0] for k in keys))
    keys.sort(key=lambda k: levels.index(k[0]))
    for level, standby in keys:
        rs = [r for r in runs if r["standby"] == standby and _level(doc, r) == level]
        ok = [r for r in rs if r["status"] == "ok"]
        row: dict[str, Any] = dict(standby=standby, synchronous_commit=level, runs=len(rs),
                                   ok=len(ok))
        if ok:
            row.update(tps_median=statistics.median(r["tps"] for r in ok),
                       tps_min=min(r["tps"] for r in ok),
                       latency_ms_median=statistics.median(r["latency_ms"] for r in ok),
                       recv_cpu_us_per_tx=_median([r["recv_cpu_us_per_tx"] for r in ok
                                                   if r.get("recv_cpu_us_per_tx") is not None]),
                       walsender_cpu_us_per_tx=_median(
                           [r["walsender_cpu_us_per_tx"] for r in ok
                            if r.get("walsender_cpu_us_per_tx") is not None]))
        if len(ok) < len(rs):
            bad = next(r for r in rs if r["status"] != "ok")
            row["status"] = bad["status"]
            row["error"] = bad.get("error")
        rows.append(row)
    for level in levels:
        mine = [r for r in rows if r["synchronous_commit"] == level]
        tps = {(r["standby"], r["round"]): r["tps"] for r in runs
               if _level(doc, r) == level and r["status"] == "ok"}
        pg = next((r for r in mine if r["standby"] == "pg_receivewal" and "tps_median" in r), None)
        none = next((r for r in mine if r["standby"] == "none" and "tps_median" in r), None)
        for r in mine:
            if "tps_median" not in r:
                continue
            if pg is not None:
                r["tps_vs_pg_receivewal"] = round(r["tps_median"] / pg["tps_median"], 3)
                r["tps_vs_pg_receivewal_per_round"] = [
                    round(tps[(r["standby"], n)] / tps[("pg_receivewal", n)], 3)
                    for n in sorted({n for (_, n) in tps})
                    if (r["standby"], n) in tps and ("pg_receivewal", n) in tps]
            if none is not None:
                r["tps_vs_none"] = round(r["tps_median"] / none["tps_median"], 3)
    return rows


# --------------------------------------------------------------------------- #
# tables
# --------------------------------------------------------------------------- #

def _f(x: Any, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def table_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    head = ["transport", "mode", "receiver", "ok/runs", "MB/s min", "MB/s median",
            "streaming MB/s median", "start-up s",
            "recv CPU s/GB", "walsender CPU s/GB", "written GB", "files GB", "of disk limit",
            "streaming, of sender ceiling", "walfast/pg per round", "walfast/pg medians", "note"]
    body = []
    for r in summarize(doc):
        note = f"{r['status']}: {r.get('error', '')}"[:100] if "status" in r else ""
        if "mb_s_median" not in r:
            body.append([r["transport"], r["mode"], r["receiver"], f"{r['ok']}/{r['runs']}"]
                        + [""] * 12 + [note])
            continue
        ratio = " ".join(f"{x:.2f}" for x in r.get("ratio_per_round", []))
        body.append([
            r["transport"], r["mode"], r["receiver"], f"{r['ok']}/{r['runs']}",
            _f(r["mb_s_min"], ",.0f"), _f(r["mb_s_median"], ",.0f"),
            _f(r["stream_mb_s_median"], ",.0f"), _f(r["start_line_s_median"], ".2f"),
            _f(r["recv_cpu_s_per_gb"], ".2f"), _f(r["walsender_cpu_s_per_gb"], ".2f"),
            _f(r["write_gb"], ".2f"), _f(r["output_gb"], ".2f"),
            _pct(r["of_disk"]) if MODES.get(r["mode"], ([], "x"))[1] == "" and r["receiver"] != DISCARD else "–",
            _pct(r["of_ceiling"]) if r["receiver"] != DISCARD else "–",
            ratio or ("–" if r["receiver"] == "walfast" else ""),
            _f(r.get("ratio_median"), ".2f") if r["receiver"] == "walfast" else "", note])
    return head, body


def sync_table_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    head = ["synchronous_commit", "synchronous standby", "ok/runs", "TPS median", "TPS min",
            "latency avg ms (median)", "receiver CPU µs/tx", "walsender CPU µs/tx",
            "TPS / pg_receivewal's", "per round", "TPS / none's", "note"]
    body = []
    for r in sync_summary(doc):
        note = f"{r['status']}: {r['error']}"[:100] if "error" in r else ""
        if "tps_median" not in r:
            body.append([r["synchronous_commit"], r["standby"], f"{r['ok']}/{r['runs']}"]
                        + [""] * 8 + [note])
            continue
        per_round = " ".join(f"{x:.2f}" for x in r.get("tps_vs_pg_receivewal_per_round", []))
        body.append([r["synchronous_commit"], r["standby"], f"{r['ok']}/{r['runs']}",
                     f"{r['tps_median']:,.0f}", f"{r['tps_min']:,.0f}",
                     f"{r['latency_ms_median']:.2f}",
                     _f(r.get("recv_cpu_us_per_tx"), ".1f") if r["standby"] != "none" else "",
                     _f(r.get("walsender_cpu_us_per_tx"), ".1f") if r["standby"] != "none"
                     else "",
                     _f(r.get("tps_vs_pg_receivewal"), ".3f"),
                     per_round if r["standby"] not in ("pg_receivewal",) else "",
                     _f(r.get("tps_vs_none"), ".3f"), note])
    return head, body


def compact_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    """The runs in a terminal's width (what ``walfast bench`` prints):
    medians over rounds; walsender CPU ``n/a`` where it could not be read
    (a server whose processes this machine's /proc does not show)."""
    head = ["transport", "mode", "receiver", "ok/runs", "MB/s", "min", "streaming MB/s",
            "recv CPU s/GB", "walsender CPU s/GB", "written GB", "× pg_receivewal (per round)",
            "of discard", "note"]
    body = []
    for r in summarize(doc):
        note = f"{r['status']}: {r.get('error', '')}"[:80] if "status" in r else ""
        if "mb_s_median" not in r:
            body.append([r["transport"], r["mode"], r["receiver"], f"{r['ok']}/{r['runs']}"]
                        + [""] * 8 + [note])
            continue
        ratio = ""
        if r["receiver"] == "walfast" and r.get("ratio_median") is not None:
            ratio = f"{r['ratio_median']:.2f}×"
            if len(r.get("ratio_per_round", [])) > 1:
                ratio += " (" + " ".join(f"{x:.2f}" for x in r["ratio_per_round"]) + ")"
        ws = r["walsender_cpu_s_per_gb"]
        body.append([
            r["transport"], r["mode"], r["receiver"], f"{r['ok']}/{r['runs']}",
            _f(r["mb_s_median"], ",.0f"), _f(r["mb_s_min"], ",.0f"),
            _f(r["stream_mb_s_median"], ",.0f"), _f(r["recv_cpu_s_per_gb"], ".2f"),
            "n/a" if ws is None else f"{ws:.2f}", _f(r["write_gb"], ".2f"), ratio,
            _pct(r["of_ceiling"]) if r["receiver"] != DISCARD else "", note])
    return head, body


#: What the compact table's columns mean (printed under it).
COMPACT_NOTES = (
    "MB/s: the range's bytes / the time from spawning the receiver to its exit (start-up "
    "included), median and min over rounds; streaming MB/s: from its 'starting log "
    "streaming' line to its exit",
    "recv CPU: user + sys of the receiver process; walsender CPU: of the server process "
    "serving it (n/a: not in this machine's /proc); per 10^9 bytes of WAL",
    "written GB: bytes the receiver sent towards the disk (/proc/PID/io write_bytes)",
    "× pg_receivewal: walfast's median MB/s / pg_receivewal's, same mode (per round in "
    "brackets); of discard: streaming MB/s / the discard receiver's (the sender's ceiling)",
)


def limits_lines(doc: Doc) -> list[str]:
    out = []
    methods = {x.get("method", "numpy copyto") for x in doc["limits"] if x["limit"] == "memcpy"}
    for name, what in (("disk", "disk (segment files, one fsync each)"),
                       ("memcpy", f"memcpy ({', '.join(sorted(methods))})"),
                       ("upload", "upload (walfast's uploader alone, to the S3 server)")):
        lims = [x for x in doc["limits"] if x["limit"] == name and "mb_s" in x]
        xs = [x["mb_s"] for x in lims]
        if xs:
            line = (f"{what}: median {statistics.median(xs):,.0f} MB/s, min {min(xs):,.0f} "
                    f"(rounds: {', '.join(f'{x:,.0f}' for x in xs)})")
            if name == "upload":
                up = _median([x["uploader_cpu_s_per_gb"] for x in lims])
                st = _median([x["store_cpu_s_per_gb"] for x in lims
                              if x.get("store_cpu_s_per_gb") is not None])
                line += (f"; CPU s/GB: uploader {_f(up, '.2f')}, S3 server {_f(st, '.2f')}")
            out.append(line)
        failed = [x for x in doc["limits"] if x["limit"] == name and "mb_s" not in x]
        if failed:
            out.append(f"{what}: {len(failed)} round(s) failed: {failed[0].get('error')}")
    return out


# --------------------------------------------------------------------------- #
# the archive mode against durable
# --------------------------------------------------------------------------- #

def _pairs(doc: Doc, transport: str) -> list[tuple[int, Doc | None, Doc | None]]:
    """(round, walfast durable run, walfast archive run) of each round."""
    runs = [r for r in doc["runs"] if r["transport"] == transport and r["receiver"] == "walfast"
            and r["status"] == "ok"]
    rounds = sorted({r["round"] for r in doc["runs"] if r["transport"] == transport})
    out = []
    for n in rounds:
        d = next((r for r in runs if r["round"] == n and r["mode"] == "durable"), None)
        a = next((r for r in runs if r["round"] == n and r["mode"] == "archive"), None)
        out.append((n, d, a))
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _per_gb(r: Doc | None, key: str, doc: Doc) -> float | None:
    if r is None or r.get(key) is None:
        return None
    return float(r[key]) / (float(doc["meta"]["range"]["bytes"]) / 1e9)


def archive_summary(doc: Doc) -> list[dict[str, Any]]:
    """Per transport that ran the archive mode: a row per round pairing
    walfast durable with walfast durable + ``--archive`` (both from that
    round), then a ``median`` row (medians over rounds; its ratios are of
    the medians)."""
    transports = list(dict.fromkeys(r["transport"] for r in doc["runs"]
                                    if r["mode"] == "archive" and r["receiver"] == "walfast"))
    rows: list[dict[str, Any]] = []
    for t in transports:
        per: list[dict[str, Any]] = []
        for n, d, a in _pairs(doc, t):
            row: dict[str, Any] = dict(transport=t, round=n, durable_ok=d is not None,
                                       archive_ok=a is not None)
            for tag, r in (("durable", d), ("archive", a)):
                if r is None:
                    continue
                row[f"{tag}_recv_mb_s"] = r.get("recv_mb_s")
                row[f"{tag}_stream_recv_mb_s"] = r.get("stream_recv_mb_s")
                row[f"{tag}_start_line_s"] = r.get("start_line_s")
                row[f"{tag}_mb_s"] = r["mb_s"]
                row[f"{tag}_recv_s"] = r.get("recv_s")
                row[f"{tag}_recv_cpu_s_per_gb"] = _per_gb(r, "recv_cpu_recv_s", doc)
                row[f"{tag}_main_cpu_s_per_gb"] = _per_gb(r, "recv_main_cpu_recv_s", doc)
                if r.get("recv_main_cpu_recv_s") is not None and r.get("recv_s"):
                    row[f"{tag}_main_on_cpu"] = r["recv_main_cpu_recv_s"] / r["recv_s"]
                if r.get("recv_main_cpu_recv_s") is not None and \
                        r.get("recv_cpu_recv_s") is not None:
                    row[f"{tag}_other_cpu_s_per_gb"] = _per_gb(
                        dict(x=r["recv_cpu_recv_s"] - r["recv_main_cpu_recv_s"]), "x", doc)
                row[f"{tag}_main_preempted"] = r.get("receiver_preempted_recv")
                row[f"{tag}_walsender_preempted"] = r.get("walsender_preempted_recv")
                row[f"{tag}_walsender_cpu_s_per_gb"] = _per_gb(r, "walsender_cpu_recv_s", doc)
                row[f"{tag}_machine_busy"] = r.get("machine_busy_recv")
                row[f"{tag}_steal"] = r.get("machine_steal_recv")
                row[f"{tag}_disk_busy"] = r.get("disk_busy_recv")
            if a is not None:
                for key in ("upload_mb_s", "upload_lag_end_s", "backlog_max_segments",
                            "backlog_at_end_segments", "store_cpu_s_per_gb", "drain_s"):
                    row[key] = a.get(key)
                row["store_cpu_recv_s_per_gb"] = _per_gb(a, "store_cpu_recv_s", doc)
                row["archive_cpu_after_s_per_gb"] = _per_gb(a, "recv_cpu_after_s", doc)
                row["read_back_mb"] = None if a.get("read_bytes") is None else a["read_bytes"] / 1e6
                row["failures"] = a.get("status_failures")
            if d is not None and a is not None:
                cpu_d = [d.get("recv_cpu_recv_s"), d.get("walsender_cpu_recv_s")]
                cpu_a = [a.get("recv_cpu_recv_s"), a.get("walsender_cpu_recv_s"),
                         a.get("store_cpu_recv_s")]
                if None not in cpu_d and None not in cpu_a:
                    # CPU seconds the archive run's receive used beyond the
                    # durable run's, and how much of that the S3 server's
                    extra = sum(cpu_a) - sum(cpu_d)   # type: ignore[arg-type]
                    row["extra_cpu_s"] = extra
                    row["store_share_of_extra"] = _div(a["store_cpu_recv_s"], extra)
                    row["walfast_share_of_extra"] = _div(
                        a["recv_cpu_recv_s"] - d["recv_cpu_recv_s"], extra)
                    if d.get("recv_s") and a.get("recv_s"):
                        row["extra_recv_s"] = a["recv_s"] - d["recv_s"]
            row["ratio_recv"] = _div(row.get("archive_recv_mb_s"), row.get("durable_recv_mb_s"))
            row["ratio_stream"] = _div(row.get("archive_stream_recv_mb_s"),
                                       row.get("durable_stream_recv_mb_s"))
            row["ratio_exit"] = _div(row.get("archive_mb_s"), row.get("durable_mb_s"))
            per.append(row)
        rows += per
        med: dict[str, Any] = dict(transport=t, round="median")
        keys = {k for row in per for k in row} - {"transport", "round", "durable_ok", "archive_ok",
                                                  "ratio_recv", "ratio_exit", "ratio_stream"}
        for k in sorted(keys):
            xs = [row[k] for row in per if row.get(k) is not None]
            med[k] = _median(xs)
        med["ratio_recv"] = _div(med.get("archive_recv_mb_s"), med.get("durable_recv_mb_s"))
        med["ratio_exit"] = _div(med.get("archive_mb_s"), med.get("durable_mb_s"))
        med["ratio_stream"] = _div(med.get("archive_stream_recv_mb_s"),
                                   med.get("durable_stream_recv_mb_s"))
        for key in ("ratio_recv", "ratio_stream"):
            ratios = [row[key] for row in per if row.get(key) is not None]
            med[f"{key}_per_round_median"] = _median(ratios)
        rows.append(med)
    return rows


def archive_table_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    head = ["transport", "round", "durable receive MB/s", "archive receive MB/s",
            "archive/durable receive", "durable streaming receive MB/s",
            "archive streaming receive MB/s", "archive/durable streaming", "start-up s durable",
            "start-up s archive", "durable MB/s to exit", "archive MB/s to exit",
            "archive/durable to exit", "upload MB/s", "upload lag at end s",
            "backlog max segs", "backlog at receive end segs"]
    body = []
    for r in archive_summary(doc):
        body.append([r["transport"], str(r["round"]),
                     _f(r.get("durable_recv_mb_s"), ",.0f"), _f(r.get("archive_recv_mb_s"), ",.0f"),
                     _pct(r.get("ratio_recv")),
                     _f(r.get("durable_stream_recv_mb_s"), ",.0f"),
                     _f(r.get("archive_stream_recv_mb_s"), ",.0f"),
                     _pct(r.get("ratio_stream")),
                     _f(r.get("durable_start_line_s"), ".2f"),
                     _f(r.get("archive_start_line_s"), ".2f"),
                     _f(r.get("durable_mb_s"), ",.0f"), _f(r.get("archive_mb_s"), ",.0f"),
                     _pct(r.get("ratio_exit")),
                     _f(r.get("upload_mb_s"), ",.0f"), _f(r.get("upload_lag_end_s"), ".2f"),
                     _f(r.get("backlog_max_segments"), ".0f"),
                     _f(r.get("backlog_at_end_segments"), ".0f")])
    return head, body


def archive_cpu_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    head = ["transport", "round", "receive s durable", "receive s archive",
            "walfast receive thread CPU s/GB durable", "walfast receive thread CPU s/GB archive",
            "walfast upload threads CPU s/GB", "walsender CPU s/GB durable",
            "walsender CPU s/GB archive", "S3 server CPU s/GB",
            "extra CPU s (archive - durable)", "of which S3 server", "of which walfast",
            "receive thread on a CPU durable", "receive thread on a CPU archive",
            "receive thread preempted durable", "receive thread preempted archive",
            "machine busy durable", "machine busy archive", "steal durable", "steal archive",
            "disk busy durable", "disk busy archive"]
    body = []
    for r in archive_summary(doc):
        body.append([r["transport"], str(r["round"]),
                     _f(r.get("durable_recv_s"), ".2f"), _f(r.get("archive_recv_s"), ".2f"),
                     _f(r.get("durable_main_cpu_s_per_gb"), ".2f"),
                     _f(r.get("archive_main_cpu_s_per_gb"), ".2f"),
                     _f(r.get("archive_other_cpu_s_per_gb"), ".2f"),
                     _f(r.get("durable_walsender_cpu_s_per_gb"), ".2f"),
                     _f(r.get("archive_walsender_cpu_s_per_gb"), ".2f"),
                     _f(r.get("store_cpu_recv_s_per_gb"), ".2f"),
                     _f(r.get("extra_cpu_s"), ".2f"),
                     _pct(r.get("store_share_of_extra")), _pct(r.get("walfast_share_of_extra")),
                     _pct(r.get("durable_main_on_cpu")), _pct(r.get("archive_main_on_cpu")),
                     _f(r.get("durable_main_preempted"), ",.0f"),
                     _f(r.get("archive_main_preempted"), ",.0f"),
                     _pct(r.get("durable_machine_busy")), _pct(r.get("archive_machine_busy")),
                     _pct(r.get("durable_steal")), _pct(r.get("archive_steal")),
                     _pct(r.get("durable_disk_busy")), _pct(r.get("archive_disk_busy"))])
    return head, body


def archive_drain_rows(doc: Doc) -> tuple[list[str], list[list[str]]]:
    head = ["transport", "round", "drain s (stop line to exit)", "walfast CPU s/GB after receive",
            "S3 server CPU s/GB in all", "read back from disk MB", "upload failures"]
    body = []
    for r in archive_summary(doc):
        body.append([r["transport"], str(r["round"]), _f(r.get("drain_s"), ".2f"),
                     _f(r.get("archive_cpu_after_s_per_gb"), ".2f"),
                     _f(r.get("store_cpu_s_per_gb"), ".2f"), _f(r.get("read_back_mb"), ",.0f"),
                     _f(r.get("failures"), ".0f")])
    return head, body


def archive_lines(doc: Doc) -> list[str]:
    """The verdict against the issue's target, per transport."""
    out = []
    for r in archive_summary(doc):
        if r["round"] != "median" or r.get("ratio_recv") is None:
            continue
        met = "met" if r["ratio_recv"] >= 0.90 else "NOT met"
        out.append(f"{r['transport']}: archive/durable receive MB/s {_pct(r['ratio_recv'])} of the "
                   f"medians ({_pct(r.get('ratio_recv_per_round_median'))} median per round): "
                   f"target >= 90 % {met}; without the start-up (streaming) "
                   f"{_pct(r.get('ratio_stream'))} ({_pct(r.get('ratio_stream_per_round_median'))}"
                   f" per round); to the exit (all in the bucket) {_pct(r.get('ratio_exit'))}")
    return out


def text_table(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])


def md_table(head: list[str], body: list[list[str]]) -> str:
    left = {"transport", "mode", "receiver", "ok/runs", "walfast/pg per round", "note",
            "synchronous standby", "round", "synchronous_commit", "per round",
            "× pg_receivewal (per round)"}
    right = {i for i, h in enumerate(head) if h not in left}
    sep = ["---:" if i in right else "---" for i in range(len(head))]
    return "\n".join("| " + " | ".join(row) + " |" for row in [head, sep, *body])


def render(doc: Doc, markdown: bool = False, compact: bool = False) -> str:
    """The whole report: the range, the server, the limits, the runs' table
    (:func:`compact_rows` with *compact*, else :func:`table_rows`), the
    archive mode's tables and the synchronous-standby table."""
    table = md_table if markdown else text_table
    bullet = "- " if markdown else ""
    rng = doc["meta"]["range"]
    parts = [f"WAL range {rng['start']} .. {rng['end']}: {rng['bytes'] / 1e6:,.0f} MB "
             f"({rng['segments']} segments of {rng['segment_size'] // 2**20} MiB), "
             f"{doc['meta']['rounds']} round(s), {doc['meta']['date']}"]
    if smoke_note(doc):
        parts += ["", ("**" + smoke_note(doc) + "**") if markdown else smoke_note(doc)]
    machine = doc["meta"].get("machine", {})
    source = doc["meta"].get("source") or {}
    if source.get("kind") == "external":
        parts += ["", f"server: PostgreSQL {source.get('server')} at {source.get('conninfo')} "
                      f"({source.get('transport')}; the range pinned by a "
                      + (f"copy of slot \"{source['slot']}\"" if source.get("slot")
                         else "new slot") + "); pg_receivewal: "
                      f"{machine.get('pg_receivewal') or 'not found'}"]
    elif machine.get("postgres"):
        # Which major: pg_receivewal is always the server's own.
        parts += ["", f"server: {machine['postgres']}; pg_receivewal: "
                      f"{machine.get('pg_receivewal') or 'not found'}"]
    lines = limits_lines(doc)
    if lines:
        parts += ["", *[bullet + line for line in lines]]
    if compact:
        parts += ["", table(*compact_rows(doc)), "", *[bullet + n for n in COMPACT_NOTES]]
    else:
        parts += ["", table(*table_rows(doc))]
    if any(r["mode"] == "archive" and r["receiver"] == "walfast" for r in doc["runs"]):
        store = doc["meta"].get("store") or {}
        pinned = doc["meta"].get("pinned")
        parts += ["", f"Archive to S3 ({store.get('url', '?')} on {store.get('server', '?')}"
                      + (f"; S3 server pinned to CPU {pinned['store']}, everything else to "
                         f"{pinned['others']}" if pinned else "") + "): walfast durable against "
                      "walfast durable --archive, same rounds; receive = spawn to the stop line, "
                      "to exit = until walfast exits (it waits for the uploads at --endpos):",
                  "", *[("- " if markdown else "") + x for x in archive_lines(doc)],
                  "", table(*archive_table_rows(doc)),
                  "", "CPU during the receive (spawn to stop line), per GB of WAL; extra CPU: "
                      "walfast + walsender + S3 server in the archive run's receive minus "
                      "walfast + walsender in the durable run's:",
                  "", table(*archive_cpu_rows(doc)),
                  "", "After the receive: walfast uploads what is left, then exits:",
                  "", table(*archive_drain_rows(doc))]
    if doc.get("syncbench", {}).get("runs"):
        sb = doc["syncbench"]["settings"]
        parts += ["", f"Synchronous standby: pgbench tpcb-like (-s {sb['scale']} "
                      f"-c {sb['clients']} -j {sb['threads']}), {sb['seconds']} s per run, the "
                      f"standby over {sb['transport']}; CPU per pgbench transaction:",
                  "", table(*sync_table_rows(doc))]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- #
# chart
# --------------------------------------------------------------------------- #

def matplotlib_missing() -> str | None:
    """None when :func:`chart` can draw, else what to install."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return ("the chart needs matplotlib, which is not installed: "
                "pip install 'walfast[bench]' (or matplotlib)")
    return None


def chart(doc: Doc, path: Path) -> None:
    """Median MB/s per receiver and mode (bars; a tick marks the minimum),
    one panel per transport, with the sender ceiling (discard receiver) and
    the disk limit as horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarize(doc)
    transports = list(dict.fromkeys(r["transport"] for r in rows))
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    limits = limit_medians(doc)
    fig, axes = plt.subplots(1, len(transports), figsize=(max(7.5, 4.2 * len(transports) + 1), 4.6),
                             sharey=True, squeeze=False)
    colors = {"walfast": "#1f77b4", "pg_receivewal": "#ff7f0e"}
    width = 0.38
    for ax, t in zip(axes[0], transports):
        for k, rc in enumerate(("walfast", "pg_receivewal")):
            xs, meds, mins = [], [], []
            for i, m in enumerate(modes):
                r = next((r for r in rows if (r["transport"], r["mode"], r["receiver"]) == (t, m, rc)
                          and "mb_s_median" in r), None)
                x = i + (k - 0.5) * width
                if r is not None:
                    xs.append(x)
                    meds.append(r["mb_s_median"])
                    mins.append(r["mb_s_min"])
                elif any((q["transport"], q["mode"], q["receiver"]) == (t, m, rc) for q in rows):
                    # ran, but unavailable or failed: say so, never a bar
                    ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize="x-small",
                            rotation=90, color=colors[rc])
            ax.bar(xs, meds, width, color=colors[rc], label=f"{rc} (median)")
            ax.scatter(xs, mins, marker="_", color="black", s=120, zorder=3,
                       label="minimum" if k == 0 else None)
        disc = next((r for r in rows if r["transport"] == t and r["receiver"] == DISCARD
                     and "mb_s_median" in r), None)
        if disc is not None:
            ax.axhline(disc["mb_s_median"], color="gray", linestyle="--",
                       label="sender ceiling (discard)")
        if "disk" in limits:
            ax.axhline(limits["disk"], color="green", linestyle=":", label="disk limit")
        ax.set_title(t)
        ax.set_xticks(range(len(modes)), modes, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("MB/s (10^6 bytes/s)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3 if len(transports) == 1 else 5,
               fontsize="small", frameon=False)
    rng = doc["meta"]["range"]
    fig.suptitle(f"{rng['bytes'] / 1e9:.1f} GB of WAL, {doc['meta']['rounds']} rounds, "
                 f"{doc['meta']['date']}" + (f" — {smoke_note(doc)}" if smoke_note(doc) else ""),
                 y=0.02, fontsize="small", color="red" if smoke_note(doc) else "black")
    fig.tight_layout(rect=(0, 0.04, 1, 0.86))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str], prog: str = "python -m walfast.bench.report") -> int:
    """``PROG RESULTS.json [CHART.png] [--compact]``: the report of a
    results file as markdown (the compact table with ``--compact``), and
    its chart."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description="The tables (markdown) and chart of a "
                                "results file of walfast bench or benchmarks/e2e.")
    p.add_argument("results", type=Path, help="the results file (JSON)")
    p.add_argument("chart", type=Path, nargs="?", help="draw the chart into this PNG file")
    p.add_argument("--compact", action="store_true",
                   help="the compact table (walfast bench's) instead of every figure")
    args = p.parse_args(argv)
    doc = json.loads(args.results.read_text())
    print(render(doc, markdown=True, compact=args.compact))
    if args.chart is not None:
        missing = matplotlib_missing()
        if missing:
            print(f"{prog}: error: {missing}", file=sys.stderr)
            return 1
        chart(doc, args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

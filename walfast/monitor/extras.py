"""What ``walfast receive`` runs beside the receive loop: the catch-up bar
and the metrics endpoint.

Both read the shared progress state (:mod:`walfast.monitor.progress`) like
any other reader; the receive loop does no work for them.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from walfast.monitor.progress import ProgressSnapshot, ProgressStateError, read_progress
from walfast.monitor.status import format_size

if TYPE_CHECKING:
    from walfast.monitor.metrics import MetricsServer

__all__ = ["CatchUpBar", "ReceiveExtras"]


class CatchUpBar:
    """A thread showing a tqdm bar while the receiver is at least a segment
    behind the primary's walEnd: bytes behind, rate, time left.  It reads
    the progress state like any other reader."""

    def __init__(self, directory: str | os.PathLike[str], file: TextIO = sys.stderr,
                 interval: float = 0.25) -> None:
        self.directory = directory
        self.file = file
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="walfast-progress", daemon=True)
        self._bar: Any = None
        self._base = 0

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def update(self, s: ProgressSnapshot) -> None:
        """Show, advance or close the bar for snapshot *s*."""
        from tqdm import tqdm  # type: ignore[import-untyped]

        behind = s.lag_bytes
        if self._bar is None:
            if not s.running or behind < max(s.segment_size, 1):
                return
            self._base = s.written_lsn
            self._bar = tqdm(total=behind, unit="B", unit_scale=True, unit_divisor=1024,
                             file=self.file,
                             desc="catching up", leave=False, dynamic_ncols=True,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                             "{n_fmt}/{total_fmt}{postfix} [{rate_fmt}, {remaining} left]")
        bar = self._bar
        if behind == 0 or not s.running:
            bar.close()
            self._bar = None
            return
        bar.total = s.latest_end_lsn - self._base
        bar.set_postfix_str(f"{format_size(behind)} behind", refresh=False)
        bar.update(s.written_lsn - self._base - bar.n)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                s = read_progress(self.directory, check_running=False)
            except (ProgressStateError, OSError):
                continue            # not connected yet
            self.update(s)
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ReceiveExtras:
    """What ``walfast receive`` runs beside the receive loop: the metrics
    endpoint (``--metrics-address``) and the catch-up bar (on a TTY, unless
    ``--no-progress``).  Starting it validates the address and binds the
    port (:class:`WalfastError` with the reason); :meth:`close` stops both.
    """

    def __init__(self, directory: str | os.PathLike[str], metrics_address: str | None,
                 no_progress: bool) -> None:
        self.metrics: MetricsServer | None = None
        if metrics_address:
            # (prometheus_client is imported only when metrics are asked for)
            from walfast.monitor.metrics import MetricsServer

            self.metrics = MetricsServer(metrics_address, directory)
        self.bar = None
        self._redirect: Any = None
        if not no_progress and sys.stderr.isatty():
            from tqdm.contrib.logging import logging_redirect_tqdm  # type: ignore[import-untyped]

            # Log lines are printed above the bar instead of through it.
            self._redirect = logging_redirect_tqdm([logging.getLogger("walfast")])
            self._redirect.__enter__()
            self.bar = CatchUpBar(directory)
            self.bar.start()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def __enter__(self) -> ReceiveExtras:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

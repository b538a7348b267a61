"""gunicorn settings that cannot be flags: the metrics bookkeeping of `guahao run`. Every other
setting stays on the command line."""

from __future__ import annotations

import os


def child_exit(server, worker) -> None:
    """A worker that exited (or was recycled) hands back its live gauges' files."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

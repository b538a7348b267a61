"""Forcing the interleavings that matter, with real threads and real PostgreSQL connections: one
side pauses inside its transaction, right after a chosen statement, until the other side is seen
waiting on a row lock (or a short timeout passes when it does not need to wait)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import connection, connections

WAIT_FOR_WAITER = 3.0  # seconds; the other side normally blocks within milliseconds


def waiters_on_locks() -> int:
    """How many other backends of this test database wait on a lock now (its own connection, so
    the paused transaction's cursor is left alone)."""
    sd = connection.settings_dict
    with psycopg.connect(
        host=sd["HOST"] or "127.0.0.1", port=sd["PORT"] or 5432, user=sd["USER"], dbname=sd["NAME"], autocommit=True
    ) as probe:
        row = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
    return row[0]


def pause_after(sql_head: str, *, reached: threading.Event, timeout: float = WAIT_FOR_WAITER):
    """An execute wrapper: after the first statement starting with `sql_head` (e.g.
    'UPDATE "booking_hold"'), signal `reached`, then hold the transaction open until another
    backend waits on a lock or `timeout` passes."""
    done = False

    def wrapper(execute, sql, params, many, context):
        nonlocal done
        result = execute(sql, params, many, context)
        if not done and sql.lstrip().startswith(sql_head):
            done = True
            reached.set()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and waiters_on_locks() == 0:
                time.sleep(0.01)
            time.sleep(0.05)  # let the waiter settle into its wait before we commit
        return result

    return wrapper


def race(first: Callable[[], Any], second: Callable[[], Any], *, pause_first_after: str) -> dict[str, Any]:
    """Run `first` until it has executed `pause_first_after` inside its transaction, then start
    `second`; `first` commits only once `second` waits on its lock. Returns each side's result or
    exception under "first" and "second"."""
    out: dict[str, Any] = {}
    reached = threading.Event()

    def run_first() -> None:
        try:
            with connection.execute_wrapper(pause_after(pause_first_after, reached=reached)):
                out["first"] = first()
        except Exception as exc:  # reported to the test
            out["first"] = exc
        finally:
            reached.set()
            connections.close_all()

    def run_second() -> None:
        try:
            reached.wait(10)
            out["second"] = second()
        except Exception as exc:  # reported to the test
            out["second"] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run_first), threading.Thread(target=run_second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out

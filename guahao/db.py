"""Transactions that survive the database's own refusals. Under concurrency PostgreSQL may abort a
transaction with a serialization failure or a deadlock (rare with the one lock order kept in every
service, see docs/operations.md, but never impossible), and SQLite may answer "database is locked"
when its busy timeout runs out. Such a transaction did nothing, so it is run again from the start."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection, transaction

log = logging.getLogger("guahao.db")

T = TypeVar("T")

RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
ATTEMPTS = 4


def is_retryable(exc: BaseException) -> bool:
    cause = exc.__cause__
    if getattr(cause, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    return connection.vendor == "sqlite" and "database is locked" in str(exc)


def atomic_retry(fn: Callable[[], T]) -> T:
    """Run `fn` in one transaction, again (up to ATTEMPTS times, with a short random pause) when the
    database aborted it as a deadlock or serialization failure. Inside an outer transaction there is
    nothing to retry, so the error propagates to whoever owns that transaction."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with transaction.atomic():
                return fn()
        except OperationalError as exc:
            if connection.in_atomic_block or attempt == ATTEMPTS or not is_retryable(exc):
                raise
            log.warning("transaction aborted by the database; retrying", extra={"attempt": attempt, "error": str(exc)[:200]})
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("unreachable")


def release_connection() -> None:
    """Give this thread's database connection back to the pool before a slow outside call (the
    HIS, a payment provider), so a burst of such calls does not hold every pooled connection
    idle. Only with PostgreSQL's pool and outside a transaction; the next query takes one again."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return
    if connection.settings_dict.get("OPTIONS", {}).get("pool") and connection.connection is not None:
        connection.close()

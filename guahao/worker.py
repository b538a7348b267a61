"""The background worker: drains the outbox and runs the idempotent sweeps. Every handler may run
twice safely."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import OperationalError

from guahao import clock
from guahao.booking import services as booking
from guahao.errors import UpstreamUnavailable
from guahao.his import sync as his_sync
from guahao.his.base import HisError
from guahao.notifications import messaging, scheduler
from guahao.notifications import services as outbox
from guahao.notifications.models import OutboxEvent
from guahao.payments import services as payments
from guahao.payments.providers.base import ProviderError

log = logging.getLogger("guahao.worker")

# The HIS or a provider did not answer, or the database refused for now: the job is simply tried
# again later, so this is a warning, not an error with a traceback.
_OUTSIDE_UNAVAILABLE = (HisError, ProviderError, UpstreamUnavailable, OperationalError)


def _tidy(_topic: str, payload: dict) -> None:
    booking.tidy_dead_hold(hold_id=payload["hold_id"])


# Each handler may raise (an outside system did not answer): the event is retried with back-off
# until it succeeds, and the patient's message goes out only once its handler has.
HANDLERS: dict[str, Callable[[str, dict], None]] = {
    "payment.paid": lambda _t, p: booking.complete_paid_hold(payment_id=p["payment_id"]),
    "hold.registering": lambda _t, p: booking.register_paid_hold(hold_id=p["hold_id"]),
    "hold.released": _tidy,
    "hold.expired": _tidy,
    "hold.failed": _tidy,
    "his.cancel": lambda _t, p: booking.cancel_at_his(hold_id=p["hold_id"], registration_no=p.get("registration_no", "")),
    "refund.requested": lambda _t, p: payments.submit_refund(refund_id=p["refund_id"]),
    "refund.succeeded": lambda _t, p: booking.finish_refund(refund_id=p["refund_id"]),
    "session.suspended": lambda _t, p: booking.cancel_for_suspension(session_id=p["session_id"]),
    "job.run": lambda _t, p: scheduler.run_job(name=p["job"], key=p["key"], runner=_worker_id),
}


def handle(event: OutboxEvent) -> None:
    """The event's own work first; its messages only once that has succeeded (a second handling
    writes no second message: messaging.publish is idempotent per event)."""
    handler = HANDLERS.get(event.topic)
    if handler is not None:
        handler(event.topic, event.payload)
    messaging.publish(event)


_worker_id = "worker"


def drain_outbox(*, worker_id: str = "worker", limit: int = 100) -> int:
    """Handle up to `limit` due events, claiming each one just before its handling."""
    global _worker_id
    _worker_id = worker_id
    handled = 0
    while handled < limit and (event := outbox.claim_next()) is not None:
        handled += 1
        try:
            handle(event)
        except _OUTSIDE_UNAVAILABLE as exc:  # expected now and then: retried with back-off
            log.warning(
                "event deferred: an outside system did not answer",
                extra={"event_id": event.id, "topic": event.topic, "worker_id": worker_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            outbox.mark_failed(event, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # one bad event must not stop the others; it is retried with back-off
            log.exception("event failed", extra={"event_id": event.id, "topic": event.topic, "worker_id": worker_id})
            outbox.mark_failed(event, f"{type(exc).__name__}: {exc}")
        else:
            outbox.mark_done(event)
    return handled


SCHEDULER_LEASE = dt.timedelta(seconds=settings.SCHEDULER_LEASE_SECONDS)


def run_sweeps(*, worker_id: str) -> int:
    """The scheduler's work, done by the one worker that holds the scheduler lease: the fast
    idempotent sweeps every pass, and the scheduled jobs enqueued for any worker to run."""
    if not outbox.hold_lease(name="scheduler", holder=worker_id, ttl=SCHEDULER_LEASE):
        return 0
    work = booking.expire_holds()
    work += booking.settle_overdue_registering()
    work += payments.poll_open_payments()
    work += payments.poll_processing_refunds()
    # Each hospital with an HIS: its schedule and today's check-ins, every his_sync.SYNC_INTERVAL.
    work += his_sync.sync_due_hospitals(now=clock.now())
    work += scheduler.enqueue_due(holder=worker_id)
    return work


def run_once(*, worker_id: str = "worker") -> int:
    """One pass: outbox, sweeps. Returns how much work was done."""
    work = drain_outbox(worker_id=worker_id)
    work += messaging.send_due_deliveries()
    work += run_sweeps(worker_id=worker_id)
    return work


def run_forever(*, worker_id: str, idle_sleep: float = 1.0) -> None:
    log.info("worker started", extra={"worker_id": worker_id})
    while True:
        try:
            busy = run_once(worker_id=worker_id)
        except Exception:  # database restarts and the like: log, wait, go on
            log.exception("worker pass failed")
            busy = 0
        if not busy:
            time.sleep(idle_sleep)

"""The outbox: events written in the caller's transaction, claimed and handled by `guahao worker`."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction

from guahao import clock
from guahao.notifications.models import Lease, OutboxEvent

log = logging.getLogger("guahao.outbox")


def emit(topic: str, **payload: Any) -> OutboxEvent:
    """Record an event. Call inside the transaction that makes the change it reports."""
    moment = clock.now()
    return OutboxEvent.objects.create(topic=topic, payload=payload, created_at=moment, available_at=moment)


# A claim covers one event at a time, and an event's handler makes at most a few outside calls,
# each with its own timeout well under this lease: a claim cannot lapse while it is being worked.
EVENT_LEASE = dt.timedelta(seconds=settings.EVENT_LEASE_SECONDS)

_CLAIM_NEXT_PG = """
UPDATE notifications_outboxevent SET claimed_until = %(until)s, claim_token = %(token)s
WHERE id = (
    SELECT id FROM notifications_outboxevent
    WHERE processed_at IS NULL AND parked_at IS NULL AND available_at <= %(now)s
      AND (claimed_until IS NULL OR claimed_until <= %(now)s)
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING id
"""


def claim_next(*, lease: dt.timedelta = EVENT_LEASE) -> OutboxEvent | None:
    """Claim the oldest due event for one handling, under a fresh claim token. On PostgreSQL SKIP
    LOCKED sends concurrent workers to different rows; elsewhere a conditional UPDATE per candidate
    decides. Only the holder of the token may complete or fail the event."""
    moment = clock.now()
    token = secrets.token_hex(16)
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_NEXT_PG,
                {
                    "until": moment + lease,
                    "token": token,
                    "now": moment,
                },
            )
            row = cursor.fetchone()
        return OutboxEvent.objects.get(id=row[0]) if row else None
    candidates = (
        OutboxEvent.objects.filter(processed_at__isnull=True, parked_at__isnull=True, available_at__lte=moment)
        .exclude(claimed_until__gt=moment)
        .order_by("id")
        .values_list("id", flat=True)[:20]
    )
    for event_id in list(candidates):
        with transaction.atomic():
            won = (
                OutboxEvent.objects.filter(id=event_id, processed_at__isnull=True)
                .exclude(claimed_until__gt=moment)
                .update(claimed_until=moment + lease, claim_token=token)
            )
        if won:
            return OutboxEvent.objects.get(id=event_id)
    return None


def claim_events(*, worker_id: str, limit: int = 50, lease: dt.timedelta = EVENT_LEASE) -> list[OutboxEvent]:
    """Claim up to `limit` due events, each under its own token (for tests and tools; the worker
    claims one event at a time with claim_next so that no claim waits behind another's work)."""
    claimed = []
    while len(claimed) < limit and (event := claim_next(lease=lease)) is not None:
        claimed.append(event)
    return claimed


def _holder_q(event: OutboxEvent) -> models.Q:
    # The claim still belongs to this handling: same token, not lapsed (else another worker may
    # have taken the event over, and its outcome wins).
    return models.Q(id=event.id, processed_at__isnull=True, claim_token=event.claim_token, claimed_until__gt=clock.now())


def mark_done(event: OutboxEvent) -> bool:
    """Complete the event if this claim still holds it; False when the claim had lapsed."""
    done = OutboxEvent.objects.filter(_holder_q(event)).update(processed_at=clock.now(), claimed_until=None)
    if not done:
        log.warning("event claim lapsed before it was completed", extra={"event_id": event.id, "topic": event.topic})
    return bool(done)


# After this many failed handlings (about 9 hours of back-off) an event is parked: no worker takes
# it again until staff have looked (console: 待处理事件) and retried it.
MAX_EVENT_ATTEMPTS = 14


def mark_failed(event: OutboxEvent, error: str) -> bool:
    """Back off exponentially (30 s, 1 min, 2 min … capped at 1 h) and try again later; park the
    event after MAX_EVENT_ATTEMPTS. Only the holder of the claim may do so."""
    attempts = event.attempts + 1
    delay = min(30 * 2 ** (attempts - 1), 3600)
    now = clock.now()
    parked = attempts >= MAX_EVENT_ATTEMPTS
    failed = OutboxEvent.objects.filter(_holder_q(event)).update(
        attempts=attempts,
        claimed_until=None,
        available_at=now + dt.timedelta(seconds=delay),
        last_error=error[:300],
        parked_at=now if parked else None,
    )
    if failed and parked:
        log.error("event parked after repeated failures", extra={"event_id": event.id, "topic": event.topic, "attempts": attempts})
    return bool(failed)


def retry_event(*, event_id: int) -> bool:
    """Staff: hand a parked event back to the workers, with a fresh count of attempts."""
    return bool(
        OutboxEvent.objects.filter(id=event_id, processed_at__isnull=True, parked_at__isnull=False).update(
            parked_at=None, attempts=0, available_at=clock.now(), claimed_until=None, claim_token=""
        )
    )


def hold_lease(*, name: str, holder: str, ttl: dt.timedelta) -> bool:
    """Take or renew the lease `name` for `holder`; False while another holder's lease lives.
    One conditional UPDATE decides, so two workers never both win."""
    now = clock.now()
    with transaction.atomic():
        taken = (
            Lease.objects.filter(name=name)
            .filter(models.Q(holder=holder) | models.Q(expires_at__lte=now))
            .update(holder=holder, expires_at=now + ttl)
        )
    if taken:
        return True
    try:
        with transaction.atomic():
            Lease.objects.create(name=name, holder=holder, expires_at=now + ttl)
        return True
    except IntegrityError:  # another worker created it first
        return False

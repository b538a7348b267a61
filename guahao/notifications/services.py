"""The outbox: events written in the caller's transaction, claimed and handled by `guahao worker`."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import IntegrityError, models, transaction

from guahao import clock
from guahao.notifications.models import Lease, OutboxEvent

log = logging.getLogger("guahao.outbox")


def emit(topic: str, **payload: Any) -> OutboxEvent:
    """Record an event. Call inside the transaction that makes the change it reports."""
    moment = clock.now()
    return OutboxEvent.objects.create(topic=topic, payload=payload, created_at=moment, available_at=moment)


def claim_events(*, worker_id: str, limit: int = 50, lease: dt.timedelta = dt.timedelta(seconds=60)) -> list[OutboxEvent]:
    """Claim up to `limit` due events with a conditional UPDATE per row, so two workers never take
    the same event (works on SQLite and PostgreSQL alike)."""
    moment = clock.now()
    candidates = list(
        OutboxEvent.objects.filter(processed_at__isnull=True, available_at__lte=moment)
        .exclude(claimed_until__gt=moment)
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    claimed = []
    for event_id in candidates:
        with transaction.atomic():
            won = (
                OutboxEvent.objects.filter(id=event_id, processed_at__isnull=True)
                .exclude(claimed_until__gt=moment)
                .update(claimed_until=moment + lease)
            )
        if won:
            claimed.append(OutboxEvent.objects.get(id=event_id))
    return claimed


def mark_done(event: OutboxEvent) -> None:
    OutboxEvent.objects.filter(id=event.id).update(processed_at=clock.now(), claimed_until=None)


def mark_failed(event: OutboxEvent, error: str) -> None:
    """Back off exponentially (30 s, 1 min, 2 min … capped at 1 h) and try again later."""
    attempts = event.attempts + 1
    delay = min(30 * 2 ** (attempts - 1), 3600)
    OutboxEvent.objects.filter(id=event.id).update(
        attempts=attempts,
        claimed_until=None,
        available_at=clock.now() + dt.timedelta(seconds=delay),
        last_error=error[:300],
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

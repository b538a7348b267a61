"""Freshness of provider notifications: a signed request is accepted only within ±5 minutes of its
timestamp and only once per nonce. A provider re-sending the same event signs it again with a new
timestamp and nonce, so that passes; a captured request played back does not."""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction

from guahao import clock
from guahao.payments.models import SeenNonce
from guahao.payments.providers.base import BadNotification

MAX_SKEW = dt.timedelta(minutes=5)
# A nonce must be remembered as long as its timestamp can still pass the age check: first seen at
# worst 5 minutes before its timestamp, accepted until 5 minutes after it.
NONCE_RETENTION = 2 * MAX_SKEW


def check_timestamp(timestamp: str) -> None:
    """`timestamp` is Unix seconds as sent in the header."""
    if not timestamp.isdigit():
        raise BadNotification("timestamp is not a number")
    sent_at = dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC)
    if abs(clock.now() - sent_at) > MAX_SKEW:
        raise BadNotification("timestamp outside ±5 minutes")


def remember_nonce(*, provider: str, nonce: str) -> None:
    """Record the nonce of a verified request; raises BadNotification when it was seen before. Call
    inside the transaction that records the notification, so a rolled-back request leaves no trace."""
    if not nonce or len(nonce) > 64:
        raise BadNotification("bad nonce")
    try:
        with transaction.atomic():
            SeenNonce.objects.create(provider=provider, nonce=nonce, seen_at=clock.now())
    except IntegrityError as exc:
        raise BadNotification("nonce already used") from exc


def prune_seen_nonces() -> int:
    """Forget nonces that can no longer pass the age check. Run outside the recording transaction,
    so concurrent notifications do not hold each other's row locks."""
    deleted, _ = SeenNonce.objects.filter(seen_at__lt=clock.now() - NONCE_RETENTION).delete()
    return deleted

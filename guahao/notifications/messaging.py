"""From an event to the patient's messages: the event's composer says who hears what (topic and
masked variables), the hospital's template gives the wording, and one transaction writes the in-app
message and one Delivery per outside channel that wants it. Unique constraints make a second
handling of the same event write nothing."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Q

from guahao import clock
from guahao.notifications import templates
from guahao.notifications.channels import (
    ChannelError,
    ChannelRefused,
    Outgoing,
    channel,
    enabled_channels,
)
from guahao.notifications.models import Delivery, InboxMessage, OutboxEvent

log = logging.getLogger("guahao.messaging")


@dataclass(frozen=True)
class Composed:
    """Who hears of an event, under which topic, with which (masked) template variables."""

    account_id: int
    hospital_id: int | None
    topic: str
    variables: dict[str, str] = field(default_factory=dict)
    link: str = ""


@dataclass(frozen=True)
class Message:
    account_id: int
    hospital_id: int | None
    topic: str
    title: str
    text: str
    params: dict[str, str]
    link: str


def _composers() -> list[Callable[[str, dict], Composed | list[Composed] | None]]:
    from guahao.booking.messages import compose as booking
    from guahao.policies.messages import compose as policies

    return [booking, policies]


def compose(topic: str, payload: dict) -> list[Composed]:
    for composer in _composers():
        composed = composer(topic, payload)
        if composed:
            return composed if isinstance(composed, list) else [composed]
    return []


def render(composed: Composed) -> Message:
    wording = templates.wording(hospital_id=composed.hospital_id, topic=composed.topic)
    return Message(
        account_id=composed.account_id,
        hospital_id=composed.hospital_id,
        topic=composed.topic,
        title=templates.fill(wording.title, composed.variables),
        text=templates.fill(wording.body, composed.variables),
        params=dict(composed.variables),
        link=composed.link,
    )


def messages_for(topic: str, payload: dict) -> list[Message]:
    return [render(c) for c in compose(topic, payload)]


def publish(event: OutboxEvent) -> int:
    """Write the event's messages: the in-app message and a pending Delivery per outside channel.
    Returns how many rows it wrote (0 when an earlier handling already did)."""
    messages = messages_for(event.topic, event.payload)
    if not messages:
        return 0
    now = clock.now()
    written = 0
    try:
        with transaction.atomic():
            for message in messages:
                InboxMessage.objects.create(
                    account_id=message.account_id,
                    hospital_id=message.hospital_id,
                    event=event,
                    topic=message.topic,
                    title=message.title,
                    text=message.text,
                    link=message.link,
                    created_at=now,
                )
                written += 1
                for outside in enabled_channels():
                    if not outside.wants(account_id=message.account_id, hospital_id=message.hospital_id, topic=message.topic):
                        continue
                    Delivery.objects.create(
                        event=event,
                        channel=outside.name if len(messages) == 1 else f"{outside.name}:{message.account_id}",
                        account_id=message.account_id,
                        hospital_id=message.hospital_id,
                        topic=message.topic,
                        title=message.title,
                        text=message.text,
                        params=message.params,
                        created_at=now,
                        available_at=now,
                    )
                    written += 1
    except IntegrityError:  # an earlier handling of this event wrote them
        return 0
    return written


# --- sending deliveries -----------------------------------------------------------------------

DELIVERY_LEASE = dt.timedelta(seconds=60)
# Back-off 30 s, 1 min, 2 min, 4 min … then parked for staff (about an hour of trying).
MAX_DELIVERY_ATTEMPTS = 8


def _claim_next_delivery(*, lease: dt.timedelta = DELIVERY_LEASE) -> Delivery | None:
    moment = clock.now()
    token = secrets.token_hex(16)
    due = Q(state=Delivery.State.PENDING, available_at__lte=moment) & (Q(claimed_until__isnull=True) | Q(claimed_until__lte=moment))
    for delivery_id in list(Delivery.objects.filter(due).order_by("id").values_list("id", flat=True)[:20]):
        # One conditional UPDATE per candidate decides between workers; the loser tries the next.
        with transaction.atomic():
            won = Delivery.objects.filter(due, id=delivery_id).update(claimed_until=moment + lease, claim_token=token)
        if won:
            return Delivery.objects.get(id=delivery_id)
    return None


def _holder_q(delivery: Delivery) -> Q:
    return Q(id=delivery.id, state=Delivery.State.PENDING, claim_token=delivery.claim_token, claimed_until__gt=clock.now())


def send_delivery(delivery: Delivery) -> str:
    """Send one claimed delivery and record the outcome; returns the state it ended in."""
    name = delivery.channel.split(":", 1)[0]
    outgoing = Outgoing(
        delivery_id=delivery.id,
        account_id=delivery.account_id,
        hospital_id=delivery.hospital_id,
        topic=delivery.topic,
        title=delivery.title,
        text=delivery.text,
        params=delivery.params,
    )
    now = clock.now()
    try:
        ref = channel(name).send(outgoing)
    except ChannelRefused as exc:
        Delivery.objects.filter(_holder_q(delivery)).update(
            state=Delivery.State.REFUSED, claimed_until=None, attempts=delivery.attempts + 1, last_error=str(exc)[:300]
        )
        log.info("message refused by its channel", extra={"delivery_id": delivery.id, "channel": name, "error": str(exc)[:200]})
        return Delivery.State.REFUSED
    except Exception as exc:  # ChannelError, and anything unexpected: retried, then parked
        attempts = delivery.attempts + 1
        parked = attempts >= MAX_DELIVERY_ATTEMPTS
        Delivery.objects.filter(_holder_q(delivery)).update(
            state=Delivery.State.PARKED if parked else Delivery.State.PENDING,
            attempts=attempts,
            claimed_until=None,
            available_at=now + dt.timedelta(seconds=min(30 * 2 ** (attempts - 1), 3600)),
            last_error=f"{type(exc).__name__}: {exc}"[:300],
        )
        level = logging.ERROR if parked or not isinstance(exc, ChannelError) else logging.WARNING
        log.log(
            level,
            "message parked after repeated failures" if parked else "message not sent, will retry",
            extra={"delivery_id": delivery.id, "channel": name, "attempts": attempts, "error": f"{type(exc).__name__}: {exc}"[:200]},
        )
        return Delivery.State.PARKED if parked else Delivery.State.PENDING
    done = Delivery.objects.filter(_holder_q(delivery)).update(
        state=Delivery.State.SENT, sent_at=clock.now(), claimed_until=None, provider_ref=str(ref)[:64], attempts=delivery.attempts + 1
    )
    if not done:
        log.warning("delivery claim lapsed before it was recorded", extra={"delivery_id": delivery.id, "channel": name})
    return Delivery.State.SENT


def send_due_deliveries(*, limit: int = 100) -> int:
    sent = 0
    while sent < limit and (delivery := _claim_next_delivery()) is not None:
        sent += 1
        send_delivery(delivery)
    return sent


def retry_delivery(*, delivery_id: int) -> bool:
    """Staff: send a parked (or refused) delivery again from the start."""
    return bool(
        Delivery.objects.filter(id=delivery_id, state__in=(Delivery.State.PARKED, Delivery.State.REFUSED)).update(
            state=Delivery.State.PENDING, attempts=0, available_at=clock.now(), claimed_until=None, claim_token=""
        )
    )

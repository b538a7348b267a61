"""Helpers for payment tests: a live hold to pay for, and the sandbox's notifications delivered to
our callback through Django's test client."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from urllib.parse import urlsplit

from django.test import Client

from guahao import clock
from guahao.booking.models import Hold
from guahao.booking.states import HoldState
from guahao.payments.models import Payment, SandboxNotification
from guahao.payments.providers import sandbox
from guahao.scheduling.models import Slot
from guahao.testing import make_account, make_department, make_hospital, make_session

NOTIFY_PATH = "/api/v1/payments/notify/sandbox"


def make_hold(*, fee_fen: int = 1000, channel: str = Hold.Channel.WECHAT) -> Hold:
    """A hold as booking leaves it when it opens a payment order: PAYING, its slot claimed."""
    hospital = make_hospital(name="测试人民医院")
    session = make_session(make_department(hospital, name="心血管内科"), fee_fen=fee_fen)
    now = clock.now()
    expires_at = now + dt.timedelta(minutes=10)
    slot = session.slots.first()
    Slot.objects.filter(id=slot.id).update(state=Slot.State.HELD, held_until=expires_at)
    return Hold.objects.create(
        account=make_account(),
        slot=slot,
        session=session,
        state=HoldState.PAYING,
        expires_at=expires_at,
        fee_fen=fee_fen,
        created_at=now,
        updated_at=now,
        channel=channel,
        insurance=False,
    )


def post_notification(body: bytes, headers: dict[str, str], *, path: str = NOTIFY_PATH):
    return Client().post(path, data=body, content_type="application/json", headers=headers)


def client_send(url: str, headers: dict[str, str], body: bytes) -> int:
    """The sandbox's sender, delivering through Django's test client instead of HTTP."""
    return post_notification(body, headers, path=urlsplit(url).path).status_code


def pay_in_sandbox(payment: Payment) -> SandboxNotification:
    """The patient pays; returns the one notification the sandbox queued."""
    sandbox.pay(payment.out_trade_no)
    return SandboxNotification.objects.get(trade__out_trade_no=payment.out_trade_no, kind=sandbox.TRANSACTION_SUCCESS)


def body_of(notification: SandboxNotification) -> bytes:
    return notification.body.encode()


def tampered(body: bytes, change: Callable[[dict], None]) -> bytes:
    data = json.loads(body)
    change(data)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()

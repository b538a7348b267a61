"""The notification URL answers only merchants that exist here (the sandbox's in development only),
and nothing reaches the database before a notification's signature checks out."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qsl, urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from guahao import clock
from guahao.notifications.models import OutboxEvent
from guahao.payments.models import Payment, SeenNonce
from guahao.payments.tests.helpers import accepted, make_hold, pay, refused, start
from guahao.testing import client_send

pytestmark = pytest.mark.django_db


@pytest.fixture
def paid(channel, booking_calls):
    payment, _ = start(make_hold(channel))
    return payment, pay(payment)


def writes(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


def rows() -> tuple[int, int, list]:
    return (
        SeenNonce.objects.count(),
        OutboxEvent.objects.count(),
        list(Payment.objects.values_list("state", "paid_at")),
    )


def test_the_sandbox_merchant_is_unknown_outside_development(paid, settings, booking_calls):
    settings.ENV = "production"
    payment, delivery = paid
    before = rows()
    with CaptureQueriesContext(connection) as queries:
        status, body = client_send(*delivery.signed())
    assert (status, body) == (404, b"unknown merchant")
    assert writes(queries) == []
    assert rows() == before
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED
    assert booking_calls == []


@pytest.mark.parametrize(
    "path",
    ["/api/v1/payments/notify/faulty/sandbox", "/api/v1/payments/notify/wechatpay/999999",
     "/api/v1/payments/notify/alipay/999999", "/api/v1/payments/notify/wechatpay/..%2F1"],
    ids=["unknown-provider", "unknown-wechat-merchant", "unknown-alipay-merchant", "not-a-merchant-id"],
)  # fmt: skip
def test_a_merchant_that_does_not_exist_is_404_and_writes_nothing(paid, path):
    _payment, delivery = paid
    _url, headers, body = delivery.signed()
    with CaptureQueriesContext(connection) as queries:
        status, _ = client_send(f"http://testserver{path}", headers, body)
    assert status == 404
    assert writes(queries) == []


def test_an_unsigned_or_badly_signed_notification_writes_nothing(paid, booking_calls):
    payment, delivery = paid
    # A nonce old enough to be pruned: only a verified notification may cause that DELETE.
    SeenNonce.objects.create(
        provider=payment.provider, nonce="OLD", seen_at=clock.now() - dt.timedelta(hours=1)
    )
    url, headers, body = delivery.signed()
    if payment.provider == "wechatpay":
        tries = [
            ({"Content-Type": headers["Content-Type"]}, body),  # unsigned
            ({**headers, "Wechatpay-Signature": "Zm9yZ2Vk"}, body),  # a forged signature
            (
                headers,
                body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESZ"),
            ),  # signed, then changed
        ]
    else:
        form = dict(parse_qsl(body.decode()))
        unsigned = {k: v for k, v in form.items() if k not in ("sign", "sign_type")}
        tries = [
            (headers, urlencode(unsigned).encode()),
            (headers, urlencode({**form, "sign": "Zm9yZ2Vk"}).encode()),
            (
                headers,
                urlencode({**form, "out_trade_no": "GX" + form["out_trade_no"][2:]}).encode(),
            ),
        ]
    assert tries[2][1] != body
    before = rows()
    for try_headers, try_body in tries:
        with CaptureQueriesContext(connection) as queries:
            assert refused(payment.provider, client_send(url, try_headers, try_body))
        assert writes(queries) == []
    assert rows() == before
    assert booking_calls == []


def test_a_verified_notification_still_prunes_old_nonces(paid, booking_calls):
    payment, delivery = paid
    SeenNonce.objects.create(
        provider=payment.provider, nonce="OLD", seen_at=clock.now() - dt.timedelta(hours=1)
    )
    assert accepted(payment.provider, client_send(*delivery.signed()))
    assert not SeenNonce.objects.filter(nonce="OLD").exists()
    assert SeenNonce.objects.count() == 1
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID

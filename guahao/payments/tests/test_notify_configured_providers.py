"""The notification URL answers only the providers this deployment is configured with, and nothing
reaches the database before a notification's signature checks out."""

from __future__ import annotations

import datetime as dt
import importlib

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import Resolver404, clear_url_caches, resolve

import guahao.urls  # noqa: F401  (mounted now, under the default settings, before a test changes them)
from guahao import clock
from guahao.notifications.models import OutboxEvent
from guahao.payments import services
from guahao.payments.models import Payment, SeenNonce
from guahao.payments.providers.sandbox import signed_headers
from guahao.payments.tests.helpers import body_of, pay_in_sandbox, post_notification

pytestmark = pytest.mark.django_db


@pytest.fixture
def paid_notification(hold) -> tuple[Payment, bytes]:
    payment, _ = services.start_payment(hold=hold)
    return payment, body_of(pay_in_sandbox(payment))


def writes(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def rows() -> tuple[int, int, list]:
    return SeenNonce.objects.count(), OutboxEvent.objects.count(), list(Payment.objects.values_list("state", "paid_at"))


def test_a_sandbox_signed_notification_is_refused_when_the_sandbox_is_not_configured(
    paid_notification, settings, booking_calls
):
    settings.ENV = "production"
    settings.PAYMENT_PROVIDERS = ["testpay"]
    settings.PAYMENT_PROVIDER = "testpay"
    payment, body = paid_notification
    before = rows()
    with CaptureQueriesContext(connection) as queries:
        response = post_notification(body, signed_headers(body))
    assert response.status_code == 404
    assert response.json() == {"code": "unknown_provider", "message": "未知的支付机构"}
    assert writes(queries) == []
    assert rows() == before
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED
    assert booking_calls == []


def test_a_provider_name_that_does_not_exist_writes_nothing(paid_notification):
    _, body = paid_notification
    with CaptureQueriesContext(connection) as queries:
        response = post_notification(body, signed_headers(body), path="/api/v1/payments/notify/faulty")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_provider"
    assert writes(queries) == []


@pytest.mark.parametrize("headers", [{}, {"Wechatpay-Signature": "forged"}], ids=["unsigned", "badly-signed"])
def test_an_unsigned_or_badly_signed_notification_writes_nothing(paid_notification, headers, booking_calls):
    payment, body = paid_notification
    # A nonce old enough to be pruned: only a verified notification may cause that DELETE.
    SeenNonce.objects.create(provider="sandbox", nonce="OLD", seen_at=clock.now() - dt.timedelta(hours=1))
    if headers:
        headers = {**signed_headers(body), **headers}
    before = rows()
    with CaptureQueriesContext(connection) as queries:
        response = post_notification(body, headers)
    assert response.status_code == 401
    assert writes(queries) == []
    assert rows() == before
    assert booking_calls == []


def test_a_verified_notification_still_prunes_old_nonces(paid_notification, booking_calls):
    payment, body = paid_notification
    SeenNonce.objects.create(provider="sandbox", nonce="OLD", seen_at=clock.now() - dt.timedelta(hours=1))
    assert post_notification(body, signed_headers(body)).status_code == 200
    assert not SeenNonce.objects.filter(nonce="OLD").exists()
    assert SeenNonce.objects.count() == 1
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID


def test_several_configured_providers_are_each_accepted(paid_notification, settings, booking_calls):
    settings.PAYMENT_PROVIDERS = ["testpay", "sandbox"]
    settings.PAYMENT_PROVIDER = "testpay"
    payment, body = paid_notification
    assert post_notification(body, signed_headers(body)).status_code == 200
    assert booking_calls == [("complete_paid_hold", payment.id)]


def test_the_sandbox_cashier_is_gone_when_the_sandbox_is_not_configured(paid_notification, settings, client):
    payment, _ = paid_notification
    path = f"/sandbox/pay/{payment.out_trade_no}"
    assert client.get(path).status_code == 200
    settings.PAYMENT_PROVIDERS = ["testpay"]
    assert client.get(path).status_code == 404
    assert client.post(path, {"result": "success"}).status_code == 404
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED


def test_the_sandbox_cashier_is_not_even_mounted_without_the_sandbox(settings):
    settings.PAYMENT_PROVIDERS = ["testpay"]
    try:
        importlib.reload(guahao.urls)
        clear_url_caches()
        with pytest.raises(Resolver404):
            resolve("/sandbox/pay/GH0000000000001")
    finally:
        settings.PAYMENT_PROVIDERS = ["sandbox"]
        importlib.reload(guahao.urls)
        clear_url_caches()
    assert resolve("/sandbox/pay/GH0000000000001").url_name == "sandbox-pay"

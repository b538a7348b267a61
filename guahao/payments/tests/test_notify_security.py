"""The notification callback trusts only fresh, correctly signed, never-replayed notifications about
orders it knows, for the amount it asked."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.notifications.models import OutboxEvent
from guahao.payments import services
from guahao.payments.models import Payment
from guahao.payments.providers.sandbox import signed_headers
from guahao.payments.tests.helpers import body_of, pay_in_sandbox, post_notification, tampered

pytestmark = pytest.mark.django_db


@pytest.fixture
def paid_notification(hold) -> tuple[Payment, bytes]:
    payment, _ = services.start_payment(hold=hold)
    return payment, body_of(pay_in_sandbox(payment))


def test_a_signed_notification_marks_the_payment_paid_and_answers_success(paid_notification, booking_calls):
    payment, body = paid_notification
    response = post_notification(body, signed_headers(body))
    assert response.status_code == 200
    assert response.json() == {"code": "SUCCESS", "message": "成功"}
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert payment.provider_trade_no.startswith("4200")
    assert booking_calls == [("complete_paid_hold", payment.id)]
    assert OutboxEvent.objects.filter(topic="payment.paid", payload={"payment_id": payment.id}).count() == 1


def test_a_tampered_body_is_rejected_with_401(paid_notification, booking_calls):
    payment, body = paid_notification
    headers = signed_headers(body)
    forged = tampered(body, lambda d: d["resource"]["amount"].update(total=1))
    response = post_notification(forged, headers)
    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED
    assert booking_calls == []


def test_a_wrong_signature_is_rejected(paid_notification):
    _, body = paid_notification
    headers = signed_headers(body)
    headers["Wechatpay-Signature"] = signed_headers(b"other")["Wechatpay-Signature"]
    assert post_notification(body, headers).status_code == 401


def test_missing_headers_are_rejected(paid_notification):
    _, body = paid_notification
    assert post_notification(body, {}).status_code == 401


def test_a_notification_older_than_five_minutes_is_rejected(paid_notification):
    payment, body = paid_notification
    headers = signed_headers(body)
    with clock.travel(dt.timedelta(minutes=5, seconds=5)):
        assert post_notification(body, headers).status_code == 401
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED


def test_a_notification_from_the_future_is_rejected(paid_notification):
    _, body = paid_notification
    with clock.travel(dt.timedelta(minutes=6)):
        headers = signed_headers(body)
    assert post_notification(body, headers).status_code == 401


def test_a_notification_within_five_minutes_is_accepted(paid_notification, booking_calls):
    _, body = paid_notification
    headers = signed_headers(body)
    with clock.travel(dt.timedelta(minutes=4, seconds=50)):
        assert post_notification(body, headers).status_code == 200


def test_a_replayed_nonce_is_rejected(paid_notification, booking_calls):
    _, body = paid_notification
    headers = signed_headers(body)
    assert post_notification(body, headers).status_code == 200
    assert post_notification(body, headers).status_code == 401


def test_a_resent_notification_with_a_fresh_nonce_is_accepted_without_a_second_change(
    paid_notification, booking_calls
):
    payment, body = paid_notification
    assert post_notification(body, signed_headers(body)).status_code == 200
    payment.refresh_from_db()
    paid_at = payment.paid_at
    with clock.travel(dt.timedelta(seconds=15)):
        assert post_notification(body, signed_headers(body)).status_code == 200
    payment.refresh_from_db()
    assert payment.paid_at == paid_at
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1
    assert booking_calls == [("complete_paid_hold", payment.id)]


def test_an_amount_that_differs_from_the_order_is_rejected(hold, settings):
    payment, _ = services.start_payment(hold=hold)
    body = tampered(body_of(pay_in_sandbox(payment)), lambda d: d["resource"]["amount"].update(total=1))
    # Correctly signed (as if the provider itself sent it), but not what we asked for.
    assert post_notification(body, signed_headers(body)).status_code == 401
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED
    assert not OutboxEvent.objects.filter(topic="payment.paid").exists()


def test_an_unknown_order_is_rejected(paid_notification):
    _, body = paid_notification
    body = tampered(body, lambda d: d["resource"].update(out_trade_no="GH0000000000000"))
    assert post_notification(body, signed_headers(body)).status_code == 401


def test_a_rejected_notification_does_not_burn_its_nonce(paid_notification, booking_calls):
    payment, body = paid_notification
    Payment.objects.filter(id=payment.id).update(amount_fen=1)  # make the amount check fail once
    headers = signed_headers(body)
    assert post_notification(body, headers).status_code == 401
    Payment.objects.filter(id=payment.id).update(amount_fen=1000)
    assert post_notification(body, headers).status_code == 200


def test_an_unknown_provider_is_404(paid_notification):
    _, body = paid_notification
    response = post_notification(body, signed_headers(body), path="/api/v1/payments/notify/nosuchpay")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_provider"


def test_a_failure_after_recording_still_answers_200(paid_notification, monkeypatch, booking_calls):
    payment, body = paid_notification
    import sys

    def broken(*, payment_id: int) -> None:
        raise RuntimeError("HIS down")

    monkeypatch.setattr(sys.modules["guahao.booking.services"], "complete_paid_hold", broken)
    assert post_notification(body, signed_headers(body)).status_code == 200
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    # The worker finishes it from the event written with the state change.
    assert OutboxEvent.objects.filter(topic="payment.paid", processed_at__isnull=True).count() == 1

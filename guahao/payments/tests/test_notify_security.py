"""The notification callback settles an order once, answers in the provider's form, and trusts only
fresh, genuine notifications about orders of the merchant whose URL they reach, for both providers.
(The forgeries one by one are in test_notifications.)"""

from __future__ import annotations

import datetime as dt
import sys

import pytest

from guahao import clock
from guahao.notifications.models import OutboxEvent
from guahao.payments.models import MerchantAccount, Payment
from guahao.payments.tests.helpers import (
    accepted,
    alipay_form,
    alipay_params,
    deliver,
    make_hold,
    pay,
    post_alipay,
    post_wechat,
    refused,
    start,
    wechat_body,
    wechat_resource,
    wechat_signed_headers,
)
from guahao.testing import client_send, payment_sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def paid(channel, booking_calls):
    """An order of `channel` the patient has paid; its notification not delivered yet."""
    payment, _ = start(make_hold(channel))
    return payment, pay(payment)


def test_a_genuine_notification_marks_the_payment_paid_and_answers_in_the_providers_form(
    paid, booking_calls
):
    payment, delivery = paid
    status, body = deliver(delivery)
    if payment.provider == "wechatpay":
        assert (status, body.decode()) == (200, '{"code":"SUCCESS","message":"成功"}')
    else:
        assert (status, body) == (200, b"success")  # Alipay reads the literal body
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert payment.provider_trade_no == payment_sandbox().trade(payment.out_trade_no).transaction_id
    assert booking_calls == [("complete_paid_hold", payment.id)]
    assert (
        OutboxEvent.objects.filter(topic="payment.paid", payload={"payment_id": payment.id}).count()
        == 1
    )
    assert (
        payment_sandbox().notifications(payment.out_trade_no)[0].delivered_at is None
    )  # sent by hand here


def test_a_notification_signed_nearly_five_minutes_ago_is_still_accepted(paid, booking_calls):
    payment, delivery = paid
    captured = delivery.signed()
    with clock.travel(dt.timedelta(minutes=4, seconds=50)):
        assert accepted(payment.provider, client_send(*captured))
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID


def test_a_notification_arriving_more_than_five_minutes_after_it_was_signed_is_refused(
    paid, booking_calls
):
    payment, delivery = paid
    captured = delivery.signed()
    with clock.travel(dt.timedelta(minutes=5, seconds=5)):
        assert refused(payment.provider, client_send(*captured))
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED
    assert booking_calls == []


def test_a_genuine_notification_of_an_order_we_do_not_have_is_refused_without_an_alert(paid):
    payment, delivery = paid
    if payment.provider == "wechatpay":
        resource = wechat_resource(delivery)
        resource["out_trade_no"] = "GH0000000000000"
        body = wechat_body(delivery, resource)
        reply = post_wechat(delivery, body, wechat_signed_headers(body))
    else:
        reply = post_alipay(
            delivery, alipay_form({**alipay_params(delivery), "out_trade_no": "GH0000000000000"})
        )
    assert refused(payment.provider, reply)
    assert not OutboxEvent.objects.filter(topic__in=["payment.paid", "payment.alert"]).exists()


def test_a_rejected_notification_does_not_burn_its_nonce(paid, booking_calls):
    payment, delivery = paid
    Payment.objects.filter(id=payment.id).update(amount_fen=1)  # make the amount check fail once
    captured = delivery.signed()
    assert refused(payment.provider, client_send(*captured))
    Payment.objects.filter(id=payment.id).update(amount_fen=1000)
    assert accepted(payment.provider, client_send(*captured))  # the same nonce, now accepted
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID


def test_a_failure_after_recording_still_answers_success(paid, monkeypatch, booking_calls):
    payment, delivery = paid

    def broken(*, payment_id: int) -> None:
        raise RuntimeError("HIS down")

    monkeypatch.setattr(sys.modules["guahao.booking.services"], "complete_paid_hold", broken)
    assert accepted(payment.provider, deliver(delivery))
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    # The worker finishes it from the event written with the state change.
    assert OutboxEvent.objects.filter(topic="payment.paid", processed_at__isnull=True).count() == 1


def test_a_notification_we_need_not_act_on_is_acknowledged_and_changes_nothing(
    channel, booking_calls
):
    """WeChat's notification of an unpaid state, Alipay's WAIT_BUYER_PAY: received, nothing to do."""
    payment, _ = start(make_hold(channel))
    pay_delivery = pay(payment)
    if payment.provider == "wechatpay":
        resource = {**wechat_resource(pay_delivery), "trade_state": "NOTPAY"}
        body = wechat_body(pay_delivery, resource)
        reply = post_wechat(pay_delivery, body, wechat_signed_headers(body))
    else:
        reply = post_alipay(
            pay_delivery,
            alipay_form({**alipay_params(pay_delivery), "trade_status": "WAIT_BUYER_PAY"}),
        )
    assert accepted(payment.provider, reply)
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED
    assert not OutboxEvent.objects.filter(topic="payment.paid").exists()
    assert booking_calls == []


def test_a_notification_posted_to_another_merchants_url_is_refused(paid, booking_calls):
    """The order was taken by the sandbox merchant; a hospital's own account (here with the same
    keys) does not know it, so its URL refuses it: the merchant is part of the order's identity."""
    payment, delivery = paid
    keys = payment_sandbox().keys
    wechat = payment.provider == "wechatpay"
    other = MerchantAccount.objects.create(
        hospital=payment.hold.session.hospital,
        provider=payment.provider,
        app_id=keys.wechat.appid if wechat else keys.alipay.app_id,
        mch_id=keys.wechat.mchid if wechat else keys.alipay.seller_id,
        serial_no=keys.wechat.merchant_serial_no if wechat else "",
        private_key=keys.wechat.merchant_private_key if wechat else keys.alipay.app_private_key,
        provider_public_key=keys.wechat.platform_public_key
        if wechat
        else keys.alipay.alipay_public_key,
        provider_public_key_id=keys.wechat.platform_public_key_id if wechat else "",
        api_v3_key=keys.wechat.apiv3_key if wechat else "",
        gateway_url=payment_sandbox().url if wechat else payment_sandbox().alipay_gateway,
    )
    url, headers, body = delivery.signed()
    elsewhere = url.replace("/sandbox", f"/{other.pk}")
    assert refused(payment.provider, client_send(elsewhere, headers, body))
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED
    assert accepted(payment.provider, client_send(url, headers, body))


def test_the_published_schema_describes_the_replies_providers_get(client):
    # It said every reply was a JSON string; WeChat gets a JSON object, Alipay plain text.
    published = client.get("/api/v1/openapi.json").json()
    responses = published["paths"]["/api/v1/payments/notify/{provider_name}/{merchant_key}"]["post"]["responses"]
    for status in ("200", "400", "401", "404"):
        content = responses[status]["content"]
        assert content["text/plain"]["schema"] == {"type": "string"}
        assert content["application/json"]["schema"]["type"] == "object"

"""Provider notifications, as the acceptance points of the issue put them. Our callback takes a
notification only when it is signed by the provider (known key, fresh, never replayed, intact) and
is about this merchant's order for its amount; it refuses everything else in the provider's own
form (WeChat: 401 FAIL, Alipay: 400 "fail"; never a 500) without changing anything, and a signed
one that does not match raises an alert instead of paying.

The SDKs check the sandbox and the sandbox checks us: wechatpayv3 and python-alipay-sdk verify what
the gateway sends, and our callback verifies what the SDKs' own signing helpers produce."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from urllib.parse import parse_qsl, urlencode

import pytest
from alipay import AliPay
from wechatpayv3 import WeChatPay, WeChatPayType

from guahao import clock
from guahao.notifications.models import OutboxEvent
from guahao.payments import services
from guahao.payments.models import Payment, Refund, SeenNonce
from guahao.payments.sandbox import Delivery
from guahao.payments.tests.helpers import (
    accepted,
    alipay_form,
    alipay_params,
    alipay_time,
    deliver,
    make_hold,
    paid_payment,
    pay,
    post_alipay,
    post_wechat,
    refund_deliveries,
    refused,
    start,
    wechat_body,
    wechat_resource,
    wechat_signed_headers,
)
from guahao.testing import client_send, payment_sandbox, run_concurrently

pytestmark = pytest.mark.django_db

SIX_MINUTES = dt.timedelta(minutes=6)


def books(payment: Payment) -> tuple:
    """What a notification may change: the payment, its refunds, the events and the nonces seen
    (alerts aside: a mismatch raises one on purpose)."""
    payment.refresh_from_db()
    return (
        payment.state,
        payment.paid_at,
        payment.provider_trade_no,
        payment.refunded_fen,
        sorted(Refund.objects.filter(payment=payment).values_list("refund_no", "state")),
        sorted(OutboxEvent.objects.exclude(topic="payment.alert").values_list("topic", flat=True)),
        SeenNonce.objects.count(),
    )


def rejection_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Why the callback refused, as it logged it."""
    return [r.reason for r in caplog.records if r.getMessage() == "payment notification rejected"]


def alerts() -> int:
    return OutboxEvent.objects.filter(topic="payment.alert").count()


def assert_alerted(caplog: pytest.LogCaptureFixture, *, before: int) -> None:
    assert alerts() == before + 1
    assert any(
        r.levelno == logging.ERROR
        and r.name == "guahao.payments"
        and "does not match" in r.getMessage()
        for r in caplog.records
    )


@pytest.fixture
def wechat_paid(db, booking_calls) -> tuple[Payment, Delivery]:
    """A WeChat order the patient has paid; its TRANSACTION.SUCCESS not delivered yet."""
    payment, _ = start(make_hold("wechat"))
    return payment, pay(payment)


@pytest.fixture
def alipay_paid(db, booking_calls) -> tuple[Payment, Delivery]:
    """An Alipay order the patient has paid; its trade_status_sync not delivered yet."""
    payment, _ = start(make_hold("alipay"))
    return payment, pay(payment)


# --- the SDKs verify the sandbox; our callback verifies the SDKs ---------------------------------


def test_wechatpayv3_verifies_and_decrypts_the_gateways_notification(wechat_paid):
    payment, delivery = wechat_paid
    keys = payment_sandbox().keys.wechat
    merchant = WeChatPay(
        wechatpay_type=WeChatPayType.H5,
        mchid=keys.mchid,
        private_key=keys.merchant_private_key,
        cert_serial_no=keys.merchant_serial_no,
        appid=keys.appid,
        apiv3_key=keys.apiv3_key,
        public_key=keys.platform_public_key,
        public_key_id=keys.platform_public_key_id,
    )
    _url, headers, body = delivery.signed()
    data = merchant.callback(headers, body.decode())
    assert data["event_type"] == "TRANSACTION.SUCCESS"
    resource = data["resource"]
    assert (resource["out_trade_no"], resource["trade_state"], resource["amount"]["total"]) == (
        payment.out_trade_no, "SUCCESS", payment.amount_fen,
    )  # fmt: skip
    assert (resource["mchid"], resource["appid"]) == (keys.mchid, keys.appid)
    # A byte changed anywhere and the SDK's own check fails.
    assert merchant.callback(headers, body.decode().replace('"TRANSACTION', '"TRANSACTIOM')) is None


def test_python_alipay_sdk_verifies_the_gateways_notification(alipay_paid):
    payment, delivery = alipay_paid
    keys = payment_sandbox().keys.alipay
    merchant = AliPay(
        appid=keys.app_id,
        app_private_key_string=keys.app_private_key,
        alipay_public_key_string=keys.alipay_public_key,
        sign_type="RSA2",
    )
    _url, _headers, body = delivery.signed()
    data = dict(parse_qsl(body.decode(), keep_blank_values=True))
    sign = data.pop("sign")
    assert merchant.verify(dict(data), sign)
    assert (data["out_trade_no"], data["trade_status"], data["total_amount"]) == (
        payment.out_trade_no,
        "TRADE_SUCCESS",
        "10.00",
    )
    assert (data["app_id"], data["seller_id"]) == (keys.app_id, keys.seller_id)
    assert not merchant.verify({**data, "total_amount": "0.01"}, sign)


def test_a_wechat_notification_signed_with_wechatpayv3s_helper_is_accepted(wechat_paid):
    payment, delivery = wechat_paid
    # Our own body (the resource encrypted afresh) and headers signed by the SDK's rsa_sign.
    body = wechat_body(delivery, wechat_resource(delivery))
    assert body != delivery.body
    assert accepted("wechatpay", post_wechat(delivery, body, wechat_signed_headers(body)))
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert payment.provider_trade_no == payment_sandbox().trade(payment.out_trade_no).transaction_id


def test_an_alipay_notification_signed_with_the_sdks_sign_data_is_accepted(alipay_paid):
    payment, delivery = alipay_paid
    assert accepted("alipay", post_alipay(delivery, alipay_form(alipay_params(delivery))))
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert payment.provider_trade_no == payment_sandbox().trade(payment.out_trade_no).transaction_id


# --- refused: not signed by the provider, stale, or broken ---------------------------------------


def _flip_a_ciphertext_byte(delivery: Delivery) -> str:
    data = json.loads(delivery.body)
    sealed = bytearray(base64.b64decode(data["resource"]["ciphertext"]))
    sealed[len(sealed) // 2] ^= 0x01
    data["resource"]["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _wechat_forgery(kind: str, delivery: Delivery) -> tuple[str, dict[str, str]]:
    body = delivery.body
    now = int(clock.now().timestamp())
    if kind == "bad_signature":
        headers = wechat_signed_headers(body, timestamp=now, nonce="N" * 32)
        # A real signature, but over another body: what a forger copying headers would send.
        headers["Wechatpay-Signature"] = wechat_signed_headers(
            body + " ", timestamp=now, nonce="N" * 32
        )["Wechatpay-Signature"]
        return body, headers
    if kind == "unknown_serial":
        return body, wechat_signed_headers(body, serial="PUB_KEY_ID_0114000000000000000000000000")
    if kind == "stale_timestamp":
        return body, wechat_signed_headers(body, timestamp=now - int(SIX_MINUTES.total_seconds()))
    if kind == "future_timestamp":
        return body, wechat_signed_headers(body, timestamp=now + int(SIX_MINUTES.total_seconds()))
    if kind == "broken_gcm_tag":
        broken = _flip_a_ciphertext_byte(delivery)
        return broken, wechat_signed_headers(
            broken
        )  # correctly signed, but the resource does not open
    if kind == "unsigned":
        return body, {"Content-Type": "application/json"}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("bad_signature", "signature or encrypted resource did not verify"),
        ("unknown_serial", "unknown Wechatpay-Serial"),
        ("stale_timestamp", "timestamp outside ±5 minutes"),
        ("future_timestamp", "timestamp outside ±5 minutes"),
        ("broken_gcm_tag", "signature or encrypted resource did not verify"),
        ("unsigned", "unknown Wechatpay-Serial"),
    ],
)
def test_a_wechat_notification_that_is_not_genuine_and_fresh_is_refused_and_changes_nothing(
    wechat_paid, kind, reason, caplog
):
    payment, delivery = wechat_paid
    before, alerted = books(payment), alerts()
    body, headers = _wechat_forgery(kind, delivery)
    assert refused("wechatpay", post_wechat(delivery, body, headers))
    assert rejection_reasons(caplog) == [reason]
    assert books(payment) == before
    assert payment.state == Payment.State.CREATED
    assert alerts() == alerted
    # The genuine one still goes through afterwards.
    assert accepted("wechatpay", deliver(delivery))


def _alipay_forgery(kind: str, delivery: Delivery) -> bytes:
    params = alipay_params(delivery)
    if kind == "bad_signature":
        form = dict(parse_qsl(alipay_form(params).decode()))
        form["total_amount"] = "0.01"  # signed for 10.00
        return urlencode(form).encode()
    if kind == "stale_notify_time":
        return alipay_form({**params, "notify_time": alipay_time(clock.now() - SIX_MINUTES)})
    if kind == "signed_by_someone_else":
        # A well-formed RSA2 signature by the merchant's own key, not Alipay's.
        keys = payment_sandbox().keys.alipay
        signer = AliPay(
            appid=keys.app_id,
            app_private_key_string=keys.app_private_key,
            alipay_public_key_string=keys.alipay_public_key,
            sign_type="RSA2",
        )
        return (signer.sign_data(dict(params)) + "&sign_type=RSA2").encode()
    if kind == "unsigned":
        return urlencode(params).encode()
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("bad_signature", "signature did not verify"),
        ("stale_notify_time", "notify_time outside ±5 minutes"),
        ("signed_by_someone_else", "signature did not verify"),
        ("unsigned", "unsigned, or not RSA2"),
    ],
)
def test_an_alipay_notification_that_is_not_genuine_and_fresh_is_refused_and_changes_nothing(
    alipay_paid, kind, reason, caplog
):
    payment, delivery = alipay_paid
    before, alerted = books(payment), alerts()
    assert refused("alipay", post_alipay(delivery, _alipay_forgery(kind, delivery)))
    assert rejection_reasons(caplog) == [reason]
    assert books(payment) == before
    assert payment.state == Payment.State.CREATED
    assert alerts() == alerted
    assert accepted("alipay", deliver(delivery))


# --- signed by the provider, but not ours: never paid, alerted -----------------------------------


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: r["amount"].update(total=1, payer_total=1), id="amount"),
        pytest.param(lambda r: r.update(mchid="1900000109"), id="mchid"),
        pytest.param(lambda r: r.update(appid="wx0000000000000000"), id="appid"),
    ],
)
def test_a_signed_wechat_notification_that_does_not_match_is_not_paid_and_alerted(
    wechat_paid, change, caplog
):
    payment, delivery = wechat_paid
    before, alerted = books(payment), alerts()
    resource = wechat_resource(delivery)
    change(resource)
    body = wechat_body(
        delivery, resource
    )  # encrypted with the APIv3 key and signed: genuine in form
    assert refused("wechatpay", post_wechat(delivery, body, wechat_signed_headers(body)))
    assert books(payment) == before
    assert payment.state == Payment.State.CREATED
    assert_alerted(caplog, before=alerted)
    assert OutboxEvent.objects.get(topic="payment.alert").payload["merchant_key"] == "sandbox"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            {"total_amount": "0.01", "receipt_amount": "0.01", "buyer_pay_amount": "0.01"},
            id="amount",
        ),
        pytest.param(
            {"app_id": "2021000000000000", "auth_app_id": "2021000000000000"}, id="app_id"
        ),
        pytest.param({"seller_id": "2088000000000000"}, id="seller_id"),
    ],
)
def test_a_signed_alipay_notification_that_does_not_match_is_not_paid_and_alerted(
    alipay_paid, change, caplog
):
    payment, delivery = alipay_paid
    before, alerted = books(payment), alerts()
    assert refused(
        "alipay", post_alipay(delivery, alipay_form({**alipay_params(delivery), **change}))
    )
    assert books(payment) == before
    assert payment.state == Payment.State.CREATED
    assert_alerted(caplog, before=alerted)


def test_a_wechat_refund_notification_for_another_amount_is_refused_and_alerted(
    db, booking_calls, caplog
):
    payment = paid_payment(make_hold("wechat"))
    refund = services.request_refund(
        payment=payment, amount_fen=400, reason="部分退款", refund_no=f"RF{payment.out_trade_no}"
    )
    services.submit_refund(refund_id=refund.id)
    (delivery,) = refund_deliveries(payment)
    before, alerted = books(payment), alerts()
    resource = wechat_resource(delivery)
    resource["amount"]["refund"] = 1000
    body = wechat_body(delivery, resource)
    assert refused("wechatpay", post_wechat(delivery, body, wechat_signed_headers(body)))
    assert books(payment) == before and payment.refunded_fen == 0
    assert_alerted(caplog, before=alerted)
    assert accepted("wechatpay", deliver(delivery))
    payment.refresh_from_db()
    assert payment.refunded_fen == 400


def test_an_alipay_refund_notification_for_more_than_was_paid_is_refused_and_alerted(
    db, booking_calls, caplog
):
    payment = paid_payment(make_hold("alipay"))
    refund = services.request_refund(
        payment=payment, amount_fen=400, reason="部分退款", refund_no=f"RF{payment.out_trade_no}"
    )
    services.submit_refund(refund_id=refund.id)
    (delivery,) = refund_deliveries(payment)
    before, alerted = books(payment), alerts()
    assert payment.refunded_fen == 400
    form = alipay_form({**alipay_params(delivery), "refund_fee": "10.01"})
    assert refused("alipay", post_alipay(delivery, form))
    assert books(payment) == before
    assert_alerted(caplog, before=alerted)


# --- replays ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["wechat_paid", "alipay_paid"])
def test_the_same_signed_delivery_posted_twice_is_refused_the_second_time(
    request, provider, caplog
):
    payment, delivery = request.getfixturevalue(provider)
    captured = delivery.signed()
    assert accepted(payment.provider, client_send(*captured))
    after_first = books(payment)
    assert refused(payment.provider, client_send(*captured))
    assert rejection_reasons(caplog) == ["nonce already used"]
    assert books(payment) == after_first
    assert payment.state == Payment.State.PAID
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1


@pytest.mark.parametrize("provider", ["wechat_paid", "alipay_paid"])
def test_a_resent_notification_signed_afresh_is_accepted_without_a_second_change(request, provider):
    payment, delivery = request.getfixturevalue(provider)
    assert accepted(payment.provider, deliver(delivery))
    after_first = books(payment)
    with clock.travel(dt.timedelta(seconds=15)):  # the provider's next try, re-signed
        assert accepted(payment.provider, deliver(delivery))
    assert books(payment)[:6] == after_first[:6]  # only the new nonce is remembered
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1


# --- concurrency -----------------------------------------------------------------------------------

THREADS = 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("channel", ["wechat", "alipay"])
def test_ten_concurrent_freshly_signed_deliveries_change_state_once(channel, booking_calls):
    payment, _ = start(make_hold(channel))
    delivery = pay(payment)
    signed = []
    for second in range(THREADS):  # as the provider's re-sends: each with its own time and nonce
        with clock.travel(dt.timedelta(seconds=second)):
            signed.append(delivery.signed())
    results = run_concurrently([lambda s=s: client_send(*s) for s in signed])

    assert all(ok for ok, _ in results), results
    assert all(accepted(payment.provider, reply) for _, reply in results)
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1
    assert booking_calls == [("complete_paid_hold", payment.id)]

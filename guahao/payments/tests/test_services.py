"""Opening, closing and refunding payments at both providers (through the sandbox gateway, on the
real SDKs); money is never lost or refunded twice."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings
from django.db import transaction

from guahao import clock
from guahao.errors import Conflict, InvalidInput, UpstreamUnavailable
from guahao.notifications.models import OutboxEvent
from guahao.payments import selectors, services
from guahao.payments.models import Payment, Refund
from guahao.payments.providers import for_payment
from guahao.payments.providers.base import ProviderTimeout
from guahao.payments.tests.helpers import (
    accepted,
    deliver,
    make_hold,
    paid_payment,
    pay,
    refund_deliveries,
    start,
)
from guahao.testing import deliver_notifications, open_pay_page, pay_at_provider, payment_sandbox

pytestmark = pytest.mark.django_db

REFUND_CALL = {"wechatpay": "wechat.refund", "alipay": "alipay.trade.refund"}
CLOSE_CALL = {"wechatpay": "wechat.close", "alipay": "alipay.trade.close"}


@pytest.fixture
def hold(db, channel):
    return make_hold(channel)


def rf(payment: Payment, n: int) -> str:
    """A refund number of its own: the sandbox gateway, shared by the whole run, knows every
    number any test used."""
    return f"RF{payment.out_trade_no}-{n}"


def gateway_state(payment: Payment) -> str:
    trade = payment_sandbox().trade(payment.out_trade_no)
    return trade.state if trade else "absent"


# --- start_payment -------------------------------------------------------------------------------


def test_a_wechat_order_is_opened_at_the_provider_with_its_expiry_and_our_callback(db):
    hold = make_hold("wechat")
    payment, params = services.start_payment(hold=hold)
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED and payment.opened_at is not None
    assert (payment.provider, payment.merchant_key, payment.channel) == (
        "wechatpay",
        "sandbox",
        "wechat",
    )
    assert payment.amount_fen == hold.fee_fen == 1000
    assert payment.out_trade_no.startswith("GH") and len(payment.out_trade_no) <= 32
    assert payment.expires_at == hold.expires_at + services.ORDER_MARGIN
    # H5 pay: WeChat's cashier page, which sends the browser back to the patient's result page.
    assert params.pay_url.startswith(payment_sandbox().url + "/cashier/wechat/")
    assert parse_qs(urlsplit(params.pay_url).query)["redirect_url"] == [
        f"{settings.PUBLIC_URL}/holds/{hold.id}/result"
    ]
    trade = payment_sandbox().trade(payment.out_trade_no)
    assert trade.notify_url == f"{settings.PUBLIC_URL}/api/v1/payments/notify/wechatpay/sandbox"
    assert trade.amount_fen == 1000 and "挂号费" in trade.description
    assert trade.expires_at == payment.expires_at.replace(microsecond=0)


def test_an_alipay_order_is_a_signed_page_url_the_trade_exists_once_opened(db):
    hold = make_hold("alipay")
    payment, params = services.start_payment(hold=hold)
    assert (payment.provider, payment.merchant_key, payment.channel) == (
        "alipay",
        "sandbox",
        "alipay",
    )
    assert params.pay_url.startswith(payment_sandbox().url + "/gateway.do?")
    query = parse_qs(urlsplit(params.pay_url).query)
    assert query["method"] == ["alipay.trade.wap.pay"] and query["sign_type"] == ["RSA2"]
    assert query["notify_url"] == [f"{settings.PUBLIC_URL}/api/v1/payments/notify/alipay/sandbox"]
    assert payment_sandbox().trade(payment.out_trade_no) is None  # no call to Alipay yet

    assert open_pay_page(params.pay_url) == 200
    trade = payment_sandbox().trade(payment.out_trade_no)
    assert trade.amount_fen == 1000 and "挂号费" in trade.description
    assert trade.expires_at == payment.expires_at.replace(microsecond=0)


def test_starting_again_closes_the_earlier_order(hold):
    first, _ = start(hold)
    second, _ = start(hold)
    first.refresh_from_db()
    assert first.state == Payment.State.CLOSED
    assert second.state == Payment.State.CREATED and second.out_trade_no != first.out_trade_no
    assert gateway_state(first) == "CLOSED"
    assert [p.id for p in selectors.payments_of_hold(hold.id)] == [first.id, second.id]


def test_an_alipay_order_closed_before_its_page_was_opened_can_never_be_paid(db):
    hold = make_hold("alipay")
    first, params = services.start_payment(hold=hold)
    services.close_payment(payment_id=first.id)
    first.refresh_from_db()
    assert first.state == Payment.State.CLOSED
    # The patient opens the stale page afterwards: Alipay remembers the number as closed.
    open_pay_page(params.pay_url)
    assert gateway_state(first) == "CLOSED"


def test_a_declined_payment_may_be_paid_again_with_a_new_order(hold, booking_calls):
    first, _ = start(hold)
    pay(first, succeed=False)
    second, _ = start(hold)
    assert accepted(second.provider, deliver(pay(second)))
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, second.state) == (Payment.State.CLOSED, Payment.State.PAID)


def test_an_earlier_order_found_paid_is_settled_not_lost(hold):
    first, _ = start(hold)
    pay(first)  # paid, notification not delivered yet
    with pytest.raises(Conflict) as caught:
        services.start_payment(hold=hold)
    assert caught.value.code == "payment_already_paid"
    first.refresh_from_db()
    assert first.state == Payment.State.PAID and first.provider_trade_no
    assert (
        OutboxEvent.objects.filter(topic="payment.paid", payload={"payment_id": first.id}).count()
        == 1
    )
    assert selectors.payments_of_hold(hold.id).count() == 1


@pytest.mark.parametrize("fault", ["drop", "lost_reply", "error"])
def test_a_wechat_order_whose_opening_gets_no_answer_stays_open_for_the_poller(db, fault):
    hold = make_hold("wechat")
    payment_sandbox().fault("wechat.create", fault)
    with pytest.raises(UpstreamUnavailable) as caught:
        services.start_payment(hold=hold)
    assert caught.value.message == "支付渠道暂时无法响应，请稍后重试"
    # The order may exist at the provider ("lost_reply"): it stays open, to be asked about and closed.
    payment = Payment.objects.get(hold=hold)
    assert payment.state == Payment.State.CREATED and payment.opened_at is None
    with clock.travel(services.OPENING_TIMEOUT + dt.timedelta(seconds=1)):
        assert services.poll_open_payments() == 1
    payment.refresh_from_db()
    assert payment.state == Payment.State.CLOSED
    assert gateway_state(payment) == ("CLOSED" if fault == "lost_reply" else "absent")


def test_a_provider_refusal_is_reported_and_the_order_closed(hold, provider_faults):
    provider_faults.fail_next("create_order", "refuse")
    with pytest.raises(UpstreamUnavailable):
        services.start_payment(hold=hold)
    assert Payment.objects.get(hold=hold).state == Payment.State.CLOSED


def test_a_hold_without_a_channel_cannot_pay(db):
    with pytest.raises(InvalidInput):
        services.start_payment(hold=make_hold(channel=""))


# --- close_payment -------------------------------------------------------------------------------


def test_close_payment_closes_an_unpaid_order_and_is_idempotent(hold):
    payment, _ = start(hold)
    services.close_payment(payment_id=payment.id)
    services.close_payment(payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.state == Payment.State.CLOSED
    assert gateway_state(payment) == "CLOSED"


def test_close_payment_settles_an_order_that_was_paid_meanwhile(hold):
    payment, _ = start(hold)
    pay(payment)
    services.close_payment(payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1


@pytest.mark.parametrize("fault", ["drop", "error"])
def test_close_payment_without_an_answer_is_upstream_unavailable(hold, fault):
    payment, _ = start(hold)
    payment_sandbox().fault(CLOSE_CALL[payment.provider], fault)
    with pytest.raises(UpstreamUnavailable):
        services.close_payment(payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED
    services.close_payment(payment_id=payment.id)  # the caller tries again
    payment.refresh_from_db()
    assert payment.state == Payment.State.CLOSED


def test_a_closed_payment_that_is_paid_after_all_still_settles(hold, booking_calls):
    payment, _ = start(hold)
    Payment.objects.filter(id=payment.id).update(
        state=Payment.State.CLOSED
    )  # closed here, still open there
    assert accepted(payment.provider, deliver(pay(payment)))
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert booking_calls == [("complete_paid_hold", payment.id)]


def test_refresh_payment_learns_of_a_payment_by_query(hold):
    payment, _ = start(hold)
    assert services.refresh_payment(payment_id=payment.id) is False
    pay(payment)
    assert services.refresh_payment(payment_id=payment.id) is True
    assert services.refresh_payment(payment_id=payment.id) is False
    payment.refresh_from_db()
    assert payment.provider_trade_no == payment_sandbox().trade(payment.out_trade_no).transaction_id
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1


# --- refunds -------------------------------------------------------------------------------------


def test_a_wechat_refund_is_requested_submitted_and_settled_by_its_notification(db, booking_calls):
    payment = paid_payment(make_hold("wechat"))
    with transaction.atomic():
        refund = services.request_refund(
            payment=payment,
            amount_fen=1000,
            reason="锁号已超时，自动退款",
            refund_no=rf(payment, 1),
        )
    assert refund.state == Refund.State.PROCESSING
    assert (
        OutboxEvent.objects.filter(topic="refund.requested", payload__refund_id=refund.id).count()
        == 1
    )

    services.submit_refund(refund_id=refund.id)
    refund.refresh_from_db()
    assert refund.state == Refund.State.PROCESSING  # WeChat answered PROCESSING

    (notification,) = refund_deliveries(payment)
    assert accepted("wechatpay", deliver(notification))
    refund.refresh_from_db()
    payment.refresh_from_db()
    assert refund.state == Refund.State.SUCCEEDED and refund.succeeded_at is not None
    assert payment.refunded_fen == 1000
    assert selectors.paid_total(payment) == 0
    assert OutboxEvent.objects.filter(topic="refund.succeeded").count() == 1
    assert ("finish_refund", refund.id) in booking_calls


def test_an_alipay_refund_is_settled_by_its_answer_and_its_notification_changes_nothing(
    db, booking_calls
):
    payment = paid_payment(make_hold("alipay"))
    refund = services.request_refund(
        payment=payment, amount_fen=1000, reason="取消", refund_no=rf(payment, 1)
    )
    services.submit_refund(refund_id=refund.id)
    refund.refresh_from_db()
    payment.refresh_from_db()
    assert refund.state == Refund.State.SUCCEEDED  # fund_change Y: the money moved at once
    assert payment.refunded_fen == 1000

    # Alipay notifies the refund too (TRADE_CLOSED with refund_fee): a refund, never a payment.
    (notification,) = refund_deliveries(payment)
    assert notification.trade_status == "TRADE_CLOSED"
    assert accepted("alipay", deliver(notification))
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID and payment.refunded_fen == 1000
    assert OutboxEvent.objects.filter(topic="refund.succeeded").count() == 1
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1


def test_a_refund_is_idempotent_by_refund_number_and_money_leaves_once(hold, booking_calls):
    payment = paid_payment(hold)
    first = services.request_refund(
        payment=payment, amount_fen=1000, reason="取消", refund_no=rf(payment, 1)
    )
    again = services.request_refund(
        payment=payment, amount_fen=1000, reason="取消", refund_no=rf(payment, 1)
    )
    assert first.id == again.id
    payment_sandbox().fault(REFUND_CALL[payment.provider], "lost_reply")
    with pytest.raises(ProviderTimeout):
        services.submit_refund(refund_id=first.id)
    services.submit_refund(refund_id=first.id)  # the worker retrying after the lost answer
    assert [
        (r.out_refund_no, r.amount_fen) for r in payment_sandbox().refunds(payment.out_trade_no)
    ] == [(rf(payment, 1), 1000)]
    deliver_notifications()
    payment.refresh_from_db()
    assert payment.refunded_fen == 1000
    assert OutboxEvent.objects.filter(topic="refund.requested").count() == 1
    assert OutboxEvent.objects.filter(topic="refund.succeeded").count() == 1


def test_two_refund_numbers_cannot_refund_more_than_was_paid(hold, booking_calls):
    payment = paid_payment(hold)
    services.request_refund(
        payment=payment, amount_fen=700, reason="部分退款", refund_no=rf(payment, 1)
    )
    with pytest.raises(Conflict) as caught:
        services.request_refund(
            payment=payment, amount_fen=700, reason="再退", refund_no=rf(payment, 2)
        )
    assert caught.value.code == "refund_exceeds_paid"
    services.request_refund(
        payment=payment, amount_fen=300, reason="余额", refund_no=rf(payment, 3)
    )
    assert selectors.refundable_fen(payment) == 0


def test_an_unpaid_payment_cannot_be_refunded(hold):
    payment, _ = start(hold)
    with pytest.raises(Conflict):
        services.request_refund(
            payment=payment, amount_fen=1000, reason="x", refund_no=rf(payment, 1)
        )


def test_a_refund_number_reused_for_another_amount_is_a_conflict(hold, booking_calls):
    payment = paid_payment(hold)
    services.request_refund(payment=payment, amount_fen=500, reason="x", refund_no=rf(payment, 1))
    with pytest.raises(Conflict):
        services.request_refund(
            payment=payment, amount_fen=600, reason="x", refund_no=rf(payment, 1)
        )


def test_a_refund_refused_by_the_provider_is_failed_for_the_operators(
    hold, booking_calls, provider_faults
):
    payment = paid_payment(hold)
    refund = services.request_refund(
        payment=payment, amount_fen=1000, reason="x", refund_no=rf(payment, 1)
    )
    provider_faults.fail_next("refund", "refuse")
    services.submit_refund(refund_id=refund.id)
    refund.refresh_from_db()
    assert refund.state == Refund.State.FAILED
    assert OutboxEvent.objects.filter(topic="refund.failed").count() == 1
    # A failed refund no longer holds money back.
    assert selectors.refundable_fen(payment) == 1000
    assert payment_sandbox().refunds(payment.out_trade_no) == []


@pytest.mark.parametrize("fault", ["drop", "lost_reply", "error"])
def test_a_refund_without_an_answer_stays_processing_and_reraises(hold, booking_calls, fault):
    payment = paid_payment(hold)
    refund = services.request_refund(
        payment=payment, amount_fen=1000, reason="x", refund_no=rf(payment, 1)
    )
    payment_sandbox().fault(REFUND_CALL[payment.provider], fault)
    with pytest.raises(ProviderTimeout):
        services.submit_refund(refund_id=refund.id)
    refund.refresh_from_db()
    assert refund.state == Refund.State.PROCESSING
    assert len(payment_sandbox().refunds(payment.out_trade_no)) == (
        1 if fault == "lost_reply" else 0
    )


def test_a_wechat_refund_finishes_only_after_the_banks_delay(db, monkeypatch, booking_calls):
    monkeypatch.setattr(payment_sandbox(), "refund_delay", dt.timedelta(seconds=3))
    payment = paid_payment(make_hold("wechat"))
    refund = services.request_refund(
        payment=payment, amount_fen=1000, reason="x", refund_no=rf(payment, 1)
    )
    services.submit_refund(refund_id=refund.id)
    deliver_notifications()
    assert refund_deliveries(payment) == []
    adapter = for_payment(payment)
    assert (
        adapter.query_refund(rf(payment, 1), out_trade_no=payment.out_trade_no).state
        == "PROCESSING"
    )
    refund.refresh_from_db()
    assert refund.state == Refund.State.PROCESSING
    with clock.travel(dt.timedelta(seconds=3)):
        deliver_notifications()
        assert (
            adapter.query_refund(rf(payment, 1), out_trade_no=payment.out_trade_no).state
            == "SUCCESS"
        )
    refund.refresh_from_db()
    assert refund.state == Refund.State.SUCCEEDED
    assert [d.delivered_at is not None for d in refund_deliveries(payment)] == [True]


def test_a_paid_order_is_paid_once_at_the_provider_too(hold):
    payment, _ = start(hold)
    pay_at_provider(payment.out_trade_no)
    pay_at_provider(payment.out_trade_no)  # a second tap on 确认支付
    assert (
        len([d for d in payment_sandbox().notifications(payment.out_trade_no) if d.kind == "trade"])
        == 1
    )

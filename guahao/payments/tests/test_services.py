"""Opening, closing and refunding payments; money is never lost or refunded twice."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.db import transaction

from guahao import clock
from guahao.errors import Conflict, InvalidInput, UpstreamUnavailable
from guahao.notifications.models import OutboxEvent
from guahao.payments import selectors, services
from guahao.payments.models import Payment, Refund, SandboxNotification, SandboxTrade
from guahao.payments.providers import sandbox
from guahao.payments.providers.base import ProviderRefused, ProviderTimeout
from guahao.payments.providers.sandbox import SandboxProvider, deliver_due_notifications
from guahao.payments.tests.helpers import client_send, make_hold, pay_in_sandbox

pytestmark = pytest.mark.django_db


def paid_payment(hold) -> Payment:
    payment, _ = services.start_payment(hold=hold)
    pay_in_sandbox(payment)
    deliver_due_notifications(send=client_send)
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    return payment


class Failing(SandboxProvider):
    """The sandbox, except that one operation fails the given way."""

    def __init__(self, operation: str, error: Exception):
        self.operation, self.error = operation, error

    def _fail_if(self, operation: str) -> None:
        if operation == self.operation:
            raise self.error

    def create_order(self, request):
        self._fail_if("create_order")
        return super().create_order(request)

    def close_order(self, out_trade_no):
        self._fail_if("close_order")
        return super().close_order(out_trade_no)

    def refund(self, **kwargs):
        self._fail_if("refund")
        return super().refund(**kwargs)


def use_provider(monkeypatch, gateway: SandboxProvider) -> None:
    monkeypatch.setattr(services, "provider", lambda name=None: gateway)


# --- start_payment -------------------------------------------------------------------------------


def test_start_payment_opens_an_order_at_the_provider(hold):
    payment, params = services.start_payment(hold=hold)
    assert payment.state == Payment.State.CREATED
    assert payment.amount_fen == hold.fee_fen == 1000
    assert payment.provider == "sandbox" and payment.channel == "wechat"
    assert payment.out_trade_no.startswith("GH") and len(payment.out_trade_no) <= 32
    assert params.pay_url == f"{settings.PUBLIC_URL}/sandbox/pay/{payment.out_trade_no}"
    trade = SandboxTrade.objects.get(out_trade_no=payment.out_trade_no)
    assert trade.notify_url == f"{settings.PUBLIC_URL}/api/v1/payments/notify/sandbox"
    assert trade.amount_fen == 1000 and "挂号费" in trade.description


def test_starting_again_closes_the_earlier_order(hold):
    first, _ = services.start_payment(hold=hold)
    second, _ = services.start_payment(hold=hold)
    first.refresh_from_db()
    assert first.state == Payment.State.CLOSED
    assert second.state == Payment.State.CREATED and second.out_trade_no != first.out_trade_no
    assert SandboxTrade.objects.get(out_trade_no=first.out_trade_no).state == SandboxTrade.State.CLOSED
    assert [p.id for p in selectors.payments_of_hold(hold.id)] == [first.id, second.id]


def test_a_declined_payment_may_be_paid_again_with_a_new_order(hold):
    first, _ = services.start_payment(hold=hold)
    sandbox.pay(first.out_trade_no, succeed=False)
    second, _ = services.start_payment(hold=hold)
    sandbox.pay(second.out_trade_no)
    deliver_due_notifications(send=client_send)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, second.state) == (Payment.State.CLOSED, Payment.State.PAID)


def test_an_earlier_order_found_paid_is_settled_not_lost(hold):
    first, _ = services.start_payment(hold=hold)
    sandbox.pay(first.out_trade_no)  # paid, notification not delivered yet
    with pytest.raises(Conflict) as caught:
        services.start_payment(hold=hold)
    assert caught.value.code == "payment_already_paid"
    first.refresh_from_db()
    assert first.state == Payment.State.PAID
    assert OutboxEvent.objects.filter(topic="payment.paid", payload={"payment_id": first.id}).count() == 1
    assert selectors.payments_of_hold(hold.id).count() == 1


def test_a_provider_timeout_is_reported_without_retrying(hold, monkeypatch):
    use_provider(monkeypatch, Failing("create_order", ProviderTimeout("no answer")))
    with pytest.raises(UpstreamUnavailable) as caught:
        services.start_payment(hold=hold)
    assert caught.value.message == "支付渠道暂时无法响应，请稍后重试"
    # The order may exist at the provider: it stays open, to be closed later.
    assert Payment.objects.get(hold=hold).state == Payment.State.CREATED


def test_a_provider_refusal_is_reported_and_the_order_closed(hold, monkeypatch):
    use_provider(monkeypatch, Failing("create_order", ProviderRefused("SYSTEM_ERROR")))
    with pytest.raises(UpstreamUnavailable):
        services.start_payment(hold=hold)
    assert Payment.objects.get(hold=hold).state == Payment.State.CLOSED


def test_a_hold_without_a_channel_cannot_pay(db):
    with pytest.raises(InvalidInput):
        services.start_payment(hold=make_hold(channel=""))


# --- close_payment -------------------------------------------------------------------------------


def test_close_payment_closes_an_unpaid_order_and_is_idempotent(hold):
    payment, _ = services.start_payment(hold=hold)
    services.close_payment(payment_id=payment.id)
    services.close_payment(payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.state == Payment.State.CLOSED


def test_close_payment_settles_an_order_that_was_paid_meanwhile(hold):
    payment, _ = services.start_payment(hold=hold)
    sandbox.pay(payment.out_trade_no)
    services.close_payment(payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID


def test_close_payment_timeout_is_upstream_unavailable(hold, monkeypatch):
    payment, _ = services.start_payment(hold=hold)
    monkeypatch.setattr(services, "provider", lambda name=None: Failing("close_order", ProviderTimeout()))
    with pytest.raises(UpstreamUnavailable):
        services.close_payment(payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED


def test_a_closed_payment_that_is_paid_after_all_still_settles(hold, booking_calls):
    payment, _ = services.start_payment(hold=hold)
    Payment.objects.filter(id=payment.id).update(state=Payment.State.CLOSED)  # closed here, paid there
    sandbox.pay(payment.out_trade_no)
    deliver_due_notifications(send=client_send)
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert booking_calls == [("complete_paid_hold", payment.id)]


def test_refresh_payment_learns_of_a_payment_by_query(hold):
    payment, _ = services.start_payment(hold=hold)
    assert services.refresh_payment(payment_id=payment.id) is False
    sandbox.pay(payment.out_trade_no)
    assert services.refresh_payment(payment_id=payment.id) is True
    assert services.refresh_payment(payment_id=payment.id) is False
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1


# --- refunds -------------------------------------------------------------------------------------


def test_a_refund_is_requested_submitted_and_settled_by_its_notification(hold, booking_calls):
    payment = paid_payment(hold)
    with transaction.atomic():
        refund = services.request_refund(payment=payment, amount_fen=1000, reason="锁号已超时，自动退款", refund_no="RF1")
    assert refund.state == Refund.State.PROCESSING
    assert OutboxEvent.objects.filter(topic="refund.requested", payload__refund_id=refund.id).count() == 1

    services.submit_refund(refund_id=refund.id)
    refund.refresh_from_db()
    assert refund.state == Refund.State.PROCESSING  # the provider answered PROCESSING

    assert deliver_due_notifications(send=client_send) == 1
    refund.refresh_from_db()
    payment.refresh_from_db()
    assert refund.state == Refund.State.SUCCEEDED and refund.succeeded_at is not None
    assert payment.refunded_fen == 1000
    assert selectors.paid_total(payment) == 0
    assert OutboxEvent.objects.filter(topic="refund.succeeded").count() == 1
    assert ("finish_refund", refund.id) in booking_calls


def test_a_refund_is_idempotent_by_refund_number_and_money_leaves_once(hold, booking_calls):
    payment = paid_payment(hold)
    first = services.request_refund(payment=payment, amount_fen=1000, reason="取消", refund_no="RF1")
    again = services.request_refund(payment=payment, amount_fen=1000, reason="取消", refund_no="RF1")
    assert first.id == again.id
    services.submit_refund(refund_id=first.id)
    Refund.objects.filter(id=first.id).update(state=Refund.State.PROCESSING)
    services.submit_refund(refund_id=first.id)  # the worker retrying after a lost answer
    assert SandboxNotification.objects.filter(kind="REFUND.SUCCESS").count() == 1
    deliver_due_notifications(send=client_send)
    payment.refresh_from_db()
    assert payment.refunded_fen == 1000
    assert OutboxEvent.objects.filter(topic="refund.requested").count() == 1
    assert OutboxEvent.objects.filter(topic="refund.succeeded").count() == 1


def test_two_refund_numbers_cannot_refund_more_than_was_paid(hold):
    payment = paid_payment(hold)
    services.request_refund(payment=payment, amount_fen=700, reason="部分退款", refund_no="RF1")
    with pytest.raises(Conflict) as caught:
        services.request_refund(payment=payment, amount_fen=700, reason="再退", refund_no="RF2")
    assert caught.value.code == "refund_exceeds_paid"
    services.request_refund(payment=payment, amount_fen=300, reason="余额", refund_no="RF3")
    assert selectors.refundable_fen(payment) == 0


def test_an_unpaid_payment_cannot_be_refunded(hold):
    payment, _ = services.start_payment(hold=hold)
    with pytest.raises(Conflict):
        services.request_refund(payment=payment, amount_fen=1000, reason="x", refund_no="RF1")


def test_a_refund_number_reused_for_another_amount_is_a_conflict(hold):
    payment = paid_payment(hold)
    services.request_refund(payment=payment, amount_fen=500, reason="x", refund_no="RF1")
    with pytest.raises(Conflict):
        services.request_refund(payment=payment, amount_fen=600, reason="x", refund_no="RF1")


def test_a_refund_refused_by_the_provider_is_failed_for_the_operators(hold, monkeypatch):
    payment = paid_payment(hold)
    refund = services.request_refund(payment=payment, amount_fen=1000, reason="x", refund_no="RF1")
    use_provider(monkeypatch, Failing("refund", ProviderRefused("NOT_ENOUGH")))
    services.submit_refund(refund_id=refund.id)
    refund.refresh_from_db()
    assert refund.state == Refund.State.FAILED
    assert OutboxEvent.objects.filter(topic="refund.failed").count() == 1
    # A failed refund no longer holds money back.
    assert selectors.refundable_fen(payment) == 1000


def test_a_refund_timeout_leaves_it_processing_and_reraises(hold, monkeypatch):
    payment = paid_payment(hold)
    refund = services.request_refund(payment=payment, amount_fen=1000, reason="x", refund_no="RF1")
    use_provider(monkeypatch, Failing("refund", ProviderTimeout()))
    with pytest.raises(ProviderTimeout):
        services.submit_refund(refund_id=refund.id)
    refund.refresh_from_db()
    assert refund.state == Refund.State.PROCESSING


def test_a_refund_notification_for_another_amount_is_rejected(hold, booking_calls):
    from guahao.payments.providers.sandbox import signed_headers
    from guahao.payments.tests.helpers import post_notification, tampered

    payment = paid_payment(hold)
    refund = services.request_refund(payment=payment, amount_fen=400, reason="x", refund_no="RF1")
    services.submit_refund(refund_id=refund.id)
    queued = SandboxNotification.objects.get(kind="REFUND.SUCCESS")
    body = tampered(queued.body.encode(), lambda d: d["resource"]["amount"].update(refund=1000))
    assert post_notification(body, signed_headers(body)).status_code == 401
    payment.refresh_from_db()
    assert payment.refunded_fen == 0


def test_a_refund_finishes_only_after_the_banks_delay(hold, monkeypatch, booking_calls):
    monkeypatch.setattr(sandbox, "REFUND_DELAY", dt.timedelta(seconds=3))
    payment = paid_payment(hold)
    refund = services.request_refund(payment=payment, amount_fen=1000, reason="x", refund_no="RF1")
    services.submit_refund(refund_id=refund.id)
    assert deliver_due_notifications(send=client_send) == 0
    assert SandboxProvider().query_refund("RF1").state == "PROCESSING"
    refund.refresh_from_db()
    assert refund.state == Refund.State.PROCESSING
    with clock.travel(dt.timedelta(seconds=3)):
        assert deliver_due_notifications(send=client_send) == 1
    assert SandboxProvider().query_refund("RF1").state == "SUCCESS"
    refund.refresh_from_db()
    assert refund.state == Refund.State.SUCCEEDED

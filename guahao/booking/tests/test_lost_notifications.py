"""Payment notifications that never arrive: a paid order still becomes a registration (the poller, or
the patient's "我已支付" button), an order of a hold that is over is closed so it cannot be paid, and
money that lands too late comes back exactly once. The payment sandbox's notifications reach a
callback that always answers 500, as an unreachable server would, so the provider keeps them for
its re-sends."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.notifications.models import OutboxEvent
from guahao.patients.models import Account
from guahao.payments import providers
from guahao.payments import services as payments
from guahao.payments.models import Payment, Refund
from guahao.payments.providers.base import PayParams
from guahao.payments.sandbox import TradeClosed
from guahao.testing import (
    api_client,
    make_account,
    pay_at_provider,
    pay_on_cashier,
    payment_sandbox,
    run_worker,
)
from guahao.worker import run_once

from .conftest import press_pay_on_an_open_page

PAST_FIRST_POLL = payments.FIRST_POLL + dt.timedelta(seconds=1)
TRANSACTION_SUCCESS = "TRANSACTION.SUCCESS"
REFUND_SUCCESS = "REFUND.SUCCESS"


def unreachable(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """Our callback as the provider sees it while it is down: every delivery fails."""
    return 500, b""


def run_worker_without_notifications() -> None:
    """Worker passes until idle, every notification the provider sends failing to arrive."""
    for _ in range(50):
        if payment_sandbox().deliver_due(send=unreachable) + run_once(worker_id="t") == 0:
            return
    raise AssertionError("the worker never went idle")


def paying(world, booker) -> tuple[Hold, Payment, PayParams]:
    """The patient holds the first number, confirms a visiting patient and opens a payment order."""
    account, patient = booker
    hold = services.hold_slot(
        account=account, slot_id=world.session.slots.order_by("seq").first().id
    )
    services.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False
    )
    payment, params = services.pay_hold(account=account, hold_id=hold.id)
    return hold, payment, params


def cashier(params: PayParams) -> int:
    """The patient taps 确认支付 on the provider's cashier page; the status of its answer (303: back
    to our result page)."""
    status, _ = pay_on_cashier(params.pay_url)
    return status


def hold_seen_by(account: Account, hold: Hold) -> dict:
    response = api_client(account).get(f"/api/v1/holds/{hold.id}")
    assert response.status_code == 200, response.content
    return response.json()


def registrations_seen_by(account: Account) -> list[dict]:
    response = api_client(account).get("/api/v1/registrations")
    assert response.status_code == 200, response.content
    return response.json()


def undelivered(payment: Payment, event: str) -> bool:
    """The provider has `event` notifications of the order, and none of them reached us."""
    sent = [n for n in payment_sandbox().notifications(payment.out_trade_no) if n.event == event]
    return bool(sent) and all(n.delivered_at is None for n in sent)


# --- a paid order still becomes a registration ---------------------------------------------------


def test_a_paid_order_whose_notification_is_lost_is_registered_by_the_poller(world, booker):
    account = booker[0]
    hold, payment, params = paying(world, booker)
    assert cashier(params) == 303
    run_worker_without_notifications()
    assert hold_seen_by(account, hold)["state"] == "paying"  # we have not heard of the payment yet

    with clock.travel(PAST_FIRST_POLL):
        run_worker_without_notifications()
        assert clock.now() < hold.expires_at  # well inside the lock period
        seen = hold_seen_by(account, hold)
        assert seen["state"] == "succeeded" and seen["registration_id"] is not None
        [registration] = registrations_seen_by(account)
        assert registration["id"] == seen["registration_id"] and registration["status"] == "booked"
    assert Registration.objects.get(hold=hold).status == RegistrationStatus.BOOKED
    assert not Refund.objects.exists()
    assert undelivered(payment, TRANSACTION_SUCCESS)  # learned by the poller's query alone


def test_a_payment_late_in_the_lock_whose_notification_is_lost_is_still_registered(world, booker):
    """The poller must ask before the hold lapses, not only when the order expires: money paid in
    the lock's last minutes buys the registration, not a refund."""
    hold, payment, params = paying(world, booker)
    lock = hold.expires_at - clock.now()
    paid_at = lock - dt.timedelta(seconds=90)  # the patient pays with a minute and a half to spare
    elapsed = dt.timedelta(0)
    while elapsed < lock + dt.timedelta(minutes=1):  # a worker running every 30 seconds
        elapsed += dt.timedelta(seconds=30)
        with clock.travel(elapsed):
            if paid_at <= elapsed < paid_at + dt.timedelta(seconds=30):
                assert cashier(params) == 303
            run_worker_without_notifications()
    assert Hold.objects.get(id=hold.id).state == HoldState.SUCCEEDED
    assert Registration.objects.filter(hold=hold).exists()
    assert not Refund.objects.exists()


def test_i_have_paid_registers_a_paid_order_at_once_without_its_notification(world, booker):
    account = booker[0]
    hold, payment, params = paying(world, booker)
    assert cashier(params) == 303  # its notification is not delivered before the patient asks

    response = api_client(account).post(f"/api/v1/holds/{hold.id}/pay/check")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "succeeded" and body["registration_id"] is not None
    assert body["remaining_seconds"] == 0

    # Pressing it again, the worker's own passes and the late notification change nothing.
    assert (
        api_client(account).post(f"/api/v1/holds/{hold.id}/pay/check").json()["state"]
        == "succeeded"
    )
    with clock.travel(PAST_FIRST_POLL):
        run_worker()
    assert Registration.objects.filter(hold=hold).count() == 1
    assert not Refund.objects.exists()
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID and payment.refunded_fen == 0


def test_i_have_paid_on_another_accounts_hold_is_not_found(world, booker):
    hold, payment, params = paying(world, booker)
    assert cashier(params) == 303
    stranger = api_client(make_account())

    response = stranger.post(f"/api/v1/holds/{hold.id}/pay/check")
    assert response.status_code == 404
    # Exactly what a hold that does not exist answers: nothing tells the stranger it is there.
    assert response.json() == stranger.post("/api/v1/holds/99999999/pay/check").json()
    assert response.json()["code"] == "hold_not_found"
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED  # the stranger's request settled nothing


def test_paying_again_after_a_lost_notification_does_not_take_the_money_twice(world, booker):
    account = booker[0]
    hold, payment, params = paying(world, booker)
    assert cashier(params) == 303
    run_worker_without_notifications()

    # No word of the payment reached us, so the patient taps 支付 again.
    response = api_client(account).post(f"/api/v1/holds/{hold.id}/pay")
    assert response.status_code == 409
    assert response.json()["code"] == "payment_already_paid"
    assert "您已完成支付" in response.json()["message"]
    assert Payment.objects.filter(hold=hold).count() == 1  # no second order to pay
    assert payment_sandbox().trade(payment.out_trade_no).state == "SUCCESS"

    run_worker_without_notifications()
    assert hold_seen_by(account, hold)["state"] == "succeeded"
    assert Registration.objects.filter(hold=hold).count() == 1
    assert not Refund.objects.exists()


def test_i_have_paid_while_the_provider_does_not_answer_is_503_in_chinese(world, booker):
    account = booker[0]
    hold, payment, params = paying(world, booker)
    assert cashier(params) == 303

    payment_sandbox().fault("wechat.query", "drop")  # the order query gets no answer
    response = api_client(account).post(f"/api/v1/holds/{hold.id}/pay/check")
    assert response.status_code == 503
    assert response.json() == {
        "code": "payment_unavailable",
        "message": "支付渠道暂时无法响应，请稍后重试",
    }
    assert hold_seen_by(account, hold)["state"] == "paying"  # nothing decided on a non-answer

    # The patient tries again.
    response = api_client(account).post(f"/api/v1/holds/{hold.id}/pay/check")
    assert response.status_code == 200 and response.json()["state"] == "succeeded"


# --- orders of a hold that is over -----------------------------------------------------------------


def test_the_order_of_a_lapsed_hold_taken_by_the_next_patient_is_closed_and_cannot_be_paid(
    world, booker
):
    account = booker[0]
    hold, payment, params = paying(world, booker)
    with clock.travel(hold.expires_at - clock.now() + dt.timedelta(minutes=1)):
        assert clock.now() < payment.expires_at  # the provider would still take the money
        next_patient = services.hold_slot(account=make_account(), slot_id=hold.slot_id)
        run_worker_without_notifications()

        tidy = OutboxEvent.objects.get(topic="hold.expired", payload__hold_id=hold.id)
        assert tidy.processed_at is not None and tidy.attempts == 0
        payment.refresh_from_db()
        assert payment.state == Payment.State.CLOSED
        trade = payment_sandbox().trade(payment.out_trade_no)
        assert trade.state == "CLOSED" and trade.expires_at > clock.now()  # closed by us

        with pytest.raises(TradeClosed):
            pay_at_provider(payment.out_trade_no)
        # The cashier page the patient left open refuses the money too.
        status, page = press_pay_on_an_open_page(params.pay_url)
        assert status == 409 and "订单已关闭" in page
        response = api_client(account).post(f"/api/v1/holds/{hold.id}/pay")
        assert response.status_code == 409 and response.json()["code"] == "hold_expired"
        assert hold_seen_by(account, hold)["state"] == "expired"
        assert Hold.objects.get(id=next_patient.id).state == HoldState.HELD
    assert not Registration.objects.filter(hold=hold).exists()
    assert not Refund.objects.exists()  # no money was taken


def test_money_paid_in_the_order_margin_after_the_hold_lapsed_comes_back_exactly_once(
    world, booker, monkeypatch, caplog
):
    account = booker[0]
    hold, payment, params = paying(world, booker)
    settled_by_query: list[int] = []
    refresh = payments.refresh_payment

    def recording_refresh(*, payment_id: int) -> bool:
        settled = refresh(payment_id=payment_id)
        if settled:
            settled_by_query.append(payment_id)
        return settled

    monkeypatch.setattr(payments, "refresh_payment", recording_refresh)
    # The bank takes half a minute to pay the refund out: until then WeChat answers PROCESSING.
    monkeypatch.setattr(payment_sandbox(), "refund_delay", dt.timedelta(seconds=30))
    lapsed = hold.expires_at - clock.now() + dt.timedelta(seconds=30)
    with clock.travel(lapsed), caplog.at_level(logging.INFO, logger="guahao.messages"):
        assert clock.now() < payment.expires_at
        assert cashier(params) == 303  # the patient pays a moment too late
        # The sweeps expire the hold and the poller finds the payment by query; booking refunds it.
        run_worker_without_notifications()
        assert settled_by_query == [payment.id]
        payment.refresh_from_db()
        assert payment.state == Payment.State.PAID
        refund = Refund.objects.get(payment=payment)
        assert refund.state == Refund.State.PROCESSING and refund.reason == "锁号已超时，自动退款"
        assert hold_seen_by(account, hold)["state"] == "expired"
    told = [r.text for r in caplog.records if r.name == "guahao.messages"]
    assert any("预约未成功，已支付的费用将原路退回" in text for text in told), told

    with clock.travel(lapsed + PAST_FIRST_POLL):
        run_worker_without_notifications()  # the refund's notification is lost too: the poller asks
    refund.refresh_from_db()
    payment.refresh_from_db()
    assert refund.state == Refund.State.SUCCEEDED
    assert payment.refunded_fen == payment.amount_fen == 2500
    assert undelivered(payment, TRANSACTION_SUCCESS) and undelivered(payment, REFUND_SUCCESS)

    # Our callback is back and the provider's re-sends finally arrive: nothing happens twice.
    with clock.travel(lapsed + dt.timedelta(hours=1)):
        run_worker()
    assert all(
        n.delivered_at is not None for n in payment_sandbox().notifications(payment.out_trade_no)
    )
    payment.refresh_from_db()
    assert payment.refunded_fen == 2500
    assert Refund.objects.filter(payment=payment).count() == 1
    assert len(payment_sandbox().refunds(payment.out_trade_no)) == 1
    assert (
        OutboxEvent.objects.filter(topic="payment.paid", payload__payment_id=payment.id).count()
        == 1
    )
    assert not Registration.objects.filter(hold=hold).exists()
    assert registrations_seen_by(account) == []


def test_an_order_past_its_expiry_cannot_be_paid_and_is_reported_closed(world, booker):
    account = booker[0]
    hold, payment, params = paying(world, booker)
    assert payment.expires_at == hold.expires_at + payments.ORDER_MARGIN
    with clock.travel(payment.expires_at - clock.now() + dt.timedelta(seconds=1)):
        with pytest.raises(TradeClosed):
            pay_at_provider(payment.out_trade_no)
        status, page = press_pay_on_an_open_page(params.pay_url)
        assert status == 409 and "订单已关闭" in page
        assert providers.for_payment(payment).query_order(payment.out_trade_no).state == "CLOSED"
        run_worker_without_notifications()
        payment.refresh_from_db()
        assert payment.state == Payment.State.CLOSED
        assert hold_seen_by(account, hold)["state"] == "expired"
    # Nothing was paid, so nothing to announce.
    assert payment_sandbox().notifications(payment.out_trade_no) == []
    assert not Refund.objects.exists()

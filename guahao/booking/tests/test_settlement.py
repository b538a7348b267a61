"""Every paid payment ends as exactly one registration or exactly one refund."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState
from guahao.payments.models import Payment, Refund
from guahao.payments.providers.base import ProviderRefused, RefundStatus
from guahao.payments.providers.faulty import FaultyProvider
from guahao.payments.sandbox import ALIPAY_RETRY
from guahao.scheduling.models import Slot
from guahao.testing import (
    client_send,
    make_account,
    pay_on_cashier,
    payment_sandbox,
    run_concurrently,
    run_worker,
    wrap_provider,
)

from .conftest import press_pay_on_an_open_page


def confirmed_hold(world, booker) -> Hold:
    account, patient = booker
    hold = services.hold_slot(account=account, slot_id=world.session.slots.first().id)
    return services.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel="alipay", insurance=False
    )


def pay_on_the_cashier(pay_url: str) -> None:
    """The patient opens the provider's pay page and pays; the browser is sent back to us."""
    status, _ = pay_on_cashier(pay_url)
    assert status == 303


def paid_notification(payment: Payment):
    """The provider's notification that the order is paid (guahao.payments.sandbox.Delivery)."""
    [notice] = [
        n for n in payment_sandbox().notifications(payment.out_trade_no) if n.kind == "trade"
    ]
    return notice


def test_payment_after_expiry_is_refunded_exactly_once(world, booker):
    hold = confirmed_hold(world, booker)
    payment, params = services.pay_hold(account=booker[0], hold_id=hold.id)
    with clock.travel(dt.timedelta(minutes=10, seconds=30)):
        pay_on_the_cashier(params.pay_url)
        run_worker()
        hold.refresh_from_db()
        assert hold.state == HoldState.EXPIRED
        assert not Registration.objects.filter(hold=hold).exists()
        refunds = Refund.objects.filter(payment=payment)
        assert refunds.count() == 1
        assert refunds.get().state == Refund.State.SUCCEEDED
        # The provider re-sends the paid notification (it thinks we missed it): still one refund.
        with clock.travel(ALIPAY_RETRY[0]):
            assert client_send(*paid_notification(payment).signed()) == (200, b"success")
            run_worker()
        assert Refund.objects.filter(payment=payment).count() == 1
        payment.refresh_from_db()
        assert payment.refunded_fen == payment.amount_fen


def test_slot_of_an_expired_paying_hold_goes_to_the_next_patient(world, booker):
    hold = confirmed_hold(world, booker)
    services.pay_hold(account=booker[0], hold_id=hold.id)
    with clock.travel(dt.timedelta(minutes=11)):
        other = services.hold_slot(account=make_account(), slot_id=hold.slot_id)
        assert other.state == HoldState.HELD


def test_a_second_paid_order_for_the_same_hold_is_refunded(world, booker):
    hold = confirmed_hold(world, booker)
    first, first_params = services.pay_hold(account=booker[0], hold_id=hold.id)
    second, second_params = services.pay_hold(account=booker[0], hold_id=hold.id)
    pay_on_the_cashier(second_params.pay_url)
    run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.SUCCEEDED and hold.payment_id == second.id
    # The first order was closed when the patient paid again; if it had been paid anyway, the
    # money must come back rather than buy a second number.
    first.refresh_from_db()
    assert first.state == Payment.State.CLOSED
    assert Registration.objects.filter(hold=hold).count() == 1


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_deliveries_of_the_paid_notification_make_one_registration(world, booker):
    hold = confirmed_hold(world, booker)
    payment, params = services.pay_hold(account=booker[0], hold_id=hold.id)
    pay_on_the_cashier(params.pay_url)
    notice = paid_notification(payment)

    # Ten re-sends, each signed afresh (Alipay's notify_time has whole seconds: one apart).
    deliveries = []
    for second in range(10):
        with clock.travel(dt.timedelta(seconds=second)):
            deliveries.append(notice.signed())
    results = run_concurrently([lambda d=d: client_send(*d) for d in deliveries])
    assert all(ok and answer == (200, b"success") for ok, answer in results), results
    run_worker()

    assert Registration.objects.filter(hold=hold).count() == 1
    assert Hold.objects.get(id=hold.id).state == HoldState.SUCCEEDED
    assert Payment.objects.get(id=payment.id).state == Payment.State.PAID
    assert not Refund.objects.filter(payment=payment).exists()
    assert Slot.objects.get(id=hold.slot_id).state == Slot.State.BOOKED


class RefusesRefunds(FaultyProvider):
    """The provider as it answers a merchant whose account cannot cover refunds."""

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundStatus:
        raise ProviderRefused(
            "ACQ.SELLER_BALANCE_NOT_ENOUGH: 账户余额不足", code="ACQ.SELLER_BALANCE_NOT_ENOUGH"
        )


@pytest.mark.leaves_ledger_finding
def test_a_refund_the_provider_refuses_tells_the_patient_and_the_operators(
    world, booker, caplog, monkeypatch
):
    import logging

    hold = confirmed_hold(world, booker)
    payment, params = services.pay_hold(account=booker[0], hold_id=hold.id)
    wrap_provider(monkeypatch, RefusesRefunds)
    with clock.travel(dt.timedelta(minutes=11)), caplog.at_level(logging.INFO):
        pay_on_the_cashier(params.pay_url)
        run_worker()
    assert Refund.objects.get(payment=payment).state == Refund.State.FAILED
    assert any(r.levelname == "ERROR" and "operator" in r.getMessage() for r in caplog.records)
    messages = [r for r in caplog.records if r.name == "guahao.messages"]
    assert any("人工处理" in r.text for r in messages)
    # And the nightly check puts it in front of the operators, naming the refund.
    from guahao.ledger import find_violations

    refund = Refund.objects.get(payment=payment)
    assert [(v.kind, v.row) for v in find_violations()] == [
        ("refund_failed", f"payments_refund#{refund.id}")
    ]


def booked(world, booker) -> Registration:
    hold = confirmed_hold(world, booker)
    _, params = services.pay_hold(account=booker[0], hold_id=hold.id)
    pay_on_the_cashier(params.pay_url)
    run_worker()
    return Registration.objects.get(hold=hold)


def test_suspending_a_session_cancels_and_refunds_its_registrations(world, booker, caplog):
    import logging

    from guahao.scheduling.services import suspend_session

    registration = booked(world, booker)
    other = make_account()
    from .conftest import ready_to_book

    other_patient = ready_to_book(other, world.hospital, name="钱七")
    live = services.hold_slot(account=other, slot_id=world.session.slots.order_by("seq")[2].id)
    services.confirm_hold(
        account=other,
        hold_id=live.id,
        patient_id=other_patient.id,
        channel="wechat",
        insurance=False,
    )
    _, late_params = services.pay_hold(account=other, hold_id=live.id)

    with caplog.at_level(logging.INFO, logger="guahao.messages"):
        suspend_session(session=world.session, reason="专家外出会诊")
        run_worker()
    registration.refresh_from_db()
    assert registration.status == "cancelled"
    assert Refund.objects.get(payment=registration.hold.payment).state == Refund.State.SUCCEEDED
    assert any("专家外出会诊" in r.text for r in caplog.records if r.name == "guahao.messages")
    live.refresh_from_db()
    assert live.state == HoldState.FAILED
    # The ended hold's payment order was closed with it: the patient cannot pay for it any more.
    status, page = press_pay_on_an_open_page(late_params.pay_url)
    assert status == 409 and "订单已关闭" in page
    assert not Registration.objects.filter(hold=live).exists()


def test_a_payment_landing_after_a_suspension_is_refunded(world, booker):
    from guahao.scheduling.models import Session

    hold = confirmed_hold(world, booker)
    payment, params = services.pay_hold(account=booker[0], hold_id=hold.id)
    # 停诊 lands between the patient's payment and its notification (no worker pass in between).
    Session.objects.filter(id=world.session.id).update(status=Session.Status.SUSPENDED)
    pay_on_the_cashier(params.pay_url)
    assert client_send(*paid_notification(payment).signed()) == (200, b"success")
    assert not Registration.objects.filter(hold=hold).exists()
    assert Refund.objects.get(payment=payment).reason == "医生停诊，自动退款"

"""Refund recovery: a refund whose notification is lost, that the provider refuses, or whose submit
never reached the provider still ends with the patient's money back exactly once, and the operators
see and retry what needs a person (`guahao refunds`)."""

from __future__ import annotations

import datetime as dt
import io
import logging

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from guahao import clock
from guahao.booking import services as booking
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.booking.tests import conftest as booking_fixtures
from guahao.notifications.models import OutboxEvent
from guahao.payments import services
from guahao.payments.models import Payment, Refund
from guahao.payments.tests.helpers import refund_deliveries, run_worker_without_notifications
from guahao.testing import api_client, open_pay_page, pay_at_provider, payment_sandbox, run_worker

# The booking app's fixtures: a hospital with one session of four 25-yuan numbers, and a patient's
# account ready to book there (assigned, not imported by name, so ruff sees them used).
world = booking_fixtures.world
booker = booking_fixtures.booker

PAST_FIRST_QUERY = services.FIRST_POLL + dt.timedelta(seconds=1)
REFUND_CALL = {"wechatpay": "wechat.refund", "alipay": "alipay.trade.refund"}


def book(world, booker, channel: str = "wechat") -> Registration:
    """The patient holds the first number, pays on the provider's cashier, and the worker registers it."""
    account, patient = booker
    hold = booking.hold_slot(
        account=account, slot_id=world.session.slots.order_by("seq").first().id
    )
    booking.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel=channel, insurance=False
    )
    payment, params = booking.pay_hold(account=account, hold_id=hold.id)
    if payment.provider == "alipay":
        open_pay_page(params.pay_url)
    pay_at_provider(payment.out_trade_no)
    run_worker()
    registration = Registration.objects.select_related("hold__payment").get(hold=hold)
    assert registration.status == RegistrationStatus.BOOKED
    return registration


def cancel(registration: Registration) -> Refund:
    cancelled = booking.cancel_registration(
        account=registration.account, registration_id=registration.id
    )
    assert cancelled.status == RegistrationStatus.REFUNDING
    return Refund.objects.get(payment=registration.hold.payment)


def status_seen_by_patient(registration: Registration) -> str:
    response = api_client(registration.account).get(f"/api/v1/registrations/{registration.id}")
    assert response.status_code == 200, response.content
    return response.json()["status"]


def assert_refunded_exactly_once(payment: Payment, refund: Refund) -> None:
    payment.refresh_from_db()
    refund.refresh_from_db()
    assert refund.state == Refund.State.SUCCEEDED
    assert payment.refunded_fen == payment.amount_fen == 2500
    assert Refund.objects.filter(payment=payment).count() == 1
    # The provider's side: one refund under our one refund number, so the money left once.
    assert [
        (r.out_refund_no, r.amount_fen, r.state)
        for r in payment_sandbox().refunds(payment.out_trade_no)
    ] == [(refund.refund_no, 2500, "SUCCESS")]
    assert (
        OutboxEvent.objects.filter(topic="refund.succeeded", payload__refund_id=refund.id).count()
        == 1
    )


def failed_listing() -> str:
    out = io.StringIO()
    call_command("refunds", "--failed", stdout=out)
    return out.getvalue()


def retry(refund_no: str) -> str:
    out = io.StringIO()
    call_command("refunds", "--retry", refund_no, stdout=out)
    return out.getvalue()


# --- a lost REFUND.SUCCESS notification (WeChat refunds finish after the answer) -----------------


@pytest.fixture
def bank_delay(monkeypatch):
    """WeChat pays a refund out some time after accepting it (here 30 seconds)."""
    monkeypatch.setattr(payment_sandbox(), "refund_delay", dt.timedelta(seconds=30))


def test_a_cancellation_whose_refund_notification_is_lost_is_finished_by_the_poller(
    world, booker, bank_delay, caplog
):
    registration = book(world, booker, "wechat")
    refund = cancel(registration)

    run_worker_without_notifications()  # WeChat's REFUND.SUCCESS never reaches us
    refund.refresh_from_db()
    assert refund.state == Refund.State.PROCESSING
    assert status_seen_by_patient(registration) == "refunding"  # 退费中 until the provider confirms

    with clock.travel(PAST_FIRST_QUERY), caplog.at_level(logging.INFO, logger="guahao.messages"):
        run_worker_without_notifications()
        assert status_seen_by_patient(registration) == "cancelled"
    assert_refunded_exactly_once(registration.hold.payment, refund)
    # It was the poller's query, not a late notification, that finished it.
    assert [d.delivered_at for d in refund_deliveries(registration.hold.payment)] == [None]
    assert any("退款已完成" in r.text for r in caplog.records if r.name == "guahao.messages")


def test_a_refund_notification_that_keeps_failing_is_finished_by_the_poller(
    world, booker, bank_delay
):
    """The same with our callback answering 500 instead: the provider keeps re-sending, in vain."""
    registration = book(world, booker, "wechat")
    refund = cancel(registration)

    def broken_callback(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        return 500, b"Internal Server Error"

    def passes() -> None:
        payment_sandbox().deliver_due(send=broken_callback)
        run_worker_without_notifications()

    passes()
    with clock.travel(PAST_FIRST_QUERY):
        passes()
    registration.refresh_from_db()
    assert registration.status == RegistrationStatus.CANCELLED
    assert_refunded_exactly_once(registration.hold.payment, refund)
    (notification,) = refund_deliveries(registration.hold.payment)
    assert (
        notification.last_status == 500
        and notification.attempts >= 1
        and notification.delivered_at is None
    )


# --- a refund the provider refuses: the operators list it and retry it ---------------------------


def test_a_refused_refund_is_listed_for_the_operators_and_retried_with_the_same_number(
    world, booker, channel, provider_faults
):
    registration = book(world, booker, channel)
    payment = registration.hold.payment
    provider_faults.fail_next("refund", "refuse", times=10)  # NOT_ENOUGH: 商户账户可用余额不足
    refund = cancel(registration)
    run_worker()
    refund.refresh_from_db()
    assert refund.state == Refund.State.FAILED
    assert status_seen_by_patient(registration) == "refunding"  # the money has not come back yet
    assert payment_sandbox().refunds(payment.out_trade_no) == []

    listing = failed_listing()
    lines = listing.splitlines()
    assert lines[0].split() == ["退款单号", "商户订单号", "金额（元）", "申请时间", "失败原因"]
    assert len(lines) == 3  # header, one refund, the count
    row = lines[1]
    assert row.startswith(refund.refund_no)
    assert payment.out_trade_no in row and "25.00" in row and "refused" in row
    assert f"{clock.local(refund.created_at):%Y-%m-%d %H:%M:%S}" in row  # Beijing time
    assert lines[-1] == "共 1 笔退款失败，合计 25.00 元"
    # Order numbers only: nothing that names the patient.
    patient = registration.patient
    for personal in (patient.name, patient.phone, patient.id_number, registration.account.phone):
        assert personal not in listing

    provider_faults.clear()  # the merchant account has been topped up
    answer = retry(refund.refund_no)
    assert f"退款单 {refund.refund_no} 已重新提交，当前状态：" in answer
    run_worker()

    assert status_seen_by_patient(registration) == "cancelled"
    assert_refunded_exactly_once(payment, refund)
    assert Refund.objects.get(payment=payment).refund_no == refund.refund_no  # the same number
    assert failed_listing().splitlines()[-1] == "共 0 笔退款失败，合计 0.00 元"


def test_a_retry_the_provider_refuses_again_is_an_error_and_stays_listed(
    world, booker, provider_faults
):
    registration = book(world, booker)
    provider_faults.fail_next("refund", "refuse", times=10)
    refund = cancel(registration)
    with pytest.raises(CommandError, match="重试后仍为退款失败") as caught:
        retry(refund.refund_no)
    assert caught.value.returncode == 1
    refund.refresh_from_db()
    assert refund.state == Refund.State.FAILED
    assert refund.refund_no in failed_listing()


# --- a submit that never reached the provider ----------------------------------------------------


def test_a_refund_whose_submit_never_arrived_is_submitted_again_by_the_poller(
    world, booker, channel, provider_faults
):
    registration = book(world, booker, channel)
    payment = registration.hold.payment
    # The network drops the refund request (nothing reaches the provider), three times: the inline
    # head start, the refund.requested job, and its retry 30 seconds later.
    payment_sandbox().fault(REFUND_CALL[payment.provider], "drop", times=3)
    refund = cancel(registration)
    run_worker()
    with clock.travel(dt.timedelta(seconds=30)):
        run_worker()
    assert payment_sandbox().refunds(payment.out_trade_no) == []
    refund.refresh_from_db()
    assert refund.state == Refund.State.PROCESSING

    provider_faults.calls.clear()
    with clock.travel(PAST_FIRST_QUERY):
        run_worker()
    # The poller asked first, heard "no such refund", and sent it again under the same number.
    assert provider_faults.calls[:2] == [
        ("query_refund", "refused"),
        ("refund", "SUCCESS" if channel == "alipay" else "PROCESSING"),
    ]
    assert status_seen_by_patient(registration) == "cancelled"
    assert_refunded_exactly_once(payment, refund)


# --- the command's errors ------------------------------------------------------------------------


def processing_refund(world, booker) -> Refund:
    registration = book(world, booker, "wechat")
    return cancel(registration)


def test_retrying_a_refund_that_has_not_failed_is_a_clear_error(world, booker):
    refund = processing_refund(world, booker)
    with pytest.raises(CommandError, match="只有退款失败的退款单可以重试") as caught:
        retry(refund.refund_no)
    assert caught.value.returncode == 1
    run_worker()
    refund.refresh_from_db()
    assert refund.state == Refund.State.SUCCEEDED
    with pytest.raises(CommandError, match="只有退款失败的退款单可以重试"):
        retry(refund.refund_no)
    with pytest.raises(CommandError, match="退款单不存在"):
        retry("RF-NO-SUCH-REFUND")
    # Nothing was sent twice.
    assert_refunded_exactly_once(refund.payment, refund)


def test_the_command_line_exits_1_with_the_error_on_stderr(world, booker, monkeypatch, capsys):
    from django.db import connections

    from guahao.payments.management.commands.refunds import Command

    refund = processing_refund(world, booker)
    # As `guahao refunds --retry …` runs it (without django.setup(), which would reconfigure the
    # test run's logging). run_from_argv closes the connections when it ends, which would end the
    # test's transaction.
    monkeypatch.setattr(connections, "close_all", lambda: None)
    with pytest.raises(SystemExit) as exited:
        Command().run_from_argv(["guahao", "refunds", "--retry", refund.refund_no])
    assert exited.value.code == 1
    assert "只有退款失败的退款单可以重试" in capsys.readouterr().err
    refund.refresh_from_db()
    assert refund.state == Refund.State.PROCESSING

"""Money and slots never lost when messages are lost, outside systems time out, or a session is
suspended mid-flow (the review's sequential findings), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import OperationalError, transaction
from django.db.models import QuerySet

from guahao import clock
from guahao.booking import selectors, services
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState, hold_sources
from guahao.db import atomic_retry
from guahao.errors import Conflict
from guahao.payments import services as payments
from guahao.payments.models import Payment, Refund
from guahao.payments.sandbox import TradeClosed
from guahao.scheduling.models import ReleaseRule, Session, Slot
from guahao.scheduling.services import suspend_session
from guahao.sqlguard import JoinedStateUpdate
from guahao.testing import (
    api_client,
    make_account,
    make_patient,
    make_session,
    pay_at_provider,
    payment_sandbox,
    run_worker,
)

from .conftest import confirmed, paid, ready_to_book

pytestmark = pytest.mark.django_db


def drop_notifications() -> None:
    """The provider's notifications due now never reach us: something on the way answers for us,
    so the provider never sends them again."""
    payment_sandbox().deliver_due(send=lambda url, headers, body: (200, b"success"))


def refunds_of(payment: Payment) -> list[Refund]:
    return list(Refund.objects.filter(payment=payment))


# --- a hold that is over never leaves a payable order behind ----------------------------------------


def test_a_lapsed_hold_taken_by_the_next_patient_has_its_order_closed(world, booker):
    hold = confirmed(world, *booker)
    payment, _ = services.pay_hold(account=booker[0], hold_id=hold.id)
    with clock.travel(dt.timedelta(minutes=10, seconds=5)):
        other = make_account()
        ready_to_book(other, world.hospital, name="李四")
        # Its claim expires the lapsed hold.
        services.hold_slot(account=other, slot_id=hold.slot_id)
        run_worker()  # hold.expired → its order is closed
        payment.refresh_from_db()
        assert payment.state == Payment.State.CLOSED
        assert payment_sandbox().trade(payment.out_trade_no).state == "CLOSED"
    with clock.travel(dt.timedelta(hours=3)), pytest.raises(TradeClosed):
        pay_at_provider(payment.out_trade_no)  # hours later, the cashier refuses the money


def test_a_close_that_times_out_is_retried_until_the_order_is_closed(world, booker):
    hold = confirmed(world, *booker)
    payment, _ = services.pay_hold(account=booker[0], hold_id=hold.id)
    payment_sandbox().fault("wechat.close", "drop")  # the first close gets no answer
    with clock.travel(dt.timedelta(minutes=10, seconds=5)):
        run_worker()
        payment.refresh_from_db()
        assert payment.state == Payment.State.CREATED  # the close timed out; the job waits
        assert payment_sandbox().trade(payment.out_trade_no).state == "NOTPAY"
    with clock.travel(dt.timedelta(minutes=12)):
        run_worker()
        assert payment_sandbox().trade(payment.out_trade_no).state == "CLOSED"  # before its expiry
    payment.refresh_from_db()
    assert payment.state == Payment.State.CLOSED


def test_a_payment_whose_notification_is_lost_after_expiry_is_refunded_once(world, booker):
    hold, payment = paid(world, *booker)
    drop_notifications()
    with clock.travel(dt.timedelta(minutes=10, seconds=5)):
        run_worker()
    with clock.travel(dt.timedelta(minutes=20)):
        run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.EXPIRED
    [refund] = refunds_of(payment)
    assert refund.state == Refund.State.SUCCEEDED and refund.amount_fen == payment.amount_fen


def test_the_provider_order_expires_with_the_hold_plus_a_margin(world, booker):
    hold = confirmed(world, *booker)
    payment, _ = services.pay_hold(account=booker[0], hold_id=hold.id)
    assert payment.expires_at == hold.expires_at + payments.ORDER_MARGIN
    # time_expire carries whole seconds: the provider stops taking money no later than we do.
    at_provider = payment_sandbox().trade(payment.out_trade_no).expires_at
    assert at_provider == payment.expires_at.replace(microsecond=0)


# --- one payable order at a time ------------------------------------------------------------------


def test_pay_is_refused_while_a_paid_payment_awaits_settlement(world, booker):
    hold, payment = paid(world, *booker)
    assert payments.refresh_payment(payment_id=payment.id)  # PAID here; booking has not decided yet
    with pytest.raises(Conflict) as caught:
        services.pay_hold(account=booker[0], hold_id=hold.id)
    assert caught.value.code == "payment_already_paid"
    assert Payment.objects.filter(hold=hold).count() == 1


def test_an_order_being_opened_is_never_closed_under_it(world, booker):
    hold = confirmed(world, *booker)
    services.pay_hold(account=booker[0], hold_id=hold.id)
    Payment.objects.filter(hold=hold).update(opened_at=None)  # its create_order is still in flight
    with pytest.raises(Conflict) as caught:
        services.pay_hold(account=booker[0], hold_id=hold.id)
    assert caught.value.code == "payment_in_progress"
    with clock.travel(payments.OPENING_TIMEOUT + dt.timedelta(seconds=1)):
        # Its request is long gone: the order may be closed and a new one opened.
        second, _ = services.pay_hold(account=booker[0], hold_id=hold.id)
    assert list(
        Payment.objects.filter(hold=hold).values_list("state", flat=True).order_by("id")
    ) == ["closed", "created"]
    assert second.state == Payment.State.CREATED


def test_the_visiting_patient_is_fixed_once_an_order_is_open(world, booker):
    account, patient = booker
    hold = confirmed(world, account, patient)
    services.pay_hold(account=account, hold_id=hold.id)
    relative = make_patient(account, name="张小明", relation="child")
    with pytest.raises(Conflict) as caught:
        services.confirm_hold(
            account=account,
            hold_id=hold.id,
            patient_id=relative.id,
            channel="wechat",
            insurance=False,
        )
    assert caught.value.code == "patient_fixed_after_payment"
    # The channel may still change for the next order.
    again = services.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel="alipay", insurance=False
    )
    assert again.patient_id == patient.id and again.channel == "alipay"


# --- the HIS: lost replies, timeouts and the cutoff -------------------------------------------------


def test_a_lock_that_timed_out_is_released_at_the_his_by_our_hold_id(world, booker, simulated_his):
    simulated_his.fail_next("lock_slot", "lost_reply")  # the HIS locked it, the answer was lost
    with pytest.raises(Exception) as caught:
        services.hold_slot(account=booker[0], slot_id=world.session.slots.first().id)
    assert caught.value.code == "his_timeout"
    hold = Hold.objects.get(account=booker[0])
    assert simulated_his.locks == {hold.id: f"L{hold.id}"}
    simulated_his.fail_next("release_slot", "timeout")  # and the first release is not answered
    run_worker()
    assert simulated_his.locks  # still locked: the job waits and tries again
    with clock.travel(dt.timedelta(minutes=1)):
        run_worker()
    assert simulated_his.locks == {}
    assert ("release_slot", hold.id) in simulated_his.calls


def test_a_registration_whose_reply_was_lost_is_found_by_asking_the_his(
    world, booker, simulated_his
):
    simulated_his.fail_next("register", "lost_reply")
    hold, payment = paid(world, *booker)
    # Notification → win → register inline: the HIS registered, the reply was lost. The
    # hold.registering job then asks the HIS before registering again, and finds it.
    run_worker()
    assert simulated_his.calls[-1] == ("query_registration", hold.id)
    registration = Registration.objects.get(hold=hold)
    assert registration.registration_no == simulated_his.registrations[hold.id].registration_no
    assert not refunds_of(payment)
    assert simulated_his.calls.count(("register", hold.id)) == 1


def test_an_his_that_never_answers_is_given_up_at_the_cutoff_refunded_and_cancelled(
    world, booker, simulated_his
):
    simulated_his.fail_next("register", "lost_reply")  # it did register, we never hear of it
    simulated_his.fail_next("query_registration", "timeout", times=1000)
    hold, payment = paid(world, *booker)
    run_worker()
    hold.refresh_from_db()
    cutoff = selectors.registering_cutoff(hold)
    with clock.travel(cutoff - clock.now() - dt.timedelta(minutes=1)):
        run_worker()
        assert Hold.objects.get(id=hold.id).state == HoldState.REGISTERING  # still trying
    simulated_his.clear_faults()
    simulated_his.fail_next("query_registration", "timeout")  # unknown at the cutoff itself
    with clock.travel(cutoff - clock.now() + dt.timedelta(seconds=1)):
        run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.FAILED
    assert not Registration.objects.filter(hold=hold).exists()
    [refund] = refunds_of(payment)
    assert refund.state == Refund.State.SUCCEEDED
    assert simulated_his.active_registrations() == set()  # never both registered and refunded


def test_the_cutoff_is_minutes_before_the_window_and_never_before_a_short_grace(world, booker):
    ReleaseRule.objects.filter(hospital=world.hospital).update(register_cutoff_minutes=60)
    hold, _ = paid(world, *booker)
    run_worker()
    hold = Hold.objects.select_related("session", "slot").get(id=hold.id)
    assert hold.state == HoldState.SUCCEEDED
    window = hold.slot.window_start
    assert selectors.registering_cutoff(hold) == max(
        window - dt.timedelta(minutes=60), min(hold.updated_at + selectors.REGISTER_GRACE, window)
    )
    # Booked half an hour before its window (a later window of a started session, say): the HIS
    # still gets its grace, not an instant refund.
    hold.slot.window_start = clock.now() + dt.timedelta(minutes=30)
    assert selectors.registering_cutoff(hold) == hold.updated_at + selectors.REGISTER_GRACE


# --- 停诊 settles every hold and registration, whatever its state ---------------------------------


def test_suspension_while_registering_refunds_and_cancels_at_the_his(world, booker, simulated_his):
    simulated_his.fail_next("register", "timeout", times=2)  # inline, then the job's first try
    hold, payment = paid(world, *booker)
    run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.REGISTERING
    suspend_session(session=Session.objects.get(id=world.session.id), reason="医生出差")
    with clock.travel(dt.timedelta(minutes=5)):
        run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.FAILED
    assert not Registration.objects.filter(hold=hold).exists()
    [refund] = refunds_of(payment)
    assert refund.state == Refund.State.SUCCEEDED and refund.reason == "医生停诊，自动退款"
    assert ("cancel_registration", hold.id) in simulated_his.calls


def test_an_his_registration_arriving_after_the_suspension_is_cancelled_not_booked(
    world, booker, simulated_his
):
    simulated_his.fail_next("register", "timeout", times=2)
    hold, payment = paid(world, *booker)
    run_worker()
    assert Hold.objects.get(id=hold.id).state == HoldState.REGISTERING
    Session.objects.filter(id=world.session.id).update(
        status=Session.Status.SUSPENDED, suspended_at=clock.now()
    )
    # The HIS answers before the suspension's own job has run.
    services.register_paid_hold(hold_id=hold.id)
    hold.refresh_from_db()
    assert hold.state == HoldState.FAILED
    assert not Registration.objects.filter(hold=hold).exists()
    run_worker()
    assert simulated_his.active_registrations() == set()
    assert [r.state for r in refunds_of(payment)] == [Refund.State.SUCCEEDED]


# --- the cancel deadline, the state table, retries, the compare-and-set guard ----------------------


def test_the_cancel_deadline_counts_from_the_slots_own_window(world, booker):
    hold, _ = paid(world, *booker, seq=4)  # the session's last window: 08:00 + 3 × 30 min
    run_worker()
    registration = Registration.objects.select_related("slot", "session").get(hold=hold)
    deadline = selectors.cancel_deadline(registration, hours=2)
    assert deadline == registration.slot.window_start - dt.timedelta(hours=2)
    assert deadline > registration.session.starts_at - dt.timedelta(hours=2)


def test_a_move_outside_the_state_table_fails_at_once():
    with pytest.raises(ValueError):
        hold_sources(HoldState.REGISTERING, HoldState.HELD)  # only a PAYING hold can be paid
    assert hold_sources(HoldState.EXPIRED, HoldState.HELD, HoldState.PAYING) == ["held", "paying"]


class _Deadlock(Exception):
    sqlstate = "40P01"


@pytest.mark.django_db(transaction=True)
def test_a_transaction_aborted_as_a_deadlock_is_run_again():
    attempts = []

    def work() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise OperationalError("deadlock detected") from _Deadlock()
        return "done"

    assert atomic_retry(work) == "done" and len(attempts) == 3


def test_a_database_failure_answers_503_in_chinese_not_500(world, booker, monkeypatch):
    def fail(**kwargs):
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(services, "hold_slot", fail)
    response = api_client(booker[0]).post(
        "/api/v1/holds", {"slot_id": world.session.slots.first().id}
    )
    assert response.status_code == 503
    assert response.json()["message"] == "系统繁忙，请稍后重试"


def test_an_update_filtered_across_a_relation_is_refused_by_the_suite(world):
    with pytest.raises(JoinedStateUpdate), transaction.atomic():
        QuerySet(Hold).filter(session__status="open").update(state="held")
    assert not Slot.objects.filter(session__status="nonexistent").exists()  # reads may join


@pytest.mark.leaves_ledger_finding  # the planted holds have no payment behind them
def test_the_cutoff_sweep_reaches_an_overdue_hold_behind_many_that_are_not(
    world, booker, simulated_his
):
    later = make_session(
        world.department, doctor=world.doctor, day=clock.today() + dt.timedelta(days=7), slots=3
    )
    now = clock.now()
    someone_else = make_account()
    for slot in later.slots.all():  # registering for a session a week away: far from their cutoff
        Hold.objects.create(
            account=someone_else,
            slot=slot,
            session=later,
            state=HoldState.REGISTERING,
            expires_at=now + dt.timedelta(minutes=10),
            fee_fen=1000,
            created_at=now,
            updated_at=now,
        )
    simulated_his.fail_next("register", "timeout", times=2)
    hold, payment = paid(world, *booker)
    run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.REGISTERING
    with clock.travel(selectors.registering_cutoff(hold) - clock.now() + dt.timedelta(seconds=1)):
        simulated_his.fail_next("query_registration", "timeout")
        assert services.settle_overdue_registering(limit=1) == 1
    hold.refresh_from_db()
    assert hold.state == HoldState.FAILED
    assert [r.reason for r in refunds_of(payment)] == ["医院系统未确认挂号，自动退款"]


@pytest.mark.parametrize("fault", ["lost_reply", "timeout"])
def test_a_cancel_the_his_does_not_answer_is_finished_not_dropped(
    world, booker, simulated_his, fault
):
    """The HIS may have cancelled (its answer lost) or not (no answer at all): either way the
    patient asked in time, so we refund and keep cancelling at the HIS until it confirms. A
    registration left BOOKED here while the HIS had cancelled it would exist nowhere else."""
    account, _ = booker
    hold, payment = paid(world, *booker)
    run_worker()
    registration = Registration.objects.get(hold=hold)
    assert simulated_his.active_registrations() == {hold.id}

    simulated_his.fail_next("cancel_registration", fault)
    registration = services.cancel_registration(account=account, registration_id=registration.id)
    assert registration.status == "refunding"
    run_worker()

    registration.refresh_from_db()
    assert registration.status == "cancelled"
    assert simulated_his.active_registrations() == set()
    assert [r.state for r in refunds_of(payment)] == [Refund.State.SUCCEEDED]

"""`guahao ledger-check`: clean flows through the services give no violation; each kind of
violation, planted directly in the database, is found on its row and makes the command exit 1."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.db import models

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold, Registration
from guahao.booking.selectors import registering_cutoff
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.catalog.models import Notice, NoticeAck
from guahao.ledger import TIDY_INTERVAL, Violation, find_violations
from guahao.payments.models import Payment, Refund
from guahao.scheduling.models import Session, Slot
from guahao.scheduling.services import suspend_session, take_slots_offline
from guahao.testing import (
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_patient,
    make_session,
    pay_at_provider,
    run_worker,
)

pytestmark = pytest.mark.django_db

LOCK = dt.timedelta(minutes=10)  # make_hospital's release rule: lock_minutes=10
PAST_TIDY = TIDY_INTERVAL + dt.timedelta(minutes=1)


@pytest.fixture
def session() -> Session:
    hospital = make_hospital()
    department = make_department(hospital)
    return make_session(department, doctor=make_doctor(department), slots=4, fee_fen=2500)


def ref(obj: models.Model) -> str:
    return f"{obj._meta.db_table}#{obj.pk}"


def found(*, now: dt.datetime | None = None) -> set[tuple[str, str]]:
    return {(v.kind, v.row) for v in find_violations(now=now)}


def check(*args: str) -> tuple[int, str]:
    """Run the command as cron would: (exit status, stdout)."""
    out = io.StringIO()
    try:
        call_command("ledger-check", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def assert_reported(row: str) -> str:
    code, out = check()
    assert code == 1, out
    assert row in out
    assert out.strip().splitlines()[-1].startswith("ledger-check: ")
    return out


# --- the booking flow through the services -----------------------------------------------------------


def confirmed(session: Session, seq: int) -> Hold:
    """A live, confirmed hold on number `seq`, by a new account with its own visiting patient."""
    account = make_account()
    patient = make_patient(account)
    for notice in Notice.objects.filter(hospital_id=session.hospital_id, is_active=True):
        NoticeAck.objects.create(notice=notice, account=account, acked_at=clock.now())
    hold = services.hold_slot(account=account, slot_id=session.slots.get(seq=seq).id)
    return services.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False
    )


def paying(session: Session, seq: int = 1) -> tuple[Hold, Payment]:
    hold = confirmed(session, seq)
    payment, _ = services.pay_hold(account=hold.account, hold_id=hold.id)
    return hold, payment


def booked(session: Session, seq: int = 1) -> Registration:
    hold, payment = paying(session, seq)
    pay_at_provider(payment.out_trade_no)
    run_worker()
    return Registration.objects.select_related("hold__payment", "slot").get(hold=hold)


# --- clean ledgers --------------------------------------------------------------------------------


def test_a_clean_booking_has_no_violations(session):
    registration = booked(session)
    assert registration.status == RegistrationStatus.BOOKED
    assert find_violations() == []
    code, out = check()
    assert code == 0
    assert out.strip() == "ledger-check: 0 violations"
    # Nothing is left for a tidy-up to do: still clean long after.
    assert find_violations(now=clock.now() + dt.timedelta(days=3)) == []


def test_cancelled_released_late_paid_and_offline_slots_are_clean(session):
    registration = booked(session, seq=1)
    services.cancel_registration(account=registration.account, registration_id=registration.id)
    released = confirmed(session, seq=2)
    services.release_hold(account=released.account, hold_id=released.id)
    # Booked outside guahao.
    assert take_slots_offline(session=session, count=1, now=clock.now()) == 1
    late, late_payment = paying(session, seq=4)
    # Paid after the lock, inside the order margin.
    with clock.travel(LOCK + dt.timedelta(seconds=30)):
        pay_at_provider(late_payment.out_trade_no)
        run_worker()
        registration.refresh_from_db()
        assert registration.status == RegistrationStatus.CANCELLED
        assert Refund.objects.get(payment=late_payment).state == Refund.State.SUCCEEDED
        assert (
            Slot.objects.get(session=session, his_code=Slot.OFFLINE_CODE).state == Slot.State.BOOKED
        )
        assert find_violations() == []
        assert find_violations(now=clock.now() + dt.timedelta(days=2)) == []


def test_a_suspension_handled_by_the_worker_is_clean(session):
    registration = booked(session, seq=1)
    live = confirmed(session, seq=2)
    suspend_session(session=session, reason="专家外出会诊")
    run_worker()
    registration.refresh_from_db()
    live.refresh_from_db()
    assert registration.status == RegistrationStatus.CANCELLED and live.state == HoldState.FAILED
    assert find_violations(now=clock.now() + PAST_TIDY) == []


def test_the_check_makes_a_handful_of_queries_however_many_rows(
    session, django_assert_max_num_queries
):
    for seq in (1, 2, 3):
        booked(session, seq=seq)
    with django_assert_max_num_queries(6):
        assert find_violations() == []


# --- planted violations, one kind each ----------------------------------------------------------------


def test_paid_with_the_hold_released_and_no_refund(session):
    hold, payment = paying(session)
    now = clock.now()
    Payment.objects.filter(id=payment.id).update(state=Payment.State.PAID, paid_at=now)
    Hold.objects.filter(id=hold.id).update(state=HoldState.RELEASED, updated_at=now)
    Slot.objects.filter(id=hold.slot_id).update(state=Slot.State.FREE, held_until=None)
    assert found() == set()  # the worker still has TIDY to refund it
    with clock.travel(PAST_TIDY):
        assert found() == {("payment_unsettled", ref(payment))}
        out = assert_reported(ref(payment))
    assert "paid, neither registered nor refunded" in out


def test_an_active_registration_whose_payment_was_refunded(session):
    registration = booked(session)
    payment = registration.hold.payment
    Refund.objects.create(
        payment=payment,
        refund_no=f"RF{payment.out_trade_no}",
        amount_fen=payment.amount_fen,
        reason="planted",
        state=Refund.State.SUCCEEDED,
        created_at=clock.now(),
        succeeded_at=clock.now(),
    )
    Payment.objects.filter(id=payment.id).update(refunded_fen=payment.amount_fen)
    assert found() == {("payment_registered_and_refunded", ref(payment))}
    assert "both registered and refunded" in assert_reported(ref(payment))


def test_slot_states_that_disagree_with_their_holds_and_registrations(session):
    registration = booked(session, seq=1)
    Slot.objects.filter(id=registration.slot_id).update(state=Slot.State.FREE)
    unclaimed = session.slots.get(seq=2)
    Slot.objects.filter(id=unclaimed.id).update(
        state=Slot.State.HELD, held_until=clock.now() + LOCK
    )
    assert found() == {
        ("slot_state_mismatch", ref(registration.slot)),
        ("slot_state_mismatch", ref(unclaimed)),
    }
    assert_reported(ref(unclaimed))


def test_a_hold_paying_past_its_expiry(session):
    hold, payment = paying(session)
    with clock.travel(LOCK + PAST_TIDY):  # the sweeper never ran
        assert found() == {("hold_not_expired", ref(hold))}
        assert_reported(ref(hold))
    # Its order closes at the hold's expiry + ORDER_MARGIN (2 minutes): soon open too long as well.
    with clock.travel(LOCK + dt.timedelta(minutes=2) + PAST_TIDY):
        assert found() == {("hold_not_expired", ref(hold)), ("payment_order_open", ref(payment))}


def test_a_hold_registering_past_its_cutoff(session):
    hold, payment = paying(session)
    now = clock.now()
    Payment.objects.filter(id=payment.id).update(state=Payment.State.PAID, paid_at=now)
    Slot.objects.filter(id=hold.slot_id).update(state=Slot.State.BOOKED, held_until=None)
    Hold.objects.filter(id=hold.id).update(
        state=HoldState.REGISTERING, payment=payment, updated_at=now
    )
    cutoff = registering_cutoff(Hold.objects.select_related("session").get(id=hold.id))
    assert found(now=cutoff + TIDY_INTERVAL - dt.timedelta(minutes=1)) == set()
    with clock.travel(cutoff + PAST_TIDY - clock.now()):
        assert found() == {
            ("hold_registering_overdue", ref(hold)),
            ("payment_unsettled", ref(payment)),
        }
        assert_reported(ref(hold))


def test_an_open_order_of_a_hold_that_ended(session):
    hold, payment = paying(session)
    Hold.objects.filter(id=hold.id).update(state=HoldState.RELEASED, updated_at=clock.now())
    Slot.objects.filter(id=hold.slot_id).update(state=Slot.State.FREE, held_until=None)
    assert found() == set()
    with clock.travel(PAST_TIDY):  # before the order's own expiry
        assert found() == {("payment_order_of_dead_hold", ref(payment))}
        assert_reported(ref(payment))


def test_a_failed_refund_needs_staff(session):
    registration = booked(session)
    services.cancel_registration(account=registration.account, registration_id=registration.id)
    refund = Refund.objects.get(payment=registration.hold.payment)
    Refund.objects.filter(id=refund.id).update(state=Refund.State.FAILED, last_error="planted")
    assert found() == {("refund_failed", ref(refund))}
    out = assert_reported(ref(refund))
    assert f"guahao refunds --retry {refund.refund_no}" in out


def test_a_refund_processing_for_more_than_a_day_is_stuck(session):
    registration = booked(session)
    services.cancel_registration(account=registration.account, registration_id=registration.id)
    refund = Refund.objects.get(payment=registration.hold.payment)
    assert refund.state == Refund.State.PROCESSING  # its notification waits for the worker
    assert found(now=clock.now() + dt.timedelta(hours=23)) == set()
    with clock.travel(dt.timedelta(days=1, minutes=1)):
        assert found() == {("refund_stuck", ref(refund))}
        assert_reported(ref(refund))


def test_a_booked_registration_left_on_a_suspended_session(session):
    registration = booked(session)
    Session.objects.filter(id=session.id).update(
        status=Session.Status.SUSPENDED, suspended_at=clock.now()
    )
    assert found() == set()  # session.suspended's job has TIDY to cancel it
    with clock.travel(PAST_TIDY):
        assert found() == {("registration_not_cancelled_after_suspension", ref(registration))}
        assert_reported(ref(registration))


def test_a_registration_made_after_its_session_was_suspended(session):
    registration = booked(session)
    Session.objects.filter(id=session.id).update(
        status=Session.Status.SUSPENDED,
        suspended_at=registration.booked_at - dt.timedelta(minutes=1),
    )
    assert found() == {("registration_after_suspension", ref(registration))}
    assert_reported(ref(registration))


def test_refunded_fen_that_does_not_match_the_refunds(session):
    registration = booked(session)
    payment = registration.hold.payment
    Payment.objects.filter(id=payment.id).update(refunded_fen=100)
    assert found() == {("payment_refunded_mismatch", ref(payment))}
    assert_reported(ref(payment))


def test_a_registration_on_a_hold_that_did_not_succeed(session):
    registration = booked(session)
    Hold.objects.filter(id=registration.hold_id).update(state=HoldState.FAILED)
    assert found() == {("registration_on_unsucceeded_hold", ref(registration))}
    assert_reported(ref(registration))


def test_a_succeeded_hold_without_its_registration(session):
    registration = booked(session)
    hold, slot = registration.hold, registration.slot
    registration.delete()
    # The slot is booked with nobody owning it, too.
    assert found() == {("hold_without_registration", ref(hold)), ("slot_state_mismatch", ref(slot))}
    assert_reported(ref(hold))


def test_a_succeeded_hold_whose_winning_payment_is_not_paid(session):
    registration = booked(session)
    Payment.objects.filter(id=registration.hold.payment_id).update(state=Payment.State.CLOSED)
    assert found() == {("hold_winning_payment", ref(registration.hold))}
    assert_reported(ref(registration.hold))


def test_json_output(session):
    registration = booked(session)
    payment = registration.hold.payment
    Payment.objects.filter(id=payment.id).update(refunded_fen=100)
    code, out = check("--json")
    assert code == 1
    document = json.loads(out)
    assert document["count"] == 1
    assert Violation(**document["violations"][0]) == Violation(
        "payment_refunded_mismatch", ref(payment), document["violations"][0]["message"]
    )


def test_a_cancel_the_his_keeps_refusing_is_named_until_it_goes_through(session, monkeypatch):
    from guahao.his import services as his_services
    from guahao.his.simulated import SimulatedHis
    from guahao.notifications.models import OutboxEvent

    his = SimulatedHis()
    monkeypatch.setattr(his_services, "adapter", lambda: his)
    registration = booked(session)
    his.fail_next("cancel_registration", "refuse", times=3)
    suspend_session(session=session, reason="专家外出会诊")
    run_worker()  # cancelled and refunded here; the HIS refuses to cancel its side
    assert his.active_registrations() == {registration.hold_id}
    event = OutboxEvent.objects.get(topic="his.cancel")
    with clock.travel(PAST_TIDY):
        assert found() == {("his_cancel_pending", ref(event))}
        out = assert_reported(ref(event))
        assert ref(registration.hold) in out
    for hours in (1, 2, 3):  # the job keeps trying, backing off; the HIS gives in
        with clock.travel(dt.timedelta(hours=hours)):
            run_worker()
    assert his.active_registrations() == set()
    assert found() == set()
